"""The data side of a Plan: which examples make each batch, update by update.

``PlanBatchSampler`` is a batch sampler for ``DataLoader(batch_sampler=...)`` whose
batch size follows the plan (Smith et al., arXiv 1711.00489) at every update, a stage
boundary inside an epoch included, with reproducible shuffling from (seed, epoch) and an
optional split of every global batch over ranks. The training loop (runtime/train.py)
reads its index batches directly.

The rule (the one ``Plan.updates`` counts, core/original.py): the update that starts at
sample position s takes ``plan.at_sample(s).batch_size`` examples of this epoch's
permutation, fewer only at the end of the epoch or of the run; so within an epoch every
example is used exactly once.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.original import check_dataset_size
from bsadvisor.core.plan import Plan
from bsadvisor.runtime.batches import split_share


class PlanBatchSampler:
    """Yields lists of dataset indices whose length follows ``plan.at_sample(position)``.

    Every epoch is a fresh permutation drawn from (seed, epoch) alone, so a run resumed
    in epoch e sees the same batches as an uninterrupted one. A batch ends early only at
    the end of an epoch (the last partial batch is kept, as ``Plan.updates`` counts, unless
    ``drop_last``) or of the run (a plan may end inside an epoch).

    Epochs: call ``set_epoch(e)`` before iterating (like ``DistributedSampler``), or let
    each new ``__iter__`` move on to the next epoch by itself. ``state_dict()`` holds the
    position inside the epoch too: a run checkpointed mid-epoch resumes at the next batch.

    With ``world_size > 1`` each global batch is cut into ``world_size`` contiguous shares
    (sizes differ by at most one; the last, partial batch may leave a share empty) and
    this rank yields its share: the shares are disjoint and together are exactly the
    global batch. Shares can be uneven, so weight each rank's mean loss by
    ``len(share) * world_size / global_batch`` before DDP averages the gradients
    (runtime/batches.py, loss_weight).
    """

    def __init__(self, plan: Plan, dataset_size: Optional[int] = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, shuffle: bool = True):
        checks.instance("plan", plan, Plan, "a bsadvisor Plan (Plan.load('plan.json'))")
        if plan.dataset_size is None:
            raise UserError("the plan has no data set size (it was made with --streaming and no --dataset-size); "
                            "a sampler needs one: re-run convert-schedule with --dataset-size")
        n = plan.dataset_size if dataset_size is None else checks.positive_int("dataset_size", dataset_size)
        check_dataset_size(plan, n)
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise UserError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
        self.plan, self.dataset_size, self.seed = plan, n, checks.seed("seed", seed)
        self.rank, self.world_size = rank, world_size
        self.drop_last, self.shuffle = drop_last, shuffle
        self.epoch = 0
        self.offset = 0  # examples of this epoch already yielded (a mid-epoch resume starts here)
        self._advance = False  # True once an epoch has been iterated without a set_epoch after it

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (0 ≤ epoch ≤ the plan's epochs; the plan's end yields nothing)."""
        self.epoch = self._epoch(epoch)
        self.offset = 0
        self._advance = False

    def seek(self, samples: int) -> None:
        """Stand at sample position ``samples`` of the plan: its epoch, and the offset inside it.

        The next iteration yields the batches from there to the epoch's end (a run resumed
        part way, or a loop that keeps its own position, such as FollowPlan's).
        """
        epoch, offset = divmod(checks.integer("samples", samples, low=0, high=self.plan.total_samples),
                               self.dataset_size)
        self.epoch, self.offset = self._epoch(epoch), offset
        self._advance = False

    def _epoch(self, epoch: Any) -> int:
        return checks.integer("epoch", epoch, low=0, high=self.plan.full_epochs)

    @property
    def epochs(self) -> int:
        """Epochs the plan starts (the last may be partial)."""
        return self.plan.full_epochs

    def batch_size(self, epoch: Optional[int] = None) -> int:
        """The batch size at the start of ``epoch`` (it may change inside the epoch)."""
        return self.plan.at(self.epoch if epoch is None else epoch).batch_size

    def spans(self, epoch: int, offset: int = 0) -> list[tuple[int, int]]:
        """(start, stop) positions inside ``epoch``'s permutation of each batch from ``offset`` on."""
        n, total = self.dataset_size, self.plan.total_samples
        first = epoch * n
        end = min(n, total - first)
        out, o = [], offset
        while o < end:
            stop = self.plan.update_end(first + o) - first
            if self.drop_last and stop - o < self.plan.at_sample(first + o).batch_size:
                break
            out.append((o, stop))
            o = stop
        return out

    def __len__(self) -> int:
        return len(self.spans(self.epoch))

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.dataset_size)
        # SeedSequence mixes (seed, epoch) so that seed 1 / epoch 0 and seed 0 / epoch 1
        # are unrelated streams (seed + epoch would make them equal).
        s = int(np.random.SeedSequence([self.seed, epoch]).generate_state(2, np.uint32).astype(np.uint64)
                @ np.array([1, 2**32], dtype=np.uint64)) & (2**63 - 1)
        return torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(s))

    def global_batches(self, epoch: int, offset: int = 0) -> list[torch.Tensor]:
        """Every rank's batches for ``epoch`` from ``offset`` on (the whole global batch each), as index tensors."""
        perm = self.permutation(epoch)
        return [perm[a:b] for a, b in self.spans(epoch, offset)]

    def index_batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's batches for ``epoch`` as index tensors (its share of each global batch)."""
        return [split_share(batch, self.rank, self.world_size) for batch in self.global_batches(epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        # After a whole epoch the next iteration starts the next one; an epoch left part way
        # (a mid-epoch checkpoint's state) is continued where it stopped.
        spans = self.spans(self.epoch, self.offset)
        if self._advance and not spans:
            self.epoch += 1
            self.offset = 0
            spans = self.spans(self.epoch)
        self._advance = True
        perm = self.permutation(self.epoch)
        for a, b in spans:
            self.offset = b
            yield split_share(perm[a:b], self.rank, self.world_size).tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "advance": self._advance, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s contents; a state that is not one is refused and changes nothing."""
        checks.instance("state", state, dict, "a dict from PlanBatchSampler.state_dict()")
        if "epoch" not in state or "seed" not in state:
            raise UserError("PlanBatchSampler state needs 'epoch' and 'seed' (give what state_dict() returned)")
        epoch, seed = self._epoch(state["epoch"]), checks.seed("seed", state["seed"])
        offset = checks.integer("offset", state.get("offset", 0), low=0, high=self.dataset_size)
        advance = checks.instance("advance", state.get("advance", False), bool, "True or False")
        self.epoch, self.seed, self._advance, self.offset = epoch, seed, advance, offset
