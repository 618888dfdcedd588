"""The original run on spans of samples over which its LR is constant, and its temperature in each.

A conversion never walks the run update by update: a constant piece of the schedule is one
span, a smooth one is read at no more than MAX_SPANS points (where a batch stage may start).
Each span gets its noise temperature g = ε/(1−m)·(N/B0 − 1) (eq. 1); once planned, a span
carries one batch and LR factor, and consecutive equal spans merge into a Stage. No torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from bsadvisor.core.defaults import ADAM_FAMILY
from bsadvisor.core.errors import UserError
from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.plan import Stage
from bsadvisor.core.temperature import TemperatureModel, noise_proxy_rule

#: Most points a smooth schedule is read at to place the stages (per step up to this many steps).
MAX_SPANS = 20_000


@dataclass
class Span:
    """Samples [start, end) of one original piece and, once planned, one batch and LR factor."""

    start: int
    end: int
    batch: int
    lr: float  # the plan's LR at ``start``: lr_scale × the original's
    lr_scale: float
    momentum: float
    rho: float  # what the original schedule asks for, g/g_ref
    phase: str


class Piece(NamedTuple):
    """Samples [start, end) of the original run at one LR and momentum (its first step's, for a smooth span)."""

    start: int
    end: int
    lr: float
    momentum: float


class Original(NamedTuple):
    """The original run, piece by piece, and its noise temperature g = ε/(1−m)·(N/B0 − 1) in each (eq. 1)."""

    pieces: list[Piece]  # tile [0, S); their number does not grow with the run for a step schedule
    model: TemperatureModel
    temperatures: list[float]
    run: Any  # core.original.OriginalRun


def temperature_model(options: ConvertOptions) -> TemperatureModel:
    """The options' temperature model: the N → ∞ form for a single pass over the data (eq. 15).

    The noise-aware Adam rule (eq. 24) reads B_noise(s) from ``options.noise_model`` along the
    original run (eq. 16, with the square-root temperature as the noise model's T: it must not
    depend on itself), one value per span of the original's LR; the plan keeps the original's
    temperature, so the same B_noise(s) holds for it.
    """
    if not (options.adam_rule == "noise" and options.optimizer in ADAM_FAMILY):
        return TemperatureModel.of(options)
    noise = options.noise_model
    if noise is None:
        raise UserError("adam_rule 'noise' reads the gradient noise scale B_noise(s) through the run: give a probe "
                        "(--probe probe.json, or advise) or a measured trace (--noise-trace results.json)",
                        parameter="adam_rule")
    proxy = TemperatureModel.of(options, noise_proxy_rule(options.adam_rule))
    run = options.original()
    starts, values = [], []
    for start, _end, step in _sample_spans(run):
        t = proxy.temperature(run.schedule.lr(step, options.lr), run.momentum_at(start), options.batch_size)
        starts.append(float(start))
        values.append(noise.b_noise(start, t, proxy))
    return TemperatureModel.of(options, b_noise=(tuple(starts), tuple(values)))


def read_original(options: ConvertOptions) -> Original:
    """The original run's pieces of constant LR and momentum, read from the schedule, and their temperatures."""
    run = options.original()
    pieces = []
    for start, end, step in _sample_spans(run):
        try:
            value = run.schedule.lr(step, options.lr)
        except OverflowError:
            value = math.inf
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"the schedule gives LR {value!r} at {where(run, start)}; it must be a finite number ≥ 0")
        pieces.append(Piece(start, end, value, run.momentum_at(start)))
    model = temperature_model(options)
    return Original(pieces, model, _temperatures(model, pieces, options.batch_size, options.lr, run), run)


def where(run, sample: int) -> str:
    """A sample position in the units the user thinks in: the epoch, or the step."""
    if run.unit == "epoch" and run.dataset_size:
        return f"epoch {sample // run.dataset_size}"
    return f"step {run.step_at(sample)}"


def _sample_spans(run) -> list[tuple[int, int, int]]:
    """(start_sample, end_sample, first scheduler step) tiling [0, S), over which the original LR is constant.

    A constant piece of the schedule is one span; a smooth one is cut at every scheduler
    step, or every c steps when the run has more than MAX_SPANS of them (c chosen so the
    spans stay under MAX_SPANS): those are the points where a batch stage may begin.
    """
    pieces = [(a, b, smooth) for a, b, smooth in run.schedule.pieces(run.horizon, run.steps_per_epoch)]
    smooth_steps = sum(b - a for a, b, smooth in pieces if smooth)
    chunk = max(1, -(-smooth_steps // max(1, MAX_SPANS - len(pieces))))
    spans: list[tuple[int, int, int]] = []
    for a, b, smooth in pieces:
        for k in (range(a, b, chunk) if smooth else (a,)):
            start = run.first_sample(k)
            end = min(run.first_sample(min(k + chunk, b) if smooth else b), run.total_samples)
            if start < end:
                spans.append((start, end, k))
    if not spans or spans[0][0] != 0 or spans[-1][1] != run.total_samples or any(
            x[1] != y[0] for x, y in zip(spans, spans[1:])):  # a bug in a Schedule.pieces, not bad input
        raise AssertionError(f"schedule pieces do not tile [0, {run.total_samples}): {spans[:5]}")
    return spans


def _temperatures(model: TemperatureModel, pieces: list[Piece], b0: int, lr0: float, run) -> list[float]:
    """The original temperature of each piece; an overflow says which number is too large."""
    temps = []
    for start, _end, x, m in pieces:
        t = model.temperature(x, m, b0, start)
        if not math.isfinite(t):
            if x == lr0:
                raise UserError(f"lr {lr0:g} is too large: the noise temperature ε/(1−m)·(N/B−1) overflows; "
                                "give the LR your schedule starts from (e.g. 0.1)", parameter="lr")
            raise UserError(f"the schedule's LR {x:g} at {where(run, start)} is too large: the noise temperature "
                            "overflows; check the schedule's arguments")
        temps.append(t)
    return temps


def merge(per_span: list[Span], model: TemperatureModel, g_ref: float) -> list[Stage]:
    """Consecutive spans with the same (batch, LR factor, momentum, phase) become one Stage."""
    def key(span: Span) -> tuple:
        return (span.batch, span.lr_scale, span.momentum, span.phase)

    stages: list[Stage] = []
    i = 0
    while i < len(per_span):
        cur, j = per_span[i], i + 1
        while j < len(per_span) and key(per_span[j]) == key(cur):
            j += 1
        realised = model.temperature(cur.lr, cur.momentum, cur.batch, cur.start) / g_ref if g_ref > 0 else 1.0
        stages.append(Stage(start_sample=cur.start, end_sample=per_span[j - 1].end, batch_size=cur.batch, lr=cur.lr,
                            momentum=cur.momentum, temperature=realised, target_temperature=cur.rho, phase=cur.phase,
                            lr_scale=cur.lr_scale))
        i = j
    return stages
