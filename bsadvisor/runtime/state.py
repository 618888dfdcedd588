"""A training run's state, by job: ``RunState`` (what a checkpoint saves and a resume restores) and ``Stopwatch``.

``RunState`` has torch's ``state_dict()`` / ``load_state_dict()`` shape (as an optimizer or an LR
scheduler): it holds the run's parts (the weights, the optimizer, the plan's scheduler and
sampler, the precision recipe's loss scale, the noise monitor, the random streams) and its
counters and records so far, and its dict holds only tensors, plain containers, numbers and
strings. runtime/train.py trains with it; runtime/checkpoint.py writes its dict with the run's
``meta`` and digest, checks a dict it reads against the plan, the target and the seed, and
loads it back: the resumed run continues bit for bit.

``Stopwatch`` is the run's one wall clock: training time only, the noise monitor's extra
draws (their ``seconds``) excluded, stopped around evaluations and checkpoint writes, the
slowest rank's under torchrun.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from bsadvisor.core.plan import Plan
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.documents import EpochRecord, EvalPoint, NoisePoint, SkippedStep, StepRecord
from bsadvisor.runtime.monitor import NoiseMonitor
from bsadvisor.runtime.precision import StepRecipe
from bsadvisor.runtime.rng import get_state as get_rng_state, set_state as set_rng_state
from bsadvisor.runtime.sampler import PlanBatchSampler
from bsadvisor.runtime.scheduler import BatchSizeScheduler

#: At most this many per-update records a run keeps (every k-th update beyond that).
MAX_STEP_RECORDS = 2000


@dataclass
class RunResult:
    """One run: its name, seed and per-epoch history (the last entry holds the finals); its records are typed
    documents (runtime/documents.py), ``to_dict()`` the run's JSON in results.json."""

    name: str
    seed: int
    history: list[EpochRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)  # the batch, LR and momentum of (every k-th) update
    evals: list[EvalPoint] = field(default_factory=list)  # the curve: metric and loss at ``evals`` places of the run
    noise_trace: list[NoisePoint] = field(default_factory=list)  # the NoiseMonitor's points (runtime/monitor.py)
    plan_updates: int = 0
    resumed_from: Optional[int] = None  # epoch count found in a checkpoint, if any
    diverged_at: Optional[int] = None  # epoch (1-based) whose training loss was not finite, if any
    skipped_steps: list[SkippedStep] = field(default_factory=list)  # steps a GradScaler skipped

    @property
    def final(self) -> EpochRecord | dict:
        """The last epoch's record (``{}`` before any)."""
        return self.history[-1] if self.history else {}

    def to_dict(self) -> dict:
        f = self.final
        return {"seed": self.seed, "final_train_loss": f.get("train_loss"), "metric": f.get("metric"),
                "updates": f.get("updates", 0), "examples": f.get("examples", 0), "wall_s": f.get("wall_s", 0.0),
                "resumed_from_epoch": self.resumed_from, "diverged_at_epoch": self.diverged_at,
                "history": _dicts(self.history), "steps": _dicts(self.steps), "evals": _dicts(self.evals),
                "noise_trace": _dicts(self.noise_trace), "skipped_steps": _dicts(self.skipped_steps)}


def _dicts(documents: list) -> list[dict]:
    """The JSON of a list of documents."""
    return [d.to_dict() for d in documents]


class Stopwatch:
    """Seconds of training: wall-clock time between ``start()`` and ``stop()``, less what ``excluded()`` grew by.

    ``excluded``: seconds spent on something else inside the timed stretches (the noise monitor's
    extra draws, ``NoiseMonitor.seconds``); ``clock``: ``time.perf_counter`` (a test gives a fake);
    ``dist``: under torchrun each stretch counts as the slowest rank's (a collective: every rank
    stops together). ``seconds`` is the total; ``paused()`` stops it for a block (an evaluation,
    a checkpoint write) so that ``seconds`` is up to date inside it.
    """

    def __init__(self, excluded: Callable[[], float] = lambda: 0.0, clock: Callable[[], float] = time.perf_counter,
                 dist: Optional[Dist] = None, seconds: float = 0.0):
        self.excluded, self.clock, self.dist, self.seconds = excluded, clock, dist or Dist(), seconds
        self._started: Optional[tuple[float, float]] = None

    def start(self) -> None:
        self._started = (self.clock(), self.excluded())

    def stop(self) -> None:
        """Add the stretch since ``start()`` (less the excluded seconds in it) to ``seconds``."""
        t0, x0 = self._started
        took = self.clock() - t0 - (self.excluded() - x0)
        if self.dist.enabled:
            took = float(self.dist.all_reduce(torch.tensor(took, dtype=torch.float64), op="max"))
        self.seconds += took
        self._started = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Not training time: stopped for the block, started again after it."""
        self.stop()
        yield
        self.start()


@dataclass
class RunState:
    """The state of one run of ``train_plan``: its parts, counters and records (module docstring).

    ``plan``, ``seed``, ``dist`` and ``eval_at`` (the curve's sample positions) say what the run is;
    ``model``, ``optimizer``, ``scheduler``, ``sampler``, ``recipe`` and ``monitor`` train it;
    ``result`` holds its records (history, step records, curve, skipped steps, noise trace);
    ``updates``, ``examples`` and ``wall`` (``stopwatch.seconds``) are its totals, ``partial`` the
    epoch in progress (epoch, offset, loss_sum, seen) and ``since`` the loss since the last curve
    point. ``state_dict()`` is collective under torchrun (every rank's random streams are gathered);
    ``load_state_dict`` takes this rank's.
    """

    plan: Plan
    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: BatchSizeScheduler
    sampler: PlanBatchSampler
    recipe: StepRecipe
    result: RunResult
    dist: Dist = field(default_factory=Dist)
    monitor: Optional[NoiseMonitor] = None
    eval_at: list[int] = field(default_factory=list)
    updates: int = 0
    examples: int = 0
    partial: dict = field(default_factory=dict)
    since: dict = field(default_factory=lambda: {"loss_sum": 0.0, "seen": 0})
    stopwatch: Stopwatch = field(init=False)  # the run's training time, the monitor's draws left out

    def __post_init__(self) -> None:
        self.stopwatch = Stopwatch(self._monitor_seconds, dist=self.dist)

    def _monitor_seconds(self) -> float:
        """Seconds the monitor's extra draws have taken in this run (kept out of its wall time)."""
        return self.monitor.seconds if self.monitor is not None else 0.0

    @property
    def wall(self) -> float:
        """Seconds of training so far (the stopwatch's)."""
        return self.stopwatch.seconds

    def state_dict(self) -> dict:
        """Everything a resume needs, as tensors, plain containers, numbers and strings."""
        rng = self.dist.all_gather_object(get_rng_state()) if self.dist.enabled else get_rng_state()
        result = self.result
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(), "rng": rng,
                "history": _dicts(result.history), "steps": _dicts(result.steps), "evals": _dicts(result.evals),
                "since": dict(self.since), "partial": dict(self.partial),
                "monitor": self.monitor.state_dict() if self.monitor is not None else None,
                "scaler": self.recipe.state_dict(),  # fp16: the loss scale
                "skipped_steps": _dicts(result.skipped_steps),
                "totals": {"updates": self.updates, "examples": self.examples, "wall_s": self.wall}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict()``; runtime/checkpoint.py checks a file's before loading it)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])  # the plan's LR and momentum into the loaded groups
        self.recipe.load_state_dict(state.get("scaler"))  # the GradScaler's scale and growth tracker
        rng = state["rng"]
        set_rng_state(rng[self.dist.rank] if isinstance(rng, list) else rng)
        result = self.result
        result.skipped_steps = [SkippedStep.from_dict(rec) for rec in state.get("skipped_steps", [])]
        result.history = [EpochRecord.from_dict(rec) for rec in state["history"]]
        result.steps = [StepRecord.from_dict(rec) for rec in state.get("steps", [])]
        result.evals = [EvalPoint.from_dict(rec) for rec in state.get("evals", [])]
        self.since = dict(state.get("since") or {"loss_sum": 0.0, "seen": 0})
        self.partial = dict(state.get("partial") or {})
        if self.monitor is not None and state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
            result.noise_trace = self.monitor.points
        totals = state["totals"]
        self.updates, self.examples, self.stopwatch.seconds = totals["updates"], totals["examples"], totals["wall_s"]


__all__ = ["MAX_STEP_RECORDS", "RunResult", "RunState", "Stopwatch"]
