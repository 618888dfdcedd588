"""Loading a Target from a TARGET string: a file, a module, or a built-in example.

A TARGET string names a zero-argument function returning a Target:
``path/to/file.py:function``, ``package.module:function`` or ``builtin:NAME``.
Nothing but that function's module is imported (no torch at import time), and every
failure is a UserError that names the TARGET.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError, user_code
from bsadvisor.targets.target import Target, check_target


def _on_path(folder: str) -> None:
    """Put ``folder`` first on sys.path (once), as ``python file.py`` does for the file's folder."""
    if folder not in sys.path:
        sys.path.insert(0, folder)


@contextlib.contextmanager
def _no_bytecode():
    """Import the user's code without writing ``__pycache__`` into their folders: a bsadvisor command
    leaves the user's files as it found them."""
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        yield
    finally:
        sys.dont_write_bytecode = writes


def _kind(path: Path) -> tuple[bool, bool]:
    """(is a folder, is a file); a folder on the way that cannot be read (PermissionError) is one UserError line."""
    try:
        return path.is_dir(), path.is_file()
    except (OSError, ValueError) as exc:  # no permission, a name too long, a NUL byte
        raise UserError(f"TARGET file {checks.show(str(path), 80)} cannot be read: "
                        f"{getattr(exc, 'strerror', None) or exc}; check the path and its folders' permissions") from None


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
        from bsadvisor.targets.builtins import get_builtin  # here: it imports torch (a file target loads its own)

        return get_builtin(func_name)
    if not func_name.isidentifier():
        raise UserError(f"TARGET {spec!r}: {func_name!r} is not a function name; write path/to/file.py:function")
    if not module_part.strip():
        raise UserError(f"TARGET {spec!r} names no file or module before the colon; "
                        "write path/to/file.py:function or package.module:function")
    path = Path(module_part)
    looks_like_file = module_part.endswith(".py") or "/" in module_part or "\\" in module_part
    is_dir, is_file = _kind(path)
    if is_dir and looks_like_file or is_file and not module_part.endswith(".py"):
        what = "a folder" if is_dir else "not a .py file"
        raise UserError(f"TARGET {spec!r}: {module_part} is {what}; give path/to/file.py:function")
    if looks_like_file:
        if not is_file:
            raise UserError(f"TARGET file {path} not found; check the path")
        mod_name = f"_bsadvisor_target_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        _on_path(str(path.resolve().parent))
        try:
            with user_code(lambda exc: f"TARGET file {path} raised {type(exc).__name__} on import: {exc}",
                           let_through=()), _no_bytecode():
                loader_spec.loader.exec_module(module)
        except UserError:  # the user's file failed to import
            sys.modules.pop(mod_name, None)
            raise
    else:
        if "" not in sys.path:
            _on_path(os.getcwd())
        with user_code(lambda exc: _import_failure(module_part, exc), let_through=()), _no_bytecode():
            module = importlib.import_module(module_part)
    fn = getattr(module, func_name, None)
    if fn is None:
        raise UserError(f"TARGET {spec!r}: no function {func_name!r} in {module_part}")
    if not callable(fn):
        raise UserError(f"TARGET {spec!r}: {func_name!r} is not callable")
    return fn


def _import_failure(module_part: str, exc: BaseException) -> str:
    """The line for a TARGET module that failed to import: not found (the module itself), or what it raised."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and module_part.split(".")[0] == exc.name.split(".")[0]:
        return (f"TARGET module {module_part!r} not found in {os.getcwd()} or the installed "
                "packages; run from its folder or give path/to/file.py:function")
    return f"TARGET module {module_part!r} raised {type(exc).__name__} on import: {exc}"


def _from_lightning(obj: Any) -> bool:
    """True when ``obj`` (or a pair's first item) is an instance of a PyTorch Lightning class.

    Told by the classes' modules, so Lightning is imported only when the TARGET returned
    one of its objects (then it is installed).
    """
    first = obj[0] if isinstance(obj, tuple) and obj else obj
    return any(c.__module__.split(".")[0] in ("lightning", "pytorch_lightning") for c in type(first).__mro__)


def _lightning_target(obj: Any, spec: str) -> Target:
    """A LightningModule, or a (LightningModule, LightningDataModule) pair, as a Target (integrations/lightning/)."""
    parts = obj if isinstance(obj, tuple) else (obj,)
    if len(parts) > 2:
        raise UserError(f"TARGET {spec!r} returned a tuple of {len(parts)}; return a LightningModule or a "
                        "(LightningModule, LightningDataModule) pair")
    from bsadvisor.integrations.lightning.target import target_from_lightning  # here: only this loads Lightning

    try:
        return target_from_lightning(*parts)
    except UserError as exc:
        raise UserError(f"TARGET {spec!r}: {exc}") from None


def load_target(spec: str) -> Target:
    """Import and call the function named by ``spec``; return a checked Target.

    The function may also return a LightningModule (or a (module, datamodule) pair):
    it is wrapped as a Target (``target_from_lightning``).
    """
    fn = _load_function(spec)
    with user_code(lambda exc: f"TARGET {spec!r} raised {type(exc).__name__}: {exc}"):
        target = fn()
    if _from_lightning(target):
        target = _lightning_target(target, spec)
    target = check_target(target, where=f"TARGET {spec!r}")
    if target.name == "target":
        target.name = spec
    return target
