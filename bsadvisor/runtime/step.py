"""Following a Plan inside a training loop: the pieces a user adopts.

Smith et al. (arXiv 1711.00489) replace "decay the learning rate" by "increase the
batch size": the plan says, epoch by epoch, which batch size, LR and momentum to use.
Three small pieces carry it out in an ordinary PyTorch loop:

- ``BatchSizeScheduler``: shaped like a torch LR scheduler (``step()`` once per epoch);
  sets each param group's LR and momentum (SGD ``momentum``, Adam ``betas[0]``).
- ``PlanBatchSampler``: a batch sampler for ``DataLoader(batch_sampler=...)`` whose batch
  size follows the plan; reproducible shuffling from (seed, epoch); optional rank split.
- ``train_step``: one parameter update over a (possibly huge) batch, with gradient
  accumulation over micro-batches when the batch exceeds what fits in memory.

``gather`` fetches a batch by index: for in-memory tensor datasets it is one
``index_select`` per tensor, which on CPU is up to twice as fast as a DataLoader.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan, Setting


class BatchSizeScheduler:
    """Sets LR and momentum from ``plan.at(epoch)``; call ``step()`` at the end of each epoch.

    Like torch's LR schedulers it applies epoch 0 on construction. The batch size is not
    the optimizer's business: read it with ``get_last_batch_size()`` (or let a
    ``PlanBatchSampler`` follow the same plan). Param groups keep their LR ratios to the
    first group, so per-layer LR multipliers survive. For Adam/AdamW the plan's momentum
    is β1.
    """

    def __init__(self, plan: Plan, optimizer: torch.optim.Optimizer, last_epoch: int = -1):
        self.plan = plan
        self.optimizer = optimizer
        base = optimizer.param_groups[0]["lr"]
        self._ratios = [(g["lr"] / base) if base > 0 else 1.0 for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._setting: Optional[Setting] = None
        self.step()

    def step(self) -> None:
        self.last_epoch += 1
        self._apply(self.plan.at(self.last_epoch))

    def _apply(self, s: Setting) -> None:
        # Only write when the setting changes: inside a stage nothing moves, and a user
        # who tweaks a group by hand mid-stage is left alone.
        if s == self._setting:
            return
        for ratio, group in zip(self._ratios, self.optimizer.param_groups):
            group["lr"] = s.lr * ratio
            if "betas" in group:
                group["betas"] = (s.momentum, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = s.momentum
        self._setting = s

    def get_last_batch_size(self) -> int:
        return self.plan.at(self.last_epoch).batch_size

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_momentum(self) -> list[float]:
        return [g["betas"][0] if "betas" in g else g.get("momentum", 0.0) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "ratios": list(self._ratios), "plan": self.plan.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("plan") is not None and state["plan"]["stages"] != self.plan.to_dict()["stages"]:
            raise UserError("BatchSizeScheduler state was saved with a different plan; resume with the same plan")
        self.last_epoch = int(state["last_epoch"])
        self._ratios = list(state.get("ratios", self._ratios))
        self._setting = None  # force a write: the optimizer may have been rebuilt
        self._apply(self.plan.at(self.last_epoch))


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


def tensor_columns(dataset: Any) -> Optional[tuple]:
    """The tensors of an in-memory tensor dataset (TensorDataset or anything with ``.tensors``)."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, (tuple, list)) and tensors and all(isinstance(t, torch.Tensor) for t in tensors):
        if all(len(t) == len(tensors[0]) for t in tensors):
            return tuple(tensors)
    return None


def make_gather(dataset: Any, collate: Optional[Callable[[list], Any]] = None) -> Callable[[torch.Tensor], Any]:
    """A function index-tensor -> batch.

    In-memory tensors: one index_select per tensor (a list, as default_collate makes of
    tuples). Anything else, or a custom ``collate``: fetch items and collate them.
    """
    columns = tensor_columns(dataset)
    if columns is not None and collate is None:
        return lambda idx: [t.index_select(0, idx) for t in columns]
    if collate is None:
        from torch.utils.data import default_collate as collate
    return lambda idx: collate([dataset[i] for i in idx.tolist()])


def resolve_device(device: str) -> torch.device:
    """``--device`` (auto, cpu, cuda, cuda:N) as a torch.device; auto picks CUDA when there is one."""
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but CUDA is not available; use --device cpu or auto")
        try:
            return torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a device; use cuda or cuda:N") from None
    if device == "cpu":
        return torch.device("cpu")
    raise UserError(f"--device must be cpu, cuda or auto, got {device!r}")


def map_tensors(fn: Callable[[torch.Tensor], Any], batch: Any) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it: the one walk over a batch's structure.

    A batch is a tensor, or lists/tuples (namedtuples too)/dicts nesting them; anything
    else (a string, a number) is kept as it is.
    """
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, (list, tuple)):
        out = [map_tensors(fn, b) for b in batch]
        if hasattr(batch, "_fields"):  # namedtuple
            return type(batch)(*out)
        return type(batch)(out) if isinstance(batch, tuple) else out
    if isinstance(batch, dict):
        return {k: map_tensors(fn, v) for k, v in batch.items()}
    return batch


def to_device(batch: Any, device: Optional[torch.device]) -> Any:
    """``batch`` (a tensor, or lists/tuples/dicts of them) moved to ``device``; None: as is."""
    if device is None:
        return batch
    return map_tensors(lambda t: t.to(device, non_blocking=True), batch)


def _ddp_world(model: torch.nn.Module) -> tuple[int, int]:
    """(rank, world size) if ``model`` is wrapped in DistributedDataParallel, else (0, 1)."""
    if isinstance(model, DistributedDataParallel):
        import torch.distributed as tdist

        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Any, Any], Any],
               gather: Callable[[torch.Tensor], Any], indices: torch.Tensor,
               max_micro_batch: Optional[int] = None, device: Optional[torch.device] = None) -> float:
    """One parameter update on the batch ``indices``; returns the batch's mean loss.

    If the batch (this rank's share of it, under DDP) exceeds ``max_micro_batch`` the
    gradient is accumulated over k = ⌈n/max_micro_batch⌉ near-equal micro-batches, each
    loss scaled by (micro-batch size / batch size): the scaled gradients sum to the
    gradient of the batch's mean loss, so the update equals the large-batch one.

    Data parallel: wrap ``model`` in ``DistributedDataParallel`` and pass the *global*
    batch (the same ``indices`` on every rank); each rank trains on its share
    (:func:`split_share`). Each loss is scaled by (micro-batch size × world size / global
    batch size), so DDP's *average* over ranks is the gradient of the global batch's mean
    loss even when the shares differ by one. Inner micro-batches run under
    ``model.no_sync()``: one gradient all-reduce per update. A rank whose share is empty
    (a last partial batch smaller than the world size) still joins that all-reduce with a
    zero-weighted stand-in example. The loss is all-reduced before the step, so every rank
    returns the same number and all skip the step together when it is not finite.
    """
    rank, world = _ddp_world(model)
    n = len(indices)
    share = split_share(indices, rank, world)
    stand_in = len(share) == 0
    if stand_in:
        share = indices[:1]
    k = 1 if max_micro_batch is None else max(1, math.ceil(len(share) / max_micro_batch))
    parts = torch.tensor_split(share, k) if k > 1 else (share,)
    optimizer.zero_grad(set_to_none=True)
    total = None
    for i, part in enumerate(parts):
        inner = model.no_sync() if world > 1 and i < k - 1 else contextlib.nullcontext()
        with inner:
            loss = loss_fn(model, to_device(gather(part), device))
            # ∑ over ranks and parts of world·|part|/n, divided by world (DDP's mean), is 1
            if stand_in or world * len(part) != n:  # (one part on one process: the scale is 1, skip it)
                loss = loss * (0.0 if stand_in else world * len(part) / n)
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()  # on the device: no sync
    if world > 1:
        import torch.distributed as tdist

        t = total.to(torch.float64, copy=True)
        if tdist.get_backend() == "nccl":
            t = t.to(torch.device("cuda", torch.cuda.current_device()))
        else:
            t = t.cpu()
        tdist.all_reduce(t)
        total = t / world
    value = float(total)
    if not math.isfinite(value):
        return value  # the caller names the run and epoch; do not step on a NaN gradient
    optimizer.step()
    return value


def split_share(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of a global batch: sizes differ by at most one."""
    if world_size == 1:
        return batch
    q, r = divmod(len(batch), world_size)
    lo = rank * q + min(rank, r)
    return batch[lo:lo + q + (rank < r)]
