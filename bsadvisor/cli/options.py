"""The conversion options as Typer declarations, shared by convert-schedule, advise and validate.

Every option defaults to None here, meaning "not given": a --config file or a probe may
still fill it, and what is left takes ConvertOptions' default (written once, in core.defaults,
where the help texts below read them too). No torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from bsadvisor.core.defaults import NOISE_CAP, DEFAULTS, OPTIMIZERS


def _default(text: object) -> str:
    """The help text's closing ``[default: ...]`` (escaped for rich markup)."""
    if isinstance(text, float):
        text = f"{text:g}"
    return f"  \\[default: {text}]"


Lr = Annotated[Optional[float], typer.Option("--lr", help="Base LR ε0 of the schedule (a CSV table gives its own).", show_default=False)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size B0 the schedule was tuned at.", show_default=False)]
DatasetSize = Annotated[Optional[int], typer.Option("--dataset-size", help="Training-set size N.", show_default=False)]
Epochs = Annotated[Optional[float], typer.Option(
    "--epochs", help="Training length E in epochs (fractional allowed: 0.5 is half a pass).", show_default=False)]
TotalSamples = Annotated[Optional[int], typer.Option(
    "--total-samples", help="Training length in samples (examples consumed), instead of --epochs.", show_default=False)]
TotalSteps = Annotated[Optional[int], typer.Option(
    "--total-steps", help="Training length in updates of the original run at B0, instead of --epochs.",
    show_default=False)]
Streaming = Annotated[Optional[bool], typer.Option(
    "--streaming", help="Every example is fresh (a data stream, or one pass or less): the temperature uses "
                        "N → ∞ and the N/10 cap does not apply; --dataset-size may be left out.", show_default=False)]
SeqLen = Annotated[Optional[int], typer.Option(
    "--seq-len", help="Tokens per sample, for a language model: the plan also counts tokens.", show_default=False)]
GrowthFactor = Annotated[Optional[int], typer.Option(
    "--growth-factor", help="Every stage's batch is this integer times the previous one (Megatron, OLMo-core "
                            "ramps); the LR factor absorbs the difference.", show_default=False)]
Momentum = Annotated[Optional[float], typer.Option(
    "--momentum", help="SGD momentum m (Adam's β1 for the Adam family).  \\[default: 0, Adam's 0.9]",
    show_default=False)]
ScheduleOpt = Annotated[Optional[str], typer.Option(
    "--schedule", help="PyTorch scheduler expression, e.g. 'MultiStepLR(milestones=[60,120,160], gamma=0.2)', "
                       "or a CSV table epoch,lr[,momentum].", show_default=False)]
ScheduleUnit = Annotated[Optional[str], typer.Option(
    "--schedule-unit", help="epoch: the scheduler steps once an epoch; step: once an iteration "
                            "(read with ceil(N/B0) steps an epoch)." + _default(DEFAULTS["schedule_unit"]),
    show_default=False)]
Optimizer = Annotated[Optional[str], typer.Option(
    "--optimizer", help=" | ".join(OPTIMIZERS) + "." + _default(DEFAULTS["optimizer"]), show_default=False)]
Rule = Annotated[Optional[str], typer.Option(
    "--rule", help="exact: B = N/(1+(N/B0−1)ρ); proportional: B = B0/ρ (the paper's)." + _default(DEFAULTS["rule"]),
    show_default=False)]
MaxBatch = Annotated[Optional[int], typer.Option(
    "--max-batch", help="Device cap: the largest batch that fits (× devices × accumulation)." + _default("none"),
    show_default=False)]
MaxFraction = Annotated[Optional[float], typer.Option(
    "--max-fraction", help="Never grow past this fraction of N (the paper stopped near N/10)."
                           + _default(DEFAULTS["max_fraction"]), show_default=False)]
RoundTo = Annotated[Optional[int], typer.Option(
    "--round-to", help="Round batches to multiples of this." + _default(DEFAULTS["round_to"]), show_default=False)]
MaxStages = Annotated[Optional[int], typer.Option(
    "--max-stages", help="At most this many distinct batch sizes." + _default("no limit"), show_default=False)]
StageFactor = Annotated[Optional[float], typer.Option(
    "--stage-factor", help="New batch only when the target grew by this factor (the LR carries the rest). "
                           "\\[default: 1 for step schedules; for smooth ones 2 read per epoch, 1.25 read per step]", show_default=False)]
IncreaseLr = Annotated[Optional[float], typer.Option(
    "--increase-lr", help="Paper §5.2 variant: start at K·ε0 and the batch that keeps g0 (K× fewer updates).", show_default=False)]
MomentumTo = Annotated[Optional[float], typer.Option(
    "--momentum-to", help="Paper §5.2 variant: train at momentum M, batch × (1−m)/(1−M).", show_default=False)]
AdamRule = Annotated[Optional[str], typer.Option(
    "--adam-rule", help="Adam family: linear (batch × α for an LR decay by α; the one that held on every model in docs/results.md), sqrt (× α², Malladi et al.), "
                        "seesaw (× α with the LR ÷ √α, Meterez et al.) or noise (sqrt below the noise scale, linear "
                        "above it; needs a probe or a trace)."
                        + _default(DEFAULTS["adam_rule"]), show_default=False)]
AdamSde = Annotated[Optional[bool], typer.Option(
    "--adam-sde", help="Adam family: also scale 1−β1 and 1−β2 by each stage's batch factor κ and Adam's ε by 1/√κ "
                       "(Malladi et al.'s companion scaling; measured in docs/results.md).", show_default=False)]
Config = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML file with any of these options (keys as option names, e.g. batch-size = 128); "
                     "the command line wins.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the plan as JSON (schema bsadvisor.plan/2).")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Write the plan JSON to this file (atomically).", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file that this command did "
                                         "not write (without it such a file is refused; an earlier output of the "
                                         "same kind is replaced).")]
ProbeOpt = Annotated[Optional[Path], typer.Option(
    "--probe", help="probe.json from `bsadvisor probe --out`: supplies N, B0, lr, momentum, the device cap "
                    "(max_batch × world size × accumulation) and per-stage predicted time and efficiency.", show_default=False)]
WorldSize = Annotated[Optional[int], typer.Option(
    "--world-size", help="Devices training together." + _default(DEFAULTS["world_size"]), show_default=False)]
GradAccum = Annotated[Optional[int], typer.Option(
    "--grad-accum", help="Gradient-accumulation steps allowed per update." + _default(1), show_default=False)]
MicroBatch = Annotated[Optional[int], typer.Option(
    "--max-micro-batch", help="Per-device micro-batch limit: with --world-size or --grad-accum, every batch above "
                              "world size × this is world size × k steps × an equal micro-batch.  \\[default: the "
                              "probe's max batch]", show_default=False)]
NoiseCap = Annotated[Optional[float], typer.Option(
    "--noise-cap", help="Cap the batch at K × the noise scale B_noise(s) (e.g. " + f"{NOISE_CAP:g}" + "): the "
                        "probe's B_simple scaled by the temperature, or --noise-trace (an estimate without a bounded "
                        "interval is refused; 0: no cap). By default nothing is capped: on the benchmark models the "
                        "noise scale did not predict whether a plan held (docs/results.md).  \\[default: no cap]",
    show_default=False)]
NoiseTrace = Annotated[Optional[Path], typer.Option(
    "--noise-trace", help="B_simple measured through training: results.json of `bsadvisor validate` (its original "
                          "run) or a NoiseMonitor file. Replaces the probe's one value in --noise-cap, the efficiency "
                          "column and the warnings.", show_default=False)]

