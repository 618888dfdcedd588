"""What a conversion takes: :class:`ConvertOptions`, each option declared once.

Each field is declared with core.declared.option: its default, type and range (a core.schema
spec), help text, flag and groups. Everything else is read from there: the commands' Typer
parameters (cli.options), the --config spec (cli.convert), a plan file's ``inputs`` spec
(core.plan.INPUTS_SPEC, :func:`recorded_specs`), the name groups below (PLAN_OPTIONS,
PROBE_OPTIONS, AFTER_PROBE, BASELINE_INPUTS, advise's CONVERT_OPTIONS) and the plain range
checks of ``check``. A new option is one declaration here plus its logic.

The CLI's convert-schedule options, ``convert_schedule(**options)`` and a plan's recorded
``inputs`` all become one ConvertOptions, checked once when it is built (bsadvisor.core.checks):
a ConvertOptions always holds clean values. A check of one value names the parameter
(``max_fraction must be in (0, 1], got 2``); the CLI shows it as the option (--max-fraction).
A message that relates two inputs names both (``batch_size 600 is larger than dataset_size
500``) and the CLI spells each as its option. The plan's own warnings and notes, which a
reader of the plan sees whichever way it was made, keep the CLI's spelling.
Pure Python, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core import schema as S
from bsadvisor.core.declared import Declared, OptionObject, declarations, names, option
from bsadvisor.core.defaults import (ADAM_BETA1, ADAM_FAMILY, ADAM_MAX_GROWTH, ADAM_RULES, DEFAULTS, MAX_EPOCHS,
                                     MAX_SAMPLES, MAX_SCHEDULE_CHARS, MAX_TABLE_BYTES, NOISE_CAP, OPTIMIZERS, RULES,
                                     SCHEDULE_UNITS)
from bsadvisor.core.errors import UserError

if TYPE_CHECKING:
    from bsadvisor.core.schedules import Schedule

#: An example for a message that asks for a schedule.
EXAMPLE_SCHEDULE = "MultiStepLR(milestones=[60,120,160], gamma=0.2)"
_COUNT = S.Int(low=1)
_FRACTION = S.Num(low=0, high=1, high_open=True)


@dataclass(frozen=True)
class ConvertOptions(OptionObject):
    """The inputs of a conversion (Smith et al. 1711.00489; docs/concepts.md §1–5).

    The original run: ``lr`` ε0 (a CSV table gives its own), ``batch_size`` B0,
    ``dataset_size`` N, ``epochs`` E, ``momentum`` m, ``schedule`` (a PyTorch scheduler
    expression or a CSV table epoch,lr[,momentum]) read once an epoch or once a step
    (``schedule_unit``), ``optimizer`` and the temperature ``rule`` (``adam_rule`` for Adam).
    The plan: capped at ``max_batch`` (the device), ``max_fraction`` of N and
    ``noise_cap_batch`` (a multiple of the noise scale, one batch or one per sample); batches rounded as
    core/rounding.py says (``round_to``, ``world_size``, ``micro_batch``); at most
    ``max_stages`` batch sizes; a new one when the target grew by ``stage_factor`` (None:
    1 for step schedules, 2 for smooth ones); the §5.2 variants ``increase_lr`` and
    ``momentum_to``. Field order is the order a plan records them in ``inputs``.
    """

    # Each option once: its default, type and range (a core.schema spec), help, flag and groups (core.declared).
    # Groups: the commands that take it besides convert-schedule (advise, validate), "probe": what
    # plan_from_options takes with the probe (PROBE_OPTIONS), "after_probe": what the probe itself does not
    # take, "baseline": what a baseline plan records.
    lr: Optional[float] = option(
        None, S.Num(low=0, low_open=True), "Base LR ε0 of the schedule (a CSV table gives its own).",
        groups=("advise", "validate", "baseline"))
    batch_size: Optional[int] = option(
        None, _COUNT, "Batch size B0 the schedule was tuned at.", groups=("advise", "validate", "baseline"))
    dataset_size: Optional[int] = option(None, _COUNT, "Training-set size N.", groups=("baseline",))
    epochs: Optional[float] = option(
        None, S.Num(low=0, low_open=True, high=MAX_EPOCHS),
        "Training length E in epochs (fractional allowed: 0.5 is half a pass).",
        groups=("advise", "validate", "baseline", "length"),
        # a plan file's length is refused on its stages, where the message names the sample past MAX_EPOCHS
        recorded=S.Num(low=0, low_open=True))
    # None: DEFAULTS["momentum"] for SGD, ADAM_BETA1 (β1) for the Adam family
    momentum: Optional[float] = option(
        None, _FRACTION, "SGD momentum m (Adam's β1 for the Adam family).", shown="0, Adam's 0.9",
        groups=("advise", "validate", "baseline"))
    schedule: Union[str, Schedule, None] = option(
        None, S.Str(max_len=MAX_SCHEDULE_CHARS),
        f"PyTorch scheduler expression, e.g. '{EXAMPLE_SCHEDULE}', or a CSV table epoch,lr[,momentum].",
        recorded=S.Str(max_len=MAX_TABLE_BYTES),  # a plan records the schedule described: a table's is longer
        groups=("advise", "validate", "baseline"))
    schedule_unit: str = option(
        DEFAULTS["schedule_unit"], S.Str(choices=SCHEDULE_UNITS),
        "epoch: the scheduler steps once an epoch; step: once an iteration (read with ceil(N/B0) steps an epoch).",
        groups=("advise", "validate", "baseline"))
    optimizer: str = option(DEFAULTS["optimizer"], S.Str(choices=OPTIMIZERS), " | ".join(OPTIMIZERS) + ".")
    rule: str = option(
        DEFAULTS["rule"], S.Str(choices=RULES),
        "exact: B = N/(1+(N/B0−1)ρ); proportional: B = B0/ρ (the paper's).", groups=("advise", "validate"))
    max_batch: Optional[int] = option(
        None, _COUNT, "Device cap: the largest batch that fits (× devices × accumulation).", shown="none",
        groups=("advise", "validate"))
    max_growth: Optional[float] = option(
        None, S.Num(low=0), "Grow the batch to at most K × B0, then decay the LR for the rest (the paper's hybrid); "
        "0: no limit. For Adam/AdamW the full conversion lost about 0.012 at a tuned LR; growth to 2 × B0 lost less "
        "but was rejected on two of eight models there (docs/results.md).", shown="2 for Adam/AdamW, none for SGD",
        groups=("advise", "validate"))
    max_fraction: float = option(
        DEFAULTS["max_fraction"], S.Num(low=0, high=1, low_open=True),
        "Never grow past this fraction of N (the paper stopped near N/10).", groups=("advise", "validate"))
    round_to: int = option(DEFAULTS["round_to"], _COUNT, "Round batches to multiples of this.",
                           groups=("advise", "validate"))
    world_size: int = option(DEFAULTS["world_size"], _COUNT, "Devices training together.",
                             groups=("advise", "probe", "after_probe"))
    micro_batch: Optional[int] = option(
        None, _COUNT, "Per-device micro-batch limit: with --world-size or --grad-accum, every batch above world size × "
        "this is world size × k steps × an equal micro-batch.", shown="the probe's max batch", flag="--max-micro-batch",
        groups=("probe",))
    max_stages: Optional[int] = option(None, _COUNT, "At most this many distinct batch sizes.", shown="no limit",
                                       groups=("advise", "validate"))
    stage_factor: Optional[float] = option(
        None, S.Num(low=1), "New batch only when the target grew by this factor (the LR carries the rest). "
        "\\[default: 1 for step schedules; for smooth ones 2 read per epoch, 1.25 read per step, 1.05 for Adam/AdamW "
        "under their growth limit]",
        groups=("advise", "validate"))
    increase_lr: Optional[float] = option(
        None, S.Num(low=1), "Paper §5.2 variant: start at K·ε0 and the batch that keeps g0 (K× fewer updates).",
        groups=("advise",))
    momentum_to: Optional[float] = option(
        None, _FRACTION, "Paper §5.2 variant: train at momentum M, batch × (1−m)/(1−M).", groups=("advise",))
    adam_rule: str = option(
        DEFAULTS["adam_rule"], S.Str(choices=ADAM_RULES),
        "Adam family: linear (batch × α for an LR decay by α; it held at the benchmark recipes' LRs; at a tuned "
        "LR the full conversion lost about 0.012 on the language models, growth to 2 × B0 less (rejected on two of "
        "eight models), and every other rule more: docs/results.md), "
        "sqrt (× α², Malladi et al.), seesaw (× α with the LR ÷ √α, Meterez et al.) or noise (sqrt below the noise "
        "scale, linear above it; needs a probe or a trace).", groups=("advise", "validate"))
    total_samples: Optional[int] = option(
        None, S.Int(low=1, high=MAX_SAMPLES),
        "Training length in samples (examples consumed), instead of --epochs.",
        groups=("validate", "baseline", "length"))
    total_steps: Optional[int] = option(
        None, S.Int(low=1, high=MAX_SAMPLES),
        "Training length in updates of the original run at B0, instead of --epochs.",
        groups=("validate", "baseline", "length"))
    streaming: bool = option(
        False, S.Bool(), "Every example is fresh (a data stream, or one pass or less): the temperature uses N → ∞ and "
        "the N/10 cap does not apply; --dataset-size may be left out.", groups=("baseline",))
    seq_len: Optional[int] = option(
        None, _COUNT, "Tokens per sample, for a language model: the plan also counts tokens.",
        groups=("advise", "validate", "baseline"))
    growth_factor: Optional[int] = option(
        None, S.Int(low=2, high=1024), "Every stage's batch is this integer times the previous one (Megatron, "
        "OLMo-core ramps); the LR factor absorbs the difference.", groups=("advise", "validate"))
    # Adam: Malladi et al.'s companion scaling of 1−β1, 1−β2 and ε with each stage's batch factor (eq. 27)
    adam_sde: bool = option(
        False, S.Bool(), "Adam family: also scale 1−β1 and 1−β2 by each stage's batch factor κ and Adam's ε by 1/√κ "
        "(Malladi et al.'s companion scaling; measured in docs/results.md).", groups=("advise", "validate"))
    # From a probe: a batch, or cap(sample, temperature, temperature_model) -> batch (core.noise_model.NoiseCap);
    # the plan records it as cap.noise_scale, not in inputs.
    noise_cap_batch: Union[float, Callable[[float, float, Any], float], None] = None
    # The noise model B_noise(s) (core.noise_model.NoiseModel) adam_rule="noise" reads; not recorded in inputs
    # (a plan records it in probe.noise_model).
    noise_model: Any = None

    def check(self) -> None:
        self._check_run()
        self._check_plan()

    def _check_run(self) -> None:
        """The original run: sizes, length, momentum, the schedule (parsed) and its starting LR."""
        # Imported here, not at the top: the CLI imports this module for its declarations,
        # and `bsadvisor --help` should not pay for the schedule parser.
        from bsadvisor.core.schedules import Schedule, parse_schedule

        self._set("streaming", bool(self.streaming))
        if self.dataset_size is not None or not self.streaming:
            self._check_declared("dataset_size")
        self._check_declared("batch_size")
        self._check_declared("seq_len", optional=True)
        self._check_length()
        n = self.dataset_size
        if n is not None and self.batch_size > n:
            raise UserError(f"batch_size {self.batch_size} is larger than dataset_size {n}",
                            parameters=("batch_size", "dataset_size"))
        given_momentum = self.momentum
        if self.momentum is None:  # Adam's β1 is the plan's momentum: torch's default, not SGD's 0
            self._set("momentum", ADAM_BETA1 if str(self.optimizer).lower() in ADAM_FAMILY else DEFAULTS["momentum"])
        self._check_declared("momentum")
        if self.schedule_unit not in SCHEDULE_UNITS:
            raise UserError(f"schedule_unit must be {' or '.join(SCHEDULE_UNITS)}, "
                            f"got {checks.show(self.schedule_unit)}", parameter="schedule_unit")
        if self.schedule is None:
            raise UserError(f"schedule is required, e.g. {EXAMPLE_SCHEDULE!r}", parameter="schedule")
        sched = self.schedule if isinstance(self.schedule, Schedule) else parse_schedule(self.schedule)
        self._set("schedule", sched)
        self._table_momentum(sched, given_momentum)
        if self.lr is None:
            if not getattr(sched, "lrs", None):
                raise UserError("lr is required (the LR the schedule starts from)", parameter="lr")
            self._set("lr", sched.lrs[0])
        self._check_declared("lr")
        sched.check_lr(self.lr)
        sched.check(self.original().horizon, self.schedule_unit)

    def _table_momentum(self, sched, given: Optional[float]) -> None:
        """A CSV table's momentum column sets the momentum (each row's from its step on): ``momentum``
        records its first row, and a ``momentum`` given beside it must be that value, or it is refused
        (it would be ignored, yet recorded as if used)."""
        column = getattr(sched, "momenta", None)
        if not column:
            return
        if given is not None and float(given) != column[0]:
            raise UserError(f"momentum {float(given):g} conflicts with the schedule table, whose third column sets "
                            f"the momentum row by row ({column[0]:g} at its first row); drop momentum, or that column",
                            parameters=("momentum", "schedule"))
        self._set("momentum", float(column[0]))

    def _check_length(self) -> None:
        """Exactly one of epochs (fractional allowed), total_samples and total_steps; the run in samples."""
        given = lengths_given(self)
        if len(given) > 1:
            raise UserError(f"give the training length once: {' and '.join(given)} were both given",
                            parameters=tuple(given))
        if not given:
            raise UserError("epochs is required (or total_samples, or total_steps)", parameter="epochs")
        n = self.dataset_size
        if self.epochs is not None:
            if n is None:
                raise UserError("epochs needs dataset_size; a streaming run is measured in total_samples or "
                                "total_steps", parameters=("epochs", "dataset_size", "total_samples", "total_steps"))
            e = checks.number("epochs", self.epochs, low=0, low_open=True)
            if e > MAX_EPOCHS:
                raise UserError(f"epochs {checks.show(self.epochs)} is more than {MAX_EPOCHS:,}: a plan covers at most "
                                f"{MAX_EPOCHS:,} epochs (its users walk it epoch by epoch); give the run's real length",
                                parameter="epochs")
            self._set("epochs", int(e) if float(e).is_integer() else e)
            samples = round(e * n)
        elif self.total_samples is not None:
            self._check_declared("total_samples")
            samples = self.total_samples
        else:
            self._check_declared("total_steps")
            steps = self.total_steps
            if n is None:
                samples = steps * self.batch_size
            else:
                full, rest = divmod(steps, math.ceil(n / self.batch_size))
                samples = full * n + min(rest * self.batch_size, n)
        if samples < self.batch_size:
            raise UserError(f"the run is {samples} samples long, less than one batch of batch_size {self.batch_size}",
                            parameters=("batch_size",))
        if n is not None and samples > MAX_EPOCHS * n:
            raise UserError(f"the run covers {samples / n:g} epochs; a plan covers at most {MAX_EPOCHS:,}",
                            parameters=given[:1] and (given[0],))
        self._set("_samples", samples)

    @property
    def run_samples(self) -> int:
        """The run's length in samples (examples consumed): E·N, total_samples, or total_steps at B0."""
        return self.__dict__["_samples"]

    @property
    def single_pass(self) -> bool:
        """One pass over the data or less (or ``streaming``): every example is fresh, so N → ∞ (eq. 15)."""
        return self.streaming or self.dataset_size is None or self.run_samples <= self.dataset_size

    def original(self):
        """The original run on the sample axis (core.original.OriginalRun)."""
        from bsadvisor.core.original import OriginalRun

        return OriginalRun(self.schedule, self.lr, self.batch_size, self.dataset_size, self.run_samples,
                           self.schedule_unit, float(self.momentum))

    def _check_plan(self) -> None:
        """The temperature model, the caps, the rounding, the staircase and the §5.2 variants."""
        self._check_declared("rule")
        self._set("optimizer", str(self.optimizer).lower())
        self._check_declared("optimizer", "adam_rule")
        if not isinstance(self.adam_sde, bool):
            raise UserError(f"adam_sde must be true or false, got {checks.show(self.adam_sde)}", parameter="adam_sde")
        if self.adam_sde and self.optimizer not in ADAM_FAMILY:
            raise UserError("adam_sde scales Adam's β1, β2 and ε; it does not apply to SGD (give --optimizer adamw)",
                            parameter="adam_sde")
        self._check_declared("max_fraction", "round_to", "world_size")
        self._check_declared("micro_batch", "max_batch", "max_stages", optional=True)
        for name, why in (("stage_factor", ""), ("increase_lr", " (it multiplies the LR and the batch)")):
            value = checks.optional(checks.positive, name, getattr(self, name))
            if value is not None and value < 1:
                raise UserError(f"{name} must be ≥ 1{why}, got {value}", parameter=name)
            self._set(name, value)
        if self.momentum_to is not None:
            if self.optimizer in ADAM_FAMILY:
                raise UserError("momentum_to applies to SGD momentum; Adam's β1 does not set the temperature",
                                parameter="momentum_to")
            self._check_declared("momentum_to")
        if not callable(self.noise_cap_batch):  # a number, or a per-sample cap (core.noise_model.NoiseCap)
            checks.optional(checks.number, "noise_cap_batch", self.noise_cap_batch, low=0, allow_inf=True)
        self._check_declared("growth_factor", "max_growth", optional=True)
        if self.max_growth is not None and 0 < self.max_growth < 1:
            raise UserError(f"max_growth must be 0 (no limit) or ≥ 1 (a multiple of batch_size), got "
                            f"{self.max_growth:g}", parameter="max_growth")
        if self.max_batch is not None and self.max_batch < self.batch_size:
            raise UserError(f"max_batch {self.max_batch} is smaller than batch_size {self.batch_size}: the "
                            "original batch does not fit; lower --batch-size or allow gradient accumulation",
                            parameters=("max_batch", "batch_size"))

    @property
    def growth_limit(self) -> Optional[float]:
        """The largest batch growth K (the batch at most K × B0), or None for no limit: ``max_growth`` as given
        (0: none), else :data:`ADAM_MAX_GROWTH` for the Adam family and none for SGD."""
        if self.max_growth is not None:
            return self.max_growth or None
        return ADAM_MAX_GROWTH if self.optimizer in ADAM_FAMILY else None

    def to_dict(self) -> dict[str, Any]:
        """The options as a plan records them in ``inputs``: the schedule described, ``adam_rule``
        only for the Adam family (where it applies), ``noise_cap_batch`` left to the plan's cap."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("noise_cap_batch", "noise_model")}
        doc["schedule"] = self.schedule.describe()
        doc["adam_rule"] = self.adam_rule if self.optimizer in ADAM_FAMILY else None
        doc["adam_sde"] = self.adam_sde if self.optimizer in ADAM_FAMILY else None
        doc["max_growth"] = self.growth_limit or 0  # resolved: a plan re-converts the same under later defaults
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ConvertOptions":
        """Options from a dict such as a plan's ``inputs``: other keys are ignored, None means the default."""
        return cls(**{f.name: doc[f.name] for f in fields(cls) if doc.get(f.name) is not None})


#: Every option's name, in the order a plan records them.
OPTION_NAMES = tuple(f.name for f in fields(ConvertOptions))

#: What plan_from_options (core.predict) takes beside ConvertOptions' fields: a probe, how its device cap
#: scales, the noise cap and a noise trace. A plan records them in ``inputs`` too.
PLANNING_OPTIONS = {d.name: d for d in (
    Declared(S.Str(max_len=4096), "probe.json from `bsadvisor probe --out`: supplies N, B0, lr, momentum, the device "
             "cap (max_batch × world size × accumulation) and per-stage predicted time and efficiency.", kind=Path,
             recorded=False, groups=("probe",)).named("probe", None),
    Declared(_COUNT, "Gradient-accumulation steps allowed per update.", shown=1,
             groups=("advise", "probe", "after_probe")).named("grad_accum", None),
    Declared(S.Num(low=0), f"Cap the batch at K × the noise scale B_noise(s) (e.g. {NOISE_CAP:g}): the probe's "
             "B_simple scaled by the temperature, or --noise-trace (an estimate without a bounded interval is "
             "refused; 0: no cap). By default nothing is capped: on the benchmark models the noise scale did not "
             "predict whether a plan held (docs/results.md).", shown="no cap",
             groups=("advise", "probe", "after_probe")).named("noise_cap", None),
    Declared(S.Str(max_len=4096), "B_simple measured through training: results.json of `bsadvisor validate` (its "
             "original run) or a NoiseMonitor file. Replaces the probe's one value in --noise-cap, the efficiency "
             "column and the warnings.", kind=Path, recorded=False,
             groups=("advise", "probe", "after_probe")).named("noise_trace", None),
)}

#: Every conversion option a user can give, declared once: ConvertOptions' own, then the planning ones.
CONVERSION_OPTIONS: dict[str, Declared] = {**declarations(ConvertOptions), **PLANNING_OPTIONS}
#: What plan_from_options takes besides the conversion options: the probe and the device layout.
PROBE_OPTIONS = names(CONVERSION_OPTIONS, "probe")
#: The conversion options plan_from_options passes on as given (it derives the others from the probe).
PLAN_OPTIONS = tuple(name for name in OPTION_NAMES if name not in PROBE_OPTIONS + ("noise_cap_batch", "noise_model"))
#: What the probe does not take from advise's options: how the plan is spread over devices and capped.
AFTER_PROBE = names(CONVERSION_OPTIONS, "after_probe")
#: What a baseline plan (core.baseline) records of its options.
BASELINE_INPUTS = names(CONVERSION_OPTIONS, "baseline")



def recorded_specs() -> dict[str, S.Field]:
    """What a plan file's ``inputs`` may hold for each conversion option (a null too: not given), from its
    declaration (core.plan.INPUTS_SPEC)."""
    return {name: S.opt(d.file_spec()) for name, d in CONVERSION_OPTIONS.items() if d.file_spec() is not None}
#: The options that give the original run's length; a run gives exactly one (ConvertOptions checks it).
LENGTH_OPTIONS = names(CONVERSION_OPTIONS, "length")


def lengths_given(options: Any) -> list[str]:
    """The LENGTH_OPTIONS that ``options`` (a dict of options, or an options object) gives, in that order."""
    get = options.get if isinstance(options, Mapping) else (lambda name: getattr(options, name, None))
    return [name for name in LENGTH_OPTIONS if get(name) is not None]
