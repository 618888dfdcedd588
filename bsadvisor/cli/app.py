"""The `bsadvisor` command line: a thin layer over the library.

This module holds the Typer ``app``, the consoles and ``main``; it imports no command.
Each command lives in its own module of ``bsadvisor.cli`` and registers itself on ``app``;
``bsadvisor.cli`` imports them all.
Nothing here imports torch: `--help` and `convert-schedule` start instantly, and the
commands that train import torch inside their function bodies.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
from typing import Any, Optional

import typer
from rich.console import Console

import bsadvisor
from bsadvisor.core.errors import lost_peer
from bsadvisor.core.machine import busy_cpu_warning, cpu_count, load_average, passive_wait

app = typer.Typer(
    name="bsadvisor",
    help="Batch-size tuning advisor for PyTorch: replace LR decay by batch growth "
         "(Smith et al. 2018), measured on your own model.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# No automatic highlighting: rich's highlighter runs regular expressions over every printed string, and
# over a user's 100,000-character name they take minutes. Styles are given explicitly where wanted.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

# Typer ≥ 0.25 vendors its own click; find its exception classes through a public one.
_MRO = {c.__name__: c for c in typer.BadParameter.__mro__}
_UsageError = _MRO["UsageError"]


@app.callback()
def _root() -> None:
    """Batch-size tuning advisor for PyTorch: replace LR decay by batch growth (Smith et al. 2018),
    measured on your own model. Run `bsadvisor COMMAND --help` for a command's options and examples."""


def emit_json(doc: Any) -> None:
    """Print a JSON document to stdout (no rich markup, no wrapping)."""
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def one_line(text: str) -> str:
    """``text`` with its line breaks turned into spaces, and user text too long to read shortened (:func:`clip`)."""
    return clip(" ".join(part.strip() for part in str(text).splitlines() if part.strip()))


#: An unbroken run of characters longer than this (a 5,001-digit number, a 100,000-character name) is shortened.
LONGEST_WORD = 200
#: A message longer than this keeps its start and its end (the fix), with the middle left out.
LONGEST_LINE = 2000


def clip(text: str) -> str:
    """``text`` fit for one readable line: each run of more than LONGEST_WORD non-blank characters becomes its
    first 100 and a count, and a line still over LONGEST_LINE keeps its first and last parts."""
    text = re.sub(r"\S{%d,}" % (LONGEST_WORD + 1), lambda m: f"{m.group()[:100]}…({len(m.group()):,} characters)", text)
    if len(text) > LONGEST_LINE:
        text = f"{text[:LONGEST_LINE - 400]} … {text[-380:]}"
    return text


def _command():
    """The click command of ``app``, with every required argument really required.

    Some typer/click pairs (typer 0.16 with click ≥ 8.3) pass None for a missing required
    argument instead of failing; the check below makes it one ``error:`` line instead.
    """
    cmd = typer.main.get_command(app)
    for sub in getattr(cmd, "commands", {}).values():
        sub.help = unwrap_paragraphs(sub.help)
        for param in sub.params:
            if param.param_type_name == "argument" and param.required and param.callback is None:
                param.callback = _required
    return cmd


def unwrap_paragraphs(text: Optional[str]) -> Optional[str]:
    """A docstring's paragraphs each made one line, so the help fills the terminal's width at any width.

    Typer's rich mode keeps the docstring's line breaks, so a source line longer than the terminal
    wraps and leaves a short orphan line behind. A paragraph starting with ``\b`` keeps its breaks
    (click's marker for preformatted text), and what follows ``\f`` (typer's cut) is left as it is.
    """
    if not text:
        return text
    shown, cut, rest = text.partition("\f")
    paragraphs = [para if para.lstrip().startswith("\b") else " ".join(line.strip() for line in para.splitlines())
                  for para in shown.split("\n\n")]
    return "\n\n".join(paragraphs) + cut + rest


def _required(ctx, param, value):
    if value is None:
        raise bsadvisor.UserError(f"missing argument {param.human_readable_name}; see {ctx.command_path} --help")
    return value


def as_typed(exc: bsadvisor.UserError, argv: Optional[list[str]] = None) -> str:
    """The message with the parameters it names spelled as the user typed them on the command line.

    Library errors name parameters (``max_fraction must be in (0, 1], got 2``, ``batch_size
    600 is larger than dataset_size 500``); the command that ran shows its options instead
    (``--max-fraction must be ...``): each parameter's flag is read from the command's parameters,
    which are the options' declarations (core.declared). A name that is no option of that command
    stays as it is.
    """
    text = str(exc)
    names = getattr(exc, "parameters", ()) or ((exc.parameter,) if exc.parameter else ())
    if not names:
        return text
    args = sys.argv[1:] if argv is None else argv
    command = getattr(_command(), "commands", {}).get(args[0]) if args else None
    flags = {}
    for param in getattr(command, "params", []):
        if param.opts and param.opts[0].startswith("--"):
            # typer names a parameter that would shadow a builtin with a trailing _ (format_ for --format)
            flags[param.name.rstrip("_")] = param.opts[0]
    for name in names:
        if name in flags:
            # a whole word, not part of another (max_batch_size) or of a file name (probe.json)
            text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", flags[name], text)
    return text


class Interrupted(Exception):
    """Ctrl-C in a command that has something to add (how to resume): main prints it, exit 130."""

    code = 130


class Stopped(Interrupted):
    """A command that stopped at its time limit (validate --max-minutes): main prints the line, exit ``code``."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class OverTime(BaseException):
    """Raised by :func:`time_limit`'s alarm: a BaseException, so no ``except Exception`` (the user's or ours)
    swallows it on its way out."""


#: The probe's hard limit is PROBE_LIMIT_FACTOR × --budget-seconds + PROBE_GRACE_S: only a hang reaches it.
#: The budget bounds the noise draws, not the memory and throughput ladder, and a loaded 2-core machine runs
#: 5-20× slower (builtin:charlm's probe, 12 s budget, took over 84 s there), so the limit is generous.
PROBE_LIMIT_FACTOR = 10.0
PROBE_GRACE_S = 300.0


def probe_limit(budget_seconds: float) -> float:
    """The hard limit on a probe's wall time for ``--budget-seconds``: PROBE_LIMIT_FACTOR × the budget plus
    PROBE_GRACE_S."""
    return PROBE_LIMIT_FACTOR * float(budget_seconds) + PROBE_GRACE_S


#: The longest time limit set as an OS timer (about three years; setitimer overflows near 9·10⁸ s).
MAX_ALARM_S = 1e8


@contextlib.contextmanager
def time_limit(seconds: Optional[float]):
    """Raise :class:`OverTime` in the main thread after ``seconds`` (None: no limit).

    A real SIGALRM, so a ``time.sleep`` or a blocking read in the user's code is interrupted too
    (a long C call returns first). Without SIGALRM (Windows) or outside the main thread: no limit.
    """
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread() \
            or not seconds < MAX_ALARM_S:  # past the OS timer's range (about 9·10⁸ s): no limit, not an OverflowError
        yield
        return

    def on_alarm(signum, frame):
        raise OverTime()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def probe_time_limit(budget_seconds: float):
    """:func:`time_limit` for a probe: past :func:`probe_limit` one UserError line says the user's code hung."""
    limit = probe_limit(budget_seconds)
    try:
        with time_limit(limit):
            yield
    except OverTime:
        raise bsadvisor.UserError(f"the probe was stopped after {limit:g} s, {PROBE_LIMIT_FACTOR:g} × --budget-seconds "
                        f"{float(budget_seconds):g} plus {PROBE_GRACE_S:g} s: the target's code (loss_fn, the model or the data) did not return; "
                        "check it for a hang") from None


def warn_busy_cpu() -> None:
    """One warning line when the CPU is oversubscribed (core.machine); call it once torch is loaded.

    Only on a terminal: a pipe or a log (scripts, CI, the tests) keeps stderr exactly the
    command's own lines, whatever else the machine is running.
    """
    if not err_console.is_terminal:
        return
    import torch

    text = busy_cpu_warning(torch.get_num_threads(), cpu_count(), load_average(), os.environ.get("OMP_WAIT_POLICY"))
    if text:
        err_console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: bad input becomes one line on stderr and exit code 2.

    First of all, before any command can load torch, OpenMP threads are told to wait passively
    (core.machine.passive_wait: unless the user chose a policy): on a shared CPU spinning threads
    make a run many times slower, and the numbers do not change.
    """
    passive_wait()
    try:
        code = _command()(args=argv, prog_name="bsadvisor", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into exit code 130 without a word
            raise Interrupted("interrupted")
    except Interrupted as exc:
        err_console.print(str(exc) or "interrupted", markup=False, highlight=False, soft_wrap=True)
        _exit(exc.code)
    except bsadvisor.UserError as exc:  # one line, whatever the message holds (a user's exception text may span lines)
        err_console.print(f"error: {one_line(as_typed(exc, argv))}", markup=False, highlight=False, soft_wrap=True)
        _exit(2)
    except _UsageError as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help was already printed
            _exit(0)
        where = ctx.command_path if ctx is not None else "bsadvisor"
        option = getattr(exc, "option_name", None)
        if type(exc).__name__ == "NoSuchOption" and option:
            close = getattr(exc, "possibilities", None) or []
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            msg = f"unknown option {option}{hint}"
        else:
            msg = one_line(exc.format_message())
        err_console.print(f"error: {clip(msg)}; see {where} --help", markup=False, highlight=False, soft_wrap=True)
        _exit(2)
    except typer.Abort:
        err_console.print("aborted", markup=False)
        _exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        _exit(130)
    except RuntimeError as exc:
        lost = lost_peer(exc)
        if lost is None:
            raise
        err_console.print(f"error: {clip(lost)}", markup=False, highlight=False, soft_wrap=True)
        _exit(2)
    _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> None:
    """sys.exit, except in a torchrun job: there end the process at once (distributed.exit_job)."""
    tdist = sys.modules.get("torch.distributed")  # never import torch here
    if tdist is not None and tdist.is_available() and tdist.is_initialized():
        from bsadvisor.runtime.distributed import exit_job

        exit_job(code)
    sys.exit(code)
