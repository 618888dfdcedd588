"""A plan for the tools people already use: Megatron's flags, an OLMo-core-style schedule, a CSV table.

Each format gives its text, its rows (for a JSON document) and notes on what it cannot
hold; nothing in a plan is dropped without a note. Positions are in samples (examples
consumed), and in tokens where the plan knows its sequence length. Pure Python, no torch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from bsadvisor.core.errors import UserError

if TYPE_CHECKING:  # annotations only: `bsadvisor --help` need not import the plan schema
    from bsadvisor.core.plan import Plan

EXPORT_FORMATS = ("megatron", "olmo", "csv")
EXPORT_SCHEMA = "bsadvisor.export/2"


def check_format(format_name: str) -> str:
    """``format_name`` if it is one of EXPORT_FORMATS."""
    if format_name not in EXPORT_FORMATS:
        raise UserError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format_name!r} "
                        "(lightning: not available yet, see bsadvisor export --help)", parameter="format")
    return format_name


def export(plan: Plan, format_name: str) -> tuple[str, list[dict], list[str]]:
    """(text, rows, notes) of ``plan`` in ``format_name`` (one of EXPORT_FORMATS)."""
    fmt = check_format(format_name)
    if fmt == "megatron":
        return export_megatron(plan), batch_steps(plan), megatron_notes(plan)
    if fmt == "olmo":
        return export_olmo(plan), olmo_rows(plan), olmo_notes(plan)
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


def megatron_ramp(plan) -> Optional[tuple[int, int, int]]:
    """(start, increment, ramp samples) when the plan's batches are exactly Megatron's linear ramp, else None.

    ``--rampup-batch-size START INCREMENT SAMPLES`` with ``--global-batch-size G`` trains at
    START + k·INCREMENT once k·SAMPLES/((G − START)/INCREMENT) samples are consumed
    (k = 0 … (G − START)/INCREMENT). A plan matches when its batch changes sit at those
    sample counts (to the sample) with a constant increment.
    """
    steps = batch_steps(plan)
    if len(steps) < 2:
        return None
    start = steps[0]["batch_size"]
    increment = steps[1]["batch_size"] - start
    every = steps[1]["samples"]
    if increment <= 0:  # Megatron only ramps up
        return None
    for k, step in enumerate(steps):
        if step["batch_size"] != start + k * increment or step["samples"] != k * every:
            return None
    increments = len(steps) - 1
    return start, increment, every * increments


def export_megatron(plan) -> str:
    """Megatron's ramp flags when the plan is a linear ramp; otherwise ``samples:batch`` pairs, one per change."""
    ramp = megatron_ramp(plan)
    if ramp is not None:
        final = batch_steps(plan)[-1]["batch_size"]
        return f"--rampup-batch-size {ramp[0]} {ramp[1]} {ramp[2]} --global-batch-size {final}\n"
    return " ".join(f"{p['samples']}:{p['batch_size']}" for p in batch_steps(plan)) + "\n"


def megatron_notes(plan) -> list[str]:
    """What the megatron export cannot hold, and who reads it."""
    notes = []
    if megatron_ramp(plan) is None:
        notes.append("the plan's batches are not a linear ramp, so stock Megatron-LM's --rampup-batch-size START "
                     "INCREMENT SAMPLES cannot express them: feed the samples:batch pairs to your own global-batch-"
                     "size schedule (a num-microbatches calculator), or use --format csv")
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


def _tokens(plan, samples: int) -> Optional[int]:
    return samples * plan.seq_len if plan.seq_len else None


def olmo_rows(plan) -> list[dict]:
    """One row per batch change: where it starts, how long it lasts (samples, updates; tokens with a sequence
    length) and the batch as a multiple of the first (OLMo-core grows the batch by integer factors)."""
    first = plan.stages[0].batch_size
    counts = plan.updates_per_stage()
    steps = batch_steps(plan)
    ends = [step["samples"] for step in steps[1:]] + [plan.total_samples]
    rows, i = [], 0
    for step, end in zip(steps, ends):
        factor = step["batch_size"] / first
        updates = 0  # the stages that start in [step, end): one walk over the stages for all steps (linear)
        while i < len(plan.stages) and plan.stages[i].start_sample < end:
            updates += counts[i] if plan.stages[i].start_sample >= step["samples"] else 0
            i += 1
        row = {"start_samples": step["samples"], "duration_samples": end - step["samples"], "updates": updates,
               "batch_size": step["batch_size"], "factor": int(factor) if factor.is_integer() else factor}
        if plan.seq_len:
            row.update(start_tokens=_tokens(plan, step["samples"]), duration_tokens=_tokens(plan, end - step["samples"]),
                       batch_size_tokens=_tokens(plan, step["batch_size"]))
        rows.append(row)
    return rows


def export_olmo(plan) -> str:
    """An OLMo-core-style batch-size schedule: per batch change its start, its duration and its updates, the
    global batch and its factor over the first; in tokens when the plan has a sequence length (OLMo-core
    counts the global batch in tokens), else in samples."""
    unit = "tokens" if plan.seq_len else "samples"
    batch = "batch_size_tokens" if plan.seq_len else "batch_size"
    lines = [f"start_{unit},duration_{unit},updates,{batch},factor"]
    for r in olmo_rows(plan):
        lines.append(f"{r['start_' + unit]},{r['duration_' + unit]},{r['updates']},{r[batch]},{fmt_number(r['factor'])}")
    return "\n".join(lines) + "\n"


def olmo_notes(plan) -> list[str]:
    notes = []
    odd = [r for r in olmo_rows(plan) if not isinstance(r["factor"], int)]
    if odd:
        notes.append("OLMo-core's batch-size schedule grows the batch by integer factors; "
                     f"{len(odd)} of these batches are not an integer multiple of the first "
                     f"({', '.join(str(r['batch_size']) for r in odd[:4])}{', ...' if len(odd) > 4 else ''}): "
                     "regenerate the plan with --growth-factor 2")
    if not plan.seq_len:
        notes.append("the plan has no sequence length, so durations are in samples: multiply by your sequence "
                     "length (or regenerate with --seq-len) for tokens")
    notes += _lr_notes(plan, "keep your trainer's LR schedule as the original")
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
