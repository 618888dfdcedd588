"""`bsadvisor advise` (probe + convert in one go) and `bsadvisor export` (a plan for other tools)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from .cli import app, console, emit_json, err_console
from .cmd_convert import (AdamRule, IncreaseLr, MaxBatch, MaxFraction, MaxStages, MomentumTo, NoiseCap, RoundTo,
                          Rule, ScheduleOpt, ScheduleUnit, StageFactor, WorldSize, GradAccum, Epochs, Lr, Momentum,
                          BatchSize, plan_from_options)
from .errors import UserError

ADVICE_SCHEMA = "bsadvisor.advice/1"

ADVISE_EXAMPLES = """
[bold]Examples[/]

  Measure the built-in MNIST-1D MLP and convert a paper-style schedule:

  [cyan]bsadvisor advise builtin:mnist1d-mlp --epochs 10 --schedule "MultiStepLR(milestones=[3,6,8], gamma=0.2)" --out plan.json[/]

  Your own model on two GPUs, growth capped at 10 × the noise scale:

  [cyan]bsadvisor advise train.py:make_target --device cuda --world-size 2 --noise-cap 10 --epochs 90 --schedule "CosineAnnealingLR(T_max=90)"[/]
"""


@app.command("advise", epilog=ADVISE_EXAMPLES)
def advise_cmd(
    target: Annotated[str, typer.Argument(help="path/to/file.py:function, package.module:function or builtin:NAME")],
    schedule: ScheduleOpt = None, epochs: Epochs = None, lr: Lr = None, batch_size: BatchSize = None,
    momentum: Momentum = None, schedule_unit: ScheduleUnit = None, rule: Rule = None, max_batch: MaxBatch = None,
    max_fraction: MaxFraction = None, round_to: RoundTo = None, max_stages: MaxStages = None,
    stage_factor: StageFactor = None, increase_lr: IncreaseLr = None, momentum_to: MomentumTo = None,
    adam_rule: AdamRule = None, world_size: WorldSize = None, grad_accum: GradAccum = None,
    noise_cap: NoiseCap = None,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | auto.")] = "auto",
    budget_seconds: Annotated[float, typer.Option("--budget-seconds", help="Time budget of the probe.")] = 12.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the probe's sampling.")] = 0,
    probe_out: Annotated[Optional[Path], typer.Option("--probe-out", help="Also write the probe JSON here.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document holding the probe and the plan.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the plan JSON here (atomically).")] = None,
) -> None:
    """Probe TARGET, convert its LR schedule into a batch-growth plan that fits the measured device, and
    print the recommendation: stages, updates, examples and predicted time, cap and noise scale."""
    from .fileio import write_json
    from .probing import probe as run_probe
    if schedule is None or epochs is None:
        raise UserError("advise needs --schedule and --epochs (the LR schedule you train with)")
    result = _probe_with_progress(run_probe, target, device=device, batch_size=batch_size, lr=lr,
                                  budget_seconds=budget_seconds, seed=seed, quiet=json_)
    plan = plan_from_options(
        probe=result, world_size=world_size, grad_accum=grad_accum, noise_cap=noise_cap, schedule=schedule,
        epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, schedule_unit=schedule_unit, rule=rule,
        max_batch=max_batch, max_fraction=max_fraction, round_to=round_to, max_stages=max_stages,
        stage_factor=stage_factor, increase_lr=increase_lr, momentum_to=momentum_to, adam_rule=adam_rule)
    if probe_out is not None:
        write_json(probe_out, result.to_dict())
    if out is not None:
        plan.save(out)
    if json_:
        emit_json({"schema": ADVICE_SCHEMA, "probe": result.to_dict(), "plan": plan.to_dict()})
        return
    _print_advice(target, result, plan, out, probe_out)


def _probe_with_progress(run_probe, target, quiet: bool, **kwargs):
    """Run the probe under a rich progress bar on stderr (none when printing JSON)."""
    if quiet:
        return run_probe(target, **kwargs)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("probe: {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)
        return run_probe(target, progress=lambda phase, frac: bar.update(task, description=phase, completed=frac),
                         **kwargs)


def _print_advice(target, result, plan, out, probe_out) -> None:
    from rich.table import Table

    from .report import fmt_seconds, plan_summary

    noise, mem = result.noise, result.memory
    lo, hi = noise.ci90
    console.print(f"[bold]Measured on {target}[/] ({result.settings.device}): noise scale B_simple ≈ "
                  f"{noise.b_simple:,.0f} (90% CI {lo:,.0f}–{hi:,.0f}), device cap {mem.max_batch:,} per device "
                  f"→ plan cap {plan.cap.get('batch_size'):,} ({plan.cap.get('limited_by')})")
    console.print(plan_summary(plan))
    pred = plan.probe["predicted"]
    n, e = plan.dataset_size, plan.epochs
    cmp = Table(title="Original schedule vs plan", title_justify="left", header_style="bold")
    for col in ("", "updates", "examples", "predicted time"):
        cmp.add_column(col, justify="right" if col else "left")
    cmp.add_row("original (LR decay)", f"{plan.baseline_updates:,}", f"{n * e:,}",
                fmt_seconds(pred["baseline_predicted_seconds"]))
    cmp.add_row("plan (batch growth)", f"{plan.updates:,}", f"{n * e:,}", fmt_seconds(pred["predicted_seconds"]))
    speed = pred["baseline_predicted_seconds"] / pred["predicted_seconds"] if pred["predicted_seconds"] else math.nan
    cmp.add_row("ratio", f"{plan.baseline_updates / plan.updates:.2f}×", "1×", f"{speed:.2f}×")
    console.print(cmp)
    plan_file = out or Path("plan.json")
    console.print("[bold]Next[/]")
    if out is None:
        console.print(f"  save the plan:   [cyan]bsadvisor advise {target} ... --out {plan_file}[/]")
    console.print(f"  validate it:     [cyan]bsadvisor validate {target} --plan {plan_file}[/]")
    if probe_out is not None:
        console.print(f"  re-plan offline: [cyan]bsadvisor convert-schedule --probe {probe_out} --epochs {e} "
                      f"--schedule \"{plan.inputs.get('schedule')}\"[/]")
    console.print(f"  in training:     [cyan]BatchSizeScheduler(Plan.load('{plan_file}'), optimizer)[/] "
                  "(see docs/integration.md)")


EXPORT_FORMATS = ("megatron", "csv")


@app.command("export", epilog="""
[bold]Examples[/]

  [cyan]bsadvisor export plan.json --format megatron[/]   samples:batch pairs for a step-batch-size schedule
  [cyan]bsadvisor export plan.json --format csv --out plan.csv[/]   one row per epoch: epoch,batch_size,lr,momentum

A Lightning snippet is not offered yet: bsadvisor has no Lightning callback; use
BatchSizeScheduler and PlanBatchSampler in your loop (docs/integration.md).
""")
def export_cmd(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by convert-schedule/advise --out")],
    format_: Annotated[str, typer.Option("--format", help="megatron | csv")] = "csv",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here (atomically) instead of printing.")] = None,
) -> None:
    """Export a plan for the frameworks people already use."""
    from .fileio import write_atomic
    from .plan import Plan

    if format_ not in EXPORT_FORMATS:
        raise UserError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format_!r} "
                        "(lightning: not available yet, see bsadvisor export --help)")
    plan = Plan.load(plan_file)
    text = export_megatron(plan) if format_ == "megatron" else export_csv(plan)
    if out is not None:
        write_atomic(out, text)
    else:
        typer.echo(text, nl=False)


def export_megatron(plan) -> str:
    """``samples:batch`` pairs, one per batch change (samples consumed before the change)."""
    pairs, last = [], None
    for s in plan.stages:
        if s.batch_size != last:
            pairs.append(f"{s.start_epoch * plan.dataset_size}:{s.batch_size}")
            last = s.batch_size
    return " ".join(pairs) + "\n"


def export_csv(plan) -> str:
    lines = ["epoch,batch_size,lr,momentum"]
    for s in plan.stages:
        for epoch in range(s.start_epoch, s.end_epoch):
            lines.append(f"{epoch},{s.batch_size},{s.lr!r},{s.momentum!r}")
    return "\n".join(lines) + "\n"
