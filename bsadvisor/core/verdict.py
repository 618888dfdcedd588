"""The validate verdict: is a candidate run no worse than the original by more than a margin?

Every candidate (the plan, the hybrid, the increased-LR variant) trains with the same
seeds as the original: seed s fixes the initial weights, the data order and the RNG
streams of both. So the comparison is paired (docs/concepts.md, eqs. 21–23 and 28–30):

    d_s = metric(candidate, s) − metric(original, s)              (21)
    d̄ ± τ_n · sd(d) / √n                                          (22)  a 90 % confidence sequence
    accepted ⇔ lo > −δ;  rejected ⇔ hi < −δ;  else inconclusive   (23)

δ is the non-inferiority margin (``--tolerance``: 0.005 in the metric's units by default,
or a fraction of the original's mean metric, "1%"). Most of what makes two seeds differ
(the initial weights and the data order) is shared by both runs of a seed and cancels in
d_s, so the paired interval is far narrower than the seeds' own spread.

The verdict is taken again each time ``validate --resume --seeds K`` adds seeds, so the
interval must hold at every look, not only at one planned sample size: τ_n is the
boundary of an anytime-valid t confidence sequence (Lai 1976; Wang and Ramdas 2023),
not Student's t quantile. For the hypothesis μ = μ0 (y_s = d_s − μ0, t its t statistic)
the scale-invariant likelihood ratio mixed over standardized effects θ = (μ − μ0)/σ ≥ 0
with a half-normal weight of precision c is, in closed form (eq. 28),

    M_n(t) = 2·√(c/(n+c)) · (1 − n·r/(n+c))^(−n/2) · F_{t,n}(√n·√(n·r/(n + c − n·r))),
    r = t²/(t² + n − 1)

(F_{t,n} the Student-t CDF with n degrees of freedom; for t < 0 the argument is negative),
a nonnegative martingale under μ = μ0 (a supermartingale for μ < μ0) in the filtration of
the scale-free data (the ratios y_s/|y_1|), so by Ville's inequality P(M_n ≥ 1/α at any n)
≤ α, for looks and seed counts chosen from those ratios (the suggestion below is). M_n
grows with t, so "M_n ≥ 1/α" is "t ≥ τ_n" (eq. 29) and the lower end of the sequence is d̄ − τ_n·sd/√n; the upper end mirrors it.
Each side holds at 95 % (α = 0.05) however many times, and after however many seeds,
the verdict is read. One seed has no spread: the verdict is only indicative (a status of
its own, never accepted or rejected), and with two the boundary is infinite.

The seeds suggested for an inconclusive verdict give an 80 % chance (power) that the
sequence settles at that many seeds, if the difference and its spread are what was
measured: P(noncentral t_{n−1}(θ̂·√n) ≥ τ_n) ≥ 0.8 with θ̂ = |d̄ + δ| / sd (eq. 30).

Pure math (scipy's special functions and noncentral t; no torch).
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from bsadvisor.core.errors import UserError

#: Two-sided confidence of the paired interval: each side holds at (1 + CONFIDENCE) / 2, at every look.
CONFIDENCE = 0.90
#: The default margin δ, in the metric's units (half a percentage point of accuracy).
DEFAULT_MARGIN = 0.005
#: More seeds than this are never suggested (validate's own limit on --seeds).
MAX_SUGGESTED_SEEDS = 1000
#: The precision c of the half-normal weight over standardized effects θ in eq. 28. Smaller c spends
#: more of α on large effects (a decision from fewer seeds when the difference is far from the margin),
#: larger c on small ones; 0.25 is about the best for the seeds a verdict takes (5 to 30): the
#: boundary τ_n is 11.3 at 3 seeds, 4.3 at 5, 3.5 at 10, 3.3 at 30 (Student's t: 2.9, 2.1, 1.8, 1.7).
MIXING = 0.25
#: The chance of settling an inconclusive verdict that the suggested seeds aim at.
POWER = 0.80
#: How the interval is computed, as results.json records it (verdict.method).
METHOD = ("anytime-valid paired t confidence sequence (Lai 1976; half-normal mixture, c = 0.25): "
          "each side holds at 95% at every look")

ACCEPTED, REJECTED, INCONCLUSIVE, INDICATIVE = "accepted", "rejected", "inconclusive", "indicative"


@dataclass(frozen=True)
class Margin:
    """The non-inferiority margin δ: ``value`` in the metric's units, or with ``relative`` a fraction of
    the original's mean metric (|mean| × value)."""

    value: float = DEFAULT_MARGIN
    relative: bool = False
    given: bool = False  # set by the user (--tolerance), not the default

    def resolve(self, reference_mean: Optional[float]) -> float:
        """δ in the metric's units for an original whose mean metric is ``reference_mean``."""
        if not self.relative:
            return self.value
        if reference_mean is None or not math.isfinite(reference_mean):
            return math.nan
        return abs(reference_mean) * self.value

    def describe(self, reference_mean: Optional[float]) -> str:
        """How δ was chosen, e.g. ``--tolerance 1% of the original's 0.8123``."""
        if self.relative:
            ref = "n/a" if reference_mean is None or not math.isfinite(reference_mean) else f"{reference_mean:.4g}"
            return f"--tolerance {self.value * 100:g}% of the original's {ref}"
        return "--tolerance" if self.given else "the default"

    def to_text(self) -> str:
        """The --tolerance text that gives this margin back (``parse_margin``)."""
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def parse_margin(text: object, where: str = "--tolerance") -> Margin:
    """``0.005`` (metric units) or ``1%`` (a fraction of the original's metric); None: the default;
    a ``Margin`` as it is."""
    if isinstance(text, Margin):
        return text
    if text is None:
        return Margin()
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"{where} must be a number (metric units) or a percentage like 1%, got {type(text).__name__}")
    raw = str(text).strip()
    relative = raw.endswith("%")
    number = raw[:-1].strip() if relative else raw
    try:
        value = float(number)
    except ValueError:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise UserError(f"{where} {shown!r} is not a number; give the accepted drop in the metric's units "
                        "(e.g. 0.005) or as a percentage of the original's metric (e.g. 1%)") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where} must be a finite number ≥ 0, got {raw}")
    if relative:
        value /= 100.0
        if value > 1:
            raise UserError(f"{where} {raw} is more than 100% of the original's metric; give at most 100%")
    return Margin(value, relative, given=True)


def t_quantile(confidence: float, dof: int) -> float:
    """The Student-t quantile of a two-sided ``confidence`` interval with ``dof`` degrees of freedom."""
    from scipy.special import stdtrit  # scipy.stats would add a second to the first call

    return float(stdtrit(dof, 0.5 + confidence / 2))


def paired_interval(differences: Sequence[float],
                    confidence: float = CONFIDENCE) -> tuple[float, Optional[float], Optional[float], Optional[float]]:
    """(mean d̄, lower end, upper end, sd of d) of the fixed-n paired t interval, valid for ONE look only;
    None ends with one seed. The verdict uses :func:`sequential_interval`."""
    return _interval(differences, lambda n: t_quantile(confidence, n - 1))


def _interval(differences: Sequence[float], factor) -> tuple[float, Optional[float], Optional[float], Optional[float]]:
    """(d̄, d̄ − f·sd/√n, d̄ + f·sd/√n, sd) with f = ``factor(n)`` (None ends with one difference; infinite f:
    infinite ends)."""
    ds = [float(d) for d in differences]
    if not ds:
        raise ValueError("the paired interval needs at least one difference")
    mean = statistics.fmean(ds)
    if len(ds) == 1:
        return mean, None, None, None
    sd = statistics.stdev(ds)
    f = factor(len(ds))
    half = math.inf if math.isinf(f) else f * sd / math.sqrt(len(ds))
    return mean, mean - half, mean + half, sd


def log_evidence(t, n, c: float = MIXING):
    """log M_n (eq. 28): the evidence against μ = μ0 for μ > μ0 of n differences whose t statistic is ``t``.

    ``t`` and ``n`` may be numpy arrays (n ≥ 2); t = ±inf (no spread) is the limit."""
    import numpy as np
    from scipy.special import stdtr

    t, n = np.asarray(t, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isinf(t), 1.0, t * t / (t * t + n - 1))
        arg = np.sign(t) * n * np.sqrt(r / (n + c - n * r))
        return (math.log(2) + 0.5 * np.log(c / (n + c)) - n / 2 * np.log1p(-n * r / (n + c))
                + np.log(stdtr(n, arg)))


@functools.lru_cache(maxsize=4096)
def t_boundary(n: int, alpha: float = (1 - CONFIDENCE) / 2, c: float = MIXING) -> float:
    """τ_n (eq. 29): the t statistic at which M_n reaches 1/α; infinite when no n-seed data reach it
    (one or two seeds at the defaults)."""
    from scipy.optimize import brentq

    if n < 2:
        return math.inf
    goal = math.log(1 / alpha)
    if float(log_evidence(math.inf, n, c)) < goal:
        return math.inf
    hi = 1.0
    while float(log_evidence(hi, n, c)) < goal:
        hi *= 2
    return float(brentq(lambda t: float(log_evidence(t, n, c)) - goal, 0.0, hi, xtol=1e-10, rtol=1e-12))


def sequential_interval(differences: Sequence[float], confidence: float = CONFIDENCE
                        ) -> tuple[float, Optional[float], Optional[float], Optional[float]]:
    """(mean d̄, lower end, upper end, sd of d) of the confidence sequence (eq. 22): d̄ ∓ τ_n·sd/√n.

    Valid at every n at once (each side at (1 + confidence)/2): read it after every added seed and
    the chance that it ever excludes the true mean stays below 1 − confidence. None ends with one
    seed; infinite ends while τ_n is (two seeds)."""
    return _interval(differences, lambda n: t_boundary(n, (1 - confidence) / 2))


def decide(mean: float, lo: Optional[float], hi: Optional[float], margin: float) -> str:
    """Eq. 23: accepted when the interval lies above −δ, rejected when below, else inconclusive.

    With one seed (no interval) the verdict is only indicative: one difference never decides.
    """
    if lo is None or hi is None:
        return INDICATIVE
    if lo > -margin:
        return ACCEPTED
    if hi < -margin:
        return REJECTED
    return INCONCLUSIVE


def settle_power(theta, n, confidence: float = CONFIDENCE):
    """P(the sequence settles at n seeds) for a standardized distance θ = |μ + δ|/σ from the margin:
    P(noncentral t_{n−1}(θ·√n) ≥ τ_n). ``theta`` and ``n`` may be numpy arrays."""
    import numpy as np
    from scipy.stats import nct  # scipy.special.nctdtr gives NaN far in the tail (scipy 1.17)

    theta, n = np.broadcast_arrays(np.asarray(theta, dtype=float), np.asarray(n, dtype=int))
    values, where = np.unique(n, return_inverse=True)
    tau = np.array([t_boundary(int(k), (1 - confidence) / 2) for k in values])[where].reshape(n.shape)
    finite = np.isfinite(tau) & (n >= 2)
    out = np.zeros(n.shape)
    out[finite] = nct.sf(tau[finite], n[finite] - 1, theta[finite] * np.sqrt(n[finite]))
    return out


def seeds_for_power(theta, have, confidence: float = CONFIDENCE, power: float = POWER,
                    limit: int = MAX_SUGGESTED_SEEDS):
    """The fewest seeds n > ``have`` with :func:`settle_power` ≥ ``power``; 0 where none up to ``limit``.

    Vectorised over ``theta`` and ``have`` (numpy arrays): a bisection on n (the power grows with n)."""
    import numpy as np

    theta, have = np.broadcast_arrays(np.asarray(theta, dtype=float), np.asarray(have, dtype=int))
    theta, have = theta.ravel(), have.ravel()
    lo = np.maximum(have + 1, 2) - 1  # power(lo) < power (or lo = have)
    hi = np.full(theta.shape, limit)
    reach = settle_power(theta, hi, confidence) >= power
    lo, hi = lo[reach], hi[reach]
    th = theta[reach]
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = settle_power(th, mid, confidence) >= power
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    out = np.zeros(theta.shape, dtype=int)
    out[reach] = hi
    return out


def too_close(mean: float, sd: Optional[float], n: int, margin: float) -> bool:
    """The mean is within one standard error of −δ (|t| < 1 against the margin): which side of the margin
    the candidate lies on is not known, so no number of seeds can be said to settle it."""
    if sd is None or n < 2:
        return False
    gap = abs(mean + margin)
    return sd == 0 and gap == 0 or gap * math.sqrt(n) < sd


def seeds_needed(mean: float, sd: Optional[float], margin: float, confidence: float = CONFIDENCE,
                 have: int = 2, limit: int = MAX_SUGGESTED_SEEDS) -> Optional[int]:
    """The seeds that give an 80 % chance (POWER) that the confidence sequence settles, if d̄ and sd are
    the truth; None past ``limit`` or when the mean is too close to the margin to tell (:func:`too_close`).

    A difference exactly at the margin is never settled (None).
    """
    gap = abs(mean + margin)
    if sd is None or gap == 0 or not math.isfinite(gap) or too_close(mean, sd, have, margin):
        return None
    theta = math.inf if sd == 0 else gap / sd
    n = int(seeds_for_power(min(theta, 1e6), have, confidence, POWER, limit)[0])
    return n or None


def paired_verdict(candidate: Sequence[Optional[float]], reference: Sequence[Optional[float]],
                   margin: Margin = Margin(), confidence: float = CONFIDENCE) -> dict:
    """The verdict on one candidate from its per-seed metrics and the original's (same seeds, same order).

    Returns ``status``, ``difference`` (d̄), ``interval`` ([lo, hi] of the confidence sequence, None
    with one seed, infinite ends as None), ``paired`` (each seed's d_s), ``sd`` (of d), ``margin`` (δ),
    ``margin_rule``, ``confidence``, ``method`` and, when inconclusive, ``seeds_suggested`` (None:
    more than MAX_SUGGESTED_SEEDS, or the mean too close to the margin, ``too_close``). One seed gives
    the status INDICATIVE. A seed whose metric is missing on either side makes the candidate rejected
    with ``reason`` set (the caller says why the metric is missing).
    """
    if len(candidate) != len(reference) or not candidate:
        raise ValueError(f"paired_verdict needs one metric per seed on both sides, got {len(candidate)} "
                         f"and {len(reference)}")
    ok = all(_finite(c) and _finite(r) for c, r in zip(candidate, reference))
    ref_mean = statistics.fmean(reference) if all(_finite(r) for r in reference) else None
    delta = margin.resolve(ref_mean)
    out = {"status": REJECTED, "difference": None, "interval": None, "paired": None, "sd": None,
           "margin": delta if math.isfinite(delta) else None, "margin_rule": margin.describe(ref_mean),
           "confidence": confidence, "method": METHOD, "seeds": len(candidate), "seeds_suggested": None,
           "too_close": False, "reason": None}
    if not ok or not math.isfinite(delta):
        out["reason"] = "not finite"
        return out
    ds = [c - r for c, r in zip(candidate, reference)]
    mean, lo, hi, sd = sequential_interval(ds, confidence)
    status = decide(mean, lo, hi, delta)
    interval = None if lo is None else [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None]
    out.update(status=status, difference=mean, interval=interval, paired=ds, sd=sd)
    if status == INCONCLUSIVE:
        out["too_close"] = too_close(mean, sd, len(ds), delta)
        out["seeds_suggested"] = seeds_needed(mean, sd, delta, confidence, have=len(ds))
    return out


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def simulate_looks(true_mean: float, sd: float, margin: float, start: int = 3, extra_looks: int = 3,
                   sims: int = 20000, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """The rule's operating characteristics by simulation: ``sims`` validations of a candidate whose paired
    differences are N(true_mean, sd²), each starting at ``start`` seeds and then, while inconclusive, resumed
    to the suggested seeds up to ``extra_looks`` times (``validate --resume --seeds K``, K as suggested).

    Returns the fractions ``accepted`` and ``rejected`` (at any look), ``first_accepted`` (at the first look)
    and ``looks`` (the mean number of looks). Exact in distribution: the seeds a look adds enter through
    their sufficient statistics (their mean, normal; their sum of squares, σ²·χ²), so no seed is drawn
    one by one. Vectorised with numpy; deterministic for a given ``seed``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n = np.full(sims, start)
    mean = rng.normal(true_mean, sd / np.sqrt(start), sims)
    ss = sd ** 2 * rng.chisquare(start - 1, sims) if start > 1 else np.zeros(sims)
    status = np.zeros(sims, dtype=int)  # 0 undecided, 1 accepted, -1 rejected, 2 stopped (too close, no suggestion)
    looks = np.zeros(sims, dtype=int)
    first = None
    for look in range(extra_looks + 1):
        active = status == 0
        looks[active] += 1
        s = np.sqrt(ss / np.maximum(n - 1, 1))
        tau = np.array([t_boundary(int(k), (1 - confidence) / 2) for k in range(int(n.max()) + 1)])[n]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (mean + margin) * np.sqrt(n) / s
        status[active & (t > tau)] = 1
        status[active & (t < -tau)] = -1
        if first is None:
            first = float(np.mean(status == 1))
        pending = np.flatnonzero(status == 0)
        if look == extra_looks or pending.size == 0:
            break
        close = np.abs(t[pending]) < 1  # too_close: no suggestion, the user stops
        want = seeds_for_power(np.abs(t[pending]) / np.sqrt(n[pending]), n[pending], confidence)
        stop = close | (want == 0)
        status[pending[stop]] = 2
        go, k = pending[~stop], want[~stop]
        mean[go], ss[go] = add_seeds(rng, true_mean, sd, n[go], mean[go], ss[go], k)
        n[go] = k
    return {"accepted": float(np.mean(status == 1)), "rejected": float(np.mean(status == -1)),
            "first_accepted": first, "looks": float(np.mean(looks))}


def add_seeds(rng, true_mean: float, sd: float, n, mean, ss, k):
    """(mean, sum of squared deviations) of ``n`` differences with ``mean`` and ``ss`` after adding k − n new
    N(true_mean, sd²) ones, drawn through their sufficient statistics: their mean (normal) and their own sum
    of squares (sd²·χ²_{k−n−1}), pooled. numpy arrays; ``rng`` a numpy Generator."""
    import numpy as np

    m = k - n
    add_mean = rng.normal(true_mean, sd / np.sqrt(m))
    add_ss = sd ** 2 * rng.chisquare(np.maximum(m - 1, 1)) * (m > 1)
    return (n * mean + m * add_mean) / k, ss + add_ss + n * m / k * (mean - add_mean) ** 2
