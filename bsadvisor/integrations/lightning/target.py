"""A LightningModule (and LightningDataModule) as a bsadvisor ``Target``: ``target_from_lightning``.

``target_from_lightning(module, datamodule)`` wraps a LightningModule as a ``Target`` for
``bsadvisor probe``/``advise``/``validate`` (targets/loading.py calls it when a TARGET
function returns a LightningModule). It calls the module's public hooks only
(``training_step``, ``validation_step``, ``configure_optimizers``, the dataloaders and
set-up hooks), so it needs none of the Lightning loop internals FollowPlan sets.
"""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate

from bsadvisor.core.errors import UserError
from bsadvisor.targets.target import Target

_OPTIMIZERS = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw"}


def target_from_lightning(module: Any, datamodule: Any = None, *, metric: Optional[str] = None,
                          mode: Optional[str] = None, trainer: Any = None) -> Target:
    """A ``Target`` for ``probe``/``advise``/``validate`` from a LightningModule (and a LightningDataModule).

    - ``loss_fn(model, batch)``: ``model.training_step(batch, 0)``, its returned loss or
      its dict's "loss" (``self.log`` calls there are dropped);
    - ``train_dataset``, ``batch_size``, ``collate_fn``: the train DataLoader's
      (the datamodule's ``train_dataloader`` if it has one, else the module's), after
      ``prepare_data`` and ``setup("fit")`` as the Trainer calls them;
    - ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``optimizer_kwargs`` (β2, eps,
      amsgrad, dampening, foreach/fused, ...: every setting that differs from torch's default)
      and ``param_groups`` (when it has several: their parameters by name and the settings
      where each differs from the first): the first optimizer ``configure_optimizers``
      returns (SGD, Adam or AdamW);
    - ``max_grad_norm`` and ``precision``: the ``trainer``'s ``gradient_clip_val`` (with
      ``gradient_clip_algorithm="norm"``) and ``precision`` ("32-true", "bf16-mixed",
      "16-mixed"), when a Trainer is handed over;
    - ``eval_dataset``, ``metric_fn``: the val DataLoader's dataset, and the value
      ``validation_step`` logs with ``self.log`` under ``metric`` (default: the first one
      it logs), negated when ``mode`` is "min" (default: "min" when the name holds
      "loss", else "max"), as a Target's metric is higher-is-better.

    Lightning's batch hooks (``on_before_batch_transfer`` and the like) are not called.
    What cannot be carried over (an LR scheduler, a second optimizer, value clipping, another
    precision, gradient accumulation) is named in one warning line.
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
    optimizer, settings, left_out = _optimizer_settings(module)
    if trainer is not None:
        settings.update(_trainer_settings(trainer, left_out))
    if left_out:
        warnings.warn(f"{type(module).__name__}: bsadvisor trains without " + "; ".join(left_out)
                      + " (not carried over from Lightning)", UserWarning, stacklevel=2)
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


def _optimizer_settings(module: Any) -> tuple[str, dict, list[str]]:
    """(optimizer name, the Target's optimizer fields, what is left out) of the first optimizer
    ``configure_optimizers`` returns: lr, momentum, weight_decay, the other settings that differ from torch's
    defaults (``optimizer_kwargs``) and, for several param groups, the groups by parameter name."""
    conf = _call(module, "configure_optimizers")
    left_out = []
    if isinstance(conf, dict) and conf.get("lr_scheduler") is not None or (
            isinstance(conf, (list, tuple)) and len(conf) == 2 and isinstance(conf[0], (list, tuple))
            and conf[1]):
        left_out.append("the LR scheduler configure_optimizers returns (the plan holds the schedule)")
    while isinstance(conf, (list, tuple, dict)) and not isinstance(conf, torch.optim.Optimizer):
        if isinstance(conf, (list, tuple)) and sum(isinstance(o, torch.optim.Optimizer) for o in conf) > 1:
            left_out.append(f"optimizers after the first ({len(conf) - 1} more)")
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
    settings = {"lr": float(group["lr"]), "momentum": float(momentum),
                "weight_decay": float(group.get("weight_decay", 0.0)),
                "optimizer_kwargs": _optimizer_kwargs(type(conf), group)}
    if len(conf.param_groups) > 1:
        settings["param_groups"] = _param_groups(module, conf)
    return name, settings, left_out


#: Param-group keys a Target sets from its own fields (or per update, from the plan), or that are not settings.
_FIELDS = ("params", "lr", "momentum", "weight_decay", "nesterov", "initial_lr", "name")


def _optimizer_kwargs(cls: type, group: dict) -> dict:
    """The group's settings that differ from ``cls``'s defaults and are not a Target field (Adam's β1 is the
    momentum, so ``betas`` is carried only when β2 differs)."""
    defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items()}
    kwargs = {}
    for key, value in group.items():
        if key in _FIELDS or key not in defaults or value == defaults[key]:
            continue
        if key == "betas":
            if value[1] == defaults["betas"][1]:
                continue
            value = (float(value[0]), float(value[1]))
        kwargs[key] = value
    return kwargs


def _param_groups(module: Any, optimizer: torch.optim.Optimizer) -> list[dict]:
    """The optimizer's param groups by parameter name, each with the settings where it differs from the first."""
    names = {id(p): n for n, p in module.named_parameters()}
    first = optimizer.param_groups[0]
    groups = []
    for group in optimizer.param_groups:
        missing = [p for p in group["params"] if id(p) not in names]
        if missing:
            raise UserError("configure_optimizers put a tensor that is not one of the module's parameters in a "
                            "param group; a target's param groups name the module's parameters")
        groups.append({"params": [names[id(p)] for p in group["params"]],
                       **{k: (tuple(v) if isinstance(v, list) else v) for k, v in group.items()
                          if k not in ("params", "initial_lr", "name") and v != first.get(k)}})
    return groups


#: Lightning's precision names that are a Target's precision.
_PRECISIONS = {"32-true": "32", "32": "32", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


def _trainer_settings(trainer: Any, left_out: list[str]) -> dict:
    """max_grad_norm and precision from a Trainer; what they cannot say goes to ``left_out``."""
    settings = {}
    clip = getattr(trainer, "gradient_clip_val", None)
    algorithm = getattr(trainer, "gradient_clip_algorithm", None) or "norm"
    algorithm = str(getattr(algorithm, "value", algorithm))  # Lightning's GradClipAlgorithmType, or its string
    if clip:
        if algorithm == "norm":
            settings["max_grad_norm"] = float(clip)
        else:
            left_out.append(f"Trainer(gradient_clip_algorithm={algorithm!r}) clipping (only norm clipping is carried)")
    precision = str(getattr(trainer, "precision", "32-true"))
    if precision in _PRECISIONS:
        settings["precision"] = _PRECISIONS[precision]
    else:
        left_out.append(f"Trainer(precision={precision!r}) (bsadvisor trains '32', 'bf16-mixed' or '16-mixed')")
    if getattr(trainer, "accumulate_grad_batches", 1) != 1:
        left_out.append(f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) (the plan decides "
                        "each update's batch)")
    return settings


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
