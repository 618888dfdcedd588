"""The original run on the sample axis: which scheduler step, LR and momentum are in force after s examples.

A plan is a function of progress in samples (examples consumed; docs/concepts.md §2). The
original run trains at batch B0 over N examples an epoch and steps its LR scheduler once an
epoch (``unit="epoch"``) or once an update (``unit="step"``, ⌈N/B0⌉ updates an epoch, the
last one partial). Sample position s therefore falls in

    scheduler step k(s) = ⌊s/N⌋                                   once an epoch
    scheduler step k(s) = ⌊s/N⌋·⌈N/B0⌉ + ⌊(s mod N)/B0⌋            once an update

and the original's LR at s is ε(k(s)), exactly what torch's scheduler holds while that
update runs. Single-pass (streaming) training has no epochs: N is None and k(s) = ⌊s/B0⌋.
Pure Python, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from bsadvisor.core.errors import UserError
from bsadvisor.core.schedules import Schedule

def check_dataset_size(plan: Any, dataset_size: Optional[int]) -> None:
    """The one refusal of a plan (a :class:`~bsadvisor.core.plan.Plan`) made for another data set: its stages are
    positions on that set's sample axis. The sampler, the training loop, validate and the integrations call it."""
    if dataset_size != plan.dataset_size:
        raise UserError(f"the plan was made for {plan.dataset_size} training examples but the dataset has "
                        f"{dataset_size}; re-run convert-schedule with --dataset-size {dataset_size}")


@dataclass(frozen=True)
class OriginalRun:
    """The original schedule ``schedule`` from LR ``lr0`` at batch ``batch_size`` (B0), for
    ``total_samples`` examples of a data set of ``dataset_size`` (N; None when streaming),
    its scheduler stepped per ``unit``; ``momentum`` where the schedule sets none."""

    schedule: Schedule
    lr0: float
    batch_size: int
    dataset_size: Optional[int]
    total_samples: int
    unit: str = "epoch"
    momentum: float = 0.0

    @property
    def steps_per_epoch(self) -> int:
        """Scheduler steps an epoch: 1, or ⌈N/B0⌉ updates (N unknown: none, every step is an update)."""
        if self.unit == "epoch":
            return 1
        return math.ceil(self.dataset_size / self.batch_size) if self.dataset_size else 1

    def step_at(self, sample: int) -> int:
        """The scheduler step in force at sample position ``sample`` (module docstring)."""
        n, b0 = self.dataset_size, self.batch_size
        if n is None:
            return sample // b0 if self.unit == "step" else 0
        epoch, offset = divmod(sample, n)
        return epoch if self.unit == "epoch" else epoch * self.steps_per_epoch + offset // b0

    def first_sample(self, step: int) -> int:
        """The first sample position of scheduler step ``step`` (the inverse of :meth:`step_at`)."""
        n, b0 = self.dataset_size, self.batch_size
        if n is None:
            return step * b0
        if self.unit == "epoch":
            return step * n
        epoch, j = divmod(step, self.steps_per_epoch)
        return epoch * n + j * b0

    @property
    def horizon(self) -> int:
        """Scheduler steps the run reads: one past the step in force at its last sample."""
        return self.step_at(self.total_samples - 1) + 1

    def lr_at(self, sample: int) -> float:
        """The original's LR while the example at ``sample`` is trained on."""
        return self.schedule.lr(self.step_at(sample), self.lr0)

    def momentum_at(self, sample: int) -> float:
        m = self.schedule.momentum(self.step_at(sample))
        return float(self.momentum) if m is None else m

    def pieces(self) -> Iterator[tuple[int, int, bool]]:
        """(start_sample, end_sample, smooth) tiling [0, total_samples): constant LR or changing each step."""
        total = self.total_samples
        for a, b, smooth in self.schedule.pieces(self.horizon, self.steps_per_epoch):
            start, end = self.first_sample(a), min(self.first_sample(b), total)
            if start < end:
                yield start, end, smooth

    def updates(self) -> int:
        """The original's parameter updates: ⌈N/B0⌉ an epoch, the last batch of an epoch and of the run partial."""
        return count_updates(self.total_samples, self.dataset_size, [(0, self.total_samples, self.batch_size)])


def count_updates(total: int, dataset_size: Optional[int], stages: list[tuple[int, int, int]]) -> int:
    """Updates of a run that takes, at position s, a batch of the stage holding s, cut at the epoch's end."""
    return sum(updates_per_stage(total, dataset_size, stages))


def updates_per_stage(total: int, dataset_size: Optional[int], stages: list[tuple[int, int, int]]) -> list[int]:
    """Updates that start inside each of ``stages`` ((start, end, batch) tiling [0, total)).

    The rule the runtime follows (runtime/sampler.py): a batch starts inside a stage and
    takes that stage's size; it ends early only at the end of an epoch or of the run (the
    last partial batch is kept). Whole epochs inside a stage are counted at once (⌈N/B⌉
    each), so the walk takes one turn per stage and epoch boundary it crosses mid-epoch,
    never one per update or per epoch.
    """
    n = dataset_size
    counts = [0] * len(stages)
    s, i = 0, 0
    while s < total:
        while stages[i][1] <= s:
            i += 1
        _start, end, batch = stages[i]
        stop_stage = min(end, total)
        if n is not None and s % n == 0 and stop_stage - s >= n:  # whole epochs at one batch size
            whole = (stop_stage - s) // n
            counts[i] += whole * -(-n // batch)
            s += whole * n
            continue
        epoch_end = total if n is None else min(total, (s // n + 1) * n)
        stop = min(stop_stage, epoch_end)
        k = -(-(stop - s) // batch)
        counts[i] += k
        s = min(s + k * batch, epoch_end)
    return counts
