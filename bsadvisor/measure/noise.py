"""Gradient noise at fixed θ: the draws, by an estimator chosen once (docs/probe.md, step 3).

A *draw* is a fresh batch at the same θ that gives two squared gradient norms: |G_b|² of a
small batch b and |G_B|² of a big batch B. :mod:`bsadvisor.core.noise` turns the draws into
B_simple = tr(Σ)/|G|² (docs/concepts.md eq. 10) with the unbiased estimates of eqs. 11–12
and a 90% interval (McCandlish et al. 1812.06162, App. A). The estimators, each a small
class with one ``draw()``:

- :class:`MicroBatchDraws` (``--estimator microbatch``): k micro-batches of b from one
  batch of B = k·b; |G_b|² is the mean of their squared norms, |G_B|² the squared norm
  of their mean (App. A.1);
- :class:`TwoBatchDraws`: independent batches of b and B;
- :class:`PerExampleDraws`: per-example gradients with torch.func (b = 1);
- :class:`ReplicaDraws`: under torchrun, the micro-batch estimator spread over the ranks,
  pooled by one all-reduce per draw (the replica estimator of App. A folded into the
  micro-batch one; docs/distributed.md).

The gradients and their norms are computed by :mod:`bsadvisor.runtime.gradient_noise`, the
estimators the noise monitor uses too; these classes choose b and B from the probe's
options, take the bench's batches, name the step that failed and read the budget's clock.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bsadvisor.core import noise as noise_stats
from bsadvisor.core.errors import UserError, user_code
from bsadvisor.core.probe_options import MAX_DRAWS
from bsadvisor.core.probe_result import NoiseResult
from bsadvisor.measure.bench import Bench, Budget, over_ranks
from bsadvisor.measure.step import backward, clear_grads, loss_of
from bsadvisor.runtime.gradient_noise import (MicroBatchSums, PerExampleGradients, grads_of, micro_batch_draw,
                                              per_example_draw)
from bsadvisor.runtime.batches import map_tensors
from bsadvisor.runtime.step import sq_norm
from bsadvisor.targets.target import batchnorm_layers

NOISE_SHARE = 0.6  # of what is left of the budget after the warmup


# --------------------------------------------------------------------------- gradients
def check_finite(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise UserError(f"gradient is not finite at {where}; lower --lr or check the model for overflow")


def gradient_of(bench: Bench, rows, where: str, check: bool = False) -> tuple[list, torch.Tensor]:
    """(the mean loss's gradient on ``rows``, the loss) by backward into ``.grad``, as the user trains.

    The loss runs under the target's autocast. Under fp16 ("16-mixed") the backward takes
    the loss × the bench's loss scale (the warmup's GradScaler's) and the gradient is
    divided by it: unscaled, before any clipping. A gradient that overflows there halves
    the scale and is computed again, as the scaler backs off.
    """
    while True:
        clear_grads(bench.params)
        loss = loss_of(bench.target, bench.model, rows, where, check_finite=check, recipe=bench.recipe)
        scale = bench.loss_scale
        backward(loss, where, scale=scale)
        grads = grads_of(bench.params)
        if scale == 1.0:
            return grads, loss
        if math.isfinite(float(sq_norm(grads))) or scale < 2.0:
            return list(torch._foreach_div(grads, scale)), loss
        bench.loss_scale = scale / 2


def micro_batch_sums(bench: Bench, batch, count: int, size: int, where: str, suffix: str = "") -> MicroBatchSums:
    """The micro-batch draw (runtime.gradient_noise) on ``count`` micro-batches of ``size`` rows of
    ``batch`` at fixed θ, each by backward into ``.grad`` (:func:`gradient_of`). Losses are checked by the
    caller, all at once."""
    def gradient(j: int):
        step = f"{where}, micro-batch {j + 1}{suffix}"
        rows = map_tensors(lambda t: t[j * size:(j + 1) * size], batch)
        return gradient_of(bench, rows, step)

    return micro_batch_draw(bench.params, count, gradient)


# --------------------------------------------------------------------------- estimators
@dataclass(frozen=True)
class Draw:
    small: float              # |G_b|²
    big: float                # |G_B|²
    late: tuple[bool, bool]   # (past the noise phase's deadline, past the budget's), the same on every rank


class Estimator:
    """One noise estimator: ``draw(index)`` -> :class:`Draw` at fixed θ, with b and B in
    ``micro_batch`` and ``big_batch``. ``late()``: this rank's clock, as two flags (past the
    noise phase's deadline, past the budget's), read at the end of every draw."""

    micro_batch: int
    big_batch: int

    def __init__(self, bench: Bench, late: Callable[[], list]):
        self.bench = bench
        self.late = late

    def draw(self, index: int) -> Draw:
        raise NotImplementedError

    def _finish(self, small: float, big: float, where: str) -> Draw:
        check_finite(small + big, where)
        past_phase, past_budget = self.late()
        return Draw(small, big, (past_phase > 0, past_budget > 0))


class MicroBatchDraws(Estimator):
    """k micro-batches of b from one batch of B = k·b, all at the same θ (App. A.1)."""

    def __init__(self, bench: Bench, late):
        super().__init__(bench, late)
        batch, wanted = bench.config.batch_size, bench.config.micro_batches
        self.micro_batch = max(1, batch // wanted)
        self.micro_batches = max(2, min(wanted, batch // self.micro_batch))
        self.big_batch = self.micro_batches * self.micro_batch

    def draw(self, index: int) -> Draw:
        count, size = self.micro_batches, self.micro_batch
        where = f"noise draw {index + 1}"
        sums = micro_batch_sums(self.bench, self.bench.batches.next(count * size), count, size, where)
        small, big, loss_sum = sums.draw()
        if not math.isfinite(loss_sum):
            bad = next(j for j, v in enumerate(torch.stack(sums.losses).tolist()) if not math.isfinite(v))
            raise UserError(f"loss is not finite at noise draw {index + 1}, micro-batch {bad + 1}; "
                            "lower --lr or check the data")
        return self._finish(small, big, where)


class TwoBatchDraws(Estimator):
    """Independent batches of b and B at the same θ (McCandlish et al. App. A)."""

    def __init__(self, bench: Bench, late):
        super().__init__(bench, late)
        self.micro_batch = max(1, bench.config.batch_size // bench.config.micro_batches)
        self.big_batch = bench.config.batch_size

    def draw(self, index: int) -> Draw:
        norms = []
        for size, name in ((self.micro_batch, "small"), (self.big_batch, "big")):
            where = f"noise draw {index + 1}, {name} batch"
            grads, _ = gradient_of(self.bench, self.bench.batches.next(size), where, check=True)
            norms.append(float(sq_norm(grads)))
        return self._finish(norms[0], norms[1], f"noise draw {index + 1}")


class PerExampleDraws(Estimator):
    """Per-example gradients with torch.func (functional_call + vmap + grad) on a copy of the model.

    b = 1: |G_b|² is the mean squared norm of the B per-example gradients, |G_B|² the
    squared norm of their mean. A batch of one has no BatchNorm statistics, so BatchNorm
    is refused.
    """

    def __init__(self, bench: Bench, late):
        super().__init__(bench, late)
        self.micro_batch, self.big_batch = 1, bench.config.batch_size
        if batchnorm_layers(bench.model):
            raise UserError("the per-example estimator cannot handle BatchNorm (a batch of one has no statistics); "
                            "use --estimator microbatch")
        if bench.target.precision == "16-mixed":
            raise UserError("the per-example estimator has no fp16 loss scaling (precision '16-mixed'); "
                            "use --estimator microbatch")
        self.per_example_grads = PerExampleGradients(bench.model, bench.target.loss_fn)

    def grads(self, batch, where: str) -> list:
        """Each trainable parameter's per-example gradients, shaped [B, *parameter shape]."""
        with user_code(lambda exc: f"per-example gradients failed at {where} ({type(exc).__name__}: {exc}); "
                                   "use --estimator microbatch"), self.bench.recipe.autocast():
            return self.per_example_grads(batch)

    def draw(self, index: int) -> Draw:
        where = f"noise draw {index + 1}"
        small, big = per_example_draw(self.grads(self.bench.batches.next(self.big_batch), where), self.big_batch)
        return self._finish(small, big, where)


class ReplicaDraws(Estimator):
    """Under torchrun: each rank computes its own micro-batches and one all-reduce pools them.

    Each of the world_size ranks takes ``micro_batches`` micro-batches of b (together about
    the global batch); |G_b|² is the mean over all world_size·micro_batches micro-batch
    squared norms and |G_B|² the squared norm of the all-reduced mean gradient (B =
    world_size·micro_batches·b). The clocks ride in the same all-reduce, so that all ranks
    take the same stop decision (any rank late: all stop).
    """

    def __init__(self, bench: Bench, late):
        super().__init__(bench, late)
        batch, world = bench.config.batch_size, bench.dist.world_size
        self.micro_batches = max(1, min(bench.config.micro_batches // world, batch // world))
        self.micro_batch = max(1, batch // (world * self.micro_batches))
        self.big_batch = world * self.micro_batches * self.micro_batch

    def draw(self, index: int) -> Draw:
        count, size, dist = self.micro_batches, self.micro_batch, self.bench.dist
        sums = micro_batch_sums(self.bench, self.bench.batches.next(count * size), count, size,
                                f"noise draw {index + 1}", f" on rank {dist.rank}")
        flags = [float(x) for x in self.late()]
        local = torch.stack([sums.sq_norm_sum(), sums.loss_sum()]).cpu()
        tail = torch.cat([local, torch.tensor(flags, dtype=torch.float64)])
        flat = torch.cat([t.reshape(-1) for t in sums.total] + [tail.to(sums.total[0].device)])
        flat = dist.all_reduce(flat)  # one collective per draw: gradient sum, norm sum, loss sum, clocks
        pooled = count * dist.world_size
        mean_grad = flat[:-tail.numel()] / pooled
        tail = flat[-tail.numel():].cpu()
        small = float(tail[0]) / pooled
        big = float(mean_grad.square().sum())
        if not math.isfinite(float(tail[1])):  # the same verdict on every rank
            raise UserError(f"loss is not finite at noise draw {index + 1} on some rank; lower --lr or check the data")
        check_finite(small + big, f"noise draw {index + 1}")
        return Draw(small, big, (float(tail[2]) > 0, float(tail[3]) > 0))


def make_estimator(bench: Bench, late: Callable[[], list]) -> Estimator:
    """The estimator of ``--estimator`` (only the micro-batch one, spread over the ranks, under torchrun)."""
    if bench.dist.enabled:
        return ReplicaDraws(bench, late)
    kinds = {"microbatch": MicroBatchDraws, "two-batch": TwoBatchDraws, "per-example": PerExampleDraws}
    return kinds[bench.config.estimator](bench, late)


# --------------------------------------------------------------------------- the phase
def measure_noise(bench: Bench, budget: Budget) -> NoiseResult:
    """Draw until B_simple's interval is within ±target_rel_ci or the phase's share is spent.

    The phase gets NOISE_SHARE of what is left of the budget, and exactly ``draws`` draws
    when they are fixed. Then the loss-reduction check (:func:`sum_reduction_warning`).
    The result's ``sqrt_table`` is left empty: it stops at the memory cap, measured later.
    """
    config = bench.config
    started = time.perf_counter()
    phase_deadline = budget.phase_deadline(NOISE_SHARE, started)

    def late() -> list:
        now = time.perf_counter()
        return [float(now >= phase_deadline), float(now >= budget.deadline)]

    estimator = make_estimator(bench, late)
    stats = _draw_until_done(bench, estimator, started, phase_deadline)
    examples = int(over_ranks(bench.dist, bench.batches.examples))
    seconds = time.perf_counter() - started
    warning = sum_reduction_warning(bench)
    if any(True for _ in bench.model.buffers()):
        bench.rewind()
    bench.warn(warning)
    # √(B_simple/B): the gradient's relative noise at the batch (eq. 9)
    relative_noise = math.sqrt(stats.b_simple / config.batch_size) if stats.usable else None
    return NoiseResult(b_simple=stats.b_simple, ci90=stats.ci90, trace_sigma=stats.trace_sigma,
                       grad_sq_norm=stats.grad_sq_norm, examples=examples, draws=stats.draws,
                       micro_batch=estimator.micro_batch, big_batch=estimator.big_batch, ci_kind=stats.ci_kind,
                       converged=stats.rel_halfwidth <= config.target_rel_ci,
                       relative_noise=relative_noise, seconds=seconds)


def _draw_until_done(bench: Bench, estimator: Estimator, started: float,
                     phase_deadline: float) -> noise_stats.NoiseStats:
    """The draws and their statistics (core.noise.estimate), within the limits of measure_noise."""
    config = bench.config
    has_buffers = any(True for _ in bench.model.buffers())
    small, big = [], []
    stats = None

    def estimate() -> noise_stats.NoiseStats:
        return noise_stats.estimate(small, big, estimator.micro_batch, estimator.big_batch,
                                    dataset_size=config.dataset_size)

    limit = config.max_draws if config.max_draws is not None else MAX_DRAWS
    while len(small) < limit:
        draw = estimator.draw(len(small))
        if has_buffers:
            bench.rewind()  # buffers (BatchNorm running stats) back to θ's
        small.append(draw.small)
        big.append(draw.big)
        count = len(small)
        now = time.perf_counter()
        past_phase, past_budget = draw.late
        if config.draws is not None:  # a fixed number of draws: the clock decides nothing, but bounds the time
            if past_budget and count < config.draws:
                raise UserError(f"draws {config.draws} cannot be taken within budget_seconds "
                                f"{config.budget_seconds:g} ({count} of them used the whole budget); lower draws to "
                                f"about {max(2, count // 2)} or raise budget_seconds",
                                parameters=("draws", "budget_seconds"))
            bench.progress("noise", count / config.draws)
            continue
        if count >= config.min_draws:
            stats = estimate()
            rel = stats.rel_halfwidth
            bench.progress("noise", min(1.0, max((now - started) / max(phase_deadline - started, 1e-9),
                                                 (config.target_rel_ci / rel) ** 2 if rel > 0 else 1.0)))
            if rel <= config.target_rel_ci or past_phase:
                break
        elif past_budget:
            break
    clear_grads(bench.params)
    if stats is None or stats.draws != len(small):
        if len(small) < 2:
            raise UserError("the budget ran out before two noise draws; raise --budget-seconds")
        stats = estimate()
    return stats


# --------------------------------------------------------------------------- loss-reduction check
def sum_reduction_warning(bench: Bench) -> Optional[str]:
    """A warning if ``loss_fn`` sums over the batch instead of averaging, else None.

    For a mean loss the gradient of a batch is the mean of the gradients of its k equal
    micro-batches; for a summed loss it is their sum, k times larger. So the ratio
    |∇L(batch)| / |mean of the micro-batch gradients| is 1 for a mean loss (up to batch
    effects such as BatchNorm) and k for a sum; above √k the loss is called sum-reduced.
    A summed loss scales the gradient with the batch, which breaks the assumptions behind
    B_simple's estimators (E|G_b|² = |G|² + tr(Σ)/b holds for mean gradients), the
    temperature lr·N/B (eq. 2) and every LR the advice derives from it.
    """
    batch = bench.config.local_batch
    if batch < 2:
        return None
    count = max(2, min(bench.config.micro_batches, batch))
    size = batch // count
    where = "the loss-reduction check"
    rows = bench.batches.next(count * size)
    sums = micro_batch_sums(bench, rows, count, size, where)
    full = float(sq_norm(gradient_of(bench, rows, where)[0]))
    clear_grads(bench.params)
    mean_micro = float(sq_norm(sums.mean()))
    if not (math.isfinite(full) and math.isfinite(mean_micro) and mean_micro > 0):
        return None
    ratio = math.sqrt(full / mean_micro)
    if ratio <= math.sqrt(count):
        return None
    return (f"loss_fn looks sum-reduced: the gradient of a batch of {count * size} is {ratio:.1f}× the mean "
            f"gradient of its {count} micro-batches (1× for a mean loss, {count}× for a sum); bsadvisor assumes "
            "loss_fn returns the mean loss over the batch, so B_simple, the temperature and the advised LRs are off: "
            "reduce with .mean()")
