"""The one exception type that means "the user gave us something wrong".

The CLI turns a UserError into a single line on stderr and exit code 2; anything
else is a bug in bsadvisor and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Union


class UserError(ValueError):
    """Bad input: the message says what is wrong and how to fix it, in one line.

    ``parameter``: when the message is about one parameter's value it starts with the
    parameter's name (``max_fraction must be in (0, 1], got 2``) and names it here, so the
    CLI can show the option the user typed instead (``--max-fraction must be ...``).
    A message that relates several parameters (``batch_size 600 is larger than dataset_size
    500``) names them all in ``parameters``; the CLI spells each as its option.
    """

    def __init__(self, message: str = "", parameter: str | None = None, parameters: tuple[str, ...] = ()):
        super().__init__(message)
        self.parameter = parameter
        self.parameters = tuple(parameters) or ((parameter,) if parameter else ())


class ArgumentTypeError(UserError, TypeError):
    """A library call given an argument of the wrong type (a string for a Plan, None for an optimizer).

    A TypeError for library users, as Python's own functions raise; a UserError too, so the CLI,
    should one reach it, shows it as one line.
    """


#: What gloo, NCCL or the store say when another process of the job has gone.
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused",
              "socket timeout", "nccl communicator was aborted")


def lost_peer(exc: BaseException) -> Optional[str]:
    """One line for a torchrun job whose other process died (killed, or failed first), else None.

    A surviving rank's next collective fails inside gloo/NCCL with a C++ message (and, uncaught, a
    traceback) that says nothing of the cause: torch.distributed's DistError types, or the transport's
    words while a process group is up. Never imports torch.
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    tdist = sys.modules.get("torch.distributed")
    in_job = tdist is not None and tdist.is_available() and tdist.is_initialized()
    if not (type(exc).__name__.startswith("Dist") or in_job and any(w in text.lower() for w in _PEER_LOST)):
        return None
    return ("another process of the torchrun job stopped (killed, or failed first: see its output), so this one "
            f"cannot go on: {first}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" without one): torch's and DDP's errors run to many lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def raised(exc: BaseException, limit: Optional[int] = None) -> str:
    """``Type: first line of its message`` (``Type`` alone without one), the line at most ``limit`` characters."""
    line = first_line(exc)[:limit]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class user_code:
    """A guard around a call into the user's code (model, loss_fn, metric_fn, a TARGET, a dataset's ``__len__``).

    ``with user_code(lambda exc: f"metric_fn raised {raised(exc)}"): ...``: anything the block raises
    that is one of ``catch`` (by default every Exception and ``sys.exit()``), but a UserError (already
    one line; ``let_through``), becomes ``message(exc)``: a string (one UserError line) or an exception
    to raise (e.g. the probe's OutOfMemory). It is raised without a traceback of the user's code, and
    the failed call's frames are dropped, so the tensors they held (an out-of-memory trial's) are freed.
    """

    def __init__(self, message: Callable[[BaseException], Union[str, BaseException]],
                 catch: tuple[type[BaseException], ...] = (Exception, SystemExit),
                 let_through: tuple[type[BaseException], ...] = (UserError,)):
        self.message, self.catch, self.let_through = message, catch, let_through

    def __enter__(self) -> "user_code":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, self.let_through) or not isinstance(exc, self.catch):
            return False
        error = self.message(exc)
        error = UserError(error) if isinstance(error, str) else error
        exc.__traceback__ = None  # the user's frames (and their tensors) go now, not with the new error
        del tb
        raise error from None
