"""Rich rendering of plans (presentation only; no math here beyond formatting)."""
from __future__ import annotations

import math
from itertools import groupby

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .plan import Plan


def _fmt_lr(a: float, b: float) -> str:
    return f"{a:.4g}" if math.isclose(a, b, rel_tol=1e-9) else f"{a:.4g} → {b:.4g}"


def _fmt_num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def plan_rows(plan: Plan) -> list[dict]:
    """One row per batch stage (consecutive segments with the same batch and phase)."""
    b0 = plan.inputs.get("batch_size") or plan.stages[0].batch_size
    rows = []
    for (batch, phase), segs in groupby(plan.stages, key=lambda s: (s.batch_size, s.phase)):
        segs = list(segs)
        rows.append({
            "start": segs[0].start_epoch, "end": segs[-1].end_epoch, "batch": batch, "phase": phase,
            "lr": (segs[0].lr, segs[-1].lr), "momentum": segs[0].momentum,
            "temperature": (segs[0].temperature, segs[-1].temperature),
            "updates": sum(s.updates(plan.dataset_size) for s in segs),
            "noise": math.sqrt(b0 / batch),
            "predicted_seconds": sum(s.extra.get("predicted_seconds") or 0.0 for s in segs)
            if any("predicted_seconds" in s.extra for s in segs) else None,
            "efficiency": segs[0].extra.get("efficiency"),
        })
    return rows


def plan_table(plan: Plan, title: str = "Recommended plan") -> Table:
    rows = plan_rows(plan)
    has_time = any(r["predicted_seconds"] is not None for r in rows)
    has_eff = any(r["efficiency"] is not None for r in rows)
    t = Table(title=title, title_justify="left", show_footer=True, header_style="bold")
    t.add_column("stage", footer="total")
    t.add_column("epochs")
    t.add_column("batch", justify="right")
    t.add_column("LR", justify="right")
    t.add_column("momentum", justify="right")
    t.add_column("g/g0", justify="right")
    t.add_column("updates", justify="right", footer=f"{plan.updates:,}")
    t.add_column("noise std", justify="right")
    if has_eff:
        t.add_column("efficiency", justify="right")
    if has_time:
        total = sum(r["predicted_seconds"] or 0 for r in rows)
        t.add_column("pred. time", justify="right", footer=fmt_seconds(total))
    for i, r in enumerate(rows):
        g = r["temperature"]
        cells = [f"{i}" + (" warmup" if r["phase"] == "warmup" else " hybrid" if r["phase"] == "hybrid" else ""),
                 f"{r['start']}–{r['end']}", f"{r['batch']:,}", _fmt_lr(*r["lr"]), f"{r['momentum']:g}",
                 _fmt_lr(*g), f"{r['updates']:,}", f"{r['noise']:.3f}"]
        if has_eff:
            cells.append("" if r["efficiency"] is None else f"{r['efficiency']:.2f}")
        if has_time:
            cells.append(fmt_seconds(r["predicted_seconds"]))
        t.add_row(*cells)
    return t


def fmt_seconds(s) -> str:
    if s is None:
        return ""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def plan_summary(plan: Plan) -> Group:
    """The whole report: table, totals versus the original, warnings, notes."""
    base, new = plan.baseline_updates, plan.updates
    ratio = base / new if new else float("nan")
    lines = [plan_table(plan),
             Text.from_markup(f"[bold]updates[/]: original {base:,} → plan {new:,}  ([bold green]{ratio:.2f}× fewer[/])"),
             Text("g/g0: realised noise temperature relative to the original's start (peak); "
                  "noise std: gradient-noise std relative to the first stage, √(B0/B)", style="dim")]
    cap = plan.cap
    if cap:
        lines.append(Text(f"cap: batch {cap.get('batch_size'):,} (limited by {cap.get('limited_by')})", style="dim"))
    for w in plan.warnings:
        lines.append(Text("warning: " + w, style="yellow"))
    for n in plan.notes:
        lines.append(Text("note: " + n, style="dim"))
    return Group(*lines)
