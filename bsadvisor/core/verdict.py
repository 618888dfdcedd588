"""The validate verdict: is a candidate run no worse than the original by more than a margin?

Every candidate (the plan, the hybrid, the increased-LR variant) trains with the same
seeds as the original: seed s fixes the initial weights, the data order and the RNG
streams of both. So the comparison is paired (docs/concepts.md, eqs. 21–23 and 28–30):

    d_s = metric(candidate, s) − metric(original, s)              (21)
    d̄ ± t_{1−α_k, n−1} · sd(d) / √n                               (22)  α spent across looks (28–29)
    accepted ⇔ lo > −δ;  rejected ⇔ hi < −δ;  else inconclusive   (23)

δ is the non-inferiority margin (``--tolerance``: 0.005 in the metric's units by default,
or a fraction of the original's mean metric, "1%"). Most of what makes two seeds differ
(the initial weights and the data order) is shared by both runs of a seed and cancels in
d_s, so the paired interval is far narrower than the seeds' own spread.

The verdict is taken again each time ``validate --resume --seeds K`` adds seeds, so the
interval must hold at every look, not only at one planned sample size. It spends α across
looks (a union bound, eqs. 28–29): look k (1-based, counted from the results.json in
``--out``; a look at one seed has no interval and spends nothing) spends, on each side,

    α_k = α · 6/(π² k²),   Σ_k α_k = α = 0.05                    (28)
    d̄ ± t_{1−α_k, n−1} · sd(d) / √n                               (29)

so the chance that any look's interval misses the true mean on a side is at most
Σ α_k = α, however many times the verdict is read (exact for seed counts fixed beforehand;
for counts chosen from the results, as the suggestion below is, each look's t is no longer
exactly Student's, and :func:`simulate_looks` checks the rule itself: at most 4 % at the margin). Look 1 spends 3.04 % per side
(t = 3.87 at 3 seeds against 2.92 for a one-look 90 % interval), look 2 0.76 %, look 3
0.34 %. One seed has no spread: the verdict is only indicative (a status of its own,
never accepted or rejected).

The seeds suggested for an inconclusive verdict give an 80 % chance (power) that the next
look (k + 1) settles at that many seeds, if the difference and its spread are what was
measured: P(noncentral t_{n−1}(θ̂·√n) ≥ t_{1−α_{k+1}, n−1}) ≥ 0.8 with θ̂ = |d̄ + δ| / sd (eq. 30).

Pure math (scipy's Student-t quantile and noncentral t; no torch).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from bsadvisor.core.errors import UserError

#: Two-sided confidence of the paired interval over all looks: each side holds at (1 + CONFIDENCE) / 2,
#: α = 0.05, spent across looks (:func:`spent_alpha`).
CONFIDENCE = 0.90
#: The default margin δ, in the metric's units (half a percentage point of accuracy).
DEFAULT_MARGIN = 0.005
#: More seeds than this are never suggested (validate's own limit on --seeds).
MAX_SUGGESTED_SEEDS = 1000
#: The chance of settling an inconclusive verdict that the suggested seeds aim at.
POWER = 0.80
#: How the interval is computed, as results.json records it (verdict.method).
METHOD = "paired t, alpha spent across looks: alpha_k = 0.05*6/(pi^2 k^2) per side at look k"

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


def parse_margin(text: object, where: str = "--tolerance") -> Margin:
    """``0.005`` (metric units) or ``1%`` (a fraction of the original's metric); None: the default;
    a ``Margin`` as it is."""
    if isinstance(text, Margin):
        return text
    if text is None:
        return Margin()
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"{where} must be a number (metric units) or a percentage like 1%, got {type(text).__name__}",
                        parameter=where)
    raw = str(text).strip()
    relative = raw.endswith("%")
    number = raw[:-1].strip() if relative else raw
    try:
        value = float(number)
    except ValueError:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise UserError(f"{where} {shown!r} is not a number; give the accepted drop in the metric's units "
                        "(e.g. 0.005) or as a percentage of the original's metric (e.g. 1%)", parameter=where) from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where} must be a finite number ≥ 0, got {raw}", parameter=where)
    if relative:
        value /= 100.0
        if value > 1:
            raise UserError(f"{where} {raw} is more than 100% of the original's metric; give at most 100%", parameter=where)
    return Margin(value, relative, given=True)


def t_quantile(confidence: float, dof: int) -> float:
    """The Student-t quantile of a two-sided ``confidence`` interval with ``dof`` degrees of freedom."""
    from scipy.special import stdtrit  # here: scipy takes ~0.3 s to load and the CLI imports this module at start

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


def spent_alpha(look, confidence: float = CONFIDENCE):
    """α_k (eq. 28): what look ``look`` (1-based) spends on each side, α·6/(π²k²) with α = (1 − confidence)/2;
    summed over every look it is α. ``look`` may be a numpy array."""
    k = np.asarray(look, dtype=float)
    if np.any(k < 1):
        raise ValueError(f"looks are counted from 1, got {look}")
    out = (1 - confidence) / 2 * 6 / (math.pi ** 2 * k * k)
    return float(out) if out.ndim == 0 else out


def look_quantile(n, look, confidence: float = CONFIDENCE):
    """t_{1−α_k, n−1} (eq. 29): the Student-t quantile of n seeds at look k; infinite below two seeds.
    ``n`` and ``look`` may be numpy arrays."""
    from scipy.special import stdtrit  # here: as in t_quantile (scipy.stats would add a second more)

    n, look = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(look, dtype=float))
    with np.errstate(invalid="ignore"):
        q = np.where(n >= 2, stdtrit(np.maximum(n - 1, 1), 1 - spent_alpha(look, confidence)),
                     np.inf)
    return float(q) if q.ndim == 0 else q


def sequential_interval(differences: Sequence[float], look: int = 1, confidence: float = CONFIDENCE
                        ) -> tuple[float, Optional[float], Optional[float], Optional[float]]:
    """(mean d̄, lower end, upper end, sd of d) of the interval at look ``look`` (eqs. 22, 29):
    d̄ ∓ t_{1−α_k, n−1}·sd/√n.

    Each look spends α_k of α = (1 − confidence)/2 per side (eq. 28), so read at look 1, 2, 3, ... the
    chance that any of them excludes the true mean on a side stays below α. None ends with one seed."""
    return _interval(differences, lambda n: look_quantile(n, look, confidence))


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


def settle_power(theta, n, look, confidence: float = CONFIDENCE):
    """P(look ``look`` settles at n seeds) for a standardized distance θ = |μ + δ|/σ from the margin:
    P(noncentral t_{n−1}(θ·√n) ≥ t_{1−α_k, n−1}) (eq. 30). ``theta``, ``n`` and ``look`` may be numpy arrays."""
    from scipy.stats import nct  # here: ~1 s to load; scipy.special.nctdtr gives NaN far in the tail (scipy 1.17)

    theta, n, look = np.broadcast_arrays(np.asarray(theta, dtype=float), np.asarray(n, dtype=int),
                                         np.asarray(look, dtype=int))
    tau = np.asarray(look_quantile(n, look, confidence)).reshape(n.shape)
    finite = np.isfinite(tau) & (n >= 2)
    out = np.zeros(n.shape)
    out[finite] = nct.sf(tau[finite], n[finite] - 1, theta[finite] * np.sqrt(n[finite]))
    return out


def seeds_for_power(theta, have, look, confidence: float = CONFIDENCE, power: float = POWER,
                    limit: int = MAX_SUGGESTED_SEEDS):
    """The fewest seeds n > ``have`` with :func:`settle_power` ≥ ``power`` at look ``look``; 0 where none up
    to ``limit``.

    Vectorised over ``theta``, ``have`` and ``look`` (numpy arrays): a bisection on n (the power grows with n)."""
    theta, have, look = np.broadcast_arrays(np.asarray(theta, dtype=float), np.asarray(have, dtype=int),
                                            np.asarray(look, dtype=int))
    theta, have, look = theta.ravel(), have.ravel(), look.ravel()
    lo = np.maximum(have + 1, 2) - 1  # power(lo) < power (or lo = have)
    hi = np.full(theta.shape, limit)
    reach = settle_power(theta, hi, look, confidence) >= power
    lo, hi = lo[reach], hi[reach]
    th, lk = theta[reach], look[reach]
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = settle_power(th, mid, lk, confidence) >= power
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
                 have: int = 2, limit: int = MAX_SUGGESTED_SEEDS, look: int = 2) -> Optional[int]:
    """The seeds that give an 80 % chance (POWER) that look ``look`` (the next one: the verdict's look + 1)
    settles, if d̄ and sd are the truth (eq. 30); None past ``limit`` or when the mean is too close to the
    margin to tell (:func:`too_close`).

    A difference exactly at the margin is never settled (None).
    """
    gap = abs(mean + margin)
    if sd is None or gap == 0 or not math.isfinite(gap) or too_close(mean, sd, have, margin):
        return None
    theta = math.inf if sd == 0 else gap / sd
    n = int(seeds_for_power(min(theta, 1e6), have, look, confidence, POWER, limit)[0])
    return n or None


def paired_verdict(candidate: Sequence[Optional[float]], reference: Sequence[Optional[float]],
                   margin: Margin = Margin(), confidence: float = CONFIDENCE, look: int = 1) -> dict:
    """The verdict on one candidate from its per-seed metrics and the original's (same seeds, same order),
    taken at look ``look`` (1-based: how many verdicts these seeds' runs have had, this one included).

    Returns ``status``, ``difference`` (d̄), ``interval`` ([lo, hi] at look ``look``, eq. 29: α spent
    across looks; None with one seed), ``paired`` (each seed's d_s), ``sd`` (of d), ``margin`` (δ),
    ``margin_rule``, ``confidence``, ``method``, ``look`` and, when inconclusive, ``seeds_suggested`` (for
    the next look, ``look`` + 1; None:
    more than MAX_SUGGESTED_SEEDS, or the mean too close to the margin, ``too_close``). One seed gives
    the status INDICATIVE. A seed whose metric is missing on either side makes the candidate rejected
    with ``reason`` set (the caller says why the metric is missing).
    """
    if len(candidate) != len(reference) or not candidate:
        raise ValueError(f"paired_verdict needs one metric per seed on both sides, got {len(candidate)} "
                         f"and {len(reference)}")
    if isinstance(look, bool) or not isinstance(look, int) or look < 1:
        raise ValueError(f"paired_verdict's look is counted from 1, got {look!r}")
    ok = all(_finite(c) and _finite(r) for c, r in zip(candidate, reference))
    ref_mean = statistics.fmean(reference) if all(_finite(r) for r in reference) else None
    delta = margin.resolve(ref_mean)
    out = {"status": REJECTED, "difference": None, "interval": None, "paired": None, "sd": None,
           "margin": delta if math.isfinite(delta) else None, "margin_rule": margin.describe(ref_mean),
           "confidence": confidence, "method": METHOD, "look": look, "seeds": len(candidate), "seeds_suggested": None,
           "too_close": False, "reason": None}
    if not ok or not math.isfinite(delta):
        out["reason"] = "not finite"
        return out
    ds = [c - r for c, r in zip(candidate, reference)]
    mean, lo, hi, sd = sequential_interval(ds, look, confidence)
    status = decide(mean, lo, hi, delta)
    interval = None if lo is None else [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None]
    out.update(status=status, difference=mean, interval=interval, paired=ds, sd=sd)
    if status == INCONCLUSIVE:
        out["too_close"] = too_close(mean, sd, len(ds), delta)
        out["seeds_suggested"] = seeds_needed(mean, sd, delta, confidence, have=len(ds), look=look + 1)
    return out


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def simulate_looks(true_mean: float, sd: float, margin: float, start: int = 3, extra_looks: int = 3,
                   sims: int = 20000, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """The rule's operating characteristics by simulation: ``sims`` validations of a candidate whose paired
    differences are N(true_mean, sd²), each starting at ``start`` seeds and then, while inconclusive, resumed
    to the suggested seeds up to ``extra_looks`` times (``validate --resume --seeds K``, K as suggested):
    look k (1 for the first) is judged at α_k and suggests seeds for look k + 1, as validate does.

    Returns the fractions ``accepted`` and ``rejected`` (at any look), ``first_accepted`` (at the first look)
    and ``looks`` (the mean number of looks). Exact in distribution: the seeds a look adds enter through
    their sufficient statistics (their mean, normal; their sum of squares, σ²·χ²), so no seed is drawn
    one by one. Vectorised with numpy; deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    n = np.full(sims, start)
    mean = rng.normal(true_mean, sd / np.sqrt(start), sims)
    ss = sd ** 2 * rng.chisquare(start - 1, sims) if start > 1 else np.zeros(sims)
    status = np.zeros(sims, dtype=int)  # 0 undecided, 1 accepted, -1 rejected, 2 stopped (too close, no suggestion)
    looks = np.zeros(sims, dtype=int)
    first = None
    for look in range(1, extra_looks + 2):  # look k spends α_k (eq. 28); a one-seed look spends nothing
        active = status == 0
        looks[active] += 1
        spend = max(1, look - (start < 2))
        s = np.sqrt(ss / np.maximum(n - 1, 1))
        tau = look_quantile(n, spend, confidence)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (mean + margin) * np.sqrt(n) / s
        status[active & (t > tau)] = 1
        status[active & (t < -tau)] = -1
        if first is None:
            first = float(np.mean(status == 1))
        pending = np.flatnonzero(status == 0)
        if look == extra_looks + 1 or pending.size == 0:
            break
        close = np.abs(t[pending]) < 1  # too_close: no suggestion, the user stops
        want = seeds_for_power(np.abs(t[pending]) / np.sqrt(n[pending]), n[pending], spend + 1, confidence)
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
    m = k - n
    add_mean = rng.normal(true_mean, sd / np.sqrt(m))
    add_ss = sd ** 2 * rng.chisquare(np.maximum(m - 1, 1)) * (m > 1)
    return (n * mean + m * add_mean) / k, ss + add_ss + n * m / k * (mean - add_mean) ** 2
