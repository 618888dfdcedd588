"""A plan for the tools people already use: megatron-style ``samples:batch`` pairs and a CSV table.

Each format gives its text, its rows (for a JSON document) and notes on what it cannot
hold (the LR in megatron). Pure Python, no torch.
"""
from __future__ import annotations

from dataclasses import replace

from bsadvisor.core.errors import UserError
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `bsadvisor --help` need not import the plan schema
    from bsadvisor.core.plan import Plan

EXPORT_FORMATS = ("megatron", "csv")
EXPORT_SCHEMA = "bsadvisor.export/1"


def check_format(format_name: str) -> str:
    """``format_name`` if it is one of EXPORT_FORMATS."""
    if format_name not in EXPORT_FORMATS:
        raise UserError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format_name!r} "
                        "(lightning: not available yet, see bsadvisor export --help)", parameter="format")
    return format_name


def export(plan: Plan, format_name: str) -> tuple[str, list[dict], list[str]]:
    """(text, rows, notes) of ``plan`` in ``format_name`` (one of EXPORT_FORMATS)."""
    if check_format(format_name) == "megatron":
        return export_megatron(plan), megatron_pairs(plan), megatron_notes(plan)
    return export_csv(plan), csv_rows(plan), []


def fmt_number(x: float) -> str:
    """A float as short as it can be to 10 significant digits: 0.005000000000000001 → 0.005."""
    return format(x, ".10g")


def megatron_pairs(plan) -> list[dict]:
    """One {samples, batch_size} per batch change: samples consumed before the change, the new global batch."""
    pairs, last = [], None
    for s in plan.stages:
        if s.batch_size != last:
            pairs.append({"samples": s.start_epoch * plan.dataset_size, "batch_size": s.batch_size})
            last = s.batch_size
    return pairs


def export_megatron(plan) -> str:
    """``samples:batch`` pairs, one per batch change (samples consumed before the change)."""
    return " ".join(f"{p['samples']}:{p['batch_size']}" for p in megatron_pairs(plan)) + "\n"


def megatron_notes(plan) -> list[str]:
    """What the megatron format drops, and who reads it."""
    notes = ["stock Megatron-LM has no flag that reads samples:batch pairs (its --rampup-batch-size START "
             "INCREMENT SAMPLES is a linear ramp only): feed them to your own global-batch-size schedule "
             "(a num-microbatches calculator), or use --format csv"]
    lrs = {s.lr for s in plan.stages}
    moms = {s.momentum for s in plan.stages}
    if len(lrs) > 1:
        changes = [f"epochs {s.start_epoch}–{s.end_epoch} at {fmt_number(s.lr)}" for s in _lr_runs(plan)]
        notes.append("the format holds batch sizes only, and this plan also changes the LR ("
                     + "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
                     + "): set Megatron's LR schedule (--lr, --lr-decay-style, --lr-decay-samples, --min-lr, "
                       "--lr-warmup-samples) to match, or use --format csv for the LR per epoch")
    else:
        notes.append(f"the LR is {fmt_number(next(iter(lrs)))} throughout: train with --lr {fmt_number(next(iter(lrs)))} "
                     "--lr-decay-style constant (the batch growth replaces the LR decay)")
    if len(moms) > 1:
        notes.append("the plan also changes the momentum, which the format cannot hold; use --format csv")
    return notes


def _lr_runs(plan) -> list:
    """Consecutive stages merged while the LR stays the same."""
    runs = []
    for s in plan.stages:
        if runs and runs[-1].lr == s.lr:
            runs[-1] = replace(runs[-1], end_epoch=s.end_epoch)
        else:
            runs.append(s)
    return runs


def csv_rows(plan) -> list[dict]:
    """One {epoch, batch_size, lr, momentum} per epoch."""
    return [{"epoch": epoch, "batch_size": s.batch_size, "lr": s.lr, "momentum": s.momentum}
            for s in plan.stages for epoch in range(s.start_epoch, s.end_epoch)]


def export_csv(plan) -> str:
    """``epoch,batch_size,lr,momentum``, one row per epoch, numbers to 10 significant digits."""
    lines = ["epoch,batch_size,lr,momentum"]
    lines += [f"{r['epoch']},{r['batch_size']},{fmt_number(r['lr'])},{fmt_number(r['momentum'])}"
              for r in csv_rows(plan)]
    return "\n".join(lines) + "\n"
