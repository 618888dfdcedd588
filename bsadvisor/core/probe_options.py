"""The probe's options, :class:`ProbeOptions`, each default written once (core/defaults.py), checked
before any work (no torch: the CLI refuses bad values at once).

``bsadvisor probe``, ``bsadvisor.probe(target, ProbeOptions(...))`` and the keyword form
``bsadvisor.probe(target, seed=1)`` all build one ProbeOptions, checked when it is built, so a
bad value is one ``UserError`` line naming the parameter (``seed``; the CLI shows it as
``--seed``) whichever way it came in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.declared import OptionObject, option
from bsadvisor.core.defaults import PROBE_DEFAULTS
from bsadvisor.core.errors import UserError
from bsadvisor.core.memory import parse_size

ESTIMATORS = ("microbatch", "two-batch", "per-example")
MAX_DRAWS = 100_000
MAX_MICRO_BATCHES = 4096
#: The longest --budget-seconds: a week. The probe's own time limit (a multiple of it) is an OS timer,
#: which overflows near 9·10⁸ s; no probe needs more than a few minutes.
MAX_BUDGET_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class ProbeOptions(OptionObject):
    """What a probe measures with (docs/probe.md); a ProbeOptions always holds clean values.

    ``device``: cpu, cuda, cuda:N or auto. ``batch_size`` B, ``lr`` and ``warmup_steps``:
    None takes the target's batch and LR and about 2% of an epoch of warmup.
    ``budget_seconds`` bounds the measuring; the noise draws stop when B_simple's 90% interval
    is within ±``target_rel_ci``, or after exactly ``draws`` draws (at least 2) when given
    (else between ``min_draws`` and ``max_draws``). ``estimator`` (one of ESTIMATORS) splits a
    batch into ``micro_batches``. ``memory_limit``: bytes (at least one), or a size such as
    "8GiB" (None: half the available RAM). ``measure_memory``/``measure_throughput``: False skips that phase.
    """

    # Each option once: its default, and for `bsadvisor probe` its type and help (core.declared); the others
    # are the library's only.
    device: str = option(PROBE_DEFAULTS["device"], kind=str, help="cpu, cuda or auto (cuda if available).")
    batch_size: Optional[int] = option(None, kind=int, help="Batch to measure at (default: the target's).")
    lr: Optional[float] = option(None, kind=float, help="Learning rate for the warmup steps (default: the target's).")
    warmup_steps: Optional[int] = option(None, kind=int,
                                         help="Optimizer steps before measuring (default: ~2% of an epoch, 1–50).")
    budget_seconds: float = option(PROBE_DEFAULTS["budget_seconds"], kind=float, help=(
        "Time budget of the measuring (warmup, noise, memory, throughput); building the target is not counted."))
    target_rel_ci: float = option(PROBE_DEFAULTS["target_rel_ci"], kind=float,
                                  help="Stop when the 90% interval of B_simple is within ± this fraction.")
    estimator: str = option(PROBE_DEFAULTS["estimator"], kind=str, help=f"{', '.join(ESTIMATORS[:-1])} or "
                                                                        f"{ESTIMATORS[-1]}.")
    micro_batches: int = PROBE_DEFAULTS["micro_batches"]
    memory_limit: Union[float, str, None] = option(None, kind=str, help=(
        "CPU memory cap per process, e.g. 8GiB, 500MB (default: half the available RAM, shared by a node's "
        "processes under torchrun)."))
    seed: int = option(PROBE_DEFAULTS["seed"], kind=int, help="Seed for batch sampling and the model's randomness.")
    min_draws: int = PROBE_DEFAULTS["min_draws"]
    max_draws: Optional[int] = None
    draws: Optional[int] = option(None, kind=int, help=(
        "Take exactly this many noise draws (≥ 2): the same --seed then gives the same B_simple; refused if they "
        "do not fit in --budget-seconds. Default: as many as the budget allows (results vary between runs)."))
    measure_memory: bool = PROBE_DEFAULTS["measure_memory"]
    measure_throughput: bool = PROBE_DEFAULTS["measure_throughput"]

    def check(self) -> None:
        """The first bad value raises a UserError naming it; the others are kept as clean Python numbers."""
        if isinstance(self.memory_limit, str):  # a size as people write it (the CLI's --memory-limit 8GiB)
            try:
                self._set("memory_limit", parse_size(self.memory_limit))
            except ValueError as exc:
                raise UserError(f"memory_limit: {exc}", parameter="memory_limit") from None
        if self.estimator not in ESTIMATORS:
            raise UserError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {str(self.estimator)[:40]!r}",
                            parameter="estimator")
        clean: dict[str, Any] = dict(
            device=checks.device("device", self.device),
            batch_size=checks.optional(checks.integer, "batch_size", self.batch_size, low=2),
            lr=checks.optional(checks.positive, "lr", self.lr),
            warmup_steps=checks.optional(checks.integer, "warmup_steps", self.warmup_steps, low=0),
            budget_seconds=checks.number("budget_seconds", self.budget_seconds, low=0, low_open=True,
                                         high=MAX_BUDGET_SECONDS),
            target_rel_ci=checks.number("target_rel_ci", self.target_rel_ci, low=0, high=1, low_open=True,
                                        high_open=True),
            micro_batches=checks.integer("micro_batches", self.micro_batches, low=2, high=MAX_MICRO_BATCHES),
            memory_limit=checks.optional(checks.number, "memory_limit", self.memory_limit, low=1),
            seed=checks.seed("seed", self.seed),
            draws=checks.optional(checks.integer, "draws", self.draws, low=2, high=MAX_DRAWS),
            min_draws=checks.integer("min_draws", self.min_draws, low=2, high=MAX_DRAWS),
            measure_memory=checks.flag("measure_memory", self.measure_memory),
            measure_throughput=checks.flag("measure_throughput", self.measure_throughput),
        )
        clean["max_draws"] = checks.optional(checks.integer, "max_draws", self.max_draws, low=clean["min_draws"],
                                             high=MAX_DRAWS)
        for name, value in clean.items():
            self._set(name, value)
