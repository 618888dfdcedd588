"""PyTorch Lightning follows a plan: the ``FollowPlan`` callback, and LightningModules as TARGETs.

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

Lightning has no public hook for a per-update batch size, so FollowPlan sets a few
attributes of the Trainer's fit loop (``_data_source``, ``max_batches``,
``_combined_loader.limits``) and of the LightningModule (``training_step`` while fitting);
each is named where it is set. Written against Lightning 2.6 (tests/test_lightning.py).

``target_from_lightning(module, datamodule)`` wraps a LightningModule as a ``Target`` for
``bsadvisor probe``/``advise``/``validate`` (targets/loading.py calls it when a TARGET
function returns a LightningModule).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan
from bsadvisor.runtime.sampler import PlanBatchSampler
from bsadvisor.runtime.scheduler import BatchSizeScheduler
from bsadvisor.runtime.step import map_tensors, split_share
from bsadvisor.targets.target import Target

try:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities import rank_zero_warn
except ImportError as exc:  # the optional extra is missing
    raise ImportError("bsadvisor.integrations.lightning needs PyTorch Lightning: "
                      "pip install 'bsadvisor[lightning]'") from exc


class _PlanBatches(PlanBatchSampler, BatchSampler):
    """A ``PlanBatchSampler`` shaped as Lightning wants a custom batch sampler.

    Under DDP Lightning rebuilds the train DataLoader with a ``DistributedSampler``
    (``use_distributed_sampler``); for a ``BatchSampler`` subclass it re-creates it with
    that sampler as the ``sampler`` argument (lightning.pytorch.utilities.data,
    ``_dataloader_init_kwargs_resolve_sampler``). The sharding is the plan's own (``rank``,
    ``world_size``: contiguous shares of each global batch), so the injected sampler is
    kept only as Lightning's ``set_epoch`` target and never drawn from.

    It starts at sample position ``samples`` (a resumed run). A rank whose share of a
    global batch is empty (the last, partial batch smaller than the world size) gets the
    batch's first example as a stand-in, which FollowPlan weights by zero: an empty batch
    cannot be collated, and every rank must join the update's gradient all-reduce.
    """

    def __init__(self, sampler: Any, plan: Plan, dataset_size: int, seed: int, rank: int, world_size: int,
                 samples: int):
        PlanBatchSampler.__init__(self, plan, dataset_size, seed=seed, rank=rank, world_size=world_size)
        self.sampler = sampler
        self.seek(samples)

    def seek(self, samples: int) -> None:
        """Stand at sample position ``samples``: its epoch, and the offset inside it."""
        self.epoch, self.offset = divmod(int(samples), self.dataset_size)
        self._advance = False

    def __iter__(self):
        perm = self.permutation(self.epoch)
        for a, b in self.spans(self.epoch, self.offset):
            self.offset = b
            share = split_share(perm[a:b], self.rank, self.world_size)
            yield (share if len(share) else perm[a:a + 1]).tolist()


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
        """The factor on the mean loss of ``rows`` of this rank's share (runtime/step.py, train_step):
        DDP averages over ranks, so ∑ over ranks and micro-batches is the global batch's mean."""
        return 0.0 if self.share == 0 else self.world * rows / self.global_batch


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
        from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

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
        q, r = divmod(global_batch, self._world)
        update = _Update(global_batch, q + (self._rank < r), self._world)
        rows = _rows(batch)
        if rows is not None and rows != max(update.share, 1):
            raise UserError(f"FollowPlan expected a batch of {max(update.share, 1)} examples at sample {s} of the "
                            f"plan, got {rows}: the train DataLoader was changed after FollowPlan built it")
        for scheduler in self._schedulers:
            scheduler.seek(s)
        self._update = update

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._update is None:
            return
        self.samples_seen += self._update.global_batch
        self.updates += 1
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
        k = 1 if self.max_micro_batch is None else -(-rows // self.max_micro_batch)
        parts = [batch] if k == 1 else _split(batch, k, rows)
        params = [p for p in module.parameters() if p.requires_grad] if k > 1 else []
        grads, earlier = None, None
        for part in parts[:-1]:
            loss = _weighted(_loss_of(original(part, *args, **kwargs), "training_step"), update, _rows(part))
            got = torch.autograd.grad(loss, params, allow_unused=True)
            grads = list(got) if grads is None else [g if a is None else a if g is None else a + g
                                                     for a, g in zip(grads, got)]
            earlier = loss.detach() if earlier is None else earlier + loss.detach()
        out = original(parts[-1], *args, **kwargs)
        if out is None:
            if k > 1:
                raise UserError("training_step returned None for a micro-batch; FollowPlan(max_micro_batch=...) "
                                "needs a loss from every micro-batch")
            return out
        loss = _weighted(_loss_of(out, "training_step"), update, _rows(parts[-1]) if k > 1 else rows)
        if grads is not None:
            loss = _AddGrads.apply(loss + earlier, grads, *params)
        return _with_loss(out, loss)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"samples_seen": self.samples_seen, "updates": self.updates, "seed": self.seed,
                "stages": _fingerprint(self.plan)}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("stages") != _fingerprint(self.plan) or state_dict.get("seed") != self.seed:
            raise UserError("this checkpoint was trained following another plan or seed; resume with the same "
                            "FollowPlan(plan, seed=...)")
        self.samples_seen = int(state_dict["samples_seen"])
        self.updates = int(state_dict["updates"])


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


def _fingerprint(plan: Plan) -> list:
    """What identifies a plan in a checkpoint: each stage's samples, batch and LR."""
    return [[s.start_sample, s.end_sample, s.batch_size, s.lr] for s in plan.stages]


def _leaves(batch: Any) -> list:
    """The leaves of a batch (tensors, or anything that is not a list, tuple or dict)."""
    if isinstance(batch, (list, tuple)):
        return [leaf for b in batch for leaf in _leaves(b)]
    if isinstance(batch, dict):
        return [leaf for b in batch.values() for leaf in _leaves(b)]
    return [batch]


def _rows(batch: Any) -> Optional[int]:
    """Examples in a batch: the length of its first tensor (None: no tensor in it)."""
    return next((len(t) for t in _leaves(batch) if isinstance(t, torch.Tensor) and t.dim() > 0), None)


def _split(batch: Any, k: int, rows: int) -> list:
    """``batch`` as k near-equal micro-batches along the first dimension (runtime/step.py, train_step's split)."""
    for leaf in _leaves(batch):
        if not isinstance(leaf, torch.Tensor) or leaf.dim() == 0 or len(leaf) != rows:
            raise UserError(f"FollowPlan(max_micro_batch=...) splits batches of tensors with {rows} rows each; this "
                            f"batch holds a {type(leaf).__name__} that is not one")
    return [map_tensors(lambda t, i=i: t.tensor_split(k)[i], batch) for i in range(k)]


def _loss_of(out: Any, hook: str) -> torch.Tensor:
    """The loss in what a ``training_step`` returned: the tensor, or its dict's "loss"."""
    loss = out.get("loss") if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise UserError(f"{hook} returned {type(out).__name__}; return the mean loss (a scalar tensor) or a dict "
                        "with it under 'loss'")
    return loss


def _weighted(loss: torch.Tensor, update: _Update, rows: int) -> torch.Tensor:
    w = update.weight(rows)
    return loss if w == 1.0 else loss * w  # (skipped at 1: the one-process loss stays bit for bit)


def _with_loss(out: Any, loss: torch.Tensor) -> Any:
    return {**out, "loss": loss} if isinstance(out, dict) else loss


# -- LightningModule as a Target ---------------------------------------------------------------
_OPTIMIZERS = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw"}


def target_from_lightning(module: Any, datamodule: Any = None, *, metric: Optional[str] = None,
                          mode: Optional[str] = None) -> Target:
    """A ``Target`` for ``probe``/``advise``/``validate`` from a LightningModule (and a LightningDataModule).

    - ``loss_fn(model, batch)``: ``model.training_step(batch, 0)``, its returned loss or
      its dict's "loss" (``self.log`` calls there are dropped);
    - ``train_dataset``, ``batch_size``, ``collate_fn``: the train DataLoader's
      (the datamodule's ``train_dataloader`` if it has one, else the module's), after
      ``prepare_data`` and ``setup("fit")`` as the Trainer calls them;
    - ``optimizer``, ``lr``, ``momentum``, ``weight_decay``: the first optimizer
      ``configure_optimizers`` returns (SGD, Adam or AdamW);
    - ``eval_dataset``, ``metric_fn``: the val DataLoader's dataset, and the value
      ``validation_step`` logs with ``self.log`` under ``metric`` (default: the first one
      it logs), negated when ``mode`` is "min" (default: "min" when the name holds
      "loss", else "max"), as a Target's metric is higher-is-better.

    Lightning's batch hooks (``on_before_batch_transfer`` and the like) are not called.
    """
    if not all(callable(getattr(module, hook, None)) for hook in ("training_step", "configure_optimizers")):
        raise UserError(f"expected a LightningModule, got {type(module).__name__}")
    if mode not in (None, "min", "max"):
        raise UserError(f"mode must be 'min' or 'max', got {mode!r}")
    holder = _prepare(module, datamodule)
    if not _defines(holder, "train_dataloader"):
        raise UserError(f"{type(module).__name__} has no train_dataloader; return (module, datamodule) from the "
                        "TARGET function")
    loader = _call(holder, "train_dataloader")
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        raise UserError(f"train_dataloader returned {type(loader).__name__}; a target needs one DataLoader over a "
                        "map-style dataset")
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None)
    optimizer, settings = _optimizer_settings(module)
    from torch.utils.data import default_collate

    target = Target(model=module, train_dataset=loader.dataset, loss_fn=_lightning_loss,
                    batch_size=batch_size, optimizer=optimizer, name=type(module).__name__,
                    collate_fn=None if loader.collate_fn is default_collate else loader.collate_fn, **settings)
    val_holder = next((h for h in (datamodule, module) if h is not None and _defines(h, "val_dataloader")), None)
    if _defines(module, "validation_step") and val_holder is not None:
        val = _call(val_holder, "val_dataloader")
        if isinstance(val, DataLoader) and not isinstance(val.dataset, IterableDataset):
            target.eval_dataset = val.dataset
            target.metric_fn = functools.partial(_logged_metric, key=metric, mode=mode)
    return target


def _prepare(module: Any, datamodule: Any) -> Any:
    """Run the set-up hooks the Trainer runs before fitting; the object that holds the dataloaders."""
    holder = module
    if datamodule is not None:
        if not callable(getattr(datamodule, "train_dataloader", None)):
            raise UserError(f"expected a LightningDataModule next to the module, got {type(datamodule).__name__}")
        for hook, args in (("prepare_data", ()), ("setup", ("fit",))):
            _call(datamodule, hook, *args)
        if _defines(datamodule, "train_dataloader"):
            holder = datamodule
    for hook, args in (("setup", ("fit",)), ("configure_model", ())):
        if _defines(module, hook):
            _call(module, hook, *args)
    return holder


def _call(obj: Any, hook: str, *args) -> Any:
    """``obj.hook(*args)``, its failure a UserError naming the hook."""
    try:
        return getattr(obj, hook)(*args)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{type(obj).__name__}.{hook} raised {type(exc).__name__}: {exc}") from None


def _defines(obj: Any, hook: str) -> bool:
    """True when ``obj``'s class defines ``hook`` itself, not only Lightning's base class (either namespace)."""
    return any(hook in vars(c) for c in type(obj).__mro__
               if c.__module__.split(".")[0] not in ("lightning", "pytorch_lightning", "torch", "builtins"))


def _optimizer_settings(module: Any) -> tuple[str, dict]:
    """(optimizer name, {lr, momentum, weight_decay}) of the first optimizer ``configure_optimizers`` returns."""
    conf = _call(module, "configure_optimizers")
    while isinstance(conf, (list, tuple, dict)) and not isinstance(conf, torch.optim.Optimizer):
        conf = conf.get("optimizer") if isinstance(conf, dict) else (conf[0] if conf else None)
    if not isinstance(conf, torch.optim.Optimizer):
        raise UserError(f"configure_optimizers returned no optimizer ({type(conf).__name__})")
    name = _OPTIMIZERS.get(type(conf))
    if name is None:
        raise UserError(f"configure_optimizers returned {type(conf).__name__}; a Lightning target needs SGD, Adam or "
                        "AdamW (or write a bsadvisor.Target, docs/target.md)")
    group = conf.param_groups[0]
    momentum = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    if name == "sgd" and group.get("nesterov"):
        name = "nesterov"
    return name, {"lr": float(group["lr"]), "momentum": float(momentum),
                  "weight_decay": float(group.get("weight_decay", 0.0))}


def _lightning_loss(model: Any, batch: Any) -> torch.Tensor:
    """``training_step``'s loss, with ``self.log`` dropped (there is no Trainer to log to)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        raise UserError("a LightningModule TARGET trains in one process here (torchrun wraps it in DDP, which only "
                        "calls forward); validate it without torchrun, or train it with Lightning and FollowPlan")
    if not callable(getattr(model, "training_step", None)):
        raise UserError("a LightningModule target measures through training_step; use --estimator microbatch "
                        "or two-batch (per-example calls the model's forward only)")
    with _logging_to({}, model):
        return _loss_of(model.training_step(batch, 0), "training_step")


def _logged_metric(model: Any, batch: Any, key: Optional[str], mode: Optional[str]) -> float:
    """The value ``validation_step`` logs under ``key`` (or first), higher-is-better."""
    logged: dict = {}
    with _logging_to(logged, model):
        model.validation_step(batch, 0)
    if not logged:
        raise UserError("validation_step logged nothing; log the metric with self.log(name, value)")
    if key is None:
        key = next(iter(logged))
    if key not in logged:
        raise UserError(f"validation_step logged {', '.join(map(repr, logged))}, not {key!r}")
    value = float(logged[key])
    lower_is_better = mode == "min" or (mode is None and "loss" in key.lower())
    return -value if lower_is_better else value


class _logging_to:
    """While inside: ``model.log``/``log_dict`` write into ``logged`` (first value per name) instead of a Trainer."""

    def __init__(self, logged: dict, model: Any):
        self.logged, self.model = logged, model

    def __enter__(self):
        logged = self.logged

        def log(name, value, *args, **kwargs):
            logged.setdefault(name, value.detach() if isinstance(value, torch.Tensor) else value)

        def log_dict(values, *args, **kwargs):
            for name, value in values.items():
                log(name, value)

        vars(self.model).update(log=log, log_dict=log_dict)  # instance attributes shadow the methods
        return self

    def __exit__(self, *exc):
        vars(self.model).pop("log", None)
        vars(self.model).pop("log_dict", None)
        return False


__all__ = ["FollowPlan", "target_from_lightning"]
