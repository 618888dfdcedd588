"""A probe shapes the plan: device cap, noise-scale efficiency, predicted wall time.

Pure Python (no torch): it reads a ``bsadvisor.probe/1`` result, converts with the
probe's settings and caps (:func:`plan_from_options`) and annotates the Plan.

- Cap: the probe's largest batch per device × world size × accumulation steps.
- Efficiency (McCandlish et al. 1812.06162, eq. 2.11/2.12): steps S = S_min(1 + B_noise/B)
  and examples E = E_min(1 + B/B_noise), with B_noise ≈ B_simple. The noise scale comes
  from one model, B_noise(s) of core.noise_model (docs/concepts.md eq. 16): the probe's
  B_simple scaled by T_probe/T(s), or a measured trace (``noise_trace``). The cap
  (``noise_cap`` × B_noise(s)), the efficiencies, the "past 10× B_noise" warning and the
  advice all read that model. We report ``efficiency`` = E_min/E = 1/(1 + B/B_noise): the
  share of each example's value a stage keeps (1 at tiny batches, ½ at B = B_noise), and
  ``step_efficiency`` = S_min/S = 1/(1 + B_noise/B), at the middle of each stage.
- Time: examples/s of a full step, interpolated linearly in log batch size between the
  probe's ladder points; outside the ladder, the nearest point (said as extrapolated). The
  range comes from the slowest and fastest of the repeated timings at each rung.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from bsadvisor.core import checks
from bsadvisor.core.convert import convert
from bsadvisor.core.defaults import ADAM_FAMILY
from bsadvisor.core.documents import Document
from bsadvisor.core.errors import UserError
from bsadvisor.core.noise import UNUSABLE_ADVICE, describe_interval
from bsadvisor.core.noise_model import NoiseModel, load_trace
from bsadvisor.core.options import PLAN_OPTIONS, ConvertOptions
from bsadvisor.core.plan import Plan
from bsadvisor.core.probe_result import ProbeResult, load_probe
from bsadvisor.core.temperature import TemperatureModel

#: Suggested --noise-cap: past ~10 × B_noise a bigger batch buys parallelism, not progress.
SUGGESTED_NOISE_CAP = 10.0
#: What a plan says when the noise scale it reports caps and vetoes nothing (the default).
NOISE_NOT_USED = ("the noise scale is reported, not used: it caps and vetoes nothing by default, because on the "
                  "benchmark models neither the probe's reading nor the one measured along the run predicted whether "
                  "a plan held (docs/results.md); --noise-cap K caps the batch at K × B_noise(s)")


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


def throughput_at(points, batch: float, which: str = "examples_per_s") -> tuple[float, bool]:
    """Examples/s at ``batch``: log-B linear interpolation of (batch_size, examples_per_s) points.

    Returns (examples_per_s, extrapolated). Outside the measured range the nearest
    point's value is used, which is optimistic below and roughly right above the knee.
    ``which``: the median (``examples_per_s``), or the slowest or fastest of the repeated
    timings (``slowest``, ``fastest``; the median where a rung has no repeats).
    """
    def rate(p) -> float:
        value = getattr(p, which, None) if which != "examples_per_s" else None
        return p.examples_per_s if value is None else value

    pts = sorted((p.batch_size, rate(p)) for p in points if p.examples_per_s and p.examples_per_s > 0)
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


def step_rate(probe, batch: int, world_size: int = 1, which: str = "examples_per_s") -> tuple[float, bool, int]:
    """Global examples/s for a global batch: each device runs micro-batches of at most its cap.

    Assumes ideal data-parallel scaling across ``world_size`` devices (said in the report).
    Returns (examples_per_s, extrapolated, micro_batch); ``which`` as in throughput_at.
    """
    per_device = math.ceil(batch / world_size)
    accum = math.ceil(per_device / probe.memory.max_batch)
    micro = math.ceil(per_device / accum)
    rate, extrapolated = throughput_at(probe.throughput, micro, which)
    return rate * world_size, extrapolated, micro


@dataclass(frozen=True)
class Trace:
    """A measured noise trace read once: its noise model and the file it came from (None: given as a model)."""

    model: NoiseModel
    path: Optional[str] = None

    @property
    def what(self) -> str:
        """How an error names it."""
        return "the noise trace" if self.path is None else f"noise trace {self.path}"


def read_trace(noise_trace) -> Optional[Trace]:
    """``noise_trace`` (a file, a NoiseModel, a Trace or None) as a Trace: a file is read here, once."""
    if noise_trace is None or isinstance(noise_trace, Trace):
        return noise_trace
    if isinstance(noise_trace, NoiseModel):
        return Trace(noise_trace)
    return Trace(load_trace(noise_trace), str(noise_trace))


def noise_model_of(probe=None, noise_trace=None, dataset_size: Optional[int] = None) -> Optional[NoiseModel]:
    """The one B_noise(s) model (core.noise_model): a measured trace when given, else the probe's point.

    None when neither gives a usable estimate (a probe whose interval is open or whose
    estimate is not positive): nothing may then be capped or rated by the noise scale.
    ``noise_trace``: as :func:`read_trace` takes it. With ``dataset_size`` a trace measured at a
    batch of N or more (another data set) is refused.
    """
    if noise_trace is not None:
        trace = read_trace(noise_trace)
        trace.model.check_dataset(dataset_size, trace.what)
        return trace.model
    if probe is not None:
        return NoiseModel.from_probe(probe)
    return None


def probe_summary(probe) -> dict[str, Any]:
    """What a plan keeps of the probe it used."""
    return {"target": probe.target, "b_simple": probe.noise.b_simple, "ci90": list(probe.noise.ci90),
            "ci_kind": probe.noise.ci_kind,
            "max_batch": probe.memory.max_batch, "bytes_per_sample": probe.memory.bytes_per_sample,
            "throughput": [{"batch_size": p.batch_size, "examples_per_s": p.examples_per_s}
                           for p in probe.throughput],
            "settings": {"lr": probe.settings.lr, "momentum": probe.settings.momentum,
                         "batch_size": probe.settings.batch_size, "dataset_size": probe.settings.dataset_size,
                         "device": probe.settings.device}}


@dataclass(frozen=True)
class Conversion:
    """A conversion resolved once (:func:`resolve`): the checked options (explicit over the probe's over the
    defaults, with the probe's device cap and noise cap), the probe, the noise model, and what the plan records
    of them. :meth:`plan` converts and annotates; a variant (``increase_lr=K``) converts the same options with
    that change, without resolving them again."""

    options: ConvertOptions
    probe: Optional[ProbeResult] = None
    noise_model: Optional[NoiseModel] = None
    noise_cap: Optional[float] = None
    world_size: int = 1
    recorded: dict = field(default_factory=dict)  # the plan's inputs besides its options (noise_cap, probe, ...)

    def plan(self, **changes: Any) -> Plan:
        """The plan of these options (with ``changes``, fields of ConvertOptions), annotated with the probe's
        predicted times and the noise model's figures when there is either."""
        plan = convert(replace(self.options, **changes) if changes else self.options)
        if self.probe is None and self.noise_model is None:
            return plan
        plan = annotate(plan, self.probe, world_size=self.world_size, noise_cap=self.noise_cap,
                        noise_model=self.noise_model)
        return plan.with_inputs(**self.recorded)


def resolve(probe: Any = None, world_size: Optional[int] = None, grad_accum: Optional[int] = None,
            noise_cap: Optional[float] = None, micro_batch: Optional[int] = None, noise_trace: Any = None,
            **options: Any) -> Conversion:
    """The options of :func:`plan_from_options`, resolved and checked once (the probe and the trace read once)."""
    world_size = checks.optional(checks.positive_int, "world_size", world_size)
    grad_accum = checks.optional(checks.positive_int, "grad_accum", grad_accum)
    micro_batch = checks.optional(checks.positive_int, "micro_batch", micro_batch)
    noise_cap = checks.optional(checks.number, "noise_cap", noise_cap, low=0)
    explicit = {k: v for k, v in options.items() if v is not None}
    unknown = set(explicit) - set(PLAN_OPTIONS)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(sorted(unknown))}")
    devices, accumulation = world_size or 1, grad_accum or 1
    given, result = {}, None
    if probe is not None:
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
    _check_required(given)
    if result is not None and micro_batch is None and (devices > 1 or accumulation > 1):
        micro_batch = result.memory.max_batch  # the per-device cap: above it a batch accumulates
    trace = read_trace(noise_trace)
    noise = noise_model_of(result, trace, given.get("dataset_size"))
    noise_cap = noise_cap or None  # None or 0: no cap (the default: the noise scale predicted nothing, concepts §9)
    noise_cap_batch = None
    if noise_cap is not None:
        if noise is None:
            _refuse_noise_cap(result)
        noise_cap_batch = noise.cap(noise_cap)
    checked = ConvertOptions(**given, noise_cap_batch=noise_cap_batch, world_size=devices, micro_batch=micro_batch,
                             noise_model=noise)
    recorded = {"noise_cap": noise_cap, "noise_trace": trace.path if trace is not None else None}
    if result is not None:
        recorded.update(probe=source, world_size=devices, grad_accum=accumulation)
    return Conversion(checked, result, noise, noise_cap, devices, recorded)


def plan_from_options(probe: Any = None, world_size: Optional[int] = None, grad_accum: Optional[int] = None,
                      noise_cap: Optional[float] = None, micro_batch: Optional[int] = None,
                      noise_trace: Any = None, **options: Any) -> Plan:
    """Convert with a probe: explicit options (None: not given) over the probe's over ConvertOptions' defaults.

    ``probe`` is a probe.json path (or a ProbeResult): it supplies N, B0, lr, momentum and
    optimizer when they are not given, and the device cap ``memory.max_batch × world_size ×
    grad_accum`` unless ``max_batch`` is given; the plan then carries predicted times and
    noise-scale efficiencies (:func:`annotate`), and ``noise_cap`` caps the batch at that
    multiple of B_noise(s) (default None, like 0: no cap; NOISE_CAP is the value the CLI suggests). ``noise_trace`` (a NoiseMonitor file or a validate results.json,
    a NoiseModel, or a :class:`Trace` already read) replaces the probe's one point as the noise model. With several devices (or accumulation) the batches
    are rounded so every device gets the same share and every accumulation step the same
    micro-batch (``micro_batch``: the per-device limit, by default the probe's cap; see
    convert.Rounding). ``options``: the other fields of ConvertOptions (PLAN_OPTIONS).
    """
    return resolve(probe, world_size, grad_accum, noise_cap, micro_batch, noise_trace, **options).plan()


def _check_required(given: dict[str, Any]) -> None:
    """The options a conversion cannot do without, from wherever they came (command line, config, probe)."""
    for required in ("batch_size", "dataset_size", "epochs", "schedule"):
        if required == "dataset_size" and given.get("streaming"):
            continue  # a stream has no data set size
        if required == "epochs" and (given.get("total_samples") or given.get("total_steps")):
            continue
        if given.get(required) is None:
            raise UserError(f"{required} is required (on the command line, in --config, or from --probe)",
                            parameter=required)


def _refuse_noise_cap(result) -> None:
    """noise_cap without a usable noise scale: one line saying what is missing and how to get it."""
    if result is None:
        raise UserError("noise_cap needs a measured noise scale: give probe (a probe.json file) or noise_trace",
                        parameters=("noise_cap", "probe", "noise_trace"))
    n = result.noise
    raise UserError(f"noise_cap: the probe's B_simple = {describe_interval(n.b_simple, n.ci90, n.ci_kind)} is not a "
                    f"usable cap; {UNUSABLE_ADVICE}, or give noise_trace", parameters=("noise_cap", "noise_trace"))


def annotate(plan: Plan, probe=None, world_size: int = 1, noise_cap: Optional[float] = None,
             noise_model: Optional[NoiseModel] = None) -> Plan:
    """``plan`` with each stage's predicted seconds (with a probe) and noise figures (with a noise model).

    ``noise_model`` is the one B_noise(s) (default: the probe's point, :func:`noise_model_of`);
    each stage gets ``b_noise``, ``efficiency`` and ``step_efficiency`` at its middle. The
    plan's ``probe`` record holds the probe's summary, the noise model, and the totals:
    predicted seconds of the plan and the original (with the range the repeated timings
    give) and whether any figure was extrapolated beyond the measured throughput ladder.
    """
    if noise_model is None and probe is not None:
        noise_model = NoiseModel.from_probe(probe)
    model = plan.temperature_model()
    stages, flagged, extrapolated = [], [], False
    for stage in plan.stages:
        figures = _noise_figures(plan, stage, model, noise_model)
        if probe is not None:
            times, extra = _time_figures(probe, stage, world_size)
            figures.update(times)
            extrapolated |= extra
        stages.append(replace(stage, extra={**stage.extra, **figures}))
        b_noise = figures.get("b_noise")
        # flagged only from a trace measured along the run: the probe's one point near initialisation says
        # little about late in the run (there it was 10-100x below the trace on the language models)
        if (b_noise is not None and stage.batch_size > SUGGESTED_NOISE_CAP * b_noise and noise_cap is None
                and noise_model is not None and noise_model.source == "trace"):
            flagged.append((stage, b_noise))
    warnings, notes = list(plan.warnings), list(plan.notes)
    if flagged:
        stage, b_noise = max(flagged, key=lambda f: f[0].batch_size / f[1])
        warnings.append(
            f"batch {stage.batch_size:,} is more than {SUGGESTED_NOISE_CAP:g}× the noise scale there "
            f"(B_noise ≈ {b_noise:,.0f} at sample {stage.start_sample:,}): growth that far buys parallelism, not "
            f"progress (McCandlish et al.); --noise-cap {SUGGESTED_NOISE_CAP:g} caps it there")
    if noise_model is not None:
        notes.append(f"noise scale: {noise_model.describe()}")
        if noise_cap is None:
            notes.append(NOISE_NOT_USED)
        if model.is_adam:
            notes.append("B_noise ∝ 1/T is SGD's law; for Adam it is applied with the Adam temperature of the rule "
                         "above, an assumption: a measured trace (--noise-trace) settles it")
    elif probe is not None:
        warnings.append(UNUSABLE_ADVICE)
    record = dict(plan.probe or {})
    if probe is not None:
        record.update(probe_summary(probe), world_size=world_size,
                      predicted=_predicted_totals(plan, probe, stages, world_size, extrapolated))
        if extrapolated:
            warnings.append("predicted times extrapolate beyond the probe's throughput ladder "
                            f"({min(p.batch_size for p in probe.throughput)}–"
                            f"{max(p.batch_size for p in probe.throughput)})")
        if world_size > 1:
            notes.append(f"predicted times assume ideal scaling over {world_size} devices")
    if noise_model is not None:
        record["noise_model"] = noise_model.to_dict()
    return replace(plan, stages=stages, warnings=warnings, notes=notes, probe=record)


def _predicted_totals(plan: Plan, probe, stages, world_size: int, extrapolated: bool) -> dict[str, Any]:
    """Predicted seconds of the plan and the original at B0, each with its range (slowest–fastest timings)."""
    b0 = plan.options.batch_size
    totals: dict[str, Any] = {"extrapolated": extrapolated}
    for suffix, which in (("", "examples_per_s"), ("_high", "slowest"), ("_low", "fastest")):
        rate0, extra0, _ = step_rate(probe, b0, world_size, which)
        totals["extrapolated"] |= extra0
        totals[f"predicted_seconds{suffix}"] = sum(s.extra[f"predicted_seconds{suffix}"] for s in stages)
        totals[f"baseline_predicted_seconds{suffix}"] = plan.total_samples / rate0
    return totals


def _time_figures(probe, stage, world_size: int) -> tuple[dict[str, Any], bool]:
    """A stage's predicted seconds (median timing, and slowest/fastest), its micro-batch; whether extrapolated."""
    rate, extrapolated, micro = step_rate(probe, stage.batch_size, world_size)
    slow, _, _ = step_rate(probe, stage.batch_size, world_size, "slowest")
    fast, _, _ = step_rate(probe, stage.batch_size, world_size, "fastest")
    return {"predicted_seconds": stage.samples / rate, "predicted_seconds_high": stage.samples / slow,
            "predicted_seconds_low": stage.samples / fast, "micro_batch": micro}, extrapolated


def _noise_figures(plan: Plan, stage, model: TemperatureModel, noise_model: Optional[NoiseModel]) -> dict[str, Any]:
    """B_noise (eq. 16) in the middle of a stage, at the temperature the stage trains at there, and its efficiencies."""
    if noise_model is None:
        return {}
    middle = (stage.start_sample + stage.end_sample) // 2
    t = model.temperature(plan.lr_at(stage, middle), stage.momentum, stage.batch_size)
    b_noise = noise_model.b_noise(middle, t, model)
    return {"b_noise": b_noise, "efficiency": 1.0 / (1.0 + stage.batch_size / b_noise),
            "step_efficiency": 1.0 / (1.0 + b_noise / stage.batch_size)}


def noise_at_start(plan: Plan, noise_model: NoiseModel) -> float:
    """B_noise at the start, at the original's base setting (ε0, m, B0): what B0 is compared with (eq. 16)."""
    options, model = plan.options, plan.temperature_model()
    return noise_model.b_noise(0, model.temperature(options.lr, options.momentum, options.batch_size), model)


#: B0 is "well below" the noise scale when B_noise(0) is at least this many times B0: each example keeps
#: ≥ 80% of its value at B0 and ≥ 50% up to a batch 4× larger (efficiency 1/(1 + B/B_noise), eq. 2.12).
WELL_BELOW = 4.0


@dataclass(frozen=True)
class StartVariant(Document):
    """One §5.2 variant of the start advice: LR × ``increase_lr``, its first batch, its updates, the share of each
    example's value at that batch (1/(1 + B/B_noise(0))) and its predicted time (None without a probe)."""

    increase_lr: float
    start_batch: int
    updates: int
    efficiency_at_start: float
    predicted_seconds: Optional[float]


@dataclass(frozen=True)
class StartAdvice(Document):
    """B0 well below the noise scale at the start (:func:`start_batch_advice`): B0, B_noise(0), the share of each
    example's value at B0, the plan's updates and the variants that start larger."""

    b0: int
    b_noise_at_start: float
    efficiency_at_b0: float
    plan_updates: int
    variants: tuple[StartVariant, ...]


@dataclass(frozen=True)
class KeepBatchAdvice(Document):
    """B0 already past ``noise_cap`` × B_noise where the decay begins (:func:`keep_batch_advice`): B_noise at
    ``sample``, B0's ``ratio`` to it and the share of each example's value at B0."""

    b0: int
    b_noise: float
    sample: int
    ratio: float
    efficiency_at_b0: float
    noise_cap: float
    reason: str = "noise_cap"


#: Why advise keeps an Adam run's batch at a tuned LR (docs/results.md, "What `advise` recommends today").
TUNED_LR_EVIDENCE = ("at the best LR of a sweep, growth to 2 × B0 was REJECTED on two of the eight AdamW models "
                     "measured (-0.007 and -0.033, 60 and 30 seeds; on the second every growth down to 1.17× was) "
                     "and accepted on five; nothing advise measures tells which kind of model yours is")


@dataclass(frozen=True)
class TunedLRAdvice(Document):
    """An Adam-family run whose LR the user declared tuned (:func:`tuned_lr_advice`): the original schedule is
    recommended; ``plan_updates`` is what the plan would have trained."""

    optimizer: str
    original_updates: int
    plan_updates: int
    evidence: str = TUNED_LR_EVIDENCE
    reason: str = "tuned_lr"


def tuned_lr_advice(plan: Plan) -> Optional[TunedLRAdvice]:
    """With ``--tuned-lr``, for Adam and AdamW when the plan grows the batch: keep it (docs/results.md: at a tuned
    LR no growth held on every model, and nothing measured cheaply tells the models apart). None for SGD (the
    paper's conversion) or when the plan does not grow."""
    options = plan.options
    if options.optimizer not in ADAM_FAMILY or plan.updates >= plan.baseline_updates:
        return None
    return TunedLRAdvice(options.optimizer, plan.baseline_updates, plan.updates)


def start_batch_advice(plan: Plan, noise_model: Optional[NoiseModel], make_plan) -> Optional[StartAdvice]:
    """When B0 is well below the noise scale at the start: the §5.2 increased-LR variants that start larger.

    Smith et al. §5.2: start at K·ε0 with the batch that keeps the temperature (B0·K for
    SGD, B0·K² under Adam's square-root rule), K× fewer updates at the start. Starting
    batches are B0 × 2^i up to B_noise(0)/WELL_BELOW (each example still worth ≥ 80%) and
    up to B_noise(0) (worth 50%: McCandlish et al.'s balance of time and compute), within
    the plan's cap. ``make_plan(K)`` converts with increase_lr=K. None when B0 is not well
    below the noise scale (or there is no usable noise model, or a variant was asked for).
    """
    options = plan.options
    if noise_model is None or options.increase_lr not in (None, 1.0):
        return None
    b0 = options.batch_size
    b_noise = noise_at_start(plan, noise_model)
    if not b_noise >= WELL_BELOW * b0:
        return None
    cap = int((plan.cap or {}).get("batch_size") or b0)
    model, momentum = plan.temperature_model(), options.momentum
    targets = sorted({t for t in (_power_of_two_below(b0, b_noise / WELL_BELOW), _power_of_two_below(b0, b_noise))
                      if b0 < t <= cap})
    variants = []
    for start in targets:
        k = model.scale_for(start, b0, momentum)
        variant = make_plan(k)
        pred = (variant.probe or {}).get("predicted") or {}
        variants.append(StartVariant(k, variant.stages[0].batch_size, variant.updates,
                                     1.0 / (1.0 + variant.stages[0].batch_size / b_noise),
                                     pred.get("predicted_seconds")))
    return StartAdvice(b0, b_noise, 1.0 / (1.0 + b0 / b_noise), plan.updates, tuple(variants))


def keep_batch_advice(plan: Plan, noise_model: Optional[NoiseModel]) -> Optional[KeepBatchAdvice]:
    """With a noise cap asked for (``--noise-cap K``), when B0 is already at or past K × B_noise where the decay
    begins: keep the batch.

    Only with a cap the user asked for: by default the noise scale vetoes nothing, since on the
    benchmark models it did not predict whether a plan held (docs/results.md; charlm's probe
    read B0 = 60-80× B_noise and the plan held). With the cap, growth past it is what the user
    ruled out, so the original schedule is the recommendation. B_noise is read at the first
    sample the plan could grow from (the end of a warmup), at the original's setting there (eq. 16):
    with a probe that is its B_simple. None without a cap, when B0 is below that (or there is no model), and,
    with a measured trace, when the plan capped at K × B_noise(s) still grows later in the
    run: on language models the trace shows the noise scale growing 10-100× after the first
    updates (docs/results.md), which a probe's one point at initialisation cannot see.
    """
    cap = plan.noise_cap
    if noise_model is None or not cap:
        return None
    b0 = plan.options.batch_size
    start = next((st for st in plan.stages if st.phase != "warmup"), plan.stages[0])
    model = plan.temperature_model()
    t = model.temperature(plan.lr_at(start, start.start_sample), start.momentum, b0)
    b_noise = noise_model.b_noise(start.start_sample, t, model)
    if not b0 >= cap * b_noise:
        return None
    if noise_model.source == "trace" and max(st.batch_size for st in plan.stages) > b0:
        return None  # measured later in the run, B_noise(s) grows past B0 / cap: the capped plan grows there
    return KeepBatchAdvice(b0, b_noise, start.start_sample, b0 / b_noise, 1.0 / (1.0 + b0 / b_noise), cap)


def _power_of_two_below(b0: int, limit: float) -> int:
    """The largest B0 × 2^i not above ``limit`` (B0 itself when none is)."""
    b = b0
    while b * 2 <= limit:
        b *= 2
    return b
