"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserError


def check_destination(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work is done, an output file path that cannot be written.

    ``path`` must not be a folder, and its folder must exist and be writable, so a long
    measurement is never lost because of where its result was to go.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give {option} a file name such as {path / 'out.json'}")
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist; create it or choose another {option}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: folder {folder} is not writable; choose another {option}")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: str | bytes, option: str = "--out") -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and os.replace.

    The file gets the permissions a plain ``open()`` would give it (0666 less the umask),
    not mkstemp's 0600. A failure (disk full, read-only file system, no permission)
    becomes one UserError line naming the path and the reason; the old file is untouched
    and no temporary file is left behind.
    """
    path = check_destination(path, option)
    mode = "wb" if isinstance(data, bytes) else "w"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        fix = "free some space or choose" if exc.errno == errno.ENOSPC else "choose"
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; {fix} another {option}") from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def json_safe(x: Any) -> Any:
    """JSON has no NaN or infinity: turn them into null, in nested dicts and lists too."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_json(path: str | os.PathLike, doc: Any) -> Path:
    return write_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def check_schema(doc: Any, schema: str, what: str, remedy: str) -> dict:
    """``doc`` if it is a JSON object of ``schema``; otherwise a UserError naming ``what`` and the ``remedy``."""
    if not isinstance(doc, dict):
        raise UserError(f"{what} is not a JSON object; {remedy}")
    if doc.get("schema") != schema:
        raise UserError(f"{what} has schema {doc.get('schema')!r}, expected {schema!r}; {remedy}")
    return doc


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON document, turning every way it can be bad into one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found; check the path")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc}); regenerate it with bsadvisor") from None
