"""One update: ``train_step``, one parameter update over a (possibly huge) batch.

With gradient accumulation over micro-batches when the batch exceeds what fits in
memory, and data parallel under DistributedDataParallel. The batches themselves (fetching,
shares, micro-batches, loss weights) are runtime/batches.py's; the plan's batch sizes come
from runtime/sampler.py, its LR and momentum from runtime/scheduler.py. ``sq_norm`` is
the squared gradient norm the noise estimators read.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Optional

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

from bsadvisor.core import checks
from bsadvisor.core.errors import ArgumentTypeError
from bsadvisor.runtime.batches import loss_weight, micro_batches, rank_share, to_device, weighted
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.precision import StepRecipe


def sq_norm(tensors) -> torch.Tensor:
    """Σ |t|² over ``tensors`` in float64 (0 for none): the squared gradient norms of the noise estimators."""
    tensors = list(tensors)
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(list(torch._foreach_norm(tensors, 2, dtype=torch.float64))).square().sum()


def _ddp_dist(model: torch.nn.Module) -> Dist:
    """The process group ``model`` trains in if it is wrapped in DistributedDataParallel, else ``Dist()``."""
    if isinstance(model, DistributedDataParallel):
        return Dist(rank=tdist.get_rank(), world_size=tdist.get_world_size(), backend=str(tdist.get_backend()))
    return Dist()


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Any, Any], Any],
               gather: Callable[[torch.Tensor], Any], indices: torch.Tensor,
               max_micro_batch: Optional[int] = None, device: Optional[torch.device] = None,
               monitor=None, recipe: Optional[StepRecipe] = None) -> float:
    """One parameter update on the batch ``indices``; returns the batch's mean loss.

    If the batch (this rank's share of it, under DDP) exceeds ``max_micro_batch`` the
    gradient is accumulated over k = ⌈n/max_micro_batch⌉ near-equal micro-batches, each
    loss scaled by (micro-batch size / batch size): the scaled gradients sum to the
    gradient of the batch's mean loss, so the update equals the large-batch one.

    Data parallel: wrap ``model`` in ``DistributedDataParallel`` and pass the *global*
    batch (the same ``indices`` on every rank); each rank trains on its share
    (:func:`runtime.batches.rank_share`). Each loss is scaled by (micro-batch size × world size / global
    batch size), so DDP's *average* over ranks is the gradient of the global batch's mean
    loss even when the shares differ by one. Inner micro-batches run under
    ``model.no_sync()``: one gradient all-reduce per update. A rank whose share is empty
    (a last partial batch smaller than the world size) still joins that all-reduce with a
    zero-weighted stand-in example. The loss is all-reduced before the step, so every rank
    returns the same number and all skip the step together when it is not finite.

    ``monitor`` (a runtime.monitor.NoiseMonitor, one process only): told after each
    micro-batch's backward, so it reads the micro-batch gradients it needs from ``.grad``
    without changing them; the caller closes the update with ``monitor.end_update``.

    ``recipe`` (a runtime.precision.StepRecipe, ``StepRecipe.of(target)``): the user's
    precision and clipping. ``loss_fn`` runs under its autocast, backward takes the scaled
    loss under a GradScaler, and the step unscales, clips the global gradient norm to
    ``max_grad_norm`` and steps through the scaler; ``recipe.skipped`` then says whether the
    scaler skipped the step (inf/NaN gradients). The monitor reads the gradients before
    clipping, with the loss scale divided out.

    Long because this docstring is the update's contract; the body is one loop and a step.
    """
    _check_arguments(model, optimizer, loss_fn, gather, indices, max_micro_batch)
    dist = _ddp_dist(model)
    rank, world = dist.rank, dist.world_size
    n = len(indices)
    share, stand_in = rank_share(indices, rank, world)
    k = micro_batches(len(share), max_micro_batch)
    parts = torch.tensor_split(share, k) if k > 1 else (share,)
    recipe = recipe if recipe is not None else StepRecipe(device=device)
    scale = recipe.loss_scale  # fixed within the update (the scaler changes it in update())
    optimizer.zero_grad(set_to_none=True)
    total = None
    for i, part in enumerate(parts):
        inner = model.no_sync() if world > 1 and i < k - 1 else contextlib.nullcontext()
        with inner:
            with recipe.autocast():
                loss = loss_fn(model, to_device(gather(part), device))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ArgumentTypeError("loss_fn must return the batch's loss as a one-element tensor, got "
                                        + (f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)
                                           else type(loss).__name__), parameter="loss_fn")
            # ∑ over ranks and parts of world·|part|/n, divided by world (DDP's mean), is 1
            loss = weighted(loss, loss_weight(len(part), n, world, stand_in))
            recipe.backward(loss)
        if monitor is not None:  # .grad holds the scaled gradient: weight × loss scale
            monitor.after_backward(len(part), weight=len(part) / n * scale)
        total = loss.detach() if total is None else total + loss.detach()  # on the device: no sync
    if world > 1:
        total = dist.all_reduce(total.to(torch.float64)) / world  # the global batch's mean loss
    value = float(total)
    if not math.isfinite(value):
        recipe.skipped = False
        return value  # the caller names the run and epoch; do not step on a NaN gradient
    recipe.step(optimizer, model.parameters())
    return value


def _check_arguments(model, optimizer, loss_fn, gather, indices, max_micro_batch) -> None:
    """train_step's arguments are what it needs, or one ArgumentTypeError/UserError naming the wrong one."""
    checks.instance("model", model, torch.nn.Module, "a torch.nn.Module")
    checks.instance("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    checks.function("loss_fn", loss_fn)
    checks.function("gather", gather)
    checks.instance("indices", indices, torch.Tensor, "a 1-D tensor of example indices")
    if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise ArgumentTypeError(f"indices must be a 1-D tensor of integer example indices, got a {indices.dtype} "
                                f"tensor of shape {tuple(indices.shape)}", parameter="indices")
    checks.optional(checks.positive_int, "max_micro_batch", max_micro_batch)
