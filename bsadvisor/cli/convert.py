"""`bsadvisor convert-schedule`: an LR-decay schedule → a batch-growth plan."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import bsadvisor
from bsadvisor.cli.app import app, console, emit_json
from bsadvisor.cli.options import Config, JsonOut, Out, Overwrite, command_options, with_options
from bsadvisor.cli.render import plan_summary
from bsadvisor.core import schema as S
from bsadvisor.core.fileio import PLAN_FILES, check_replace
from bsadvisor.core.options import CONVERSION_OPTIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


def _config_spec() -> dict[str, Any]:
    """What each --config key may hold (bsadvisor.core.schema): the option's declared type and range."""
    return {name: d.spec for name, d in CONVERSION_OPTIONS.items()}


#: Config keys spelled like an option whose parameter has another name (max_micro_batch → micro_batch).
CONFIG_ALIASES = {d.flag[2:].replace("-", "_"): name for name, d in CONVERSION_OPTIONS.items()
                  if d.flag != "--" + name.replace("_", "-")}


def _option(name: str) -> str:
    """The command-line spelling of a parameter: micro_batch → max-micro-batch."""
    return CONVERSION_OPTIONS[name].flag[2:]


def read_config(path: Optional[Path], allowed: set[str]) -> dict[str, Any]:
    """Read a TOML config; keys may use dashes or underscores. Each value is checked against
    its option's type and range (one line naming the file and the key when it is not)."""
    if path is None:
        return {}
    if path.is_dir():
        raise bsadvisor.UserError(f"config file {path} is a folder; give the path of a TOML file")
    if not path.is_file():
        raise bsadvisor.UserError(f"config file {path} not found; check the path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise bsadvisor.UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise bsadvisor.UserError(f"config file {path} is not a text (UTF-8) file; is it the right file?") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise bsadvisor.UserError(f"config file {path} is not valid TOML ({exc})") from None
    except (RecursionError, MemoryError):
        raise bsadvisor.UserError(f"config file {path} is nested too deeply; write each option as key = value") from None
    except ValueError as exc:
        what = "an integer of thousands of digits" if "digits" in str(exc) else str(exc)[:80]
        raise bsadvisor.UserError(f"config file {path} is not valid TOML ({what})") from None
    spec = _config_spec()
    out = {}
    for key, value in doc.items():
        name = key.replace("-", "_")
        name = CONFIG_ALIASES.get(name, name)
        shown = key if len(key) <= 40 else key[:37] + "..."
        if name not in allowed:
            raise bsadvisor.UserError(f"config file {path}: unknown option {shown!r}; use the command's option names "
                            f"({', '.join(sorted(_option(k) for k in allowed))})")
        if name in spec:
            try:
                value = spec[name].check(value, shown)
            except S.Invalid as exc:
                raise bsadvisor.UserError(f"config file {path}: {exc}; fix it there or give --{_option(name)} on the "
                                "command line") from None
        out[name] = value
    return out


def merge_options(cli: dict[str, Any], config: Optional[Path], allowed: set[str]) -> dict[str, Any]:
    """The options given explicitly: command line over config file (defaults are applied later)."""
    merged = read_config(config, allowed)
    merged.update({k: v for k, v in cli.items() if v is not None})
    return merged


def output_plan(plan, as_json: bool, out: Optional[Path]) -> None:
    """Write/print a plan: --out writes atomically, --json prints JSON, else the rich report."""
    if out is not None:
        plan.save(out)
    if as_json:
        emit_json(plan.to_dict())
    else:
        console.print(plan_summary(plan))
        if out is not None:
            console.print(f"plan written to {out}", style="green", markup=False)


EXAMPLES = """
[bold]Examples[/]

  The paper's CIFAR-10 schedule (Smith et al. 2018), capped at N/10:

  [cyan]bsadvisor convert-schedule --lr 0.1 --batch-size 128 --dataset-size 50000 --epochs 200 --momentum 0.9 --schedule "MultiStepLR(milestones=[60,120,160], gamma=0.2)"[/]

  Warmup + cosine, a device that holds 2048, batches in multiples of 64, at most 5 batch sizes:

  [cyan]bsadvisor convert-schedule --lr 0.4 --batch-size 256 --dataset-size 1281167 --epochs 90 --schedule "SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=85)], milestones=[5])" --max-batch 2048 --round-to 64 --max-stages 5[/]

  With a probe's device cap and noise scale, two GPUs, growth capped at 10 × B_simple:

  [cyan]bsadvisor convert-schedule --probe probe.json --world-size 2 --noise-cap 10 --epochs 100 --schedule "MultiStepLR(milestones=[30,60,80], gamma=0.2)"[/]

  Eight GPUs taking at most 32 examples each per step: every batch splits evenly into 8 × k × μ (μ ≤ 32):

  [cyan]bsadvisor convert-schedule --probe probe.json --world-size 8 --max-micro-batch 32 --epochs 90 --schedule "MultiStepLR(milestones=[30,60,80], gamma=0.1)"[/]

  A language model's per-step warmup + cosine over one pass (AdamW, square-root rule), 2,048-token samples:

  [cyan]bsadvisor convert-schedule --lr 6e-4 --batch-size 500 --dataset-size 10000000 --epochs 1 --optimizer adamw --schedule-unit step --seq-len 2048 --schedule "SequentialLR([LinearLR(start_factor=0.01, total_iters=2000), CosineAnnealingLR(T_max=18000, eta_min=6e-5)], milestones=[2000])"[/]

  The same as a Megatron/OLMo-style ramp: every batch twice the previous one, at most 4,096 per step:

  [cyan]bsadvisor convert-schedule ... --growth-factor 2 --max-batch 4096[/]

  From a CSV table and a config file, saved for `bsadvisor validate --plan`:

  [cyan]bsadvisor convert-schedule --config run.toml --schedule lr.csv --out plan.json[/]
"""


@app.command("convert-schedule", epilog=EXAMPLES)
@with_options(command_options())
def convert_schedule_cmd(options: dict, config: Config = None, json_: JsonOut = False, out: Out = None,
                         overwrite: Overwrite = False) -> None:
    """Turn an LR-decay schedule into a batch-growth plan with the same noise temperature.

    Keeps g = ε/(1−m)·(N/B − 1) on the original trajectory by growing B instead of decaying ε,
    up to the cap (device, N·max-fraction); past the cap the LR carries the rest (hybrid).
    """
    if out is not None:
        check_replace(out, PLAN_FILES, overwrite)
    opts = merge_options(options, config, set(CONVERSION_OPTIONS))
    plan = bsadvisor.recommend(opts)  # the conversion loads here: `bsadvisor --help` does not
    output_plan(plan, json_, out)
