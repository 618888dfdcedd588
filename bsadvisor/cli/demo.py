"""`bsadvisor demo`: probe, convert and validate on builtin:mnist1d-mlp, narrated step by step.

Each step is a library call (:func:`bsadvisor.probe`; :func:`bsadvisor.recommend` of the target's
options, runtime.validation.plan_for; :func:`bsadvisor.validate`); the report is validate's
(cli/validate.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import bsadvisor
from bsadvisor.cli.app import app, console, emit_json, err_console, warn_busy_cpu
from bsadvisor.cli.validate import exit_code, plan_source, run_and_report
from bsadvisor.core.fileio import json_safe
from bsadvisor.core.validate_options import check_epochs
from bsadvisor.runtime.validate import check_out, finite
from bsadvisor.runtime.validation import plan_for

DEMO_SCHEMA = "bsadvisor.demo/1"
DEMO_TARGET = "builtin:mnist1d-mlp"


def paper_schedule(epochs: int) -> str:
    """Three decays by 5 at 30%, 60% and 80% of the epochs (Smith et al. 1711.00489 style)."""
    ms = sorted({max(1, round(epochs * f)) for f in (0.3, 0.6, 0.8)})
    if len(ms) < 3 or ms[-1] >= epochs:
        raise bsadvisor.UserError(f"--epochs {epochs} is too short for three LR decays; use at least 5")
    return f"MultiStepLR(milestones={ms}, gamma=0.2)"


@app.command()
def demo(
    epochs: int = typer.Option(10, "--epochs", help="training epochs"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per run"),
    variants: bool = typer.Option(True, "--variants/--no-variants", help="also the hybrid and increased-LR runs"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for results, report and plots"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run's results in --out"),
    skip_probe: bool = typer.Option(False, "--skip-probe", help="skip the probe step"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (bsadvisor.demo/1: probe, plan and "
                                 "validation) on stdout; the narration goes to stderr"),
) -> None:
    """Probe, convert and validate on builtin:mnist1d-mlp (about two minutes on a laptop CPU)."""
    options = bsadvisor.ValidateOptions(seeds=seeds, variants=variants, out=out, overwrite=overwrite)
    check_epochs(epochs)
    schedule = paper_schedule(epochs)
    check_out(out, overwrite=overwrite)
    say = err_console.print if as_json else console.print
    warn_busy_cpu()
    say("[bold]1. Target[/]: builtin:mnist1d-mlp — an MLP on MNIST-1D (32 000 training examples), "
        "SGD with LR 0.05, momentum 0.9, batch 32.")
    tgt = bsadvisor.load_target(DEMO_TARGET)  # read when called: a test may stand a smaller target in
    probe_doc, max_batch = _demo_probe(tgt, skip_probe, say)
    say(f"[bold]3. Convert[/]: the LR schedule {schedule} over {epochs} epochs decays the LR by 5 three "
        "times; Smith et al. (arXiv 1711.00489) instead keep the LR and grow the batch so the noise "
        "temperature g = ε/(1−m)·(N/B − 1) follows the same path.")
    plan = plan_for(tgt, plan_source(tgt, None, dict(schedule=schedule, epochs=epochs, max_batch=max_batch),
                                     lambda text: err_console.print(text, markup=False, soft_wrap=True)))
    for s in plan.stages:
        start, end = (f"{plan.epoch_of(x):g}" for x in (s.start_sample, s.end_sample))
        say(f"   epochs {start:>3}–{end:<3} batch {s.batch_size:>5}  lr {s.lr:.4g}  "
            f"momentum {s.momentum:g}")
    say(f"   {plan.updates:,} parameter updates instead of {plan.baseline_updates:,}.")
    say(f"[bold]4. Validate[/]: train the original schedule and the plan ({seeds} seed(s)"
        + (", plus the hybrid and the increased-LR variant" if variants else "") + ") and compare test accuracy.")
    validation = run_and_report(tgt, plan, options, as_json=False, show=not as_json)
    if as_json:
        emit_json(json_safe({"schema": DEMO_SCHEMA, "target": DEMO_TARGET, "probe": probe_doc,
                             "plan": plan.to_dict(), "validation": validation.to_dict()}))
    else:
        console.print("Next: bsadvisor validate your_file.py:make_target --schedule '...' --epochs E --out runs/")
    if exit_code(validation):
        raise typer.Exit(code=exit_code(validation))


def _demo_probe(tgt, skip: bool, say) -> tuple[Optional[dict], Optional[int]]:
    """Step 2: measure the gradient noise scale and the largest batch that fits (bsadvisor.probe)."""
    say("[bold]2. Probe[/]: measure the gradient noise scale B_simple (McCandlish et al. 1812.06162) "
        "and the largest batch that fits in memory; the plan will not grow past it.")
    if skip:
        say("   skipped (--skip-probe).")
        return None, None
    result = bsadvisor.probe(tgt)  # torch loads here
    b, ci = result.noise.b_simple, result.noise.ci90
    if finite(b):
        say(f"   B_simple ≈ {b:,.0f}" + (f" (90% CI {ci[0]:,.0f}–{ci[1]:,.0f})" if ci and all(map(finite, ci)) else ""))
    mb = result.memory.max_batch
    if mb:
        say(f"   largest batch that fits: {mb:,}")
    return result.to_dict(), (int(mb) if mb else None)
