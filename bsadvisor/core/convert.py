"""LR-decay schedule → batch-growth plan (Smith et al. 1711.00489; docs/concepts.md).

The original run trains at batch B0 with LR ε(t) (and momentum m(t)); its noise
temperature is g(t) = g0·ρ(t). We keep that trajectory but move it from the LR into
the batch:

    B(t) = N / (1 + (N/B0 − 1)·ρ(t))        exact rule
    B(t) = B0 / ρ(t)                          proportional rule (the paper's)

always anchored at B0 (never chained stage to stage). Once B would pass the cap
(device memory, N·max_fraction, or a multiple of the noise scale), B stays at the cap
and the LR carries the rest of the decay ("hybrid", §5 of the paper):

    ε(t) = ε0·ρ(t)·(N/B0 − 1)/(N/B_cap − 1)   exact,   ε0·ρ(t)·B_cap/B0 proportional.

The plan lives on the sample axis (examples consumed; core/original.py). Continuous
schedules become a staircase: a new batch only when the target has grown by
``stage_factor`` (or, with ``growth_factor`` K, by K: integer multiples); inside a stage
the LR is the original's LR at the same sample times the stage's factor f(B), the one
that keeps the temperature (eq. 14), so the realised temperature follows the original
update by update, rounding of B included, and a per-step warmup stays an LR warmup.

The work is done on spans of samples over which the original LR is constant
(``Schedule.pieces``), never update by update: a step schedule over a million epochs
costs as much as over two hundred; a smooth schedule is read at no more than MAX_SPANS
points (where a stage may start; the LR inside follows every step).
No torch here: this module must import in milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Optional

from bsadvisor.core.errors import UserError
from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.plan import Plan, Stage
from bsadvisor.core.temperature import ADAM_FAMILY, TemperatureModel, noise_proxy_rule

# Relative slack for float noise when comparing batch targets.
_EPS = 1e-9
#: Most points a smooth schedule is read at to place the stages (per step up to this many steps).
MAX_SPANS = 20_000

#: The note every plan carries (convert-schedule has no model to look at; advise and validate,
#: which do, warn when the model really has BatchNorm layers).
BATCHNORM_NOTE = ("if the model has BatchNorm layers: their statistics depend on the batch; keep a fixed "
                  "per-device group (ghost batch norm) or check with bsadvisor validate")


@dataclass
class _Span:
    """Samples [start, end) of one original piece and, once planned, one batch and LR factor."""

    start: int
    end: int
    batch: int
    lr: float  # the plan's LR at ``start``: lr_scale × the original's
    lr_scale: float
    momentum: float
    rho: float  # what the original schedule asks for, g/g_ref
    phase: str


@dataclass(frozen=True)
class Rounding:
    """Which batch sizes a plan may use (docs/concepts.md §4, "Rounding").

    One device: multiples of ``round_to``. Data parallel over W = ``world_size`` devices
    that take at most m = ``micro_batch`` examples per step: a batch B needs
    k = ⌈B/(W·m)⌉ accumulation steps, and B must be a multiple of lcm(round_to, W)·k, so

        B = W × k × μ,   μ ≤ m,

    every device gets the same share and every accumulation step the same micro-batch μ
    (B is a multiple of world size × micro-batch). Without ``micro_batch``, k = 1:
    multiples of lcm(round_to, W).
    """

    round_to: int = 1
    world_size: int = 1
    micro_batch: Optional[int] = None

    @property
    def unit(self) -> int:
        return math.lcm(self.round_to, self.world_size)

    def steps(self, b: float) -> int:
        """Accumulation steps k = ⌈b/(W·m)⌉ a batch of ``b`` needs (1 without a micro-batch limit)."""
        if self.micro_batch is None:
            return 1
        return max(1, math.ceil(b / (self.world_size * self.micro_batch) - _EPS))

    def allows(self, batch: int) -> bool:
        return batch >= 1 and batch % (self.unit * self.steps(batch)) == 0

    def _band(self, k: int) -> list[int]:
        """The smallest and largest allowed batch needing exactly k steps (empty if none)."""
        wm, u = self.world_size * self.micro_batch, self.unit * k
        lo, hi = (wm * (k - 1)) // u * u + u, wm * k // u * u
        return [lo, hi] if lo <= hi else []

    def nearest(self, b: float) -> int:
        """The allowed batch nearest ``b`` (ties: the smaller)."""
        if self.micro_batch is None:
            return self._nearest_multiple(b)
        kb = self.steps(b)
        options = []
        for k in range(max(1, kb - 1), kb + 2):
            u = self.unit * k
            options += [c for c in [math.floor(b / u) * u, math.ceil(b / u) * u] + self._band(k)
                        if self.allows(c) and self.steps(c) == k]
        if not options:  # round_to/W coarser than the micro-batch limit: fall back to plain multiples
            return self._nearest_multiple(b)
        return min(options, key=lambda c: (abs(c - b), c))

    def _nearest_multiple(self, b: float) -> int:
        """The multiple of ``unit`` (at least ``unit``) nearest ``b``; a tie goes to the smaller.

        Not ``round()``: that sends ties to the even multiple (2.5 → 2 but 3.5 → 4).
        """
        u = self.unit
        low = math.floor(b / u) * u
        return max(u, min((low, low + u), key=lambda c: (abs(c - b), c)))

    def floor(self, b: float) -> int:
        """The largest allowed batch ≤ ``b`` (at least the smallest allowed one)."""
        if self.micro_batch is None:
            return max(self.unit, int(b // self.unit) * self.unit)
        # With k steps the allowed batches are multiples of unit·k up to unit·q·k (q = ⌊W·m/unit⌋) and
        # above W·m·(k−1): none when q = 0, and none for k ≥ W·m/(W·m − unit·q) unless unit divides W·m.
        # Start at the largest k that has any, so the search takes a step or two, not one per k.
        wm, u = self.world_size * self.micro_batch, self.unit
        q = wm // u
        if q == 0:
            return self.nearest(1)
        k_top = self.steps(b) if u * q == wm else min(self.steps(b), (wm - 1) // (wm - u * q))
        for k in range(k_top, 0, -1):
            band = self._band(k)
            if band:
                u = self.unit * k
                top = min(band[1], int(b // u) * u)
                if top >= band[0]:
                    return top
        return self.nearest(1)

    def describe(self) -> str:
        if self.world_size == 1 and self.micro_batch is None:
            return f"multiples of {self.round_to}"
        text = f"multiples of {self.unit} (--round-to {self.round_to}, world size {self.world_size})"
        if self.micro_batch is not None:
            text += (f"; a batch B over {self.world_size} × {self.micro_batch} takes k = ⌈B/{self.world_size * self.micro_batch}⌉ "
                     f"accumulation steps and is a multiple of {self.unit}·k, so every device and step gets the same "
                     f"micro-batch (≤ {self.micro_batch})")
        return text


class _Piece(NamedTuple):
    """Samples [start, end) of the original run at one LR and momentum (its first step's, for a smooth span)."""

    start: int
    end: int
    lr: float
    momentum: float


class _Original(NamedTuple):
    """The original run, piece by piece, and its noise temperature g = ε/(1−m)·(N/B0 − 1) in each (eq. 1)."""

    pieces: list[_Piece]  # tile [0, S); their number does not grow with the run for a step schedule
    model: TemperatureModel
    temperatures: list[float]
    run: Any  # core.original.OriginalRun


def temperature_model(options: ConvertOptions) -> TemperatureModel:
    """The options' temperature model: the N → ∞ form for a single pass over the data (eq. 15).

    The noise-aware Adam rule (eq. 24) reads B_noise(s) from ``options.noise_model`` along the
    original run (eq. 16, with the square-root temperature as the noise model's T: it must not
    depend on itself), one value per span of the original's LR; the plan keeps the original's
    temperature, so the same B_noise(s) holds for it.
    """
    n = None if options.single_pass else options.dataset_size
    if not (options.adam_rule == "noise" and options.optimizer in ADAM_FAMILY):
        return TemperatureModel(n, options.rule, options.optimizer, options.adam_rule)
    noise = options.noise_model
    if noise is None:
        raise UserError("adam_rule 'noise' reads the gradient noise scale B_noise(s) through the run: give a probe "
                        "(--probe probe.json, or advise) or a measured trace (--noise-trace results.json)",
                        parameter="adam_rule")
    proxy = TemperatureModel(n, options.rule, options.optimizer, noise_proxy_rule(options.adam_rule))
    run = options.original()
    starts, values = [], []
    for start, _end, step in _sample_spans(run):
        t = proxy.temperature(run.schedule.lr(step, options.lr), run.momentum_at(start), options.batch_size)
        starts.append(float(start))
        values.append(noise.b_noise(start, t, proxy))
    return TemperatureModel(n, options.rule, options.optimizer, options.adam_rule, (tuple(starts), tuple(values)))


def _original(options: ConvertOptions) -> _Original:
    """The original run's pieces of constant LR and momentum, read from the schedule, and their temperatures."""
    run = options.original()
    pieces = []
    for start, end, step in _sample_spans(run):
        try:
            value = run.schedule.lr(step, options.lr)
        except OverflowError:
            value = math.inf
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"the schedule gives LR {value!r} at {_where(run, start)}; it must be a finite number ≥ 0")
        pieces.append(_Piece(start, end, value, run.momentum_at(start)))
    model = temperature_model(options)
    return _Original(pieces, model, _temperatures(model, pieces, options.batch_size, options.lr, run), run)


def _where(run, sample: int) -> str:
    """A sample position in the units the user thinks in: the epoch, or the step."""
    if run.unit == "epoch" and run.dataset_size:
        return f"epoch {sample // run.dataset_size}"
    return f"step {run.step_at(sample)}"


def _sample_spans(run) -> list[tuple[int, int, int]]:
    """(start_sample, end_sample, first scheduler step) tiling [0, S), over which the original LR is constant.

    A constant piece of the schedule is one span; a smooth one is cut at every scheduler
    step, or every c steps when the run has more than MAX_SPANS of them (c chosen so the
    spans stay under MAX_SPANS): those are the points where a batch stage may begin.
    """
    pieces = [(a, b, smooth) for a, b, smooth in run.schedule.pieces(run.horizon, run.steps_per_epoch)]
    smooth_steps = sum(b - a for a, b, smooth in pieces if smooth)
    chunk = max(1, -(-smooth_steps // max(1, MAX_SPANS - len(pieces))))
    spans: list[tuple[int, int, int]] = []
    for a, b, smooth in pieces:
        for k in (range(a, b, chunk) if smooth else (a,)):
            start = run.first_sample(k)
            end = min(run.first_sample(min(k + chunk, b) if smooth else b), run.total_samples)
            if start < end:
                spans.append((start, end, k))
    if not spans or spans[0][0] != 0 or spans[-1][1] != run.total_samples or any(
            x[1] != y[0] for x, y in zip(spans, spans[1:])):  # a bug in a Schedule.pieces, not bad input
        raise AssertionError(f"schedule pieces do not tile [0, {run.total_samples}): {spans[:5]}")
    return spans


def _temperatures(model: TemperatureModel, pieces: list[_Piece], b0: int, lr0: float, run) -> list[float]:
    """The original temperature of each piece; an overflow says which number is too large."""
    temps = []
    for start, _end, x, m in pieces:
        t = model.temperature(x, m, b0, start)
        if not math.isfinite(t):
            if x == lr0:
                raise UserError(f"lr {lr0:g} is too large: the noise temperature ε/(1−m)·(N/B−1) overflows; "
                                "give the LR your schedule starts from (e.g. 0.1)", parameter="lr")
            raise UserError(f"the schedule's LR {x:g} at {_where(run, start)} is too large: the noise temperature "
                            "overflows; check the schedule's arguments")
        temps.append(t)
    return temps


#: What a baseline plan records of its options.
_BASELINE_INPUTS = ("lr", "batch_size", "dataset_size", "epochs", "total_samples", "total_steps", "momentum",
                    "schedule", "schedule_unit", "seq_len", "streaming")


def baseline(options: ConvertOptions) -> Plan:
    """The original schedule as a Plan: batch B0 throughout, the schedule's own LR at every update.

    One stage per stretch of constant momentum, each with ``lr_scale`` 1: the LR at sample s
    is the original's, exactly as torch's scheduler steps it (per epoch or per update).
    """
    original = _original(options)
    b0, pieces, temps = options.batch_size, original.pieces, original.temperatures
    g_ref = max(temps)
    # B0 = N (full batch) has no gradient noise: g = 0 throughout; report the LR ratio instead.
    rho = [t / g_ref for t in temps] if g_ref > 0 else [p.lr / max(q.lr for q in pieces) if p.lr else 0.0
                                                       for p in pieces]
    per_span = [_Span(p.start, p.end, b0, p.lr, 1.0, p.momentum, r, "original") for p, r in zip(pieces, rho)]
    recorded = options.to_dict()
    stages = _merge(per_span, original.model, g_ref)
    return Plan(stages=stages, dataset_size=options.dataset_size, baseline_updates=original.run.updates(),
                inputs={"kind": "baseline", **{k: recorded[k] for k in _BASELINE_INPUTS}},
                notes=["the original LR schedule at a fixed batch"])


def baseline_plan(**options: Any) -> Plan:
    """:func:`baseline` for keyword options (those of :class:`ConvertOptions`)."""
    return baseline(ConvertOptions(**options))


def plan_options(plan: Plan, **changes: Any) -> ConvertOptions:
    """The conversion options the plan records in its inputs, with ``changes`` (None: the default), and the
    noise model it recorded (the noise-aware Adam rule reads it)."""
    return ConvertOptions.from_dict({**plan.inputs, "dataset_size": plan.dataset_size,
                                     "noise_model": recorded_noise_model(plan), **changes})


def recorded_noise_model(plan: Plan):
    """The plan's recorded noise model (plan.probe.noise_model), or None."""
    doc = (plan.probe or {}).get("noise_model")
    if not doc:
        return None
    from bsadvisor.core.noise_model import NoiseModel

    return NoiseModel.from_dict(doc)


def baseline_of(plan: Plan) -> Plan:
    """The original LR schedule at the fixed batch B0, from the plan's recorded inputs."""
    needed = ("lr", "batch_size", "schedule")
    missing = [k for k in needed if plan.inputs.get(k) is None]
    if all(plan.inputs.get(k) is None for k in ("epochs", "total_samples", "total_steps")):
        missing.append("epochs")
    if missing:
        raise UserError(f"the plan does not record its original schedule ({', '.join(missing)} missing from "
                        "'inputs'); regenerate it with bsadvisor convert-schedule --out")
    return baseline(plan_options(plan))


def convert_schedule(**options: Any) -> Plan:
    """Convert an LR schedule at fixed batch into a batch-growth plan with the same temperature g(t).

    The keywords are :class:`ConvertOptions`' fields (lr, batch_size, dataset_size, epochs,
    schedule, momentum, max_batch, max_fraction, ...); see :func:`convert`.
    """
    return convert(ConvertOptions(**options))


class _Base(NamedTuple):
    """The plan's base point (ε_b, m_b, B_b): the original's peak temperature g_ref at the LR and
    momentum the plan trains with (the peak's, or a §5.2 variant's)."""

    lr: float
    momentum: float
    batch: float  # unrounded; may be inf when g_ref needs B > N
    variant: bool  # increase_lr or momentum_to moved the base away from (ε_peak, m_peak, B0)


def convert(options: ConvertOptions) -> Plan:
    """The batch-growth plan of ``options`` (module docstring): same temperature g(t), B grows instead of ε decaying.

    ``max_batch`` is the device cap (largest batch that fits, × devices × accumulation);
    ``max_fraction`` caps B at that fraction of N (the paper stops near N/10);
    ``noise_cap_batch`` caps it at a multiple of the measured noise scale (McCandlish et al.);
    ``increase_lr=K`` starts at K·ε0 with the batch that keeps g0 (paper §5.2);
    ``momentum_to=M`` trains at momentum M with B × (1−m)/(1−M) (paper §5.2);
    ``world_size``/``micro_batch``: data-parallel devices and the per-device micro-batch
    limit; the plan's batches are then rounded as :class:`Rounding` says (B0 itself is the
    user's and is kept).
    Long because it reads as the conversion's table of contents: each line one named step.
    """
    n, b0 = options.dataset_size, options.batch_size
    if b0 == n and not options.single_pass:
        raise UserError(f"batch_size {b0} equals dataset_size {n}: every step already uses the whole data set, so "
                        "there is no gradient noise to trade and no batch to grow into; give the batch size the "
                        "schedule was tuned at (batch growth needs B0 < N, typically B0 ≤ N/10)",
                        parameters=("batch_size", "dataset_size"))
    original = _original(options)
    model, temps = original.model, original.temperatures
    warnings: list[str] = []
    notes: list[str] = [f"temperature model: {model.describe()}"]

    # The original temperature trajectory, relative to its peak (after any warmup).
    g_ref = max(temps)
    if g_ref <= 0:
        raise UserError("the schedule's LR is 0 throughout; nothing to convert")
    rho = [t / g_ref for t in temps]
    peak = temps.index(g_ref)  # a piece index; its first sample is pieces[peak].start
    if peak > 0:
        run = original.run
        first = original.pieces[peak].start
        end = (f"epoch {first // n}" if run.unit == "epoch" else f"step {run.step_at(first)}")
        notes.append(f"the schedule warms up until {end} (sample {first:,}): kept as an LR warmup at the starting "
                     "batch, update by update; only the decay after it is converted")
    if options.single_pass:
        notes.append("one pass over the data or less: every example is fresh, so the temperature uses the N → ∞ "
                     "form and the N/10 cap does not apply")
    if any(rho[i] > rho[i - 1] * (1 + 1e-6) for i in range(peak + 1, len(rho))):
        notes.append("the schedule rises again after its peak (a restart): where the LR would pass the peak's by "
                     f"{RISE_TOLERANCE:.0%} the batch comes back down (never below the starting batch) and the LR "
                     "carries the rest")

    base = _base_point(options, original.pieces[peak], g_ref, model, notes, warnings)
    rounding = Rounding(options.round_to, options.world_size, options.micro_batch)
    if options.growth_factor is not None and not rounding.allows(b0):
        # integer growth multiplies B0 itself: it must already split evenly for every stage to
        raise UserError(f"growth_factor makes every batch B0 × {options.growth_factor}^i, but batch_size {b0} is not "
                        f"one of the allowed batches ({rounding.describe()}); give a batch_size that is, or leave "
                        "out growth_factor", parameters=("growth_factor", "batch_size"))
    cap_info, b_start, b_base = _cap(options, rounding, base, warnings, noise_caps := _noise_caps(options, original))
    follow = options.schedule.momentum(0) is not None and options.momentum_to is None  # a table's momentum column
    stairs = _Staircase(pieces=original.pieces, rho=rho, targets=_targets(rho, g_ref, model, base, peak, original.pieces,
                                                                          follow), peak=peak, g_ref=g_ref, model=model,
                        lr_base=base.lr, m_base=base.momentum, b_base=b_base, b_start=b_start, cap=cap_info["batch_size"], rounding=rounding,
                        factor=_stage_factor(options), b0=b0, growth=options.growth_factor,
                        caps=_piece_caps(noise_caps, cap_info["batch_size"], rounding), follow_momentum=follow,
                        dataset_size=options.dataset_size)
    stairs, cap_words = _fit_stages(stairs, options.max_stages, _CAP_WORDS[cap_info["limited_by"]], notes)
    per_span = stairs.spans()
    stages = _without_idle_stages(_merge(per_span, model, g_ref), n)
    stages = _adam_sde(stages, b0, notes) if options.adam_sde and model.is_adam else stages
    _remarks(options, stairs, per_span, stages, cap_words, base.variant, notes, warnings)
    return Plan(stages=stages, dataset_size=n, inputs={**options.to_dict(), "stage_factor": stairs.factor},
                baseline_updates=original.run.updates(), cap=cap_info, warnings=warnings, notes=notes)


def _stage_factor(options: ConvertOptions) -> float:
    """The given stage factor; by default one batch stage per step of a step schedule, doublings for a smooth one."""
    if options.stage_factor is not None:
        return options.stage_factor
    if options.growth_factor is not None:
        return float(options.growth_factor)
    if options.schedule.piecewise_constant:
        return 1.0
    # A smooth schedule read once an epoch: stages of whole epochs, a new one per doubling. Read
    # per step, a stage may start at any update at no cost, so follow the target more closely:
    # a staircase of ratio r trains at (r − 1)/(r·ln r) of the target batch on average, 0.72 at
    # r = 2 and 0.90 at r = 1.25.
    return 2.0 if options.schedule_unit == "epoch" else 1.25


def _base_point(options: ConvertOptions, peak: _Piece, g_ref: float, model: TemperatureModel,
                notes: list[str], warnings: list[str]) -> _Base:
    """The base point at the peak temperature g_ref, and what the §5.2 variants and Adam add to the report."""
    increase_lr, momentum_to = options.increase_lr, options.momentum_to
    lr_base = peak.lr * (increase_lr or 1.0)
    if not math.isfinite(lr_base):
        raise UserError(f"increase_lr {increase_lr:g} times the LR {peak.lr:g} overflows; the paper used K = 5",
                        parameter="increase_lr")
    m_base = momentum_to if momentum_to is not None else peak.momentum
    variant = increase_lr not in (None, 1.0) or (momentum_to is not None and momentum_to != peak.momentum)
    b_base = model.batch_for(g_ref, lr_base, m_base, peak.start) if variant else float(options.batch_size)
    if increase_lr not in (None, 1.0):
        notes.append(f"increased-LR variant (§5.2): LR × {increase_lr:g} and the batch that keeps g0: "
                     f"{options.batch_size} → {b_base:.1f}")
    if momentum_to is not None and momentum_to != peak.momentum:
        notes.append(f"momentum {peak.momentum:g} → {momentum_to:g} (§5.2): batch × (1−m)/(1−m′) keeps g0")
        warnings.append("raising the momentum costs some accuracy and the momentum buffer needs a few epochs "
                        "to adapt after each batch change (Smith et al. §5.2); validate before adopting")
    if model.is_adam:
        held = ("the rule that held on every model measured (docs/results.md)" if model.adam_rule == "linear"
                else "which did not hold on every model measured (the linear rule, the default, did: docs/results.md)")
        warnings.append(f"{options.optimizer}: applied the {ADAM_RULE_WORDS[model.adam_rule]}, {held}; no rule is "
                        "established for Adam in theory, only a validation run settles it for your model "
                        "(bsadvisor validate)")
    return _Base(lr_base, m_base, b_base, variant)


#: How a plan's warning names each Adam rule (a decay of the LR by α becomes ...).
ADAM_RULE_WORDS = {"sqrt": "square-root rule (a decay of the LR by α becomes batch × α²)",
                   "linear": "linear rule (a decay of the LR by α becomes batch × α)",
                   "noise": "noise-aware rule (batch × α² below the noise scale, × α above it, eq. 24)",
                   "seesaw": "Seesaw rule (a decay of the LR by α becomes batch × α and LR ÷ √α)"}


def _noise_caps(options: ConvertOptions, original: _Original) -> Optional[list[float]]:
    """Each piece's noise-scale cap, or None without one.

    A number caps every piece alike; a callable (core.noise_model.NoiseCap) gives K·B_noise(s)
    at each piece's start and temperature (docs/concepts.md eq. 16). The batch never shrinks,
    so a piece's cap is the least of its own and every later piece's: a stage chosen under
    it stays under the cap for as long as it lasts.
    """
    cap = options.noise_cap_batch
    if cap is None:
        return None
    limit, proxy = float(options.dataset_size or math.inf), original.model.proxy  # eq. 16's T (temperature_model)
    caps = [min(float(cap(p.start, proxy.temperature(p.lr, p.momentum, options.batch_size, p.start), proxy))
                if callable(cap) else float(cap), limit) for p in original.pieces]
    for i in range(len(caps) - 2, -1, -1):
        caps[i] = min(caps[i], caps[i + 1])
    return caps


def _piece_caps(noise_caps: Optional[list[float]], cap: int, rounding: Rounding) -> Optional[list[int]]:
    """Each piece's cap for the staircase: the noise-scale cap (rounded down to an allowed batch) under the plan's."""
    if noise_caps is None:
        return None
    return [min(cap, rounding.floor(max(1, math.floor(c)))) for c in noise_caps]


def _cap(options: ConvertOptions, rounding: Rounding, base: _Base, warnings: list[str],
         noise_caps: Optional[list[float]] = None) -> tuple[dict[str, Any], int, float]:
    """The cap, the smallest of the device, the dataset fraction and the noise-scale limit (at the run's end,
    its largest; each piece has its own, see _noise_caps).

    Returns the plan's ``cap`` record, the starting batch and the (possibly capped) base batch.
    """
    n, b0 = options.dataset_size, options.batch_size
    limits = {}
    if not options.single_pass:
        limits["max_fraction"] = max(1, math.floor(options.max_fraction * n))
    if options.max_batch is not None:
        limits["device"] = options.max_batch
    if noise_caps is not None:
        limits["noise_scale"] = max(1, math.floor(noise_caps[-1]))
    if not limits:  # a single pass with no device or noise cap: at least 100 updates in the run
        limits["run_length"] = max(1, options.run_samples // 100)
        warnings.append(f"no cap on the batch (single pass, no --max-batch, no probe): capped at 1% of the run, "
                        f"{limits['run_length']:,} samples; give --max-batch or --probe for the device's limit")
    limited_by = min(limits, key=limits.get)
    cap = min(rounding.floor(min(limits.values())), n or options.run_samples)
    if options.growth_factor is not None:  # integer growth: the cap is the largest B0·K^i under it
        k, top = options.growth_factor, b0
        while top * k <= cap:
            top *= k
        cap = max(top, b0)
    b_base = base.batch
    b_start = rounding.nearest(min(b_base, float(n or options.run_samples))) if base.variant else b0  # b_base may be inf
    if cap < b_start:
        if base.variant:
            warnings.append(f"the variant's starting batch {b_start} exceeds the cap {cap}: it starts at the cap "
                            "with the LR lowered to keep g0")
            b_start, b_base = cap, float(cap)
        else:
            warnings.append(f"--batch-size {b0} already exceeds the cap {cap} ({_CAP_WORDS[limited_by]}); no room "
                            "to grow, "
                            "the LR decay stays as it is")
            cap = b_start
            limited_by = "batch_size"
    return {"batch_size": cap, "limited_by": limited_by, **limits}, b_start, b_base


def _fit_stages(stairs: "_Staircase", max_stages: Optional[int], cap_words: str,
                notes: list[str]) -> tuple["_Staircase", str]:
    """The staircase within ``max_stages`` batch sizes, and how the report names its cap."""
    fit = max_stages is not None and _count_batches(stairs.batches()) > max_stages
    if fit and max_stages == 1:  # one batch size: the staircase always steps up at the cap, so keep B, decay the LR
        stairs, cap_words = stairs._replace(cap=stairs.b_start), "--max-stages 1"
    elif fit:
        stairs = stairs._replace(factor=_fit_factor(stairs, max_stages))
    if fit:
        notes.append(f"at most {max_stages} batch stages: a new batch when the target grew by ×{stairs.factor:.3g}")
    elif stairs.factor > 1:
        notes.append(f"a new batch stage when the target batch has grown by ×{stairs.factor:.3g}; "
                     "inside a stage the LR carries the rest")
    return stairs, cap_words


def _remarks(options: ConvertOptions, stairs: "_Staircase", per_span: list[_Span], stages: list[Stage],
             cap_words: str, variant: bool, notes: list[str], warnings: list[str]) -> None:
    """What the report says about the finished staircase: the hybrid tail, N/10, rounding, units."""
    n, b0, model, rounding = options.dataset_size, options.batch_size, stairs.model, stairs.rounding
    first = next((i for i, p in enumerate(per_span) if p.phase == "hybrid"), None)
    if first is not None:
        warnings.append(_cap_warning(stairs, per_span[first], first, cap_words,
                                     _where(options.original(), per_span[first].start)))
    biggest = max(p.batch for p in per_span)
    if not options.single_pass and biggest > n / 10:
        why = (", and the proportional rule overstates the batch as B nears N (the exact rule, --rule exact, "
               "does not)" if model.rule == "proportional" and not model.is_adam else "; validate before adopting")
        warnings.append(f"batch {biggest} exceeds N/10 = {n / 10:g}: the paper stopped growing near N/10{why}")
    if options.growth_factor is not None:
        notes.append(f"integer growth: every stage's batch is {options.growth_factor}× the previous one; the LR "
                     "factor absorbs the difference from the exact target")
    if rounding != Rounding():
        notes.append(f"batches rounded to {rounding.describe()}: the LR factor absorbs the rounding, so the "
                     "realised temperature still follows the original")
        if not variant and not rounding.allows(b0):
            notes.append(f"--batch-size {b0} is not one of those batches: the plan starts at your batch {b0} "
                         f"(the original run, unchanged) and rounds only the grown batches")
    if options.schedule_unit == "step":
        notes.append("schedule read per step (once an update of the original run); the plan is indexed in samples "
                     "and the LR inside each stage follows the original step by step")
    notes.append("updates: a batch ends early only at the end of an epoch (the last partial batch is kept) or of "
                 "the run")
    notes.append(BATCHNORM_NOTE)


def _cap_warning(stairs: "_Staircase", span: _Span, i: int, cap_words: str, where: str) -> str:
    """The hybrid warning, in the cap line's terms: the cap that binds at piece ``i`` (the noise-scale cap
    where it is below the plan's cap, else the plan's cap, named by ``cap_words``), and the plan's cap the
    noise-scale cap rises to."""
    cap_there = stairs.cap_at(i)
    noise_there = stairs.caps is not None and stairs.caps[i] < stairs.cap
    words = _CAP_WORDS["noise_scale"] if noise_there else cap_words
    named = "" if cap_words == _CAP_WORDS["noise_scale"] else f" ({cap_words})"
    rises = (f"; the noise-scale cap rises with the run to the cap line's {stairs.cap}{named}, and the "
             "batch follows it" if noise_there else "")
    if cap_there <= span.batch and span.batch != cap_there:  # a cap below the batch it would grow from
        head = (f"from {where} the {words}, {cap_there}, is below the batch {span.batch}, so the batch stays at "
                f"{span.batch}")
    elif span.batch == cap_there:
        head = f"the batch reaches the cap of {cap_there} ({words}) at {where}"
    else:
        head = (f"the batch reaches the cap of {cap_there} ({words}) at {where} (batch {span.batch}: a step to "
                f"{cap_there} would be less than ×{stairs.factor:.3g})")
    return f"{head}{rises}; from there the LR carries the rest of the decay (hybrid)"


_CAP_WORDS = {"device": "device memory", "max_fraction": "--max-fraction of N", "noise_scale": "noise-scale cap",
              "batch_size": "the starting batch", "run_length": "1% of the run"}


def _targets(rho: list[float], g_ref: float, model: TemperatureModel, base: _Base, peak: int,
             pieces: list[_Piece], follow_momentum: bool = False) -> list[Optional[float]]:
    """The unrounded batch each piece asks for (from the peak on; None for the warmup before it).

    With ``follow_momentum`` (a table that sets the momentum) the plan trains at each piece's
    own momentum, as the original does, and the batch carries only the LR's part of ρ.
    The Seesaw rule asks for the batch that carries ρ once, v(B) = v(B_base)·ρ (B = B_base/ρ for
    B ≪ N), and leaves the rest of the square-root temperature to the LR (eq. 26).
    """
    if model.adam_rule == "seesaw" and model.is_adam:
        v_base = model.noise_factor(base.batch)
        return [model._batch_for_noise_factor(v_base * r) if i >= peak else None for i, r in enumerate(rho)]
    return [model.batch_for(g_ref * r, base.lr, p.momentum if follow_momentum else base.momentum, p.start)
            if i >= peak else None for i, (r, p) in enumerate(zip(rho, pieces))]


#: How far above the base (peak) LR a stage's LR may go before the batch comes back down (a rise of the
#: original's LR after its peak, e.g. a warm restart, is a fall of the target batch).
RISE_TOLERANCE = 0.05


class _Staircase(NamedTuple):
    """The batch-growth rule of one conversion (module docstring).

    From the ``peak`` piece on, piece i asks for the batch ``targets[i]`` that gives g_ref·ρ_i
    at the base LR and momentum; a new batch stage starts when that target has grown by
    ``factor`` (and the rounded batch by ``factor`` over the current one) or passed the
    ``cap`` (then to the cap, when that is ``factor`` above the current batch), and inside a
    stage the LR is f(B) × the original's (eq. 14). When the original's LR rises again (a warm
    restart) so far that f(B) × it would pass the base LR by RISE_TOLERANCE, the batch comes
    back down, never below ``b_start``. With ``growth`` K every new batch is K × the
    previous one. Pieces before the peak are the LR warmup, kept at ``b_start``. No batch
    stage is shorter than one update at its batch (:meth:`_without_short_stages`).
    """

    pieces: list[_Piece]
    rho: list[float]
    targets: list[Optional[float]]
    peak: int
    g_ref: float
    model: TemperatureModel
    lr_base: float
    m_base: float
    b_base: float
    b_start: int
    cap: int
    rounding: Rounding
    factor: float
    b0: int = 1
    growth: Optional[int] = None
    caps: Optional[list[int]] = None  # each piece's own cap (≤ cap), from a noise cap that varies with s
    follow_momentum: bool = False  # a table's momentum column: every piece trains at its own momentum
    dataset_size: Optional[int] = None  # N, where an epoch ends (None: streaming), for the update count

    def cap_at(self, i: int) -> int:
        return self.cap if self.caps is None else min(self.cap, self.caps[i])

    def momentum_at(self, i: int) -> float:
        """The momentum piece i trains with: its own (a table's momentum column) or the base point's."""
        return self.pieces[i].momentum if self.follow_momentum else self.m_base

    def lr_scale(self, i: int, batch: int) -> float:
        """f(B): the factor on the original's LR that keeps piece i's temperature at ``batch`` (eq. 14)."""
        piece = self.pieces[i]
        return self.model.scale_for(batch, self.b0, self.momentum_at(i), piece.momentum, piece.start)

    def _too_hot(self, i: int, batch: int) -> bool:
        """Whether ``batch`` at piece i needs an LR past the base LR × (1 + RISE_TOLERANCE)."""
        return self.lr_scale(i, batch) * self.pieces[i].lr > self.lr_base * (1 + RISE_TOLERANCE)

    def can_grow(self, batch: int, cap: int) -> bool:
        """Whether a stage above ``batch`` fits under ``cap`` (K × batch, or ``factor`` × batch)."""
        if self.growth is not None:
            return batch * self.growth <= cap
        return cap > batch and cap >= batch * self.factor * (1 - _EPS)

    def batches(self) -> list[tuple[int, float]]:
        """(batch, ref) of each piece: ``ref`` is the unrounded batch the current stage was chosen for.

        The starting batch itself is never re-rounded (a B0 that is not a multiple of
        --round-to stays B0): stages change only after the peak piece.
        """
        out = []
        ref = min(self.b_base, float(self.cap_at(self.peak)))
        batch = self.b_start
        for i, target in enumerate(self.targets):
            if i > self.peak:
                batch, ref = (self._down(i, target, batch) if batch > self.b_start and self._too_hot(i, batch)
                              else self._up(i, target, batch, ref))
            out.append((batch, ref))
        return self._without_short_stages(out)

    def _up(self, i: int, target: float, batch: int, ref: float) -> tuple[int, float]:
        """(batch, ref) at piece i when the target may have grown: a new stage ``factor`` above, or K ×."""
        cap = self.cap_at(i)
        if self.growth is not None:
            while batch * self.growth <= cap and target >= batch * self.growth * (1 - _EPS):
                batch *= self.growth
            return batch, float(batch)
        want = min(target, float(cap))
        if want >= ref * self.factor * (1 - _EPS) or (target >= cap * (1 - _EPS) and self.can_grow(batch, cap)):
            nearest = min(self.rounding.nearest(want), cap)
            if self._too_hot(i, nearest):  # rounded up too far for a small batch: round down instead
                nearest = min(self.rounding.floor(want), cap)
            if nearest > batch and nearest >= batch * self.factor * (1 - _EPS):
                return nearest, want
        return batch, ref

    def _down(self, i: int, target: float, batch: int) -> tuple[int, float]:
        """(batch, ref) at piece i after the original's LR rose: the batch comes back down, at least a
        ``factor`` (or K) below, to one whose LR stays at the base LR, never below ``b_start``."""
        if self.growth is not None:
            while batch > self.b_start and self._too_hot(i, batch):
                batch //= self.growth
            return batch, float(batch)
        lower = min(self.rounding.floor(target), self.rounding.floor(batch / self.factor))
        batch = max(self.b_start, lower if lower < batch else self.b_start)
        return batch, float(batch)

    def _without_short_stages(self, batches: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """``batches`` with every batch stage shorter than one update at its batch folded into the smaller of
        its neighbours (a smaller batch only lowers the LR that keeps the temperature)."""
        from bsadvisor.core.original import updates_per_stage

        batches = list(batches)
        while True:
            runs = _runs([b for b, _ in batches])
            stages = [(self.pieces[a].start, self.pieces[b - 1].end, batch) for a, b, batch in runs]
            counts = updates_per_stage(self.pieces[-1].end, self.dataset_size, stages)
            short = next((k for k in range(1, len(runs)) if counts[k] == 0 or stages[k][1] - stages[k][0] < runs[k][2]),
                         None)
            if short is None:
                return batches
            a, b, batch = runs[short]
            smaller = min([runs[short - 1][2]] + ([runs[short + 1][2]] if short + 1 < len(runs) else []))
            if smaller >= batch:  # a short dip (a restart) between larger batches: keep its lower LR
                return batches
            batches[a:b] = [(smaller, float(smaller))] * (b - a)

    def spans(self) -> list[_Span]:
        """(batch, LR factor, momentum) of each piece: the factor f(B) keeps the original's temperature (eq. 14)."""
        out: list[_Span] = []
        for i, (piece, r, target, (batch, _ref)) in enumerate(zip(self.pieces, self.rho, self.targets,
                                                                   self.batches())):
            if i < self.peak:
                phase = "warmup"
            elif out and out[-1].phase == "hybrid" and out[-1].batch == batch:
                phase = "hybrid"  # capped once, the batch stays capped until its next stage (a rising cap may free it)
            else:
                phase = "hybrid" if not self.can_grow(batch, self.cap_at(i)) and target > batch * (1 + _EPS) else "growth"
            scale = self.lr_scale(i, batch)
            if not math.isfinite(scale) and piece.lr == 0:  # B = N where the schedule reaches LR 0: nothing to keep
                scale = 0.0
            if not math.isfinite(scale):  # B = N leaves no gradient noise, so no LR can raise g again
                raise UserError(f"at sample {piece.start:,} the schedule asks for a higher temperature than batch "
                                f"{batch} (= N) can give at any LR; lower --max-fraction, or end the schedule before "
                                "it rises again")
            if abs(scale - 1) < _EPS:  # float noise; keep the user's numbers exact
                scale = 1.0
            out.append(_Span(piece.start, piece.end, batch, scale * piece.lr, scale, self.momentum_at(i), r, phase))
        return _steady_scales(out) if self.model.uses_noise_scale else out


def _runs(values: list) -> list[tuple[int, int, Any]]:
    """(first index, end index, value) of each run of equal consecutive ``values``."""
    runs, start = [], 0
    for k in range(1, len(values) + 1):
        if k == len(values) or values[k] != values[start]:
            runs.append((start, k, values[start]))
            start = k
    return runs


#: Under the noise rule, the most a stage's LR factor may be off the exact one at any of its spans (eq. 25).
NOISE_SCALE_TOLERANCE = 0.05


def _steady_scales(spans: list[_Span]) -> list[_Span]:
    """One LR factor for each run of spans at one batch, where the exact factor drifts with B_noise(s).

    Under the noise rule the factor that keeps T at a batch depends on B_noise(s), which moves
    inside a stage; a stage trains at one factor. Consecutive spans share the geometric middle
    of their exact factors while those stay within 1 ± NOISE_SCALE_TOLERANCE of it, so the
    realised temperature is within that tolerance of the original's; past it a new stage
    (same batch, new factor) begins (eq. 25).
    """
    out, group = [], []

    def flush():
        finite = [s.lr_scale for s in group if s.lr_scale > 0]
        mid = math.sqrt(min(finite) * max(finite)) if finite else 0.0
        for s in group:
            f = mid if s.lr_scale > 0 else s.lr_scale
            out.append(_Span(s.start, s.end, s.batch, f * (s.lr / s.lr_scale) if s.lr_scale else s.lr, f,
                             s.momentum, s.rho, s.phase))
        group.clear()

    limit = (1 + NOISE_SCALE_TOLERANCE) ** 2  # every span then within 1 ± tolerance of the middle
    for span in spans:
        if group:
            same = span.batch == group[0].batch and span.phase == group[0].phase and span.momentum == group[0].momentum
            scales = [s.lr_scale for s in group if s.lr_scale > 0] + ([span.lr_scale] if span.lr_scale > 0 else [])
            if not same or (scales and max(scales) / min(scales) > limit):
                flush()
        group.append(span)
    if group:
        flush()
    return out


def _adam_sde(stages: list[Stage], b0: int, notes: list[str]) -> list[Stage]:
    """Malladi et al.'s companion scaling (eq. 27): at a batch κ·B0, β1 → β1^κ, 1−β2 × κ and ε ÷ √κ.

    The SDE that makes η ∝ √B keep Adam's dynamics also scales Adam's averaging horizons
    and its ε with the batch factor κ (relative to the original's batch at the same
    sample). β1 is the stage's momentum, raised to κ: its horizon 1/(1−β1^κ) is the original's
    measured in examples (κ× fewer updates of κ× the examples), ≈ κ·(1−β1) for β1 near 1 but
    never negative (1 − κ·(1−β1) is 0.04 at β1 0.9 and κ 9.6; 0.9^9.6 is 0.36). β2 and ε are
    factors the scheduler applies to the optimizer's own values (1−β2 × κ, capped at 1, for
    β2 near 1 the same as β2^κ; ε ÷ √κ).
    """
    out, shown = [], []
    for st in stages:
        kappa = st.batch_size / b0
        if kappa == 1:
            out.append(st)
            continue
        beta1 = st.momentum ** kappa  # the horizon in examples kept (eq. 27)
        out.append(replace(st, momentum=beta1, extra={**st.extra, "beta2_factor": kappa, "eps_factor": kappa ** -0.5}))
        shown.append(f"batch {st.batch_size}: β1 {beta1:.3g}, 1−β2 × {kappa:.3g}, ε × {kappa ** -0.5:.3g}")
    if shown:
        notes.append("Adam companion scaling (Malladi et al. 2205.10287, --adam-sde): " + "; ".join(dict.fromkeys(shown)))
    return out


def _count_batches(batches) -> int:
    """Distinct consecutive batch sizes in a list of spans or of (batch, ref) pairs."""
    bs = [b.batch if isinstance(b, _Span) else b[0] for b in batches]
    return 1 + sum(1 for a, b in zip(bs, bs[1:]) if a != b)


def _fit_factor(stairs: _Staircase, max_stages: int) -> float:
    """Smallest stage factor (bisection in log space) giving at most ``max_stages`` batch sizes."""
    lo = math.log(max(stairs.factor, 1.0))
    hi = math.log(max(stairs.cap / max(stairs.b_start, 1), 1.0) * 2 + 1)
    best = math.exp(hi)
    for _ in range(60):  # to float precision: a factor just above a boundary would skip a step
        mid = (lo + hi) / 2
        if _count_batches(stairs._replace(factor=math.exp(mid)).batches()) <= max_stages:
            best, hi = math.exp(mid), mid
        else:
            lo = mid
    return best


def _without_idle_stages(stages: list[Stage], dataset_size: Optional[int]) -> list[Stage]:
    """``stages`` with every stage in which no update starts folded into a neighbour of its batch.

    The runtime reads a stage's settings where an update starts, so such a stage never
    trains; the staircase already makes every batch last an update, so it shares its batch
    with the stage before or after (a phase or factor that changed under one update) and
    folding it changes no update.
    """
    from bsadvisor.core.original import updates_per_stage

    stages = list(stages)
    counts = updates_per_stage(stages[-1].end_sample, dataset_size,
                               [(s.start_sample, s.end_sample, s.batch_size) for s in stages])
    out: list[Stage] = []
    for i, (stage, count) in enumerate(zip(stages, counts)):
        after = stages[i + 1] if i + 1 < len(stages) else None
        if count == 0 and out and out[-1].batch_size == stage.batch_size:
            out[-1] = replace(out[-1], end_sample=stage.end_sample)
        elif count == 0 and after is not None and after.batch_size == stage.batch_size:
            stages[i + 1] = replace(after, start_sample=stage.start_sample)
        else:
            out.append(stage)
    return out


def _merge(per_span: list[_Span], model: TemperatureModel, g_ref: float) -> list[Stage]:
    """Consecutive spans with the same (batch, LR factor, momentum, phase) become one Stage."""
    def key(span: _Span) -> tuple:
        return (span.batch, span.lr_scale, span.momentum, span.phase)

    stages: list[Stage] = []
    i = 0
    while i < len(per_span):
        cur, j = per_span[i], i + 1
        while j < len(per_span) and key(per_span[j]) == key(cur):
            j += 1
        realised = model.temperature(cur.lr, cur.momentum, cur.batch, cur.start) / g_ref if g_ref > 0 else 1.0
        stages.append(Stage(start_sample=cur.start, end_sample=per_span[j - 1].end, batch_size=cur.batch, lr=cur.lr,
                            momentum=cur.momentum, temperature=realised, target_temperature=cur.rho, phase=cur.phase,
                            lr_scale=cur.lr_scale))
        i = j
    return stages
