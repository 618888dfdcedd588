"""The data side of a Plan: which examples make each batch, epoch by epoch.

``PlanBatchSampler`` is a batch sampler for ``DataLoader(batch_sampler=...)`` whose
batch size follows the plan (Smith et al., arXiv 1711.00489), with reproducible
shuffling from (seed, epoch) and an optional split of every global batch over ranks.
The training loop (runtime/train.py) reads its index batches directly.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch

from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan
from bsadvisor.runtime.step import split_share


class PlanBatchSampler:
    """Yields lists of dataset indices whose length follows ``plan.at(epoch).batch_size``.

    Every epoch is a fresh permutation drawn from (seed, epoch) alone, so a run resumed
    at epoch e sees the same batches as an uninterrupted one. The last partial batch is
    kept (ceil(N/B) updates per epoch, as ``Plan.updates`` counts) unless ``drop_last``.

    Epochs: call ``set_epoch(e)`` before iterating (like ``DistributedSampler``), or let
    each new ``__iter__`` move on to the next epoch by itself.

    With ``world_size > 1`` each global batch is cut into ``world_size`` contiguous shares
    (sizes differ by at most one; the last, partial batch may leave a share empty) and
    this rank yields its share: the shares are disjoint and together are exactly the
    global batch. Shares can be uneven, so weight each rank's mean loss by
    ``len(share) * world_size / global_batch`` before DDP averages the gradients.
    """

    def __init__(self, plan: Plan, dataset_size: Optional[int] = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, shuffle: bool = True):
        n = plan.dataset_size if dataset_size is None else int(dataset_size)
        if n != plan.dataset_size:
            raise UserError(f"the plan was made for {plan.dataset_size} training examples but the dataset has {n}; "
                            "re-run convert-schedule for this dataset")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise UserError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
        self.plan, self.dataset_size, self.seed = plan, n, int(seed)
        self.rank, self.world_size = rank, world_size
        self.drop_last, self.shuffle = drop_last, shuffle
        self.epoch = 0
        self._advance = False  # True once an epoch has been iterated without a set_epoch after it

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._advance = False

    def batch_size(self, epoch: Optional[int] = None) -> int:
        return self.plan.at(self.epoch if epoch is None else epoch).batch_size

    def __len__(self) -> int:
        b = self.batch_size()
        return self.dataset_size // b if self.drop_last else math.ceil(self.dataset_size / b)

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.dataset_size)
        # SeedSequence mixes (seed, epoch) so that seed 1 / epoch 0 and seed 0 / epoch 1
        # are unrelated streams (seed + epoch would make them equal).
        s = int(np.random.SeedSequence([self.seed, epoch]).generate_state(2, np.uint32).astype(np.uint64)
                @ np.array([1, 2**32], dtype=np.uint64)) & (2**63 - 1)
        return torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(s))

    def global_batches(self, epoch: int) -> list[torch.Tensor]:
        """Every rank's batches for ``epoch`` (the whole global batch each), as index tensors."""
        perm, b = self.permutation(epoch), self.batch_size(epoch)
        stop = (self.dataset_size // b) * b if self.drop_last else self.dataset_size
        return [perm[i:i + b] for i in range(0, stop, b)]

    def index_batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's batches for ``epoch`` as index tensors (its share of each global batch)."""
        return [split_share(batch, self.rank, self.world_size) for batch in self.global_batches(epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        if self._advance:
            self.epoch += 1
        self._advance = True
        for batch in self.index_batches(self.epoch):
            yield batch.tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "advance": self._advance}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.seed, self._advance = int(state["epoch"]), int(state["seed"]), bool(state["advance"])
