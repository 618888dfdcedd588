"""PyTorch Lightning follows a plan: the ``FollowPlan`` callback.

``FollowPlan(plan)`` makes ``Trainer.fit`` train with the plan's batch size, LR and momentum
at every update (Smith et al., arXiv 1711.00489; docs/integration.md), on the batches
bsadvisor's own loop (runtime/train.py) trains on for the same seed. The user's
LightningModule and DataModule stay as they are:

- Batches: the train DataLoader the module or datamodule returns is rebuilt around a
  ``PlanBatchSampler`` (same dataset, collate_fn and workers) before Lightning iterates it,
  so one Lightning batch is one update, a stage that starts mid-epoch included. Under DDP
  each rank takes its contiguous share of every global batch (runtime/sampler.py).
- LR and momentum: written into every optimizer's param groups before each update, from
  ``plan.at_sample(samples trained)``, by a ``BatchSizeScheduler`` (runtime/scheduler.py).
- Accumulation: an update whose share exceeds ``max_micro_batch`` is split into
  k = ⌈share/max_micro_batch⌉ near-equal micro-batches inside ``training_step``; see
  ``FollowPlan._training_step`` for why this design.
- Epoch length: Lightning counts an epoch's batches once, when it first builds the loader;
  FollowPlan sets the count (``trainer.num_training_batches``, the progress bar's total,
  the validation interval) at every epoch start.
- Resume: the samples and updates trained are the callback's state in Lightning's own
  checkpoints; a resumed fit continues at the next batch of the plan, mid-epoch included.
- Precision and clipping are the Trainer's (``precision``, ``gradient_clip_val``): Lightning
  runs them as the user set them. Under ``precision="16-mixed"`` a step the GradScaler
  skips (inf/NaN gradients) is recorded in ``skipped_steps`` and not counted in ``updates``;
  the plan moves on past its examples, as bsadvisor's own loop does.

Lightning has no public hook for a per-update batch size, so FollowPlan sets a few
attributes of the Trainer's fit loop (``_data_source``, ``max_batches``,
``_combined_loader.limits``) and of the LightningModule (``training_step`` while fitting);
each is named where it is set. Written against Lightning 2.6 (tests/test_lightning.py): a
FollowPlan made with another Lightning is refused (``check_lightning_version``), and the
``lightning`` extra pins the same range.

The batch rules are bsadvisor's own loop's (runtime/batches.py: shares, stand-ins,
micro-batches, loss weights), so both train on the same batches with the same weights.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import lightning
import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan
from bsadvisor.integrations.lightning.target import training_step_loss
from bsadvisor.integrations.releases import check_release, installed_version, requirement
from bsadvisor.runtime.batches import (batch_rows, loss_weight, micro_batches, rank_share, share_span, split_batch,
                                       weighted)
from bsadvisor.runtime.precision import unscaled_grads
from bsadvisor.runtime.sampler import PlanBatchSampler
from bsadvisor.runtime.scheduler import BatchSizeScheduler

#: The Lightning releases FollowPlan is tested with (major, minor): the loop internals it sets are theirs.
TESTED_LIGHTNING = (2, 6)
#: The pip requirement that installs one of them (the ``lightning`` extra in pyproject.toml says the same).
LIGHTNING_REQUIREMENT = requirement("lightning", TESTED_LIGHTNING)


def check_lightning_version(version: Optional[str] = None) -> None:
    """A UserError unless the installed Lightning (or ``version``) is a release FollowPlan is tested with.

    FollowPlan sets attributes of Lightning's fit loop that are not public API; another
    release may have moved them, and would fail in the middle of a fit, or worse, not at all.
    """
    if version is None:
        version = installed_version(lightning, "lightning", f"pip install '{LIGHTNING_REQUIREMENT}'")
    check_release(version, TESTED_LIGHTNING, f"FollowPlan is tested with Lightning {TESTED_LIGHTNING[0]}."
                  f"{TESTED_LIGHTNING[1]}.x and sets its fit loop's internals, but Lightning {version} is installed: "
                  f"pip install '{LIGHTNING_REQUIREMENT}'")


class _PlanBatches(PlanBatchSampler, BatchSampler):
    """A ``PlanBatchSampler`` shaped as Lightning wants a custom batch sampler.

    Under DDP Lightning rebuilds the train DataLoader with a ``DistributedSampler``
    (``use_distributed_sampler``); for a ``BatchSampler`` subclass it re-creates it with
    that sampler as the ``sampler`` argument (lightning.pytorch.utilities.data,
    ``_dataloader_init_kwargs_resolve_sampler``). The sharding is the plan's own (``rank``,
    ``world_size``: contiguous shares of each global batch), so the injected sampler is
    kept only as Lightning's ``set_epoch`` target and never drawn from.

    It starts at sample position ``samples`` (a resumed run; ``seek``). A rank whose share of
    a global batch is empty (the last, partial batch smaller than the world size) gets the
    batch's stand-in example (runtime/batches.py, rank_share), which FollowPlan weights by zero.
    """

    def __init__(self, sampler: Any, plan: Plan, dataset_size: int, seed: int, rank: int, world_size: int,
                 samples: int):
        PlanBatchSampler.__init__(self, plan, dataset_size, seed=seed, rank=rank, world_size=world_size)
        self.sampler = sampler
        self.seek(samples)

    def __iter__(self):
        perm = self.permutation(self.epoch)
        for a, b in self.spans(self.epoch, self.offset):
            self.offset = b
            yield rank_share(perm[a:b], self.rank, self.world_size)[0].tolist()


class _PlanLoader(DataLoader):
    """The train DataLoader FollowPlan builds, stateful for Lightning.

    Lightning warns that a run resumed mid-epoch repeats data unless the loader has
    ``state_dict``/``load_state_dict`` (training_epoch_loop.reset); this one resumes at the
    next batch of the plan. The position itself is FollowPlan's state (samples trained,
    which the sampler's own position runs ahead of while Lightning prefetches), so the
    loader reports it and loads nothing.
    """

    def __init__(self, *args: Any, follow: Optional["FollowPlan"] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.follow = follow

    def state_dict(self) -> dict:
        return {"samples_seen": None if self.follow is None else self.follow.samples_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # FollowPlan.load_state_dict has set the position; the sampler was built there


@dataclass(frozen=True)
class _Update:
    """The update about to run: its global batch, this rank's share, the world size."""

    global_batch: int
    share: int
    world: int

    def weight(self, rows: int) -> float:
        """The factor on the mean loss of ``rows`` of this rank's share (runtime/batches.py, loss_weight)."""
        return loss_weight(rows, self.global_batch, self.world, stand_in=self.share == 0)


class FollowPlan(pl.Callback):
    """A Lightning callback that trains with a bsadvisor plan: ``Trainer(callbacks=[FollowPlan(plan)])``.

    At every update the batch (``plan.at_sample(samples)``'s size, cut at the epoch's end
    as ``PlanBatchSampler`` cuts it), the LR and the momentum (SGD ``momentum``, Adam
    ``betas[0]``) are the plan's; ``seed`` fixes the shuffle, as in ``PlanBatchSampler``.
    ``max_micro_batch``: accumulate gradients over micro-batches of at most that many
    examples (per device) when an update's batch is larger. Training stops when the plan
    ends; give ``Trainer(max_epochs=plan.full_epochs)`` (or more).

    What it needs: ``train_dataloader`` returns one DataLoader over a map-style dataset
    (its sampler, batch size, shuffle and drop_last are replaced; dataset, collate_fn and
    workers kept); ``configure_optimizers`` returns no LR scheduler (the plan is the
    schedule); ``Trainer(accumulate_grad_batches=1)``, full ``limit_train_batches``. With
    manual optimization FollowPlan sets batches, LR and momentum, but not accumulation.
    Anything else is a UserError naming the setting.
    """

    def __init__(self, plan: Plan, max_micro_batch: Optional[int] = None, seed: int = 0):
        check_lightning_version()
        if not isinstance(plan, Plan):
            raise UserError(f"FollowPlan needs a bsadvisor Plan (Plan.load('plan.json')), got {type(plan).__name__}")
        if plan.dataset_size is None:
            raise UserError("the plan has no data set size (streaming); FollowPlan needs one: re-run "
                            "convert-schedule with --dataset-size")
        if max_micro_batch is not None and (isinstance(max_micro_batch, bool) or not isinstance(max_micro_batch, int)
                                            or max_micro_batch < 1):
            raise UserError(f"max_micro_batch must be a whole number ≥ 1 or None, got {max_micro_batch!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed must be a whole number, got {seed!r}")
        self.plan, self.max_micro_batch, self.seed = plan, max_micro_batch, seed
        self.samples_seen = 0  # global examples trained on: the plan's position
        self.updates = 0
        self.skipped_steps: list[dict] = []  # {samples, update, loss_scale}: steps an fp16 GradScaler skipped
        self._scaler, self._scale_before = None, None
        self._rank, self._world = 0, 1
        self._schedulers: list[BatchSizeScheduler] = []
        self._sampler: Optional[_PlanBatches] = None
        self._update: Optional[_Update] = None
        self._undo: list[Callable[[], None]] = []

    # -- set up and tear down ---------------------------------------------------------
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        self._refuse_settings(trainer, pl_module)
        # First among the callbacks: a progress bar reads the epoch's batch count, and a
        # LearningRateMonitor the LR, in hooks that run after this one's.
        trainer.callbacks.remove(self)
        trainer.callbacks.insert(0, self)
        self._rank, self._world = trainer.global_rank, trainer.world_size
        source = trainer.fit_loop._data_source  # where fit_loop.setup_data asks for the train loader
        request = source.dataloader
        source.dataloader = lambda: self._plan_loader(request())
        self._undo.append(lambda: vars(source).pop("dataloader", None))
        if pl_module.automatic_optimization and (self.max_micro_batch is not None or self._world > 1):
            original = pl_module.training_step

            @functools.wraps(original)
            def training_step(batch, *args, **kwargs):
                return self._training_step(original, pl_module, batch, *args, **kwargs)

            pl_module.training_step = training_step
            self._undo.append(lambda: vars(pl_module).pop("training_step", None))

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        while self._undo:
            self._undo.pop()()
        self._schedulers, self._sampler, self._update = [], None, None

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        # A fit that fails skips the teardown hooks: leave the module and trainer as they were all the same.
        self.teardown(trainer, pl_module, "fit")

    def _refuse_settings(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """A UserError for a Trainer or module setting that would take the batches out of the plan's hands."""
        if trainer.accumulate_grad_batches != 1:
            raise UserError(f"FollowPlan decides the batch of every update; drop Trainer(accumulate_grad_batches="
                            f"{trainer.accumulate_grad_batches}) and give FollowPlan(plan, max_micro_batch=...) "
                            "for batches that do not fit")
        limit = trainer.limit_train_batches
        if not (limit is None or isinstance(limit, float) and limit == 1.0) or trainer.overfit_batches:
            raise UserError("FollowPlan trains every batch of the plan; drop Trainer(limit_train_batches=...) "
                            "and Trainer(overfit_batches=...)")
        if is_param_in_hook_signature(pl_module.training_step, "dataloader_iter", explicit=True):
            raise UserError("FollowPlan hands training_step one batch per update; a training_step(dataloader_iter) "
                            "cannot follow a plan")
        if not pl_module.automatic_optimization and self.max_micro_batch is not None:
            raise UserError("FollowPlan(max_micro_batch=...) accumulates inside Lightning's automatic optimization; "
                            "with automatic_optimization = False split the batch in your training_step")

    def _plan_loader(self, loader: Any) -> DataLoader:
        """``loader`` rebuilt around the plan's batch sampler (what ``train_dataloader`` returned)."""
        if not isinstance(loader, DataLoader):
            raise UserError(f"FollowPlan needs train_dataloader to return one torch DataLoader, got "
                            f"{type(loader).__name__}")
        if isinstance(loader.dataset, IterableDataset):
            raise UserError("FollowPlan needs a map-style dataset (len and [i]) in the train DataLoader, "
                            "not an IterableDataset")
        sampler = _PlanBatches(None, self.plan, len(loader.dataset), self.seed, self._rank, self._world,
                               self.samples_seen)
        kwargs = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
                      persistent_workers=loader.persistent_workers, pin_memory_device=loader.pin_memory_device)
        if loader.num_workers:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        return _PlanLoader(loader.dataset, batch_sampler=sampler, follow=self, **kwargs)

    # -- training -----------------------------------------------------------------------
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.lr_scheduler_configs:
            name = type(trainer.lr_scheduler_configs[0].scheduler).__name__
            raise UserError(f"FollowPlan sets the LR at every update; configure_optimizers also returns an LR "
                            f"scheduler ({name}): return only the optimizer (the plan holds the schedule)")
        self._sampler = _own_sampler(trainer)
        self._schedulers = [BatchSizeScheduler(self.plan, opt, samples_seen=self.samples_seen)
                            for opt in trainer.optimizers]
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # "16-mixed": Lightning's GradScaler
        self._scaler = scaler if isinstance(scaler, torch.amp.GradScaler) else None
        plan = self.plan
        if trainer.max_epochs not in (None, -1) and trainer.max_epochs < plan.full_epochs:
            rank_zero_warn(f"Trainer(max_epochs={trainer.max_epochs}) stops before the plan's {plan.full_epochs} "
                           f"epochs end; FollowPlan stops the run when the plan ends")
        if trainer.max_steps not in (None, -1) and trainer.max_steps < plan.updates:
            rank_zero_warn(f"Trainer(max_steps={trainer.max_steps}) stops before the plan's {plan.updates} updates")
        self._set_epoch_length(trainer)
        if self.samples_seen >= plan.total_samples:
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Runs before Lightning starts this epoch's iterator (fit_loop.on_advance_start), and
        # not at all when a run resumes mid-epoch (the sampler was built at its position then).
        if self._sampler is not None:
            self._sampler = _own_sampler(trainer)  # a new one if Lightning reloaded the loader
            self._sampler.seek(self.samples_seen)
            self._set_epoch_length(trainer)

    def _set_epoch_length(self, trainer: "pl.Trainer") -> None:
        """The batches of the epoch the sampler stands at, wherever Lightning keeps that count.

        Lightning computes them in ``fit_loop.setup_data`` from the first epoch's length and
        keeps them: ``max_batches`` is ``trainer.num_training_batches`` (the progress bar's
        total, the end of the epoch), the combined loader's ``limits`` end the iteration, and
        ``val_check_batch`` places validation (``int(batches × val_check_interval)``, as there).
        """
        batches = len(self._sampler)
        trainer.fit_loop.max_batches = batches
        combined = trainer.fit_loop._combined_loader
        if combined is not None:
            combined.limits = [batches]
        if isinstance(trainer.val_check_interval, float) and getattr(trainer, "_val_check_time_interval", None) is None:
            trainer.val_check_batch = max(1, int(batches * trainer.val_check_interval))

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        s, plan = self.samples_seen, self.plan
        global_batch = plan.update_end(s) - s
        lo, hi = share_span(global_batch, self._rank, self._world)
        update = _Update(global_batch, hi - lo, self._world)
        rows = batch_rows(batch)
        if rows is not None and rows != max(update.share, 1):
            raise UserError(f"FollowPlan expected a batch of {max(update.share, 1)} examples at sample {s} of the "
                            f"plan, got {rows}: the train DataLoader was changed after FollowPlan built it")
        for scheduler in self._schedulers:
            scheduler.seek(s)
        self._update = update
        self._scale_before = self._scaler.get_scale() if self._scaler is not None else None

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._update is None:
            return
        if self._scale_before is not None and self._scaler.get_scale() < self._scale_before:
            # the scale only goes down when the scaler skipped the step: no update was made
            self.skipped_steps.append({"samples": self.samples_seen, "update": self.updates,
                                       "loss_scale": self._scale_before})
        else:
            self.updates += 1
        self.samples_seen += self._update.global_batch
        self._update = None

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # The plan's last batch ends the epoch (the sampler has no more); stopping here rather
        # than at that batch leaves the validation schedule alone (should_stop mid-epoch
        # makes Lightning validate at once).
        if self.samples_seen >= self.plan.total_samples:
            trainer.should_stop = True

    def _training_step(self, original: Callable, module: "pl.LightningModule", batch: Any, *args, **kwargs):
        """The module's ``training_step`` on this rank's share, weighted, in micro-batches if it is too large.

        Each micro-batch's mean loss is weighted by world × rows / global batch (train_step's
        rule), so DDP's average over ranks is the gradient of the global batch's mean loss,
        also for uneven shares (1 when the shares are even). The micro-batches before the
        last are differentiated here with ``torch.autograd.grad``, which fills no ``.grad``,
        so Lightning's ``zero_grad`` (which its closure runs after ``training_step``) cannot
        erase them and DDP's gradient hooks do not fire; their gradients ride on the last
        micro-batch's loss (``_AddGrads``) into the one backward Lightning runs, with its
        precision scaling and its single gradient all-reduce. The returned loss is the
        whole batch's. Accumulating in Lightning itself would need its
        ``accumulate_grad_batches``, a fixed count that divides every loss by that count:
        neither fits updates whose micro-batch count changes with the stage.
        """
        update = self._update
        if update is None:  # called outside fit's training loop
            return original(batch, *args, **kwargs)
        rows = max(update.share, 1)
        k = micro_batches(rows, self.max_micro_batch)
        parts = [batch] if k == 1 else split_batch(batch, k, rows, "FollowPlan(max_micro_batch=...)")
        params = [p for p in module.parameters() if p.requires_grad] if k > 1 else []
        grads, earlier = None, None
        for part in parts[:-1]:
            loss = training_step_loss(original(part, *args, **kwargs), "training_step")
            loss = weighted(loss, update.weight(batch_rows(part)))
            # at the fp16 GradScaler's scale and divided by it: the fp16 backward keeps its range
            got = unscaled_grads(loss, params, self._scale_before or 1.0)
            grads = list(got) if grads is None else [g if a is None else a if g is None else a + g
                                                     for a, g in zip(grads, got)]
            earlier = loss.detach() if earlier is None else earlier + loss.detach()
        out = original(parts[-1], *args, **kwargs)
        if out is None:
            if k > 1:
                raise UserError("training_step returned None for a micro-batch; FollowPlan(max_micro_batch=...) "
                                "needs a loss from every micro-batch")
            return out
        loss = weighted(training_step_loss(out, "training_step"),
                        update.weight(batch_rows(parts[-1]) if k > 1 else rows))
        if grads is not None:
            loss = _AddGrads.apply(loss + earlier, grads, *params)
        return _with_loss(out, loss)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"samples_seen": self.samples_seen, "updates": self.updates, "seed": self.seed,
                "plan": self.plan.fingerprint(), "skipped_steps": [dict(s) for s in self.skipped_steps]}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("plan") != self.plan.fingerprint() or state_dict.get("seed") != self.seed:
            raise UserError("this checkpoint was trained following another plan or seed; resume with the same "
                            "FollowPlan(plan, seed=...)")
        self.samples_seen = int(state_dict["samples_seen"])
        self.updates = int(state_dict["updates"])
        self.skipped_steps = [dict(s) for s in state_dict.get("skipped_steps", [])]


class _AddGrads(torch.autograd.Function):
    """The loss, unchanged, whose backward also hands ``grads`` to ``params`` (scaled like the loss's gradient)."""

    @staticmethod
    def forward(ctx, loss, grads, *params):
        ctx.grads = grads
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_out):
        return (grad_out, None, *[None if g is None else g * grad_out for g in ctx.grads])


def _own_sampler(trainer: "pl.Trainer") -> _PlanBatches:
    """The plan's batch sampler in the train DataLoader Lightning iterates."""
    sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
    if not isinstance(sampler, _PlanBatches):
        raise UserError("the train DataLoader is not the one FollowPlan built (did another callback replace it?); "
                        "FollowPlan must own the train DataLoader")
    return sampler


def _with_loss(out: Any, loss: torch.Tensor) -> Any:
    return {**out, "loss": loss} if isinstance(out, dict) else loss


__all__ = ["FollowPlan", "check_lightning_version"]
