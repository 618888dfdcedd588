"""The one exception type that means "the user gave us something wrong".

The CLI turns a UserError into a single line on stderr and exit code 2; anything
else is a bug in bsadvisor and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Optional


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
