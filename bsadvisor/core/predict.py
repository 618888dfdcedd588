"""A probe shapes the plan: device cap, noise-scale efficiency, predicted wall time.

Pure Python (no torch): it reads a ``bsadvisor.probe/1`` result, converts with the
probe's settings and caps (:func:`plan_from_options`) and annotates the Plan.

- Cap: the probe's largest batch per device × world size × accumulation steps.
- Efficiency (McCandlish et al. 1812.06162, eq. 2.11/2.12): steps S = S_min(1 + B_noise/B)
  and examples E = E_min(1 + B/B_noise), with B_noise ≈ B_simple. B_simple scales as 1/T
  (docs/concepts.md §9), so a stage at temperature T has B_noise = B_simple·T_probe/T.
  We report ``efficiency`` = E_min/E = 1/(1 + B/B_noise): the share of each example's
  value a stage keeps (1 at tiny batches, ½ at B = B_noise), and ``step_efficiency``
  = S_min/S = 1/(1 + B_noise/B).
- Time: examples/s of a full step, interpolated linearly in log batch size between the
  probe's ladder points; outside the ladder, the nearest point (said as extrapolated).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import replace
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core.convert import convert
from bsadvisor.core.errors import UserError
from bsadvisor.core.options import OPTION_NAMES, ConvertOptions
from bsadvisor.core.plan import Plan
from bsadvisor.core.temperature import TemperatureModel

#: Suggested --noise-cap: past ~10 × B_noise a bigger batch buys parallelism, not progress.
SUGGESTED_NOISE_CAP = 10.0
#: What plan_from_options takes besides the conversion options: the probe and the device layout.
PROBE_OPTIONS = ("probe", "world_size", "grad_accum", "noise_cap", "micro_batch")
#: The conversion options plan_from_options passes on as given (it derives the others from the probe).
PLAN_OPTIONS = tuple(name for name in OPTION_NAMES if name not in PROBE_OPTIONS + ("noise_cap_batch",))


def device_cap(probe, world_size: int = 1, grad_accum: int = 1) -> int:
    """Global batch cap from a probe: per-device max batch × world size × accumulation steps."""
    world_size = checks.positive_int("world_size", world_size)
    grad_accum = checks.positive_int("grad_accum", grad_accum)
    return int(probe.memory.max_batch) * world_size * grad_accum


def probe_defaults(probe, world_size: int = 1, grad_accum: int = 1) -> dict[str, Any]:
    """convert-schedule options a probe supplies when the command line leaves them out."""
    s = probe.settings
    return {"dataset_size": s.dataset_size, "batch_size": s.batch_size, "lr": s.lr, "momentum": s.momentum,
            "optimizer": s.optimizer, "max_batch": device_cap(probe, world_size, grad_accum)}


def check_probe_matches(probe, dataset_size: Optional[int]) -> None:
    if dataset_size is not None and dataset_size != probe.settings.dataset_size:
        raise UserError(f"dataset_size {dataset_size} disagrees with the probe's dataset size "
                        f"{probe.settings.dataset_size}; probe the same dataset or drop dataset_size",
                        parameter="dataset_size")


def throughput_at(points, batch: float) -> tuple[float, bool]:
    """Examples/s at ``batch``: log-B linear interpolation of (batch_size, examples_per_s) points.

    Returns (examples_per_s, extrapolated). Outside the measured range the nearest
    point's value is used, which is optimistic below and roughly right above the knee.
    """
    pts = sorted((p.batch_size, p.examples_per_s) for p in points if p.examples_per_s > 0)
    if not pts:
        raise UserError("the probe has no throughput measurements; rerun bsadvisor probe")
    xs = [math.log(b) for b, _ in pts]
    x = math.log(batch)
    if x <= xs[0]:
        return pts[0][1], x < xs[0] - 1e-12
    if x >= xs[-1]:
        return pts[-1][1], x > xs[-1] + 1e-12
    i = bisect.bisect_right(xs, x)
    w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return pts[i - 1][1] * (1 - w) + pts[i][1] * w, False


def step_rate(probe, batch: int, world_size: int = 1) -> tuple[float, bool, int]:
    """Global examples/s for a global batch: each device runs micro-batches of at most its cap.

    Assumes ideal data-parallel scaling across ``world_size`` devices (said in the report).
    Returns (examples_per_s, extrapolated, micro_batch).
    """
    per_device = math.ceil(batch / world_size)
    accum = math.ceil(per_device / probe.memory.max_batch)
    micro = math.ceil(per_device / accum)
    rate, extrapolated = throughput_at(probe.throughput, micro)
    return rate * world_size, extrapolated, micro


def noise_scale_at(probe, model: TemperatureModel, lr: float, momentum: float, batch: int) -> float:
    """B_noise at a stage's temperature: B_simple measured at T_probe, scaled by T_probe/T (∝ 1/T)."""
    s = probe.settings
    t_probe = model.temperature(s.lr, s.momentum, s.batch_size)
    t_stage = model.temperature(lr, momentum, batch)
    if t_stage <= 0:
        return math.inf
    return probe.noise.b_simple * t_probe / t_stage


def probe_summary(probe) -> dict[str, Any]:
    """What a plan keeps of the probe it used."""
    return {"target": probe.target, "b_simple": probe.noise.b_simple, "ci90": list(probe.noise.ci90),
            "max_batch": probe.memory.max_batch, "bytes_per_sample": probe.memory.bytes_per_sample,
            "throughput": [{"batch_size": p.batch_size, "examples_per_s": p.examples_per_s}
                           for p in probe.throughput],
            "settings": {"lr": probe.settings.lr, "momentum": probe.settings.momentum,
                         "batch_size": probe.settings.batch_size, "dataset_size": probe.settings.dataset_size,
                         "device": probe.settings.device}}


def plan_from_options(probe: Any = None, world_size: Optional[int] = None, grad_accum: Optional[int] = None,
                      noise_cap: Optional[float] = None, micro_batch: Optional[int] = None, **options: Any) -> Plan:
    """Convert with a probe: explicit options (None: not given) over the probe's over ConvertOptions' defaults.

    ``probe`` is a probe.json path (or a ProbeResult): it supplies N, B0, lr, momentum and
    optimizer when they are not given, and the device cap ``memory.max_batch × world_size ×
    grad_accum`` unless ``max_batch`` is given; the plan then carries predicted times and
    noise-scale efficiencies (:func:`annotate`), and ``noise_cap`` caps the batch at that
    multiple of the measured B_simple. With several devices (or accumulation) the batches
    are rounded so every device gets the same share and every accumulation step the same
    micro-batch (``micro_batch``: the per-device limit, by default the probe's cap; see
    convert.Rounding). ``options``: the other fields of ConvertOptions (PLAN_OPTIONS).
    """
    world_size = checks.optional(checks.positive_int, "world_size", world_size)
    grad_accum = checks.optional(checks.positive_int, "grad_accum", grad_accum)
    micro_batch = checks.optional(checks.positive_int, "micro_batch", micro_batch)
    noise_cap = checks.optional(checks.positive, "noise_cap", noise_cap)
    explicit = {k: v for k, v in options.items() if v is not None}
    unknown = set(explicit) - set(PLAN_OPTIONS)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(sorted(unknown))}")
    devices, accumulation = world_size or 1, grad_accum or 1
    given, result = {}, None
    if probe is not None:
        from bsadvisor.core.probe_result import ProbeResult, load_probe  # only with a probe: the CLI starts faster

        result = probe if isinstance(probe, ProbeResult) else load_probe(probe)
        source = result.target if isinstance(probe, ProbeResult) else str(probe)
        if world_size is None:  # a probe taken under torchrun knows its world size
            devices = result.settings.world_size
        check_probe_matches(result, explicit.get("dataset_size"))
        given = probe_defaults(result, devices, accumulation)
    elif (devices != 1 or accumulation != 1) and explicit.get("max_batch") is None:
        raise UserError("world_size and grad_accum scale the measured device cap: give probe (a probe.json "
                        "file) or max_batch directly", parameters=("world_size", "grad_accum", "probe", "max_batch"))
    given.update(explicit)
    for required in ("batch_size", "dataset_size", "epochs", "schedule"):
        if required == "dataset_size" and given.get("streaming"):
            continue  # a stream has no data set size
        if required == "epochs" and (given.get("total_samples") or given.get("total_steps")):
            continue
        if given.get(required) is None:
            raise UserError(f"{required} is required (on the command line, in --config, or from --probe)",
                            parameter=required)
    if result is not None and micro_batch is None and (devices > 1 or accumulation > 1):
        micro_batch = result.memory.max_batch  # the per-device cap: above it a batch accumulates
    noise_cap_batch = None
    if noise_cap is not None:
        if result is None:
            raise UserError("noise_cap needs a measured noise scale: give probe (a probe.json file)",
                            parameters=("noise_cap", "probe"))
        noise_cap_batch = noise_cap * result.noise.b_simple
    plan = convert(ConvertOptions(**given, noise_cap_batch=noise_cap_batch, world_size=devices,
                                  micro_batch=micro_batch))
    if result is None:
        return plan
    plan = annotate(plan, result, world_size=devices, noise_cap=noise_cap)
    return replace(plan, inputs={**plan.inputs, "probe": source, "world_size": devices, "grad_accum": accumulation,
                                 "noise_cap": noise_cap})


def annotate(plan: Plan, probe, world_size: int = 1, noise_cap: Optional[float] = None) -> Plan:
    """``plan`` with each stage's ``predicted_seconds``, ``b_noise`` and efficiencies, as a new Plan.

    Its ``probe`` record holds the probe's summary and the totals: predicted seconds of the
    plan and of the original schedule, and whether any figure was extrapolated beyond the
    measured throughput ladder.
    """
    inputs = plan.inputs
    single_pass = plan.dataset_size is None or inputs.get("streaming") or plan.total_samples <= plan.dataset_size
    model = TemperatureModel(None if single_pass else plan.dataset_size, inputs.get("rule") or "exact",
                             inputs.get("optimizer") or "sgd", inputs.get("adam_rule") or "sqrt")
    stages, flagged, extrapolated = [], [], False
    for stage in plan.stages:
        figures, extra = _stage_figures(probe, model, stage, plan.dataset_size, world_size)
        extrapolated |= extra
        stages.append(replace(stage, extra={**stage.extra, **figures}))
        if stage.batch_size > SUGGESTED_NOISE_CAP * probe.noise.b_simple and noise_cap is None:
            flagged.append(stage.batch_size)
    b0 = inputs.get("batch_size") or plan.stages[0].batch_size
    rate0, extra0, _ = step_rate(probe, b0, world_size)
    extrapolated |= extra0
    totals = {"predicted_seconds": sum(s.extra["predicted_seconds"] for s in stages),
              "baseline_predicted_seconds": plan.total_samples / rate0, "extrapolated": extrapolated}
    warnings, notes = list(plan.warnings), list(plan.notes)
    if flagged:
        warnings.append(
            f"batch {max(flagged):,} is more than {SUGGESTED_NOISE_CAP:g}× the measured noise scale "
            f"B_simple ≈ {probe.noise.b_simple:,.0f}: growth that far buys parallelism, not progress "
            f"(McCandlish et al.); --noise-cap {SUGGESTED_NOISE_CAP:g} caps it there")
    if extrapolated:
        warnings.append("predicted times extrapolate beyond the probe's throughput ladder "
                        f"({min(p.batch_size for p in probe.throughput)}–"
                        f"{max(p.batch_size for p in probe.throughput)})")
    if world_size > 1:
        notes.append(f"predicted times assume ideal scaling over {world_size} devices")
    notes.append("B_simple was measured at the start of training; it usually grows as training proceeds, "
                 "so the efficiency figures are conservative")
    return replace(plan, stages=stages, warnings=warnings, notes=notes,
                   probe={**probe_summary(probe), "world_size": world_size, "predicted": totals})


def _stage_figures(probe, model: TemperatureModel, stage, dataset_size: int,
                   world_size: int) -> tuple[dict[str, Any], bool]:
    """A stage's predicted seconds, noise scale, efficiencies and micro-batch; and whether its rate was extrapolated."""
    rate, extrapolated, micro = step_rate(probe, stage.batch_size, world_size)
    b_noise = noise_scale_at(probe, model, stage.lr, stage.momentum, stage.batch_size)
    return {
        "predicted_seconds": stage.samples / rate,
        "b_noise": b_noise,
        "efficiency": 1.0 / (1.0 + stage.batch_size / b_noise),
        "step_efficiency": 1.0 / (1.0 + b_noise / stage.batch_size),
        "micro_batch": micro,
    }, extrapolated
