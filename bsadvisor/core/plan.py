"""A batch-size plan: what batch, LR and momentum to use in each epoch.

Pure data + JSON (schema ``bsadvisor.plan/1``); no torch. The conversion that builds
a Plan from an LR schedule lives in ``convert.py``.
"""
from __future__ import annotations

import bisect
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from bsadvisor.core import schema as S
from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import check_schema, json_safe

PLAN_SCHEMA = "bsadvisor.plan/1"
#: Longest plan, in epochs. Conversion never walks epochs one by one (stages are intervals),
#: but a plan's users do (training, ``batch_sizes()``, CSV export): a bound keeps them finite.
MAX_EPOCHS = 1_000_000
PHASES = ("warmup", "growth", "hybrid", "original")
#: How the recorded schedule counts: scheduler.step() once an epoch, or once an iteration.
SCHEDULE_UNITS = ("epoch", "step")
REMEDY = "regenerate it with bsadvisor convert-schedule --out"


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
        if isinstance(epoch, bool) or not (isinstance(epoch, (int, float)) and math.isfinite(epoch)) or epoch < 0:
            raise UserError(f"epoch must be a number ≥ 0, got {S.show(epoch)}")
        ends = self.__dict__.get("_ends")
        if ends is None or len(ends) != len(self.stages) or ends[-1] != self.stages[-1].end_epoch:
            ends = self._ends = [s.end_epoch for s in self.stages]
        return min(bisect.bisect_right(ends, epoch), len(self.stages) - 1)

    def at(self, epoch: float) -> Setting:
        """Batch size, LR and momentum to use during ``epoch`` (0-based)."""
        s = self.stages[self.stage_index(epoch)]
        return Setting(s.batch_size, s.lr, s.momentum)

    def batch_sizes(self) -> list[int]:
        """The batch size of every epoch, in order (at most MAX_EPOCHS of them)."""
        return [s.batch_size for s in self.stages for _ in range(s.epochs)]

    def stage_batch_sizes(self) -> list[int]:
        """The batch size of every stage, in order: the plan's batches without walking its epochs."""
        return [s.batch_size for s in self.stages]

    # -- checks ------------------------------------------------------------------
    def validate(self) -> None:
        if not self.stages:
            raise UserError("plan has no stages")
        if isinstance(self.dataset_size, bool) or not isinstance(self.dataset_size, int) or self.dataset_size < 1:
            raise UserError(f"plan dataset_size must be a positive integer, got {S.show(self.dataset_size)}")
        expected = 0
        for i, s in enumerate(self.stages):
            if s.start_epoch != expected or s.end_epoch <= s.start_epoch:
                raise UserError(f"plan stage {i} covers epochs [{s.start_epoch}, {s.end_epoch}) but should start at "
                                f"{expected} and be non-empty; stages must tile [0, epochs) in order")
            if isinstance(s.batch_size, bool) or not isinstance(s.batch_size, int) or s.batch_size < 1:
                raise UserError(f"plan stage {i}: batch_size must be a positive integer, got {S.show(s.batch_size)}")
            if s.batch_size > self.dataset_size:
                raise UserError(f"plan stage {i}: batch_size {s.batch_size} is larger than the dataset "
                                f"({self.dataset_size} examples)")
            if not (math.isfinite(s.lr) and s.lr >= 0):
                raise UserError(f"plan stage {i}: lr must be a finite number ≥ 0, got {S.show(s.lr)}")
            if not (math.isfinite(s.momentum) and 0 <= s.momentum < 1):
                raise UserError(f"plan stage {i}: momentum must be in [0, 1), got {S.show(s.momentum)}")
            expected = s.end_epoch
        if expected > MAX_EPOCHS:
            raise UserError(f"plan covers {expected} epochs; at most {MAX_EPOCHS:,} are supported")

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
            doc["probe"] = json_safe(self.probe)
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, doc: Any, what: str = "plan file") -> "Plan":
        """Rebuild from a ``bsadvisor.plan/1`` document, checked against PLAN_SPEC in one pass.

        A field of the wrong type or out of range, stages that do not tile [0, epochs), a
        batch larger than the dataset, or recorded ``inputs`` that disagree with the stages
        (epochs, dataset size) give one UserError naming ``what`` and the field.
        """
        check_schema(doc, PLAN_SCHEMA, what, REMEDY)
        d = S.validate(doc, PLAN_SPEC, what, REMEDY)
        inputs = d.get("inputs") or {}
        n = d.get("dataset_size", inputs.get("dataset_size"))
        if n is None:
            raise S.refuse(what, "dataset_size", "is missing", REMEDY)
        stages = []
        for i, st in enumerate(d["stages"]):
            where = f"stages[{i}]"
            if st["end_epoch"] <= st["start_epoch"] or st["start_epoch"] != (stages[-1].end_epoch if stages else 0):
                expected = stages[-1].end_epoch if stages else 0
                raise S.refuse(what, where, f"covers epochs [{st['start_epoch']}, {st['end_epoch']}) but must start at "
                                            f"{expected} and be non-empty (stages tile [0, epochs) in order)", REMEDY)
            if st["end_epoch"] > MAX_EPOCHS:
                raise S.refuse(what, f"{where}.end_epoch", f"is {st['end_epoch']}; a plan covers at most "
                                                           f"{MAX_EPOCHS:,} epochs", REMEDY)
            if st["batch_size"] > n:
                raise S.refuse(what, f"{where}.batch_size", f"{st['batch_size']} is larger than dataset_size {n}",
                               REMEDY)
            stages.append(Stage(start_epoch=st["start_epoch"], end_epoch=st["end_epoch"],
                                batch_size=st["batch_size"], lr=st["lr"], momentum=st["momentum"],
                                temperature=st.get("temperature", math.nan),
                                target_temperature=st.get("target_temperature", math.nan),
                                phase=st.get("phase", "growth"),
                                extra={k: v for k, v in st.items() if k not in _STAGE_FIELDS}))
        epochs = stages[-1].end_epoch
        recorded = [("epochs", d.get("epochs"), epochs), ("inputs.epochs", inputs.get("epochs"), epochs),
                    ("inputs.dataset_size", inputs.get("dataset_size"), n)]
        for path, value, actual in recorded:
            if value is not None and value != actual:
                whose = "the stages end at epoch" if "epochs" in path else "dataset_size is"
                raise S.refuse(what, path, f"is {value} but {whose} {actual}", REMEDY)
        b0 = inputs.get("batch_size")
        if b0 is not None and b0 > n:
            raise S.refuse(what, "inputs.batch_size", f"{b0} is larger than dataset_size {n}", REMEDY)
        cap = d.get("cap") or {}
        if cap and "batch_size" not in cap:
            raise S.refuse(what, "cap.batch_size", "is missing (cap is {} or holds batch_size)", REMEDY)
        baseline = d.get("baseline") or {}
        return cls(stages=stages, dataset_size=n, inputs=dict(inputs),
                   baseline_updates=baseline.get("updates") or 0, cap=dict(cap),
                   warnings=list(d.get("warnings") or []), notes=list(d.get("notes") or []),
                   probe=d.get("probe"))

    @classmethod
    def from_json(cls, text: str | dict) -> "Plan":
        if isinstance(text, dict):
            return cls.from_dict(text)
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"plan is not valid JSON ({str(exc)[:120]}); {REMEDY}") from None
        return cls.from_dict(doc, "plan")

    @classmethod
    def load(cls, path) -> "Plan":
        from bsadvisor.core.fileio import read_json

        return cls.from_dict(read_json(path, "plan file", REMEDY), f"plan file {path}")

    def save(self, path) -> None:
        from bsadvisor.core.fileio import write_atomic

        write_atomic(path, self.to_json() + "\n")


# -- the plan file's schema (bsadvisor.core.schema) --------------------------------------
_STAGE_FIELDS = {"start_epoch", "end_epoch", "batch_size", "lr", "momentum", "temperature", "target_temperature",
                 "phase", "updates"}
_SCALAR = S.Json(max_depth=0)
_COUNT = S.Int(low=1, nullable=True)
STAGE_SPEC = S.Obj({
    "start_epoch": S.req(S.Int(low=0)),
    "end_epoch": S.req(S.Int(low=1)),
    "batch_size": S.req(S.Int(low=1)),
    "lr": S.req(S.Num(low=0)),
    "momentum": S.req(S.Num(low=0, high=1, high_open=True)),
    "temperature": S.opt(S.Num(nullable=True, null_nan=True)),
    "target_temperature": S.opt(S.Num(nullable=True, null_nan=True)),
    "phase": S.opt(S.Str(choices=PHASES)),
    "updates": S.opt(S.Int(low=0, nullable=True)),
}, extra=_SCALAR)  # per-stage figures a probe adds (predicted_seconds, efficiency, ...)
INPUTS_SPEC = S.Obj({
    "lr": S.opt(S.Num(low=0, low_open=True, nullable=True)),
    "batch_size": S.opt(_COUNT), "dataset_size": S.opt(_COUNT), "epochs": S.opt(_COUNT),
    "momentum": S.opt(S.Num(low=0, high=1, high_open=True, nullable=True)),
    "schedule": S.opt(S.Str(nullable=True)),
    "schedule_unit": S.opt(S.Str(choices=SCHEDULE_UNITS, nullable=True)),
    "optimizer": S.opt(S.Str(nullable=True)), "rule": S.opt(S.Str(nullable=True)),
    "adam_rule": S.opt(S.Str(nullable=True)), "kind": S.opt(S.Str(nullable=True)),
    "max_batch": S.opt(_COUNT), "round_to": S.opt(_COUNT), "world_size": S.opt(_COUNT),
    "micro_batch": S.opt(_COUNT), "max_stages": S.opt(_COUNT), "grad_accum": S.opt(_COUNT),
    "max_fraction": S.opt(S.Num(low=0, high=1, low_open=True, nullable=True)),
    "stage_factor": S.opt(S.Num(low=1, nullable=True)),
    "increase_lr": S.opt(S.Num(low=1, nullable=True)),
    "momentum_to": S.opt(S.Num(low=0, high=1, high_open=True, nullable=True)),
    "noise_cap": S.opt(S.Num(low=0, low_open=True, nullable=True)),
}, extra=S.Json(max_depth=2))
PLAN_SPEC = S.Obj({
    "schema": S.req(S.Str()),
    "inputs": S.opt(INPUTS_SPEC),
    "dataset_size": S.opt(S.Int(low=1)),
    "epochs": S.opt(S.Int(low=1)),
    "cap": S.opt(S.Obj({"batch_size": S.opt(S.Int(low=1)), "limited_by": S.opt(S.Str(nullable=True))},
                       extra=S.Json(max_depth=1))),
    "stages": S.req(S.List(STAGE_SPEC, min_len=1)),
    "baseline": S.opt(S.Obj({"updates": S.opt(S.Int(low=0, nullable=True)),
                             "examples": S.opt(S.Int(low=0, nullable=True))})),
    "plan": S.opt(S.Json(max_depth=2)),  # totals, recomputed from the stages
    "warnings": S.opt(S.List(S.Str())),
    "notes": S.opt(S.List(S.Str())),
    "probe": S.opt(S.Json(max_depth=4)),
}, extra=S.Json(max_depth=4))
