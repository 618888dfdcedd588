"""Levanter: TrainerConfig.train_batch_size as a step schedule and the closest OptimizerConfig LR."""
from __future__ import annotations

from bsadvisor.core.errors import UserError
from bsadvisor.core.exports.fit import (MEGATRON_TOLERANCE, Exported, closest_lr, fmt_number, growth_limit_hint,
                                        schedule_notes)

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
                        f"own LR schedule{growth_limit_hint(plan)}")
    schedule = lr.wsd_style if lr.style == "WSD" else lr.style
    lines = [f"# bsadvisor plan for Levanter: {len(entries)} batch sizes, {updates} steps", "trainer:",
             f"  num_train_steps: {updates}", "  train_batch_size:"]
    lines += [f"    - start: {n}\n      value: {b}" for n, b in entries]
    lines += ["optimizer:", f"  learning_rate: {fmt_number(lr.peak)}", f"  warmup: {lr.warmup}",
              f"  lr_schedule: {schedule}", f"  min_lr_ratio: {fmt_number(lr.floor / lr.peak)}",
              f"  decay: {lr.wsd_decay if lr.style == 'WSD' else 'null'}"]
    notes = schedule_notes(plan, lr, "Levanter", "step", "per_device_parallelism × the data axis")
    rows = [{"start_step": n, "batch_size": b} for n, b in entries]
    return Exported("\n".join(lines) + "\n", rows, notes)
