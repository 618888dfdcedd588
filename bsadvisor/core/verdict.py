"""The validate verdict: is a candidate run no worse than the original by more than a margin?

Every candidate (the plan, the hybrid, the increased-LR variant) trains with the same
seeds as the original: seed s fixes the initial weights, the data order and the RNG
streams of both. So the comparison is paired (docs/concepts.md, eqs. 21–23):

    d_s = metric(candidate, s) − metric(original, s)              (21)
    d̄ ± t_{0.95, n−1} · sd(d) / √n                                (22)  two-sided 90 % interval
    accepted ⇔ lo > −δ;  rejected ⇔ hi < −δ;  else inconclusive   (23)

δ is the non-inferiority margin (``--tolerance``: 0.005 in the metric's units by default,
or a fraction of the original's mean metric, "1%"). Most of what makes two seeds differ
(the initial weights and the data order) is shared by both runs of a seed and cancels in
d_s, so the paired interval is far narrower than the seeds' own spread. With one seed
there is no spread: the verdict is read from d alone and says so.

Pure math (scipy's Student-t quantile; no torch).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from bsadvisor.core.errors import UserError

#: Two-sided confidence of the paired interval.
CONFIDENCE = 0.90
#: The default margin δ, in the metric's units (half a percentage point of accuracy).
DEFAULT_MARGIN = 0.005
#: More seeds than this are never suggested (validate's own limit on --seeds).
MAX_SUGGESTED_SEEDS = 1000

ACCEPTED, REJECTED, INCONCLUSIVE = "accepted", "rejected", "inconclusive"


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
    """(mean d̄, lower end, upper end, sd of d) of the paired differences (eq. 22); None ends with one seed."""
    ds = [float(d) for d in differences]
    if not ds:
        raise ValueError("paired_interval needs at least one difference")
    mean = statistics.fmean(ds)
    if len(ds) == 1:
        return mean, None, None, None
    sd = statistics.stdev(ds)
    half = t_quantile(confidence, len(ds) - 1) * sd / math.sqrt(len(ds))
    return mean, mean - half, mean + half, sd


def decide(mean: float, lo: Optional[float], hi: Optional[float], margin: float) -> str:
    """Eq. 23: accepted when the interval lies above −δ, rejected when below, else inconclusive.

    With one seed (no interval) the difference alone decides: accepted when d ≥ −δ.
    """
    if lo is None or hi is None:
        return ACCEPTED if mean >= -margin else REJECTED
    if lo > -margin:
        return ACCEPTED
    if hi < -margin:
        return REJECTED
    return INCONCLUSIVE


def seeds_needed(mean: float, sd: Optional[float], margin: float, confidence: float = CONFIDENCE,
                 have: int = 2, limit: int = MAX_SUGGESTED_SEEDS) -> Optional[int]:
    """The fewest seeds whose interval would clear −δ if d̄ and sd stayed as measured; None past ``limit``.

    The interval's half-width t_{n−1}·sd/√n must fall below the distance |d̄ + δ| from the mean
    to the margin. A difference exactly at the margin is never settled (None).
    """
    gap = abs(mean + margin)
    if sd is None or gap == 0 or not math.isfinite(gap):
        return None
    for n in range(max(2, have + 1), limit + 1):
        if t_quantile(confidence, n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None


def paired_verdict(candidate: Sequence[Optional[float]], reference: Sequence[Optional[float]],
                   margin: Margin = Margin(), confidence: float = CONFIDENCE) -> dict:
    """The verdict on one candidate from its per-seed metrics and the original's (same seeds, same order).

    Returns ``status``, ``difference`` (d̄), ``interval`` ([lo, hi], None with one seed),
    ``paired`` (each seed's d_s), ``sd`` (of d), ``margin`` (δ), ``margin_rule``,
    ``confidence`` and, when inconclusive, ``seeds_suggested`` (None: more than
    MAX_SUGGESTED_SEEDS or never). A seed whose metric is missing on either side makes the
    candidate rejected with ``reason`` set (the caller says why the metric is missing).
    """
    if len(candidate) != len(reference) or not candidate:
        raise ValueError(f"paired_verdict needs one metric per seed on both sides, got {len(candidate)} "
                         f"and {len(reference)}")
    ok = all(_finite(c) and _finite(r) for c, r in zip(candidate, reference))
    ref_mean = statistics.fmean(reference) if all(_finite(r) for r in reference) else None
    delta = margin.resolve(ref_mean)
    out = {"status": REJECTED, "difference": None, "interval": None, "paired": None, "sd": None,
           "margin": delta if math.isfinite(delta) else None, "margin_rule": margin.describe(ref_mean),
           "confidence": confidence, "seeds": len(candidate), "seeds_suggested": None, "reason": None}
    if not ok or not math.isfinite(delta):
        out["reason"] = "not finite"
        return out
    ds = [c - r for c, r in zip(candidate, reference)]
    mean, lo, hi, sd = paired_interval(ds, confidence)
    status = decide(mean, lo, hi, delta)
    out.update(status=status, difference=mean, interval=None if lo is None else [lo, hi], paired=ds, sd=sd)
    if status == INCONCLUSIVE:
        out["seeds_suggested"] = seeds_needed(mean, sd, delta, confidence, have=len(ds))
    return out


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
