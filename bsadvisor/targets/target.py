"""What the user hands bsadvisor: a `Target` (model, data, loss, training settings).

``check_target`` checks one field by field. Loading a Target from a TARGET string is
targets/loading.py; the built-in examples are targets/builtins.py. This module imports
no torch at import time so the CLI starts fast; the checks that need torch import it
inside the functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from bsadvisor.core.errors import UserError

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
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

    def __post_init__(self) -> None:
        self.optimizer = str(self.optimizer).lower()

    @property
    def dataset_size(self) -> int:
        return len(self.train_dataset)

    def make_optimizer(self, params=None, lr: float | None = None, momentum: float | None = None):
        """The torch optimizer this target trains with (SGD family or Adam family)."""
        import torch

        params = self.model.parameters() if params is None else params
        lr = self.lr if lr is None else lr
        momentum = self.momentum if momentum is None else momentum
        if self.optimizer in ("sgd", "nesterov"):
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=self.weight_decay,
                                   nesterov=self.optimizer == "nesterov" and momentum > 0)
        betas = (momentum if momentum > 0 else 0.9, 0.999)
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=betas, weight_decay=self.weight_decay)

    def collate(self, items: list):
        if self.collate_fn is not None:
            return self.collate_fn(items)
        from torch.utils.data import default_collate

        return default_collate(items)


def check_target(target: Any, where: str = "target") -> Target:
    """Validate a Target's fields; raise UserError naming the first problem."""
    if not isinstance(target, Target):
        raise UserError(f"{where} returned {type(target).__name__}, not a bsadvisor.Target; "
                        "return bsadvisor.Target(model=..., train_dataset=..., loss_fn=..., batch_size=..., lr=...)")
    import torch

    if not isinstance(target.model, torch.nn.Module):
        raise UserError(f"{where}: model is {type(target.model).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in target.model.parameters()):
        raise UserError(f"{where}: the model has no trainable parameters; nothing to measure")
    if any(p.is_meta for p in target.model.parameters()):
        raise UserError(f"{where}: the model is on the meta device (its weights have no values); create it on "
                        "a real device, or call model.to_empty(device='cpu') and initialise the weights")
    try:
        n = len(target.train_dataset)
    except TypeError:
        raise UserError(f"{where}: train_dataset has no len(); use a map-style Dataset") from None
    except Exception as exc:  # noqa: BLE001 -- the user's __len__ raised, or returned a negative number
        raise UserError(f"{where}: len(train_dataset) raised {type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:200]}; its __len__ must return the number of "
                        "examples") from None
    if n == 0:
        raise UserError(f"{where}: train_dataset is empty")
    if n > MAX_DATASET_SIZE:
        raise UserError(f"{where}: train_dataset says it has {n:.3g} examples, more than bsadvisor can shuffle "
                        f"(at most {MAX_DATASET_SIZE:,}: each epoch is a permutation of every index, 8 bytes each); "
                        "check its __len__, or train on a subset")
    if target.eval_dataset is not None:
        try:
            len(target.eval_dataset)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{where}: len(eval_dataset) raised {type(exc).__name__}; its __len__ must return the "
                            "number of examples") from None
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
    return target


def batchnorm_layers(model) -> list[str]:
    """The names of the model's BatchNorm layers (any ``torch.nn.modules.batchnorm._BatchNorm``, SyncBatchNorm
    too): their statistics depend on the batch, which the probe, advise and validate each have to say."""
    import torch

    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
