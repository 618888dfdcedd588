"""The gradient-noise estimators in torch, shared by the probe and the noise monitor.

A *draw* at fixed θ gives two squared gradient norms, |G_b|² of small batches and |G_B|²
of a big one; :mod:`bsadvisor.core.noise` turns draws into B_simple = tr(Σ)/|G|² with its
interval (McCandlish et al. 1812.06162, App. A). This module computes the draws from
gradients, whichever way the caller gets them (``backward`` into ``.grad`` in the probe,
``torch.autograd.grad`` in the monitor, which must leave ``.grad`` alone):

- :func:`micro_batch_draw`: k micro-batches of b at the same θ, summed on the device
  (:class:`MicroBatchSums`); |G_b|² is the mean of their squared norms, |G_B|² the squared
  norm of their mean (App. A.1). The probe's micro-batch and replica estimators, its
  loss-reduction check and the monitor's extra draws all take this one.
- :class:`PerExampleGradients`: per-example gradients with torch.func (b = 1) and
  :func:`per_example_draw`.
- :class:`AccumulatedDraws`: the micro-batch gradients of an accumulated update, read as
  the changes in ``.grad`` (the monitor's draws at no extra cost).
- :class:`ReplicaTally`: each rank's gradient before DDP's all-reduce against the averaged
  one (the replica estimator, as AdaptDL uses it).

The callers decide when to draw, on which examples, and what a failure says; here are only
the gradients and their norms. Norms and sums are in float64.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional

import torch
import torch.distributed as tdist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.func import functional_call, grad, vmap

from bsadvisor.runtime.batches import map_tensors
from bsadvisor.runtime.step import sq_norm


def dense(params, grads) -> list:
    """``grads`` with a zero tensor for each parameter that got none (unused in the loss)."""
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def grads_of(params) -> list:
    """The parameters' ``.grad`` (zeros where there is none)."""
    return dense(params, [p.grad for p in params])


class MicroBatchSums:
    """The running sums of one micro-batch draw, kept on the gradients' device until read.

    ``total``: the sum of the micro-batch gradients (float64); ``norms``: every micro-batch's
    per-parameter norms; ``losses``: their losses when given.
    """

    def __init__(self, params):
        self.total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        self.norms: list = []
        self.losses: list = []
        self.count = 0

    def add(self, grads: list, loss: Optional[torch.Tensor] = None) -> None:
        self.norms.extend(torch._foreach_norm(grads, 2, dtype=torch.float64))
        torch._foreach_add_(self.total, grads)
        if loss is not None:
            self.losses.append(loss.detach())
        self.count += 1

    def sq_norm_sum(self) -> torch.Tensor:
        """Σ_j |g_j|² over the micro-batches (a device scalar)."""
        return torch.stack(self.norms).square().sum()

    def loss_sum(self) -> torch.Tensor:
        return torch.stack(self.losses).double().sum()

    def mean(self) -> list:
        """The micro-batches' mean gradient: ``total`` divided by their count, in place (call once)."""
        torch._foreach_div_(self.total, float(self.count))
        return self.total

    def draw(self) -> tuple[float, float, float]:
        """(|G_b|², |G_B|², the losses' sum, 0 without losses) in one read-back (each ``.item()`` would wait
        for the device)."""
        values = [self.sq_norm_sum() / self.count, sq_norm(self.mean())]
        values = torch.stack(values + ([self.loss_sum()] if self.losses else [])).tolist()
        return values[0], values[1], values[2] if self.losses else 0.0


def micro_batch_draw(params, count: int,
                     gradient: Callable[[int], tuple[list, Optional[torch.Tensor]]]) -> MicroBatchSums:
    """The sums of ``count`` micro-batch gradients at fixed θ; ``gradient(j)``: micro-batch j's
    (gradients, loss or None). Losses are checked by the caller, all at once."""
    sums = MicroBatchSums(params)
    for j in range(count):
        sums.add(*gradient(j))
    return sums


class PerExampleGradients:
    """Per-example gradients with torch.func (functional_call + vmap + grad) on a copy of the model.

    A copy, so the model's own ``.grad`` and autograd state stay untouched. A batch of one
    has no BatchNorm statistics: the callers refuse models with BatchNorm.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Any, Any], Any]):
        self.model = copy.deepcopy(model)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        model_copy = self.model

        def loss_of_one(params, buffers, item):
            single = map_tensors(lambda t: t.unsqueeze(0), item)
            return loss_fn(_Functional(model_copy, params, buffers, functional_call), single)

        self._grads = vmap(grad(loss_of_one), in_dims=(None, None, 0), randomness="different")

    def __call__(self, batch) -> list:
        """Each trainable parameter's per-example gradients, shaped [B, *parameter shape]."""
        params = {n: p.detach() for n, p in self.model.named_parameters() if n in self.names}
        grads = self._grads(params, self.buffers, batch)
        return [grads[n] for n in self.names]


def per_example_draw(grads: list, size: int) -> tuple[float, float]:
    """(|G_b|², |G_B|²) with b = 1 from ``size`` per-example gradients: the mean squared norm of
    the per-example gradients and the squared norm of their mean."""
    small = sum(float(torch.linalg.vector_norm(g.reshape(size, -1), dim=1, dtype=torch.float64).square().sum())
                for g in grads) / size
    big = sum(float(torch.linalg.vector_norm(g.to(torch.float64).mean(0)).square()) for g in grads)
    return small, big


class _Functional(torch.nn.Module):
    """Calls the copied model with given parameters, so the user's loss_fn(model, batch) works under vmap."""

    def __init__(self, model, params, buffers, functional_call):
        super().__init__()
        object.__setattr__(self, "_m", model)
        object.__setattr__(self, "_state", {**buffers, **params})
        object.__setattr__(self, "_fc", functional_call)

    def forward(self, *args, **kwargs):
        return self._fc(self._m, self._state, args, kwargs)


class AccumulatedDraws:
    """The micro-batch gradients of an accumulated update, read from ``.grad`` at no extra cost.

    Each micro-batch's gradient is the change in the accumulated ``.grad`` (one copy and one
    squared norm per micro-batch), divided by the factor its loss was scaled by; the
    gradient after the last one is the update's. An update of two or more micro-batches
    is one draw.
    """

    def __init__(self, params):
        self.params = params
        self.parts: list[tuple[int, Optional[float], float]] = []  # (size, weight, squared norm of the change)
        self.prev: Optional[list] = None

    def after_backward(self, size: int, weight: Optional[float] = None) -> None:
        grads = grads_of(self.params)
        diff = grads if self.prev is None else torch._foreach_sub(grads, self.prev)
        self.parts.append((size, weight, float(sq_norm(diff))))
        self.prev = [g.detach().clone() for g in grads]

    def end_update(self, grad_scale: float = 1.0) -> Optional[tuple[float, float, float, int]]:
        """The update's draw (|G_b|², |G_B|², the effective b, B), or None for one micro-batch; starts the next.

        A micro-batch of ``size`` without a weight was scaled by size/batch, as gradient
        accumulation does. ``grad_scale``: a GradScaler's loss scale, which the accumulated
        ``.grad`` carries (the weights given with each micro-batch include it). A draw whose
        gradients are not finite (an fp16 overflow the scaler skips) is dropped.
        """
        parts, prev = self.parts, self.prev
        self.parts, self.prev = [], None
        if len(parts) < 2:
            return None
        total = sum(size for size, _, _ in parts)
        sq = [norm / ((w if w is not None else size / total) ** 2) for size, w, norm in parts]
        b_eff = len(parts) / sum(1.0 / size for size, _, _ in parts)  # E|G_b|² has the mean of 1/b_j (eq. 17)
        draw = sum(sq) / len(sq), float(sq_norm(prev)) / grad_scale ** 2, b_eff, total
        return draw if math.isfinite(draw[0] + draw[1]) else None


class ReplicaTally:
    """Under DDP: each rank's gradient before the all-reduce (a small batch: the rank's share)
    against the averaged ``.grad`` after it (the big batch), the replica estimator of App. A."""

    def __init__(self, params):
        self.params = params
        self.local: Optional[torch.Tensor] = None

    def comm_hook(self, process_group, bucket):
        """Adds the bucket's squared norm (this rank's gradient) to the update's tally, then all-reduces
        as DDP's default hook does."""
        local = bucket.buffer().detach().to(torch.float64).square().sum()  # on the device: no sync here
        self.local = local if self.local is None else self.local + local
        return allreduce_hook(process_group, bucket)

    def end_update(self, batch_size: int, share: int, grad_scale: float = 1.0,
                   big_sq_norm: Optional[float] = None) -> Optional[tuple[float, float, float, int]]:
        """The update's draw, the same on every rank (one all-reduce of three numbers), or None under two ranks.

        Each rank's gradient before the all-reduce is world·share/batch × its share's mean
        gradient (the loss scaling of runtime.step.train_step); ``.grad`` after it is the
        batch's mean gradient. ``grad_scale``: a GradScaler's loss scale, which the ranks'
        gradients carry; ``big_sq_norm``: the averaged gradient's squared norm (unscaled, before
        clipping) when ``.grad`` no longer holds it.
        """
        local, self.local = self.local, None
        world = tdist.get_world_size()
        tally = torch.zeros(3, dtype=torch.float64)
        if share > 0 and local is not None:
            weight = world * share / batch_size
            tally += torch.tensor([float(local) / (weight * grad_scale) ** 2, 1.0, 1.0 / share],
                                  dtype=torch.float64)
        tdist.all_reduce(tally)
        ranks, inverse = float(tally[1]), float(tally[2])
        if ranks < 2:
            return None
        big = float(sq_norm(grads_of(self.params))) if big_sq_norm is None else big_sq_norm
        return float(tally[0]) / ranks, big, ranks / inverse, batch_size
