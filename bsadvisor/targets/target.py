"""What the user hands bsadvisor: a `Target` (model, data, loss, training settings).

A TARGET string names a zero-argument function returning a Target:
``path/to/file.py:function``, ``package.module:function`` or ``builtin:NAME``.
This module imports no torch at import time so the CLI starts fast; the checks
that need torch import it inside the functions.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bsadvisor.core.errors import UserError

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")


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
    try:
        n = len(target.train_dataset)
    except TypeError:
        raise UserError(f"{where}: train_dataset has no len(); use a map-style Dataset") from None
    if n == 0:
        raise UserError(f"{where}: train_dataset is empty")
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


def _on_path(folder: str) -> None:
    """Put ``folder`` first on sys.path (once), as ``python file.py`` does for the file's folder."""
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _load_function(spec: str) -> Callable[[], Any]:
    """The function a TARGET string names, imported without running anything else.

    A file target is loaded with its folder first on ``sys.path`` (as ``python file.py``
    runs it), so it can import the modules beside it; a ``module:function`` target is
    looked up with the current folder on ``sys.path`` too (as ``python -m`` does).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise UserError(f"TARGET {spec!r} must look like path/to/file.py:function, package.module:function "
                        "or builtin:NAME")
    module_part, func_name = spec.rsplit(":", 1)
    if module_part == "builtin":
        from bsadvisor.targets.builtins import get_builtin

        return get_builtin(func_name)
    if not func_name.isidentifier():
        raise UserError(f"TARGET {spec!r}: {func_name!r} is not a function name; write path/to/file.py:function")
    if not module_part.strip():
        raise UserError(f"TARGET {spec!r} names no file or module before the colon; "
                        "write path/to/file.py:function or package.module:function")
    path = Path(module_part)
    looks_like_file = module_part.endswith(".py") or "/" in module_part or "\\" in module_part
    if path.is_dir() and looks_like_file or path.is_file() and not module_part.endswith(".py"):
        what = "a folder" if path.is_dir() else "not a .py file"
        raise UserError(f"TARGET {spec!r}: {module_part} is {what}; give path/to/file.py:function")
    if looks_like_file:
        if not path.is_file():
            raise UserError(f"TARGET file {path} not found; check the path")
        mod_name = f"_bsadvisor_target_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        _on_path(str(path.resolve().parent))
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # the user's file failed to import
            sys.modules.pop(mod_name, None)
            raise UserError(f"TARGET file {path} raised {type(exc).__name__} on import: {exc}") from None
    else:
        if "" not in sys.path:
            _on_path(os.getcwd())
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            if exc.name and module_part.split(".")[0] == exc.name.split(".")[0]:
                raise UserError(f"TARGET module {module_part!r} not found in {os.getcwd()} or the installed "
                                "packages; run from its folder or give path/to/file.py:function") from None
            raise UserError(f"TARGET module {module_part!r} raised ModuleNotFoundError on import: {exc}") from None
        except (Exception, SystemExit) as exc:
            raise UserError(f"TARGET module {module_part!r} raised {type(exc).__name__} on import: {exc}") from None
    fn = getattr(module, func_name, None)
    if fn is None:
        raise UserError(f"TARGET {spec!r}: no function {func_name!r} in {module_part}")
    if not callable(fn):
        raise UserError(f"TARGET {spec!r}: {func_name!r} is not callable")
    return fn


def load_target(spec: str) -> Target:
    """Import and call the function named by ``spec``; return a checked Target."""
    fn = _load_function(spec)
    try:
        target = fn()
    except UserError:
        raise
    except (Exception, SystemExit) as exc:
        raise UserError(f"TARGET {spec!r} raised {type(exc).__name__}: {exc}") from None
    target = check_target(target, where=f"TARGET {spec!r}")
    if target.name == "target":
        target.name = spec
    return target
