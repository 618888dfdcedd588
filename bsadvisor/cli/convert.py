"""`bsadvisor convert-schedule`: an LR-decay schedule → a batch-growth plan."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from bsadvisor.cli.app import app, console, emit_json
from bsadvisor.core.errors import UserError

# Defaults live here, not in the signatures, so a TOML config can fill what the command line left out.
DEFAULTS: dict[str, Any] = {
    "lr": None, "batch_size": None, "dataset_size": None, "epochs": None, "momentum": 0.0, "schedule": None,
    "schedule_unit": "epoch", "optimizer": "sgd", "rule": "exact", "max_batch": None, "max_fraction": 0.1,
    "round_to": 1, "max_stages": None, "stage_factor": None, "increase_lr": None, "momentum_to": None,
    "adam_rule": "sqrt",
}

PROBE_OPTIONS = {"probe", "world_size", "grad_accum", "noise_cap", "micro_batch"}

# Shared option declarations (validate reuses them).
Lr = Annotated[Optional[float], typer.Option("--lr", help="Base LR ε0 of the schedule (a CSV table gives its own).", show_default=False)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size B0 the schedule was tuned at.", show_default=False)]
DatasetSize = Annotated[Optional[int], typer.Option("--dataset-size", help="Training-set size N.", show_default=False)]
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Training length E in epochs.", show_default=False)]
Momentum = Annotated[Optional[float], typer.Option("--momentum", help="SGD momentum m.  \\[default: 0]", show_default=False)]
ScheduleOpt = Annotated[Optional[str], typer.Option(
    "--schedule", help="PyTorch scheduler expression, e.g. 'MultiStepLR(milestones=[60,120,160], gamma=0.2)', "
                       "or a CSV table epoch,lr[,momentum].", show_default=False)]
ScheduleUnit = Annotated[Optional[str], typer.Option(
    "--schedule-unit", help="epoch: the scheduler steps once an epoch; step: once an iteration "
                            "(read with ceil(N/B0) steps an epoch).  \\[default: epoch]", show_default=False)]
Optimizer = Annotated[Optional[str], typer.Option("--optimizer", help="sgd | nesterov | adam | adamw.  \\[default: sgd]", show_default=False)]
Rule = Annotated[Optional[str], typer.Option(
    "--rule", help="exact: B = N/(1+(N/B0−1)ρ); proportional: B = B0/ρ (the paper's).  \\[default: exact]", show_default=False)]
MaxBatch = Annotated[Optional[int], typer.Option(
    "--max-batch", help="Device cap: the largest batch that fits (× devices × accumulation).  \\[default: none]", show_default=False)]
MaxFraction = Annotated[Optional[float], typer.Option(
    "--max-fraction", help="Never grow past this fraction of N (the paper stopped near N/10).  \\[default: 0.1]", show_default=False)]
RoundTo = Annotated[Optional[int], typer.Option("--round-to", help="Round batches to multiples of this.  \\[default: 1]", show_default=False)]
MaxStages = Annotated[Optional[int], typer.Option(
    "--max-stages", help="At most this many distinct batch sizes.  \\[default: no limit]", show_default=False)]
StageFactor = Annotated[Optional[float], typer.Option(
    "--stage-factor", help="New batch only when the target grew by this factor (the LR carries the rest). "
                           "\\[default: 1 for step schedules, 2 for smooth ones]", show_default=False)]
IncreaseLr = Annotated[Optional[float], typer.Option(
    "--increase-lr", help="Paper §5.2 variant: start at K·ε0 and the batch that keeps g0 (K× fewer updates).", show_default=False)]
MomentumTo = Annotated[Optional[float], typer.Option(
    "--momentum-to", help="Paper §5.2 variant: train at momentum M, batch × (1−m)/(1−M).", show_default=False)]
AdamRule = Annotated[Optional[str], typer.Option(
    "--adam-rule", help="Adam family: sqrt (η ∝ √B, Malladi et al.) or linear (Smith et al.).  \\[default: sqrt]", show_default=False)]
Config = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML file with any of these options (keys as option names, e.g. batch-size = 128); "
                     "the command line wins.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the plan as JSON (schema bsadvisor.plan/1).")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Write the plan JSON to this file (atomically).", show_default=False)]
ProbeOpt = Annotated[Optional[Path], typer.Option(
    "--probe", help="probe.json from `bsadvisor probe --out`: supplies N, B0, lr, momentum, the device cap "
                    "(max_batch × world size × accumulation) and per-stage predicted time and efficiency.", show_default=False)]
WorldSize = Annotated[Optional[int], typer.Option("--world-size", help="Devices training together.  \\[default: 1]", show_default=False)]
GradAccum = Annotated[Optional[int], typer.Option(
    "--grad-accum", help="Gradient-accumulation steps allowed per update.  \\[default: 1]", show_default=False)]
MicroBatch = Annotated[Optional[int], typer.Option(
    "--max-micro-batch", help="Per-device micro-batch limit: with --world-size or --grad-accum, every batch above "
                              "world size × this is world size × k steps × an equal micro-batch.  \\[default: the "
                              "probe's max batch]", show_default=False)]
NoiseCap = Annotated[Optional[float], typer.Option(
    "--noise-cap", help="Cap the batch at K × the measured noise scale B_simple (needs --probe; 10 is a "
                        "sensible K).  \\[default: off, growth past 10× is flagged]", show_default=False)]


def _config_spec() -> dict[str, Any]:
    """What each --config key may hold (bsadvisor.core.schema): the option's type and range."""
    from bsadvisor.core import schema as S
    from bsadvisor.core.plan import MAX_EPOCHS
    from bsadvisor.core.schedules import MAX_SCHEDULE_CHARS
    from bsadvisor.core.temperature import ADAM_FAMILY, ADAM_RULES, RULES, SGD_FAMILY

    count, fraction = S.Int(low=1), S.Num(low=0, high=1, high_open=True)
    return {
        "lr": S.Num(low=0, low_open=True), "batch_size": count, "dataset_size": count,
        "epochs": S.Int(low=1, high=MAX_EPOCHS), "momentum": fraction,
        "schedule": S.Str(max_len=MAX_SCHEDULE_CHARS), "schedule_unit": S.Str(choices=("epoch", "step")),
        "optimizer": S.Str(choices=SGD_FAMILY + ADAM_FAMILY), "rule": S.Str(choices=RULES),
        "adam_rule": S.Str(choices=ADAM_RULES), "max_batch": count,
        "max_fraction": S.Num(low=0, high=1, low_open=True), "round_to": count, "max_stages": count,
        "stage_factor": S.Num(low=1), "increase_lr": S.Num(low=1), "momentum_to": fraction,
        "probe": S.Str(max_len=4096), "world_size": count, "grad_accum": count,
        "noise_cap": S.Num(low=0, low_open=True), "micro_batch": count,
    }


#: Config keys spelled like an option whose parameter has another name.
CONFIG_ALIASES = {"max_micro_batch": "micro_batch"}
_OPTION_NAMES = {v: k for k, v in CONFIG_ALIASES.items()}


def _option(name: str) -> str:
    """The command-line spelling of a parameter: micro_batch → max-micro-batch."""
    return _OPTION_NAMES.get(name, name).replace("_", "-")


def read_config(path: Optional[Path], allowed: set[str]) -> dict[str, Any]:
    """Read a TOML config; keys may use dashes or underscores. Each value is checked against
    its option's type and range (one line naming the file and the key when it is not)."""
    if path is None:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from bsadvisor.core import schema as S

    if path.is_dir():
        raise UserError(f"config file {path} is a folder; give the path of a TOML file")
    if not path.is_file():
        raise UserError(f"config file {path} not found; check the path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text (UTF-8) file; is it the right file?") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML ({exc})") from None
    except (RecursionError, MemoryError):
        raise UserError(f"config file {path} is nested too deeply; write each option as key = value") from None
    except ValueError as exc:
        what = "an integer of thousands of digits" if "digits" in str(exc) else str(exc)[:80]
        raise UserError(f"config file {path} is not valid TOML ({what})") from None
    spec = _config_spec()
    out = {}
    for key, value in doc.items():
        name = key.replace("-", "_")
        name = CONFIG_ALIASES.get(name, name)
        shown = key if len(key) <= 40 else key[:37] + "..."
        if name not in allowed:
            raise UserError(f"config file {path}: unknown option {shown!r}; use the command's option names "
                            f"({', '.join(sorted(_option(k) for k in allowed))})")
        if name in spec:
            try:
                value = spec[name].check(value, shown)
            except S.Invalid as exc:
                raise UserError(f"config file {path}: {exc}; fix it there or give --{_option(name)} on the "
                                "command line") from None
        out[name] = value
    return out


def merge_options(cli: dict[str, Any], config: Optional[Path], allowed: set[str]) -> dict[str, Any]:
    """The options given explicitly: command line over config file (defaults are applied later)."""
    merged = read_config(config, allowed)
    merged.update({k: v for k, v in cli.items() if v is not None})
    return merged


def plan_from_options(probe: Any = None, world_size: Optional[int] = None, grad_accum: Optional[int] = None,
                      noise_cap: Optional[float] = None, micro_batch: Optional[int] = None, **options: Any):
    """Build a Plan from convert-schedule's options: explicit values over the probe's over defaults.

    ``probe`` is a probe.json path (or a ProbeResult): it supplies N, B0, lr, momentum and
    optimizer when they are not given, and the device cap ``memory.max_batch × world_size ×
    grad_accum`` unless --max-batch is given; the plan then carries predicted times and
    noise-scale efficiencies (bsadvisor.core.predict). With several devices (or accumulation)
    the batches are rounded so every device gets the same share and every accumulation
    step the same micro-batch (``micro_batch``: the per-device limit, by default the
    probe's cap; see convert.Rounding).
    """
    from bsadvisor.core import checks
    from bsadvisor.core.convert import convert_schedule

    world_size = checks.optional(checks.positive_int, "--world-size", world_size)
    grad_accum = checks.optional(checks.positive_int, "--grad-accum", grad_accum)
    micro_batch = checks.optional(checks.positive_int, "--max-micro-batch", micro_batch)
    noise_cap = checks.optional(checks.positive, "--noise-cap", noise_cap)
    explicit = {k: v for k, v in options.items() if v is not None}
    unknown = set(explicit) - set(DEFAULTS)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(sorted(unknown))}")
    world_size_given = world_size
    world_size = 1 if world_size is None else world_size
    grad_accum = 1 if grad_accum is None else grad_accum
    opts = dict(DEFAULTS)
    result = None
    if probe is not None:
        from bsadvisor.core import predict as advise
        from bsadvisor.core.probe_result import ProbeResult, load_probe

        result = probe if isinstance(probe, ProbeResult) else load_probe(probe)
        if world_size_given is None:  # a probe taken under torchrun knows its world size
            world_size = result.settings.world_size
        advise.check_probe_matches(result, explicit.get("dataset_size"))
        opts.update(advise.probe_defaults(result, world_size, grad_accum))
    elif world_size != 1 or grad_accum != 1:
        if explicit.get("max_batch") is None:
            raise UserError("--world-size and --grad-accum scale the probe's device cap: give --probe probe.json "
                            "(or --max-batch directly)")
    opts.update(explicit)
    for required in ("batch_size", "dataset_size", "epochs", "schedule"):
        if opts[required] is None:
            raise UserError(f"--{required.replace('_', '-')} is required (on the command line, in --config, "
                            "or from --probe)")
    if result is not None and micro_batch is None and (world_size > 1 or grad_accum > 1):
        micro_batch = result.memory.max_batch  # the per-device cap: above it a batch accumulates
    noise_cap_batch = None
    if noise_cap is not None:
        if result is None:
            raise UserError("--noise-cap needs a measured noise scale: give --probe probe.json")
        noise_cap_batch = noise_cap * result.noise.b_simple
    plan = convert_schedule(**{k: opts[k] for k in DEFAULTS}, noise_cap_batch=noise_cap_batch,
                            world_size=world_size, micro_batch=micro_batch)
    if result is not None:
        from bsadvisor.core import predict as advise

        advise.annotate(plan, result, world_size=world_size, noise_cap=noise_cap)
        plan.inputs.update({"probe": str(probe) if not isinstance(probe, ProbeResult) else result.target,
                            "world_size": world_size, "grad_accum": grad_accum, "noise_cap": noise_cap})
    return plan


def output_plan(plan, as_json: bool, out: Optional[Path]) -> None:
    """Write/print a plan: --out writes atomically, --json prints JSON, else the rich report."""
    from bsadvisor.cli.render import plan_summary

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

  From a CSV table and a config file, saved for `bsadvisor validate --plan`:

  [cyan]bsadvisor convert-schedule --config run.toml --schedule lr.csv --out plan.json[/]
"""


@app.command("convert-schedule", epilog=EXAMPLES)
def convert_schedule_cmd(
    lr: Lr = None, batch_size: BatchSize = None, dataset_size: DatasetSize = None, epochs: Epochs = None,
    momentum: Momentum = None, schedule: ScheduleOpt = None, schedule_unit: ScheduleUnit = None,
    optimizer: Optimizer = None, rule: Rule = None, max_batch: MaxBatch = None, max_fraction: MaxFraction = None,
    round_to: RoundTo = None, max_stages: MaxStages = None, stage_factor: StageFactor = None,
    increase_lr: IncreaseLr = None, momentum_to: MomentumTo = None, adam_rule: AdamRule = None,
    probe: ProbeOpt = None, world_size: WorldSize = None, grad_accum: GradAccum = None, noise_cap: NoiseCap = None,
    micro_batch: MicroBatch = None, config: Config = None, json_: JsonOut = False, out: Out = None,
) -> None:
    """Turn an LR-decay schedule into a batch-growth plan with the same noise temperature.

    Keeps g = ε/(1−m)·(N/B − 1) on the original trajectory by growing B instead of decaying ε,
    up to the cap (device, N·max-fraction); past the cap the LR carries the rest (hybrid).
    """
    cli = {k: v for k, v in locals().items() if k in DEFAULTS or k in PROBE_OPTIONS}
    opts = merge_options(cli, config, set(DEFAULTS) | PROBE_OPTIONS)
    plan = plan_from_options(**opts)
    output_plan(plan, json_, out)
