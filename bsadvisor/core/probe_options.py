"""The probe's options, checked before any work (no torch: the CLI refuses bad values at once).

``bsadvisor probe`` and ``bsadvisor.probe(...)`` both go through :func:`check_probe_options`,
so a bad value is one ``UserError`` line naming the parameter (``seed``; the CLI shows it
as ``--seed``) whichever way it came in.
"""
from __future__ import annotations

from typing import Any

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError

ESTIMATORS = ("microbatch", "two-batch", "per-example")
MAX_DRAWS = 100_000
MAX_MICRO_BATCHES = 4096


def check_probe_options(*, batch_size: Any = None, lr: Any = None, warmup_steps: Any = None,
                        budget_seconds: Any = 12.0, target_rel_ci: Any = 0.10, estimator: Any = "microbatch",
                        micro_batches: Any = 8, memory_limit: Any = None, seed: Any = 0,
                        draws: Any = None) -> dict:
    """The options as clean Python numbers; the first bad one raises a UserError naming it.

    ``memory_limit`` is in bytes (at least one: zero would mean "no limit"); ``draws``: a
    fixed number of noise draws (at least 2), or None to let the time budget decide.
    """
    if estimator not in ESTIMATORS:
        raise UserError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {str(estimator)[:40]!r}",
                        parameter="estimator")
    return dict(
        batch_size=checks.optional(checks.integer, "batch_size", batch_size, low=2),
        lr=checks.optional(checks.positive, "lr", lr),
        warmup_steps=checks.optional(checks.integer, "warmup_steps", warmup_steps, low=0),
        budget_seconds=checks.positive("budget_seconds", budget_seconds),
        target_rel_ci=checks.number("target_rel_ci", target_rel_ci, low=0, high=1, low_open=True, high_open=True),
        estimator=estimator,
        micro_batches=checks.integer("micro_batches", micro_batches, low=2, high=MAX_MICRO_BATCHES),
        memory_limit=checks.optional(checks.number, "memory_limit", memory_limit, low=1),
        seed=checks.seed("seed", seed),
        draws=checks.optional(checks.integer, "draws", draws, low=2, high=MAX_DRAWS),
    )

