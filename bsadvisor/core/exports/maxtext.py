"""MaxText: the batch ramp (RampupBatchManager) and the LR config closest to the plan's at those batches."""
from __future__ import annotations

import math
from typing import NamedTuple

from bsadvisor.core.errors import UserError
from bsadvisor.core.exports.fit import (MEGATRON_TOLERANCE, Exported, batch_steps, closest_lr, device_unit, fmt_number,
                                        lr_grid, noise_factor, ramp_increments, spread)

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
    unit = device_unit(plan)
    grid, in_slices, _ = lr_grid(plan)
    power, noise = noise_factor(plan)
    b_plan = np.asarray([plan.at_sample(int(x)).batch_size for x in grid], dtype=float)
    if final > start:
        increments = spread(ramp_increments(final - start, unit), MAXTEXT_INCREMENTS)
        if not increments:
            raise UserError(f"the plan cannot be expressed as MaxText's batch ramp: no increment that is a multiple "
                            f"of {unit} divides {final} − {start}; convert again with --round-to {unit}")
        changes = spread([p["samples"] for p in steps[1:]], MAXTEXT_LENGTHS // 2)
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
    devices = plan.options.world_size
    start, final, total = steps[0]["batch_size"], steps[-1]["batch_size"], plan.total_samples
    bad = next((p["batch_size"] for p in steps if p["batch_size"] % devices), None)
    if bad is not None:
        raise UserError(f"MaxText sets the batch per device, and the plan's batch {bad} is not a multiple of its "
                        f"{devices} devices; convert again with --world-size and --round-to")
    power, noise = noise_factor(plan)
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
