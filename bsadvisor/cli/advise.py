"""`bsadvisor advise`: probe + convert in one go, and the commands that come next."""
from __future__ import annotations

import contextlib
import math
import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text
from typing_extensions import Annotated

import bsadvisor
from bsadvisor.cli.app import app, console, emit_json, err_console, probe_time_limit
from bsadvisor.cli.options import Overwrite, command_options, with_options
from bsadvisor.cli.render import FitTable, fmt_seconds, plan_summary, time_range
from bsadvisor.core import checks
from bsadvisor.core.defaults import PROBE_DEFAULTS
from bsadvisor.core.fileio import PLAN_FILES, PROBE_FILES, check_replace
from bsadvisor.core.predict import TUNED_LR_EVIDENCE

ADVISE_EXAMPLES = """
[bold]Examples[/]

  Measure the built-in MNIST-1D MLP and convert a paper-style schedule:

  [cyan]bsadvisor advise builtin:mnist1d-mlp --epochs 10 --schedule "MultiStepLR(milestones=[3,6,8], gamma=0.2)" --out plan.json[/]

  Your own model on two GPUs, growth capped at 10 × the noise scale:

  [cyan]bsadvisor advise train.py:make_target --device cuda --world-size 2 --noise-cap 10 --epochs 90 --schedule "CosineAnnealingLR(T_max=90)"[/]

  A target that records its own recipe (the built-in language model): no --schedule or --epochs needed:

  [cyan]bsadvisor advise builtin:charlm --growth-factor 2[/]

  An AdamW recipe whose LR you swept to its best (there growth held on some models, not all: advise keeps the batch):

  [cyan]bsadvisor advise train.py:make_target --tuned-lr[/]
"""


# The convert-schedule options advise takes (declared in core.options), in its --help's order, which a printed
# command follows too.
CONVERT_OPTIONS = command_options("advise", first=("schedule", "epochs"))


@app.command("advise", epilog=ADVISE_EXAMPLES, short_help="Probe TARGET and recommend a batch-growth plan that fits "
             "the measured device.")
@with_options(CONVERT_OPTIONS)
def advise_cmd(
    target: Annotated[str, typer.Argument(help="path/to/file.py:function, package.module:function or builtin:NAME")],
    options: dict,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N | auto.")] = PROBE_DEFAULTS["device"],
    budget_seconds: Annotated[float, typer.Option(
        "--budget-seconds", help="Time budget of the probe.")] = PROBE_DEFAULTS["budget_seconds"],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the probe's sampling.")] = PROBE_DEFAULTS["seed"],
    probe_out: Annotated[Optional[Path], typer.Option("--probe-out", help="Also write the probe JSON here.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON document holding the probe and the plan.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the plan JSON here (atomically).")] = None,
    tuned_lr: Annotated[bool, typer.Option("--tuned-lr", help=(
        "Your LR is the best of a sweep for this schedule at this batch. For Adam/AdamW advise then recommends the "
        f"original schedule: {TUNED_LR_EVIDENCE} (docs/results.md). For SGD it changes nothing."))] = False,
    overwrite: Overwrite = False,
) -> None:
    """Probe TARGET, convert its LR schedule into a batch-growth plan that fits the measured device, and
    print the recommendation: stages, updates, examples and predicted time, cap and noise scale.

    Defaults: the target's own recipe when it records one; the exact rule;
    for Adam/AdamW the linear rule with the batch grown to at most 2 × B0 in
    steps of 5 % (--stage-factor 1.05), the LR carrying the rest of the decay
    (--max-growth; 1.40-1.44× fewer updates, accepted at the recipe's LR on
    all nine AdamW models measured; at a tuned LR rejected on two of eight and
    the full conversion lost about 0.012 on the language models: docs/results.md,
    "Growth to 2 × B0 for Adam"); the
    batch capped by the device (the probe's largest batch) and, over several
    epochs, at a tenth of the data set; no noise cap. The noise scale is reported, not used: it
    caps and vetoes nothing unless --noise-cap K is given, because on the
    benchmark models it did not predict whether a plan held (docs/results.md).
    No larger start by default: --increase-lr K (batch and LR × K from the
    first update, then the converted decay) held on two of the four AdamW
    benchmark models at K = 2 and lost on two (docs/results.md, "A
    noise-bounded start").
    Only a validation run settles a plan: bsadvisor validate --plan.
    \f
    Long because its signature declares typer's options; the body is the steps in order."""
    probe_opts = {"device": device, "budget_seconds": budget_seconds, "seed": seed}
    trace = check_advise_options(options, probe_opts, out, probe_out, overwrite)  # before anything slow: no torch yet

    from bsadvisor.runtime.recipe import options_for_target

    # one limit for the target's import and the probe: a TARGET that never returns is stopped too
    with _progress(quiet=json_) as progress, probe_time_limit(budget_seconds):
        progress("loading the target", 0.0)
        tgt = bsadvisor.load_target(target)
        prepared = options_for_target(tgt, {**options, "noise_trace": trace})
        if prepared.note:
            err_console.print(prepared.note, soft_wrap=True, markup=False, highlight=False)
        # the next commands printed below repeat the recipe's schedule and length
        options.update({k: prepared.options[k] for k in ("schedule", "epochs", "schedule_unit", "seq_len")})
        rec = bsadvisor.advise(tgt, prepared, probe_out=probe_out, progress=progress, tuned_lr=tuned_lr, **probe_opts)
    if out is not None:
        rec.plan.save(out)
    if json_:
        emit_json(rec.to_dict())
        return
    if rec.keep_batch is not None and rec.keep_batch.reason == "tuned_lr":
        _print_tuned_keep(target, rec.plan, rec.keep_batch, out)
        return
    if rec.keep_batch is not None:
        _print_keep(target, rec.probe, rec.plan, rec.keep_batch, out, options)
        return
    _print_advice(target, rec.probe, rec.plan, out, probe_out, options, probe_opts, rec.start_advice)


def _print_original_recommended(plan, out) -> None:
    """The recommendation when the batch is kept: the original schedule, and where --out wrote it."""
    console.print(Text(f"Recommended: your original schedule, unchanged ({plan.updates:,} updates)."
                       + (f" Wrote it to {out} as the plan to follow." if out is not None else ""), style="bold"),
                  soft_wrap=True)


def _print_keep(target: str, result, plan, keep, out, options: dict) -> None:
    """Keep the batch: B0 is already past the asked --noise-cap multiple of the noise scale, so no growth is
    recommended; say why and what next."""
    from bsadvisor.core.noise import describe_interval

    noise = result.noise
    console.print(Text.assemble(
        ("Keep the batch: ", "bold"),
        f"your batch {keep.b0:,} is already {keep.ratio:.3g}× the noise scale where the LR decay begins "
        f"(B_noise ≈ {keep.b_noise:,.3g} at sample {keep.sample:,}; the probe measured B_simple ≈ "
        f"{describe_interval(noise.b_simple, noise.ci90, noise.ci_kind)}). Each example keeps only "
        f"{keep.efficiency_at_b0:.0%} of its value at this batch, and a bigger one costs examples, not only "
        f"updates (McCandlish et al.): --noise-cap {keep.noise_cap:g} rules out growth past "
        f"{keep.noise_cap:g}× the noise scale."),
        soft_wrap=True)
    _print_original_recommended(plan, out)
    console.print(Text("The noise scale usually grows as training goes on: record it through a run with "
                       f"`bsadvisor validate {target} ... --out runs/v`, then re-plan with "
                       "`--noise-trace runs/v/results.json`.", style="dim"), soft_wrap=True)


def _print_tuned_keep(target: str, plan, keep, out) -> None:
    """Keep the batch: an Adam-family run whose LR the user declared tuned (--tuned-lr); say why and what next."""
    console.print(Text.assemble(
        ("Keep the batch: ", "bold"),
        f"your LR is tuned (--tuned-lr) and the optimizer is {keep.optimizer}: {keep.evidence} (docs/results.md). "
        f"The plan would train {keep.plan_updates:,} updates instead of {keep.original_updates:,} "
        f"({keep.original_updates / keep.plan_updates:.2f}× fewer)."), soft_wrap=True)
    _print_original_recommended(plan, out)
    console.print(Text(f"To try the plan on your model anyway: run this command again without --tuned-lr, with "
                       f"--out plan.json; then `bsadvisor validate {target} --plan plan.json --seeds 3` trains both "
                       "with the same seeds and says whether it holds.", style="dim"), soft_wrap=True)


def check_advise_options(options: dict, probe_opts: dict, out: Optional[Path], probe_out: Optional[Path],
                         overwrite: bool = False):
    """The checks that need neither torch nor the target, so a typo fails at once; the --noise-trace read
    (a core.predict.Trace, or None)."""
    # --schedule and --epochs may come from the target's recipe (checked once it is loaded); each error names
    # the parameter, which the CLI spells as its flag
    checks.optional(checks.number, "epochs", options["epochs"], low=0, low_open=True)
    checks.optional(checks.positive_int, "seq_len", options["seq_len"])
    checks.optional(checks.positive, "lr", options["lr"])
    checks.optional(checks.positive_int, "batch_size", options["batch_size"])
    checks.optional(checks.number, "momentum", options["momentum"], low=0, high=1, high_open=True)
    for name in ("max_batch", "round_to", "max_stages", "world_size", "grad_accum"):
        checks.optional(checks.positive_int, name, options[name])
    checks.optional(checks.number, "noise_cap", options["noise_cap"], low=0)
    for name in ("max_fraction", "stage_factor", "increase_lr"):
        checks.optional(checks.positive, name, options[name])
    bsadvisor.ProbeOptions(**probe_opts)  # the probe's own checks, before the target loads
    if options["schedule"] is not None:
        bsadvisor.parse_schedule(options["schedule"])  # the parser loads here: not for `bsadvisor --help`
    trace = None
    if options["noise_trace"] is not None:
        from bsadvisor.core.predict import read_trace

        trace = read_trace(options["noise_trace"])  # a bad trace fails before the probe; read only here
    if out is not None:
        check_replace(out, PLAN_FILES, overwrite, "--out")
    if probe_out is not None:
        check_replace(probe_out, PROBE_FILES, overwrite, "--probe-out")
        if out is not None and Path(out).resolve() == Path(probe_out).resolve():
            raise bsadvisor.UserError(f"--out and --probe-out are both {out}; give them different files")
    return trace


@contextlib.contextmanager
def _progress(quiet: bool):
    """A ``progress(phase, fraction)`` callback drawing a rich progress bar on stderr (none when quiet
    or when stderr is not a terminal, so a log gets no bar remnants)."""
    if quiet or not err_console.is_terminal:
        yield lambda phase, frac: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("probe: {task.description}", markup=False), BarColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)
        yield lambda phase, frac: bar.update(task, description=phase, completed=frac)


def _print_start_advice(advice, plan) -> None:
    """B0 well below the noise scale: say so, with the §5.2 variants that start at a larger batch."""
    if advice is None or not advice.variants:
        return
    console.print(Text(
        f"Your batch {advice.b0:,} is well below the noise scale at the start (B_noise ≈ "
        f"{advice.b_noise_at_start:,.0f}; each example keeps {advice.efficiency_at_b0:.0%} of its value): "
        "a larger starting batch with a proportionally larger LR keeps the temperature and saves updates "
        "(Smith et al. §5.2; validate before adopting, large factors cost some accuracy):", style="bold"))
    rows = [[f"--increase-lr {v.increase_lr:.3g}", f"{v.start_batch:,}", f"{v.updates:,}",
             f"÷{plan.updates / v.updates:.2f}", f"{v.efficiency_at_start:.2f}",
             fmt_seconds(v.predicted_seconds) if v.predicted_seconds is not None else ""]
            for v in advice.variants]
    console.print(FitTable("Starting larger", [("variant", "left"), ("start batch", "right"), ("updates", "right"),
                                               ("vs plan", "right"), ("eff.", "right"), ("predicted", "right")],
                           rows, caption=["vs plan: the plan's updates divided by the variant's; eff.: the share of "
                                          "each example's value at the start, 1/(1 + B/B_noise)"]))


def _arg(value) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def command_line(*words: str, options: dict) -> str:
    """A shell command: ``words`` then ``--option value`` for every option that is not None (a flag alone when
    true: ``--adam-sde``, nothing when false), quoted."""
    argv = list(words)
    for name, value in options.items():
        if value is None or value is False:
            continue
        argv += ["--" + name.replace("_", "-")] + ([] if value is True else [_arg(value)])
    return " ".join(shlex.quote(a) for a in argv)


def next_commands(target: str, plan_file: Path, out, probe_out, options: dict, probe_opts: dict) -> list[tuple]:
    """(what, command) pairs: the full commands that save, validate and re-plan this plan."""
    probe_given = {k: v for k, v in probe_opts.items() if v != PROBE_DEFAULTS[k]}
    cmds = []
    if out is None:
        cmds.append(("save the plan", command_line("bsadvisor", "advise", target, options={
            **options, **probe_given, "out": plan_file})))
    cmds.append(("validate it", command_line("bsadvisor", "validate", target, options={
        "plan": plan_file, "device": probe_given.get("device")})))
    if probe_out is not None:
        cmds.append(("re-plan offline", command_line("bsadvisor", "convert-schedule", options={
            "probe": probe_out, **options})))
    else:
        cmds.append(("re-plan offline", "add --probe-out probe.json to keep the measurement, then "
                                        "bsadvisor convert-schedule --probe probe.json ..."))
    cmds.append(("in training", f"BatchSizeScheduler(Plan.load({str(plan_file)!r}), optimizer) "
                                "(see docs/integration.md)"))
    return cmds


def _print_advice(target, result, plan, out, probe_out, options: dict, probe_opts: dict,
                  advice: Optional[dict] = None) -> None:
    from bsadvisor.core.noise import describe_interval

    noise, mem = result.noise, result.memory
    console.print(Text.assemble(
        ("Measured on ", "bold"), (target, "bold"),
        f" ({result.settings.device}): noise scale B_simple ≈ "
        f"{describe_interval(noise.b_simple, noise.ci90, noise.ci_kind)}, "
        f"device cap {mem.max_batch:,} per device → plan cap {plan.cap.get('batch_size'):,} "
        f"({plan.cap.get('limited_by')})"))
    for w in getattr(result, "warnings", None) or []:
        console.print(Text("warning: probe: " + str(w), style="yellow"))
    console.print(plan_summary(plan))
    pred = plan.probe["predicted"]
    n, e = plan.dataset_size, plan.epochs
    speed = pred["baseline_predicted_seconds"] / pred["predicted_seconds"] if pred["predicted_seconds"] else math.nan
    console.print(FitTable(
        "Original schedule vs plan",
        [("", "left"), ("updates", "right"), ("examples", "right"), ("predicted time", "right")],
        [["original (LR decay)", f"{plan.baseline_updates:,}", f"{n * e:,}", time_range(pred, "baseline_")],
         ["plan (batch growth)", f"{plan.updates:,}", f"{n * e:,}", time_range(pred)],
         ["ratio", f"{plan.baseline_updates / plan.updates:.2f}×", "1×", f"{speed:.2f}×"]]))
    _print_start_advice(advice, plan)
    console.print(Text("Next", style="bold"))
    for what, cmd in next_commands(target, out or Path("plan.json"), out, probe_out, options, probe_opts):
        console.print(Text.assemble(f"  {what + ':':<17}", (cmd, "cyan")), soft_wrap=True)
