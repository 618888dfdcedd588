"""Calling the user's code during the probe: loss, backward, optimizer step (``guarded_step``: all three).

The probe runs the user's ``loss_fn``, backward and optimizer hundreds of times (warmup,
noise draws, memory trials, throughput rungs). A failure there is one UserError line
naming the step ("loss_fn raised ValueError at noise draw 3, micro-batch 2: ..."). An
out-of-memory error becomes :class:`bsadvisor.core.memory.OutOfMemory` where the caller
handles it (``oom=True``: memory trials, the throughput ladder); elsewhere it is a
UserError that says to lower --batch-size.
"""
from __future__ import annotations

import contextlib

from typing import Iterable, Optional

import torch

from bsadvisor.core.errors import UserError, first_line, user_code
from bsadvisor.core.memory import OutOfMemory, is_oom
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.precision import StepRecipe


def failure(exc: BaseException, what: str, where: str, oom: bool) -> Exception:
    """The exception to raise for a failure of the user's code: out-of-memory errors become
    :class:`OutOfMemory` when the caller handles them (``oom``), everything else one
    UserError line naming the step."""
    if is_oom(exc):
        if oom:
            return OutOfMemory(f"{type(exc).__name__}: {exc}")
        return UserError(f"ran out of memory at {where} ({type(exc).__name__}: {first_line(exc)}); "
                         "lower --batch-size or free memory")
    return UserError(f"{what} {type(exc).__name__} at {where}: {first_line(exc)}")


def _guard(what: str, where: str, oom: bool) -> user_code:
    """The user_code guard of a probe step: a failure is :func:`failure`'s exception (raised without the failed
    step's frames, so its tensors and their memory are freed)."""
    return user_code(lambda exc: failure(exc, what, where, oom))


def loss_of(target, model, batch, where: str, check_finite: bool = True, oom: bool = False,
            recipe: Optional[StepRecipe] = None) -> torch.Tensor:
    """``target.loss_fn(model, batch)`` (under the recipe's autocast), checked to be a scalar tensor with grad
    (and finite)."""
    with _guard("loss_fn raised", where, oom), (recipe.autocast() if recipe is not None
                                                 else contextlib.nullcontext()):
        loss = target.loss_fn(model, batch)
    if not isinstance(loss, torch.Tensor):
        raise UserError(f"loss_fn returned {type(loss).__name__} at {where}, not a tensor; "
                        "return the mean loss as a scalar tensor")
    if loss.numel() != 1:
        raise UserError(f"loss_fn returned a tensor of shape {tuple(loss.shape)} at {where}, not a scalar; "
                        "reduce it with .mean()")
    if not loss.requires_grad:
        raise UserError(f"loss_fn returned a tensor without grad at {where}; compute it from the model's output")
    if check_finite and not torch.isfinite(loss.detach()).all():
        raise UserError(f"loss is not finite ({float(loss.detach().reshape(()))}) at {where}; "
                        "lower --lr or check the data")
    return loss.reshape(())


def backward(loss: torch.Tensor, where: str, oom: bool = False, scale: float = 1.0,
             recipe: Optional[StepRecipe] = None) -> None:
    """``loss.backward()``: of ``loss`` × ``scale`` when given (an fp16 loss scale: the gradients carry it), or
    through the recipe's GradScaler (a training step's)."""
    with _guard("backward raised", where, oom):
        if recipe is not None and recipe.scaler is not None:
            recipe.backward(loss)
        elif scale != 1.0:
            (loss * scale).backward()
        else:
            loss.backward()


def optimizer_step(optimizer, where: str, oom: bool = False, recipe: Optional[StepRecipe] = None,
                   params=None) -> None:
    """``optimizer.step()``, or the recipe's step (unscale, clip, step through the scaler)."""
    with _guard("the optimizer step raised", where, oom):
        if recipe is None:
            optimizer.step()
        else:
            recipe.step(optimizer, params)


def guarded_step(target, model, optimizer, batch, where: str, check: bool = True, dist: Optional[Dist] = None,
                 oom: bool = False, recipe: Optional[StepRecipe] = None) -> torch.Tensor:
    """One optimizer step of the probe on ``batch``, each call into the user's code guarded; returns the loss.

    ``check``: also refuse a non-finite loss; ``oom``: let out-of-memory through as
    :class:`OutOfMemory`; ``dist``: average the gradients over the ranks before the step;
    ``recipe``: the target's precision and clipping (autocast, loss scale, clip, scaler step).

    This is deliberately not the training loop's update (:func:`bsadvisor.runtime.step.train_step`),
    which differs in what the probe needs: that one takes dataset indices and a gather (here the batch is
    already drawn and on the device), expects a DistributedDataParallel-wrapped model (the
    probe averages the gradients of the plain model with ``Dist.average_grads``), reads
    the loss back to the host every step (a device sync that would distort the throughput
    timings), silently skips the step on a non-finite loss (the probe stops with a message
    naming the step), and lets the user's exceptions and out-of-memory errors through
    unchanged (the probe needs them as one UserError line, or as OutOfMemory for the
    memory search).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(target, model, batch, where, check_finite=check, oom=oom, recipe=recipe)
    backward(loss, where, oom, recipe=recipe)
    if dist is not None and dist.enabled:
        dist.average_grads([p for p in model.parameters() if p.requires_grad])
    optimizer_step(optimizer, where, oom, recipe, model.parameters())
    return loss


def clear_grads(params: Iterable[torch.Tensor]) -> None:
    for p in params:
        p.grad = None


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; timings need the end)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
