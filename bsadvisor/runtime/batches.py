"""Batches: fetching them by index, walking their structure, and cutting them into shares and micro-batches.

One function per job, used by bsadvisor's loop (runtime/step.py, runtime/train.py), the
probe and the noise monitor, and the Lightning callback (integrations/lightning/callback.py):

- ``map_tensors`` / ``batch_rows`` / ``split_batch``: the one walk over a batch's
  structure (a tensor, or lists/tuples/dicts nesting them), and what is built on it.
- ``make_gather`` / ``tensor_columns``: fetch a batch by index. For in-memory tensor
  datasets it is one ``index_select`` per tensor, which on CPU is up to twice as fast
  as a DataLoader.
- ``share_span`` / ``split_share`` / ``rank_share``: a rank's contiguous share of a global
  batch, with a stand-in example for a rank whose share is empty.
- ``micro_batches`` / ``loss_weight`` / ``weighted``: how many micro-batches an update takes,
  and the factor on each one's mean loss, so that DDP's average over ranks of the summed,
  weighted micro-batch gradients is the gradient of the global batch's mean loss.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch.utils.data import default_collate

from bsadvisor.core.errors import UserError


def map_leaves(fn: Callable[[Any], Any], batch: Any) -> Any:
    """``batch`` with ``fn`` applied to every leaf: the one walk over a batch's structure.

    A batch is lists/tuples (namedtuples too)/dicts nesting leaves; a leaf is anything else
    (a tensor, a string, a number).
    """
    if isinstance(batch, (list, tuple)):
        out = [map_leaves(fn, b) for b in batch]
        if hasattr(batch, "_fields"):  # namedtuple
            return type(batch)(*out)
        return type(batch)(out) if isinstance(batch, tuple) else out
    if isinstance(batch, dict):
        return {k: map_leaves(fn, v) for k, v in batch.items()}
    return fn(batch)


def map_tensors(fn: Callable[[torch.Tensor], Any], batch: Any) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it; anything else (a string, a number) is kept as it is."""
    return map_leaves(lambda leaf: fn(leaf) if isinstance(leaf, torch.Tensor) else leaf, batch)


def _leaves(batch: Any) -> list:
    found: list = []
    map_leaves(found.append, batch)
    return found


def batch_rows(batch: Any) -> Optional[int]:
    """Examples in a batch: the length of its first tensor (None: no tensor with a first dimension in it)."""
    return next((len(t) for t in _leaves(batch) if isinstance(t, torch.Tensor) and t.dim() > 0), None)


def split_batch(batch: Any, k: int, rows: int, who: str) -> list:
    """``batch`` as k near-equal micro-batches along the first dimension (as ``torch.tensor_split`` cuts).

    Every leaf must be a tensor of ``rows`` rows; otherwise a UserError that starts with ``who``
    (the setting that asked for the split).
    """
    for leaf in _leaves(batch):
        if not isinstance(leaf, torch.Tensor) or leaf.dim() == 0 or len(leaf) != rows:
            raise UserError(f"{who} splits batches of tensors with {rows} rows each; this "
                            f"batch holds a {type(leaf).__name__} that is not one")
    return [map_tensors(lambda t, i=i: t.tensor_split(k)[i], batch) for i in range(k)]


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
    collate = default_collate if collate is None else collate
    return lambda idx: collate([dataset[i] for i in idx.tolist()])


def share_span(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous share of a global batch of ``n``: sizes differ by at most one."""
    q, r = divmod(n, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


def split_share(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of a global batch (``share_span``); it may be empty."""
    if world_size == 1:
        return batch
    lo, hi = share_span(len(batch), rank, world_size)
    return batch[lo:hi]


def rank_share(batch: torch.Tensor, rank: int, world_size: int) -> tuple[torch.Tensor, bool]:
    """(this rank's share, stand-in): an empty share becomes the batch's first example, weighted by zero.

    A last, partial batch smaller than the world size leaves some shares empty; an empty
    batch cannot be collated, and every rank must join the update's gradient all-reduce.
    """
    share = split_share(batch, rank, world_size)
    if len(share) == 0:
        return batch[:1], True
    return share, False


def micro_batches(rows: int, max_micro_batch: Optional[int]) -> int:
    """k = ⌈rows/max_micro_batch⌉ near-equal micro-batches for a share of ``rows`` (1 without a limit)."""
    return 1 if max_micro_batch is None else max(1, math.ceil(rows / max_micro_batch))


def loss_weight(rows: int, global_batch: int, world_size: int, stand_in: bool = False) -> float:
    """The factor on the mean loss of ``rows`` examples of a rank's share of a global batch.

    world × rows / global batch: summed over a rank's micro-batches and averaged over ranks
    (DDP's mean) the factors give the global batch's mean loss, also when the shares differ
    by one; 0 for a stand-in example.
    """
    return 0.0 if stand_in else world_size * rows / global_batch


def weighted(loss: torch.Tensor, weight: float) -> torch.Tensor:
    """``loss × weight``, skipped at 1 (one micro-batch on one process: the loss stays bit for bit)."""
    return loss if weight == 1.0 else loss * weight


__all__ = ["map_tensors", "to_device", "tensor_columns", "make_gather", "split_share", "rank_share", "share_span",
           "batch_rows", "split_batch", "micro_batches", "loss_weight", "weighted"]
