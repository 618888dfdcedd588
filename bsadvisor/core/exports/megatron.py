"""Megatron-Core: the step schedule (--step-batch-size-schedule, 0.18 on) with the closest LR flags, or, for
0.17 and older, the best linear --rampup-batch-size with the notes on the LR it does not hold."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

from bsadvisor.core.errors import UserError
from bsadvisor.core.exports.fit import (MEGATRON_TOLERANCE, RAMP_MAX_CHANGES, RAMP_MAX_STEPS, Exported,
                                        batch_steps, closest_lr, device_unit, fmt_number, growth_limit_hint,
                                        noise_factor, ramp_increments, schedule_notes, spread)

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
    unit = device_unit(plan)
    increments = ramp_increments(final - start, unit) if final > start else [1]
    if not increments:
        raise UserError(f"the plan cannot be expressed as Megatron-LM's --rampup-batch-size: no increment that is a "
                        f"multiple of {unit} (micro-batch × data-parallel size) divides {final} − {start} in at most "
                        f"{RAMP_MAX_STEPS} steps; convert again with --round-to {unit} and a --batch-size that is a "
                        "multiple of it")
    changes = spread([p["samples"] for p in steps[1:]], RAMP_MAX_CHANGES)
    # equal slices of the run, and the places the plan changes its batch (where an update starts)
    grid = np.unique(np.concatenate([(np.arange(RAMP_GRID) + 0.5) * total / RAMP_GRID, changes]).astype(np.int64))
    b_plan = np.asarray([plan.at_sample(int(x)).batch_size for x in grid], dtype=float)
    power, noise = noise_factor(plan)
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


def megatron_step(plan) -> Exported:
    """Megatron-Core ≥ 0.18's flags: --step-batch-size-schedule (thresholds in tokens with --seq-length, else in
    samples), --train-samples and the LR flags closest to the plan's, with the temperature error stated;
    a UserError when the LR is more than MEGATRON_TOLERANCE off on average."""
    schedule, seq = megatron_schedule(plan)
    entries = " ".join(f"{_float_exact(t, 'threshold')}:{_float_exact(b, 'batch')}" for t, b in schedule)
    lr = closest_lr(plan)  # over consumed samples, warmup from the plan's first LR (--lr-warmup-init)
    if lr.mean_error > MEGATRON_TOLERANCE:
        raise UserError(f"Megatron-Core's LR schedules (warmup, then constant, linear, cosine or WSD over samples) "
                        f"cannot hold this plan's LR: the closest ({lr.flags()}) is {lr.mean_error:.0%} off the "
                        f"plan's temperature on average ({lr.max_error:.0%} at worst, over "
                        f"{MEGATRON_TOLERANCE:.0%}); use --format csv with your own LR schedule"
                        f"{growth_limit_hint(plan)}")
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
             "--lr-warmup-fraction (Megatron asserts so); --megatron-version 0.17 gives the old ramp"] + schedule_notes(plan, lr, "Megatron", "update", "--micro-batch-size × data-parallel size")
    rows = [{"threshold": t, "threshold_unit": unit, "start_samples": t // (seq or 1), "batch_size": b}
            for t, b in schedule]
    return Exported(text, rows, notes)
