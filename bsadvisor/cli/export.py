"""`bsadvisor export`: a plan for other tools (the formats are bsadvisor.core.exports)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text
from typing_extensions import Annotated

import bsadvisor
from bsadvisor.cli.app import app, emit_json, err_console
from bsadvisor.core.exports import EXPORT_FORMATS, EXPORT_SCHEMA, check_format, check_megatron_version, export
from bsadvisor.core.fileio import check_replace, write_atomic

EXPORT_EXAMPLES = """
[bold]Examples[/]

  Megatron-Core 0.18 or later: --step-batch-size-schedule (the plan's batch at every update, in tokens with --seq-length) with the LR flags closest to the plan's and their temperature error, or one line saying why they are too far:

  [cyan]bsadvisor export plan.json --format megatron[/]

  Megatron-Core 0.17 or older: the --rampup-batch-size flags of the linear ramp closest to the plan:

  [cyan]bsadvisor export plan.json --format megatron --megatron-version 0.17[/]

  MaxText (its batch ramp and LR schedule, per device for the plan's --world-size) and Levanter (train_batch_size as a step schedule, and its LR), each with its temperature error, or one line saying why it is too far:

  [cyan]bsadvisor export plan.json --format maxtext[/]

  [cyan]bsadvisor export plan.json --format levanter[/]

  OLMo-core: a Python snippet that builds its BatchSizeSchedulerCallback in tokens (a plan made with --seq-len, an Adam-family optimizer and --growth-factor) and PlanLR, an OLMo-core scheduler that trains the plan's LR in place of OLMo-core's own square-root scaling (it reads plan.json):

  [cyan]bsadvisor export plan.json --format olmo[/]

  One row per stage: start_sample,end_sample,batch_size,lr_scale (the LR as a multiple of the original schedule),lr,momentum,phase:

  [cyan]bsadvisor export plan.json --format csv --out plan.csv[/]

  As JSON, with what the format cannot hold:

  [cyan]bsadvisor export plan.json --format megatron --json[/]

  Lightning needs no export: the FollowPlan callback (bsadvisor.integrations.lightning) reads plan.json itself (docs/integration.md).
"""


@app.command("export", epilog=EXPORT_EXAMPLES)
def export_cmd(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by convert-schedule/advise --out")],
    format_: Annotated[str, typer.Option("--format", help=" | ".join(EXPORT_FORMATS))] = "csv",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here (atomically) instead of printing.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON document: the exported text, its rows and "
                                                       "notes on what the format cannot hold.")] = False,
    megatron_version: Annotated[str, typer.Option("--megatron-version", help="The Megatron-Core release: 0.18 or "
                                                  "later reads --step-batch-size-schedule, 0.17 or older the "
                                                  "linear --rampup-batch-size.")] = "0.18",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file (an export has "
                                                                "no schema to recognise it by).")] = False,
) -> None:
    """Export a plan for the frameworks people already use. What the format cannot hold (e.g. the LR in
    megatron) is said in a note on stderr."""
    check_format(format_)  # before the files: a typo fails first
    check_megatron_version(megatron_version)
    plan = bsadvisor.Plan.load(plan_file)  # a bad plan is named first
    if out is not None:
        check_replace(out, (), overwrite)  # never the input plan, nor any other file, without --overwrite
    text, rows, notes = export(plan, format_, megatron_version, str(plan_file))
    if out is not None:
        write_atomic(out, text)
    if json_:
        emit_json({"schema": EXPORT_SCHEMA, "format": format_, "plan_file": str(plan_file),
                   "out": None if out is None else str(out), "rows": rows, "text": text, "notes": notes})
        return
    if out is None:
        typer.echo(text, nl=False)
    for note in notes:
        err_console.print(Text("note: " + note), soft_wrap=True, highlight=False)
