"""What every phase of the probe works with: its options, its time budget, its batches.

Each phase (warmup, noise, memory, throughput) takes a :class:`Bench` and the
:class:`Budget`: the options resolved once (:class:`ProbeConfig`, frozen), the model with
its trainable parameters, a private stream of training batches, the process group (a
single-process :class:`Dist` whose collectives are no-ops, so no phase needs a special
case for one process) and the list of warnings the result will carry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from bsadvisor.core.errors import user_code
from bsadvisor.measure.state import Rewind, state_on_cpu
from bsadvisor.runtime import rng
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.precision import StepRecipe
from bsadvisor.runtime.batches import to_device
from bsadvisor.targets.target import Target


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's options, checked and resolved once (see ``probe()`` for their meaning)."""

    batch_size: int               # B, the global batch (world_size × local_batch)
    local_batch: int              # this process's share of B (B itself in one process)
    world_size: int
    dataset_size: int
    lr: float
    warmup_steps: int
    budget_seconds: float
    target_rel_ci: float
    estimator: str
    micro_batches: int
    memory_limit: Optional[float]
    seed: int
    rank_seed: int                # this rank's streams (ranks draw different examples)
    min_draws: int
    max_draws: Optional[int]
    draws: Optional[int]          # a fixed number of noise draws; None: the budget decides
    measure_memory: bool
    measure_throughput: bool
    device: torch.device


@dataclass(frozen=True)
class Budget:
    """``--budget-seconds``, counted from the start of measuring (after the target is built)."""

    seconds: float
    start: float
    deadline: float

    @classmethod
    def start_now(cls, seconds: float) -> "Budget":
        start = time.perf_counter()
        return cls(seconds, start, start + seconds)

    def phase_deadline(self, share: float, now: float) -> float:
        """When a phase that starts at ``now`` and gets ``share`` of what is left must stop."""
        return now + share * max(0.0, self.deadline - now)


class Batches:
    """Random batches without replacement from the training set, via a private generator.

    ``examples`` counts the examples drawn (the probe resets it when θ is frozen, so the
    noise phase reports only what it used).
    """

    def __init__(self, target: Target, device: torch.device, seed: int):
        self.target = target
        self.device = device
        self.size = target.dataset_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(self.size, generator=self.generator)
        self.position = 0
        dataset = target.train_dataset
        in_memory = target.collate_fn is None and isinstance(dataset, torch.utils.data.TensorDataset)
        self.tensors = dataset.tensors if in_memory else None
        self.examples = 0

    def indices(self, size: int) -> torch.Tensor:
        if self.position + size > self.size:
            self.order = torch.randperm(self.size, generator=self.generator)
            self.position = 0
        idx = self.order[self.position:self.position + size]
        self.position += size
        self.examples += size
        return idx

    def fetch(self, idx: torch.Tensor):
        if self.tensors is not None:
            batch = tuple(t[idx] for t in self.tensors)
        else:
            with user_code(lambda exc: f"loading a batch from train_dataset failed: {type(exc).__name__}: {exc}",
                           let_through=()):
                batch = self.target.collate([self.target.train_dataset[int(i)] for i in idx])
        return to_device(batch, self.device)

    def next(self, size: int):
        return self.fetch(self.indices(size))


@dataclass
class Bench:
    """The model under measurement and what the phases share (see the module doc)."""

    target: Target
    config: ProbeConfig
    dist: Dist
    params: list                  # the trainable parameters
    batches: Batches
    progress: Callable[[str, float], None]
    warnings: list = field(default_factory=list)
    rewind: Optional[Rewind] = None  # θ after the warmup (set by freeze)
    recipe: Optional[StepRecipe] = None  # the target's precision and clipping, for every step and draw
    loss_scale: float = 1.0  # the noise draws' fp16 loss scale (the warmup's scaler's, halved on an overflow)

    @property
    def model(self) -> torch.nn.Module:
        return self.target.model

    @property
    def device(self) -> torch.device:
        return self.config.device

    @classmethod
    def open(cls, target: Target, config: ProbeConfig, dist: Dist, progress, warnings: list) -> "Bench":
        """Seed this rank's streams, put the model on the device in train mode, start every rank at rank 0's θ."""
        rng.seed_everything(config.rank_seed)
        model = target.model
        model.to(config.device)
        model.train()
        dist.broadcast_module(model)
        batches = Batches(target, config.device, config.rank_seed)
        params = [p for p in model.parameters() if p.requires_grad]
        return cls(target, config, dist, params, batches, progress, warnings,
                   recipe=StepRecipe.of(target, config.device))

    def freeze(self) -> dict:
        """Fix θ for the measurements (docs/probe.md, step 2); returns a CPU copy of it.

        Rank 0's θ is sent to every rank again, so that all measure at the identical θ even
        when the warmup's kernels are not deterministic.
        """
        self.dist.broadcast_module(self.model)
        self.rewind = Rewind(self.model)
        self.loss_scale = self.recipe.loss_scale if self.recipe is not None else 1.0
        measured_state = state_on_cpu(self.model)
        self.batches.examples = 0  # count only the examples the measurements use
        return measured_state

    def warn(self, warning: Optional[str]) -> None:
        if warning:
            self.warnings.append(warning)


def over_ranks(dist: Dist, value: float, op: str = "sum") -> float:
    """``value`` reduced over the ranks (sum, min or max) by one ``Dist.all_reduce``; in one process ``value``."""
    return float(dist.all_reduce(torch.tensor([float(value)], dtype=torch.float64), op=op)[0])
