"""A batch-size plan: which batch, LR and momentum to use at every point of training.

A plan is a function of progress in samples (examples consumed; docs/concepts.md §2):
stages are intervals [start_sample, end_sample) each at one batch size. Inside a stage the
LR is the original schedule's LR at that sample position times the stage's ``lr_scale``
(so what the batch growth does not take over stays with the LR, update by update), or a
constant ``lr`` for a stage without a scale (plans of schema /1, hand-written stages).

Pure data + JSON (schema ``bsadvisor.plan/2``; ``/1`` files, indexed in epochs, still
load); no torch. The conversion that builds a Plan from an LR schedule lives in convert.py.
"""
from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core import schema as S
from bsadvisor.core.defaults import ADAM_FAMILY, MAX_EPOCHS, MAX_SAMPLES
from bsadvisor.core.errors import ArgumentTypeError, UserError
from bsadvisor.core.fileio import check_schema, json_safe, read_json, write_atomic
from bsadvisor.core.noise_model import NoiseModel
from bsadvisor.core.options import OPTION_NAMES, ConvertOptions, lengths_given
from bsadvisor.core.original import OriginalRun, updates_per_stage
from bsadvisor.core.schedules import parse_schedule
from bsadvisor.core.temperature import TemperatureModel, noise_proxy_rule

PLAN_SCHEMA = "bsadvisor.plan/2"
PLAN_SCHEMA_V1 = "bsadvisor.plan/1"
PHASES = ("warmup", "growth", "hybrid", "original")
REMEDY = "regenerate it with bsadvisor convert-schedule --out"
#: The Adam rule a ``bsadvisor.plan/1`` file meant when it names none: every /1 file was written (November
#: 2026) while the square-root rule was the default; linear became the default later, in /2's time. A file
#: convert-schedule wrote always records the rule of an Adam plan, so one without it was written by hand; a
#: /2 one, or a Plan built in code, takes ConvertOptions' default (what every reader of a plan then applies).
V1_ADAM_RULE = "sqrt"
#: The schedule of a plan that records none (written by hand): its own first LR throughout.
_NO_SCHEDULE = "ConstantLR(factor=1.0, total_iters=0)"


@dataclass(frozen=True)
class Setting:
    """What to train with at one point: the batch size, LR and momentum (Adam's β1), and for Adam with the
    companion scaling (``adam_sde``) the factors on 1−β2 and on ε (docs/concepts.md eq. 27)."""

    batch_size: int
    lr: float
    momentum: float
    beta2_factor: float = 1.0
    eps_factor: float = 1.0


@dataclass(frozen=True)
class Stage:
    """Samples [start_sample, end_sample) trained at batch ``batch_size``.

    The LR at sample s is ``lr_scale`` × the original schedule's LR at s (eq. 14 of
    docs/concepts.md); without a scale it is ``lr`` throughout. ``lr`` is always the LR
    at the stage's first sample. ``temperature`` is the realised g/g_ref there (1.0 = the
    original's peak) and ``target_temperature`` what the original schedule asks for.
    """

    start_sample: int
    end_sample: int
    batch_size: int
    lr: float
    momentum: float
    temperature: float
    target_temperature: float = float("nan")
    phase: str = "growth"  # "warmup" | "growth" | "hybrid" | "original"
    lr_scale: Optional[float] = None
    extra: dict = field(default_factory=dict)  # e.g. predicted_seconds, efficiency

    @property
    def samples(self) -> int:
        return self.end_sample - self.start_sample


@dataclass
class Plan:
    """Stages tiling [0, total_samples), plus what produced them.

    ``inputs`` holds the conversion's settings (lr, batch_size, dataset_size, epochs,
    momentum, schedule, schedule_unit, rule, ...): from them the plan rebuilds the original
    run's LR at any sample (:attr:`original`). ``dataset_size`` N is None for a streaming
    plan whose data set size is unknown. ``baseline_updates`` counts the original
    schedule's updates at the fixed batch; ``warnings``/``notes`` are for the report.
    """

    stages: list[Stage]
    dataset_size: Optional[int]
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
    def total_samples(self) -> int:
        return self.stages[-1].end_sample

    @property
    def epochs(self) -> float:
        """Passes over the data: a whole number for epoch-long plans (None when N is unknown)."""
        if self.dataset_size is None:
            return None
        e = self.total_samples / self.dataset_size
        return int(e) if self.total_samples % self.dataset_size == 0 else e

    @property
    def full_epochs(self) -> int:
        """Epochs the run starts: ⌈total_samples / N⌉ (the last may be partial)."""
        return -(-self.total_samples // self.dataset_size)

    def epoch_of(self, sample: int) -> float:
        """``sample`` in epochs (a whole number at an epoch boundary)."""
        checks.number("sample", sample, low=0)
        n = self.dataset_size
        if n is None:
            raise UserError("this plan has no data set size (streaming), so it has no epochs; use sample positions")
        return sample // n if sample % n == 0 else sample / n

    @property
    def epoch_aligned(self) -> bool:
        """True when every stage starts and ends at an epoch boundary (the paper's plans)."""
        n = self.dataset_size
        return n is not None and all(s.start_sample % n == 0 and s.end_sample % n == 0 for s in self.stages)

    @property
    def seq_len(self) -> Optional[int]:
        """Tokens per sample, when the plan was made for a language model (``--seq-len``)."""
        return self.inputs.get("seq_len")

    # -- what the plan was made with (the only reader of ``inputs`` by key) --------------
    @property
    def options(self) -> ConvertOptions:
        """The checked ConvertOptions the plan was made with: its recorded ``inputs`` (None or missing: the
        option's default), its data set size, and its recorded noise model (the noise-aware Adam rule reads it).

        Older files are migrated as they load: a ``bsadvisor.plan/1`` Adam plan without ``adam_rule`` meant
        the square-root rule (:data:`V1_ADAM_RULE`); in /2 a missing key takes today's default, except
        ``max_growth``: a file without it predates the growth limit, so its plan grew without one (0). A plan that
        does not record its original run (:meth:`missing_run`, a plan written by hand) is read as its own:
        B0 its first batch, ε0 its first LR held constant, its length; its optimizer, rule and device layout
        as recorded. A recorded input that is not a valid option raises UserError naming it.
        """
        key = (dict(self.inputs), self.dataset_size, self.total_samples, self.stages[0].batch_size,
               self.stages[0].lr, self.probe)
        cached = self.__dict__.get("_options")
        if cached is not None and cached[0] == key:
            return cached[1]
        doc = {k: v for k, v in self.inputs.items() if k in OPTION_NAMES and v is not None}
        doc.setdefault("max_growth", 0)
        if self.missing_run():  # a plan written by hand: its run is its own, at its first batch and LR
            doc.setdefault("batch_size", self.stages[0].batch_size)
            doc.setdefault("lr", next((s.lr for s in self.stages if s.lr > 0), 1.0))
            doc.setdefault("schedule", _NO_SCHEDULE)
            if not lengths_given(doc):
                doc["total_samples"] = self.total_samples
        if self.dataset_size is None:
            doc["streaming"] = True
        options = ConvertOptions(**{**doc, "dataset_size": self.dataset_size, "noise_model": self.noise_model})
        self._options = (key, options)
        return options

    def missing_run(self) -> list[str]:
        """The inputs of the original run the plan does not record (``lr``, ``batch_size``, ``schedule``, and
        ``epochs`` for a run length): none for a plan convert-schedule made; a plan written by hand may lack them."""
        missing = [k for k in ("lr", "batch_size", "schedule") if self.inputs.get(k) is None]
        return missing + ([] if lengths_given(self.inputs) else ["epochs"])

    def temperature_model(self) -> TemperatureModel:
        """The temperature model of the plan, rebuilt from :attr:`options` (the one rebuild every reader of a
        plan uses: its noise figures, the advice, the exports): the N → ∞ form for one pass or less (eq. 15),
        and the noise-aware Adam rule as its square-root limit (eq. 16, ``TemperatureModel.proxy``: B_noise(s)
        must not depend on itself; convert's own model, core.spans.temperature_model, adds the B_noise(s) steps)."""
        return TemperatureModel.of(self.options, noise_proxy_rule(self.options.adam_rule))

    @property
    def noise_model(self) -> Optional[NoiseModel]:
        """The noise model B_noise(s) the plan recorded (``probe.noise_model``), or None."""
        doc = (self.probe or {}).get("noise_model")
        return NoiseModel.from_dict(doc) if doc else None

    @property
    def noise_cap(self) -> Optional[float]:
        """The --noise-cap multiple K of B_noise(s) the plan was capped at, or None (no cap)."""
        return self.inputs.get("noise_cap")

    @property
    def probe_source(self) -> Optional[str]:
        """The probe the plan was made with, as recorded (its probe.json, or its target's name), or None."""
        return self.inputs.get("probe")

    @property
    def kind(self) -> Optional[str]:
        """"baseline" for an original schedule at a fixed batch (core.baseline), else None."""
        return self.inputs.get("kind")

    def with_inputs(self, **recorded: Any) -> "Plan":
        """The plan with ``recorded`` added to (or replacing) what its inputs record."""
        return replace(self, inputs={**self.inputs, **recorded})

    @property
    def original(self):
        """The original run (core.original.OriginalRun) recorded in ``inputs``, or None if they do not say."""
        cached = self.__dict__.get("_original", False)
        if cached is not False:
            return cached
        run = None
        i = self.inputs
        if i.get("schedule") and i.get("lr") and i.get("batch_size") and not str(i["schedule"]).startswith("table "):
            run = OriginalRun(parse_schedule(i["schedule"]), float(i["lr"]), int(i["batch_size"]), self.dataset_size,
                              self.total_samples, i.get("schedule_unit") or "epoch", float(i.get("momentum") or 0.0))
        self._original = run
        return run

    def stage_index_at_sample(self, sample: int) -> int:
        """Index of the stage holding ``sample``; past the end, the last stage."""
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise UserError(f"sample position must be a whole number ≥ 0, got {S.show(sample)}")
        ends = self.__dict__.get("_ends")
        if ends is None or len(ends) != len(self.stages) or ends[-1] != self.stages[-1].end_sample:
            ends = self._ends = [s.end_sample for s in self.stages]
        return min(bisect.bisect_right(ends, sample), len(self.stages) - 1)

    def stage_index(self, epoch: float) -> int:
        """Index of the stage holding the start of ``epoch`` (the epoch-level convenience)."""
        if isinstance(epoch, bool) or not (isinstance(epoch, (int, float)) and math.isfinite(epoch)) or epoch < 0:
            raise UserError(f"epoch must be a number ≥ 0, got {S.show(epoch)}")
        return self.stage_index_at_sample(self._epoch_start(epoch))

    def _epoch_start(self, epoch: float) -> int:
        """The sample where ``epoch`` starts, held at the run's last sample (no overflow for a huge epoch)."""
        at = epoch * (self.dataset_size or 0)
        return self.total_samples - 1 if at >= self.total_samples else int(at)

    def at_sample(self, sample: int) -> Setting:
        """Batch size, LR and momentum for the update that starts at sample position ``sample``."""
        s = self.stages[self.stage_index_at_sample(sample)]
        return Setting(s.batch_size, self.lr_at(s, sample), s.momentum, float(s.extra.get("beta2_factor", 1.0)),
                       float(s.extra.get("eps_factor", 1.0)))

    def update_end(self, sample: int) -> int:
        """Where the update that starts at ``sample`` ends: its stage's batch later, cut at the end of the
        epoch or of the run (the one rule the sampler, the scheduler and ``updates`` follow)."""
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise UserError(f"sample position must be a whole number ≥ 0, got {S.show(sample)}")
        n, total = self.dataset_size, self.total_samples
        end = total if n is None else min(total, (sample // n + 1) * n)
        return min(sample + self.at_sample(min(sample, total - 1)).batch_size, end)

    def lr_at(self, stage: Stage, sample: int) -> float:
        """The LR of ``stage`` at ``sample``: its scale × the original's LR there, else its constant LR."""
        if stage.lr_scale is None or sample <= stage.start_sample:
            return stage.lr
        original = self.original
        if original is None:
            return stage.lr
        return stage.lr_scale * original.lr_at(min(sample, self.total_samples - 1))

    def max_lr(self, stage: Stage) -> float:
        """The largest LR ``stage`` trains at: its factor × the original's largest LR inside it.

        The original's LR is read where each of its pieces starts inside the stage and at the
        stage's last sample (a smooth piece, a cosine or a linear ramp, is monotone, so its
        ends bound it): a restart inside a stage shows here, not at the stage's ends.
        """
        original = self.original
        if stage.lr_scale is None or original is None:
            return stage.lr
        if "_pieces" not in self.__dict__:
            self._pieces = list(original.pieces())
        points = {stage.start_sample, stage.end_sample - 1}
        for start, end, smooth in self._pieces:
            if start < stage.end_sample and end > stage.start_sample:
                points.add(max(start, stage.start_sample))
                if smooth:
                    points.add(min(end, stage.end_sample) - 1)
        return max(self.lr_at(stage, p) for p in points)

    def at(self, epoch: float) -> Setting:
        """Batch size, LR and momentum at the start of ``epoch`` (0-based; the epoch-level convenience)."""
        if isinstance(epoch, bool) or not (isinstance(epoch, (int, float)) and math.isfinite(epoch)) or epoch < 0:
            raise UserError(f"epoch must be a number ≥ 0, got {S.show(epoch)}")
        if self.dataset_size is None:
            raise UserError("this plan has no data set size (streaming); use plan.at_sample(samples_seen)")
        return self.at_sample(self._epoch_start(epoch))

    @property
    def updates(self) -> int:
        """Parameter updates: a batch starts inside a stage and takes its size; it ends early only at
        the end of an epoch or of the run (core.original.updates_per_stage)."""
        return sum(self.updates_per_stage())

    def updates_per_stage(self) -> list[int]:
        """Updates that start inside each stage, in order."""
        key = tuple((s.start_sample, s.end_sample, s.batch_size) for s in self.stages)
        cached = self.__dict__.get("_updates")
        if cached is None or cached[0] != key:
            cached = self._updates = (key, updates_per_stage(self.total_samples, self.dataset_size, list(key)))
        return cached[1]

    def stage_updates(self, stage: Stage) -> int:
        """Updates that start inside ``stage``."""
        return self.updates_per_stage()[self.stages.index(stage)]

    def batch_sizes(self) -> list[int]:
        """The batch size at the start of every epoch, in order (at most MAX_EPOCHS of them)."""
        return [self.at(e).batch_size for e in range(self.full_epochs)]

    def stage_batch_sizes(self) -> list[int]:
        """The batch size of every stage, in order: the plan's batches without walking its epochs."""
        return [s.batch_size for s in self.stages]

    # -- checks ------------------------------------------------------------------
    def validate(self) -> None:
        if not isinstance(self.stages, (list, tuple)):
            raise ArgumentTypeError(f"plan stages must be a list of Stage, got {type(self.stages).__name__}")
        if not self.stages:
            raise UserError("plan has no stages")
        for i, s in enumerate(self.stages):
            if not isinstance(s, Stage):
                raise ArgumentTypeError(f"plan stage {i} must be a Stage(start_sample, end_sample, batch_size, lr, "
                                        f"momentum, temperature), got {type(s).__name__} {S.show(s)}")
            for name in ("start_sample", "end_sample"):
                value = getattr(s, name)
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ArgumentTypeError(f"plan stage {i}: {name} must be a whole number, got {S.show(value)}")
            for name in ("lr", "momentum"):
                value = getattr(s, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ArgumentTypeError(f"plan stage {i}: {name} must be a number, got {S.show(value)}")
        for name, kind in (("inputs", dict), ("cap", dict), ("warnings", list), ("notes", list)):
            if not isinstance(getattr(self, name), kind):
                raise ArgumentTypeError(f"plan {name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        n = self.dataset_size
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UserError(f"plan dataset_size must be a positive integer, got {S.show(n)}")
        expected = 0
        for i, s in enumerate(self.stages):
            if s.start_sample != expected or s.end_sample <= s.start_sample:
                raise UserError(f"plan stage {i} covers samples [{s.start_sample}, {s.end_sample}) but should start at "
                                f"{expected} and be non-empty; stages must tile [0, total_samples) in order")
            if isinstance(s.batch_size, bool) or not isinstance(s.batch_size, int) or s.batch_size < 1:
                raise UserError(f"plan stage {i}: batch_size must be a positive integer, got {S.show(s.batch_size)}")
            if n is not None and s.batch_size > n:
                raise UserError(f"plan stage {i}: batch_size {s.batch_size} is larger than the dataset ({n} examples)")
            if not (math.isfinite(s.lr) and s.lr >= 0):
                raise UserError(f"plan stage {i}: lr must be a finite number ≥ 0, got {S.show(s.lr)}")
            if s.lr_scale is not None and not (math.isfinite(s.lr_scale) and s.lr_scale >= 0):
                raise UserError(f"plan stage {i}: lr_scale must be a finite number ≥ 0, got {S.show(s.lr_scale)}")
            if not (math.isfinite(s.momentum) and 0 <= s.momentum < 1):
                raise UserError(f"plan stage {i}: momentum must be in [0, 1), got {S.show(s.momentum)}")
            expected = s.end_sample
        if expected > MAX_SAMPLES:
            raise UserError(f"plan covers {expected} samples; at most 2**62 are supported")
        if n is not None and expected > MAX_EPOCHS * n:
            raise UserError(f"plan covers {expected / n:g} epochs; at most {MAX_EPOCHS:,} are supported")

    # -- JSON --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        n, seq = self.dataset_size, self.seq_len
        stages, per_stage = [], self.updates_per_stage()
        for i, s in enumerate(self.stages):
            d = {k: v for k, v in asdict(s).items() if k != "extra"}
            if n is not None:
                d["start_epoch"], d["end_epoch"] = self.epoch_of(s.start_sample), self.epoch_of(s.end_sample)
            if seq:
                d["start_token"], d["end_token"] = s.start_sample * seq, s.end_sample * seq
            d["updates"] = per_stage[i]
            d.update(s.extra)
            stages.append(json_safe(d))
        total = self.total_samples
        doc = {
            "schema": PLAN_SCHEMA,
            "inputs": json_safe(dict(self.inputs)),
            "dataset_size": n,
            "total_samples": total,
            "epochs": self.epochs,
            "cap": json_safe(dict(self.cap)),
            "stages": stages,
            "baseline": {"updates": self.baseline_updates, "examples": total},
            "plan": {"updates": self.updates, "examples": total,
                     "update_ratio": (self.baseline_updates / self.updates) if self.baseline_updates else None},
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
        if seq:
            doc["total_tokens"] = total * seq
        if self.probe is not None:
            doc["probe"] = json_safe(self.probe)
        return doc

    def fingerprint(self) -> dict[str, Any]:
        """What identifies a plan for a resumed run: its stages as its file writes them, and the inputs that give
        their LR (the original schedule, LR, momentum, length). Checkpoints of bsadvisor's loop and of
        FollowPlan record it and resume only with an equal one."""
        doc = self.to_dict()
        return {"stages": doc["stages"], "inputs": doc["inputs"]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, doc: Any, what: str = "plan file") -> "Plan":
        """Rebuild from a ``bsadvisor.plan/2`` (or ``/1``) document, checked against its spec in one pass.

        A field of the wrong type or out of range, stages that do not tile the run, a batch
        larger than the dataset, or recorded ``inputs`` that disagree with the stages give
        one UserError naming ``what`` and the field.
        """
        if isinstance(doc, dict) and doc.get("schema") == PLAN_SCHEMA_V1:
            return _from_v1(cls, doc, what)
        _check_schema(doc, what)
        d = S.validate(doc, PLAN_SPEC, what, REMEDY)
        inputs = d.get("inputs") or {}
        n = d.get("dataset_size", inputs.get("dataset_size"))
        stages = []
        for i, st in enumerate(d["stages"]):
            where = f"stages[{i}]"
            expected = stages[-1].end_sample if stages else 0
            if st["end_sample"] <= st["start_sample"] or st["start_sample"] != expected:
                raise S.refuse(what, where, f"covers samples [{st['start_sample']}, {st['end_sample']}) but must start "
                                            f"at {expected} and be non-empty (stages tile the run in order)", REMEDY)
            if n is not None and st["batch_size"] > n:
                raise S.refuse(what, f"{where}.batch_size", f"{st['batch_size']} is larger than dataset_size {n}",
                               REMEDY)
            stages.append(_stage(st, st["start_sample"], st["end_sample"]))
        total = stages[-1].end_sample
        if n is not None and total > MAX_EPOCHS * n:
            raise S.refuse(what, f"stages[{len(stages) - 1}].end_sample", f"is {total}, {total / n:g} epochs; a plan "
                                                                         f"covers at most {MAX_EPOCHS:,} epochs", REMEDY)
        recorded = [("total_samples", d.get("total_samples"), total), ("inputs.total_samples",
                    inputs.get("total_samples"), total)]
        if n is not None:
            recorded += [("epochs", d.get("epochs"), total / n), ("inputs.epochs", inputs.get("epochs"), total / n)]
        for path, value, actual in recorded:
            if value is not None and not math.isclose(value, actual, rel_tol=1e-12):
                whose = "the stages end at sample" if "samples" in path else "the stages end at epoch"
                shown = actual if "samples" in path or actual != int(actual) else int(actual)
                raise S.refuse(what, path, f"is {value} but {whose} {shown}", REMEDY)
        _check_inputs(inputs, n, what)
        return _build(cls, stages, n, inputs, d, what)

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
        checks.instance("path", path, (str, os.PathLike), "a plan file's path (str or pathlib.Path)")
        return cls.from_dict(read_json(path, "plan file", REMEDY), f"plan file {path}")

    def save(self, path) -> None:
        write_atomic(path, self.to_json() + "\n")


def _check_schema(doc: Any, what: str) -> None:
    if isinstance(doc, dict) and doc.get("schema") not in (PLAN_SCHEMA, PLAN_SCHEMA_V1, None):
        found = doc.get("schema")
        shown = repr(found) if isinstance(found, str) and len(found) <= 60 else "that is not a schema name"
        raise UserError(f"{what} has schema {shown}, expected {PLAN_SCHEMA!r} (or {PLAN_SCHEMA_V1!r}); {REMEDY}")
    check_schema(doc, PLAN_SCHEMA, what, REMEDY)


def _stage(st: dict, start: int, end: int) -> Stage:
    return Stage(start_sample=start, end_sample=end, batch_size=st["batch_size"], lr=st["lr"],
                 momentum=st["momentum"], temperature=st.get("temperature", math.nan),
                 target_temperature=st.get("target_temperature", math.nan), phase=st.get("phase", "growth"),
                 lr_scale=st.get("lr_scale"), extra={k: v for k, v in st.items() if k not in _STAGE_FIELDS})


def _check_inputs(inputs: dict, n: Optional[int], what: str) -> None:
    if inputs.get("dataset_size") is not None and n is not None and inputs["dataset_size"] != n:
        raise S.refuse(what, "inputs.dataset_size", f"is {inputs['dataset_size']} but dataset_size is {n}", REMEDY)
    b0 = inputs.get("batch_size")
    if b0 is not None and n is not None and b0 > n:
        raise S.refuse(what, "inputs.batch_size", f"{b0} is larger than dataset_size {n}", REMEDY)


def _build(cls, stages: list[Stage], n: Optional[int], inputs: dict, d: dict, what: str) -> "Plan":
    cap = d.get("cap") or {}
    if cap and "batch_size" not in cap:
        raise S.refuse(what, "cap.batch_size", "is missing (cap is {} or holds batch_size)", REMEDY)
    baseline = d.get("baseline") or {}
    return cls(stages=stages, dataset_size=n, inputs=dict(inputs), baseline_updates=baseline.get("updates") or 0,
               cap=dict(cap), warnings=list(d.get("warnings") or []), notes=list(d.get("notes") or []),
               probe=d.get("probe"))


def _from_v1(cls, doc: dict, what: str) -> "Plan":
    """A ``bsadvisor.plan/1`` document (stages in whole epochs, one constant LR each) as a Plan."""
    d = S.validate(doc, PLAN_SPEC_V1, what, REMEDY)
    inputs = d.get("inputs") or {}
    n = d.get("dataset_size", inputs.get("dataset_size"))
    if n is None:
        raise S.refuse(what, "dataset_size", "is missing", REMEDY)
    stages = []
    for i, st in enumerate(d["stages"]):
        where = f"stages[{i}]"
        expected = stages[-1].end_sample // n if stages else 0
        if st["end_epoch"] <= st["start_epoch"] or st["start_epoch"] != expected:
            raise S.refuse(what, where, f"covers epochs [{st['start_epoch']}, {st['end_epoch']}) but must start at "
                                        f"{expected} and be non-empty (stages tile [0, epochs) in order)", REMEDY)
        if st["end_epoch"] > MAX_EPOCHS:
            raise S.refuse(what, f"{where}.end_epoch", f"is {st['end_epoch']}; a plan covers at most "
                                                       f"{MAX_EPOCHS:,} epochs", REMEDY)
        if st["batch_size"] > n:
            raise S.refuse(what, f"{where}.batch_size", f"{st['batch_size']} is larger than dataset_size {n}", REMEDY)
        st = {k: v for k, v in st.items() if k != "lr_scale"}  # /1 stages hold a constant LR
        stages.append(_stage(st, st["start_epoch"] * n, st["end_epoch"] * n))
    epochs = stages[-1].end_sample // n
    for path, value, actual in [("epochs", d.get("epochs"), epochs), ("inputs.epochs", inputs.get("epochs"), epochs)]:
        if value is not None and value != actual:
            raise S.refuse(what, path, f"is {value} but the stages end at epoch {actual}", REMEDY)
    _check_inputs(inputs, n, what)
    if str(inputs.get("optimizer")).lower() in ADAM_FAMILY and inputs.get("adam_rule") is None:
        inputs = {**inputs, "adam_rule": V1_ADAM_RULE}  # what the file meant (its /2 copy then says so)
    return _build(cls, stages, n, inputs, d, what)


# -- the plan file's schema (bsadvisor.core.schema) --------------------------------------
_STAGE_FIELDS = {"start_sample", "end_sample", "start_epoch", "end_epoch", "start_token", "end_token", "batch_size",
                 "lr", "lr_scale", "momentum", "temperature", "target_temperature", "phase", "updates"}
_SCALAR = S.Json(max_depth=0)
_STAGE_COMMON = {
    "batch_size": S.req(S.Int(low=1)),
    "lr": S.req(S.Num(low=0)),
    "momentum": S.req(S.Num(low=0, high=1, high_open=True)),
    "temperature": S.opt(S.Num(nullable=True, null_nan=True)),
    "target_temperature": S.opt(S.Num(nullable=True, null_nan=True)),
    "phase": S.opt(S.Str(choices=PHASES)),
    "updates": S.opt(S.Int(low=0, nullable=True)),
}
STAGE_SPEC = S.Obj({
    "start_sample": S.req(S.Int(low=0, high=MAX_SAMPLES)),
    "end_sample": S.req(S.Int(low=1, high=MAX_SAMPLES)),
    "lr_scale": S.opt(S.Num(low=0, nullable=True)),
    "start_epoch": S.opt(S.Num(low=0, nullable=True)), "end_epoch": S.opt(S.Num(low=0, nullable=True)),
    "start_token": S.opt(S.Int(low=0, nullable=True)), "end_token": S.opt(S.Int(low=0, nullable=True)),
    **_STAGE_COMMON,
}, extra=_SCALAR)  # per-stage figures a probe adds (predicted_seconds, efficiency, ...)
STAGE_SPEC_V1 = S.Obj({
    "start_epoch": S.req(S.Int(low=0)),
    "end_epoch": S.req(S.Int(low=1)),
    **_STAGE_COMMON,
}, extra=_SCALAR)
# A plan's recorded options, each checked against its declaration (core.options; may be null), and its kind.
from bsadvisor.core.options import recorded_specs  # noqa: E402 (options imports no plan: no cycle)

INPUTS_SPEC = S.Obj({**recorded_specs(), "kind": S.opt(S.Str(nullable=True))}, extra=S.Json(max_depth=2))
_PLAN_COMMON = {
    "schema": S.req(S.Str()),
    "inputs": S.opt(INPUTS_SPEC),
    "dataset_size": S.opt(S.Int(low=1, nullable=True)),
    "cap": S.opt(S.Obj({"batch_size": S.opt(S.Int(low=1)), "limited_by": S.opt(S.Str(nullable=True))},
                       extra=S.Json(max_depth=1))),
    "baseline": S.opt(S.Obj({"updates": S.opt(S.Int(low=0, nullable=True)),
                             "examples": S.opt(S.Int(low=0, nullable=True))})),
    "plan": S.opt(S.Json(max_depth=2)),  # totals, recomputed from the stages
    "warnings": S.opt(S.List(S.Str())),
    "notes": S.opt(S.List(S.Str())),
    "probe": S.opt(S.Json(max_depth=5)),  # its noise_model: points, each with its ci90
}
PLAN_SPEC = S.Obj({
    **_PLAN_COMMON,
    "total_samples": S.opt(S.Int(low=1, high=MAX_SAMPLES, nullable=True)),
    "total_tokens": S.opt(S.Int(low=1, nullable=True)),
    "epochs": S.opt(S.Num(low=0, nullable=True)),
    "stages": S.req(S.List(STAGE_SPEC, min_len=1)),
}, extra=S.Json(max_depth=4))
PLAN_SPEC_V1 = S.Obj({
    **_PLAN_COMMON,
    "epochs": S.opt(S.Int(low=1)),
    "stages": S.req(S.List(STAGE_SPEC_V1, min_len=1)),
}, extra=S.Json(max_depth=4))
