"""`bsadvisor probe TARGET`: presentation only; the work is bsadvisor.probe (imports torch lazily)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import bsadvisor
from bsadvisor.cli.app import app, console, emit_json, err_console, probe_time_limit
from bsadvisor.cli.options import Overwrite, with_options
from bsadvisor.core.declared import declarations
from bsadvisor.core.fileio import PROBE_FILES, check_replace, write_json
from bsadvisor.core.memory import format_bytes

EPILOG = (
    "Examples:\n\n"
    "  bsadvisor probe builtin:mnist1d-mlp\n\n"
    "  bsadvisor probe train.py:make_target --device cuda --out probe.json\n\n"
    "  bsadvisor probe mypkg.targets:resnet --batch-size 256 --lr 0.1 --target-rel-ci 0.05 --json\n\n"
    "  bsadvisor probe builtin:linreg --estimator per-example --memory-limit 2GiB\n\n"
    "  bsadvisor probe builtin:linreg --draws 30 --seed 1   (reproducible B_simple)\n\n"
    "  torchrun --standalone --nproc_per_node=8 -m bsadvisor probe train.py:make_target --out probe.json\n\n"
    "The result feeds: bsadvisor convert-schedule --probe probe.json"
)


@app.command(epilog=EPILOG)
@with_options(tuple(declarations(bsadvisor.ProbeOptions)), of=bsadvisor.ProbeOptions)
def probe(
    target: str = typer.Argument(..., help="path/to/file.py:function, package.module:function or builtin:NAME "
                                           "(a function returning bsadvisor.Target; see docs/target.md)."),
    options: Optional[bsadvisor.ProbeOptions] = None,  # the probe's options, declared once: with_options
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (no progress bar)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON result here (atomically)."),
    overwrite: Overwrite = False,
) -> None:
    """Measure gradient noise (B_simple), memory cap and throughput on your own model.

    A few optimizer steps at your LR and batch leave the initial transient; then, at fixed parameters, the probe estimates the gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) with a 90% interval, finds the largest batch whose training step fits in memory, and times training steps on a ladder of batch sizes. Your model, its buffers and all random states are left exactly as they were. The time budget decides the number of noise draws, so B_simple varies a little between runs; --draws N makes it reproducible. Under torchrun (docs/distributed.md) --batch-size is the global batch, every process measures, and only rank 0 prints and writes files.
    \f
    Every value was checked (ProbeOptions, from what was parsed) before torch is imported and anything measured.
    """
    # Only rank 0 writes, so only rank 0 checks (before joining the group, so the job fails at once),
    # and before measuring, so a finished measurement is never lost because of where it was to go.
    if os.environ.get("RANK", "0") == "0" and out is not None:
        check_replace(out, PROBE_FILES, overwrite)

    # imports torch; a single-process no-op without torchrun's WORLD_SIZE
    dist = bsadvisor.distributed.init_from_env(options.device)
    with probe_time_limit(options.budget_seconds):  # a loss_fn that never returns is stopped, one line
        if dist.is_main:
            _run_main(lambda **kw: bsadvisor.probe(target, options, dist=dist, **kw), json_out, out, format_bytes)
        else:
            bsadvisor.probe(target, options, dist=dist)  # measures and agrees with the others; rank 0 reports
    # Every rank is done before any leaves; cli.main then ends the process without tearing
    # the group down (distributed.exit_job), and an error ends it the same way.
    dist.barrier()


def _run_main(run_probe, json_out, out, format_bytes) -> None:
    if json_out:
        result = run_probe()
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            tasks = {}

            def progress(phase: str, frac: float) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=1.0)
                bar.update(tasks[phase], completed=min(1.0, frac))

            result = run_probe(progress=progress)
    doc = result.to_dict()
    if out is not None:
        write_json(out, doc)
    if json_out:
        emit_json(doc)
        return
    _summary(result, format_bytes, out)


def _summary(r, format_bytes, out, con=None) -> None:
    """The human-readable result on ``con`` (default: stdout). Everything fits 80 columns without
    cutting a number (narrow tables, long lines wrap between words); user strings are escaped."""
    from bsadvisor.core.noise import UNUSABLE_ADVICE, describe_interval, usable

    con = con or console
    n, s, m = r.noise, r.settings, r.memory
    world = getattr(s, "world_size", 1)
    where = f"{s.device} × {world} processes" if world > 1 else s.device
    con.print(Text.assemble(("bsadvisor probe", "bold"), f" {r.target}  ({where}, {s.optimizer}, "
                            f"lr {s.lr:g}, momentum {s.momentum:g}, batch {s.batch_size}, N {s.dataset_size}, "
                            f"{s.warmup_steps} warmup steps)"))
    conv = "" if n.converged else f"  [yellow](interval wider than ±{s.target_rel_ci:.0%}: raise --budget-seconds)[/yellow]"
    con.print(f"Gradient noise scale B_simple = {escape(describe_interval(n.b_simple, n.ci90, n.ci_kind, '.4g'))}{conv}")
    if not usable(n.b_simple, n.ci_kind):
        con.print(f"  [yellow]{escape(UNUSABLE_ADVICE)}[/yellow]")
    draws = getattr(s, "draws", None)
    how = (f"{n.draws} draws fixed by --draws: the same --seed gives the same B_simple" if draws is not None else
           f"{n.draws} draws in the time budget: B_simple varies between runs; --draws N makes it reproducible")
    con.print(f"  tr(Σ) = {n.trace_sigma:.4g}   |G|² = {n.grad_sq_norm:.4g}   from {n.examples} examples "
              f"({s.estimator}, b={n.micro_batch}, B={n.big_batch}, {n.seconds:.1f}s; {how})")
    if n.relative_noise is not None:
        con.print(f"  relative gradient noise at batch {s.batch_size}: √(B_simple/B) = {n.relative_noise:.3g}")
    con.print(f"  temperature g = lr/(1−m)·(N/B−1) = {r.temperature:.4g}")
    t = Table(title="O(√B): gradient noise vs batch", show_edge=False)
    t.add_column("batch", justify="right", no_wrap=True)
    t.add_column("noise std vs B", justify="right", no_wrap=True)
    t.add_column("√(B_simple/batch)", justify="right", no_wrap=True)
    for row in n.sqrt_table:
        rn = row["relative_noise"]
        t.add_row(str(row["batch_size"]), f"{row['std_vs_B']:.3f}", "—" if rn is None else f"{rn:.3f}")
    con.print(t)
    per = f" per device (smallest of {world} ranks; convert-schedule --world-size {world} multiplies)" if world > 1 else ""
    con.print(f"Memory cap: [bold]{m.max_batch}[/bold]{per} (limited by {escape(m.limited_by)}; fixed "
              f"{format_bytes(m.fixed_bytes)} + {format_bytes(m.bytes_per_sample)}/sample, limit "
              f"{format_bytes(m.limit_bytes)}, headroom {m.headroom:.0%}, {m.trials} trials)")
    if r.throughput:
        tt = Table(title="Throughput (full training step)", show_edge=False)
        tt.add_column("batch", justify="right", no_wrap=True)
        tt.add_column("examples/s", justify="right", no_wrap=True)
        tt.add_column("step", justify="right", no_wrap=True)
        tt.add_column("spread", justify="right", no_wrap=True)
        for p in r.throughput:
            reps = getattr(p, "repeats", 1)
            spread = f"±{getattr(p, 'spread', 0.0) / 2:.0%} of {reps}" if reps > 1 else "1 timing"
            tt.add_row(str(p.batch_size), f"{p.examples_per_s:,.0f}", _seconds(p.step_seconds), spread)
        con.print(tt)
        con.print("  examples/s: the median of the timings; spread: ± half their range")
        if r.throughput_knee is not None:
            con.print(f"  doubling the batch past {r.throughput_knee} gives less than 1.2× the examples/s")
    for w in getattr(r, "warnings", None) or []:
        con.print(Text(f"warning: {w}", style="yellow"))
    if out is not None:
        con.print(Text(f"wrote {out}"))


def _seconds(x: float) -> str:
    """A step time in the unit that keeps it short: 850 µs, 12.3 ms, 1.25 s."""
    if not x > 0:
        return "—"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.3g} s"
