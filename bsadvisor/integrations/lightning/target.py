"""A LightningModule (and LightningDataModule) as a bsadvisor ``Target``: ``target_from_lightning``.

``target_from_lightning(module, datamodule)`` wraps a LightningModule as a ``Target`` for
``bsadvisor probe``/``advise``/``validate`` (targets/loading.py calls it when a TARGET
function returns a LightningModule). It calls the module's public hooks only
(``training_step``, ``validation_step``, ``configure_optimizers``, the dataloaders and
set-up hooks), so it needs none of the Lightning loop internals FollowPlan sets.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset

from bsadvisor.core.errors import UserError
from bsadvisor.targets.target import Target

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
        return training_step_loss(model.training_step(batch, 0), "training_step")


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


def training_step_loss(out: Any, hook: str) -> torch.Tensor:
    """The loss in what a ``training_step`` returned: the tensor, or its dict's "loss"."""
    loss = out.get("loss") if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise UserError(f"{hook} returned {type(out).__name__}; return the mean loss (a scalar tensor) or a dict "
                        "with it under 'loss'")
    return loss


__all__ = ["target_from_lightning", "training_step_loss"]
