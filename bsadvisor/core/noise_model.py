"""One model of the gradient noise scale through training, B_noise(s) (docs/concepts.md §12, eq. 16).

Pure Python (no numpy, no torch): convert-schedule reads it at every start.

The probe measures B_simple once, near initialisation; a noise trace (``bsadvisor
validate``'s results.json, or a NoiseMonitor log) measures it at many sample positions s.
Every figure that depends on the noise scale (the ``--noise-cap`` cap, the efficiency
column, the "growth past 10× B_noise" warning, advise's advice) asks this model, so they
agree on one set of numbers:

    B_noise(s) = [B_ref·T_ref](s) / T(s)                                   (eq. 16)

where T(s) is the temperature the run trains at, at s (the original's and the plan's are
the same: that is the plan's invariant), and [B_ref·T_ref](s) is the measured B_simple
times the temperature it was measured at: one value for a probe, interpolated linearly
in log between the points of a trace (and held flat beyond its ends). B_noise ∝ 1/T is
McCandlish et al.'s (1812.06162) relation for SGD; with one probe point it is the whole
model, and it leaves out how B_simple grows as the loss falls (a trace includes that). For Adam-family optimizers the model
applies the same law with the Adam temperature of the chosen rule (η·√v(B) under the
square-root rule): an assumption that only a measured trace settles (the plan says so).

Only estimates whose 90% interval is bounded and positive become reference points
(:func:`usable`): an open interval or a negative estimate never sets a cap.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import read_json


def usable(b_simple: Optional[float], ci_kind: Optional[str]) -> bool:
    """A noise-scale estimate may set a cap (or an efficiency) when it is positive and its interval bounded."""
    return ci_kind == "bounded" and b_simple is not None and math.isfinite(b_simple) and b_simple > 0


@dataclass(frozen=True)
class NoisePoint:
    """One measurement of B_simple and the setting (LR, momentum, batch) it was measured at."""

    sample: int        # samples seen when it was measured
    b_simple: float
    lr: float
    momentum: float
    batch_size: int
    ci90: tuple[float, float] = (0.0, math.inf)
    ci_kind: str = "bounded"

    @property
    def usable(self) -> bool:
        return usable(self.b_simple, self.ci_kind) and self.lr > 0 and self.batch_size >= 1


@dataclass(frozen=True)
class NoiseModel:
    """B_noise(s) of eq. 16 from reference points (a probe's one, or a trace's many)."""

    points: tuple[NoisePoint, ...]
    source: str = "probe"  # "probe" or "trace"
    #: log(B_ref·T_ref) at every point, per temperature model (by identity: a noise-rule model holds a long
    #: tuple, too slow to hash per call); a few entries, so a trace of n points costs O(n) once per model
    #: and O(log n) per B_noise(s) (convert asks once per span: n log n, not n × spans).
    _curves: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.points:
            raise UserError("a noise model needs at least one measured noise scale with a bounded interval")
        object.__setattr__(self, "points", tuple(sorted(self.points, key=lambda p: p.sample)))

    @classmethod
    def from_probe(cls, probe) -> Optional["NoiseModel"]:
        """The model of a ProbeResult's one measurement; None when it is not usable as a cap."""
        s, n = probe.settings, probe.noise
        point = NoisePoint(0, float(n.b_simple), float(s.lr), float(s.momentum), int(s.batch_size),
                           tuple(n.ci90), n.ci_kind)
        return cls((point,), "probe") if point.usable else None

    @classmethod
    def from_trace(cls, rows: list[dict], what: str = "noise trace") -> "NoiseModel":
        """The model of a trace's usable rows (dicts with sample, b_simple, lr, momentum, batch_size,
        ci90, ci_kind); refused when none is usable."""
        points = []
        if not isinstance(rows, (list, tuple)):
            raise UserError(f"{what}: its points are not a list; {TRACE_REMEDY}")
        for i, row in enumerate(rows):
            try:
                ci = row.get("ci90") or (0.0, None)
                point = NoisePoint(_whole(row["sample"]), float(row["b_simple"]), float(row["lr"]),
                                   float(row["momentum"]), _whole(row["batch_size"]),
                                   (float(ci[0] or 0.0), math.inf if ci[1] is None else float(ci[1])),
                                   str(row.get("ci_kind") or "bounded"))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError):
                raise UserError(f"{what}: a point lacks sample, b_simple, lr, momentum or batch_size; "
                                "give the results.json of bsadvisor validate or a NoiseMonitor log") from None
            bad = _bad_setting(point)
            if bad:
                raise UserError(f"{what}: point {i + 1} (sample {point.sample}) has {bad}; {TRACE_REMEDY}")
            if point.usable:
                points.append(point)
        if not points:
            raise UserError(f"{what}: no point has a bounded 90% interval, so it cannot set a noise scale; "
                            "record a longer run or raise the monitor's draws")
        return cls(tuple(points), "trace")

    def to_dict(self) -> dict[str, Any]:
        """What a plan records (plan.probe.noise_model) to rebuild the model (validate re-converts with it)."""
        def row(p: NoisePoint) -> dict:  # asdict's deep copy, without its cost on a trace of 10⁵ points
            return {"sample": p.sample, "b_simple": p.b_simple, "lr": p.lr, "momentum": p.momentum,
                    "batch_size": p.batch_size, "ci90": [p.ci90[0], None if math.isinf(p.ci90[1]) else p.ci90[1]],
                    "ci_kind": p.ci_kind}
        return {"source": self.source, "points": [row(p) for p in self.points]}

    @classmethod
    def from_dict(cls, doc: dict) -> "NoiseModel":
        model = cls.from_trace(list(doc.get("points") or []), "the plan's noise model")
        return cls(model.points, str(doc.get("source") or "trace"))

    def check_dataset(self, dataset_size: Optional[int], what: str = "the noise trace") -> None:
        """Refuse points measured at a batch the data set cannot have (B ≥ N: no gradient noise, T = 0).

        Called once N is known, before anything slow, so a trace of another data set fails at once.
        """
        if dataset_size is None:
            return
        for p in self.points:
            if p.batch_size >= dataset_size:
                raise UserError(f"{what} has a point measured at batch {p.batch_size}, not below the data set's "
                                f"{dataset_size} examples (a batch of the whole data set has no gradient noise): "
                                "was it recorded on another data set? Give a trace of this one")

    def b_noise(self, sample: float, temperature: float, model) -> float:
        """B_noise at ``sample`` for a run at ``temperature`` (in ``model``'s units, a TemperatureModel): eq. 16."""
        if temperature <= 0:
            return math.inf  # no noise injected: any batch is below the noise scale
        return math.exp(self._log_bt(sample, model)) / temperature

    def _log_bt(self, sample: float, model) -> float:
        """log(B_ref·T_ref) at ``sample``: linear between the points' samples, flat beyond the ends."""
        xs, values = self._curve(model)
        if sample <= xs[0]:
            return values[0]
        if sample >= xs[-1]:
            return values[-1]
        i = bisect.bisect_right(xs, sample)
        w = (sample - xs[i - 1]) / (xs[i] - xs[i - 1])
        return values[i - 1] * (1 - w) + values[i] * w

    def _curve(self, model) -> tuple[list[float], list[float]]:
        """The points' samples and log(B_ref·T_ref) under ``model``, computed once per model object."""
        hit = self._curves.get(id(model))
        if hit is not None and hit[0] is model:
            return hit[1], hit[2]
        xs, values = [p.sample for p in self.points], [math.log(self._bt(p, model)) for p in self.points]
        if len(self._curves) >= 8:  # a few models per conversion; never an unbounded cache
            self._curves.clear()
        self._curves[id(model)] = (model, xs, values)  # holding the model keeps its id from being reused
        return xs, values

    def _bt(self, p: NoisePoint, model) -> float:
        """B_simple × the temperature it was measured at; a point the model gives no positive temperature is refused."""
        try:
            t = model.temperature(p.lr, p.momentum, p.batch_size)
            bt = p.b_simple * t
        except (ZeroDivisionError, ValueError, OverflowError, TypeError):
            bt = math.nan
        if isinstance(bt, complex) or not (isinstance(bt, float) and math.isfinite(bt) and bt > 0):
            raise UserError(f"the noise trace's point at sample {p.sample} (lr {p.lr:g}, momentum {p.momentum:g}, "
                            f"batch {p.batch_size}) has no positive noise temperature for this run (a batch not "
                            "below the data set size, or numbers out of range); give a trace of this data set")
        return bt

    def cap(self, multiple: float):
        """The per-sample batch cap ``multiple`` × B_noise(s), as convert takes it (noise_cap_batch)."""
        return NoiseCap(self, float(multiple))

    def describe(self) -> str:
        if self.source == "probe":
            p = self.points[0]
            return (f"B_noise(s) = B_simple·T_probe/T(s), the probe's B_simple {p.b_simple:,.0f} measured at lr "
                    f"{p.lr:g}, batch {p.batch_size} (B_noise ∝ 1/T; it grows further as the loss falls)")
        n = len(self.points)
        spread = ", log-linear in samples between them" if n > 1 else ""
        return (f"B_noise(s) from a measured trace of {n} point{'s' if n != 1 else ''} with bounded intervals"
                f"{spread}, each scaled by T_measured/T(s)")


def _whole(x: Any) -> int:
    """A whole number from a trace (an integral float such as 64.0 too); anything else is a ValueError."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or x in (math.inf, -math.inf) or x != int(x):
        raise ValueError(x)
    return int(x)


def _bad_setting(p: NoisePoint) -> Optional[str]:
    """What is impossible about a trace point's setting (None: nothing)."""
    if p.sample < 0:
        return f"a negative sample position {p.sample}"
    if not (math.isfinite(p.lr) and p.lr >= 0):
        return f"lr {p.lr:g} (it must be a finite number ≥ 0)"
    if not 0 <= p.momentum < 1:
        return f"momentum {p.momentum:g} (it must be in [0, 1))"
    if p.batch_size < 1:
        return f"batch_size {p.batch_size} (it must be ≥ 1)"
    if not math.isfinite(p.b_simple) and not math.isnan(p.b_simple):
        return f"b_simple {p.b_simple} (not finite)"
    return None


TRACE_SCHEMA = "bsadvisor.noise_trace/1"
VALIDATION_SCHEMAS = ("bsadvisor.validation/1", "bsadvisor.validation/1.1", "bsadvisor.validation/1.2")
TRACE_REMEDY = "give the results.json of bsadvisor validate or a file written by NoiseMonitor.save"


def load_trace(path, run: str = "original", seed: int = 0) -> NoiseModel:
    """The noise model of a measured trace: a NoiseMonitor file, or one run of a validate results.json.

    From results.json the ``run``'s (default: the original schedule's) trace of ``seed`` is
    used: the plan keeps the original's temperature, so either run measures the same B_noise(s).
    """
    if not isinstance(run, str):
        raise TypeError(f"load_trace: run must be a run's name such as 'original', got {type(run).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"load_trace: seed must be a whole number ≥ 0 (a seed of the validate run), got {seed!r}")
    doc = read_json(path, "noise trace", TRACE_REMEDY)
    what = f"noise trace {path}"
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == TRACE_SCHEMA:
        rows = doc.get("points")
    elif schema in VALIDATION_SCHEMAS:
        runs = doc.get("runs") or {}
        if not isinstance(runs, dict) or not all(isinstance(k, str) for k in runs):
            raise UserError(f"{what}: its 'runs' is not an object of runs; {TRACE_REMEDY}")
        if run not in runs:
            names = ", ".join(sorted(runs))
            raise UserError(f"{what} has no run {run!r} (it has {names[:200] or 'none'})")
        seeds = runs[run].get("seeds") if isinstance(runs[run], dict) else None
        if not isinstance(seeds, list):
            raise UserError(f"{what}: run {run!r} has no list of seeds; {TRACE_REMEDY}")
        rows = seeds[seed].get("noise_trace") if seed < len(seeds) and isinstance(seeds[seed], dict) else None
        if not rows:
            raise UserError(f"{what}: run {run!r} recorded no noise trace; rerun bsadvisor validate "
                            "without --no-noise-monitor")
    else:
        raise UserError(f"{what} is not a noise trace (schema {schema!r}); {TRACE_REMEDY}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{what}: its points are not a list of objects; {TRACE_REMEDY}")
    return NoiseModel.from_trace(rows, what)


@dataclass(frozen=True)
class NoiseCap:
    """``multiple`` × B_noise(s): convert asks it once per span of constant LR (core.convert)."""

    model: NoiseModel
    multiple: float

    def __call__(self, sample: float, temperature: float, temperature_model) -> float:
        return self.multiple * self.model.b_noise(sample, temperature, temperature_model)
