"""Shared harness for the CLI tests: run the CLI (in-process or as a process), check the one-line contract.

``run_main`` runs the CLI's entry point in this process exactly as a piped ``python -m bsadvisor`` would
show it, and is what the tests use; ``run_cli`` starts the real process, for the few smoke tests that
need one (tests/test_cli_process.py checks that both print the same).

The contract for bad input (README, docs/cli.md): exit code 2, exactly one line on stderr
starting with ``error: ``, no traceback anywhere, and nothing the user had changed or
left half-written. ``Snapshot`` records a folder's files (content and mode) so a test can
assert that a refused command left it exactly as it was.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict:
    """The environment for a CLI run (a process, or run_main's call): this checkout first on the path, 80 columns,
    one thread."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", OMP_NUM_THREADS="1")
    env.pop("FORCE_COLOR", None)
    env.update(extra)
    return env


def run_cli(argv: Iterable[str], cwd: Path, env: Optional[dict] = None, timeout: float = 120,
            stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """``python -m bsadvisor ARGV`` in ``cwd`` with stdout/stderr captured (so piped, not a terminal): about half
    a second each, so only where a fresh interpreter is the point."""
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


def refusals(flag: str, head: Iterable[str], cases: Iterable[tuple], prefix: Optional[str] = None) -> list[tuple]:
    """Rows of a bad-input table for one flag: ``(id, argv, fragments)`` with argv ``head + [flag, value]``.

    Each case is ``(name, value, *fragments)``: the row's id is ``prefix-name`` (``prefix`` defaults to the
    flag without its dashes) and the error line must name the flag and hold every fragment."""
    prefix = prefix or flag.lstrip("-")
    return [(f"{prefix}-{name}", [*head, flag, value], [flag, *fragments]) for name, value, *fragments in cases]


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


def run_main(argv: Iterable[str], cwd: Optional[Path] = None, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``bsadvisor ARGV`` in this process (``cli.app.main``): stdout, stderr and the exit code, as run_cli gives them.

    For everything that needs no fresh interpreter: a subprocess costs about half a second, this a few
    milliseconds. It reproduces what run_cli sees: ``env`` (default :func:`cli_env`, so 80 columns) is the
    environment for the call, the consoles write to a pipe (no colour, no terminal), Python's default
    warning filters print warnings to stderr, and the text is read as ``text=True`` reads a pipe. An
    exception that escapes main (a bug) is reported as exit 1 with its traceback, as the interpreter
    shows it. What the command changes in the process is put back afterwards: the environment, the
    folder, ``sys.path``, the user's modules, signal handlers and the random generators.
    """
    import io
    import traceback

    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _as_a_fresh_process(cwd, env or cli_env()) as consoles:
        sys.stdout, sys.stderr = out, err
        try:
            consoles.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 -- a bug: show it as the interpreter would
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["bsadvisor", *argv], code, _as_piped(out.getvalue()), _as_piped(err.getvalue()))


def _as_piped(text: str) -> str:
    """``text`` as ``subprocess.run(text=True)`` returns a pipe's bytes: universal newlines."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Python's default warning filters (no -W, no PYTHONWARNINGS): everything else is shown once per place.
_DEFAULT_IGNORED = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def _as_a_fresh_process(cwd: Optional[Path], env: dict):
    """The process state a fresh ``python -m bsadvisor`` would start from, for one call, put back after it.

    Yields ``bsadvisor.cli.app`` with its consoles set as in a piped subprocess: the width from
    ``env``'s COLUMNS (else 80), no colour and no terminal, whatever this process's own terminal is.
    """
    import random
    import signal
    import warnings

    import bsadvisor.cli  # noqa: F401  (registers the commands)
    from bsadvisor.cli import app as cli_app

    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    saved_modules = set(sys.modules)
    saved_streams = sys.stdout, sys.stderr
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGALRM", None)) if s is not None]
    saved_handlers = {s: signal.getsignal(s) for s in signals}
    saved_random = random.getstate()
    rngs = _generator_states()
    consoles = (cli_app.console, cli_app.err_console)
    saved_consoles = [(c._width, c._color_system, c._force_terminal) for c in consoles]
    columns = env.get("COLUMNS", "")
    try:
        os.environ.clear()
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        for c in consoles:
            c._width = int(columns) if columns.isdigit() else 80
            c._color_system, c._force_terminal = None, None
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for category in _DEFAULT_IGNORED:
                warnings.simplefilter("ignore", category, append=True)
            warnings.showwarning = _show_warning
            yield cli_app
    finally:
        sys.stdout, sys.stderr = saved_streams
        for c, (width, colors, force) in zip(consoles, saved_consoles):
            c._width, c._color_system, c._force_terminal = width, colors, force
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        _forget_user_modules(saved_modules, saved_path)
        for s, handler in saved_handlers.items():
            signal.signal(s, handler)
        random.setstate(saved_random)
        _restore_generators(rngs)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning written as the interpreter writes it, to the (captured) stderr of the call."""
    import warnings

    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _forget_user_modules(before: set, path: list) -> None:
    """Drop the modules a call imported from the user's files (a target in a test folder), so the next
    test's file of the same name is imported afresh, as in a new process; installed packages stay."""
    import sysconfig

    keep = tuple(str(Path(p).resolve()) for p in {*sysconfig.get_paths().values(), str(ROOT / "bsadvisor")} if p)
    for name in set(sys.modules) - before:
        file = getattr(sys.modules.get(name), "__file__", None)
        if name.startswith("_bsadvisor_target_") or (file and not str(Path(file).resolve()).startswith(keep)):
            sys.modules.pop(name, None)


def _generator_states() -> dict:
    """numpy's and torch's global random states, where loaded (a command seeds them)."""
    states = {}
    if "numpy" in sys.modules:
        states["numpy"] = sys.modules["numpy"].random.get_state()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        states["torch"] = (torch.random.get_rng_state(), torch.get_num_threads(), torch.get_default_dtype())
    return states


def _restore_generators(states: dict) -> None:
    if "numpy" in states:
        sys.modules["numpy"].random.set_state(states["numpy"])
    if "torch" in states:
        torch = sys.modules["torch"]
        rng, threads, dtype = states["torch"]
        torch.random.set_rng_state(rng)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
