"""One training step over a batch, and the plumbing around it.

- ``train_step``: one parameter update over a (possibly huge) batch, with gradient
  accumulation over micro-batches when the batch exceeds what fits in memory, and
  data parallel under DistributedDataParallel.
- ``map_tensors``: the one walk over a batch's tensors (``to_device`` is built on it).
- ``make_gather`` / ``tensor_columns``: fetch a batch by index. For in-memory tensor
  datasets it is one ``index_select`` per tensor, which on CPU is up to twice as fast
  as a DataLoader.
- ``split_share``: a rank's contiguous share of a global batch.
- ``resolve_device``: ``--device`` as a torch.device.

The plan's batch sizes come from runtime/sampler.py, its LR and momentum from
runtime/scheduler.py.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from bsadvisor.core.errors import UserError
from bsadvisor.runtime.distributed import Dist


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


def split_share(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of a global batch: sizes differ by at most one."""
    if world_size == 1:
        return batch
    q, r = divmod(len(batch), world_size)
    lo = rank * q + min(rank, r)
    return batch[lo:lo + q + (rank < r)]


def sq_norm(tensors) -> torch.Tensor:
    """Σ |t|² over ``tensors`` in float64 (0 for none): the squared gradient norms of the noise estimators."""
    tensors = list(tensors)
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(list(torch._foreach_norm(tensors, 2, dtype=torch.float64))).square().sum()


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


def _ddp_dist(model: torch.nn.Module) -> Dist:
    """The process group ``model`` trains in if it is wrapped in DistributedDataParallel, else ``Dist()``."""
    if isinstance(model, DistributedDataParallel):
        import torch.distributed as tdist

        return Dist(rank=tdist.get_rank(), world_size=tdist.get_world_size(), backend=str(tdist.get_backend()))
    return Dist()


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Any, Any], Any],
               gather: Callable[[torch.Tensor], Any], indices: torch.Tensor,
               max_micro_batch: Optional[int] = None, device: Optional[torch.device] = None,
               monitor=None) -> float:
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

    ``monitor`` (a runtime.monitor.NoiseMonitor, one process only): told after each
    micro-batch's backward, so it reads the micro-batch gradients it needs from ``.grad``
    without changing them; the caller closes the update with ``monitor.end_update``.
    """
    dist = _ddp_dist(model)
    rank, world = dist.rank, dist.world_size
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
        if monitor is not None:
            monitor.after_backward(len(part), weight=len(part) / n)
        total = loss.detach() if total is None else total + loss.detach()  # on the device: no sync
    if world > 1:
        total = dist.all_reduce(total.to(torch.float64)) / world  # the global batch's mean loss
    value = float(total)
    if not math.isfinite(value):
        return value  # the caller names the run and epoch; do not step on a NaN gradient
    optimizer.step()
    return value
