"""What a validation takes: :class:`ValidateOptions`, each default written once (core/defaults.py).

``bsadvisor validate``, ``bsadvisor demo`` and ``run_validation(target, specs, options)`` all
hold one ValidateOptions, checked when it is built, before the target is imported or torch
loaded: a bad value is one ``UserError`` line naming the parameter (``seeds must be ≥ 1, got 0``), which the
CLI spells as the option the user typed (``--seeds``).
The plan to validate (the schedule options) is a ConvertOptions' business, not this one's.
Pure Python, no torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.declared import OptionObject, option
from bsadvisor.core.defaults import VALIDATE_DEFAULTS
from bsadvisor.core.errors import UserError

if TYPE_CHECKING:
    from bsadvisor.core.verdict import Margin

# validate trains every epoch of every run and seed, evaluates and checkpoints after each
# one and keeps a record of each: past this many epochs a run cannot be expected to finish.
MAX_TRAIN_EPOCHS = 100_000
MAX_SEEDS = 1_000
#: At most this many evaluation points a run's curve has (--evals).
MAX_EVALS = 1_000
#: The largest --max-minutes (about 19 years): past it, no limit is meant.
MAX_MINUTES = 10**7


def check_epochs(epochs: float, where: str = "--epochs") -> float:
    """``epochs`` (fractional allowed) if validate can train that many; otherwise a UserError that says the
    limit and why, naming ``where`` (the command's option, or a file's field)."""
    epochs = checks.number(where, epochs, low=0, low_open=True)
    if epochs > MAX_TRAIN_EPOCHS:
        raise UserError(f"{where} {epochs} is more than validate can train: at most {MAX_TRAIN_EPOCHS:,} epochs, because it "
                        "trains, evaluates and checkpoints every epoch of every run and seed; validate a shorter run")
    return epochs


@dataclass(frozen=True)
class ValidateOptions(OptionObject):
    """How a plan is validated (docs/validate.md); a ValidateOptions always holds clean values.

    ``seeds`` paired seeds per run; with ``variants`` also the hybrid (capped at ``hybrid_cap``,
    None: a quarter of the plan's largest batch) and the increased-LR plan (``increase_lr`` > 1).
    ``tolerance``: the margin δ (a number in the metric's units, a text such as "1%", a Margin
    or None: the default), held as a Margin. ``evals`` evaluation points through every run.
    ``max_micro_batch``: accumulate gradients above it. ``checkpoint_every`` updates inside an
    epoch (None: a quarter of an epoch, at least 50). ``noise_monitor`` measures B_simple through
    every run within ``monitor_overhead`` of the training time and at least
    ``monitor_min_points`` times (``noise_monitor`` may also be None: off, or NoiseMonitor
    settings as train_plan takes them). ``out``: the folder of results and checkpoints,
    continued with ``resume`` or replaced with ``overwrite``. ``max_minutes``: stop after this
    much wall time (None: no limit).
    """

    # Each option once: its default, and for `bsadvisor validate` its type and help (core.declared); the
    # command's --help lists them in this order. The checks are ``check``'s.
    seeds: int = option(VALIDATE_DEFAULTS["seeds"], kind=int, help=(
        "seeds per run (data order and RNG; same initial weights). One seed gives an INDICATIVE verdict only (exit 3): "
        "use 3 or more for a verdict (two give a wide interval)"))
    variants: bool = option(VALIDATE_DEFAULTS["variants"], kind=bool,
                            help="also train the hybrid and the increased-LR variant")
    hybrid_cap: Optional[int] = option(None, kind=int, help="batch cap of the hybrid (default: a quarter of the "
                                                            "plan's largest batch)")
    increase_lr: float = option(VALIDATE_DEFAULTS["increase_lr"], kind=float,
                                help="LR and batch factor of the increased-LR variant")
    tolerance: Union[str, float, Margin, None] = option(None, kind=str, help=(
        "the margin δ: the accepted drop of the metric, in its units (default 0.005) or as a percentage of the "
        "original's (1%)"))
    evals: int = option(VALIDATE_DEFAULTS["evals"], kind=int, help=(
        "evaluate every run at this many evenly spaced points (its curve; the same samples in every run)"))
    max_micro_batch: Optional[int] = option(None, kind=int, help=(
        "accumulate gradients above this batch size (per process under torchrun)"))
    out: Optional[Path] = option(None, kind=Path, help="folder for results.json, report.md, plots and checkpoints")
    resume: bool = option(VALIDATE_DEFAULTS["resume"], kind=bool, help="continue the run in --out from its checkpoints")
    checkpoint_every: Optional[int] = option(None, kind=int, help=(
        "also checkpoint every N updates inside an epoch (default: a quarter of an epoch, at least 50)"))
    overwrite: bool = option(VALIDATE_DEFAULTS["overwrite"], kind=bool,
                             help="replace the results and checkpoints of an earlier run in --out")
    noise_monitor: Union[bool, Mapping, None] = option(
        VALIDATE_DEFAULTS["noise_monitor"], kind=bool, flag="--noise-monitor/--no-noise-monitor",
        help="measure B_simple through every run (NoiseMonitor): results.json, report.md and noise.png")
    monitor_overhead: float = option(VALIDATE_DEFAULTS["monitor_overhead"], kind=float, help=(
        "the noise monitor's time budget, a fraction of the training time (its extra gradient draws stay within it)"))
    monitor_min_points: int = VALIDATE_DEFAULTS["monitor_min_points"]  # no flag: NoiseMonitor settings
    max_minutes: Optional[float] = option(None, kind=float, help=(
        "stop after this many minutes of wall time (exit 124; the checkpoints in --out are kept: continue with "
        "--resume). Default: no limit (a target's code that never returns is then never stopped)"))

    def check(self) -> None:
        """The first bad value raises a UserError naming its parameter (in the order the CLI always checked them)."""
        self._set("max_minutes", checks.optional(checks.number, "max_minutes", self.max_minutes, low=0,
                                                 low_open=True, high=MAX_MINUTES))
        monitor = self.noise_monitor
        if isinstance(monitor, Mapping):  # NoiseMonitor settings, as train_plan takes them
            self._set("monitor_overhead", monitor.get("overhead", self.monitor_overhead))
            self._set("monitor_min_points", monitor.get("min_points", self.monitor_min_points))
        self._set("noise_monitor", bool(monitor))
        self._set("monitor_overhead", checks.number("monitor_overhead", self.monitor_overhead, low=0, high=1,
                                                    low_open=True))
        self._set("monitor_min_points", checks.positive_int("monitor_min_points", self.monitor_min_points))
        self._set("seeds", checks.positive_int("seeds", self.seeds, high=MAX_SEEDS))
        self._set("hybrid_cap", checks.optional(checks.positive_int, "hybrid_cap", self.hybrid_cap))
        self._set("increase_lr", checks.number("increase_lr", self.increase_lr, low=1, low_open=True))
        # imported here: `bsadvisor --help` reads this class's declarations, and the verdict's module is not cheap
        from bsadvisor.core.verdict import parse_margin

        self._set("tolerance", parse_margin(self.tolerance, "tolerance"))
        self._set("evals", checks.positive_int("evals", self.evals, high=MAX_EVALS))
        self._set("max_micro_batch", checks.optional(checks.positive_int, "max_micro_batch", self.max_micro_batch))
        self._set("checkpoint_every", checks.optional(checks.positive_int, "checkpoint_every",
                                                      self.checkpoint_every))
        for name in ("variants", "resume", "overwrite"):
            self._set(name, bool(getattr(self, name)))
        self._set("out", None if self.out is None else Path(self.out))

    @property
    def monitor_settings(self) -> Optional[dict]:
        """The NoiseMonitor settings every run trains with (runtime/monitor.py), None without the monitor."""
        if not self.noise_monitor:
            return None
        return {"overhead": self.monitor_overhead, "min_points": self.monitor_min_points}
