"""What the step-schedule and ramp exports share: the batch changes, the framework LR schedule closest to the
plan's (Megatron-Core's OptimizerParamScheduler shapes, on samples or steps) and its temperature error, the
bounded candidate search, the notes of a run that counts no epochs. No torch (numpy for the search).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

def fmt_number(x: float) -> str:
    """A float as short as it can be to 10 significant digits: 0.005000000000000001 → 0.005."""
    return format(x, ".10g")


def growth_limit_hint(plan) -> str:
    """What an LR-schedule refusal adds for a plan whose growth stopped at --max-growth (AdamW's default): its LR
    then decays as the original's × the stage's factor, a shape no parametric schedule holds; the full conversion's
    is held, at the cost the evidence measured. Empty for any other plan."""
    if (plan.cap or {}).get("limited_by") != "growth":
        return ""
    return ("; its batch stops at --max-growth × B0 and the LR then decays as the original's × that factor, which "
            "no such schedule holds: convert with --max-growth 0 for the full conversion, whose LR they hold but "
            "which lost about 0.012 at a tuned LR (docs/results.md)")


def batch_steps(plan) -> list[dict]:
    """One {samples, batch_size} per batch change: the samples consumed before it, the new global batch."""
    steps, last = [], None
    for s in plan.stages:
        if s.batch_size != last:
            steps.append({"samples": s.start_sample, "batch_size": s.batch_size})
            last = s.batch_size
    return steps


class Exported(NamedTuple):
    """An export: the text to paste, its rows (for --json) and notes on what it does not hold exactly."""

    text: str
    rows: list
    notes: list


#: The most ramp steps ((FINAL − START)/INCREMENT), increments and batch changes the ramp search tries.
RAMP_MAX_STEPS = 4096
RAMP_MAX_INCREMENTS = 48
RAMP_MAX_CHANGES = 256


def spread(values: list, k: int) -> list:
    """At most ``k`` of ``values``, evenly spread (all of them when there are k or fewer)."""
    if len(values) <= k:
        return list(values)
    return [values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)]


def ramp_increments(diff: int, unit: int) -> list[int]:
    """The INCREMENTs of a ramp over ``diff``: diff/n for n = 1..RAMP_MAX_STEPS that divide it into multiples of
    ``unit`` (at most RAMP_MAX_INCREMENTS of them, spread over n). Bounded: never a loop up to √diff."""
    ns = [n for n in range(1, min(RAMP_MAX_STEPS, diff) + 1) if diff % n == 0 and (diff // n) % unit == 0]
    return [diff // n for n in spread(ns, RAMP_MAX_INCREMENTS)]


def device_unit(plan) -> int:
    """The granularity the plan's batches were rounded to: lcm(--round-to, world size)."""
    options = plan.options
    return math.lcm(options.round_to, options.world_size)


def noise_factor(plan):
    """(p, v): the temperature at a fixed LR moves with the batch as v(B)^p (Plan.temperature_model: the
    noise-aware Adam rule read as its square-root limit, which it is below the noise scale)."""
    model = plan.temperature_model()
    return model.power, model.noise_factor


#: The most the best linear ramp's temperature may be off the plan's on average for the Megatron export.
MEGATRON_TOLERANCE = 0.10


class MegatronLR(NamedTuple):
    """Megatron-Core's LR schedule (OptimizerParamScheduler over consumed samples) closest to the plan's LR, and
    how far the temperature is from the plan's where the batch is the plan's: |LR_megatron / LR_plan − 1|."""

    style: str  # constant | linear | cosine | WSD
    init: float
    peak: float
    floor: float
    warmup: int  # samples
    decay: int  # samples (--lr-decay-samples)
    wsd_decay: int  # samples of WSD's final decay
    wsd_style: str
    mean_error: float
    max_error: float
    worst_sample: int

    def flags(self) -> str:
        f = (f"--lr {fmt_number(self.peak)} --min-lr {fmt_number(self.floor)} --lr-decay-style {self.style} "
             f"--lr-warmup-samples {self.warmup} --lr-warmup-init {fmt_number(self.init)} --lr-decay-samples {self.decay}")
        if self.style == "WSD":
            f += f" --lr-wsd-decay-samples {self.wsd_decay} --lr-wsd-decay-style {self.wsd_style}"
        return f


def megatron_lr_at(lr: MegatronLR, consumed):
    """Megatron-Core's OptimizerParamScheduler.get_lr after ``consumed`` samples (numpy arrays work)."""
    import numpy as np

    c = np.asarray(consumed, dtype=float)
    warm = lr.init + (lr.peak - lr.init) * c / max(lr.warmup, 1)
    ratio = np.clip((c - lr.warmup) / max(lr.decay - lr.warmup, 1), 0.0, 1.0)
    if lr.style == "constant":
        after = np.full(c.shape, lr.peak)
    elif lr.style == "linear":
        after = lr.floor + (1 - ratio) * (lr.peak - lr.floor)
    elif lr.style == "cosine":
        after = lr.floor + 0.5 * (np.cos(np.pi * ratio) + 1) * (lr.peak - lr.floor)
    else:  # WSD: flat, then the last wsd_decay samples decay
        w = np.clip((c - (lr.decay - lr.wsd_decay)) / max(lr.wsd_decay, 1), 0.0, 1.0)
        coeff = 1 - w if lr.wsd_style == "linear" else 0.5 * (np.cos(np.pi * w) + 1)
        after = lr.floor + coeff * (lr.peak - lr.floor)
    if lr.style != "constant":
        after = np.where(c > lr.decay, lr.floor, after)
    return np.where((lr.warmup > 0) & (c <= lr.warmup), warm, after)


#: Positions the LR is compared at: the middles of equal slices of the run, and (at most) this many stage starts.
LR_GRID = 2048


def lr_grid(plan):
    """(grid, in_slices, lr_plan): the sample positions the LR is compared at (the middles of LR_GRID equal
    slices of the run, and at most LR_GRID stage starts), which of them are the slices' (the mean is
    theirs: each stands for an equal share of the samples), and the plan's LR there."""
    import numpy as np

    total = plan.total_samples
    starts = spread([s.start_sample for s in plan.stages], LR_GRID)
    slices = ((np.arange(LR_GRID) + 0.5) * total / LR_GRID).astype(np.int64)
    grid = np.unique(np.concatenate([slices, starts]).astype(np.int64))
    return grid, np.isin(grid, slices), np.asarray([plan.at_sample(int(x)).lr for x in grid])


def closest_lr(plan, position=None, total=None, init_zero: bool = False, batch_error=None) -> MegatronLR:
    """The framework LR schedule closest to the plan's LR: its warmup (the plan's warmup stages, linear as
    LinearLR's), then constant, linear or cosine decay to its last LR, or WSD whose decay is the plan's
    hybrid/original tail. The one with the smallest mean |T/T_plan − 1| over the run wins, where at the
    plan's batch T/T_plan is LR/LR_plan (eq. 1: T ∝ LR at a given batch), times ``batch_error`` (the
    temperature factor of a batch that is not the plan's, per grid point) where given.

    ``position`` maps sample positions (numpy) to the framework's own schedule axis (Megatron: samples,
    the default; Levanter and MaxText: steps) and ``total`` is the run's length on that axis; the
    returned warmup, decay and WSD lengths are on it. ``init_zero``: the framework warms up from 0.
    """
    import numpy as np

    stages = plan.stages
    grid, in_slices, lr_plan = lr_grid(plan)
    pos = grid.astype(float) if position is None else position(grid)
    at = (lambda x: float(x)) if position is None else (lambda x: float(position(np.asarray([x]))[0]))
    factor = np.ones(len(grid)) if batch_error is None else batch_error(grid)
    warmup = 0
    for st in stages:  # the warmup stages at the start
        if st.phase != "warmup":
            break
        warmup = st.end_sample
    warmup = min(warmup, plan.total_samples - 1)
    length = float(plan.total_samples if total is None else total)
    warm = int(round(at(warmup))) if warmup else 0
    init = 0.0 if init_zero or not warmup else plan.at_sample(0).lr
    peak = float(lr_plan[grid >= warmup].max()) if warmup else float(lr_plan.max())
    last = plan.at_sample(plan.total_samples - 1).lr
    tail = next((st.start_sample for st in stages if st.phase in ("hybrid", "original") and st.start_sample > warmup),
                None)
    # a constant LR at the peak, or at the value nearest the plan's on average (the 1/LR-weighted median
    # minimises the mean |c/LR − 1|): the plan's LR saw-tooths where its factor holds the original's decay
    late = in_slices & (grid > warmup)
    after = np.sort(lr_plan[late] / factor[late]) if late.any() else lr_plan
    weights = np.cumsum(1 / after)
    middle = float(after[np.searchsorted(weights, weights[-1] / 2)])
    candidates = [("constant", peak, 0, "linear"), ("constant", middle, 0, "linear")]
    if last < peak:
        candidates += [("linear", last, 0, "linear"), ("cosine", last, 0, "linear")]
        if tail is not None:
            wsd = int(round(length - at(tail)))
            candidates += [("WSD", last, wsd, style) for style in ("linear", "cosine")]
    best = None
    for style, floor, wsd, wsd_style in candidates:
        top = floor if style == "constant" else peak
        lr = MegatronLR(style, min(init, top), top, floor, warm, int(round(length)), wsd, wsd_style, 0.0, 0.0, 0)
        ratio = np.abs(megatron_lr_at(lr, pos) * factor / lr_plan - 1)
        score = float(ratio[in_slices].mean()) if in_slices.any() else float(ratio.mean())
        if best is None or score < best[0] - 1e-12:
            best = (score, lr, ratio)
    score, lr, ratio = best
    worst = int(np.argmax(ratio))
    return lr._replace(mean_error=score, max_error=float(ratio[worst]), worst_sample=int(grid[worst]))


def _unbroken_misalignment(plan) -> Optional[int]:
    """The first epoch boundary where a run that never ends an update at an epoch's end (Megatron, Levanter)
    leaves the plan's updates, or None. The plan cuts an update short at each epoch's end; a continuous
    run agrees with it when every epoch boundary inside the run is one of its own update starts.
    One turn per stage (arithmetic within a stage), so a jump of 2^60 costs nothing."""
    n, total = plan.dataset_size, plan.total_samples
    if n is None or total <= n:
        return None
    u = 0  # the continuous run's next update start
    for st in plan.stages:
        b = st.batch_size
        if u >= st.end_sample:
            continue
        first = (st.start_sample // n + 1) * n  # epoch boundaries inside [max(u, start), end)
        e = max(first, -(-max(u, st.start_sample) // n) * n)
        while e < min(st.end_sample, total):
            if e < u or (e - u) % b:
                return e
            e += n
        u += -(-(st.end_sample - u) // b) * b  # updates that start inside the stage
    return None


def schedule_notes(plan, lr: MegatronLR, name: str, step: str, unit_rule: str) -> list[str]:
    """The notes of a step-schedule export (Megatron, Levanter): the LR's temperature error, the batch
    granularity the framework checks, the epochs it does not count, a momentum it cannot hold."""
    notes = [(f"the batch is the plan's at every {step}; the LR settings keep the temperature within "
              f"{lr.mean_error:.1%} of the plan's on average, {lr.max_error:.1%} at worst (sample {lr.worst_sample:,})")
             if lr.max_error > 1e-9 else f"the batch and the LR are the plan's at every {step}",
             f"{name} checks that every batch is a multiple of {unit_rule}: the plan's are multiples of "
             f"{device_unit(plan)} (convert-schedule --round-to, --world-size)"]
    off = _unbroken_misalignment(plan)
    if off is not None:
        notes.append(f"{name} counts no epochs: the plan ends an update at each epoch's end and {name} does not, "
                     f"so from sample {off:,} its {step}s start up to one batch off the plan's (convert with batches "
                     "that divide the data set, or --epochs 1)")
    if len({st.momentum for st in plan.stages}) > 1:
        notes.append(f"the plan also changes the momentum (Adam's β1), which {name}'s settings cannot hold; use "
                     "--format csv")
    return notes
