"""What the user hands bsadvisor: a `Target` (model, data, loss, training settings).

``check_target`` checks one field by field. Loading a Target from a TARGET string is
targets/loading.py; the built-in examples are targets/builtins.py. This module imports
no torch at import time so the CLI starts fast; the checks that need torch import it
inside the functions.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from bsadvisor.core.defaults import ADAM_BETA1, ADAM_FAMILY, OPTIMIZERS, SGD_FAMILY
from bsadvisor.core.errors import UserError, first_line, raised, user_code

#: Target.precision: Lightning's names for full precision, bf16 autocast, and fp16 autocast with a GradScaler.
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
#: Keys of optimizer_kwargs that a Target field (or the plan, per update) sets instead: where each goes.
_OWN_FIELDS = {"lr": "Target.lr", "momentum": "Target.momentum", "weight_decay": "Target.weight_decay",
               "params": "the model", "nesterov": "optimizer='nesterov'"}
#: The largest training set a Target may have: every epoch draws a permutation of all its indices (int64).
MAX_DATASET_SIZE = 2**31


@dataclass
class Target:
    """A training setup to measure or validate.

    ``loss_fn(model, batch)`` returns a scalar tensor: the *mean* loss over the batch.
    ``metric_fn(model, batch)`` returns a float: the mean metric over the batch,
    higher is better (e.g. accuracy). ``batch`` is whatever ``collate_fn`` (default:
    torch's default collate) makes of a list of dataset items.
    """

    model: Any
    train_dataset: Any
    loss_fn: Callable[[Any, Any], Any]
    batch_size: int
    lr: float
    momentum: float = 0.0
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    eval_dataset: Optional[Any] = None
    metric_fn: Optional[Callable[[Any, Any], float]] = None
    collate_fn: Optional[Callable[[list], Any]] = None
    name: str = "target"
    metadata: dict = field(default_factory=dict)
    optimizer_kwargs: dict = field(default_factory=dict)
    max_grad_norm: Optional[float] = None
    precision: str = "32"
    param_groups: Optional[list] = None

    def __post_init__(self) -> None:
        self.optimizer = str(self.optimizer).lower()
        self.precision = str(self.precision)

    @property
    def beta1(self) -> float:
        """The momentum the target trains with: ``momentum``; for Adam at 0, β1 of ``optimizer_kwargs['betas']``
        or ADAM_BETA1 (torch's default)."""
        if self.momentum > 0 or self.optimizer not in ADAM_FAMILY:
            return float(self.momentum)
        betas = (self.optimizer_kwargs or {}).get("betas")
        return float(betas[0]) if betas is not None else ADAM_BETA1

    def recipe(self) -> dict:
        """What the target trains with, as plain data (results.json, the report, a checkpoint's identity):
        the optimizer with its keyword arguments, weight decay, gradient clipping and precision."""
        return {"optimizer": self.optimizer, "optimizer_kwargs": _plain(dict(self.optimizer_kwargs or {})),
                "weight_decay": float(self.weight_decay), "max_grad_norm": self.max_grad_norm,
                "precision": self.precision, "param_groups": _plain(self.param_groups)}

    @property
    def dataset_size(self) -> int:
        return len(self.train_dataset)

    def make_optimizer(self, params=None, lr: float | None = None, momentum: float | None = None):
        """The torch optimizer this target trains with (SGD family or Adam family)."""
        import torch  # here: importing Target loads no torch

        params = self.model.parameters() if params is None else params
        lr = self.lr if lr is None else lr
        momentum = self.momentum if momentum is None else momentum
        kwargs = dict(self.optimizer_kwargs or {})
        params = self._groups(params)
        if self.optimizer in SGD_FAMILY:
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=self.weight_decay,
                                   nesterov=self.optimizer == "nesterov" and momentum > 0, **kwargs)
        beta2 = kwargs.pop("betas", (0.9, 0.999))[1]  # β1 is the momentum (the plan's, per update)
        betas = (momentum if momentum > 0 else self.beta1, beta2)
        return _optimizer_class(self.optimizer)(params, lr=lr, betas=betas, weight_decay=self.weight_decay, **kwargs)

    def _groups(self, params):
        """``params`` split into ``param_groups`` (lists of parameter names with their own settings), if any."""
        if not self.param_groups:
            return params
        named = {id(p): n for n, p in self.model.named_parameters()}
        by_name = {named.get(id(p)): p for p in params}
        return [{**{k: v for k, v in g.items() if k != "params"}, "params": [by_name[n] for n in g["params"]]}
                for g in self.param_groups]

    def collate(self, items: list):
        if self.collate_fn is not None:
            return self.collate_fn(items)
        from torch.utils.data import default_collate  # here: as torch above

        return default_collate(items)


def check_target(target: Any, where: str = "target") -> Target:
    """Validate a Target's fields; raise UserError naming the first problem."""
    if not isinstance(target, Target):
        raise UserError(f"{where} returned {type(target).__name__}, not a bsadvisor.Target; "
                        "return bsadvisor.Target(model=..., train_dataset=..., loss_fn=..., batch_size=..., lr=...)")
    import torch  # here: importing Target loads no torch

    if not isinstance(target.model, torch.nn.Module):
        raise UserError(f"{where}: model is {type(target.model).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in target.model.parameters()):
        raise UserError(f"{where}: the model has no trainable parameters; nothing to measure")
    if any(p.is_meta for p in target.model.parameters()):
        raise UserError(f"{where}: the model is on the meta device (its weights have no values); create it on "
                        "a real device, or call model.to_empty(device='cpu') and initialise the weights")
    try:
        with user_code(lambda exc: f"{where}: len(train_dataset) raised {raised(exc, limit=200)}; its __len__ must "
                                   "return the number of examples", catch=(Exception,), let_through=(TypeError,)):
            n = len(target.train_dataset)  # the user's __len__ may raise, or return a negative number
    except TypeError:
        raise UserError(f"{where}: train_dataset has no len(); use a map-style Dataset") from None
    if n == 0:
        raise UserError(f"{where}: train_dataset is empty")
    if n > MAX_DATASET_SIZE:
        raise UserError(f"{where}: train_dataset says it has {n:.3g} examples, more than bsadvisor can shuffle "
                        f"(at most {MAX_DATASET_SIZE:,}: each epoch is a permutation of every index, 8 bytes each); "
                        "check its __len__, or train on a subset")
    if target.eval_dataset is not None:
        with user_code(lambda exc: f"{where}: len(eval_dataset) raised {type(exc).__name__}; its __len__ must "
                                   "return the number of examples", catch=(Exception,), let_through=()):
            len(target.eval_dataset)
    if not isinstance(target.metadata, dict):
        raise UserError(f"{where}: metadata must be a dict (such as {{'schedule': ..., 'epochs': ...}}), got "
                        f"{type(target.metadata).__name__}")
    if not callable(target.loss_fn):
        raise UserError(f"{where}: loss_fn is not callable; give loss_fn(model, batch) -> scalar tensor")
    if isinstance(target.batch_size, bool) or not isinstance(target.batch_size, int) or target.batch_size < 1:
        raise UserError(f"{where}: batch_size must be a positive integer, got {target.batch_size!r}")
    if target.batch_size > n:
        raise UserError(f"{where}: batch_size {target.batch_size} exceeds the dataset size {n}")
    for name in ("lr", "momentum", "weight_decay"):
        v = getattr(target, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{where}: {name} must be a finite number, got {v!r}")
    if target.lr <= 0:
        raise UserError(f"{where}: lr must be positive, got {target.lr}")
    if not 0 <= target.momentum < 1:
        raise UserError(f"{where}: momentum must be in [0, 1), got {target.momentum}")
    if target.optimizer not in OPTIMIZERS:
        raise UserError(f"{where}: optimizer must be one of {', '.join(OPTIMIZERS)}, got {target.optimizer!r}")
    if target.eval_dataset is not None and target.metric_fn is None:
        raise UserError(f"{where}: eval_dataset given without metric_fn(model, batch) -> float")
    _check_recipe(target, where)
    return target


def _optimizer_class(name: str) -> type:
    """The torch.optim class of an OPTIMIZERS name."""
    import torch  # here: importing Target loads no torch

    return torch.optim.SGD if name in SGD_FAMILY else torch.optim.Adam if name == "adam" else torch.optim.AdamW


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and anything not a number, string or container as its repr (for JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _check_recipe(target: Target, where: str) -> None:
    """optimizer_kwargs against the optimizer's signature, param_groups against the model, max_grad_norm and
    precision: each a UserError naming the field."""
    import torch  # here: importing Target loads no torch

    kwargs = target.optimizer_kwargs
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise UserError(f"{where}: optimizer_kwargs must be a dict of keyword arguments such as "
                        f"{{'betas': (0.9, 0.95), 'eps': 1e-8}}, got {type(kwargs).__name__}")
    cls = _optimizer_class(target.optimizer)
    accepted = [n for n in inspect.signature(cls).parameters if n not in _OWN_FIELDS]
    for key in kwargs:
        if key in _OWN_FIELDS:
            raise UserError(f"{where}: optimizer_kwargs sets {key!r}; give it as {_OWN_FIELDS[key]} instead")
        if key not in accepted:
            raise UserError(f"{where}: optimizer_kwargs has {key!r}, which torch.optim.{cls.__name__} does not take "
                            f"(it takes {', '.join(accepted)})")
    if "betas" in kwargs:
        betas = kwargs["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise UserError(f"{where}: optimizer_kwargs['betas'] must be two numbers in [0, 1), such as (0.9, 0.95), "
                            f"got {betas!r}")
        if target.momentum > 0 and target.momentum != betas[0]:
            raise UserError(f"{where}: momentum {target.momentum} and optimizer_kwargs['betas'][0] {betas[0]} "
                            "disagree; Adam's β1 is the momentum: give one of them")
    if target.param_groups is not None:
        _check_groups(target, where)
    # the values themselves (eps < 0, a bad dampening...): the optimizer's own check, on a stand-in; torch's
    # ValueError / TypeError names the value
    with user_code(lambda exc: f"{where}: torch.optim.{cls.__name__} refused optimizer_kwargs {_plain(kwargs)}: "
                               f"{first_line(exc)[:200]}", catch=(Exception,)):
        if (kwargs or target.param_groups) and type(target).make_optimizer is Target.make_optimizer:
            target.make_optimizer([torch.zeros(1, requires_grad=True)] if not target.param_groups else None)
    clip = target.max_grad_norm
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip)
                             or clip <= 0):
        raise UserError(f"{where}: max_grad_norm must be a positive number (the global gradient norm to clip to) "
                        f"or None, got {clip!r}")
    if target.precision not in PRECISIONS:
        raise UserError(f"{where}: precision must be one of {', '.join(map(repr, PRECISIONS))} (Lightning's names), "
                        f"got {target.precision!r}")


def _check_groups(target: Target, where: str) -> None:
    """param_groups: a list of dicts whose 'params' name each trainable parameter exactly once."""
    groups = target.param_groups
    trainable = [n for n, p in target.model.named_parameters() if p.requires_grad]
    if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), (list, tuple))
                                               for g in groups):
        raise UserError(f"{where}: param_groups must be a list of dicts, each with 'params': a list of parameter "
                        "names (model.named_parameters()) and its own settings")
    named = [n for g in groups for n in g["params"]]
    unknown = sorted(set(named) - set(dict(target.model.named_parameters())))
    if unknown:
        raise UserError(f"{where}: param_groups name {unknown[0]!r}, not a parameter of the model")
    if sorted(named) != sorted(trainable):
        missing = sorted(set(trainable) - set(named)) or sorted({n for n in named if named.count(n) > 1})
        raise UserError(f"{where}: param_groups must name every trainable parameter once; {missing[0]!r} is "
                        f"{'missing' if missing[0] not in named else 'named twice'}")


def batchnorm_layers(model) -> list[str]:
    """The names of the model's BatchNorm layers (any ``torch.nn.modules.batchnorm._BatchNorm``, SyncBatchNorm
    too): their statistics depend on the batch, which the probe, advise and validate each have to say."""
    import torch  # here: importing Target loads no torch

    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
