"""What a conversion takes: :class:`ConvertOptions`, each option's default written once.

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
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError

if TYPE_CHECKING:
    from bsadvisor.core.schedules import Schedule
from bsadvisor.core.defaults import ADAM_BETA1, ADAM_FAMILY, ADAM_RULES, DEFAULTS, OPTIMIZERS, RULES

#: An example for a message that asks for a schedule.
EXAMPLE_SCHEDULE = "MultiStepLR(milestones=[60,120,160], gamma=0.2)"


@dataclass(frozen=True)
class ConvertOptions:
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

    lr: Optional[float] = None
    batch_size: Optional[int] = None
    dataset_size: Optional[int] = None
    epochs: Optional[float] = None
    momentum: Optional[float] = None  # None: DEFAULTS["momentum"] for SGD, ADAM_BETA1 (β1) for the Adam family
    schedule: Union[str, Schedule, None] = None
    schedule_unit: str = DEFAULTS["schedule_unit"]
    optimizer: str = DEFAULTS["optimizer"]
    rule: str = DEFAULTS["rule"]
    max_batch: Optional[int] = None
    max_fraction: float = DEFAULTS["max_fraction"]
    round_to: int = DEFAULTS["round_to"]
    world_size: int = DEFAULTS["world_size"]
    micro_batch: Optional[int] = None
    max_stages: Optional[int] = None
    stage_factor: Optional[float] = None
    increase_lr: Optional[float] = None
    momentum_to: Optional[float] = None
    adam_rule: str = DEFAULTS["adam_rule"]
    total_samples: Optional[int] = None
    total_steps: Optional[int] = None
    streaming: bool = False
    seq_len: Optional[int] = None
    growth_factor: Optional[int] = None
    # Adam: Malladi et al.'s companion scaling of 1−β1, 1−β2 and ε with each stage's batch factor (eq. 27)
    adam_sde: bool = False
    # From a probe: a batch, or cap(sample, temperature, temperature_model) -> batch (core.noise_model.NoiseCap);
    # the plan records it as cap.noise_scale, not in inputs.
    noise_cap_batch: Union[float, Callable[[float, float, Any], float], None] = None
    # The noise model B_noise(s) (core.noise_model.NoiseModel) adam_rule="noise" reads; not recorded in inputs
    # (a plan records it in probe.noise_model).
    noise_model: Any = None

    def __post_init__(self) -> None:
        self._check_run()
        self._check_plan()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # a frozen dataclass keeps the checked value

    def _check_run(self) -> None:
        """The original run: sizes, length, momentum, the schedule (parsed) and its starting LR."""
        # Imported here, not at the top: the CLI imports this module for its help defaults,
        # and `bsadvisor --help` should not pay for the plan schema and the schedule parser.
        from bsadvisor.core.defaults import SCHEDULE_UNITS
        from bsadvisor.core.schedules import Schedule, parse_schedule

        self._set("streaming", bool(self.streaming))
        if self.dataset_size is not None or not self.streaming:
            self._set("dataset_size", checks.positive_int("dataset_size", self.dataset_size))
        self._set("batch_size", checks.positive_int("batch_size", self.batch_size))
        self._set("seq_len", checks.optional(checks.positive_int, "seq_len", self.seq_len))
        self._check_length()
        n = self.dataset_size
        if n is not None and self.batch_size > n:
            raise UserError(f"batch_size {self.batch_size} is larger than dataset_size {n}",
                            parameters=("batch_size", "dataset_size"))
        given_momentum = self.momentum
        if self.momentum is None:  # Adam's β1 is the plan's momentum: torch's default, not SGD's 0
            self._set("momentum", ADAM_BETA1 if str(self.optimizer).lower() in ADAM_FAMILY else DEFAULTS["momentum"])
        checks.within("momentum", self.momentum, 0, 1, high_open=True)
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
        self._set("lr", checks.positive("lr", self.lr))
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
        from bsadvisor.core.defaults import MAX_EPOCHS, MAX_SAMPLES

        given = [name for name in ("epochs", "total_samples", "total_steps") if getattr(self, name) is not None]
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
            samples = checks.positive_int("total_samples", self.total_samples, high=MAX_SAMPLES)
            self._set("total_samples", samples)
        else:
            steps = checks.positive_int("total_steps", self.total_steps, high=MAX_SAMPLES)
            self._set("total_steps", steps)
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
        checks.choice("rule", self.rule, RULES)
        self._set("optimizer", str(self.optimizer).lower())
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.choice("adam_rule", self.adam_rule, ADAM_RULES)
        if not isinstance(self.adam_sde, bool):
            raise UserError(f"adam_sde must be true or false, got {checks.show(self.adam_sde)}", parameter="adam_sde")
        if self.adam_sde and self.optimizer not in ADAM_FAMILY:
            raise UserError("adam_sde scales Adam's β1, β2 and ε; it does not apply to SGD (give --optimizer adamw)",
                            parameter="adam_sde")
        checks.within("max_fraction", self.max_fraction, 0, 1, low_open=True)
        for name in ("round_to", "world_size"):
            self._set(name, checks.positive_int(name, getattr(self, name)))
        for name in ("micro_batch", "max_batch", "max_stages"):
            self._set(name, checks.optional(checks.positive_int, name, getattr(self, name)))
        for name, why in (("stage_factor", ""), ("increase_lr", " (it multiplies the LR and the batch)")):
            value = checks.optional(checks.positive, name, getattr(self, name))
            if value is not None and value < 1:
                raise UserError(f"{name} must be ≥ 1{why}, got {value}", parameter=name)
            self._set(name, value)
        if self.momentum_to is not None:
            if self.optimizer in ADAM_FAMILY:
                raise UserError("momentum_to applies to SGD momentum; Adam's β1 does not set the temperature",
                                parameter="momentum_to")
            checks.within("momentum_to", self.momentum_to, 0, 1, high_open=True)
        if not callable(self.noise_cap_batch):  # a number, or a per-sample cap (core.noise_model.NoiseCap)
            checks.optional(checks.number, "noise_cap_batch", self.noise_cap_batch, low=0, allow_inf=True)
        self._set("growth_factor", checks.optional(checks.integer, "growth_factor", self.growth_factor, low=2,
                                                    high=1024))
        if self.max_batch is not None and self.max_batch < self.batch_size:
            raise UserError(f"max_batch {self.max_batch} is smaller than batch_size {self.batch_size}: the "
                            "original batch does not fit; lower --batch-size or allow gradient accumulation",
                            parameters=("max_batch", "batch_size"))

    def to_dict(self) -> dict[str, Any]:
        """The options as a plan records them in ``inputs``: the schedule described, ``adam_rule``
        only for the Adam family (where it applies), ``noise_cap_batch`` left to the plan's cap."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("noise_cap_batch", "noise_model")}
        doc["schedule"] = self.schedule.describe()
        doc["adam_rule"] = self.adam_rule if self.optimizer in ADAM_FAMILY else None
        doc["adam_sde"] = self.adam_sde if self.optimizer in ADAM_FAMILY else None
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ConvertOptions":
        """Options from a dict such as a plan's ``inputs``: other keys are ignored, None means the default."""
        return cls(**{f.name: doc[f.name] for f in fields(cls) if doc.get(f.name) is not None})


#: Every option's name, in the order a plan records them.
OPTION_NAMES = tuple(f.name for f in fields(ConvertOptions))

