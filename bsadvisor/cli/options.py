"""The conversion options as Typer parameters, derived from their declarations (core.options), shared by
convert-schedule, advise and validate.

Every option defaults to None here, meaning "not given": a --config file or a probe may
still fill it, and what is left takes ConvertOptions' default (declared once, where the help
texts below read it too). No torch.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

from bsadvisor.core.declared import Declared, declarations
from bsadvisor.core.options import CONVERSION_OPTIONS


def typer_type(declared: Declared) -> Any:
    """The Typer parameter type of a declared conversion option: optional (None: not given), its flag, and its help
    stating the default it takes when nothing else fills it."""
    return Annotated[Optional[declared.cli_type], typer.Option(declared.flag, help=declared.help_text,
                                                               show_default=False)]


def _parameter(declared: Declared, given_only: bool) -> inspect.Parameter:
    """A command parameter for a declared option: a conversion option is None until given (a --config file or
    a probe may fill it); any other option (ValidateOptions') has its declared default, shown by Typer."""
    if given_only:
        return inspect.Parameter(declared.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                 annotation=typer_type(declared))
    kind = declared.cli_type if declared.default is not None else Optional[declared.cli_type]
    return inspect.Parameter(declared.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=declared.default,
                             annotation=Annotated[kind, typer.Option(declared.flag, help=declared.help)])


def command_options(group: Optional[str] = None, first: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The conversion options a command takes, in the order its --help lists them: those in ``group`` (None:
    every one, convert-schedule's), in declaration order, ``first`` ahead of the others."""
    names = [name for name, d in CONVERSION_OPTIONS.items() if group is None or group in d.groups]
    return (*first, *(name for name in names if name not in first))


def with_options(names: tuple[str, ...], into: str = "options", of: Optional[type] = None) -> Callable:
    """Give a command the declared options ``names`` as Typer parameters, in place of its parameter ``into``;
    the command's body gets them there: the conversion options as one dict (name → value, None when not
    given), another option class's (``of``, e.g. ValidateOptions) as that object, built from what was parsed.

    Typer reads a command's parameters from its signature, so the signature is generated from the
    declarations: a new option needs no edit here, nor in the commands that take its group.
    """
    declared = CONVERSION_OPTIONS if of is None else declarations(of)
    added = [_parameter(declared[name], given_only=of is None) for name in names]
    build = dict if of is None else of

    def wrap(body: Callable) -> Callable:
        own = inspect.signature(body, eval_str=True)
        params = list(own.parameters.values())
        at = [p.name for p in params].index(into)

        @functools.wraps(body)
        def command(**given: Any) -> Any:
            given[into] = build(**{name: given.pop(name) for name in names})
            return body(**given)

        signature = own.replace(parameters=params[:at] + added + params[at + 1:])
        command.__signature__ = signature
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()
                                   if p.annotation is not inspect.Parameter.empty}
        return command

    return wrap


Config = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML file with any of these options (keys as option names, e.g. batch-size = 128); "
                     "the command line wins.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the plan as JSON (schema bsadvisor.plan/2).")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Write the plan JSON to this file (atomically).", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file that this command did "
                                         "not write (without it such a file is refused; an earlier output of the "
                                         "same kind is replaced).")]
