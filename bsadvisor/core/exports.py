"""A plan for the tools people already use: Megatron-Core's step schedule (or its old linear ramp), OLMo-core's
callback with the plan's LR scheduler, MaxText's ramp, Levanter's batch schedule, a CSV table.

Each format gives its text, its rows (for a JSON document) and notes on what it cannot
hold; nothing in a plan is dropped without a note. Positions are in samples (examples
consumed), and in tokens where the plan knows its sequence length. No torch (numpy for the ramp search).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple, Optional

from bsadvisor.core.errors import UserError

if TYPE_CHECKING:  # annotations only: `bsadvisor --help` need not import the plan schema
    from bsadvisor.core.plan import Plan

EXPORT_FORMATS = ("megatron", "olmo", "maxtext", "levanter", "csv")
#: Megatron-Core releases the export writes for: 0.18 on reads --step-batch-size-schedule, 0.17 and older the ramp.
MEGATRON_VERSIONS = ("0.18", "0.17")
EXPORT_SCHEMA = "bsadvisor.export/2"


def check_format(format_name: str) -> str:
    """``format_name`` if it is one of EXPORT_FORMATS."""
    if format_name not in EXPORT_FORMATS:
        raise UserError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format_name!r} "
                        "(Lightning needs no export: its FollowPlan callback reads plan.json, docs/integration.md)", parameter="format")
    return format_name


def check_megatron_version(version: str) -> str:
    """``version`` as MAJOR.MINOR if it is a Megatron-Core release (0.18 or later: the step schedule)."""
    import re

    found = re.fullmatch(r"\s*(\d+)\.(\d+)(\.\d+)?\s*", str(version))
    if found is None:
        raise UserError(f"--megatron-version must be a Megatron-Core release such as 0.18 or 0.17, got {version!r}",
                        parameter="megatron_version")
    return "0.18" if (int(found.group(1)), int(found.group(2))) >= (0, 18) else "0.17"


def export(plan: Plan, format_name: str, megatron_version: str = "0.18",
           plan_path: str = "plan.json") -> tuple[str, list[dict], list[str]]:
    """(text, rows, notes) of ``plan`` in ``format_name`` (one of EXPORT_FORMATS). ``megatron_version``: the
    Megatron-Core release (0.18 on: the step schedule; 0.17 and older: the linear ramp); ``plan_path``: where
    the OLMo-core snippet loads the plan from."""
    fmt = check_format(format_name)
    if fmt == "megatron":
        if check_megatron_version(megatron_version) == "0.17":
            ramp = megatron_ramp(plan)  # the search once, for the text, the rows and the notes
            return export_megatron_ramp(plan, ramp), megatron_ramp_rows(plan, ramp), megatron_ramp_notes(plan, ramp)
        step = megatron_step(plan)
        return step.text, step.rows, step.notes
    if fmt == "olmo":
        return export_olmo(plan, plan_path), olmo_rows(plan), olmo_notes(plan)
    if fmt == "levanter":
        return levanter_schedule(plan)
    if fmt == "maxtext":
        return maxtext_ramp(plan)
    return export_csv(plan), csv_rows(plan), []


def fmt_number(x: float) -> str:
    """A float as short as it can be to 10 significant digits: 0.005000000000000001 → 0.005."""
    return format(x, ".10g")


def batch_steps(plan) -> list[dict]:
    """One {samples, batch_size} per batch change: the samples consumed before it, the new global batch."""
    steps, last = [], None
    for s in plan.stages:
        if s.batch_size != last:
            steps.append({"samples": s.start_sample, "batch_size": s.batch_size})
            last = s.batch_size
    return steps


class MegatronRamp(NamedTuple):
    """Stock Megatron-LM's batch ramp (``--rampup-batch-size START INCREMENT SAMPLES --global-batch-size
    FINAL``) and how far its temperature is from the plan's: the mean and the largest |T_ramp/T_plan − 1|
    over the run (the plan's LR at each sample, the ramp's batch there), and where the largest is."""

    start: int
    increment: int
    ramp_samples: int
    final: int
    mean_error: float
    max_error: float
    worst_sample: int


#: Points of the run the ramp's temperature is compared at (the middle of equal slices of the samples).
RAMP_GRID = 512
#: Ramp lengths tried, equally spaced over the run (besides each place the plan changes its batch).
RAMP_LENGTHS = 256


def megatron_batch(start: int, increment: int, ramp_samples, final: int, consumed):
    """Megatron-LM's global batch after ``consumed`` samples (its RampupBatchsizeNumMicroBatchesCalculator, up to
    Megatron-Core 0.17): ``final`` past the ramp, else START + INCREMENT·⌊consumed / (SAMPLES / n)⌋,
    n = (FINAL − START)/INCREMENT. Works on numbers and on numpy arrays (``ramp_samples`` and ``consumed``
    broadcast)."""
    import numpy as np

    consumed = np.asarray(consumed, dtype=float)
    ramp = np.asarray(ramp_samples, dtype=float)
    n = (final - start) // increment
    if n == 0:
        return np.full(np.broadcast(consumed, ramp).shape, final, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.floor(consumed / (ramp / n))
    steps = np.where(ramp > 0, steps, 0)
    return np.where(consumed > ramp, final, start + steps * increment).astype(np.int64)


def megatron_ramp(plan) -> MegatronRamp:
    """The linear ramp that best matches the plan's batches (docs/integration.md), or a UserError saying why
    the plan cannot be one.

    Megatron grows the batch linearly from START to FINAL in equal steps of INCREMENT (which
    must divide FINAL − START; every batch a multiple of the plan's device unit, the micro-batch
    × data-parallel size Megatron checks). START is the plan's first batch, FINAL its last;
    among the increments that qualify and the ramp lengths tried, the one with the smallest
    mean |log T_ramp/T_plan| over the run wins: at the plan's LR, the temperature moves with the
    batch as v(B)^p (eq. 1; p = ½ under Adam's square-root rules). The search is bounded
    whatever the plan (RAMP_MAX_STEPS, RAMP_MAX_INCREMENTS, RAMP_MAX_CHANGES): a plan of 10^5
    batch changes or a jump of 2^60 answers in well under a second.
    """
    import numpy as np

    steps = batch_steps(plan)
    batches = [p["batch_size"] for p in steps]
    down = next((b for a, b in zip(steps, steps[1:]) if b["batch_size"] < a["batch_size"]), None)
    if down is not None:
        raise UserError(f"the plan cannot be expressed as Megatron-LM's --rampup-batch-size: its batch comes back "
                        f"down to {down['batch_size']} at sample {down['samples']:,} (after a restart) and Megatron "
                        "only ramps up; use --format csv with your own batch-size schedule")
    start, final, total = batches[0], batches[-1], plan.total_samples
    unit = _device_unit(plan)
    increments = _ramp_increments(final - start, unit) if final > start else [1]
    if not increments:
        raise UserError(f"the plan cannot be expressed as Megatron-LM's --rampup-batch-size: no increment that is a "
                        f"multiple of {unit} (micro-batch × data-parallel size) divides {final} − {start} in at most "
                        f"{RAMP_MAX_STEPS} steps; convert again with --round-to {unit} and a --batch-size that is a "
                        "multiple of it")
    changes = _spread([p["samples"] for p in steps[1:]], RAMP_MAX_CHANGES)
    # equal slices of the run, and the places the plan changes its batch (where an update starts)
    grid = np.unique(np.concatenate([(np.arange(RAMP_GRID) + 0.5) * total / RAMP_GRID, changes]).astype(np.int64))
    b_plan = np.asarray([plan.at_sample(int(x)).batch_size for x in grid], dtype=float)
    power, noise = _noise_factor(plan)
    log_plan = np.log(noise(b_plan))
    # Megatron takes FINAL once more than SAMPLES are consumed: a change at sample c is SAMPLES = c − 1
    lengths = np.asarray(sorted({int(x) for x in np.linspace(0, total, RAMP_LENGTHS + 1)[1:]}
                                | {c - 1 for c in changes}), dtype=np.int64)
    best = None
    for inc in increments:  # every ramp length at once: a (grid × lengths) table of batches
        ramp = megatron_batch(start, inc, lengths[None, :], final, grid[:, None])
        err = np.abs(power * (np.log(noise(ramp.astype(float))) - log_plan[:, None]))
        scores = err.mean(axis=0)
        j = int(np.argmin(scores))
        if best is None or scores[j] < best[0] - 1e-15:
            best = (float(scores[j]), inc, int(lengths[j]), err[:, j])
    _, inc, r, err = best
    ratio = np.exp(err) - 1  # |T_ramp/T_plan − 1| of the larger side, per point
    worst = int(np.argmax(ratio))
    return MegatronRamp(start, inc, r, final, float(ratio.mean()), float(ratio[worst]), int(grid[worst]))


#: The most ramp steps ((FINAL − START)/INCREMENT), increments and batch changes the ramp search tries.
RAMP_MAX_STEPS = 4096
RAMP_MAX_INCREMENTS = 48
RAMP_MAX_CHANGES = 256


def _spread(values: list, k: int) -> list:
    """At most ``k`` of ``values``, evenly spread (all of them when there are k or fewer)."""
    if len(values) <= k:
        return list(values)
    return [values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)]


def _ramp_increments(diff: int, unit: int) -> list[int]:
    """The INCREMENTs of a ramp over ``diff``: diff/n for n = 1..RAMP_MAX_STEPS that divide it into multiples of
    ``unit`` (at most RAMP_MAX_INCREMENTS of them, spread over n). Bounded: never a loop up to √diff."""
    ns = [n for n in range(1, min(RAMP_MAX_STEPS, diff) + 1) if diff % n == 0 and (diff // n) % unit == 0]
    return [diff // n for n in _spread(ns, RAMP_MAX_INCREMENTS)]


def _device_unit(plan) -> int:
    """The granularity the plan's batches were rounded to: lcm(--round-to, world size)."""
    return math.lcm(int(plan.inputs.get("round_to") or 1), int(plan.inputs.get("world_size") or 1))


def _noise_factor(plan):
    """(p, v): the temperature at a fixed LR moves with the batch as v(B)^p (the plan's temperature model;
    the noise-aware Adam rule read as its square-root limit, which it is below the noise scale)."""
    from bsadvisor.core.temperature import ADAM_FAMILY, TemperatureModel

    inp = plan.inputs
    optimizer = inp.get("optimizer") or "sgd"
    rule = inp.get("adam_rule") if optimizer in ADAM_FAMILY else None
    n = plan.dataset_size
    single = inp.get("streaming") or n is None or plan.total_samples <= n
    model = TemperatureModel(None if single else n, inp.get("rule") or "exact", optimizer,
                             "sqrt" if rule in (None, "noise") else rule)
    return model.power, model.noise_factor


#: The most the best linear ramp's temperature may be off the plan's on average for the Megatron export.
MEGATRON_TOLERANCE = 0.10


def megatron_flags(plan, ramp: MegatronRamp) -> str:
    flags = f"--global-batch-size {ramp.final} --train-samples {plan.total_samples}"
    if ramp.final == ramp.start:
        return flags
    return f"--rampup-batch-size {ramp.start} {ramp.increment} {ramp.ramp_samples} {flags}"


def export_megatron_ramp(plan, ramp: Optional[MegatronRamp] = None) -> str:
    """Megatron-Core ≤ 0.17's flags for the best linear ramp (sample-based training: --train-samples), or a
    UserError when even the best ramp is more than MEGATRON_TOLERANCE off the plan's temperature."""
    ramp = ramp or megatron_ramp(plan)
    if ramp.mean_error > MEGATRON_TOLERANCE:
        raise UserError(f"the plan cannot be expressed as Megatron-LM's linear --rampup-batch-size: its batches "
                        f"({' → '.join(map(str, _distinct(plan)))}) are no linear ramp, and the best one "
                        f"({megatron_flags(plan, ramp)}) is {ramp.mean_error:.0%} off the plan's temperature on "
                        f"average ({ramp.max_error:.0%} at worst, over {MEGATRON_TOLERANCE:.0%}); use --format csv "
                        "with your own batch-size schedule")
    return megatron_flags(plan, ramp) + "\n"


def _distinct(plan) -> list[int]:
    """The plan's batches in order, one per change (the first four and the last)."""
    bs = [p["batch_size"] for p in batch_steps(plan)]
    return bs if len(bs) <= 5 else bs[:4] + ["…", bs[-1]]


def megatron_ramp_rows(plan, ramp: Optional[MegatronRamp] = None) -> list[dict]:
    ramp = ramp or megatron_ramp(plan)
    return [{**ramp._asdict(), "train_samples": plan.total_samples}]


def megatron_ramp_notes(plan, ramp: Optional[MegatronRamp] = None) -> list[str]:
    """How far the linear ramp is from the plan, and what the flags cannot hold."""
    ramp = ramp or megatron_ramp(plan)
    notes = []
    if ramp.final != ramp.start:
        exact = ramp.max_error < 1e-9
        notes.append("the plan's batches are exactly Megatron's linear ramp" if exact else
                     f"Megatron-LM ramps the batch linearly (--rampup-batch-size): the best ramp keeps the "
                     f"temperature within {ramp.mean_error:.1%} of the plan's on average, "
                     f"{ramp.max_error:.1%} at worst (sample {ramp.worst_sample:,}); for the plan itself, feed "
                     "--format csv to your own batch-size schedule")
    notes.append("--rampup-batch-size needs sample-based training: --train-samples, with --lr-decay-samples and "
                 "--lr-warmup-samples for the LR")
    notes += _lr_notes(plan, "set Megatron's LR schedule (--lr, --lr-decay-style, --lr-decay-samples, --min-lr, "
                             "--lr-warmup-samples) to reproduce the original schedule")
    return notes


# ------------------------------------------------------------------------ Megatron-Core >= 0.18: the step schedule
class Exported(NamedTuple):
    """An export: the text to paste, its rows (for --json) and notes on what it does not hold exactly."""

    text: str
    rows: list
    notes: list


#: Megatron reads each schedule number through float (``int(float(value) * multiplier)``): exact up to 2^53.
FLOAT_EXACT = 2 ** 53


def _float_exact(value: int, what: str) -> str:
    """``value`` as Megatron's schedule parser reads it back exactly, or a UserError."""
    if value >= FLOAT_EXACT:
        raise UserError(f"Megatron-Core reads --step-batch-size-schedule numbers through a float, exact only below "
                        f"2^53, and the plan's {what} is {value:,}; convert again with a smaller --max-batch or run")
    return str(value)


def megatron_schedule(plan) -> tuple[list[tuple[int, int]], Optional[int]]:
    """((threshold, batch), ...) for --step-batch-size-schedule, and the --seq-length the thresholds need.

    Megatron-Core (num_microbatches_calculator.py, StepBatchsizeNumMicroBatchesCalculator) reads a
    threshold as tokens when the run has a --seq-length (every GPT run does) and converts it to
    samples as ⌊threshold / seq_length⌋; without one, as samples. The batch of consumed samples c is
    that of the last threshold ≤ c, the plan's rule for the update that starts at c.
    """
    seq = plan.seq_len
    return [(p["samples"] * (seq or 1), p["batch_size"]) for p in batch_steps(plan)], seq


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
    starts = _spread([s.start_sample for s in plan.stages], LR_GRID)
    slices = ((np.arange(LR_GRID) + 0.5) * total / LR_GRID).astype(np.int64)
    grid = np.unique(np.concatenate([slices, starts]).astype(np.int64))
    return grid, np.isin(grid, slices), np.asarray([plan.at_sample(int(x)).lr for x in grid])


def megatron_lr(plan) -> MegatronLR:
    """The Megatron LR flags closest to the plan's LR (closest_lr over consumed samples, warmup from the plan's
    first LR as Megatron's --lr-warmup-init allows)."""
    return closest_lr(plan)


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


def _unbroken_run(plan) -> tuple[list[int], list[int], int]:
    """A run that never ends an update at an epoch's end (Megatron, Levanter, MaxText count no epochs):
    per stage, its first update start (≥ the stage's start: an update of the stage before may reach into
    it) and the updates before that; and the run's updates in all. One turn per stage."""
    firsts, before, u, count, total = [], [], 0, 0, plan.total_samples
    for st in plan.stages:
        firsts.append(u)
        before.append(count)
        end = min(st.end_sample, total)
        if u < end:
            k = -(-(end - u) // st.batch_size)
            count += k
            u += k * st.batch_size
    return firsts, before, count


def _steps_at(plan, run):
    """Sample positions (numpy) → steps of the unbroken ``run`` (fractional inside an update)."""
    import numpy as np

    firsts, before, _ = run
    starts = np.asarray([st.start_sample for st in plan.stages])
    batches = np.asarray([st.batch_size for st in plan.stages], dtype=float)
    u, n = np.asarray(firsts, dtype=float), np.asarray(before, dtype=float)

    def steps(x):
        x = np.asarray(x, dtype=float)
        i = np.clip(np.searchsorted(starts, x, side="right") - 1, 0, len(starts) - 1)
        back = batches[np.maximum(i - 1, 0)]  # inside an update that started in the stage before
        return np.where(x >= u[i], n[i] + (x - u[i]) / batches[i], n[i] - (u[i] - x) / back)

    return steps


def _schedule_notes(plan, lr: MegatronLR, name: str, step: str, unit_rule: str) -> list[str]:
    """The notes of a step-schedule export (Megatron, Levanter): the LR's temperature error, the batch
    granularity the framework checks, the epochs it does not count, a momentum it cannot hold."""
    notes = [(f"the batch is the plan's at every {step}; the LR settings keep the temperature within "
              f"{lr.mean_error:.1%} of the plan's on average, {lr.max_error:.1%} at worst (sample {lr.worst_sample:,})")
             if lr.max_error > 1e-9 else f"the batch and the LR are the plan's at every {step}",
             f"{name} checks that every batch is a multiple of {unit_rule}: the plan's are multiples of "
             f"{_device_unit(plan)} (convert-schedule --round-to, --world-size)"]
    off = _unbroken_misalignment(plan)
    if off is not None:
        notes.append(f"{name} counts no epochs: the plan ends an update at each epoch's end and {name} does not, "
                     f"so from sample {off:,} its {step}s start up to one batch off the plan's (convert with batches "
                     "that divide the data set, or --epochs 1)")
    if len({st.momentum for st in plan.stages}) > 1:
        notes.append(f"the plan also changes the momentum (Adam's β1), which {name}'s settings cannot hold; use "
                     "--format csv")
    return notes


def levanter_schedule(plan) -> Exported:
    """Levanter's TrainerConfig.train_batch_size as a step schedule (ScheduleStep start/value, levanter/schedule.py
    BatchSchedule: the batch of the last start ≤ step), num_train_steps, and the OptimizerConfig LR closest to
    the plan's (learning_rate, warmup in steps from 0, lr_schedule, min_lr_ratio, decay) with its temperature
    error; a UserError when that is more than MEGATRON_TOLERANCE off on average."""
    run = _unbroken_run(plan)
    firsts, before, updates = run
    entries, last = [], None
    for st, u, n in zip(plan.stages, firsts, before):
        if u < min(st.end_sample, plan.total_samples) and st.batch_size != last:
            entries.append((n, st.batch_size))
            last = st.batch_size
    lr = closest_lr(plan, _steps_at(plan, run), updates, init_zero=True)
    if lr.mean_error > MEGATRON_TOLERANCE:
        raise UserError(f"Levanter's LR schedules (warmup from 0, then constant, linear or cosine, with a final "
                        f"decay) cannot hold this plan's LR: the closest (learning_rate {fmt_number(lr.peak)}, "
                        f"lr_schedule {lr.style}) is {lr.mean_error:.0%} off the plan's temperature on average "
                        f"({lr.max_error:.0%} at worst, over {MEGATRON_TOLERANCE:.0%}); use --format csv with your "
                        "own LR schedule")
    schedule = lr.wsd_style if lr.style == "WSD" else lr.style
    lines = [f"# bsadvisor plan for Levanter: {len(entries)} batch sizes, {updates} steps", "trainer:",
             f"  num_train_steps: {updates}", "  train_batch_size:"]
    lines += [f"    - start: {n}\n      value: {b}" for n, b in entries]
    lines += ["optimizer:", f"  learning_rate: {fmt_number(lr.peak)}", f"  warmup: {lr.warmup}",
              f"  lr_schedule: {schedule}", f"  min_lr_ratio: {fmt_number(lr.floor / lr.peak)}",
              f"  decay: {lr.wsd_decay if lr.style == 'WSD' else 'null'}"]
    notes = _schedule_notes(plan, lr, "Levanter", "step", "per_device_parallelism × the data axis")
    rows = [{"start_step": n, "batch_size": b} for n, b in entries]
    return Exported("\n".join(lines) + "\n", rows, notes)


class MaxTextRamp(NamedTuple):
    """MaxText's batch ramp (RampupBatchManager, maxtext/utils/rampup_batch.py) in global batches: START,
    INCREMENT, FINAL and global_rampup_samples R. Stage k (k < n = (FINAL − START)/INCREMENT) trains at
    START + k·INCREMENT for ⌈(R/n) / its batch⌉ steps (the samples counted per stage restart at 0), then FINAL."""

    start: int
    increment: int
    final: int
    rampup_samples: int

    def stages(self):
        """(batches, samples at which each ramp stage ends, steps each takes), numpy."""
        import numpy as np

        n = (self.final - self.start) // self.increment if self.final > self.start else 0
        batches = self.start + np.arange(n, dtype=float) * self.increment
        steps = np.ceil(self.rampup_samples / max(n, 1) / batches) if n else np.zeros(0)
        return batches, np.cumsum(steps * batches), steps

    def batch_at(self, consumed):
        import numpy as np

        batches, ends, _ = self.stages()
        i = np.searchsorted(ends, np.asarray(consumed, dtype=float), side="right")
        return np.where(i < len(batches), self.start + i * self.increment, self.final)

    def steps_at(self, consumed):
        """Steps trained after ``consumed`` samples (fractional inside a step)."""
        import numpy as np

        batches, ends, steps = self.stages()
        x = np.asarray(consumed, dtype=float)
        i = np.searchsorted(ends, x, side="right")
        starts = np.concatenate([[0.0], ends])
        before = np.concatenate([[0.0], np.cumsum(steps)])
        b = np.where(i < len(batches), self.start + i * self.increment, self.final)
        return before[i] + (x - starts[i]) / b


#: At most this many ramp increments and lengths are tried for MaxText (each costs a pass over its stages).
MAXTEXT_INCREMENTS = 16
MAXTEXT_LENGTHS = 96


def _maxtext_best_ramp(plan, steps: list[dict]) -> "MaxTextRamp":
    """The MaxText ramp (increment, rampup samples) whose batches keep the temperature closest to the plan's at
    the plan's LR (mean |log T/T_plan| over the run), among bounded candidates (MAXTEXT_INCREMENTS × lengths)."""
    import numpy as np

    start, final, total = steps[0]["batch_size"], steps[-1]["batch_size"], plan.total_samples
    unit = _device_unit(plan)
    grid, in_slices, _ = lr_grid(plan)
    power, noise = _noise_factor(plan)
    b_plan = np.asarray([plan.at_sample(int(x)).batch_size for x in grid], dtype=float)
    if final > start:
        increments = [i for i in _spread(_ramp_increments(final - start, unit), MAXTEXT_INCREMENTS)]
        if not increments:
            raise UserError(f"the plan cannot be expressed as MaxText's batch ramp: no increment that is a multiple "
                            f"of {unit} divides {final} − {start}; convert again with --round-to {unit}")
        changes = _spread([p["samples"] for p in steps[1:]], MAXTEXT_LENGTHS // 2)
        lengths = sorted({int(x) for x in np.linspace(0, total, MAXTEXT_LENGTHS + 1)[1:]} | set(changes))
        best = None
        for inc in increments:
            for r in lengths:
                ramp = MaxTextRamp(start, inc, final, r)
                err = np.abs(power * np.log(noise(ramp.batch_at(grid).astype(float)) / noise(b_plan)))
                score = float(err[in_slices].mean())
                if best is None or score < best[0] - 1e-15:
                    best = (score, ramp)
        ramp = best[1]
    else:
        ramp = MaxTextRamp(start, 1, final, 0)
    return ramp


def maxtext_ramp(plan) -> Exported:
    """MaxText's rampup config (per_device_batch_size_start/_increment/per_device_batch_size,
    global_rampup_samples) closest to the plan's batches, and its LR config (learning_rate, lr_schedule_type,
    warmup_steps_fraction, ...) closest to the plan's LR at those batches, with the temperature error of the
    two together; a UserError when that is more than MEGATRON_TOLERANCE off on average."""
    import numpy as np

    steps = batch_steps(plan)
    down = next((b for a, b in zip(steps, steps[1:]) if b["batch_size"] < a["batch_size"]), None)
    if down is not None:
        raise UserError(f"MaxText's batch ramp only grows, and the plan's batch comes back down to "
                        f"{down['batch_size']} at sample {down['samples']:,}; use --format csv")
    devices = int(plan.inputs.get("world_size") or 1)
    start, final, total = steps[0]["batch_size"], steps[-1]["batch_size"], plan.total_samples
    bad = next((p["batch_size"] for p in steps if p["batch_size"] % devices), None)
    if bad is not None:
        raise UserError(f"MaxText sets the batch per device, and the plan's batch {bad} is not a multiple of its "
                        f"{devices} devices; convert again with --world-size and --round-to")
    power, noise = _noise_factor(plan)
    ramp = _maxtext_best_ramp(plan, steps)
    total_steps = int(math.ceil(float(ramp.steps_at(np.asarray([total]))[0]) - 1e-9))

    def batch_error(x):
        return (noise(ramp.batch_at(x).astype(float)) / noise(np.asarray(
            [plan.at_sample(int(v)).batch_size for v in x], dtype=float))) ** power

    lr = closest_lr(plan, ramp.steps_at, total_steps, init_zero=True, batch_error=batch_error)
    if lr.mean_error > MEGATRON_TOLERANCE:
        raise UserError(f"the plan cannot be expressed as MaxText's batch ramp and LR schedule: the closest "
                        f"(batches {start} → {final} by {ramp.increment} over {ramp.rampup_samples:,} samples, "
                        f"LR {lr.style}) is {lr.mean_error:.0%} off the plan's temperature on average "
                        f"({lr.max_error:.0%} at worst, over {MEGATRON_TOLERANCE:.0%}); use --format csv")
    lines = [f"# bsadvisor plan for MaxText on {devices} device(s): {len(steps)} batch sizes, {total_steps} steps"]
    if final > start:
        lines += ["enable_rampup_batch_size: true",
                  f"per_device_batch_size_start: {fmt_number(start / devices)}",
                  f"per_device_batch_size_increment: {fmt_number(ramp.increment / devices)}",
                  f"per_device_batch_size: {fmt_number(final / devices)}",
                  f"global_rampup_samples: {ramp.rampup_samples}"]
    else:
        lines += ["enable_rampup_batch_size: false", f"per_device_batch_size: {fmt_number(final / devices)}"]
    decay = {"constant": 0, "linear": total_steps - lr.warmup, "WSD": lr.wsd_decay}.get(lr.style)
    lines += [f"steps: {total_steps}", f"learning_rate_schedule_steps: {total_steps}",
              f"learning_rate: {fmt_number(lr.peak)}",
              f"lr_schedule_type: {'cosine' if lr.style == 'cosine' else 'wsd'}",
              f"warmup_steps_fraction: {_fraction(lr.warmup, total_steps)}",
              f"learning_rate_final_fraction: {fmt_number(lr.floor / lr.peak)}"]
    if decay is not None:
        lines += [f"wsd_decay_steps_fraction: {_fraction(decay, total_steps)}",
                  f"wsd_decay_style: {lr.wsd_style if lr.style == 'WSD' else 'linear'}"]
    exact = all(int(ramp.batch_at(np.asarray([p["samples"]]))[0]) == p["batch_size"] for p in steps)
    notes = [f"MaxText ramps the batch linearly with equal samples per step of the ramp; with the LR config the "
             f"temperature stays within {lr.mean_error:.1%} of the plan's on average, {lr.max_error:.1%} at worst "
             f"(sample {lr.worst_sample:,})" + ("" if exact else "; for the plan itself use --format csv"),
             f"per-device batches for {devices} device(s) (convert-schedule --world-size): MaxText multiplies them "
             "by the devices it runs on"]
    if len({st.momentum for st in plan.stages}) > 1:
        notes.append("the plan also changes the momentum (Adam's β1), which this config cannot hold; use --format csv")
    return Exported("\n".join(lines) + "\n",
                    [{**ramp._asdict(), "devices": devices, "steps": total_steps, "lr_style": lr.style}], notes)


def _fraction(count: int, total: int) -> str:
    """A fraction f that MaxText turns back into ``count`` steps as int(total × f) (float rounding included)."""
    import numpy as np

    if count <= 0:
        return "0.0"
    f = count / total
    while int(total * f) < count:
        f = float(np.nextafter(f, 2.0))
    return repr(f)


def megatron_step(plan) -> Exported:
    """Megatron-Core ≥ 0.18's flags: --step-batch-size-schedule (thresholds in tokens with --seq-length, else in
    samples), --train-samples and the LR flags closest to the plan's, with the temperature error stated;
    a UserError when the LR is more than MEGATRON_TOLERANCE off on average."""
    schedule, seq = megatron_schedule(plan)
    entries = " ".join(f"{_float_exact(t, 'threshold')}:{_float_exact(b, 'batch')}" for t, b in schedule)
    lr = megatron_lr(plan)
    if lr.mean_error > MEGATRON_TOLERANCE:
        raise UserError(f"Megatron-Core's LR schedules (warmup, then constant, linear, cosine or WSD over samples) "
                        f"cannot hold this plan's LR: the closest ({lr.flags()}) is {lr.mean_error:.0%} off the "
                        f"plan's temperature on average ({lr.max_error:.0%} at worst, over "
                        f"{MEGATRON_TOLERANCE:.0%}); use --format csv with your own LR schedule")
    flags = f'--step-batch-size-schedule "{entries}" --train-samples {plan.total_samples}'
    if seq:
        flags += f" --seq-length {seq}"
    text = flags + " " + lr.flags() + "\n"
    unit = "tokens" if seq else "samples"
    notes = [f"Megatron-Core ≥ 0.18 reads --step-batch-size-schedule (thresholds in {unit}"
             + (", ⌊threshold / --seq-length⌋ samples" if seq else "; with a --seq-length they would be read as "
                "tokens: convert with --seq-len for a GPT run") + "); leave out --global-batch-size and "
             "--rampup-batch-size (Megatron refuses the first with the schedule and ignores the second), and, the "
             "training being sample-based, --train-iters, --lr-decay-iters, --lr-warmup-iters and "
             "--lr-warmup-fraction (Megatron asserts so); --megatron-version 0.17 gives the old ramp"] + _schedule_notes(plan, lr, "Megatron", "update", "--micro-batch-size × data-parallel size")
    rows = [{"threshold": t, "threshold_unit": unit, "start_samples": t // (seq or 1), "batch_size": b}
            for t, b in schedule]
    return Exported(text, rows, notes)


def constant_lr(plan) -> Optional[float]:
    """The plan's LR if it is the same at every update (the batch growth took over the whole decay), else None."""
    points = {s.start_sample for s in plan.stages}
    # where a stage follows the original, the LR changes where the original's does (without the
    # original, at_sample gives each stage's constant LR, so the stage starts are enough)
    if any(s.lr_scale is not None for s in plan.stages) and plan.original is not None:
        for start, _end, smooth in plan.original.pieces():
            if smooth:
                return None
            points.add(start)
    lrs = [plan.at_sample(p).lr for p in sorted(points)]
    # a factor × the original's LR is the same number up to float rounding (5 × 0.02 = 0.10000000000000002)
    return lrs[0] if all(math.isclose(x, lrs[0], rel_tol=1e-9) for x in lrs) else None


def _lr_notes(plan, how: str) -> list[str]:
    """The LR part of a plan, for a format that holds batch sizes only: nothing dropped without a note."""
    notes = []
    lr = constant_lr(plan)
    factors = [s for s in plan.stages if s.lr_scale not in (None, 1.0)]
    if lr is not None:
        notes.append(f"the LR is {fmt_number(lr)} throughout: train with --lr {fmt_number(lr)} --lr-decay-style "
                     "constant (the batch growth replaces the LR decay)")
    elif factors:
        parts = [f"samples {s.start_sample:,}–{s.end_sample:,} × {fmt_number(s.lr_scale)}" for s in factors]
        notes.append("the format holds batch sizes only; this plan's LR is the original schedule's LR × a factor per "
                     "stage (" + "; ".join(parts[:6]) + ("; ..." if len(parts) > 6 else "") + f"): {how} and "
                     "multiply the LR by those factors in your code, or use --format csv for the factors")
    elif any(s.lr_scale == 1.0 for s in plan.stages):
        notes.append(f"the format holds batch sizes only; the LR is the original schedule's: {how}")
    else:
        changes = [f"samples {s.start_sample:,}–{s.end_sample:,} at {fmt_number(s.lr)}" for s in plan.stages]
        notes.append("the format holds batch sizes only, and this plan also changes the LR (" + "; ".join(changes[:6])
                     + ("; ..." if len(changes) > 6 else "") + f"): {how}, or use --format csv for the LR per stage")
    if len({s.momentum for s in plan.stages}) > 1:
        notes.append("the plan also changes the momentum, which the format cannot hold; use --format csv")
    return notes


def _tokens(plan, samples: int) -> Optional[int]:
    return samples * plan.seq_len if plan.seq_len else None


def olmo_rows(plan) -> list[dict]:
    """One row per batch change, as OLMo-core's BatchSizeSchedulerCallback takes it: where it starts and the
    global batch, in tokens (and samples); its updates; and ``lr_factor``, the factor the user's LR scheduler
    applies on top of OLMo-core's own √(B/B_first) (a list when it changes inside the batch)."""
    _olmo_check(plan)
    seq, first = plan.seq_len, plan.stages[0].batch_size
    counts = plan.updates_per_stage()
    steps = batch_steps(plan)
    ends = [step["samples"] for step in steps[1:]] + [plan.total_samples]
    rows, i = [], 0
    for step, end in zip(steps, ends):
        inside = []  # the stages that start in [step, end): one walk over the stages for all steps (linear)
        while i < len(plan.stages) and plan.stages[i].start_sample < end:
            if plan.stages[i].start_sample >= step["samples"]:
                inside.append((plan.stages[i], counts[i]))
            i += 1
        own = math.sqrt(step["batch_size"] / first)  # OLMo-core's cumulative √ factor at this batch
        factors = list(dict.fromkeys((st.lr_scale if st.lr_scale is not None else 1.0) / own for st, _ in inside))
        rows.append({"start_samples": step["samples"], "start_tokens": step["samples"] * seq,
                     "batch_size": step["batch_size"], "batch_size_tokens": step["batch_size"] * seq,
                     "updates": sum(c for _, c in inside), "olmo_lr_factor": own,
                     "lr_factor": factors[0] if len(factors) == 1 else factors})
    return rows


def _olmo_check(plan) -> None:
    """Refuse, in one line, a plan OLMo-core's BatchSizeSchedulerCallback cannot follow as written."""
    from bsadvisor.core.temperature import ADAM_FAMILY

    optimizer = plan.inputs.get("optimizer") or "sgd"
    if optimizer not in ADAM_FAMILY:
        raise UserError(f"OLMo-core's BatchSizeSchedulerCallback rescales the LR of Adam-family optimizers only (it "
                        f"raises NotImplementedError for {optimizer}); use --format csv for this plan")
    if not plan.seq_len:
        raise UserError("OLMo-core counts the batch and the schedule in tokens and the plan has no sequence length; "
                        "convert again with --seq-len (tokens per sample)")
    steps = batch_steps(plan)
    for a, b in zip(steps, steps[1:]):
        big, small = max(a["batch_size"], b["batch_size"]), min(a["batch_size"], b["batch_size"])
        if big % small:
            raise UserError(f"OLMo-core changes the batch by integer factors only, and the plan goes from "
                            f"{a['batch_size']} to {b['batch_size']} at sample {b['samples']:,}; convert again with "
                            "--growth-factor 2")


def export_olmo(plan, plan_path: str = "plan.json") -> str:
    """Python for OLMo-core: its BatchSizeSchedulerCallback in tokens, and an LR scheduler that trains the plan's LR.

    OLMo-core's callback multiplies an Adam LR's initial value by √(new/old) at each batch change
    (olmo_core/train/callbacks/batch_size_scheduler.py); the plan's LR is the original's × its own
    factor (eq. 14). ``PlanLR`` (an OLMo-core ``Scheduler`` in tokens, which the callback requires
    without a t_max) sets each group's LR to the plan's at the update's first sample, × the group's
    own ratio, so OLMo-core's √ factor is undone: ``Plan.at_sample`` is the LR, not a comment.
    While OLMo-core holds the old batch (it raises the batch only once the batches processed are a
    multiple of the factor) the LR stays that of the last stage at the batch it trains.
    """
    rows = olmo_rows(plan)
    batches = ", ".join(str(r["batch_size_tokens"]) for r in rows)
    schedule = ", ".join(f"Duration.tokens({r['start_tokens']})" for r in rows)
    lines = ["from dataclasses import dataclass",
             "",
             "from bsadvisor import Plan",
             "from olmo_core.optim.scheduler import Scheduler, SchedulerUnits",
             "from olmo_core.train.callbacks import BatchSizeSchedulerCallback",
             "from olmo_core.train.common import Duration",
             "",
             f"plan = Plan.load({plan_path!r})  # the plan's batches and LR; start the data loader at "
             f"global_batch_size={rows[0]['batch_size_tokens']}",
             f"SEQ_LEN = {plan.seq_len}",
             "batch_size_scheduler = BatchSizeSchedulerCallback(",
             f"    batch_sizes=[{batches}],",
             f"    schedule=[{schedule}],",
             ")",
             "",
             "",
             "@dataclass",
             "class PlanLR(Scheduler):",
             "    \"\"\"The plan's LR at every update (bsadvisor), in place of OLMo-core's sqrt(new/old) factor.\"\"\"",
             "",
             "    units: SchedulerUnits = SchedulerUnits.tokens",
             "",
             "    def get_lr(self, initial_lr, current, t_max):",
             "        return plan.at_sample(current // SEQ_LEN).lr",
             "",
             "    def set_lr(self, group, trainer):",
             "        batch = trainer.data_loader.global_batch_size  # tokens, as OLMo-core trains it now",
             "        start = (trainer.global_train_tokens_seen - batch) // SEQ_LEN  # this update's first sample",
             "        stage = plan.stages[plan.stage_index_at_sample(start)]",
             "        if stage.batch_size * SEQ_LEN != batch:  # OLMo-core has not changed the batch yet",
             "            stage = [s for s in plan.stages if s.start_sample <= start and s.batch_size * SEQ_LEN == batch][-1]",
             "        if group.get('plan_lr_ratio') is None:  # the group's LR relative to the plan's base LR",
             "            group['plan_lr_ratio'] = group.get(self.initial_lr_field) or group[self.lr_field]",
             f"            group['plan_lr_ratio'] /= {plan.inputs.get('lr') or plan.stages[0].lr!r}",
             "        lr = plan.lr_at(stage, start) * group['plan_lr_ratio']",
             "        if hasattr(group.get(self.lr_field), 'fill_'):  # a tensor LR (compiled optimizers), as OLMo-core",
             "            group[self.lr_field].fill_(lr)",
             "        else:",
             "            group[self.lr_field] = lr",
             "        return lr",
             "",
             "",
             "lr_scheduler = PlanLR()  # the train module's scheduler"]
    return "\n".join(lines) + "\n"


def olmo_notes(plan) -> list[str]:
    notes = ["OLMo-core raises the batch only once the batches processed are a multiple of the factor, so each "
             "increase may land up to factor − 1 updates after its token count"]
    if len({s.momentum for s in plan.stages}) > 1:
        notes.append("the plan also changes Adam's β1, which the callback cannot hold; use --format csv")
    return notes


def csv_rows(plan) -> list[dict]:
    """One row per stage: its samples (and tokens), batch, LR factor of the original (or constant LR), momentum, phase."""
    rows = []
    for s in plan.stages:
        row = {"start_sample": s.start_sample, "end_sample": s.end_sample}
        if plan.seq_len:
            row["start_token"], row["end_token"] = _tokens(plan, s.start_sample), _tokens(plan, s.end_sample)
        row.update({"batch_size": s.batch_size, "lr_scale": s.lr_scale, "lr": s.lr, "momentum": s.momentum,
                    "phase": s.phase})
        rows.append(row)
    return rows


def export_csv(plan) -> str:
    """One row per stage, numbers to 10 significant digits. ``lr_scale`` is the LR as a multiple of the
    original schedule's LR at the same sample (empty: the stage trains at the constant ``lr``); ``lr`` is
    the LR at the stage's first sample."""
    rows = csv_rows(plan)
    header = list(rows[0])
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join("" if r[k] is None else fmt_number(r[k]) if isinstance(r[k], float) else str(r[k])
                              for k in header))
    return "\n".join(lines) + "\n"
