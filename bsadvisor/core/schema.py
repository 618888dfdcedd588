"""Declarative checks of the documents bsadvisor reads: plan and probe JSON, the TOML --config.

Each file type has one spec (``plan.PLAN_SPEC``, ``probe_result.PROBE_SPEC``, the
--config spec in ``bsadvisor.cli.convert``) built from the small vocabulary below: a
field's type, its range, whether it is required, and for objects and lists the specs of
what they hold.
``validate`` walks a document against its spec once and either returns the cleaned
values (integral floats as ints, ``null`` as NaN where a number may be missing) or
raises one ``UserError`` line that names the file, the field's path and the fix:

    plan file x.json: stages[2].batch_size must be a whole number ≥ 1, got 'big';
    regenerate it with bsadvisor convert-schedule --out

Numbers are decided by ``bsadvisor.core.checks`` (NaN, infinity, booleans, 5000-digit
integers and out-of-range values all fail there); this module only words the answer.
Pure Python, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError


class Invalid(Exception):
    """A field is wrong: ``path`` (e.g. ``stages[2].lr``) and what is wrong with it."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path or 'the document'} {problem}")
        self.path, self.problem = path, problem


def show(value: Any) -> str:
    """A short description of a (possibly hostile) value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    return checks.show(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Spec:
    """What one value may be. ``check`` returns the cleaned value or raises ``Invalid``."""

    nullable: bool = False

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, value: Any, path: str) -> Any:
        if value is None:
            if self.nullable:
                return self.null_value()
            raise Invalid(path, f"must be {self.describe()}, got null")
        return self._check(value, path)

    def null_value(self) -> Any:
        return None

    def _check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def _bad(self, value: Any, path: str) -> Invalid:
        return Invalid(path, f"must be {self.describe()}, got {show(value)}")


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _range_words(low, high, low_open=False, high_open=False) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '≥'} {_fmt(low)}")
    if high is not None and high != checks.MAX_INT:
        parts.append(f"{'<' if high_open else '≤'} {_fmt(high)}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Int(Spec):
    """A whole number (128.0 is accepted as 128) in [low, high]."""

    low: Optional[int] = None
    high: Optional[int] = checks.MAX_INT
    nullable: bool = False

    def describe(self) -> str:
        rng = _range_words(self.low, self.high)
        return "a whole number" + (f" {rng}" if rng else "")

    def _check(self, value, path):
        try:
            return checks.integer(path, value, low=self.low, high=self.high)
        except UserError:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > checks.MAX_INT:
                raise Invalid(path, f"must be a whole number below 2**63, got {show(value)}") from None
            raise self._bad(value, path) from None


@dataclass(frozen=True)
class Num(Spec):
    """A finite number in the given range; ``null`` passes when nullable (as NaN with ``null_nan``)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    null_nan: bool = False  # JSON writes NaN/inf as null: read it back as NaN

    def describe(self) -> str:
        rng = _range_words(self.low, self.high, self.low_open, self.high_open)
        return "a finite number" + (f" {rng}" if rng else "")

    def null_value(self):
        return math.nan if self.null_nan else None

    def _check(self, value, path):
        try:
            return checks.number(path, value, low=self.low, high=self.high, low_open=self.low_open,
                                 high_open=self.high_open)
        except UserError:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > checks.MAX_INT:
                raise Invalid(path, f"must be a number below 2**63, got {show(value)}") from None
            raise self._bad(value, path) from None


@dataclass(frozen=True)
class Str(Spec):
    """Text, optionally one of ``choices``."""

    choices: Optional[tuple] = None
    nullable: bool = False
    max_len: int = 100_000

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        return "text"

    def _check(self, value, path):
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            raise self._bad(value, path)
        if len(value) > self.max_len:
            raise Invalid(path, f"is {len(value)} characters long; at most {self.max_len} are accepted")
        return value


@dataclass(frozen=True)
class Bool(Spec):
    nullable: bool = False

    def describe(self) -> str:
        return "true or false"

    def _check(self, value, path):
        if not isinstance(value, bool):
            raise self._bad(value, path)
        return value


@dataclass(frozen=True)
class Json(Spec):
    """Any JSON value nested at most ``max_depth`` deep (lists and objects count one level each)."""

    max_depth: int = 8
    nullable: bool = True

    def describe(self) -> str:
        if self.max_depth == 0:
            return "a number, text, true/false or null"
        return f"a JSON value nested at most {self.max_depth} deep"

    def _check(self, value, path):
        stack = [(value, 0)]
        while stack:  # iterative: a hostile document must not exhaust the recursion limit
            v, depth = stack.pop()
            if isinstance(v, (dict, list, tuple)):
                if self.max_depth == 0:
                    raise self._bad(value, path)
                if depth >= self.max_depth:
                    raise Invalid(path, f"is nested more than {self.max_depth} deep")
                items = v.values() if isinstance(v, dict) else v
                if isinstance(v, dict) and not all(isinstance(k, str) for k in v):
                    raise self._bad(value, path)
                stack.extend((x, depth + 1) for x in items)
            elif isinstance(v, float) and not math.isfinite(v):
                raise Invalid(path, "holds NaN or infinity, which JSON does not allow")
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > checks.MAX_INT:
                raise Invalid(path, f"holds {show(v)}; numbers must be below 2**63")
            elif not (v is None or isinstance(v, (str, int, float, bool))):
                raise self._bad(value, path)
        return value


@dataclass(frozen=True)
class List(Spec):
    """A list of ``item``s, with ``min_len``/``max_len`` (``length`` fixes both)."""

    item: Spec
    min_len: int = 0
    max_len: Optional[int] = None
    length: Optional[int] = None
    nullable: bool = False

    def describe(self) -> str:
        if self.length is not None:
            return f"a list of {self.length} values"
        return "a list" + (f" of at least {self.min_len} value{'s' if self.min_len > 1 else ''}" if self.min_len else "")

    def _check(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise self._bad(value, path)
        lo = self.min_len if self.length is None else self.length
        hi = self.max_len if self.length is None else self.length
        if len(value) < lo:
            raise Invalid(path, "is empty" if not value else f"must hold at least {lo} values, got {len(value)}")
        if hi is not None and len(value) > hi:
            raise Invalid(path, f"must hold at most {hi} values, got {len(value)}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class Field:
    """An object member: its spec, whether it must be present, the value when absent."""

    spec: Spec
    required: bool = True
    default: Any = None


def req(spec: Spec) -> Field:
    return Field(spec, True)


def opt(spec: Spec, default: Any = None) -> Field:
    return Field(spec, False, default)


@dataclass(frozen=True)
class Obj(Spec):
    """An object with the given ``fields``; others are kept as they are (``extra``), checked, or dropped.

    ``extra`` is a Spec every other member must meet, or None to drop other members.
    Absent optional fields are left out of the result (``fill`` puts their default in).
    """

    fields: dict = field(default_factory=dict)
    extra: Optional[Spec] = Json()
    nullable: bool = False
    fill: bool = False

    def describe(self) -> str:
        return "an object"

    def _check(self, value, path):
        if not isinstance(value, dict):
            raise self._bad(value, path)
        for key, f in self.fields.items():
            if f.required and key not in value:
                raise Invalid(_join(path, key), "is missing")
        out = {}
        for key, v in value.items():  # the document's order
            f = self.fields.get(key)
            if f is not None:
                out[key] = f.spec.check(v, _join(path, key))
            elif self.extra is not None:
                if not isinstance(key, str):
                    raise Invalid(path, f"has a key {show(key)} that is not text")
                out[key] = self.extra.check(v, _join(path, key))
        if self.fill:
            for key, f in self.fields.items():
                out.setdefault(key, f.default)
        return out


def validate(doc: Any, spec: Spec, what: str, remedy: str) -> Any:
    """``doc`` checked against ``spec``; otherwise one UserError: "{what}: {path} {problem}; {remedy}"."""
    try:
        return spec.check(doc, "")
    except Invalid as exc:
        raise UserError(f"{what}: {exc}; {remedy}") from None
    except RecursionError:  # a spec is shallow, but be safe: never a traceback for a hostile file
        raise UserError(f"{what} is nested too deeply; {remedy}") from None


def refuse(what: str, path: str, problem: str, remedy: str) -> UserError:
    """The same wording for a cross-field check made after ``validate``."""
    return UserError(f"{what}: {path} {problem}; {remedy}")
