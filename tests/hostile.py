"""Shared harness for hostile-input tests: run the real CLI, check the one-line contract.

The contract for bad input (README, docs/cli.md): exit code 2, exactly one line on stderr
starting with ``error: ``, no traceback anywhere, and nothing the user had changed or
left half-written. ``Snapshot`` records a folder's files (content and mode) so a test can
assert that a refused command left it exactly as it was.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict:
    """The environment for a CLI subprocess: this checkout first on the path, 80 columns, one thread."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", OMP_NUM_THREADS="1")
    env.pop("FORCE_COLOR", None)
    env.update(extra)
    return env


def run_cli(argv: Iterable[str], cwd: Path, env: Optional[dict] = None, timeout: float = 120,
            stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """``python -m bsadvisor ARGV`` in ``cwd`` with stdout/stderr captured (so piped, not a terminal)."""
    return subprocess.run([sys.executable, "-m", "bsadvisor", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=env or cli_env(), timeout=timeout, input=stdin)


def assert_one_line_error(r: subprocess.CompletedProcess, fragments: Iterable[str] = ()) -> str:
    """Exit 2, one ``error:`` line on stderr containing every fragment (case-insensitive), no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout[-800:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-2000:]
    line = lines[0]
    assert line.startswith("error: "), line
    for frag in fragments:
        assert frag.lower() in line.lower(), (frag, line)
    return line


class Snapshot:
    """The files under a folder (relative path → (sha256, mode)); equal snapshots mean nothing changed."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files = self._take()

    def _take(self) -> dict:
        out = {}
        for p in sorted(self.folder.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(self.folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        return out

    def assert_unchanged(self) -> None:
        now = self._take()
        added, removed = sorted(set(now) - set(self.files)), sorted(set(self.files) - set(now))
        changed = sorted(k for k in set(now) & set(self.files) if now[k] != self.files[k])
        assert not (added or removed or changed), {"added": added, "removed": removed, "changed": changed}


def run_main(argv: Iterable[str], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``bsadvisor ARGV`` in this process (``cli.app.main``): stdout, stderr and the exit code, as run_cli gives them.

    For refusals that need no fresh interpreter: a subprocess costs about half a second, this a few
    milliseconds. An exception that escapes main (a bug) is reported as exit 1 with its traceback,
    as the real CLI would show it.
    """
    import contextlib
    import io
    import traceback

    from bsadvisor.cli import app as cli_app
    import bsadvisor.cli  # noqa: F401  (registers the commands)

    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli_app.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # noqa: BLE001 -- a bug: show it as the interpreter would
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["bsadvisor", *argv], code, out.getvalue(), err.getvalue())
