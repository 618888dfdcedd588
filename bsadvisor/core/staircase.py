"""The staircase: which batch each span of the original run trains at, and the LR factor that keeps its temperature.

The batch-growth rule of core/convert.py's docstring: a new batch stage when the target batch
has grown by a stage factor (or K × with integer growth), down again after a warm restart,
no stage shorter than an update; under the noise rule one LR factor per stage (eq. 25).
No torch here.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, NamedTuple, Optional

from bsadvisor.core.errors import UserError
from bsadvisor.core.original import updates_per_stage
from bsadvisor.core.plan import Stage
from bsadvisor.core.rounding import EPS, Rounding
from bsadvisor.core.spans import Piece, Span
from bsadvisor.core.temperature import TemperatureModel


#: How far above the base (peak) LR a stage's LR may go before the batch comes back down (a rise of the
#: original's LR after its peak, e.g. a warm restart, is a fall of the target batch).
RISE_TOLERANCE = 0.05


class Staircase(NamedTuple):
    """The batch-growth rule of one conversion (core/convert.py's docstring).

    From the ``peak`` piece on, piece i asks for the batch ``targets[i]`` that gives g_ref·ρ_i
    at the base LR and momentum; a new batch stage starts when that target has grown by
    ``factor`` (and the rounded batch by ``factor`` over the current one) or passed the
    ``cap`` (then to the cap, when that is ``factor`` above the current batch), and inside a
    stage the LR is f(B) × the original's (eq. 14). When the original's LR rises again (a warm
    restart) so far that f(B) × it would pass the base LR by RISE_TOLERANCE, the batch comes
    back down, never below ``b_start``. With ``growth`` K every new batch is K × the
    previous one. Pieces before the peak are the LR warmup, kept at ``b_start``. No batch
    stage is shorter than one update at its batch (:meth:`_without_short_stages`).
    """

    pieces: list[Piece]
    rho: list[float]
    targets: list[Optional[float]]
    peak: int
    g_ref: float
    model: TemperatureModel
    lr_base: float
    m_base: float
    b_base: float
    b_start: int
    cap: int
    rounding: Rounding
    factor: float
    b0: int = 1
    growth: Optional[int] = None
    caps: Optional[list[int]] = None  # each piece's own cap (≤ cap), from a noise cap that varies with s
    follow_momentum: bool = False  # a table's momentum column: every piece trains at its own momentum
    dataset_size: Optional[int] = None  # N, where an epoch ends (None: streaming), for the update count

    def cap_at(self, i: int) -> int:
        return self.cap if self.caps is None else min(self.cap, self.caps[i])

    def momentum_at(self, i: int) -> float:
        """The momentum piece i trains with: its own (a table's momentum column) or the base point's."""
        return self.pieces[i].momentum if self.follow_momentum else self.m_base

    def lr_scale(self, i: int, batch: int) -> float:
        """f(B): the factor on the original's LR that keeps piece i's temperature at ``batch`` (eq. 14)."""
        piece = self.pieces[i]
        return self.model.scale_for(batch, self.b0, self.momentum_at(i), piece.momentum, piece.start)

    def _too_hot(self, i: int, batch: int) -> bool:
        """Whether ``batch`` at piece i needs an LR past the base LR × (1 + RISE_TOLERANCE)."""
        return self.lr_scale(i, batch) * self.pieces[i].lr > self.lr_base * (1 + RISE_TOLERANCE)

    def can_grow(self, batch: int, cap: int) -> bool:
        """Whether a stage above ``batch`` fits under ``cap`` (K × batch, or ``factor`` × batch)."""
        if self.growth is not None:
            return batch * self.growth <= cap
        return cap > batch and cap >= batch * self.factor * (1 - EPS)

    def batches(self) -> list[tuple[int, float]]:
        """(batch, ref) of each piece: ``ref`` is the unrounded batch the current stage was chosen for.

        The starting batch itself is never re-rounded (a B0 that is not a multiple of
        --round-to stays B0): stages change only after the peak piece.
        """
        out = []
        ref = min(self.b_base, float(self.cap_at(self.peak)))
        batch = self.b_start
        for i, target in enumerate(self.targets):
            if i > self.peak:
                batch, ref = (self._down(i, target, batch) if batch > self.b_start and self._too_hot(i, batch)
                              else self._up(i, target, batch, ref))
            out.append((batch, ref))
        return self._without_short_stages(out)

    def _up(self, i: int, target: float, batch: int, ref: float) -> tuple[int, float]:
        """(batch, ref) at piece i when the target may have grown: a new stage ``factor`` above, or K ×."""
        cap = self.cap_at(i)
        if self.growth is not None:
            while batch * self.growth <= cap and target >= batch * self.growth * (1 - EPS):
                batch *= self.growth
            return batch, float(batch)
        want = min(target, float(cap))
        if want >= ref * self.factor * (1 - EPS) or (target >= cap * (1 - EPS) and self.can_grow(batch, cap)):
            nearest = min(self.rounding.nearest(want), cap)
            if self._too_hot(i, nearest):  # rounded up too far for a small batch: round down instead
                nearest = min(self.rounding.floor(want), cap)
            if nearest > batch and nearest >= batch * self.factor * (1 - EPS):
                return nearest, want
        return batch, ref

    def _down(self, i: int, target: float, batch: int) -> tuple[int, float]:
        """(batch, ref) at piece i after the original's LR rose: the batch comes back down, at least a
        ``factor`` (or K) below, to one whose LR stays at the base LR, never below ``b_start``."""
        if self.growth is not None:
            while batch > self.b_start and self._too_hot(i, batch):
                batch //= self.growth
            return batch, float(batch)
        lower = min(self.rounding.floor(target), self.rounding.floor(batch / self.factor))
        batch = max(self.b_start, lower if lower < batch else self.b_start)
        return batch, float(batch)

    def _without_short_stages(self, batches: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """``batches`` with every batch stage shorter than one update at its batch folded into the smaller of
        its neighbours (a smaller batch only lowers the LR that keeps the temperature)."""
        batches = list(batches)
        while True:
            runs = _runs([b for b, _ in batches])
            stages = [(self.pieces[a].start, self.pieces[b - 1].end, batch) for a, b, batch in runs]
            counts = updates_per_stage(self.pieces[-1].end, self.dataset_size, stages)
            short = next((k for k in range(1, len(runs)) if counts[k] == 0 or stages[k][1] - stages[k][0] < runs[k][2]),
                         None)
            if short is None:
                return batches
            a, b, batch = runs[short]
            smaller = min([runs[short - 1][2]] + ([runs[short + 1][2]] if short + 1 < len(runs) else []))
            if smaller >= batch:  # a short dip (a restart) between larger batches: keep its lower LR
                return batches
            batches[a:b] = [(smaller, float(smaller))] * (b - a)

    def spans(self) -> list[Span]:
        """(batch, LR factor, momentum) of each piece: the factor f(B) keeps the original's temperature (eq. 14)."""
        out: list[Span] = []
        for i, (piece, r, target, (batch, _ref)) in enumerate(zip(self.pieces, self.rho, self.targets,
                                                                   self.batches())):
            if i < self.peak:
                phase = "warmup"
            elif out and out[-1].phase == "hybrid" and out[-1].batch == batch:
                phase = "hybrid"  # capped once, the batch stays capped until its next stage (a rising cap may free it)
            else:
                phase = "hybrid" if not self.can_grow(batch, self.cap_at(i)) and target > batch * (1 + EPS) else "growth"
            scale = self.lr_scale(i, batch)
            if not math.isfinite(scale) and piece.lr == 0:  # B = N where the schedule reaches LR 0: nothing to keep
                scale = 0.0
            if not math.isfinite(scale):  # B = N leaves no gradient noise, so no LR can raise g again
                raise UserError(f"at sample {piece.start:,} the schedule asks for a higher temperature than batch "
                                f"{batch} (= N) can give at any LR; lower --max-fraction, or end the schedule before "
                                "it rises again")
            if abs(scale - 1) < EPS:  # float noise; keep the user's numbers exact
                scale = 1.0
            out.append(Span(piece.start, piece.end, batch, scale * piece.lr, scale, self.momentum_at(i), r, phase))
        return _steady_scales(out) if self.model.uses_noise_scale else out


def _runs(values: list) -> list[tuple[int, int, Any]]:
    """(first index, end index, value) of each run of equal consecutive ``values``."""
    runs, start = [], 0
    for k in range(1, len(values) + 1):
        if k == len(values) or values[k] != values[start]:
            runs.append((start, k, values[start]))
            start = k
    return runs


#: Under the noise rule, the most a stage's LR factor may be off the exact one at any of its spans (eq. 25).
NOISE_SCALE_TOLERANCE = 0.05


def _steady_scales(spans: list[Span]) -> list[Span]:
    """One LR factor for each run of spans at one batch, where the exact factor drifts with B_noise(s).

    Under the noise rule the factor that keeps T at a batch depends on B_noise(s), which moves
    inside a stage; a stage trains at one factor. Consecutive spans share the geometric middle
    of their exact factors while those stay within 1 ± NOISE_SCALE_TOLERANCE of it, so the
    realised temperature is within that tolerance of the original's; past it a new stage
    (same batch, new factor) begins (eq. 25).
    """
    out, group = [], []

    def flush():
        finite = [s.lr_scale for s in group if s.lr_scale > 0]
        mid = math.sqrt(min(finite) * max(finite)) if finite else 0.0
        for s in group:
            f = mid if s.lr_scale > 0 else s.lr_scale
            out.append(Span(s.start, s.end, s.batch, f * (s.lr / s.lr_scale) if s.lr_scale else s.lr, f,
                             s.momentum, s.rho, s.phase))
        group.clear()

    limit = (1 + NOISE_SCALE_TOLERANCE) ** 2  # every span then within 1 ± tolerance of the middle
    for span in spans:
        if group:
            same = span.batch == group[0].batch and span.phase == group[0].phase and span.momentum == group[0].momentum
            scales = [s.lr_scale for s in group if s.lr_scale > 0] + ([span.lr_scale] if span.lr_scale > 0 else [])
            if not same or (scales and max(scales) / min(scales) > limit):
                flush()
        group.append(span)
    if group:
        flush()
    return out


def _count_batches(batches) -> int:
    """Distinct consecutive batch sizes in a list of spans or of (batch, ref) pairs."""
    bs = [b.batch if isinstance(b, Span) else b[0] for b in batches]
    return 1 + sum(1 for a, b in zip(bs, bs[1:]) if a != b)


def _fit_factor(stairs: Staircase, max_stages: int) -> float:
    """Smallest stage factor (bisection in log space) giving at most ``max_stages`` batch sizes."""
    lo = math.log(max(stairs.factor, 1.0))
    hi = math.log(max(stairs.cap / max(stairs.b_start, 1), 1.0) * 2 + 1)
    best = math.exp(hi)
    for _ in range(60):  # to float precision: a factor just above a boundary would skip a step
        mid = (lo + hi) / 2
        if _count_batches(stairs._replace(factor=math.exp(mid)).batches()) <= max_stages:
            best, hi = math.exp(mid), mid
        else:
            lo = mid
    return best


def without_idle_stages(stages: list[Stage], dataset_size: Optional[int]) -> list[Stage]:
    """``stages`` with every stage in which no update starts folded into a neighbour of its batch.

    The runtime reads a stage's settings where an update starts, so such a stage never
    trains; the staircase already makes every batch last an update, so it shares its batch
    with the stage before or after (a phase or factor that changed under one update) and
    folding it changes no update.
    """
    stages = list(stages)
    counts = updates_per_stage(stages[-1].end_sample, dataset_size,
                               [(s.start_sample, s.end_sample, s.batch_size) for s in stages])
    out: list[Stage] = []
    for i, (stage, count) in enumerate(zip(stages, counts)):
        after = stages[i + 1] if i + 1 < len(stages) else None
        if count == 0 and out and out[-1].batch_size == stage.batch_size:
            out[-1] = replace(out[-1], end_sample=stage.end_sample)
        elif count == 0 and after is not None and after.batch_size == stage.batch_size:
            stages[i + 1] = replace(after, start_sample=stage.start_sample)
        else:
            out.append(stage)
    return out


def fit_stages(stairs: "Staircase", max_stages: Optional[int], cap_words: str,
               notes: list[str]) -> tuple["Staircase", str]:
    """The staircase within ``max_stages`` batch sizes, and how the report names its cap."""
    fit = max_stages is not None and _count_batches(stairs.batches()) > max_stages
    if fit and max_stages == 1:  # one batch size: the staircase always steps up at the cap, so keep B, decay the LR
        stairs, cap_words = stairs._replace(cap=stairs.b_start), "--max-stages 1"
    elif fit:
        stairs = stairs._replace(factor=_fit_factor(stairs, max_stages))
    if fit:
        notes.append(f"at most {max_stages} batch stages: a new batch when the target grew by ×{stairs.factor:.3g}")
    elif stairs.factor > 1:
        notes.append(f"a new batch stage when the target batch has grown by ×{stairs.factor:.3g}; "
                     "inside a stage the LR carries the rest")
    return stairs, cap_words
