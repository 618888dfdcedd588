"""The probe's options, :class:`ProbeOptions`, each default written once (core/defaults.py), checked
before any work (no torch: the CLI refuses bad values at once).

``bsadvisor probe``, ``bsadvisor.probe(target, ProbeOptions(...))`` and the keyword form
``bsadvisor.probe(target, seed=1)`` all build one ProbeOptions, checked when it is built, so a
bad value is one ``UserError`` line naming the parameter (``seed``; the CLI shows it as
``--seed``) whichever way it came in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core.declared import OptionObject
from bsadvisor.core.defaults import PROBE_DEFAULTS
from bsadvisor.core.errors import UserError

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
    batch into ``micro_batches``. ``memory_limit``: bytes (at least one; None: half the
    available RAM). ``measure_memory``/``measure_throughput``: False skips that phase.
    """

    device: str = PROBE_DEFAULTS["device"]
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    warmup_steps: Optional[int] = None
    budget_seconds: float = PROBE_DEFAULTS["budget_seconds"]
    target_rel_ci: float = PROBE_DEFAULTS["target_rel_ci"]
    estimator: str = PROBE_DEFAULTS["estimator"]
    micro_batches: int = PROBE_DEFAULTS["micro_batches"]
    memory_limit: Optional[float] = None
    seed: int = PROBE_DEFAULTS["seed"]
    min_draws: int = PROBE_DEFAULTS["min_draws"]
    max_draws: Optional[int] = None
    draws: Optional[int] = None
    measure_memory: bool = PROBE_DEFAULTS["measure_memory"]
    measure_throughput: bool = PROBE_DEFAULTS["measure_throughput"]

    def check(self) -> None:
        """The first bad value raises a UserError naming it; the others are kept as clean Python numbers."""
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
