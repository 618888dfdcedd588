"""Train a Target following a Plan update by update, with checkpoints at epoch ends and inside epochs.

Every run the validator makes (the original LR schedule at a fixed batch, the batch-
growth plan of Smith et al. 1711.00489, the hybrid, the increased-LR variant, a
constant-LR control) is "train following a Plan": this file is that one loop.

Determinism: a run's randomness comes from its seed alone. The sampler draws each
epoch's permutation from (seed, epoch); torch/numpy/python global RNGs (dropout, data
augmentation in the user's code) are seeded at the start and saved in every checkpoint,
so a run killed anywhere (after its last checkpoint, at an epoch end or every
``checkpoint_every`` updates inside one) and resumed finishes with the same numbers, bit
for bit on CPU. The caller's global RNG state is put back afterwards.

Checkpoints (their format, what they must match to be resumed: runtime/checkpoint.py) hold
only tensors, plain containers, numbers and strings, and are read without running code; a
checkpoint of another run (another model, schedule, plan or settings) is refused.
Evaluation and the curve's positions are runtime/evaluation.py's.

Wall time counts training steps only (not evaluation, checkpoint writes or the noise
monitor's extra draws: the run's Stopwatch, runtime/state.py), so the comparison between
runs is about the training itself. The run's state (its parts, totals and records) is a
``RunState`` with ``state_dict()`` / ``load_state_dict()``: what a checkpoint holds.

Under torchrun (``dist`` enabled) the model is wrapped in DistributedDataParallel and
every rank walks the same global batches, training on its share (runtime/step.py, train_step):
the run is the one-process run, split. Rank 0 writes the checkpoint and, on resume, reads
it and sends it to the others. Losses, metrics and wall times are reduced over ranks: every
rank returns the same RunResult.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError, lost_peer, raised, user_code
from bsadvisor.core.plan import Plan
from bsadvisor.core.validate_options import MAX_EVALS
from bsadvisor.runtime import checkpoint as ckpt
from bsadvisor.runtime.batches import make_gather, split_share
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.documents import EpochRecord, EvalPoint, SkippedStep, StepRecord
from bsadvisor.runtime.evaluation import eval_points, evaluate
from bsadvisor.runtime.monitor import NoiseMonitor
from bsadvisor.core.original import check_dataset_size
from bsadvisor.runtime.precision import StepRecipe
from bsadvisor.runtime.rng import get_state as get_rng_state, rank_seed, seed_everything, set_state as set_rng_state
from bsadvisor.runtime.sampler import PlanBatchSampler
from bsadvisor.runtime.scheduler import BatchSizeScheduler
from bsadvisor.runtime.state import MAX_STEP_RECORDS, RunResult, RunState
from bsadvisor.runtime.step import train_step
from bsadvisor.targets.target import Target


@dataclass(frozen=True)
class TrainOptions:
    """How one run trains, checked once; the defaults are written here and nowhere else.

    ``seed``: the shuffle, the start of the random streams; ``name``: how results and errors
    name the run. ``max_micro_batch``: accumulate an update's gradient over micro-batches of
    at most that many examples (per process) when its batch is larger. ``checkpoint``: a file
    written at the end of every epoch and, with ``checkpoint_every`` = k, every k updates
    inside an epoch; with ``resume`` an existing one is continued (or, if complete, returned
    as is), mid-epoch included. ``eval_batch_size``: examples per metric_fn call.
    ``device`` moves the model there and every batch with it (None: leave both where they
    are). ``stop_on_divergence``: a training loss that is not finite ends the run (see
    ``train_plan``) instead of raising. ``noise_monitor``: NoiseMonitor settings
    (runtime/monitor.py; ``{}`` for the defaults) to record B_simple along the run in
    ``RunResult.noise_trace``: from the micro-batches of an accumulated update, under DDP
    from each rank's gradient before the all-reduce, otherwise from extra draws within its
    overhead budget; it never changes the trajectory. ``evals``: also evaluate at that many
    evenly spaced sample positions (eval_points; the last is the run's end) into
    ``RunResult.evals``, so a run of one epoch or less has a curve; a point at an epoch end
    reuses that epoch's evaluation.
    """

    seed: int = 0
    name: str = "run"
    max_micro_batch: Optional[int] = None
    checkpoint: Optional[str | os.PathLike] = None
    resume: bool = False
    checkpoint_every: Optional[int] = None
    eval_batch_size: int = 1024
    device: Optional[str | torch.device] = None
    stop_on_divergence: bool = False
    noise_monitor: Optional[dict] = None
    evals: Optional[int] = None

    def __post_init__(self) -> None:
        every = self.checkpoint_every
        if every is not None and (not isinstance(every, int) or every < 1):
            raise UserError(f"checkpoint_every must be a whole number ≥ 1, got {every!r}")
        if self.evals is not None:
            object.__setattr__(self, "evals", checks.positive_int("evals", self.evals, high=MAX_EVALS))


@dataclass
class _Training:
    """What one ``train_plan`` call works with: the target, where it runs and checkpoints, and the run's state."""

    target: Target
    name: str
    device: Optional[torch.device]
    checkpoint: Optional[Path]
    meta: dict  # what a checkpoint must match to be resumed
    state: RunState  # the run's parts, totals and records: what a checkpoint saves (runtime/state.py)
    checkpoint_every: Optional[int] = None

    def where(self, epoch: int) -> str:
        """``run plan (seed 0), epoch 3/10``: how errors name the place."""
        return f"run {self.name} (seed {self.state.seed}), epoch {epoch + 1}/{self.state.plan.full_epochs}"

    def write_checkpoint(self) -> None:
        ckpt.write(self.checkpoint, self.meta, self.state)


def train_plan(target: Target, plan: Plan, options: Optional[TrainOptions] = None, *,
               init_state: Optional[dict] = None, dist: Optional[Dist] = None,
               on_epoch: Optional[Callable[[EpochRecord], None]] = None,
               on_step: Optional[Callable[[int], None]] = None, **settings: Any) -> RunResult:
    """Train ``target.model`` over ``plan.total_samples`` examples following ``plan``, update by update.

    How it trains is ``options`` (a ``TrainOptions``), or its fields as keywords
    (``train_plan(target, plan, seed=1, max_micro_batch=256)``), which override ``options``'.
    Each update takes the sampler's next batch (``plan.at_sample(position)``'s size) and the
    scheduler's LR and momentum for that position. ``init_state`` (a model state_dict) is
    loaded first so every run starts from the same weights. ``dist`` (from
    ``bsadvisor.runtime.distributed.init_from_env``): data-parallel training under
    torchrun; every rank must call this with the same arguments.
    ``on_step(n_examples)`` / ``on_epoch(record)`` feed progress bars.

    A training loss that is not finite raises a UserError, or with ``stop_on_divergence``
    ends the run there: the epoch's record gets ``diverged: True`` with the loss and a NaN
    metric, ``RunResult.diverged_at`` says when, and the checkpoint keeps it (a resumed
    run stays diverged).

    The steps: set up, resume, then per epoch train, evaluate, checkpoint. Long because
    this docstring is the loop's contract; the body is named steps.
    """
    opts = dataclasses.replace(options or TrainOptions(), **settings)
    check_dataset_size(plan, target.dataset_size)
    dist = dist or Dist()
    model = target.model
    seed, max_micro_batch, evals, noise_monitor = opts.seed, opts.max_micro_batch, opts.evals, opts.noise_monitor
    dev = torch.device(opts.device) if opts.device is not None else None
    meta = ckpt.run_meta(plan, opts.name, seed, max_micro_batch, model, evals, dist)
    meta["recipe"] = target.recipe()  # another optimizer's kwargs, clipping or precision: another run
    user_rng = get_rng_state()
    net = model
    try:
        run = _set_up(target, plan, opts.name, seed, dist, dev, init_state, meta,
                      Path(opts.checkpoint) if opts.checkpoint is not None else None)
        state = run.state
        run.checkpoint_every = opts.checkpoint_every
        state.eval_at = eval_points(plan.total_samples, evals) if evals else []
        if noise_monitor is not None:
            state.monitor = NoiseMonitor(model, target.loss_fn, target.train_dataset, collate_fn=target.collate_fn,
                                         device=dev, **{"seed": seed, **noise_monitor})
            state.monitor.recipe = state.recipe
            state.result.noise_trace = state.monitor.points
        start = _resume(run, on_epoch) if opts.resume else 0
        if dist.enabled:  # DDP broadcasts rank 0's weights now and averages gradients in backward
            net = DistributedDataParallel(model, device_ids=[dev.index] if dev is not None and dev.type == "cuda"
                                          else None)
            if state.monitor is not None:  # each rank's gradient before the all-reduce: the replica estimator
                net.register_comm_hook(None, state.monitor.ddp_comm_hook)
        # Data: index_select on in-memory tensors (no DataLoader; see runtime/batches.py).
        gather = make_gather(target.train_dataset, target.collate_fn)
        for epoch in range(start, plan.full_epochs):
            train_loss, diverged = _train_epoch(run, net, gather, epoch, max_micro_batch, opts.stop_on_divergence,
                                                on_step, opts.eval_batch_size)
            rec = _record_epoch(run, epoch, train_loss, diverged, opts.eval_batch_size)
            state.partial = {}
            run.write_checkpoint()
            if on_epoch:
                on_epoch(rec)
            if diverged:
                break
        return state.result
    finally:
        del net  # DDP's gradient hooks go with it; the next run wraps the model afresh
        set_rng_state(user_rng)


def _set_up(target: Target, plan: Plan, name: str, seed: int, dist: Dist, dev: Optional[torch.device],
            init_state: Optional[dict], meta: dict, checkpoint: Optional[Path]) -> _Training:
    """Start weights, device, optimizer, scheduler, sampler, and this rank's random streams."""
    model = target.model
    if init_state is not None:
        model.load_state_dict(init_state)
    if dev is not None:
        model.to(dev)
    model.train()
    s0 = plan.at_sample(0)
    optimizer = target.make_optimizer(model.parameters(), lr=s0.lr, momentum=s0.momentum)
    state = RunState(plan=plan, seed=seed, model=model, optimizer=optimizer, recipe=StepRecipe.of(target, dev),
                     scheduler=BatchSizeScheduler(plan, optimizer),
                     sampler=PlanBatchSampler(plan, target.dataset_size, seed=seed),  # global batches; ranks: shares
                     result=RunResult(name=name, seed=seed, plan_updates=plan.updates), dist=dist)
    seed_everything(rank_seed(seed, dist.rank))  # dropout/augmentation: a different stream per rank
    return _Training(target=target, name=name, device=dev, checkpoint=checkpoint, meta=meta, state=state)


def _resume(run: _Training, on_epoch: Optional[Callable[[EpochRecord], None]]) -> int:
    """Continue from the run's checkpoint, if there is one; the first epoch still to train.

    A checkpoint of another run (process count, architecture, plan, seed or settings) is
    refused. A diverged run stays diverged: nothing is left to train.
    """
    ckpt_path, dist, result = run.checkpoint, run.state.dist, run.state.result
    doc = ckpt.read(ckpt_path, dist)
    if doc is None:
        return 0
    ckpt.refuse_other_run(doc["meta"], run.meta, ckpt_path, dist.world_size)
    with user_code(lambda exc: f"checkpoint {ckpt_path} is damaged ({raised(exc)}); delete it to start over, "
                               "or --overwrite", catch=(Exception,)):
        ckpt.restore(ckpt_path, run.state, doc)
    start = result.resumed_from = len(result.history)
    if result.history and result.history[-1].diverged:
        result.diverged_at, start = result.history[-1].epoch, run.state.plan.full_epochs
    for rec in result.history:
        if on_epoch:
            on_epoch(rec)
    return start


def _train_epoch(run: _Training, net: torch.nn.Module, gather: Callable, epoch: int,
                 max_micro_batch: Optional[int], stop_on_divergence: bool,
                 on_step: Optional[Callable[[int], None]], eval_batch_size: int = 1024) -> tuple[float, bool]:
    """One epoch of updates (from where a mid-epoch checkpoint left it); (mean training loss, diverged).

    Each update: the scheduler's LR and momentum at the current sample position, the
    sampler's next batch, one train_step, then the scheduler moves on by that batch. A
    loss that is not finite raises, or with ``stop_on_divergence`` ends the epoch: the loss
    is returned with ``diverged`` True. The run's stopwatch times the updates (not the
    monitor's extra draws, the curve's evaluations or the checkpoint writes).
    """
    state, n = run.state, run.state.plan.dataset_size
    part = state.partial if state.partial.get("epoch") == epoch else {"epoch": epoch, "offset": 0, "loss_sum": 0.0,
                                                                      "seen": 0}
    state.partial = part
    state.sampler.set_epoch(epoch)
    state.scheduler.seek(epoch * n + part["offset"])
    perm = state.sampler.permutation(epoch)
    stride = max(1, run.state.plan.updates // MAX_STEP_RECORDS)
    bad_loss, watch = None, state.stopwatch
    watch.start()
    for a, b in state.sampler.spans(epoch, part["offset"]):
        idx = perm[a:b]
        lr, momentum, monitor = _before_update(run, epoch, epoch * n + a, len(idx), stride, max_micro_batch)
        with user_code(lambda exc: f"{run.where(epoch)}: "
                                   f"{lost_peer(exc) or 'the model or loss_fn raised ' + raised(exc)}"):
            # lost_peer: not the model's fault, the other rank of the job is gone
            loss = train_step(net, state.optimizer, run.target.loss_fn, gather, idx, max_micro_batch,
                              device=run.device, monitor=monitor, recipe=state.recipe)
        if not math.isfinite(loss):
            if not stop_on_divergence:
                raise UserError(f"{run.where(epoch)}: the loss is {loss} after {state.updates} updates; "
                                "lower the LR or check the model")
            bad_loss = loss  # every rank sees the same (reduced) loss, so all stop here
            break
        skipped = _book_update(run, monitor, part, loss, epoch * n + a, lr, momentum, idx, b)
        if on_step:
            on_step(len(idx))
        if b < min(n, run.state.plan.total_samples - epoch * n) and _eval_due(state, epoch * n + b):
            with watch.paused():  # a curve point inside the epoch (an epoch's end is _record_epoch's)
                _add_eval_points(state, epoch * n + b, _evaluate_at(run, epoch, eval_batch_size))
        if run.checkpoint_every and not skipped and state.updates % run.checkpoint_every == 0 and b < n:
            with watch.paused():
                run.write_checkpoint()  # mid-epoch: the partial epoch's sums and position go with it
    watch.stop()
    if run.state.dist.enabled:
        # BatchNorm running statistics moved differently on each rank (each saw its own
        # share); rank 0's are the model's, for evaluation and the checkpoint alike.
        run.state.dist.broadcast_module(run.target.model)
    if bad_loss is not None:
        return bad_loss, True
    return part["loss_sum"] / max(part["seen"], 1), False


def _book_update(run: _Training, monitor: Optional[NoiseMonitor], part: dict, loss: float, sample: int, lr: float,
                 momentum: float, idx: torch.Tensor, offset: int) -> bool:
    """Book the update just trained (the monitor, the totals, the scheduler); True when the GradScaler skipped it."""
    state = run.state
    skipped = state.recipe.skipped
    if skipped:  # inf/NaN gradients under fp16: reported in skipped_steps, not counted as an update
        state.result.skipped_steps.append(SkippedStep(samples=sample, update=state.updates,
                                                      loss_scale=state.recipe.last_scale))
        if state.monitor is not None:
            state.monitor.discard_update()
    else:
        _after_update(run, monitor, sample, lr, momentum, idx)
    # a skipped step's examples were seen: the plan moves on past them, as Lightning and Hugging Face do
    _count_update(state, part, loss, len(idx), offset, updated=not skipped)
    return skipped


def _count_update(state: RunState, part: dict, loss: float, size: int, offset: int, updated: bool = True) -> None:
    """Book a finished update: the epoch's and the curve's running loss, the position, the totals, the scheduler
    (``updated`` False: the GradScaler skipped the step, so the examples count but the update does not)."""
    for acc in (part, state.since):
        acc["loss_sum"] += loss * size
        acc["seen"] += size
    part["offset"] = offset
    state.updates += int(updated)
    state.examples += size
    state.scheduler.step(samples=size)


def _before_update(run: _Training, epoch: int, sample: int, batch: int, stride: int,
                   max_micro_batch: Optional[int]) -> tuple[float, float, Optional[NoiseMonitor]]:
    """The update's LR and momentum, recorded every ``stride`` updates; the monitor's extra draws when due.

    Returns (lr, momentum, the monitor when it reads this update's micro-batches, else None).
    """
    state = run.state
    lr, momentum = state.scheduler.get_last_lr()[0], state.scheduler.get_last_momentum()[0]
    if state.updates % stride == 0:
        state.result.steps.append(StepRecord(samples=sample, batch_size=batch, lr=lr, momentum=momentum))
    monitor = _monitor_for(state, batch, max_micro_batch)
    if monitor is None and state.monitor is not None and not state.dist.enabled:  # extra draws, within budget
        stage_batch = run.state.plan.at_sample(sample).batch_size  # not a short last batch of an epoch
        # the user's model or loss raising there is named like a training step's
        with user_code(lambda exc: f"{run.where(epoch)}: the noise monitor's gradient draw raised {raised(exc)}"):
            state.monitor.maybe_measure(sample, lr, momentum, stage_batch, state.updates, run.state.plan.total_samples)
    return lr, momentum, monitor


def _after_update(run: _Training, monitor: Optional[NoiseMonitor], sample: int, lr: float, momentum: float,
                  idx: torch.Tensor) -> None:
    """Close the update for the noise monitor: its micro-batches (one process) or the ranks' gradients (DDP)."""
    state, dist = run.state, run.state.dist
    recipe = state.recipe
    if monitor is not None:
        monitor.end_update(sample, lr, momentum, len(idx), state.updates, grad_scale=recipe.last_scale)
    elif state.monitor is not None and dist.enabled:
        clipped = recipe.grad_norm ** 2 if recipe.grad_norm is not None else None  # .grad is clipped now
        state.monitor.end_replica_update(sample, lr, momentum, len(idx), len(split_share(idx, dist.rank,
                                                                                         dist.world_size)),
                                         state.updates, grad_scale=recipe.last_scale, big_sq_norm=clipped)


def _monitor_for(state: RunState, batch: int, max_micro_batch: Optional[int]) -> Optional[NoiseMonitor]:
    """The monitor, when this update accumulates micro-batches it can read on one process; else None.

    Under DDP the last micro-batch's backward all-reduces ``.grad``, so its change is not
    this rank's micro-batch gradient: there the ranks' gradients before the all-reduce
    serve instead (NoiseMonitor.ddp_comm_hook, end_replica_update).
    """
    if state.monitor is None or state.dist.enabled or max_micro_batch is None or batch <= max_micro_batch:
        return None
    return state.monitor


def _record_epoch(run: _Training, epoch: int, train_loss: float, diverged: bool,
                  eval_batch_size: int) -> EpochRecord:
    """Evaluate (not after a divergence: the metric is NaN) and add the epoch's record to the history."""
    state = run.state
    metric = math.nan if diverged else _evaluate_at(run, epoch, eval_batch_size)
    setting = run.state.plan.at(epoch)
    rec = EpochRecord(epoch=epoch + 1, batch_size=setting.batch_size, lr=setting.lr, momentum=setting.momentum,
                      train_loss=train_loss, metric=metric, updates=state.updates, examples=state.examples,
                      wall_s=state.wall, diverged=diverged)
    if diverged:
        state.result.diverged_at = epoch + 1
    else:
        _add_eval_points(state, min((epoch + 1) * run.state.plan.dataset_size, run.state.plan.total_samples), metric)
    state.result.history.append(rec)
    return rec


def _eval_due(state: RunState, position: int) -> bool:
    """Whether the run has reached its next curve point at ``position`` (the same on every rank)."""
    done = len(state.result.evals)
    return done < len(state.eval_at) and position >= state.eval_at[done]


def _evaluate_at(run: _Training, epoch: int, eval_batch_size: int) -> Optional[float]:
    """The metric now (``evaluate``); the user's metric_fn raising is named like a training step's error.

    The random streams are put back afterwards: a metric_fn that draws random numbers does not
    change the training, so the curve's points (--evals) never change a run.
    """
    rng = get_rng_state()
    try:
        with user_code(lambda exc: f"{run.where(epoch)}: metric_fn raised {raised(exc)}", let_through=()):
            return evaluate(run.target, eval_batch_size, run.state.dist, run.device)
    finally:
        set_rng_state(rng)


def _add_eval_points(state: RunState, position: int, metric: Optional[float]) -> None:
    """Record the curve's points the run has reached at ``position`` (one evaluation serves them all)."""
    result, plan = state.result, state.plan
    while len(result.evals) < len(state.eval_at) and state.eval_at[len(result.evals)] <= position:
        since = state.since
        result.evals.append(EvalPoint(
            point=state.eval_at[len(result.evals)],  # where it was due; samples: the update that reached it
            samples=position, epoch=position / plan.dataset_size, updates=state.updates,
            batch_size=plan.at_sample(max(position - 1, 0)).batch_size,
            train_loss=since["loss_sum"] / since["seen"] if since["seen"] else None,
            metric=metric, wall_s=state.wall))
        state.since = {"loss_sum": 0.0, "seen": 0}


def initial_state(model: torch.nn.Module) -> dict:
    """A detached copy of the model's weights: every run starts from these."""
    return copy.deepcopy(model.state_dict())


__all__ = ["TrainOptions", "train_plan", "initial_state"]
