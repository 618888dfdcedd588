"""NoiseMonitor: the gradient noise scale B_simple during training, with its 90% interval.

The probe measures B_simple once, near initialisation; it grows as training proceeds
(docs/concepts.md §12). The monitor measures it along the run with the probe's own
estimators: the draws of :mod:`bsadvisor.runtime.gradient_noise` and the statistics of
:mod:`bsadvisor.core.noise` (McCandlish et al. 1812.06162, App. A, with the finite-data
correction of eq. 17). This module only schedules them, in one of three ways:

- **From gradient accumulation, at no extra cost.** A loop that accumulates k micro-batch
  gradients already has them: call :meth:`NoiseMonitor.after_backward` after each
  micro-batch's ``backward()``. The micro-batch gradient is the change in the accumulated
  ``.grad`` (one copy and one squared norm per micro-batch); the gradient after the last
  one is the update's. Each update with two or more micro-batches is one draw; every
  ``window`` draws give one point.
- **A few extra draws.** :meth:`NoiseMonitor.maybe_measure` (once per update, before the
  step) takes ``draws`` fresh batches from the data set with the monitor's own random
  generator, each split in ``micro_batches`` micro-batches, at the current parameters. It
  measures only when the time it has spent stays within ``overhead`` (default 5%) of the
  training time seen so far, or every ``every`` updates when that is given.
- **Under torchrun, from the ranks' gradients.** :meth:`NoiseMonitor.ddp_comm_hook` reads
  each rank's gradient before DDP's all-reduce (a small batch: the rank's share) and
  :meth:`NoiseMonitor.end_replica_update` pairs it with the averaged one (the big batch):
  the replica estimator of McCandlish et al. App. A, as AdaptDL uses it.

Either way the training trajectory is untouched: gradients come from ``torch.autograd.grad``
(``.grad`` is never written), BatchNorm buffers and every random stream (Python, NumPy,
torch, CUDA) are put back after the extra draws, and the training sampler is never
touched (the monitor draws its batches with a generator of its own).

Each point records the sample position, B_simple with its interval and kind, and the
setting (LR, momentum, batch) it was measured at, which is what turns a trace into the
noise model of convert-schedule and advise (``--noise-trace``; core.noise_model, eq. 16).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import scipy.special  # noqa: F401  (the interval's t quantile: loaded here, never on the monitor's clock)
import torch

from bsadvisor.core import noise as noise_stats
from bsadvisor.core import checks
from bsadvisor.core.errors import ArgumentTypeError, UserError
from bsadvisor.core.fileio import json_safe, write_json
from bsadvisor.core.noise_model import TRACE_SCHEMA
from bsadvisor.runtime import rng
from bsadvisor.runtime.gradient_noise import AccumulatedDraws, ReplicaTally, dense, micro_batch_draw
from bsadvisor.runtime.batches import make_gather, to_device
from bsadvisor.runtime.documents import NoisePoint
from bsadvisor.runtime.precision import StepRecipe, unscaled_grads


@dataclass(frozen=True)
class MonitorSettings:
    """How often and how much the monitor measures, checked once; the defaults are written here only.

    ``draws`` draws of ``micro_batches`` micro-batches per measurement; ``big_batch``: examples
    per extra draw (default: the training batch or about the last estimate, at least 64 and at
    most N; :meth:`NoiseMonitor._auto_big_batch`). ``every``: measure every that many updates
    instead of within ``overhead``, the share of the training time the extra draws may take.
    ``window``: accumulation or replica draws per point. ``seed``: the monitor's own generator.
    ``spread``: when the run's length is known (``train_plan`` passes it), the budgeted extra
    draws come at about this many evenly spaced places. ``min_points``: with the run's length
    known, at least this many points over the run even where the budget would wait (each at
    the smallest draw): a short run still gets a trace, at some cost over ``overhead``.
    """

    draws: int = 8
    micro_batches: int = 8
    big_batch: Optional[int] = None
    every: Optional[int] = None
    overhead: float = 0.05
    window: int = 16
    seed: int = 0
    spread: int = 10
    min_points: int = 0

    def __post_init__(self):
        for name in ("draws", "micro_batches", "window", "spread", "min_points", "big_batch", "every", "seed"):
            checks.optional(checks.integer, f"the noise monitor's {name}", getattr(self, name),
                            low=0 if name in ("min_points", "seed") else 1)
        checks.number("the noise monitor's overhead", self.overhead)
        if self.draws < 2 or self.micro_batches < 2:
            raise UserError("the noise monitor needs draws ≥ 2 and micro_batches ≥ 2")
        if not (0 < self.overhead <= 1):
            raise UserError(f"the noise monitor's overhead must be in (0, 1], got {self.overhead}")
        object.__setattr__(self, "min_points", max(0, min(int(self.min_points), self.spread)))


class NoiseMonitor:
    """B_simple along a training run (module docstring); ``points`` holds what it measured.

    A scheduler over the estimators of :mod:`bsadvisor.runtime.gradient_noise`: it decides
    when to measure and how large, keeps the time it spends within its allowance, gathers
    draws into points and keeps its state for a checkpoint.

    ``model``: the module being trained (not a DDP wrapper). ``loss_fn(model, batch)`` and
    ``dataset`` (+ ``collate_fn``) are needed only for the extra draws. ``dataset_size`` N
    (default ``len(dataset)``) sets the finite-data correction; None with no dataset: a
    stream (no correction). ``settings``: a :class:`MonitorSettings`; its fields may also be
    given as keywords (``NoiseMonitor(model, window=8)``), which override ``settings``.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Optional[Callable[[Any, Any], Any]] = None,
                 dataset: Any = None, *, dataset_size: Optional[int] = None, collate_fn=None,
                 device: Optional[torch.device] = None, settings: Optional[MonitorSettings] = None, **fields):
        checks.instance("model", model, torch.nn.Module, "a torch.nn.Module")
        checks.optional(checks.function, "loss_fn", loss_fn)
        if settings is not None:
            checks.instance("settings", settings, MonitorSettings, "a MonitorSettings")
        checks.optional(checks.positive_int, "dataset_size", dataset_size)
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(MonitorSettings)})
        if unknown:
            raise ArgumentTypeError(f"NoiseMonitor has no setting {', '.join(unknown)}; the settings are "
                                    f"{', '.join(f.name for f in dataclasses.fields(MonitorSettings))}")
        self.settings = dataclasses.replace(settings or MonitorSettings(), **fields)
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.loss_fn, self.dataset = loss_fn, dataset
        self.dataset_size = dataset_size if dataset_size is not None else (len(dataset) if dataset is not None
                                                                           else None)
        self.device = device
        self.recipe = StepRecipe()  # the training's (train_plan sets it): the extra draws' autocast and loss scale
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self._gather = make_gather(dataset, collate_fn) if dataset is not None else None
        self._accumulated = AccumulatedDraws(self.params)
        self._replicas = ReplicaTally(self.params)
        self.points: list[NoisePoint] = []
        self.seconds = 0.0          # spent measuring
        self._train_seconds = 0.0   # training time seen between calls (excluding the monitor's)
        self._last_call: Optional[float] = None
        self._updates_since = 0
        self._per_example = 0.0     # seconds per example drawn, in the last set of draws
        self._pending: list[tuple[float, float, float, int]] = []  # accumulation draws (small, big, b_eff, B)

    # ------------------------------------------------------------------ when to measure
    def maybe_measure(self, samples: int, lr: float, momentum: float, batch_size: int,
                      update: Optional[int] = None, total_samples: Optional[int] = None) -> Optional[NoisePoint]:
        """Measure now if the schedule says so; call once per update, before its step.

        With ``every``: every that many updates. Otherwise within the overhead budget: with
        ``total_samples`` (the run's length) at ``spread`` evenly spaced places of the run,
        each with draws as large as what is left of the budget affords (a late point may then
        be only a lower bound, but the whole run is covered); without it, whenever the next
        draws' predicted cost fits. The first call only starts the clock: the first point
        comes at the second update.
        """
        _check_position(samples, lr, momentum, batch_size, update, total_samples)
        first = self._last_call is None
        self._book_training_time(time.perf_counter())
        self._updates_since += 1
        due, big = self._due(first, samples, batch_size, total_samples)
        allowance = None if self.settings.every is not None else self._allowance()
        point = self.measure(samples, lr, momentum, batch_size, update, allowance, big) if due else None
        self._last_call = time.perf_counter()
        return point

    def _book_training_time(self, now: float) -> None:
        """Add the time since the last call (training, not the monitor's) to the training time seen."""
        if self._last_call is not None:
            self._train_seconds += now - self._last_call
            self._last_call = now

    def _due(self, first: bool, samples: int, batch_size: int,
             total_samples: Optional[int]) -> tuple[bool, Optional[int]]:
        """Whether to measure at this update, and its first draw batch (None: the monitor's own choice)."""
        if first and not self.points:
            # Not before the first update: it pays the one-off start-up costs (autograd, allocators) that would
            # otherwise be billed to the monitor and starve its budget.
            return False, None
        if self.settings.every is not None:
            return not self.points or self._updates_since >= self.settings.every, None
        if total_samples:
            return self._due_spread(samples, batch_size, total_samples)
        # measure when its predicted cost fits in what is left of the budget; the first time at once
        left = self._allowance()
        wanted = self.settings.big_batch or self._auto_big_batch(batch_size)
        return not self.points or (left > 0 and self._predicted(wanted) <= left), None

    def _due_spread(self, samples: int, batch_size: int, total: int) -> tuple[bool, Optional[int]]:
        """At the next of ``spread`` evenly spaced places of the run: whether to measure, and the draw batch
        the budget affords (at least the smallest draw; None: the monitor's own choice)."""
        settings = self.settings
        place = (len(self.points) * total) // settings.spread
        if self.points and samples < place:
            return False, None
        if not self.points or self._per_example == 0:
            return True, None
        smallest = max(64, batch_size)
        left = self._allowance()
        affordable = int(left / (self._per_example * settings.draws)) if left > 0 else 0
        if affordable < smallest:
            # wait, the budget grows with the training time; unless the run would end with fewer than min_points
            owed = settings.min_points * samples // total + 1 if settings.min_points else 0
            return (True, smallest) if len(self.points) < min(owed, settings.min_points) else (False, None)
        wanted = settings.big_batch or self._auto_big_batch(batch_size)
        return True, max(smallest, min(wanted, 2 ** int(math.log2(affordable))))

    def _allowance(self) -> float:
        """Seconds the budget still allows: ``overhead`` × the training time seen, less what was spent."""
        return self.settings.overhead * self._train_seconds - self.seconds

    def _predicted(self, big: int) -> float:
        """Seconds a set of ``draws`` draws of ``big`` examples should take, from the last set's pace."""
        return self._per_example * self.settings.draws * big

    # ------------------------------------------------------------------ extra draws
    def measure(self, samples: int, lr: float, momentum: float, batch_size: int,
                update: Optional[int] = None, allowance: Optional[float] = None,
                big_batch: Optional[int] = None) -> NoisePoint:
        """``draws`` extra draws at the current parameters; the point they give (also appended to ``points``).

        Without a fixed ``big_batch`` the draw size follows the noise scale: when the draws
        say B_simple is more than twice their batch (or give only a lower bound), they are
        taken again, fresh, at a batch of about B_simple (at most N, at most twice): the
        estimate of |G|² is only sharp when a draw is not far below B_simple. Only the last
        set of draws makes the point, so its interval is not conditioned on the choice.
        ``allowance``: seconds this call may take; no larger draws once they would pass it.
        ``big_batch``: this call's first draw batch (default: the monitor's choice).
        """
        if self.loss_fn is None or self._gather is None:
            raise UserError("the noise monitor's extra draws need loss_fn and dataset; "
                            "or feed it micro-batches with after_backward")
        started = time.perf_counter()
        big = big_batch or self.settings.big_batch or self._auto_big_batch(batch_size)
        with self._trajectory_kept():
            small, large, b, big = self._sized_draws(big, started, allowance)
        took = time.perf_counter() - started
        self.seconds += took
        self._updates_since = 0
        return self._add(samples, update, lr, momentum, batch_size, (small, large, b, big), "draws", took)

    @contextlib.contextmanager
    def _trajectory_kept(self):
        """Every random stream and the model's buffers (BatchNorm statistics) as they were, after the block."""
        state = rng.get_state()
        buffers = [t.detach().clone() for t in self.model.buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for t, saved in zip(self.model.buffers(), buffers):
                    t.copy_(saved)
            rng.set_state(state)

    def _sized_draws(self, big: int, started: float, allowance: Optional[float]):
        """Sets of draws, each at the batch the previous one asks for (at most three): the last one's
        (|G_b|² list, |G_B|² list, b, B)."""
        n = self.dataset_size
        for _ in range(3):
            big = min(big, n) if n is not None else big
            began = time.perf_counter()
            small, large, b, big = self._draws(big)
            self._per_example = (time.perf_counter() - began) / (self.settings.draws * big)
            wanted = min(self._wanted_big_batch(self._estimate(small, large, b, big), big), n or math.inf)
            spent = time.perf_counter() - started
            if (self.settings.big_batch is not None or wanted <= big
                    or (allowance is not None and spent + self._predicted(wanted) > allowance)):
                break
            big = wanted
        return small, large, b, big

    def _draws(self, big: int) -> tuple[list[float], list[float], int, int]:
        """``draws`` micro-batch draws (runtime.gradient_noise) of ``micro_batches`` micro-batches of
        examples the monitor's generator picks: (|G_b|², |G_B|² of each, b, B)."""
        b = max(1, big // self.settings.micro_batches)
        k = max(2, big // b)
        small, large = [], []
        for _ in range(self.settings.draws):
            s, g = self._draw(torch.randperm(self.dataset_size, generator=self.generator)[:k * b], k, b)
            small.append(s)
            large.append(g)
        return small, large, b, k * b

    def _draw(self, idx: torch.Tensor, k: int, b: int) -> tuple[float, float]:
        """One draw of k micro-batches of b on the examples ``idx``: (|G_b|², |G_B|²)."""
        s, g, _ = micro_batch_draw(self.params, k, lambda j: (self._gradient(idx[j * b:(j + 1) * b]), None)).draw()
        if not math.isfinite(s + g):
            raise UserError("the noise monitor's gradients are not finite; lower the LR or check the model")
        return s, g

    def _gradient(self, idx: torch.Tensor) -> list:
        """The mean loss's gradient on the examples ``idx``, by autograd.grad (``.grad`` is never written).

        Under the training's recipe (``recipe``): the loss under its autocast, differentiated
        at the scaler's loss scale and divided by it, as the training's own gradients are.
        """
        batch = to_device(self._gather(idx), self.device)
        with self.recipe.autocast():
            loss = self.loss_fn(self.model, batch)
        return dense(self.params, unscaled_grads(loss, self.params, self.recipe.loss_scale))

    def _auto_big_batch(self, batch_size: int) -> int:
        """The first draw batch when none is fixed: about the last estimate (a power of two, at least 64 and
        the training batch); after an open interval, twice its lower bound. B_simple grows through training."""
        ref = 64.0
        if self.points:
            last = self.points[-1]
            if last.ci_kind == "bounded":
                ref = last.b_simple
            else:
                ref = 2 * max(last.ci90[0] or 0.0, last.big_batch)
        return max(64, batch_size, _power_of_two_above(ref))

    @staticmethod
    def _wanted_big_batch(stats, big: int) -> int:
        """The draw batch these draws ask for: about B_simple when it is over twice theirs (a power of two)."""
        if stats.ci_kind == "bounded":
            ref = stats.b_simple if stats.b_simple > 2 * big else big
        else:
            ref = 4.0 * max(stats.ci90[0], big)
        return _power_of_two_above(ref)

    # ------------------------------------------------------------------ accumulation
    def after_backward(self, size: int, weight: Optional[float] = None) -> None:
        """Call after each micro-batch's ``backward()`` of ``size`` examples in an accumulated update.

        ``weight``: the factor the micro-batch's loss was scaled by (default: the usual
        ``size / batch``, given at :meth:`end_update`), so its own mean gradient is the change
        in ``.grad`` divided by it.
        """
        self._accumulated.after_backward(size, weight)

    def end_update(self, samples: int, lr: float, momentum: float, batch_size: Optional[int] = None,
                   update: Optional[int] = None, grad_scale: float = 1.0) -> Optional[NoisePoint]:
        """Close an accumulated update (after its last ``after_backward``); every ``window`` updates, a point.

        The change in ``.grad`` of a micro-batch of ``size`` is weight × its mean gradient, and the
        final ``.grad`` is the update's mean gradient (each loss scaled by size/batch, as
        gradient accumulation does). Updates of one micro-batch give no draw. Under a
        GradScaler, ``.grad`` carries its loss scale: give each micro-batch's weight times the
        scale and ``grad_scale`` = the scale; an update whose gradients overflowed gives no draw.
        """
        draw = self._accumulated.end_update(grad_scale)
        if draw is None:
            return None
        return self._pend(draw, samples, update, lr, momentum, batch_size or draw[3], "accumulation")

    # ------------------------------------------------------------------ data parallel (torchrun)
    def ddp_comm_hook(self, process_group, bucket):
        """A DDP communication hook that reads each rank's gradient before the all-reduce.

        Register it with ``ddp_model.register_comm_hook(None, monitor.ddp_comm_hook)``: it
        adds the squared norm of the bucket (this rank's gradient, before averaging) to the
        update's tally and then all-reduces as DDP's default hook does. Each rank's share of
        the global batch is then a small batch and the averaged gradient the big one, the
        replica estimator of McCandlish et al. App. A (as AdaptDL uses it); close each update
        with :meth:`end_replica_update`.
        """
        return self._replicas.comm_hook(process_group, bucket)

    def end_replica_update(self, samples: int, lr: float, momentum: float, batch_size: int, share: int,
                           update: Optional[int] = None, grad_scale: float = 1.0,
                           big_sq_norm: Optional[float] = None) -> Optional[NoisePoint]:
        """Close a data-parallel update (after ``optimizer.step()``, before the next ``zero_grad``).

        ``share``: this rank's examples of the ``batch_size`` (global) batch. One all-reduce
        of three numbers per update; every ``window`` updates, a point, the same on every rank.
        ``grad_scale``: a GradScaler's loss scale in the ranks' gradients; ``big_sq_norm``: the
        averaged gradient's squared norm before clipping, when the step clipped ``.grad``.
        """
        draw = self._replicas.end_update(batch_size, share, grad_scale, big_sq_norm)
        if draw is None:
            return None
        return self._pend(draw, samples, update, lr, momentum, batch_size, "replicas")

    def discard_update(self) -> None:
        """Forget the update in progress (a step the GradScaler skipped: its gradients overflowed)."""
        self._accumulated.end_update()
        self._replicas.local = None

    # ------------------------------------------------------------------ points
    def _pend(self, draw, samples, update, lr, momentum, batch_size, how: str) -> Optional[NoisePoint]:
        """Keep a draw (|G_b|², |G_B|², b, B); every ``window`` of them, one point (b and B averaged), else None."""
        self._pending.append(draw)
        if len(self._pending) < self.settings.window:
            return None
        pending, self._pending = self._pending, []
        b = sum(p[2] for p in pending) / len(pending)
        big = round(sum(p[3] for p in pending) / len(pending))
        return self._add(samples, update, lr, momentum, batch_size, ([p[0] for p in pending],
                         [p[1] for p in pending], b, big), how, 0.0)

    def _estimate(self, small, large, b, big) -> noise_stats.NoiseStats:
        """core.noise.estimate, with the finite-data correction when the data set holds the draw batch."""
        n = self.dataset_size
        return noise_stats.estimate(small, large, b, big, dataset_size=n if n is not None and n >= big else None)

    def _add(self, samples, update, lr, momentum, batch_size, draws, how, seconds) -> NoisePoint:
        """The point of ``draws`` (|G_b|² list, |G_B|² list, b, B), appended to ``points``."""
        small, large, b, big = draws
        stats = self._estimate(small, large, b, big)
        point = NoisePoint(sample=int(samples), update=update, b_simple=stats.b_simple,
                           ci90=(stats.ci90[0], stats.ci90[1]), ci_kind=stats.ci_kind, trace_sigma=stats.trace_sigma,
                           grad_sq_norm=stats.grad_sq_norm, draws=stats.draws, micro_batch=b, big_batch=big,
                           lr=float(lr), momentum=float(momentum), batch_size=int(batch_size), how=how,
                           seconds=seconds)
        self.points.append(point)
        return point

    # ------------------------------------------------------------------ files and checkpoints
    def trace(self) -> dict:
        """The trace as JSON-ready data (``bsadvisor.noise_trace/1``): what ``--noise-trace`` reads."""
        return json_safe({"schema": TRACE_SCHEMA, "dataset_size": self.dataset_size,
                          "points": [p.to_dict() for p in self.points], "seconds": self.seconds})

    def save(self, path) -> None:
        """Write :meth:`trace` to ``path`` atomically."""
        write_json(path, self.trace())

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the points so far and the generator (a resumed run continues both).

        The training time since the last call is booked now (a checkpoint is written between
        updates), so a resumed run's budget is the uninterrupted one's.
        """
        if self._last_call is not None:
            self._book_training_time(time.perf_counter())
        return {"clock": self._last_call is not None, "points": [p.to_dict() for p in self.points],
                "generator": self.generator.get_state(), "seconds": self.seconds,
                "train_seconds": self._train_seconds, "updates_since": self._updates_since,
                "pending": list(self._pending), "per_example": self._per_example}

    def load_state_dict(self, state: dict) -> None:
        self.points = [NoisePoint.from_dict(p) for p in state.get("points", [])]
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        self.seconds = float(state.get("seconds", 0.0))
        self._train_seconds = float(state.get("train_seconds", 0.0))
        self._updates_since = int(state.get("updates_since", 0))
        self._pending = [tuple(p) for p in state.get("pending", [])]
        # the pace of the last draws: without it the first call after a resume would measure at once
        # (an extra point at the resume position that the uninterrupted run never made)
        self._per_example = float(state.get("per_example", 0.0))
        self._last_call = time.perf_counter() if state.get("clock") else None


def _power_of_two_above(x: float) -> int:
    """The smallest power of two ≥ ``x`` (1 for x ≤ 1): draw batches come in powers of two."""
    return 2 ** math.ceil(math.log2(max(x, 1.0)))


__all__ = ["MonitorSettings", "NoiseMonitor", "TRACE_SCHEMA"]


def _check_position(samples, lr, momentum, batch_size, update, total_samples) -> None:
    """maybe_measure's arguments are the update's (a position, an LR, a momentum, a batch), or one line naming
    the wrong one: a garbage position would silently misplace every later point of the trace."""
    checks.integer("samples", samples, low=0)
    checks.number("lr", lr, low=0)
    checks.within("momentum", momentum, 0, 1, high_open=True)
    checks.positive_int("batch_size", batch_size)
    checks.optional(checks.integer, "update", update, low=0)
    checks.optional(checks.positive_int, "total_samples", total_samples)
