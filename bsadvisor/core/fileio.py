"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from bsadvisor.core.errors import UserError


def check_destination(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work is done, an output file path that cannot be written.

    ``path`` must not be a folder, and its folder must exist and be writable, so a long
    measurement is never lost because of where its result was to go.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        is_dir, folder_ok = path.is_dir(), folder.is_dir()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a folder we may not enter
        raise UserError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}; choose another {option}") from None
    if is_dir:
        raise UserError(f"cannot write {path}: it is a folder; give {option} a file name such as {path / 'out.json'}")
    if not folder_ok:
        raise UserError(f"cannot write {path}: folder {folder} does not exist; create it or choose another {option}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: folder {folder} is not writable; choose another {option}")
    return path


#: The ending of every temporary file ``write_atomic`` makes (``.NAME.XXXXXXXX.bsadvisor.tmp``): only files of
#: this shape are ever taken for orphans, never a user's own ``.draft.tmp``.
TEMP_SUFFIX = ".bsadvisor.tmp"
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def is_own_temp(name: str) -> bool:
    """Whether a file name is one of ``write_atomic``'s temporary files (``.NAME.XXXXXXXX.bsadvisor.tmp``)."""
    return _TEMP_NAME.fullmatch(name) is not None


#: Prefixes of the schemas of the files each command writes with --out (check_replace).
PLAN_FILES = ("bsadvisor.plan/",)
PROBE_FILES = ("bsadvisor.probe/",)
#: A file this large is no bsadvisor JSON file: check_replace does not read it.
_MAX_OWN_BYTES = 64 * 2**20


def check_replace(path: str | os.PathLike, schemas: tuple[str, ...] = (), overwrite: bool = False,
                  option: str = "--out") -> Path:
    """:func:`check_destination`, and the one ``--out`` rule of every command that writes a file.

    An existing file is replaced only when it is one of the command's own (a JSON document whose
    ``schema`` starts with one of ``schemas``: an earlier plan, an earlier probe) or with
    ``overwrite``; anything else (your notes, a data set, the input plan of ``export``) is refused
    before any work is done. A command whose output has no schema (``export``) passes no
    ``schemas``: it replaces an existing file only with ``overwrite``.
    """
    path = check_destination(path, option)
    try:
        exists = path.exists() or path.is_symlink()
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; choose another {option}") from None
    if overwrite or not exists:
        return path
    if schemas and _schema_of(path).startswith(schemas):
        return path
    if not schemas:
        raise UserError(f"{option} {path} already exists, and this command's output has no schema to recognise "
                        f"it by; add --overwrite to replace it, or choose another {option}")
    what = " or ".join(s.rstrip("/") for s in schemas)
    raise UserError(f"{option} {path} already exists and is not a {what} file (one this command writes); add "
                    f"--overwrite to replace it, or choose another {option}")


def _schema_of(path: Path) -> str:
    """The ``schema`` of a small JSON file ("" for anything else: too large, not JSON, unreadable, a link)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_OWN_BYTES:
            return ""
        doc = read_json(path)
    except (UserError, OSError, ValueError):
        return ""
    schema = doc.get("schema") if isinstance(doc, dict) else None
    return schema if isinstance(schema, str) else ""


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX,
                                   dir=path.parent if str(path.parent) else ".")
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
        kind = "a list" if isinstance(doc, list) else "empty" if doc is None else f"a single {type(doc).__name__}"
        raise UserError(f"{what} is not a JSON object (it is {kind}); {remedy}")
    found = doc.get("schema")
    if found is None:
        raise UserError(f"{what} has no 'schema' field (expected {schema!r}); {remedy}")
    if found != schema:
        shown = repr(found) if isinstance(found, str) and len(found) <= 60 else "that is not a schema name"
        raise UserError(f"{what} has schema {shown}, expected {schema!r}; {remedy}")
    return doc


#: Plan and probe files are kilobytes; anything past this is not one (a checkpoint, a data set).
MAX_JSON_BYTES = 256 * 2**20
#: Longest integer literal accepted: far past 2**63, far below Python's 4300-digit parse limit.
_MAX_INT_DIGITS = 40


def _int_literal(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Refused(f"holds an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _float_literal(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"holds the number {text[:40]}, too large for a float")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"holds {name}, which JSON does not allow (bsadvisor writes null for a missing number)")


class _Refused(ValueError):
    pass


def read_json(path: str | os.PathLike, what: str = "file", remedy: str = "regenerate it with bsadvisor") -> Any:
    """Read a JSON document, turning every way it can be bad into one UserError line.

    Refused: a missing or unreadable path, a folder, an empty, binary or huge file,
    malformed JSON, NaN/Infinity literals, numbers that overflow a float, integers of
    more than 40 digits, and nesting too deep for the parser.
    """
    path = Path(path)
    head = f"{what} {path}"
    try:
        if path.is_dir():
            raise UserError(f"{head} is a folder, not a JSON file; give the file's path")
        if not path.is_file():
            raise UserError(f"{head} not found; check the path")
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise UserError(f"{head} is {size / 2**20:.0f} MiB, too large for a bsadvisor JSON file; "
                            "is it the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {head}: {exc.strerror or exc}; check the path and its permissions") from None
    if not data.strip():
        raise UserError(f"{head} is empty; {remedy}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{head} is not a text (UTF-8) file; is it the right file? {remedy}") from None
    try:
        return json.loads(text, parse_int=_int_literal, parse_float=_float_literal, parse_constant=_constant)
    except _Refused as exc:
        raise UserError(f"{head} {exc}; {remedy}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{head} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                        f"{remedy}") from None
    except (RecursionError, MemoryError):
        raise UserError(f"{head} is nested too deeply to be a bsadvisor file; {remedy}") from None
    except ValueError as exc:  # anything else the parser refuses
        raise UserError(f"{head} is not valid JSON ({str(exc)[:120]}); {remedy}") from None


LOCK_NAME = ".bsadvisor.lock"


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``folder/.bsadvisor.lock`` while one command writes there.

    A second command that tries to lock the same folder is refused with one UserError line
    at once (no waiting). The kernel drops the lock when the process ends, even by SIGKILL,
    so a killed run never leaves the folder locked. The lock file itself stays (removing it
    would race with a process opening it) and is empty. Use as a context manager.
    """

    def __init__(self, folder: str | os.PathLike, option: str = "--out", command: str = "bsadvisor"):
        self.folder, self.option, self.command = Path(folder), option, command
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        import fcntl  # here: POSIX only, and every core module imports this one

        path = self.folder / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # 0666 less the umask
        except OSError as exc:
            raise UserError(f"cannot lock {self.folder}: {exc.strerror or exc}; choose another {self.option}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{self.folder} is in use by another {self.command} (it holds the lock {path}); wait for it "
                            f"to finish or choose another {self.option}") from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            pass
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def remove_orphan_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files ``write_atomic`` leaves when killed mid-write (``.NAME.XXXXXXXX.bsadvisor.tmp``).

    Only names of that shape (:func:`is_own_temp`) are touched: a user's ``.draft.tmp`` stays.
    Call it only while holding the folder's lock (:class:`FolderLock`): then no other writer
    can own them. Returns the files removed.
    """
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if is_own_temp(p.name) and p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


#: The record, in a folder bsadvisor writes (validate's --out), of the files it wrote there: the only files it
#: ever replaces or deletes (``--overwrite``), so a user's own file of the same name is never touched.
MANIFEST_NAME = ".bsadvisor-manifest.json"
MANIFEST_SCHEMA = "bsadvisor.manifest/1"


def _relative(name: Any) -> bool:
    """A manifest entry: a relative path inside the folder (no ``..``, not absolute, not empty)."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "." not in p.parts


def read_manifest(folder: str | os.PathLike) -> set[str]:
    """The files (paths relative to ``folder``) bsadvisor recorded writing there; empty without a manifest.

    A manifest that is a link, damaged or of another schema names nothing: nothing is then taken as ours.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        if path.is_symlink() or not path.is_file():
            return set()
        doc = read_json(path)
    except (UserError, OSError):
        return set()
    files = doc.get("files") if isinstance(doc, dict) and doc.get("schema") == MANIFEST_SCHEMA else None
    return {f for f in files if _relative(f)} if isinstance(files, list) else set()


def write_manifest(folder: str | os.PathLike, names: Any) -> None:
    """Record ``names`` (relative paths) as bsadvisor's files in ``folder`` (atomically, replacing the record)."""
    write_json(Path(folder) / MANIFEST_NAME, {"schema": MANIFEST_SCHEMA, "files": sorted(set(names))})


def inside_without_links(folder: str | os.PathLike, name: str) -> Optional[Path]:
    """``folder/name`` when no part of the way from ``folder`` to it is a symbolic link (None otherwise)."""
    path = Path(folder)
    for part in Path(name).parts:
        path = path / part
        try:
            if path.is_symlink():
                return None
        except OSError:
            return None
    return path


def own_files(folder: str | os.PathLike) -> list[Path]:
    """The files of ``folder``'s manifest that exist as regular files reached without a link: what may be deleted."""
    found = []
    for name in sorted(read_manifest(folder)):
        path = inside_without_links(folder, name)
        try:
            if path is not None and path.is_file():
                found.append(path)
        except OSError:
            pass
    return found
