"""The one exception type that means "the user gave us something wrong".

The CLI turns a UserError into a single line on stderr and exit code 2; anything
else is a bug in bsadvisor and keeps its traceback.
"""
from __future__ import annotations


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
