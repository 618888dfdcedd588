"""The original schedule as a Plan: batch B0 throughout, the schedule's own LR at every update.

What validate trains the plan against, rebuilt from the options a plan records. No torch here.
"""
from __future__ import annotations

from typing import Any

from bsadvisor.core.errors import UserError
from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.plan import Plan
from bsadvisor.core.spans import Span, merge, read_original


#: What a baseline plan records of its options.
_BASELINE_INPUTS = ("lr", "batch_size", "dataset_size", "epochs", "total_samples", "total_steps", "momentum",
                    "schedule", "schedule_unit", "seq_len", "streaming")


def baseline(options: ConvertOptions) -> Plan:
    """The original schedule as a Plan: batch B0 throughout, the schedule's own LR at every update.

    One stage per stretch of constant momentum, each with ``lr_scale`` 1: the LR at sample s
    is the original's, exactly as torch's scheduler steps it (per epoch or per update).
    """
    original = read_original(options)
    b0, pieces, temps = options.batch_size, original.pieces, original.temperatures
    g_ref = max(temps)
    # B0 = N (full batch) has no gradient noise: g = 0 throughout; report the LR ratio instead.
    rho = [t / g_ref for t in temps] if g_ref > 0 else [p.lr / max(q.lr for q in pieces) if p.lr else 0.0
                                                       for p in pieces]
    per_span = [Span(p.start, p.end, b0, p.lr, 1.0, p.momentum, r, "original") for p, r in zip(pieces, rho)]
    recorded = options.to_dict()
    stages = merge(per_span, original.model, g_ref)
    return Plan(stages=stages, dataset_size=options.dataset_size, baseline_updates=original.run.updates(),
                inputs={"kind": "baseline", **{k: recorded[k] for k in _BASELINE_INPUTS}},
                notes=["the original LR schedule at a fixed batch"])


def baseline_plan(**options: Any) -> Plan:
    """:func:`baseline` for keyword options (those of :class:`ConvertOptions`)."""
    return baseline(ConvertOptions(**options))


def baseline_of(plan: Plan) -> Plan:
    """The original LR schedule at the fixed batch B0, from the options the plan was made with (Plan.options)."""
    missing = plan.missing_run()
    if missing:
        raise UserError(f"the plan does not record its original schedule ({', '.join(missing)} missing from "
                        "'inputs'); regenerate it with bsadvisor convert-schedule --out")
    return baseline(plan.options)
