"""A plan for the tools people already use: Megatron-Core's step schedule (or its old linear ramp), OLMo-core's
callback with the plan's LR scheduler, MaxText's ramp, Levanter's batch schedule, a CSV table.

Each format gives its text, its rows (for a JSON document) and notes on what it cannot
hold; nothing in a plan is dropped without a note. Positions are in samples (examples
consumed), and in tokens where the plan knows its sequence length. No torch (numpy for the ramp search).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bsadvisor.core.errors import UserError
from bsadvisor.core.exports.csv import csv_rows, export_csv
from bsadvisor.core.exports.levanter import levanter_schedule
from bsadvisor.core.exports.maxtext import maxtext_ramp
from bsadvisor.core.exports.megatron import (export_megatron_ramp, megatron_ramp, megatron_ramp_notes, megatron_ramp_rows,
                                             megatron_step)
from bsadvisor.core.exports.olmo import export_olmo, olmo_notes, olmo_rows

if TYPE_CHECKING:  # annotations only: `bsadvisor --help` need not import the plan schema
    from bsadvisor.core.plan import Plan

__all__ = ["EXPORT_FORMATS", "EXPORT_SCHEMA", "MEGATRON_VERSIONS", "check_format", "check_megatron_version", "csv_rows",
           "export", "export_csv", "export_megatron_ramp", "export_olmo", "levanter_schedule", "maxtext_ramp",
           "megatron_ramp", "megatron_ramp_notes", "megatron_ramp_rows", "megatron_step", "olmo_notes", "olmo_rows"]

EXPORT_FORMATS = ("megatron", "olmo", "maxtext", "levanter", "csv")
#: Megatron-Core releases the export writes for: 0.18 on reads --step-batch-size-schedule, 0.17 and older the ramp.
MEGATRON_VERSIONS = ("0.18", "0.17")
EXPORT_SCHEMA = "bsadvisor.export/2"


def check_format(format_name: str) -> str:
    """``format_name`` if it is one of EXPORT_FORMATS."""
    if format_name not in EXPORT_FORMATS:
        raise UserError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format_name!r} "
                        "(Lightning needs no export: its FollowPlan callback reads plan.json, docs/integration.md)", parameter="format")
    return format_name


def check_megatron_version(version: str) -> str:
    """``version`` as MAJOR.MINOR if it is a Megatron-Core release (0.18 or later: the step schedule)."""
    found = re.fullmatch(r"\s*(\d+)\.(\d+)(\.\d+)?\s*", str(version))
    if found is None:
        raise UserError(f"--megatron-version must be a Megatron-Core release such as 0.18 or 0.17, got {version!r}",
                        parameter="megatron_version")
    return "0.18" if (int(found.group(1)), int(found.group(2))) >= (0, 18) else "0.17"


def export(plan: Plan, format_name: str, megatron_version: str = "0.18",
           plan_path: str = "plan.json") -> tuple[str, list[dict], list[str]]:
    """(text, rows, notes) of ``plan`` in ``format_name`` (one of EXPORT_FORMATS). ``megatron_version``: the
    Megatron-Core release (0.18 on: the step schedule; 0.17 and older: the linear ramp); ``plan_path``: where
    the OLMo-core snippet loads the plan from."""
    fmt = check_format(format_name)
    if fmt == "megatron":
        if check_megatron_version(megatron_version) == "0.17":
            ramp = megatron_ramp(plan)  # the search once, for the text, the rows and the notes
            return export_megatron_ramp(plan, ramp), megatron_ramp_rows(plan, ramp), megatron_ramp_notes(plan, ramp)
        step = megatron_step(plan)
        return step.text, step.rows, step.notes
    if fmt == "olmo":
        return export_olmo(plan, plan_path), olmo_rows(plan), olmo_notes(plan)
    if fmt == "levanter":
        return levanter_schedule(plan)
    if fmt == "maxtext":
        return maxtext_ramp(plan)
    return export_csv(plan), csv_rows(plan), []
