"""What a probe measured: the ``bsadvisor.probe/1`` document as data (no torch).

``bsadvisor.measure.probe`` produces a ProbeResult; convert-schedule --probe and advise only
read one, so this module must import without torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core import schema as S
from bsadvisor.core.defaults import CI_KINDS
from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import check_schema, json_safe, read_json
from bsadvisor.core.temperature import temperature

SCHEMA = "bsadvisor.probe/1"


# --------------------------------------------------------------------------- results
@dataclass
class NoiseResult:
    b_simple: float
    ci90: tuple[float, float]
    trace_sigma: float
    grad_sq_norm: float
    examples: int
    draws: int = 0
    micro_batch: int = 0          # b
    big_batch: int = 0            # B = k·b
    ci_method: str = "fieller"
    ci_kind: str = "bounded"      # core.defaults.CI_KINDS: a lower bound or nothing when |G|² is not significant
    converged: bool = False       # interval within ±target_rel_ci
    relative_noise: Optional[float] = None  # √(B_simple / batch_size)
    sqrt_table: list = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class MemoryResult:
    max_batch: int
    bytes_per_sample: float
    fixed_bytes: float
    trials: int
    limit_bytes: float = 0.0
    headroom: float = 0.0
    peak_bytes: float = 0.0
    limited_by: str = "memory"
    method: str = "cpu-saved-tensors"


@dataclass
class ThroughputPoint:
    batch_size: int
    examples_per_s: float         # the median of ``repeats`` timings
    step_seconds: float = 0.0
    repeats: int = 1              # timings taken at this batch
    spread: float = 0.0           # (max − min)/median of their examples/s
    slowest: Optional[float] = None  # the lowest of the timings' examples/s (predicted time's high end)
    fastest: Optional[float] = None  # the highest (its low end)


@dataclass
class ProbeSettings:
    lr: float
    momentum: float
    batch_size: int
    dataset_size: int
    device: str
    optimizer: str
    estimator: str
    seed: int
    warmup_steps: int = 0
    budget_seconds: float = 0.0
    target_rel_ci: float = 0.10
    world_size: int = 1  # processes under torchrun; memory.max_batch is per device
    draws: Optional[int] = None  # a fixed number of noise draws (--draws); None: the time budget decided


@dataclass
class ProbeResult:
    """What the probe measured. ``to_dict()`` is the ``bsadvisor.probe/1`` JSON document."""

    noise: NoiseResult
    memory: MemoryResult
    throughput: list
    settings: ProbeSettings
    temperature: float = 0.0            # g = lr/(1−m)·(N/B − 1)  (Smith et al. 1711.00489, eq. 1)
    throughput_knee: Optional[int] = None  # last batch where doubling still gave ≥1.2× examples/s
    target: str = "target"
    wall_seconds: float = 0.0
    # What makes the numbers doubtful (sum-reduced loss, disturbed timings, busy machine, ...).
    warnings: list = field(default_factory=list)
    # Parameters and buffers the noise was measured at (CPU copies; not serialized).
    measured_state: Optional[dict] = field(default=None, repr=False, compare=False)

    # convenience aliases
    @property
    def b_simple(self) -> float:
        return self.noise.b_simple

    @property
    def max_batch(self) -> int:
        return self.memory.max_batch

    def to_dict(self) -> dict:
        noise = asdict(self.noise)
        noise["ci90"] = [float(x) for x in self.noise.ci90]
        return {
            "schema": SCHEMA,
            "target": self.target,
            "noise": json_safe(noise),
            "memory": json_safe(asdict(self.memory)),
            "throughput": [json_safe(asdict(p)) for p in self.throughput],
            "throughput_knee": self.throughput_knee,
            "temperature": json_safe(self.temperature),
            "settings": asdict(self.settings),
            "wall_seconds": self.wall_seconds,
            "warnings": [str(w) for w in self.warnings],
        }

    @classmethod
    def from_dict(cls, doc: Any, what: str = "probe document") -> "ProbeResult":
        """Rebuild from a ``bsadvisor.probe/1`` document, checked against PROBE_SPEC in one pass.

        Bad or missing fields → one UserError naming ``what`` and the field's path. Members
        this version does not know are ignored; fields a newer probe adds to the result
        classes (with defaults) are read when present and of the default's kind.
        """
        check_schema(doc, SCHEMA, what, REMEDY)
        d = S.validate(doc, PROBE_SPEC, what, REMEDY)
        st = d["settings"]
        if st["batch_size"] > st["dataset_size"]:
            raise S.refuse(what, "settings.batch_size", f"{st['batch_size']} is larger than settings.dataset_size "
                                                        f"{st['dataset_size']}", REMEDY)
        lo, hi = d["noise"]["ci90"]
        lo, hi = (0.0 if lo is None else lo), (math.inf if hi is None else hi)  # null: no bound (json_safe)
        noise_doc = dict(d["noise"], ci90=(lo, hi))
        if "ci_kind" not in d["noise"] and d["noise"].get("ci_method") == "delta":
            # written before intervals were honest: a delta-method interval meant |G|² was not significant
            noise_doc["ci_kind"] = "unbounded"
        if noise_doc.get("ci_kind", "bounded") == "bounded":  # a bounded estimate is a positive number in [lo, hi]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise S.refuse(what, "noise.ci90", "has an open end but noise.ci_kind says the interval is bounded",
                               REMEDY)
            if not noise_doc["b_simple"] > 0:
                raise S.refuse(what, "noise.b_simple", f"must be > 0 when noise.ci_kind is bounded, got "
                                                       f"{noise_doc['b_simple']:g}", REMEDY)
        if lo > hi:
            raise S.refuse(what, "noise.ci90", f"is [{lo:g}, {hi:g}]: its low end is above its high end", REMEDY)
        noise = _build(NoiseResult, noise_doc, doc["noise"], "noise", what)
        memory = _build(MemoryResult, d["memory"], doc["memory"], "memory", what)
        settings = _build(ProbeSettings, st, doc["settings"], "settings", what)
        points = [_build(ThroughputPoint, p, raw, f"throughput[{i}]", what)
                  for i, (p, raw) in enumerate(zip(d["throughput"], doc["throughput"]))]
        temp = d.get("temperature")
        if temp is None or not math.isfinite(temp):
            temp = temperature(settings.lr, settings.batch_size, settings.dataset_size, settings.momentum)
        top = {"temperature": float(temp), "throughput_knee": d.get("throughput_knee"),
               "target": d.get("target", "target"), "wall_seconds": d.get("wall_seconds") or 0.0}
        return _build(cls, dict(d, **top, noise=noise, memory=memory, throughput=points, settings=settings), doc,
                      "", what, skip={"measured_state"})

def load_probe(path) -> ProbeResult:
    """Read a probe.json written by ``bsadvisor probe --out``."""
    return ProbeResult.from_dict(read_json(path, "probe file", REMEDY), f"probe file {path}")


# -- the probe file's schema (bsadvisor.core.schema) ---------------------------------------
REMEDY = "regenerate it with bsadvisor probe --out"
_NUM = S.Num()
_NONNEG = S.Num(low=0)
_COUNT = S.Int(low=0)
_INFO = S.Num(nullable=True, null_nan=True)  # a figure only reported: null (NaN) is fine
_INFO_NONNEG = S.Num(low=0, nullable=True, null_nan=True)


def _Obj(fields: dict) -> S.Obj:
    return S.Obj(fields, extra=None)  # members this version does not know are ignored


PROBE_SPEC = _Obj({
    "schema": S.req(S.Str()),
    "target": S.opt(S.Str(max_len=10_000)),
    "noise": S.req(_Obj({
        # any finite value: a noise scale too small or too noisy to measure is still a probe
        # (memory and throughput hold); ci_kind says whether it may set a cap
        "b_simple": S.req(_NUM),
        "ci90": S.req(S.List(S.Num(nullable=True), length=2)),  # null: no upper bound
        "trace_sigma": S.req(_NUM), "grad_sq_norm": S.req(_NUM), "examples": S.req(_COUNT),
        "draws": S.opt(_COUNT), "micro_batch": S.opt(_COUNT), "big_batch": S.opt(_COUNT),
        "ci_method": S.opt(S.Str()), "ci_kind": S.opt(S.Str(choices=CI_KINDS)), "converged": S.opt(S.Bool()),
        "relative_noise": S.opt(S.Num(low=0, nullable=True)),
        "sqrt_table": S.opt(S.List(S.Json(max_depth=1))), "seconds": S.opt(_INFO_NONNEG),
    })),
    "memory": S.req(_Obj({
        "max_batch": S.req(S.Int(low=1)), "bytes_per_sample": S.req(_NONNEG), "fixed_bytes": S.req(_NUM),
        "trials": S.req(_COUNT), "limit_bytes": S.opt(_INFO_NONNEG), "headroom": S.opt(_INFO),
        "peak_bytes": S.opt(_INFO_NONNEG), "limited_by": S.opt(S.Str()), "method": S.opt(S.Str()),
    })),
    "throughput": S.req(S.List(_Obj({
        "batch_size": S.req(S.Int(low=1)), "examples_per_s": S.req(_INFO_NONNEG),  # null: a failed rung
        "step_seconds": S.opt(_INFO_NONNEG), "repeats": S.opt(S.Int(low=1)), "spread": S.opt(_INFO_NONNEG),
        "slowest": S.opt(_INFO_NONNEG), "fastest": S.opt(_INFO_NONNEG),
    }))),
    "throughput_knee": S.opt(S.Int(low=1, nullable=True)),
    "temperature": S.opt(S.Num(low=0, nullable=True)),
    "settings": S.req(_Obj({
        "lr": S.req(S.Num(low=0, low_open=True)), "momentum": S.req(S.Num(low=0, high=1, high_open=True)),
        "batch_size": S.req(S.Int(low=1)), "dataset_size": S.req(S.Int(low=1)),
        "device": S.req(S.Str()), "optimizer": S.req(S.Str()), "estimator": S.req(S.Str()),
        "seed": S.req(S.Int(low=0, high=checks.MAX_SEED)), "warmup_steps": S.opt(_COUNT),
        "budget_seconds": S.opt(S.Num(low=0, nullable=True)),
        "target_rel_ci": S.opt(S.Num(low=0, low_open=True)), "world_size": S.opt(S.Int(low=1)),
        "draws": S.opt(S.Int(low=2, nullable=True)),
    })),
    "warnings": S.opt(S.List(S.Str(max_len=10_000), max_len=1_000)),
    "wall_seconds": S.opt(S.Num(low=0, nullable=True)),
})


def _kind_of_default(f: dataclasses.Field) -> Optional[tuple]:
    """The JSON kinds a dataclass field's default allows (None: any)."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float)):
        return (int, float)
    if isinstance(default, str):
        return (str,)
    if isinstance(default, (list, tuple)):
        return (list,)
    if isinstance(default, dict):
        return (dict,)
    return None


def _build(typ, checked: dict, raw: dict, path: str, what: str, skip: frozenset | set = frozenset()):
    """``typ(**...)``: the checked members, plus ``typ``'s other fields found in ``raw`` (of their default's kind)."""
    kwargs = {}
    for f in dataclasses.fields(typ):
        if f.name in skip:
            continue
        if f.name in checked:
            kwargs[f.name] = checked[f.name]
        elif f.name in raw:
            v, kinds = raw[f.name], _kind_of_default(f)
            if kinds is not None and v is not None and (isinstance(v, bool) and bool not in kinds
                                                         or not isinstance(v, kinds)):
                raise S.refuse(what, f"{path}.{f.name}" if path else f.name,
                               f"must be like {f.name}'s default ({kinds[0].__name__}), got {S.show(v)}", REMEDY)
            try:
                kwargs[f.name] = S.Json(max_depth=4).check(v, f"{path}.{f.name}" if path else f.name)
            except S.Invalid as exc:
                raise UserError(f"{what}: {exc}; {REMEDY}") from None
    missing = [f.name for f in dataclasses.fields(typ) if f.name not in kwargs and f.name not in skip
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise S.refuse(what, f"{path}.{missing[0]}" if path else missing[0], "is missing", REMEDY)
    return typ(**kwargs)
