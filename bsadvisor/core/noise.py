"""Gradient-noise statistics: the unbiased two-batch estimators and their interval.

Pure numpy/scipy (no torch). The probe and the noise monitor hand over, for each *draw*
(batches at one set of parameters θ), the two squared norms

    |G_b|²  (small batch of size b; for the micro-batch estimator the mean of the k
             micro-batch squared norms)
    |G_B|²  (big batch of size B; for the micro-batch estimator the squared norm of
             the mean of the k micro-batch gradients, B = k·b)

and this module turns them into the gradient noise scale of McCandlish et al.
(arXiv:1812.06162, App. A; docs/concepts.md eqs. 11–12 and §12). With examples drawn
*with* replacement, E|G_b|² = |G|² + tr(Σ)/b and

    |G|²  ≈ (B·|G_B|² − b·|G_b|²) / (B − b)          (A.1)
    tr(Σ) ≈ (|G_b|² − |G_B|²) / (1/b − 1/B)           (A.2)
    B_simple = tr(Σ) / |G|²                           (eq. 2.8)

Batches are drawn *without* replacement from N examples, so the variance of a batch mean
carries the finite-population factor (N − b)/(N − 1) (docs/concepts.md eq. 17): E|G_b|² =
|G|² + tr(Σ)·(1/b − 1/N)·N/(N − 1), Σ the per-example covariance over the data set. Read
with A.1–A.2 the ratio would estimate B_simple/(1 − B_simple/N) (eq. 18), not B_simple;
:func:`per_draw_terms` corrects both terms when N is given.

Numerator and denominator are averaged over the draws *before* dividing (a ratio of
single-draw estimates is biased and can be negative). The 90% interval for the ratio of
the two means is Fieller's (a Student-t quantile, :func:`core.verdict.t_quantile`), intersected with
B_simple > 0 (tr Σ and |G|² are both non-negative). When |G|² is not significantly
positive that set is not a bounded interval: it is reported honestly as a lower bound
(ci_kind "lower-bound", upper end inf) or as no information at all ("unbounded"), never
as a symmetric interval through zero (eq. 19). An estimate more than CALIBRATED_RATIO
times the draws' batch keeps only its lower end: there the interval is not calibrated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from bsadvisor.core.errors import UserError
from bsadvisor.core.noise_model import usable  # noqa: F401  (the one rule; NoiseStats.usable and the CLI read it)
from bsadvisor.core.verdict import t_quantile

CONFIDENCE = 0.90
#: An estimate above this many times its draws' big batch B is reported as a lower bound only. Far below
#: B_simple, |G_B|² is mostly noise with heavy tails (a few examples carry most of the gradient late in
#: training), and a Student-t interval from a handful of draws can look bounded yet miss by 100×; the
#: intervals' coverage is checked (tests, benchmarks/noise_trace.py) with draws within this factor.
CALIBRATED_RATIO = 8.0
#: What to do when an estimate is not usable as a cap.
UNUSABLE_ADVICE = ("the noise scale's 90% interval has no upper bound (|G|² is not significantly above zero), so it "
                   "cannot set a cap or an efficiency: rerun bsadvisor probe with a longer --budget-seconds (more "
                   "draws) or a larger --batch-size (more signal in each draw)")


@dataclass
class NoiseStats:
    """The estimate from a set of draws (attributes use the papers' names)."""

    trace_sigma: float
    grad_sq_norm: float
    b_simple: float
    ci90: tuple[float, float]
    ci_kind: str  # one of CI_KINDS (core/defaults.py)
    draws: int
    b: int
    B: int

    @property
    def rel_halfwidth(self) -> float:
        """The larger side of the interval relative to the estimate (inf if not a bounded interval)."""
        lo, hi = self.ci90
        if not (self.ci_kind == "bounded" and self.b_simple > 0 and math.isfinite(hi)):
            return math.inf
        return max(self.b_simple - lo, hi - self.b_simple) / self.b_simple

    @property
    def usable(self) -> bool:
        """Whether the estimate may set a cap: a positive value inside a bounded interval."""
        return usable(self.b_simple, self.ci_kind)


def describe_interval(b_simple: float, ci90, ci_kind: str, spec: Optional[str] = None) -> str:
    """One phrase for the estimate and its 90% interval, honest about open ones. ``spec``: a format for
    every number; by default whole numbers from 100 up and three significant digits below (0.529, not 1)."""
    def num(x: float) -> str:
        if spec is not None:
            return f"{x:{spec}}"
        return f"{x:,.0f}" if not math.isfinite(x) or abs(x) >= 100 else f"{x:.3g}"

    lo, hi = ci90
    if ci_kind == "bounded":
        return f"{num(b_simple)} (90% CI {num(lo)}–{num(hi)})"
    if ci_kind == "lower-bound":
        return f"{num(b_simple)} (90% CI: at least {num(lo)}, no upper bound)"
    return f"{num(b_simple)} (90% CI: unbounded, the estimate carries no information)"


def per_draw_terms(small_sq_norms, big_sq_norms, b: int, B: int,
                   dataset_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw unbiased estimates (tr Σ, |G|²) from eqs. A.1–A.2 (docs/concepts.md eqs. 11–12).

    ``small_sq_norms``: |G_b|² of each draw; ``big_sq_norms``: |G_B|² of each draw.
    ``dataset_size`` N: the batches were drawn without replacement from N examples, so the
    finite-population correction of eq. 17 applies (None: an endless stream, no correction).
    """
    small = np.asarray(small_sq_norms, dtype=np.float64)
    big = np.asarray(big_sq_norms, dtype=np.float64)
    if small.shape != big.shape or small.ndim != 1:
        raise ValueError("the |G_b|² and |G_B|² of the draws must be 1-D arrays of the same length")
    if not (1 <= b < B):
        raise ValueError(f"need 1 <= b < B, got b={b}, B={B}")
    trace_sigma = (small - big) / (1.0 / b - 1.0 / B)
    grad_sq_norm = (B * big - b * small) / (B - b)
    if dataset_size is not None:
        n = int(dataset_size)
        if n < B or n < 2:
            raise ValueError(f"need B <= N, got B={B}, N={n}")
        # E[A.2] = tr Σ·N/(N−1) and E[A.1] = |G|² − tr Σ/(N−1) without replacement (eq. 18)
        grad_sq_norm = grad_sq_norm + trace_sigma / n
        trace_sigma = trace_sigma * (n - 1) / n
    return trace_sigma, grad_sq_norm


def ratio_interval(num, den, confidence: float = CONFIDENCE) -> tuple[float, tuple[float, float], str]:
    """Ratio of means mean(num)/mean(den), its ``confidence`` set within (0, ∞) and the set's kind.

    Fieller's set: the R with (n̄ − R d̄)² ≤ t² Var(n̄ − R d̄), t the two-sided Student-t
    quantile with n−1 degrees of freedom: a quadratic a·R² + b·R + c ≤ 0. With a > 0
    (d̄ significantly non-zero) it is a bounded interval; with a < 0 it is the outside of
    the roots, whose positive part is [upper root, ∞): a lower bound; with no real roots
    it is every R: no information. B_simple is positive, so the set is cut at 0.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    n = num.size
    nbar, dbar = float(num.mean()), float(den.mean())
    ratio = nbar / dbar if dbar != 0 else math.inf
    if n < 2:
        return ratio, (0.0, math.inf), "unbounded"
    cov = np.cov(np.vstack([num, den]), ddof=1) / n  # covariance of the two means
    s_nn, s_dd, s_nd = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    t = t_quantile(confidence, n - 1)
    a = dbar**2 - t**2 * s_dd
    bq = -2.0 * (nbar * dbar - t**2 * s_nd)
    c = nbar**2 - t**2 * s_nn
    disc = bq * bq - 4 * a * c
    if disc < 0 or a == 0:
        return ratio, (0.0, math.inf), "unbounded"
    root = math.sqrt(disc)
    r1, r2 = sorted(((-bq - root) / (2 * a), (-bq + root) / (2 * a)))
    if a > 0:  # a bounded interval [r1, r2]
        if r2 <= 0 or ratio <= 0:  # a negative estimate of a positive quantity says nothing about its size
            return ratio, (0.0, math.inf), "unbounded"
        return ratio, (max(r1, 0.0), r2), "bounded"
    # a < 0: (−∞, r1] ∪ [r2, ∞); its positive part
    if r2 > 0 and r1 <= 0:
        return ratio, (r2, math.inf), "lower-bound"
    return ratio, (0.0, math.inf), "unbounded"


def estimate(small_sq_norms, big_sq_norms, b: int, B: int, confidence: float = CONFIDENCE,
             dataset_size: Optional[int] = None) -> NoiseStats:
    """B_simple (eq. 10), tr(Σ), |G|² and the interval from per-draw squared norms (see module doc)."""
    trace, g2 = per_draw_terms(small_sq_norms, big_sq_norms, b, B, dataset_size)
    if not (np.all(np.isfinite(trace)) and np.all(np.isfinite(g2))):
        raise UserError("gradient norms are not finite; the loss or gradients overflowed")
    ratio, ci, kind = ratio_interval(trace, g2, confidence)
    if kind == "bounded" and ratio > CALIBRATED_RATIO * B:  # see CALIBRATED_RATIO: keep only the lower end
        ci, kind = (ci[0], math.inf), "lower-bound"
    return NoiseStats(trace_sigma=float(trace.mean()), grad_sq_norm=float(g2.mean()), b_simple=float(ratio),
                      ci90=(float(ci[0]), float(ci[1])), ci_kind=kind, draws=int(trace.size), b=b, B=B)


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
