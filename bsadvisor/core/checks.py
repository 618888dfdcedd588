"""Checks of user-supplied numbers: one place, one wording, errors that name the parameter.

Every value a user can type (a CLI option, a TOML key, a field of a plan or probe file)
goes through one of these before it reaches any arithmetic, so NaN, infinity, booleans,
strings, 5000-digit integers and values out of range all fail the same way: one
``UserError`` line that names the parameter, the value and what is allowed. The ``name``
is the caller's: a library parameter (``max_fraction``), which the error also carries as
``UserError.parameter`` so the CLI can show it as the option the user typed
(``--max-fraction``), or a field of a file (``plan stages[2].batch_size``).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

from bsadvisor.core.errors import ArgumentTypeError, UserError

# Larger integers than this are never a batch size, an epoch count or a seed; refusing them
# up front keeps every later computation bounded (and str() of a 5000-digit int cheap).
MAX_INT = 2**63 - 1
# torch.manual_seed and numpy's SeedSequence take seeds below 2**64; Python's random any int.
MAX_SEED = 2**63 - 1


def show(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a huge integer: its digit count), for error messages."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # repr() of an int over 4300 digits raises in Python ≥ 3.11; say how big it is instead
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def number(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
           low_open: bool = False, high_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float: a real number (not bool, not NaN, finite unless ``allow_inf``) within bounds.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {show(value)}", parameter=name)
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise UserError(f"{name} must be below 2**63, got {show(value)}", parameter=name)
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise UserError(f"{name} must be a finite number, got {show(value)}", parameter=name)
    _bounds(name, v, value, low, high, low_open, high_open)
    return v


def integer(name: str, value: Any, *, low: Optional[int] = None, high: Optional[int] = MAX_INT) -> int:
    """``value`` as an int: a whole number (an integral float such as 128.0 is accepted) within bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a whole number, got {show(value)}", parameter=name)
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise UserError(f"{name} must be a whole number, got {show(value)}", parameter=name)
    v = int(value)
    _bounds(name, v, value, low, high, False, False)
    return v


def positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    return number(name, value, low=0, low_open=True)


def positive_int(name: str, value: Any, high: Optional[int] = MAX_INT) -> int:
    """A whole number ≥ 1."""
    return integer(name, value, low=1, high=high)


def function(name: str, value: Any) -> Any:
    """``value`` when it can be called, else an ArgumentTypeError naming ``name``."""
    if not callable(value):
        raise ArgumentTypeError(f"{name} must be a function, got {type(value).__name__}", parameter=name)
    return value


def flag(name: str, value: Any) -> bool:
    """True or False, nothing else: a string such as "no" is not read as true."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be True or False, got {show(value)}", parameter=name)
    return value


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?", re.IGNORECASE)


def device(name: str, value: Any) -> str:
    """A device spelling: auto, cpu, cuda or cuda:N (whether it exists is torch's question, asked later)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise UserError(f"{name} must be cpu, cuda, cuda:N or auto, got {show(value)}", parameter=name)
    return value


def seed(name: str, value: Any) -> int:
    """A seed torch, numpy and Python all accept: 0 ≤ seed < 2**63."""
    return integer(name, value, low=0, high=MAX_SEED)


def within(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
           high_open: bool = False) -> Any:
    """A real number in an interval, e.g. a momentum in [0, 1); any failure is worded as the interval.

    Returns ``value`` as given (not as a float), so a plan records the number the user wrote.
    """
    inside = (not isinstance(value, bool) and isinstance(value, (int, float))
              and (low < value or (value == low and not low_open))
              and (value < high or (value == high and not high_open)))
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserError(f"{name} must be in {interval}, got {show(value)}", parameter=name)
    return value


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """One of the ``allowed`` words."""
    if value not in allowed:
        raise UserError(f"{name} must be one of {', '.join(allowed)}, got {show(value)}", parameter=name)
    return value


def optional(check, name: str, value: Any, **kw):
    """``None`` passes through; anything else goes through ``check``."""
    return None if value is None else check(name, value, **kw)


def _bounds(name: str, v: float, shown: Any, low, high, low_open: bool, high_open: bool) -> None:
    if low is not None and (v < low or (low_open and v == low)):
        raise UserError(f"{name} must be {'>' if low_open else '≥'} {low:g}, got {show(shown)}", parameter=name)
    if high is not None and (v > high or (high_open and v == high)):
        if high == MAX_INT:
            raise UserError(f"{name} must be below 2**63, got {show(shown)}", parameter=name)
        raise UserError(f"{name} must be {'<' if high_open else '≤'} {high:g}, got {show(shown)}", parameter=name)


def instance(name: str, value: Any, kind: type | tuple[type, ...], expected: str) -> Any:
    """``value`` if it is an instance of ``kind``; otherwise a TypeError (ArgumentTypeError) saying what was expected."""
    if not isinstance(value, kind):
        raise ArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__} {show(value)}", parameter=name)
    return value


def options_object(cls: type, options: Any, changes: dict, caller: str) -> Any:
    """The frozen options object a call takes whole: ``options`` (an instance of ``cls``; None: its
    defaults) with the keyword ``changes``, so ``probe(target, budget_seconds=3)`` and
    ``probe(target, ProbeOptions(budget_seconds=3))`` are the same call, checked once.

    A keyword that is no field of ``cls`` is the TypeError Python raises for any call.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    for name in changes:
        if name not in names:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    if options is None:
        return cls(**changes)
    instance("options", options, cls, f"a {cls.__name__}")
    return dataclasses.replace(options, **changes) if changes else options
