"""LR schedules as data: parsed from text, never evaluated.

Accepted forms (PyTorch's own class and argument names, optimizer omitted):

    MultiStepLR(milestones=[60, 120, 160], gamma=0.2)
    StepLR(step_size=30, gamma=0.1)         ExponentialLR(gamma=0.97)
    CosineAnnealingLR(T_max=200, eta_min=0.0)
    LinearLR(start_factor=0.1, end_factor=1.0, total_iters=5)
    PolynomialLR(total_iters=100, power=2.0)  ConstantLR(factor=0.5, total_iters=5)
    SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=195)], milestones=[5])

or a CSV table ``epoch,lr[,momentum]`` (piecewise constant from each row's epoch on).
The text goes through ``ast.parse`` and only literal arguments are read
(``ast.literal_eval`` of each argument node); nothing is executed.

``Schedule.lr(k, base_lr)`` is the LR after ``k`` calls of ``scheduler.step()``,
equal to what torch's scheduler of the same name gives (tests compare them).
"""
from __future__ import annotations

import ast
import bisect
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import UserError


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
        """Raise UserError if the schedule refers to steps at or past ``horizon``."""

    def describe(self) -> str:
        return self.text

    text: str = ""


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


@dataclass
class ExponentialLR(Schedule):
    gamma: float

    def lr(self, k, base_lr):
        return base_lr * self.gamma ** k


@dataclass
class CosineAnnealingLR(Schedule):
    T_max: int
    eta_min: float = 0.0

    def lr(self, k, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * k / self.T_max)) / 2


@dataclass
class LinearLR(Schedule):
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5

    def lr(self, k, base_lr):
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                          * min(self.total_iters, k) / self.total_iters)


@dataclass
class PolynomialLR(Schedule):
    total_iters: int = 5
    power: float = 1.0

    def lr(self, k, base_lr):
        return base_lr * (1.0 - min(self.total_iters, k) / self.total_iters) ** self.power


@dataclass
class ConstantLR(Schedule):
    factor: float = 1.0 / 3
    total_iters: int = 5
    piecewise_constant = True

    def lr(self, k, base_lr):
        return base_lr * (self.factor if k < self.total_iters else 1.0)


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

    def check(self, horizon, unit="epoch"):
        _milestones_check("SequentialLR", self.milestones, horizon, unit)
        starts = [0] + list(self.milestones)
        for s, start in zip(self.schedulers, starts):
            s.check(horizon - start, unit)


@dataclass
class TableSchedule(Schedule):
    """Piecewise-constant absolute values from a CSV: row (epoch, lr[, momentum]) holds from ``epoch`` on."""

    epochs: list
    lrs: list
    momenta: Optional[list] = None
    source: str = ""
    piecewise_constant = True

    def _row(self, k: int) -> int:
        return bisect.bisect_right(self.epochs, k) - 1

    def lr(self, k, base_lr):
        # Absolute LRs: base_lr only rescales when the user asks for another starting LR.
        return self.lrs[self._row(k)] * (base_lr / self.lrs[0])

    def momentum(self, k):
        return None if self.momenta is None else self.momenta[self._row(k)]

    def check(self, horizon, unit="epoch"):
        if self.epochs[-1] >= horizon:
            raise UserError(f"schedule table {self.source} has a row at epoch {self.epochs[-1]}, at or past the end of "
                            f"training ({horizon} {unit}s); drop it or raise --epochs")

    def describe(self):
        return f"table {self.source}"


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
    "OneCycleLR": "it ramps the LR up and down; export its LR per epoch as a CSV table (epoch,lr)",
    "CyclicLR": "it cycles the LR; export its LR per epoch as a CSV table (epoch,lr)",
    "CosineAnnealingWarmRestarts": "its restarts raise the LR; export its LR per epoch as a CSV table (epoch,lr)",
    "ChainedScheduler": "write the combined LR per epoch as a CSV table (epoch,lr)",
}


def parse_schedule(text: str) -> Schedule:
    """Parse a scheduler expression or load a CSV table (a path ending in .csv)."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("--schedule is empty; give e.g. 'MultiStepLR(milestones=[60,120,160], gamma=0.2)' or a .csv file")
    text = text.strip()
    if text.lower().endswith(".csv"):
        return load_table(text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise UserError(f"malformed schedule {text!r}: {exc.msg} at column {exc.offset}; "
                        "write it like MultiStepLR(milestones=[60,120,160], gamma=0.2)") from None
    sched = _build(tree.body, text)
    sched.text = text
    return sched


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # torch.optim.lr_scheduler.StepLR
        return node.attr
    return ""


def _build(node: ast.AST, text: str) -> Schedule:
    if not isinstance(node, ast.Call):
        raise UserError(f"schedule {text!r} is not a scheduler call; write e.g. StepLR(step_size=30, gamma=0.1)")
    name = _call_name(node.func)
    if name in UNSUPPORTED_HINT:
        raise UserError(f"{name} is not supported: {UNSUPPORTED_HINT[name]}")
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name or ast.unparse(node.func)!r}; supported: {', '.join(SCHEDULERS)} "
                        "(or a CSV table epoch,lr)")
    cls, params, required = SCHEDULERS[name]
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        raise UserError(f"{name}: * and ** arguments are not accepted; name each argument")
    if len(node.args) > len(params):
        raise UserError(f"{name} takes at most {len(params)} positional arguments ({', '.join(params)}), "
                        f"got {len(node.args)}; omit the optimizer")
    raw: dict[str, ast.AST] = dict(zip(params, node.args))
    for kw in node.keywords:
        if kw.arg not in params:
            raise UserError(f"{name} has no argument {kw.arg!r}; it takes {', '.join(params)}")
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
                  "milestones": _literal(raw["milestones"], name, "milestones")}
    else:
        kwargs = {p: _literal(v, name, p) for p, v in raw.items()}
    _validate(name, kwargs)
    return cls(**kwargs)


def _literal(node: ast.AST, name: str, param: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UserError(f"{name}: {param}={ast.unparse(node)} is not a literal number or list") from None


def _number(v: Any, name: str, param: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"{name}: {param} must be a finite number, got {v!r}")
    return float(v)


def _int(v: Any, name: str, param: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise UserError(f"{name}: {param} must be an integer ≥ {low}, got {v!r}")
    return v


def _validate(name: str, kw: dict[str, Any]) -> None:
    """Argument checks, matching what torch's constructors accept."""
    if "gamma" in kw:
        kw["gamma"] = _number(kw["gamma"], name, "gamma")
        if kw["gamma"] <= 0:
            raise UserError(f"{name}: gamma must be > 0, got {kw['gamma']}")
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
            raise UserError(f"{name}: eta_min must be ≥ 0, got {kw['eta_min']}")
    if "total_iters" in kw:
        _int(kw["total_iters"], name, "total_iters", 0 if name == "ConstantLR" else 1)
    if "power" in kw:
        kw["power"] = _number(kw["power"], name, "power")
        if kw["power"] <= 0:
            raise UserError(f"{name}: power must be > 0")
    if "factor" in kw:
        kw["factor"] = _number(kw["factor"], name, "factor")
        if not 0 < kw["factor"] <= 1:
            raise UserError(f"{name}: factor must be in (0, 1], got {kw['factor']}")
    for p in ("start_factor", "end_factor"):
        if p in kw:
            kw[p] = _number(kw[p], name, p)
    if name == "LinearLR":
        if not 0 < kw.get("start_factor", 1 / 3) <= 1:
            raise UserError("LinearLR: start_factor must be in (0, 1]")
        if not 0 <= kw.get("end_factor", 1.0) <= 1:
            raise UserError("LinearLR: end_factor must be in [0, 1]")


def load_table(path: str) -> TableSchedule:
    """Read ``epoch,lr[,momentum]`` rows (header optional), epochs strictly increasing from 0."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"schedule table {path} not found; check the path")
    try:
        rows = [r for r in csv.reader(p.read_text().splitlines()) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"schedule table {path} is not a readable CSV ({exc})") from None
    if rows and not _is_number(rows[0][0]):
        header = [c.strip().lower() for c in rows[0]]
        if header[:2] != ["epoch", "lr"] or header[2:] not in ([], ["momentum"]):
            raise UserError(f"schedule table {path}: header must be epoch,lr or epoch,lr,momentum, got {','.join(header)}")
        rows = rows[1:]
    else:
        header = None
    if not rows:
        raise UserError(f"schedule table {path} has no rows; write lines like 0,0.1")
    width = len(header) if header else len(rows[0])  # a header fixes the columns: epoch,lr has no momentum
    epochs, lrs, momenta = [], [], []
    for i, r in enumerate(rows, 1):
        if len(r) != width or width not in (2, 3):
            raise UserError(f"schedule table {path}, row {i}: expected {'2 or 3' if i == 1 and not header else width} "
                            f"columns, got {len(r)}")
        try:
            e, lr = float(r[0]), float(r[1])
            m = float(r[2]) if width == 3 else None
        except ValueError:
            raise UserError(f"schedule table {path}, row {i}: {','.join(r)} is not numbers") from None
        if not (math.isfinite(e) and e == int(e) and e >= 0):
            raise UserError(f"schedule table {path}, row {i}: epoch must be a whole number ≥ 0, got {r[0]}")
        if not (math.isfinite(lr) and lr > 0):
            raise UserError(f"schedule table {path}, row {i}: lr must be a positive number, got {r[1]}")
        if m is not None and not (math.isfinite(m) and 0 <= m < 1):
            raise UserError(f"schedule table {path}, row {i}: momentum must be in [0, 1), got {r[2]}")
        if epochs and int(e) <= epochs[-1]:
            raise UserError(f"schedule table {path}, row {i}: epochs must increase strictly")
        epochs.append(int(e)); lrs.append(lr)
        if m is not None:
            momenta.append(m)
    if epochs[0] != 0:
        raise UserError(f"schedule table {path} must start at epoch 0 (it starts at {epochs[0]})")
    t = TableSchedule(epochs, lrs, momenta or None, source=str(path))
    t.text = str(path)
    return t


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
