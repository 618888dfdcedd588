"""A batch-size plan: what batch, LR and momentum to use in each epoch.

Pure data + JSON (schema ``bsadvisor.plan/1``); no torch. The conversion that builds
a Plan from an LR schedule lives in ``convert.py``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .fileio import check_schema, json_safe

PLAN_SCHEMA = "bsadvisor.plan/1"


@dataclass(frozen=True)
class Setting:
    """What to train with at one epoch."""

    batch_size: int
    lr: float
    momentum: float


@dataclass(frozen=True)
class Stage:
    """Epochs [start_epoch, end_epoch) trained at one constant (batch_size, lr, momentum).

    ``temperature`` is the realised g/g0 (1.0 = the original schedule's start), and
    ``target_temperature`` what the original schedule asks for at ``start_epoch``.
    """

    start_epoch: int
    end_epoch: int
    batch_size: int
    lr: float
    momentum: float
    temperature: float
    target_temperature: float = float("nan")
    phase: str = "growth"  # "warmup" | "growth" | "hybrid"
    extra: dict = field(default_factory=dict)  # e.g. predicted_seconds, efficiency (issue 4)

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch

    def updates(self, dataset_size: int) -> int:
        """Parameter updates: ceil(N/B) per epoch (the last partial batch is kept)."""
        return self.epochs * math.ceil(dataset_size / self.batch_size)


@dataclass
class Plan:
    """Stages tiling [0, epochs), plus what produced them.

    ``inputs`` holds the conversion's settings (lr, batch_size, dataset_size, epochs,
    momentum, schedule, rule, ...); ``baseline_updates`` counts the original schedule's
    updates at the fixed batch; ``warnings``/``notes`` are for the report.
    """

    stages: list[Stage]
    dataset_size: int
    inputs: dict[str, Any] = field(default_factory=dict)
    baseline_updates: int = 0
    cap: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.validate()

    # -- queries -----------------------------------------------------------------
    @property
    def epochs(self) -> int:
        return self.stages[-1].end_epoch

    @property
    def updates(self) -> int:
        return sum(s.updates(self.dataset_size) for s in self.stages)

    def stage_index(self, epoch: float) -> int:
        """Index of the stage holding ``epoch``; past the end, the last stage."""
        if not (isinstance(epoch, (int, float)) and math.isfinite(epoch)) or epoch < 0:
            raise UserError(f"epoch must be a number ≥ 0, got {epoch!r}")
        for i, s in enumerate(self.stages):
            if epoch < s.end_epoch:
                return i
        return len(self.stages) - 1

    def at(self, epoch: float) -> Setting:
        """Batch size, LR and momentum to use during ``epoch`` (0-based)."""
        s = self.stages[self.stage_index(epoch)]
        return Setting(s.batch_size, s.lr, s.momentum)

    def batch_sizes(self) -> list[int]:
        """The batch size of every epoch, in order."""
        return [s.batch_size for s in self.stages for _ in range(s.epochs)]

    # -- checks ------------------------------------------------------------------
    def validate(self) -> None:
        if not self.stages:
            raise UserError("plan has no stages")
        if not isinstance(self.dataset_size, int) or self.dataset_size < 1:
            raise UserError(f"plan dataset_size must be a positive integer, got {self.dataset_size!r}")
        expected = 0
        for i, s in enumerate(self.stages):
            if s.start_epoch != expected or s.end_epoch <= s.start_epoch:
                raise UserError(f"plan stage {i} covers epochs [{s.start_epoch}, {s.end_epoch}) but should start at "
                                f"{expected} and be non-empty; stages must tile [0, epochs) in order")
            if not isinstance(s.batch_size, int) or s.batch_size < 1:
                raise UserError(f"plan stage {i}: batch_size must be a positive integer, got {s.batch_size!r}")
            if not (math.isfinite(s.lr) and s.lr >= 0):
                raise UserError(f"plan stage {i}: lr must be a finite number ≥ 0, got {s.lr!r}")
            if not (math.isfinite(s.momentum) and 0 <= s.momentum < 1):
                raise UserError(f"plan stage {i}: momentum must be in [0, 1), got {s.momentum!r}")
            expected = s.end_epoch

    # -- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        stages = []
        for s in self.stages:
            d = {k: v for k, v in asdict(s).items() if k != "extra"}
            d["updates"] = s.updates(self.dataset_size)
            d.update(s.extra)
            stages.append(json_safe(d))
        doc = {
            "schema": PLAN_SCHEMA,
            "inputs": json_safe(dict(self.inputs)),
            "dataset_size": self.dataset_size,
            "epochs": self.epochs,
            "cap": json_safe(dict(self.cap)),
            "stages": stages,
            "baseline": {"updates": self.baseline_updates,
                         "examples": self.epochs * self.dataset_size},
            "plan": {"updates": self.updates, "examples": self.epochs * self.dataset_size,
                     "update_ratio": (self.baseline_updates / self.updates) if self.baseline_updates else None},
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
        if self.probe is not None:
            doc["probe"] = self.probe
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, doc: Any) -> "Plan":
        check_schema(doc, PLAN_SCHEMA, "plan file", "regenerate it with bsadvisor convert-schedule --out")
        raw = doc.get("stages")
        if not isinstance(raw, list) or not raw:
            raise UserError("plan file has no 'stages' list")
        known = {"start_epoch", "end_epoch", "batch_size", "lr", "momentum", "temperature",
                 "target_temperature", "phase"}
        stages = []
        for i, d in enumerate(raw):
            if not isinstance(d, dict):
                raise UserError(f"plan stage {i} is not an object")
            missing = [k for k in ("start_epoch", "end_epoch", "batch_size", "lr", "momentum") if k not in d]
            if missing:
                raise UserError(f"plan stage {i} lacks {', '.join(missing)}")
            try:
                stages.append(Stage(
                    start_epoch=_int(d["start_epoch"], f"stage {i} start_epoch"),
                    end_epoch=_int(d["end_epoch"], f"stage {i} end_epoch"),
                    batch_size=_int(d["batch_size"], f"stage {i} batch_size"),
                    lr=_num(d["lr"], f"stage {i} lr"), momentum=_num(d["momentum"], f"stage {i} momentum"),
                    temperature=_num(d.get("temperature", float("nan")), f"stage {i} temperature", allow_none=True),
                    target_temperature=_num(d.get("target_temperature", float("nan")),
                                            f"stage {i} target_temperature", allow_none=True),
                    phase=str(d.get("phase", "growth")),
                    extra={k: v for k, v in d.items() if k not in known and k != "updates"}))
            except TypeError as exc:
                raise UserError(f"plan stage {i} is malformed: {exc}") from None
        baseline = doc.get("baseline") or {}
        n = doc.get("dataset_size", (doc.get("inputs") or {}).get("dataset_size"))
        return cls(stages=stages, dataset_size=_int(n, "dataset_size"), inputs=dict(doc.get("inputs") or {}),
                   baseline_updates=int(baseline.get("updates", 0) or 0), cap=dict(doc.get("cap") or {}),
                   warnings=list(doc.get("warnings") or []), notes=list(doc.get("notes") or []),
                   probe=doc.get("probe"))

    @classmethod
    def from_json(cls, text: str | dict) -> "Plan":
        if isinstance(text, dict):
            return cls.from_dict(text)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"plan is not valid JSON ({exc}); regenerate it with bsadvisor convert-schedule --out") from None
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path) -> "Plan":
        from .fileio import read_json

        return cls.from_dict(read_json(path, "plan file"))

    def save(self, path) -> None:
        from .fileio import write_atomic

        write_atomic(path, self.to_json() + "\n")


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
        raise UserError(f"plan {what} must be an integer, got {v!r}")
    return int(v)


def _num(v: Any, what: str, allow_none: bool = False) -> float:
    if v is None and allow_none:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UserError(f"plan {what} must be a number, got {v!r}")
    return float(v)

