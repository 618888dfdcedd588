"""Option objects declared once: the one mechanism behind ConvertOptions, ProbeOptions and ValidateOptions.

An option object is a frozen dataclass derived from :class:`OptionObject`: checked when it is
built (its ``check``), so it always holds clean values, and every check names the PARAMETER
(``max_fraction must be in (0, 1], got 2``); the CLI shows the flag the user typed
(``--max-fraction``), read from the same declarations.

A field that a user can set is declared with :func:`option`: its default (the dataclass
default), and in the field's metadata a :class:`Declared` holding its type and range (a
``core.schema`` spec), its help text, its command-line flag and the groups it belongs to
(the commands that take it, the name lists the library keeps). The command-line parameters,
the ``--config`` spec, the plan file's ``inputs`` spec and the name groups are all read from
these declarations (:func:`declarations`, :func:`names`), never written again by hand.
Pure Python, no torch.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core import schema as S

#: The Python type a command-line parameter gets for each kind of spec.
_KINDS = {S.Int: int, S.Num: float, S.Str: str, S.Bool: bool}


class Declared:
    """One option as a user sees it, beside its default (the dataclass field's).

    ``spec``: its type and range (bsadvisor.core.schema), the one every reader checks it
    against (the ``--config`` file, a plan file's ``inputs``); None for an option no file
    holds. ``help``: the command-line help (``shown``: the default it states; Ellipsis: the
    declared default when there is one). ``flag``: its command-line spelling (default
    ``--name-with-dashes``). ``groups``: the commands and name lists it belongs to.
    ``kind``: the command-line type when the spec's is not it (a Path for a file name).
    ``recorded``: the spec of the value a plan records, when that differs from what a user
    gives (a schedule is recorded as its description, which a CSV table makes longer); False:
    a plan file's own ``extra`` rule checks it.
    """

    __slots__ = ("name", "spec", "help", "shown", "flag", "groups", "kind", "recorded", "default")

    def __init__(self, spec: Optional[S.Spec] = None, help: str = "", *, shown: Any = ..., flag: Optional[str] = None,
                 groups: tuple[str, ...] = (), kind: Optional[type] = None, recorded: Any = None,
                 name: Optional[str] = None, default: Any = None):
        self.spec, self.help, self.shown, self.flag, self.groups = spec, help, shown, flag, frozenset(groups)
        self.kind, self.recorded, self.name, self.default = kind, recorded, name, default

    def named(self, name: str, default: Any) -> "Declared":
        """This declaration, bound to its field's name and default (set once, when the class is read)."""
        self.name, self.default = name, default
        if self.flag is None:
            self.flag = "--" + name.replace("_", "-")
        return self

    @property
    def cli_type(self) -> type:
        """The command-line parameter's type."""
        return self.kind or _KINDS[type(self.spec)]

    @property
    def help_text(self) -> str:
        """The help with its closing ``[default: ...]`` (escaped for rich markup) when it states one."""
        shown = self.shown
        if shown is ...:
            shown = None if self.default is None or isinstance(self.default, bool) else self.default
        if shown is None:
            return self.help
        if isinstance(shown, float):
            shown = f"{shown:g}"
        return f"{self.help}  \\[default: {shown}]"

    def file_spec(self) -> Optional[S.Spec]:
        """The spec of this option in a file that may leave it null (a plan's ``inputs``); None: not checked."""
        if self.recorded is False or self.spec is None:
            return None
        return dataclasses.replace(self.recorded or self.spec, nullable=True)


def option(default: Any = None, spec: Optional[S.Spec] = None, help: str = "", **declared: Any) -> Any:
    """A dataclass field for an option: ``default``, and a :class:`Declared` in its metadata."""
    return dataclasses.field(default=default, metadata={"option": Declared(spec, help, **declared)})


def declarations(cls: type) -> dict[str, Declared]:
    """The declared options of an option class, by name, in field order (fields without one are left out)."""
    found = cls.__dict__.get("_declared")
    if found is None:
        found = {f.name: f.metadata["option"].named(f.name, f.default)
                 for f in dataclasses.fields(cls) if "option" in f.metadata}
        setattr(cls, "_declared", found)
    return found


def names(declared: dict[str, Declared], group: str) -> tuple[str, ...]:
    """The names in ``group``, in declaration order."""
    return tuple(name for name, d in declared.items() if group in d.groups)


def check_value(declared: Declared, value: Any) -> Any:
    """``value`` checked against the option's declared type and range, worded by core.checks (the error names
    the parameter): a whole number, a number (an interval when bounded on both sides), one of the choices."""
    spec, name = declared.spec, declared.name
    if isinstance(spec, S.Int):
        return checks.integer(name, value, low=spec.low, high=spec.high)
    if isinstance(spec, S.Num) and spec.low is not None and spec.high is not None:
        return checks.within(name, value, spec.low, spec.high, low_open=spec.low_open, high_open=spec.high_open)
    if isinstance(spec, S.Num):
        return checks.number(name, value, low=spec.low, high=spec.high, low_open=spec.low_open,
                             high_open=spec.high_open)
    if isinstance(spec, S.Str) and spec.choices:
        return checks.choice(name, value, spec.choices)
    raise TypeError(f"{name}: no declared check for {spec!r}")  # a bug in a declaration, not the user's input


class OptionObject:
    """The base of the frozen option objects: ``check`` runs once, when the object is built.

    A subclass is a ``@dataclass(frozen=True)`` and writes ``check``: it raises a UserError
    naming the parameter (bsadvisor.core.checks) and keeps each cleaned value with ``_set``.
    """

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        raise NotImplementedError

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # a frozen dataclass keeps the checked value

    def _check_declared(self, *names: str, optional: bool = False) -> None:
        """Check each named field against its declaration (:func:`check_value`) and keep the clean value;
        with ``optional``, None (not given) passes."""
        declared = declarations(type(self))
        for name in names:
            value = getattr(self, name)
            if not (optional and value is None):
                self._set(name, check_value(declared[name], value))
