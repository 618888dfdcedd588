"""LR schedules as data: parsed from text, never evaluated.

Accepted forms (PyTorch's own class and argument names, optimizer omitted):

    MultiStepLR(milestones=[60, 120, 160], gamma=0.2)
    StepLR(step_size=30, gamma=0.1)         ExponentialLR(gamma=0.97)
    CosineAnnealingLR(T_max=200, eta_min=0.0)
    LinearLR(start_factor=0.1, end_factor=1.0, total_iters=5)
    PolynomialLR(total_iters=100, power=2.0)  ConstantLR(factor=0.5, total_iters=5)
    SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=195)], milestones=[5])

or a CSV table ``epoch,lr[,momentum]`` (piecewise constant from each row's epoch on; the header
``step,lr[,momentum]`` says the rows count scheduler steps of a per-step schedule). A plan
records a table by its rows, as CSV text (``TableSchedule.describe``), so it rebuilds the
original's LR without the file; ``parse_schedule`` reads that text back.
The text goes through ``ast.parse`` and only literal arguments are read
(``ast.literal_eval`` of each argument node); nothing is executed.

``Schedule.lr(k, base_lr)`` is the LR after ``k`` calls of ``scheduler.step()``,
equal to what torch's scheduler of the same name gives (tests compare them).
``Schedule.pieces(horizon)`` says where the LR can change, so a conversion walks
intervals, not every step or epoch. Schedules that make no sense to convert (an LR that
grows: ``gamma > 1``; a cosine whose T_max ends before the run, after which torch's
cosine rises again; a warmup longer than the run) are refused with the fix.
"""
from __future__ import annotations

import ast
import bisect
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.defaults import MAX_EPOCHS, MAX_SAMPLES, MAX_SCHEDULE_CHARS, MAX_TABLE_BYTES

#: Most rows a CSV schedule table may have.
MAX_TABLE_ROWS = 100_000
#: A table whose values change at more rows than this is a smooth schedule written out, not a step schedule.
MAX_STEP_ROWS = 64
#: The first column's name in a table's header: what its rows count (scheduler steps once an epoch or an update).
TABLE_UNITS = ("epoch", "step")

#: (start, end, smooth): scheduler steps [start, end) over which the LR is constant (smooth=False)
#: or may change at every step (smooth=True).
Piece = tuple[int, int, bool]


def brief(text: str, limit: int = 60) -> str:
    """``text`` quoted for a one-line message: shortened, newlines and control characters escaped."""
    short = text if len(text) <= limit else text[:limit - 3] + "..."
    return repr(short)


class Schedule:
    """An LR schedule over scheduler steps k = 0, 1, 2, ..."""

    #: True when the LR changes only at isolated points (step schedules, tables).
    piecewise_constant = False

    def lr(self, k: int, base_lr: float) -> float:
        raise NotImplementedError

    def momentum(self, k: int) -> Optional[float]:
        """Momentum at step k when the schedule sets it (tables only), else None."""
        return None

    def check(self, horizon: int, unit: str = "epoch") -> None:
        """Raise UserError if the schedule makes no sense for a run of ``horizon`` steps."""

    def check_lr(self, base_lr: float) -> None:
        """Raise UserError if the schedule, started at ``base_lr``, makes the LR grow past it."""

    def pieces(self, horizon: int, stride: int = 1) -> Iterator[Piece]:
        """Intervals tiling [0, ``horizon``) on which the LR is constant or may change each step.

        ``stride`` is the number of steps between two reads of the schedule (steps an
        epoch): a schedule whose constant pieces are shorter than that may call them smooth.
        """
        yield (0, horizon, True)

    def describe(self) -> str:
        return self.text

    text: str = ""


def _constant_between(bounds, horizon: int) -> Iterator[Piece]:
    """Constant pieces between the sorted change points ``bounds`` (those in (0, horizon) count)."""
    start = 0
    for b in bounds:
        if start < b < horizon:
            yield (start, b, False)
            start = b
    if start < horizon:
        yield (start, horizon, False)


def _split(edge: int, horizon: int, smooth_before: bool) -> Iterator[Piece]:
    """[0, edge) smooth or not, then [edge, horizon) constant (empty pieces left out)."""
    edge = max(0, min(edge, horizon))
    if edge > 0:
        yield (0, edge, smooth_before)
    if edge < horizon:
        yield (edge, horizon, False)


def _unit_words(n: int, unit: str) -> str:
    return f"{n:,} {unit}{'' if n == 1 else 's'}"


def _milestones_check(name: str, milestones: list[int], horizon: int, unit: str) -> None:
    late = [m for m in milestones if m >= horizon]
    if late:
        raise UserError(f"{name} milestone {late[0]} is at or past the end of training ({horizon} {unit}s); "
                        f"milestones must be < {horizon} (check --epochs and --schedule-unit)")


@dataclass
class StepLR(Schedule):
    step_size: int
    gamma: float = 0.1
    piecewise_constant = True

    def lr(self, k, base_lr):
        return base_lr * self.gamma ** (k // self.step_size)

    def pieces(self, horizon, stride=1):
        if self.gamma == 1:
            yield (0, horizon, False)
        elif self.step_size <= stride:  # a new LR at (almost) every read
            yield (0, horizon, True)
        else:
            yield from _constant_between(range(self.step_size, horizon, self.step_size), horizon)


@dataclass
class MultiStepLR(Schedule):
    milestones: list
    gamma: float = 0.1
    piecewise_constant = True

    def __post_init__(self):
        self.milestones = sorted(self.milestones)  # torch counts duplicates too

    def lr(self, k, base_lr):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, k)

    def check(self, horizon, unit="epoch"):
        _milestones_check("MultiStepLR", self.milestones, horizon, unit)

    def pieces(self, horizon, stride=1):
        yield from _constant_between(sorted(set(self.milestones)), horizon)


@dataclass
class ExponentialLR(Schedule):
    gamma: float

    def lr(self, k, base_lr):
        return base_lr * self.gamma ** k

    def pieces(self, horizon, stride=1):
        yield (0, horizon, self.gamma != 1)


@dataclass
class CosineAnnealingLR(Schedule):
    T_max: int
    eta_min: float = 0.0

    def lr(self, k, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * k / self.T_max)) / 2

    def check_lr(self, base_lr):
        if self.eta_min > base_lr:
            raise UserError(f"CosineAnnealingLR: eta_min={self.eta_min:g} is above the starting LR {base_lr:g}, so the "
                            "schedule raises the LR; eta_min is the LR it decays to: give one below --lr (e.g. 0)")

    def check(self, horizon, unit="epoch"):
        # The run reads steps 0 … horizon−1; past T_max torch's cosine climbs back to the base LR.
        if self.T_max < horizon - 1:
            raise UserError(f"CosineAnnealingLR(T_max={self.T_max}) ends before the run ({_unit_words(horizon, unit)}): "
                            f"after T_max torch's cosine raises the LR again (back to its start at {2 * self.T_max}), "
                            f"which batch growth cannot follow; set T_max={horizon} (the run's length in {unit}s)")


@dataclass
class LinearLR(Schedule):
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5

    def lr(self, k, base_lr):
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                          * min(self.total_iters, k) / self.total_iters)

    def check(self, horizon, unit="epoch"):
        if self.end_factor > self.start_factor and self.total_iters >= horizon:
            raise UserError(f"LinearLR warmup (total_iters={self.total_iters}) is as long as the run "
                            f"({_unit_words(horizon, unit)}) or longer: the LR rises throughout and there is no decay "
                            f"to convert; shorten total_iters below {horizon} or raise --epochs")

    def pieces(self, horizon, stride=1):
        if self.start_factor == self.end_factor:
            yield (0, horizon, False)
        else:
            yield from _split(self.total_iters, horizon, True)


@dataclass
class PolynomialLR(Schedule):
    total_iters: int = 5
    power: float = 1.0

    def lr(self, k, base_lr):
        return base_lr * (1.0 - min(self.total_iters, k) / self.total_iters) ** self.power

    def pieces(self, horizon, stride=1):
        yield from _split(self.total_iters, horizon, True)


@dataclass
class ConstantLR(Schedule):
    factor: float = 1.0 / 3
    total_iters: int = 5
    piecewise_constant = True

    def lr(self, k, base_lr):
        return base_lr * (self.factor if k < self.total_iters else 1.0)

    def pieces(self, horizon, stride=1):
        yield from _split(self.total_iters if self.factor != 1 else 0, horizon, False)


@dataclass
class SequentialLR(Schedule):
    """Run ``schedulers[i]`` from ``milestones[i-1]`` on, restarted at its own step 0."""

    schedulers: list
    milestones: list

    @property
    def piecewise_constant(self):  # type: ignore[override]
        return all(s.piecewise_constant for s in self.schedulers)

    def lr(self, k, base_lr):
        i = bisect.bisect_right(self.milestones, k)
        start = self.milestones[i - 1] if i > 0 else 0
        return self.schedulers[i].lr(k - start, base_lr)

    def _spans(self, horizon):
        """(scheduler, first step, end step) of each scheduler's part of [0, horizon)."""
        starts = [0] + list(self.milestones)
        ends = list(self.milestones) + [horizon]
        return [(s, a, min(b, horizon)) for s, a, b in zip(self.schedulers, starts, ends) if a < horizon]

    def check(self, horizon, unit="epoch"):
        _milestones_check("SequentialLR", self.milestones, horizon, unit)
        for s, a, b in self._spans(horizon):
            if isinstance(s, LinearLR) and b < horizon:
                continue  # a warmup cut short by the next milestone is what SequentialLR is for
            s.check(b - a, unit)

    def check_lr(self, base_lr):
        for s in self.schedulers:
            s.check_lr(base_lr)

    def pieces(self, horizon, stride=1):
        for s, a, b in self._spans(horizon):
            for x, y, smooth in s.pieces(b - a, stride):
                yield (x + a, y + a, smooth)


@dataclass
class TableSchedule(Schedule):
    """Piecewise-constant absolute values from a CSV: row (epoch, lr[, momentum]) holds from ``epoch`` on.

    ``unit`` is the header's first column (epoch or step; None without a header): what the
    rows count, checked against the run's --schedule-unit.
    """

    epochs: list
    lrs: list
    momenta: Optional[list] = None
    source: str = ""
    unit: Optional[str] = None

    @property
    def piecewise_constant(self):  # type: ignore[override]
        """A few changes (a step schedule written out); more than MAX_STEP_ROWS is a smooth schedule written
        out (OneCycleLR per step), whose staircase then takes the smooth schedules' stage factor."""
        return len(self._changes()) <= MAX_STEP_ROWS

    def _changes(self) -> list[int]:
        """The rows whose values differ from the row before (the first row included)."""
        values = list(zip(self.lrs, self.momenta or [None] * len(self.lrs)))
        return [i for i in range(len(values)) if i == 0 or values[i] != values[i - 1]]

    def _row(self, k: int) -> int:
        return bisect.bisect_right(self.epochs, k) - 1

    def lr(self, k, base_lr):
        # Absolute LRs: base_lr only rescales when the user asks for another starting LR.
        return self.lrs[self._row(k)] * (base_lr / self.lrs[0])

    def momentum(self, k):
        return None if self.momenta is None else self.momenta[self._row(k)]

    def check(self, horizon, unit="epoch"):
        if self.unit is not None and self.unit != unit:
            raise UserError(f"schedule table {self.source}'s header counts {self.unit}s but the schedule is read per "
                            f"{unit}; give --schedule-unit {self.unit} (or write the header {unit},lr)")
        if self.epochs[-1] >= horizon:
            raise UserError(f"schedule table {self.source} has a row at {unit} {self.epochs[-1]}, at or past the end "
                            f"of training ({horizon} {unit}s); drop it or raise --epochs")

    def pieces(self, horizon, stride=1):
        yield from _constant_between(self.epochs[1:], horizon)

    def describe(self):
        """The table as CSV text with its header, one row per change of its values (float repr: exact).

        A plan records this, not the file's path, so it rebuilds the original's LR anywhere.
        """
        cols = [self.unit or "epoch", "lr"] + (["momentum"] if self.momenta is not None else [])
        lines = [",".join(cols)]
        for i in self._changes():
            values = [self.lrs[i]] + ([] if self.momenta is None else [self.momenta[i]])
            lines.append(",".join([str(self.epochs[i])] + [repr(float(v)) for v in values]))
        return "\n".join(lines) + "\n"


# name -> (class, parameter names in torch's positional order after `optimizer`, required names)
SCHEDULERS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "StepLR": (StepLR, ("step_size", "gamma"), ("step_size",)),
    "MultiStepLR": (MultiStepLR, ("milestones", "gamma"), ("milestones",)),
    "ExponentialLR": (ExponentialLR, ("gamma",), ("gamma",)),
    "CosineAnnealingLR": (CosineAnnealingLR, ("T_max", "eta_min"), ("T_max",)),
    "LinearLR": (LinearLR, ("start_factor", "end_factor", "total_iters"), ()),
    "PolynomialLR": (PolynomialLR, ("total_iters", "power"), ()),
    "ConstantLR": (ConstantLR, ("factor", "total_iters"), ()),
    "SequentialLR": (SequentialLR, ("schedulers", "milestones"), ("schedulers", "milestones")),
}
UNSUPPORTED_HINT = {
    "LambdaLR": "it runs Python code; write the LR per epoch to a CSV table (epoch,lr) instead",
    "MultiplicativeLR": "it runs Python code; write the LR per epoch to a CSV table (epoch,lr) instead",
    "ReduceLROnPlateau": "it depends on the validation loss; record the LRs it chose as a CSV table (epoch,lr)",
    "OneCycleLR": ("it ramps the LR up and down; export its LR (and momentum) per update as a CSV table "
                   "(step,lr,momentum) with --schedule-unit step"),
    "CyclicLR": "it cycles the LR; export its LR per update as a CSV table (step,lr) with --schedule-unit step",
    "CosineAnnealingWarmRestarts": ("its restarts raise the LR; export its LR per epoch or per update as a CSV table "
                                    "(epoch,lr or step,lr)"),
    "ChainedScheduler": "write the combined LR per epoch as a CSV table (epoch,lr)",
}


def parse_schedule(text: str) -> Schedule:
    """Parse a scheduler expression or load a CSV table (a path ending in .csv)."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("schedule is empty; give e.g. 'MultiStepLR(milestones=[60,120,160], gamma=0.2)' or a .csv file",
                        parameter="schedule")
    text = text.strip()
    if _is_inline_table(text):  # a table recorded in a plan (TableSchedule.describe)
        return table_from_text(text + "\n", "recorded in the plan")
    if len(text) > MAX_SCHEDULE_CHARS:
        raise UserError(f"schedule is {len(text):,} characters long; at most {MAX_SCHEDULE_CHARS:,} are accepted "
                        "(write a long schedule as a CSV table epoch,lr)", parameter="schedule")
    if text.lower().endswith(".csv"):
        if text.startswith("table ") and not Path(text).is_file():  # what plans recorded before they held the rows
            raise UserError(f"the plan records its schedule table by path only ({brief(text[6:], 60)}); convert the "
                            "schedule again (bsadvisor convert-schedule --schedule FILE.csv --out plan.json) so the plan "
                            "holds the table's rows")
        return load_table(text)
    try:
        tree = ast.parse(text, mode="eval")
        sched = _build(tree.body, text)
    except UserError:
        raise
    except SyntaxError as exc:
        msg = str(exc.msg)
        if "integer string conversion" in msg or "Exceeds the limit" in msg:
            msg = "an integer of thousands of digits"
        where = f" at column {exc.offset}" if exc.offset else ""
        raise UserError(f"malformed schedule {brief(text)}: {msg}{where}; "
                        "write it like MultiStepLR(milestones=[60,120,160], gamma=0.2)") from None
    except (RecursionError, MemoryError):
        raise UserError(f"schedule {brief(text)} is nested too deeply; write it like "
                        "MultiStepLR(milestones=[60,120,160], gamma=0.2)") from None
    except ValueError as exc:  # e.g. a NUL character
        raise UserError(f"malformed schedule {brief(text)}: {str(exc)[:80]}; "
                        "write it like MultiStepLR(milestones=[60,120,160], gamma=0.2)") from None
    sched.text = text
    return sched


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # torch.optim.lr_scheduler.StepLR
        return node.attr
    return ""


def _source(text: str, node: ast.AST) -> str:
    """The text of ``node``, shortened for a message (never ast.unparse: it recurses)."""
    return brief(ast.get_source_segment(text, node) or "?", 40)


def _build(node: ast.AST, text: str) -> Schedule:
    if not isinstance(node, ast.Call):
        raise UserError(f"schedule {brief(text)} is not a scheduler call; write e.g. StepLR(step_size=30, gamma=0.1)")
    name = _call_name(node.func)
    if name in UNSUPPORTED_HINT:
        raise UserError(f"{name} is not supported: {UNSUPPORTED_HINT[name]}")
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {brief(name) if name else _source(text, node.func)}; supported: "
                        f"{', '.join(SCHEDULERS)} (or a CSV table epoch,lr)")
    cls, params, required = SCHEDULERS[name]
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        raise UserError(f"{name}: * and ** arguments are not accepted; name each argument")
    if len(node.args) > len(params):
        raise UserError(f"{name} takes at most {len(params)} positional arguments ({', '.join(params)}), "
                        f"got {len(node.args)}; omit the optimizer")
    raw: dict[str, ast.AST] = dict(zip(params, node.args))
    for kw in node.keywords:
        if kw.arg not in params:
            raise UserError(f"{name} has no argument {brief(kw.arg, 40)}; it takes {', '.join(params)}")
        if kw.arg in raw:
            raise UserError(f"{name} got argument {kw.arg!r} twice")
        raw[kw.arg] = kw.value
    missing = [p for p in required if p not in raw]
    if missing:
        raise UserError(f"{name} needs {', '.join(missing)}")
    if name == "SequentialLR":
        subs = raw["schedulers"]
        if not isinstance(subs, (ast.List, ast.Tuple)) or not subs.elts:
            raise UserError("SequentialLR needs schedulers=[...] with at least one scheduler call")
        if any(_call_name(e.func if isinstance(e, ast.Call) else e) == "SequentialLR" for e in subs.elts):
            raise UserError("SequentialLR inside SequentialLR is not supported; flatten it")
        kwargs = {"schedulers": [_build(e, text) for e in subs.elts],
                  "milestones": _literal(raw["milestones"], name, "milestones", text)}
    else:
        kwargs = {p: _literal(v, name, p, text) for p, v in raw.items()}
    _validate(name, kwargs)
    return cls(**kwargs)


def _literal(node: ast.AST, name: str, param: str, text: str = "") -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UserError(f"{name}: {param}={_source(text, node)} is not a literal number or list "
                        "(write the value itself, e.g. gamma=0.1)") from None


def _number(v: Any, name: str, param: str) -> float:
    return checks.number(f"{name}: {param}", v)


def _int(v: Any, name: str, param: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{name}: {param} must be an integer ≥ {low}, got {checks.show(v)}")
    return checks.integer(f"{name}: {param}", v, low=low)


def _validate(name: str, kw: dict[str, Any]) -> None:
    """Argument checks: what torch's constructors accept, and an LR that never grows (gamma ≤ 1)."""
    if "gamma" in kw:
        kw["gamma"] = _number(kw["gamma"], name, "gamma")
        if kw["gamma"] <= 0:
            raise UserError(f"{name}: gamma must be > 0, got {kw['gamma']:g}")
        if kw["gamma"] > 1:
            raise UserError(f"{name}: gamma={kw['gamma']:g} > 1 makes the LR grow; bsadvisor turns LR decay into "
                            "batch growth, so gamma must be in (0, 1] (e.g. gamma=0.1)")
    if "step_size" in kw:
        _int(kw["step_size"], name, "step_size", 1)
    if "milestones" in kw:
        ms = kw["milestones"]
        if not isinstance(ms, (list, tuple)):
            raise UserError(f"{name}: milestones must be a list of integers like [60, 120]")
        kw["milestones"] = [_int(m, name, "each milestone", 0) for m in ms]
        if name == "SequentialLR":
            if len(ms) != len(kw["schedulers"]) - 1:
                raise UserError(f"SequentialLR needs one milestone fewer than schedulers: got {len(kw['schedulers'])} "
                                f"schedulers and {len(ms)} milestones")
            if list(ms) != sorted(ms) or len(set(ms)) != len(ms):
                raise UserError("SequentialLR milestones must be strictly increasing")
    if "T_max" in kw:
        _int(kw["T_max"], name, "T_max", 1)
    if "eta_min" in kw:
        kw["eta_min"] = _number(kw["eta_min"], name, "eta_min")
        if kw["eta_min"] < 0:
            raise UserError(f"{name}: eta_min must be ≥ 0, got {kw['eta_min']:g}")
    if "total_iters" in kw:
        _int(kw["total_iters"], name, "total_iters", 0 if name == "ConstantLR" else 1)
    if "power" in kw:
        kw["power"] = _number(kw["power"], name, "power")
        if kw["power"] <= 0:
            raise UserError(f"{name}: power must be > 0")
    if "factor" in kw:
        kw["factor"] = _number(kw["factor"], name, "factor")
        if not 0 < kw["factor"] <= 1:
            raise UserError(f"{name}: factor must be in (0, 1], got {kw['factor']:g}")
    for p in ("start_factor", "end_factor"):
        if p in kw:
            kw[p] = _number(kw[p], name, p)
    if name == "LinearLR":
        if not 0 < kw.get("start_factor", 1 / 3) <= 1:
            raise UserError("LinearLR: start_factor must be in (0, 1]")
        if not 0 <= kw.get("end_factor", 1.0) <= 1:
            raise UserError("LinearLR: end_factor must be in [0, 1]")


def _is_inline_table(text: str) -> bool:
    """Whether ``text`` is a table's CSV text (a header line, then rows), not an expression or a path."""
    head = text.split("\n", 1)[0].replace(" ", "").lower()
    return "\n" in text and head.split(",")[0] in TABLE_UNITS and head.split(",")[1:2] == ["lr"]


def load_table(path: str) -> TableSchedule:
    """Read ``epoch,lr[,momentum]`` rows (header optional), epochs strictly increasing from 0."""
    name = brief(str(path), 80)[1:-1]
    t = table_from_text(_table_text(Path(path), name), name)
    t.source = t.text = str(path)
    return t


def table_from_text(text: str, name: str) -> TableSchedule:
    """A table from its CSV text (``name`` for messages): rows checked, epochs (or steps) increasing from 0."""
    if len(text) > MAX_TABLE_BYTES:
        raise UserError(f"schedule table {name} is larger than {MAX_TABLE_BYTES // 2**20} MiB; is it the right file?")
    rows, header = _table_rows(text, name)
    width = len(header) if header else len(rows[0])  # a header fixes the columns: epoch,lr has no momentum
    epochs, lrs, momenta = [], [], []
    for i, r in enumerate(rows, 1):
        if len(r) != width or width not in (2, 3):
            raise UserError(f"schedule table {name}, row {i}: expected {'2 or 3' if i == 1 and not header else width} "
                            f"columns, got {len(r)}")
        e, lr, m = _table_row(r, width, name, i, header[0] if header else None)
        if epochs and e <= epochs[-1]:
            raise UserError(f"schedule table {name}, row {i}: epochs must increase strictly")
        epochs.append(e); lrs.append(lr)
        if m is not None:
            momenta.append(m)
    unit = header[0] if header else None
    if epochs[0] != 0:
        raise UserError(f"schedule table {name} must start at {unit or 'epoch'} 0 (it starts at {epochs[0]})")
    t = TableSchedule(epochs, lrs, momenta or None, source=name, unit=unit)
    t.text = t.describe()
    return t


def _table_text(p: Path, name: str) -> str:
    """The table file's text, refused with a reason when it is no readable text file of sane size."""
    try:
        if p.is_dir():
            raise UserError(f"schedule table {name} is a folder; give the path of a CSV file")
        if not p.is_file():
            raise UserError(f"schedule table {name} not found; check the path")
        if p.stat().st_size > MAX_TABLE_BYTES:
            raise UserError(f"schedule table {name} is larger than {MAX_TABLE_BYTES // 2**20} MiB; is it the right file?")
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read schedule table {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"schedule table {name} is not a text (UTF-8) file; is it the right file?") from None
    if "\0" in text:
        raise UserError(f"schedule table {name} is not a text file (it holds NUL bytes); is it the right file?")
    return text


def _table_rows(text: str, name: str) -> tuple[list[list[str]], Optional[list[str]]]:
    """The table's non-empty CSV rows, and its header (epoch,lr[,momentum]) when it has one."""
    rows = []
    try:
        for r in csv.reader(text.splitlines()):
            if r and any(c.strip() for c in r):
                rows.append(r)
                if len(rows) > MAX_TABLE_ROWS + 1:
                    raise UserError(f"schedule table {name} has more than {MAX_TABLE_ROWS:,} rows; keep one row per "
                                    "change of the LR")
    except csv.Error as exc:
        raise UserError(f"schedule table {name} is not a readable CSV ({exc})") from None
    if rows and not _is_number(rows[0][0]):
        header = [c.strip().lower() for c in rows[0]]
        if header[:1] not in (["epoch"], ["step"]) or header[1:2] != ["lr"] or header[2:] not in ([], ["momentum"]):
            shown = brief(",".join(header), 60)
            raise UserError(f"schedule table {name}: header must be epoch,lr[,momentum] (or step,lr[,momentum] "
                            f"with --schedule-unit step), got {shown}")
        rows = rows[1:]
    else:
        header = None
    if not rows:
        raise UserError(f"schedule table {name} has no rows; write lines like 0,0.1")
    return rows, header


def _table_row(r: list[str], width: int, name: str, i: int, unit: Optional[str] = None
               ) -> tuple[int, float, Optional[float]]:
    """(epoch, lr, momentum or None) of row ``i``, each checked.

    The first column is limited in the table's own unit: an epoch below MAX_EPOCHS, a step (a header
    ``step``, or none: ``--schedule-unit`` decides, and the table's check against the run's length
    follows) below MAX_SAMPLES, so a language model's per-step schedule can be written as a table."""
    cells = [brief(c.strip(), 30) for c in r]
    try:
        e, lr = float(r[0]), float(r[1])
        m = float(r[2]) if width == 3 else None
    except ValueError:
        raise UserError(f"schedule table {name}, row {i}: {', '.join(cells)} are not numbers") from None
    limit, word = (MAX_EPOCHS, "epoch") if unit == "epoch" else (MAX_SAMPLES, unit or "its first column")
    if not (math.isfinite(e) and e == int(e) and 0 <= e < limit):
        raise UserError(f"schedule table {name}, row {i}: {word} must be a whole number ≥ 0 (and below "
                        f"{limit:,}), got {cells[0]}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"schedule table {name}, row {i}: lr must be a positive number, got {cells[1]}")
    if m is not None and not (math.isfinite(m) and 0 <= m < 1):
        raise UserError(f"schedule table {name}, row {i}: momentum must be in [0, 1), got {cells[2]}")
    return int(e), lr, m


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
