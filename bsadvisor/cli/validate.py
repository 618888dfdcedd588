"""`bsadvisor validate`: train the plan next to the original schedule, paired by seed.

Parses the options, builds the plan's source (a --plan file, or the conversion options completed
from the target), calls :func:`bsadvisor.validate` (which also writes --out through
``Validation.write``) and prints the result (cli/render.py). Torch loads only when the target
does (the torchrun plumbing is imported in the command's body).
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

import bsadvisor
from bsadvisor.cli.options import command_options, with_options
from bsadvisor.cli.app import (Interrupted, OverTime, Stopped, app, console, emit_json, err_console, time_limit,
                               warn_busy_cpu)
from bsadvisor.cli.render import print_results
from bsadvisor.core.declared import declarations
from bsadvisor.core.validate_options import check_epochs
from bsadvisor.runtime.recipe import options_for_target
from bsadvisor.runtime.validate import check_out, earlier_results


def _progress(max_minutes: Optional[float] = None):
    """One bar per (run, seed) on stderr; none when stderr is not a terminal (logs stay clean).

    validate has no time limit of its own (training takes as long as it takes, and a user's code that
    never returns is not stopped) unless --max-minutes gives one: each bar says which it is.
    """
    if not err_console.is_terminal:
        return contextlib.nullcontext()
    limit = (f"limit {max_minutes:g} min" if max_minutes else "no time limit: --max-minutes M bounds it")
    return Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("examples"), TimeElapsedColumn(), TextColumn(limit, style="dim"),
                    console=err_console, transient=False)


#: validate's exit code for each verdict (2 is bad input, 124 --max-minutes, 130 an interrupt).
EXIT_CODES = {"accepted": 0, "rejected": 1, "inconclusive": 3, "indicative": 3}


def exit_code(validation: bsadvisor.Validation) -> int:
    """0 accepted, 1 rejected, 3 inconclusive or indicative (one seed: not a decision)."""
    return EXIT_CODES.get(validation.status, 1)


def _say(line: str) -> None:
    """A warning or note of the library's, on stderr as it comes (before the runs)."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def run_and_report(target, plan, options: bsadvisor.ValidateOptions, *, as_json: bool, dist=None, device=None,
                   show: bool = True) -> bsadvisor.Validation:
    """:func:`bsadvisor.validate` with progress bars,
    then its report; under torchrun every rank trains and rank 0 alone prints (the library writes --out
    from rank 0 only). ``show=False`` prints nothing on stdout (the caller reports the Validation itself)."""
    main = dist is None or dist.is_main
    with (_progress(options.max_minutes) if main else contextlib.nullcontext()) as progress:
        validation = bsadvisor.validate(target, plan, options, progress=progress, dist=dist, device=device,
                                        on_message=_say if main else None)
    if not main:
        return validation
    out = options.out
    for w in validation.write_warnings:
        _say(f"warning: {w}")
    if as_json:
        emit_json(validation.to_dict())
    elif show:
        print_results(validation, console)
        if out is not None:
            console.print(Text(f"wrote {out}/results.json, {out}/report.md"
                               + (f" and {len(validation.plots)} plots" if validation.plots else
                                  " (no plots: see the warning above)" if validation.write_warnings else
                                  " (no plots: matplotlib missing; pip install 'bsadvisor[plot]')")))
    return validation


def resume_hint(out: Optional[Path]) -> str:
    """What to say on Ctrl-C: the command that resumes, when --out holds checkpoints."""
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
@with_options(command_options("validate", first=("schedule", "epochs")), into="plan_options")
@with_options(tuple(declarations(bsadvisor.ValidateOptions)), of=bsadvisor.ValidateOptions)
def validate(
    target: str = typer.Argument(..., help="path/to/file.py:function, package.module:function or builtin:NAME"),
    plan: Optional[Path] = typer.Option(None, "--plan", help="plan.json from convert-schedule --out "
                                        "(or give the schedule options below)"),
    plan_options: Optional[dict] = None,  # the conversion options (core.options), declared once: with_options
    options: Optional[bsadvisor.ValidateOptions] = None,  # validate's own options (core.validate_options): with_options
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (under torchrun: cpu, cuda or "
                               "auto; each process takes cuda:LOCAL_RANK)"),
    as_json: bool = typer.Option(False, "--json", help="print the results document (bsadvisor.validation/1.2)"),
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
    """
    out, limit = options.out, options.max_minutes
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


def plan_source(target, plan: Optional[bsadvisor.Plan], plan_options: dict, note: Callable[[str], None]):
    """What :func:`bsadvisor.validate` makes the plan from: the --plan file's Plan, or the conversion options
    completed from the target (its recipe's schedule when none is given: ``note`` says so)."""
    if plan is not None:
        return plan
    prepared = options_for_target(target, plan_options)
    if prepared.note:
        note(prepared.note)
    return prepared


def _validate(target: str, plan: Optional[Path], options: bsadvisor.ValidateOptions, plan_options: dict, *, device: str,
              as_json: bool) -> None:
    """Check what can be checked before the target is imported, then validate the plan on it."""
    if plan_options.get("epochs") is not None:
        check_epochs(plan_options["epochs"])
    if plan is not None and plan_options.get("schedule") is not None:
        raise bsadvisor.UserError("give either --plan FILE or --schedule/--epochs, not both")
    loaded = bsadvisor.Plan.load(plan) if plan is not None else None  # a bad plan fails before the target loads
    check_out(options.out, resume=options.resume, overwrite=options.overwrite)
    from bsadvisor.runtime.distributed import resolve_device  # torch: after the checks

    dist = bsadvisor.distributed.init_from_env(device)
    dev = dist.device if dist.enabled else resolve_device(device)
    if dist.is_main:
        warn_busy_cpu()
    tgt = bsadvisor.load_target(target)
    source = plan_source(tgt, loaded, plan_options, lambda text: err_console.print(Text(text), soft_wrap=True))
    validation = run_and_report(tgt, source, options, as_json=as_json, dist=dist, device=dev)
    # Every rank is done before any leaves; cli.main then ends the process without tearing
    # the group down (distributed.exit_job), and an error ends it the same way.
    dist.barrier()
    if exit_code(validation):
        raise typer.Exit(code=exit_code(validation))
