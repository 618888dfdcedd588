"""Gradient-noise statistics: the unbiased two-batch estimators and their interval.

Pure numpy/scipy (no torch). The probe hands over, for each *draw* (a fresh batch at
the same parameters θ), the two squared norms

    |G_b|²  (small batch of size b; for the micro-batch estimator the mean of the k
             micro-batch squared norms)
    |G_B|²  (big batch of size B; for the micro-batch estimator the squared norm of
             the mean of the k micro-batch gradients, B = k·b)

and this module turns them into the gradient noise scale of McCandlish et al.
(arXiv:1812.06162, App. A, eqs. A.1–A.2; docs/concepts.md eqs. 11–12). Since E|G_b|² = |G|² + tr(Σ)/b,

    |G|²  ≈ (B·|G_B|² − b·|G_b|²) / (B − b)          (A.1)
    tr(Σ) ≈ (|G_b|² − |G_B|²) / (1/b − 1/B)           (A.2)
    B_simple = tr(Σ) / |G|²                           (eq. 2.8)

Numerator and denominator are averaged over the draws *before* dividing (a ratio of
single-draw estimates is biased and can be negative). The 90% interval for the ratio
of the two means uses Fieller's theorem with a Student-t quantile (scipy.stats.t); when
the denominator is not significantly positive, Fieller's set is unbounded and we fall
back to the delta method (flagged in ``ci_method``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bsadvisor.core.errors import UserError

CONFIDENCE = 0.90


@dataclass
class NoiseStats:
    """The estimate from a set of draws (attributes use the papers' names)."""

    trace_sigma: float
    grad_sq_norm: float
    b_simple: float
    ci90: tuple[float, float]
    ci_method: str  # "fieller" or "delta"
    draws: int
    b: int
    B: int

    @property
    def rel_halfwidth(self) -> float:
        """The larger side of the interval relative to the estimate (inf if undefined)."""
        lo, hi = self.ci90
        if not (self.b_simple > 0 and math.isfinite(lo) and math.isfinite(hi)):
            return math.inf
        return max(self.b_simple - lo, hi - self.b_simple) / self.b_simple


def per_draw_terms(small_sq_norms, big_sq_norms, b: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw unbiased estimates (tr Σ, |G|²) from eqs. A.1–A.2 (docs/concepts.md eqs. 11–12).

    ``small_sq_norms``: |G_b|² of each draw; ``big_sq_norms``: |G_B|² of each draw.
    """
    small = np.asarray(small_sq_norms, dtype=np.float64)
    big = np.asarray(big_sq_norms, dtype=np.float64)
    if small.shape != big.shape or small.ndim != 1:
        raise ValueError("the |G_b|² and |G_B|² of the draws must be 1-D arrays of the same length")
    if not (1 <= b < B):
        raise ValueError(f"need 1 <= b < B, got b={b}, B={B}")
    trace_sigma = (small - big) / (1.0 / b - 1.0 / B)
    grad_sq_norm = (B * big - b * small) / (B - b)
    return trace_sigma, grad_sq_norm


def ratio_interval(num, den, confidence: float = CONFIDENCE) -> tuple[float, tuple[float, float], str]:
    """Ratio of means mean(num)/mean(den) with a ``confidence`` interval.

    Fieller's interval: the set of R with (n̄ − R d̄)² ≤ t² Var(n̄ − R d̄), t the
    two-sided Student-t quantile with n−1 degrees of freedom. If that set is not a
    bounded interval (denominator not significantly non-zero), use the delta method
    R ± t·se(R) instead.
    """
    from scipy import stats

    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n = num.size
    nbar, dbar = float(num.mean()), float(den.mean())
    ratio = nbar / dbar if dbar != 0 else math.inf
    if n < 2:
        return ratio, (-math.inf, math.inf), "none"
    cov = np.cov(np.vstack([num, den]), ddof=1) / n  # covariance of the two means
    s_nn, s_dd, s_nd = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    t = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1))
    a = dbar**2 - t**2 * s_dd
    bq = -2.0 * (nbar * dbar - t**2 * s_nd)
    c = nbar**2 - t**2 * s_nn
    disc = bq * bq - 4 * a * c
    if a > 0 and disc >= 0:
        root = math.sqrt(disc)
        return ratio, ((-bq - root) / (2 * a), (-bq + root) / (2 * a)), "fieller"
    if not math.isfinite(ratio):
        return ratio, (-math.inf, math.inf), "none"
    var = (s_nn - 2 * ratio * s_nd + ratio**2 * s_dd) / dbar**2
    se = math.sqrt(max(var, 0.0))
    return ratio, (ratio - t * se, ratio + t * se), "delta"


def estimate(small_sq_norms, big_sq_norms, b: int, B: int, confidence: float = CONFIDENCE) -> NoiseStats:
    """B_simple (eq. 10), tr(Σ), |G|² and the interval from per-draw squared norms (see module doc)."""
    trace, g2 = per_draw_terms(small_sq_norms, big_sq_norms, b, B)
    if not (np.all(np.isfinite(trace)) and np.all(np.isfinite(g2))):
        raise UserError("gradient norms are not finite; the loss or gradients overflowed")
    ratio, ci, method = ratio_interval(trace, g2, confidence)
    return NoiseStats(trace_sigma=float(trace.mean()), grad_sq_norm=float(g2.mean()), b_simple=float(ratio),
                      ci90=(float(ci[0]), float(ci[1])), ci_method=method, draws=int(trace.size), b=b, B=B)


def sqrt_table(b_simple: float, batch_size: int, max_batch: int | None = None, rows: int = 6) -> list[dict]:
    """O(√B) table (docs/concepts.md §8, eq. 9): gradient-noise std at B, 2B, 4B, ... relative to B,
    and the relative gradient error √(B_simple/B') at each (E|G_B − G|²/|G|² = B_simple/B)."""
    out = []
    bs = batch_size
    for _ in range(rows):
        if max_batch is not None and bs > max_batch and out:
            break
        rel_noise = math.sqrt(b_simple / bs) if b_simple > 0 and math.isfinite(b_simple) else None
        out.append({"batch_size": bs, "std_vs_B": math.sqrt(batch_size / bs), "relative_noise": rel_noise})
        bs *= 2
    return out
