"""`bsadvisor validate` and `bsadvisor demo`: train the plan next to the original schedule.

No torch at import time (the CLI must start fast); the training modules are imported
inside the command bodies.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.text import Text

from bsadvisor.cli.options import (AdamRule, AdamSde, BatchSize, Epochs, GrowthFactor, Lr, MaxBatch, MaxFraction, MaxStages,
                                   Momentum, RoundTo, Rule, ScheduleOpt, ScheduleUnit, SeqLen, StageFactor,
                                   TotalSamples, TotalSteps)
from bsadvisor.cli.app import (Interrupted, OverTime, Stopped, app, console, emit_json, err_console, time_limit,
                               warn_busy_cpu)
from bsadvisor.core.defaults import VALIDATE_DEFAULTS
from bsadvisor.core.errors import UserError
from bsadvisor.core.original import check_dataset_size

if TYPE_CHECKING:  # imported where it is built: `bsadvisor --help` does not build the option classes
    from bsadvisor.core.validate_options import ValidateOptions


def _paper_schedule(epochs: int) -> str:
    """Three decays by 5 at 30%, 60% and 80% of the epochs (Smith et al. 1711.00489 style)."""
    ms = sorted({max(1, round(epochs * f)) for f in (0.3, 0.6, 0.8)})
    if len(ms) < 3 or ms[-1] >= epochs:
        raise UserError(f"--epochs {epochs} is too short for three LR decays; use at least 5")
    return f"MultiStepLR(milestones={ms}, gamma=0.2)"


def _plan_options(target, *, plan_path: Optional[Path], schedule: Optional[str], epochs: Optional[float],
                  lr: Optional[float], batch_size: Optional[int], momentum: Optional[float], **convert_kw):
    """The plan to validate: a --plan file, or converted from the schedule options.

    Converted by core.recommend.recommend from runtime.recipe.options_for_target: lr, B0 and
    momentum default to the target's (Adam's β1 when it is 0), N is always the target's, and
    a target that records its own recipe supplies the schedule when none is given.
    """
    from bsadvisor.core.plan import Plan

    if plan_path is not None and schedule is not None:
        raise UserError("give either --plan FILE or --schedule/--epochs, not both")
    if plan_path is not None:
        plan = Plan.load(plan_path)
        check_dataset_size(plan, target.dataset_size)
        return plan
    from bsadvisor.core.recommend import recommend
    from bsadvisor.runtime.recipe import options_for_target

    prepared = options_for_target(target, dict(schedule=schedule, epochs=epochs, lr=lr, batch_size=batch_size,
                                               momentum=momentum, **convert_kw))
    if prepared.note:
        err_console.print(Text(prepared.note), soft_wrap=True)
    if prepared.options["schedule"] is None or not prepared.length_given:
        raise UserError("give --plan FILE, or --schedule and --epochs to convert the schedule here")
    return recommend(prepared.options)


def _progress(max_minutes: Optional[float] = None):
    """One bar per (run, seed) on stderr; none when stderr is not a terminal (logs stay clean).

    validate has no time limit of its own (training takes as long as it takes, and a user's code that
    never returns is not stopped) unless --max-minutes gives one: each bar says which it is.
    """
    import contextlib

    if not err_console.is_terminal:
        return contextlib.nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    limit = (f"limit {max_minutes:g} min" if max_minutes else "no time limit: --max-minutes M bounds it")
    return Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("examples"), TimeElapsedColumn(), TextColumn(limit, style="dim"),
                    console=err_console, transient=False)


def _num(x) -> str:
    """A number whole and short: 4 decimals from 0.001 to 100, else 4 significant digits; n/a when missing."""
    from bsadvisor.runtime.report import fmt

    if isinstance(x, (int, float)) and (abs(x) >= 100 or 0 < abs(x) < 0.001):
        return fmt(x, ".4g")
    return fmt(x, ".4f")


def print_results(doc: dict, out_console=None) -> None:
    """A table of the runs with sparkline curves (no matplotlib needed), then the verdict.

    Every number is shown whole at 80 columns and in a pipe: the table has five short
    columns, and when even that is too wide (long run names, huge counts) each run is
    printed as a block of lines instead. User strings (the target's name) are never read
    as rich markup.
    """
    con = out_console or console
    _print_runs(doc, con)
    _print_curves(doc, con)
    _print_noise(doc, con)
    _print_verdict(doc, con)


def _print_runs(doc: dict, con) -> None:
    """The runs' table (or one block per run when the table is too wide), its title and legend."""
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    from bsadvisor.runtime.report import fmt

    runs = doc["runs"]
    first = next(iter(runs.values()))["summary"]
    title = Text(f"{doc['target']}: {doc['epochs']:.4g} epoch{'' if doc['epochs'] == 1 else 's'}, {doc['seeds']} seed(s), "
                 f"{first['examples']:,} examples per run")
    legend = Text("metric: " + ("metric_fn on eval_dataset" if doc["metric"] == "metric" else doc["metric"])
                  + ", mean ± sd over seeds; loss: final training loss; n/a: not finite", style="dim")
    rows = []
    for name, r in runs.items():
        s = r["summary"]
        metric = f"{_num(s['metric_mean'])} ± {_num(s['metric_sd'])}" if s["metric_mean"] is not None else "n/a"
        rows.append((name, metric, _num(s["final_train_loss_mean"]),
                     f"{s['updates']:,}", fmt(s["wall_s_mean"], ",.1f")))
    headers = ("run", "metric", "loss", "updates", "wall s")
    t = Table(title=title, title_justify="left", caption=legend, caption_justify="left")
    for col in headers:
        t.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    if Measurement.get(con, con.options.update_width(10**4), t).maximum <= con.width:
        con.print(t)
    else:  # too wide for the terminal: one block per run, every value on a line of its own
        con.print(title)
        for row in rows:
            con.print(Text(row[0], style="bold"))
            for h, cell in zip(headers[1:], row[1:]):
                con.print(Text(f"  {h}: {cell}"))
        con.print(legend)


def _print_curves(doc: dict, con) -> None:
    """Sparklines of each run's metric and training loss on shared scales; left out when too wide."""
    from rich.measure import Measurement
    from rich.table import Table

    from bsadvisor.runtime.report import mean_curve, sparkline

    runs = doc["runs"]
    metrics = [y for r in runs.values() for y in mean_curve(r, "epoch", "metric")[1]]
    losses = [y for r in runs.values() for y in mean_curve(r, "epoch", "train_loss")[1]]
    points = max(len(mean_curve(r, "epoch", "metric")[0]) for r in runs.values())
    finite = lambda xs: [x for x in xs if x is not None]  # noqa: E731
    lo_m, hi_m = (min(finite(metrics)), max(finite(metrics))) if finite(metrics) else (None, None)
    lo_l, hi_l = (min(finite(losses)), max(finite(losses))) if finite(losses) else (None, None)
    name_w = max(len(n) for n in runs)
    width = max(8, min(24, (con.width - name_w - 10) // 2))  # two curves beside the names fit the width
    curves = Table(title=f"curves: {points} point(s) over {doc['epochs']:.4g} epoch(s), same samples in "
                         "every run", title_justify="left")
    for col in ("run", "metric", "training loss"):
        curves.add_column(col, no_wrap=True)
    for name, r in runs.items():
        curves.add_row(name, sparkline(mean_curve(r, "epoch", "metric")[1], lo_m, hi_m, width),
                       sparkline(mean_curve(r, "epoch", "train_loss")[1], lo_l, hi_l, width))
    if Measurement.get(con, con.options.update_width(10**4), curves).maximum <= con.width:
        con.print(curves)


def _print_noise(doc: dict, con) -> None:
    """The terminal's picture of noise.png: each run's batch against its measured B_simple, a few points each."""
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    from bsadvisor.runtime.report import describe_ci, fmt, noise_rows

    rows = noise_rows(doc, points=5)
    if not rows:
        return
    n = doc.get("dataset_size") or 0
    t = Table(title="noise scale through training (first seed)", title_justify="left",
              caption=Text("B/B_simple ≪ 1: room to grow; ≫ 1: parallelism, not progress", style="dim"),
              caption_justify="left")
    for col in ("run", "epoch", "batch", "B_simple", "90% CI", "B/B_simple"):
        t.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for name, pts in rows.items():
        for p in pts:
            t.add_row(name, f"{p['sample'] / n if n else 0:.2f}", f"{p['batch_size']:,}", fmt(p["shown"], ",.0f"),
                      describe_ci(p), p["ratio"])
    if Measurement.get(con, con.options.update_width(10**4), t).maximum <= con.width:
        con.print(t)
    else:  # too wide: one line per point
        con.print(Text("noise scale through training (first seed)"))
        for name, pts in rows.items():
            for p in pts:
                con.print(Text(f"  {name} epoch {p['sample'] / n if n else 0:.2f}: batch {p['batch_size']:,}, "
                               f"B_simple {fmt(p['shown'], ',.0f')} ({describe_ci(p)})"))


VERDICT_STYLES = {"ACCEPTED": "bold green", "REJECTED": "bold red", "INCONCLUSIVE": "bold yellow",
                  "INDICATIVE": "bold yellow"}
#: validate's exit code for each verdict (2 is bad input, 124 --max-minutes, 130 an interrupt).
EXIT_CODES = {"accepted": 0, "rejected": 1, "inconclusive": 3, "indicative": 3}


def exit_code(doc: dict) -> int:
    """0 accepted, 1 rejected, 3 inconclusive or indicative (one seed: not a decision)."""
    return EXIT_CODES.get(doc["verdict"].get("status"), 1)


def _print_verdict(doc: dict, con) -> None:
    """ACCEPTED, REJECTED or INCONCLUSIVE, the paired difference and its interval, the variants, the savings."""
    from rich.text import Text

    from bsadvisor.runtime.report import status_word, variant_difference_text, verdict_text

    v = doc["verdict"]
    for name, w in (v.get("variants") or {}).items():
        con.print(Text(f"{name}: {status_word(w).lower()}, "
                       + (w["reason"] if w.get("reason") else variant_difference_text(w, v))
                       + " (a variant: it does not decide the exit code)"))
    word = status_word(v)
    line = Text.assemble((word, VERDICT_STYLES[word]), ": " + verdict_text(doc))
    extra = []  # the ratios compare finished runs; a diverged run stopped early
    if not v.get("reason") and v.get("update_ratio"):
        extra.append(_ratio_text(v["update_ratio"], "fewer updates", "more updates"))
    if v.get("wall_ratio") and not v.get("reason"):
        extra.append(_ratio_text(v["wall_ratio"], "less training time", "more training time"))
    if extra:
        line.append("; " + ", ".join(extra))
    con.print(line)


def _ratio_text(ratio: float, fewer: str, more: str) -> str:
    """``3.00× fewer updates`` for original/plan = 3; ``1.16× more training time`` for 0.86 (the plan slower)."""
    return f"{ratio:.2f}× {fewer}" if ratio >= 1 else f"{1 / ratio:.2f}× {more}"


def _warn(text: str) -> None:
    err_console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)


def run_and_report(target, plan, options: ValidateOptions, *, as_json: bool, dist=None, device=None,
                   show: bool = True) -> dict:
    """Train the runs and report them; under torchrun every rank trains, rank 0 alone prints and writes.

    With ``options.out``, rank 0 holds the folder (validate.claim_out: locked, an earlier run's
    files removed with ``overwrite``) from before the first run until the report is written.
    ``show=False`` prints nothing on stdout (the caller reports the document itself).
    """
    import contextlib

    from bsadvisor.runtime.report import write_outputs
    from bsadvisor.runtime.validate import batchnorm_warning, build_runs, checkpoint_names, claim_out, run_validation

    main = dist is None or dist.is_main
    out = options.out
    specs = build_runs(plan, options)
    warnings = [w for w in [batchnorm_warning(target.model)] if w]
    if main:
        for w in warnings:
            _warn(w)
    holding = claim_out(out, resume=options.resume, overwrite=options.overwrite,
                        checkpoints=tuple(checkpoint_names(specs, options.seeds))) if out is not None and main \
        else contextlib.nullcontext()
    with holding:
        with (_progress(options.max_minutes) if main else contextlib.nullcontext()) as progress:
            doc = run_validation(target, specs, options=options, progress=progress, dist=dist, device=device,
                                 warnings=warnings)
        if not main:
            return doc
        plot_warnings = write_outputs(doc, out) if out is not None else []
        for w in plot_warnings:
            _warn(w)
    if as_json:
        emit_json(doc)
    elif show:
        print_results(doc)
        if out is not None:
            console.print(Text(f"wrote {out}/results.json, {out}/report.md"
                               + (f" and {len(doc['plots'])} plots" if doc.get("plots") else
                                  " (no plots: see the warning above)" if plot_warnings else
                                  " (no plots: matplotlib missing; pip install 'bsadvisor[plot]')")))
    return doc


def resume_hint(out: Optional[Path]) -> str:
    """What to say on Ctrl-C: the command that resumes, when --out holds checkpoints."""
    import shlex
    import sys

    from bsadvisor.runtime.validate import earlier_results

    if out is None or not any(p.suffix == ".pt" for p in earlier_results(out)):
        return "interrupted"
    args = sys.argv[1:]
    if args[:1] == ["validate"]:
        rest = [a for a in args[1:] if a not in ("--resume", "--overwrite")]
        cmd = "bsadvisor validate " + shlex.join(rest + ["--resume"])
    else:
        cmd = f"bsadvisor validate ... --out {shlex.quote(str(out))} --resume"
    return f"interrupted; resume with `{cmd}`"


VALIDATE_EPILOG = (
    "Examples:\n\n"
    "  bsadvisor validate builtin:mnist1d-mlp --epochs 10 --schedule \"MultiStepLR(milestones=[3,6,8], gamma=0.2)\" "
    "--seeds 3 --out runs/v1\n\n"
    "  bsadvisor validate train.py:make_target --plan plan.json --variants --max-micro-batch 256 --out runs/v2\n\n"
    "  bsadvisor validate train.py:make_target --plan plan.json --out runs/v2 --resume\n\n"
    "  torchrun --standalone --nproc_per_node=8 -m bsadvisor validate train.py:make_target --plan plan.json "
    "--max-micro-batch 64 --out runs/v3"
)


@app.command(epilog=VALIDATE_EPILOG)
def validate(
    target: str = typer.Argument(..., help="path/to/file.py:function, package.module:function or builtin:NAME"),
    plan: Optional[Path] = typer.Option(None, "--plan", help="plan.json from convert-schedule --out "
                                        "(or give the schedule options below)"),
    schedule: ScheduleOpt = None, epochs: Epochs = None, lr: Lr = None, batch_size: BatchSize = None,
    momentum: Momentum = None, schedule_unit: ScheduleUnit = None, rule: Rule = None,
    max_batch: MaxBatch = None, max_fraction: MaxFraction = None, round_to: RoundTo = None,
    max_stages: MaxStages = None, stage_factor: StageFactor = None, adam_rule: AdamRule = None,
    total_samples: TotalSamples = None, total_steps: TotalSteps = None, seq_len: SeqLen = None,
    growth_factor: GrowthFactor = None, adam_sde: AdamSde = None,
    seeds: int = typer.Option(VALIDATE_DEFAULTS["seeds"], "--seeds", help="seeds per run (data order and RNG; same "
                              "initial weights). One seed gives an INDICATIVE verdict only (exit 3): use 3 or more for a "
                              "verdict (two give a wide interval)"),
    variants: bool = typer.Option(VALIDATE_DEFAULTS["variants"], "--variants", help="also train the hybrid and the increased-LR variant"),
    hybrid_cap: Optional[int] = typer.Option(None, "--hybrid-cap", help="batch cap of the hybrid (default: a quarter of the plan's largest batch)"),
    increase_lr: float = typer.Option(VALIDATE_DEFAULTS["increase_lr"], "--increase-lr", help="LR and batch factor of the increased-LR variant"),
    tolerance: Optional[str] = typer.Option(None, "--tolerance", help="the margin δ: the accepted drop of the metric, "
                                            "in its units (default 0.005) or as a percentage of the original's (1%)"),
    evals: int = typer.Option(VALIDATE_DEFAULTS["evals"], "--evals", help="evaluate every run at this many evenly spaced points (its curve; "
                              "the same samples in every run)"),
    max_micro_batch: Optional[int] = typer.Option(None, "--max-micro-batch", help="accumulate gradients above this batch size (per process under torchrun)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for results.json, report.md, plots and checkpoints"),
    resume: bool = typer.Option(VALIDATE_DEFAULTS["resume"], "--resume", help="continue the run in --out from its checkpoints"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="also checkpoint every N updates "
                                                   "inside an epoch (default: a quarter of an epoch, at least 50)"),
    overwrite: bool = typer.Option(VALIDATE_DEFAULTS["overwrite"], "--overwrite", help="replace the results and checkpoints of an earlier run "
                                   "in --out"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (under torchrun: cpu, cuda or "
                               "auto; each process takes cuda:LOCAL_RANK)"),
    noise_monitor: bool = typer.Option(VALIDATE_DEFAULTS["noise_monitor"], "--noise-monitor/--no-noise-monitor", help="measure B_simple through "
                                       "every run (NoiseMonitor): results.json, report.md and noise.png"),
    monitor_overhead: float = typer.Option(VALIDATE_DEFAULTS["monitor_overhead"], "--monitor-overhead", help="the noise monitor's time budget, a "
                                           "fraction of the training time (its extra gradient draws stay within it)"),
    as_json: bool = typer.Option(False, "--json", help="print the results document (bsadvisor.validation/1.2)"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="stop after this many minutes of wall "
                                                "time (exit 124; the checkpoints in --out are kept: continue with "
                                                "--resume). Default: no limit (a target's code that never returns "
                                                "is then never stopped)"),
) -> None:
    """Train the original schedule and the plan on TARGET and compare them, paired by seed.

    Exit 0 ACCEPTED (the 90% interval of the paired difference lies above −margin),
    1 REJECTED (below it), 3 INCONCLUSIVE (it straddles −margin: the verdict says how many
    seeds give an 80% chance to settle it; add them with --seeds K --resume) or INDICATIVE
    (one seed: never accepted or rejected on its own), 2 bad input, 124 stopped by
    --max-minutes (continue with --resume), 130 interrupted. The interval spends α across
    looks (look k: the paired t interval at α_k = 0.05·6/(π²k²) per side, looks counted
    from the results.json in --out): it stays valid however many times --resume adds seeds
    into the same --out and looks again (docs/concepts.md §13).

    Under torchrun (torchrun --nproc_per_node=K -m bsadvisor validate ...) the runs are
    data parallel: see docs/distributed.md.
    \f
    Long because its signature declares typer's options (35 lines); the body gathers them for one call.
    """
    from bsadvisor.core.validate_options import ValidateOptions

    options = ValidateOptions(
        seeds=seeds, variants=variants, hybrid_cap=hybrid_cap, increase_lr=increase_lr, tolerance=tolerance,
        evals=evals, max_micro_batch=max_micro_batch, checkpoint_every=checkpoint_every, noise_monitor=noise_monitor,
        monitor_overhead=monitor_overhead, out=out, resume=resume, overwrite=overwrite, max_minutes=max_minutes)
    plan_options = dict(schedule=schedule, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                        schedule_unit=schedule_unit, rule=rule, max_batch=max_batch, max_fraction=max_fraction,
                        round_to=round_to, max_stages=max_stages, stage_factor=stage_factor, adam_rule=adam_rule,
                        total_samples=total_samples, total_steps=total_steps, seq_len=seq_len,
                        growth_factor=growth_factor, adam_sde=adam_sde)
    limit = options.max_minutes
    try:
        with time_limit(limit * 60 if limit else None):
            _validate(target, plan, options, plan_options, device=device, as_json=as_json)
    except KeyboardInterrupt:
        raise Interrupted(resume_hint(out)) from None  # cli.main prints it: one line, exit 130
    except OverTime:
        raise Stopped(resume_hint(out).replace("interrupted", f"stopped after --max-minutes {limit:g}", 1),
                      MAX_MINUTES_EXIT) from None


#: validate's exit code when --max-minutes stops it (as GNU timeout's).
MAX_MINUTES_EXIT = 124


def _validate(target: str, plan: Optional[Path], options: ValidateOptions, plan_options: dict, *, device: str,
              as_json: bool) -> None:
    """Check what can be checked before the target is imported, then build the plan and validate it."""
    from bsadvisor.core.plan import Plan
    from bsadvisor.core.validate_options import check_epochs
    from bsadvisor.runtime.validate import check_out

    if plan_options.get("epochs") is not None:
        check_epochs(plan_options["epochs"])
    if plan is not None:
        check_epochs(Plan.load(plan).epochs, f"plan {plan}: epochs")  # a bad plan file fails fast
    check_out(options.out, resume=options.resume, overwrite=options.overwrite)  # before the target is imported
    from bsadvisor.runtime.distributed import init_from_env
    from bsadvisor.runtime.distributed import resolve_device
    from bsadvisor.targets.loading import load_target
    from bsadvisor.runtime.validate import fit_to_devices

    dist = init_from_env(device)
    dev = dist.device if dist.enabled else resolve_device(device)
    if dist.is_main:
        warn_busy_cpu()
    tgt = load_target(target)
    p = _plan_options(tgt, plan_path=plan, **plan_options)
    if dist.enabled:
        p, change = fit_to_devices(p, dist.world_size, options.max_micro_batch)
        if change and dist.is_main:
            err_console.print(f"note: {change}", markup=False, highlight=False, soft_wrap=True)
    doc = run_and_report(tgt, p, options, as_json=as_json, dist=dist, device=dev)
    # Every rank is done before any leaves; cli.main then ends the process without tearing
    # the group down (distributed.exit_job), and an error ends it the same way.
    dist.barrier()
    if exit_code(doc):
        raise typer.Exit(code=exit_code(doc))


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
    from bsadvisor.core.validate_options import ValidateOptions, check_epochs

    options = ValidateOptions(seeds=seeds, variants=variants, out=out, overwrite=overwrite)
    check_epochs(epochs)
    schedule = _paper_schedule(epochs)
    from bsadvisor.runtime.validate import check_out

    check_out(out, overwrite=overwrite)
    say = err_console.print if as_json else console.print
    from bsadvisor.targets.loading import load_target

    warn_busy_cpu()
    say("[bold]1. Target[/]: builtin:mnist1d-mlp — an MLP on MNIST-1D (32 000 training examples), "
        "SGD with LR 0.05, momentum 0.9, batch 32.")
    tgt = load_target("builtin:mnist1d-mlp")
    probe_doc, max_batch = _demo_probe(tgt, skip_probe, say)
    say(f"[bold]3. Convert[/]: the LR schedule {schedule} over {epochs} epochs decays the LR by 5 three "
        "times; Smith et al. (arXiv 1711.00489) instead keep the LR and grow the batch so the noise "
        "temperature g = ε/(1−m)·(N/B − 1) follows the same path.")
    plan = _plan_options(tgt, plan_path=None, schedule=schedule, epochs=epochs, lr=None, batch_size=None,
                         momentum=None, max_batch=max_batch)
    for s in plan.stages:
        start, end = (f"{plan.epoch_of(x):g}" for x in (s.start_sample, s.end_sample))
        say(f"   epochs {start:>3}–{end:<3} batch {s.batch_size:>5}  lr {s.lr:.4g}  "
            f"momentum {s.momentum:g}")
    say(f"   {plan.updates:,} parameter updates instead of {plan.baseline_updates:,}.")
    say(f"[bold]4. Validate[/]: train the original schedule and the plan ({seeds} seed(s)"
        + (", plus the hybrid and the increased-LR variant" if variants else "") + ") and compare test accuracy.")
    doc = run_and_report(tgt, plan, options, as_json=False, show=not as_json)
    if as_json:
        from bsadvisor.core.fileio import json_safe

        emit_json(json_safe({"schema": DEMO_SCHEMA, "target": "builtin:mnist1d-mlp", "probe": probe_doc,
                             "plan": plan.to_dict(), "validation": doc}))
    else:
        console.print("Next: bsadvisor validate your_file.py:make_target --schedule '...' --epochs E --out runs/")
    if exit_code(doc):
        raise typer.Exit(code=exit_code(doc))


DEMO_SCHEMA = "bsadvisor.demo/1"


def _demo_probe(tgt, skip: bool, say) -> tuple[Optional[dict], Optional[int]]:
    """Step 2: measure the gradient noise scale and the largest batch that fits (bsadvisor.probe)."""
    say("[bold]2. Probe[/]: measure the gradient noise scale B_simple (McCandlish et al. 1812.06162) "
        "and the largest batch that fits in memory; the plan will not grow past it.")
    if skip:
        say("   skipped (--skip-probe).")
        return None, None
    try:
        from bsadvisor.measure.probe import probe
    except ImportError:
        say("   [yellow]bsadvisor.probe is not available in this build; skipping (the plan is capped at N/10).[/]")
        return None, None
    result = probe(tgt)
    d: dict[str, Any] = result.to_dict()
    noise, memory = d.get("noise") or {}, d.get("memory") or {}
    b, ci = noise.get("b_simple"), noise.get("ci90")
    if b is not None:
        say(f"   B_simple ≈ {b:,.0f}" + (f" (90% CI {ci[0]:,.0f}–{ci[1]:,.0f})" if ci and None not in ci else ""))
    mb = memory.get("max_batch")
    if mb:
        say(f"   largest batch that fits: {mb:,}")
    return d, (int(mb) if mb else None)
