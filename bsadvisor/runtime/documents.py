"""The documents a training run writes: the noise monitor's points and the run's records, frozen and typed.

Each is a frozen :class:`~bsadvisor.core.documents.Document` read by attribute (``point.b_simple``,
``record.train_loss``); ``to_dict()`` is its JSON (results.json's ``history``, ``steps``, ``evals``,
``noise_trace`` and ``skipped_steps``, a ``bsadvisor.noise_trace/1`` file's ``points``, a
checkpoint's records), the same keys in the same order as ever, and ``from_dict`` reads it back.
They are ``eq=False``: a record is equal to the dict of its JSON (the Mapping's equality), for code
written against the dicts these documents replace.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from bsadvisor.core.documents import Document


@dataclass(frozen=True, eq=False)
class NoisePoint(Document):
    """One point of the noise monitor's trace: B_simple with its 90% interval, at a sample position and setting.

    ``ci90``: (low, high), high None when open; ``ci_kind``: core.noise's kind ("bounded", ...);
    ``how``: "draws" (extra draws), "accumulation" (an update's micro-batches) or "replicas"
    (the ranks' gradients under DDP); ``seconds``: what the extra draws took (0 otherwise).
    """

    sample: int
    update: Optional[int]
    b_simple: Optional[float]
    ci90: tuple
    ci_kind: str
    trace_sigma: Optional[float]
    grad_sq_norm: Optional[float]
    draws: int
    micro_batch: float
    big_batch: int
    lr: float
    momentum: float
    batch_size: int
    how: str
    seconds: float


@dataclass(frozen=True, eq=False)
class EpochRecord(Document):
    """A run's record of one epoch: its setting, mean training loss, metric and the run's totals at its end.

    ``diverged``: its training loss was not finite (the run stopped there; in the JSON only when set).
    """

    _omit_if_false: ClassVar[tuple[str, ...]] = ("diverged",)

    epoch: int
    batch_size: int
    lr: float
    momentum: float
    train_loss: float
    metric: Optional[float]
    updates: int
    examples: int
    wall_s: float
    diverged: bool = False


@dataclass(frozen=True, eq=False)
class StepRecord(Document):
    """The batch, LR and momentum of one update (every k-th one beyond a run's MAX_STEP_RECORDS)."""

    samples: int
    batch_size: int
    lr: float
    momentum: float


@dataclass(frozen=True, eq=False)
class EvalPoint(Document):
    """A point of a run's curve: ``point`` where it was due, ``samples`` the update that reached it, the metric
    there and the mean training loss since the last point (None when no example was seen)."""

    point: int
    samples: int
    epoch: float
    updates: int
    batch_size: int
    train_loss: Optional[float]
    metric: Optional[float]
    wall_s: float


@dataclass(frozen=True, eq=False)
class SkippedStep(Document):
    """An update the fp16 GradScaler skipped (inf/NaN gradients): where, and the loss scale it had."""

    samples: int
    update: int
    loss_scale: float


__all__ = ["EpochRecord", "EvalPoint", "NoisePoint", "SkippedStep", "StepRecord"]
