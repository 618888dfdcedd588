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
The steps live in their own modules: rounding.py, spans.py (the original run on spans),
staircase.py, adam_sde.py, remarks.py, and baseline.py (the original schedule as a plan).
No torch here: this module must import in milliseconds.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from bsadvisor.core.adam_sde import adam_sde
from bsadvisor.core.defaults import ADAM_FAMILY, ADAM_STAGE_FACTOR
from bsadvisor.core.errors import UserError
from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.plan import Plan
from bsadvisor.core.remarks import CAP_WORDS, remarks
from bsadvisor.core.rounding import EPS, Rounding
from bsadvisor.core.spans import Original, Piece, merge, read_original
from bsadvisor.core.staircase import RISE_TOLERANCE, Staircase, fit_stages, without_idle_stages
from bsadvisor.core.temperature import TemperatureModel


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
    """The batch-growth plan of ``options`` (core/convert.py's docstring): same temperature g(t), B grows instead of ε decaying.

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
    original = read_original(options)
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
    stairs = Staircase(pieces=original.pieces, rho=rho, targets=_targets(rho, g_ref, model, base, peak, original.pieces,
                                                                         follow), peak=peak, g_ref=g_ref, model=model,
                       lr_base=base.lr, m_base=base.momentum, b_base=b_base, b_start=b_start, cap=cap_info["batch_size"], rounding=rounding,
                       factor=_stage_factor(options), b0=b0, growth=options.growth_factor,
                       caps=_piece_caps(noise_caps, cap_info["batch_size"], rounding), follow_momentum=follow,
                       dataset_size=options.dataset_size)
    stairs, cap_words = fit_stages(stairs, options.max_stages, CAP_WORDS[cap_info["limited_by"]], notes)
    per_span = stairs.spans()
    stages = without_idle_stages(merge(per_span, model, g_ref), n)
    stages = adam_sde(stages, b0, notes) if options.adam_sde and model.is_adam else stages
    remarks(options, stairs, per_span, stages, cap_words, base.variant, notes, warnings)
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
    # r = 2, 0.90 at r = 1.25 and 0.98 at r = 1.05. Adam's growth limit leaves room for three
    # steps of 1.25 only; there the finer ratio did as well or better (ADAM_STAGE_FACTOR).
    if options.schedule_unit == "epoch":
        return 2.0
    if options.optimizer in ADAM_FAMILY and options.growth_limit is not None:
        return ADAM_STAGE_FACTOR
    return 1.25


def _base_point(options: ConvertOptions, peak: Piece, g_ref: float, model: TemperatureModel,
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
        held = ("the rule that held on most models at their recipes' LR; growth to 2 × B0 (the default "
                "--max-growth) was accepted at the recipe's LR on all nine AdamW models measured, but at a tuned "
                "LR (the best of a sweep) it was rejected on two of eight, the full conversion lost about 0.012 on "
                "both language models and every other rule more (docs/results.md)"
                if model.adam_rule == "linear" else
                "which lost on the models measured where the linear rule, the default, held (docs/results.md)")
        warnings.append(f"{options.optimizer}: applied the {ADAM_RULE_WORDS[model.adam_rule]}, {held}; no rule is "
                        "established for Adam, only a validation run settles it for your model (bsadvisor validate)")
    return _Base(lr_base, m_base, b_base, variant)


#: How a plan's warning names each Adam rule (a decay of the LR by α becomes ...).
ADAM_RULE_WORDS = {"sqrt": "square-root rule (a decay of the LR by α becomes batch × α²)",
                   "linear": "linear rule (a decay of the LR by α becomes batch × α)",
                   "noise": "noise-aware rule (batch × α² below the noise scale, × α above it, eq. 24)",
                   "seesaw": "Seesaw rule (a decay of the LR by α becomes batch × α and LR ÷ √α)"}


def _noise_caps(options: ConvertOptions, original: Original) -> Optional[list[float]]:
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
    return [min(cap, rounding.floor(_whole_cap(c))) for c in noise_caps]


def _whole_cap(c: float) -> int:
    """A noise cap in whole examples: rounded down, but not below a whole number it misses by a float's error
    (3 × B_noise 8 comes out of exp and log as 23.999…, and is 24)."""
    return max(1, math.floor(c * (1 + EPS)))


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
    b_start = rounding.nearest(min(base.batch, float(n or options.run_samples))) if base.variant else b0
    if options.growth_limit is not None:  # the hybrid: the plan's LR at most K × the original's (linear rule)
        limits["growth"] = max(b_start, math.floor(min(options.growth_limit * b_start, float(options.run_samples))))
    if noise_caps is not None:
        limits["noise_scale"] = _whole_cap(noise_caps[-1])
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
    b_base = base.batch  # may be inf (b_start, above, is bounded)
    if cap < b_start:
        if base.variant:
            warnings.append(f"the variant's starting batch {b_start} exceeds the cap {cap}: it starts at the cap "
                            "with the LR lowered to keep g0")
            b_start, b_base = cap, float(cap)
        else:
            warnings.append(f"--batch-size {b0} already exceeds the cap {cap} ({CAP_WORDS[limited_by]}); no room "
                            "to grow, "
                            "the LR decay stays as it is")
            cap = b_start
            limited_by = "batch_size"
    return {"batch_size": cap, "limited_by": limited_by, **limits}, b_start, b_base


def _targets(rho: list[float], g_ref: float, model: TemperatureModel, base: _Base, peak: int,
             pieces: list[Piece], follow_momentum: bool = False) -> list[Optional[float]]:
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
