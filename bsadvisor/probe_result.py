"""What a probe measured: the ``bsadvisor.probe/1`` document as data (no torch).

``bsadvisor.probing`` produces a ProbeResult; convert-schedule --probe and advise only
read one, so this module must import without torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .errors import UserError
from .fileio import check_schema, json_safe
from .temperature import temperature

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
    temperature: float = 0.0            # g = lr/(1−m)·(N/B − 1)  (theory.md §1)
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
    def from_dict(cls, doc: Any) -> "ProbeResult":
        """Rebuild from a ``bsadvisor.probe/1`` document; bad or missing fields → UserError."""
        check_schema(doc, SCHEMA, "probe document", "regenerate it with bsadvisor probe --out")

        def section(name: str, typ, required: dict) -> Any:
            sec = doc.get(name)
            if not isinstance(sec, dict):
                raise UserError(f"probe document: {name!r} missing or not an object; regenerate it with bsadvisor probe")
            for key, kind in required.items():
                v = sec.get(key)
                ok = isinstance(v, kind) and not isinstance(v, bool) if kind is not str else isinstance(v, str)
                if kind in (int, float, (int, float)) and ok and not math.isfinite(v):
                    ok = False
                if not ok:
                    raise UserError(f"probe document: {name}.{key} missing or not a valid {getattr(kind, '__name__', 'number')}; "
                                    "regenerate it with bsadvisor probe")
            known = {f for f in typ.__dataclass_fields__}
            return typ(**{k: v for k, v in sec.items() if k in known})

        num = (int, float)
        ci = (doc.get("noise") or {}).get("ci90") if isinstance(doc.get("noise"), dict) else None
        if not (isinstance(ci, list) and len(ci) == 2 and all(x is None or isinstance(x, num) for x in ci)):
            raise UserError("probe document: noise.ci90 must be a list [low, high]; regenerate it with bsadvisor probe")
        noise = section("noise", NoiseResult, {"b_simple": num, "trace_sigma": num, "grad_sq_norm": num, "examples": int})
        noise.ci90 = tuple(math.nan if x is None else float(x) for x in ci)
        mem = section("memory", MemoryResult, {"max_batch": int, "bytes_per_sample": num, "fixed_bytes": num, "trials": int})
        settings = section("settings", ProbeSettings, {"lr": num, "momentum": num, "batch_size": int, "dataset_size": int,
                                                       "device": str, "optimizer": str, "estimator": str, "seed": int})
        tp = doc.get("throughput")
        if not isinstance(tp, list):
            raise UserError("probe document: 'throughput' missing or not a list; regenerate it with bsadvisor probe")
        points = []
        for p in tp:
            if not (isinstance(p, dict) and isinstance(p.get("batch_size"), int)
                    and isinstance(p.get("examples_per_s"), num)):
                raise UserError("probe document: throughput entries need batch_size and examples_per_s; "
                                "regenerate it with bsadvisor probe")
            points.append(ThroughputPoint(p["batch_size"], float(p["examples_per_s"]), float(p.get("step_seconds", 0.0))))
        temp = doc.get("temperature")
        if not isinstance(temp, num):
            temp = temperature(settings.lr, settings.batch_size, settings.dataset_size, settings.momentum)
        return cls(noise=noise, memory=mem, throughput=points, settings=settings, temperature=float(temp),
                   throughput_knee=doc.get("throughput_knee"), target=str(doc.get("target", "target")),
                   wall_seconds=float(doc.get("wall_seconds") or 0.0))



def load_probe(path) -> ProbeResult:
    """Read a probe.json written by ``bsadvisor probe --out``."""
    from .fileio import read_json

    return ProbeResult.from_dict(read_json(path, what="probe file"))
