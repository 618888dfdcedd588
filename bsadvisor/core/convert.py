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

Continuous schedules become a staircase: a new batch only when the target has grown
by ``stage_factor``; inside a stage the LR carries the residual, so the realised
temperature follows the original at every epoch (rounding of B aside).

The work is done on spans of epochs over which the original LR is constant
(``Schedule.pieces``), never epoch by epoch: a step schedule over a million epochs
costs as much as over two hundred. A schedule whose LR changes at more than
MAX_SPANS epochs (a cosine over a very long run) is refused with a bound.
No torch here: this module must import in milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import MAX_EPOCHS, Plan, Stage
from bsadvisor.core.schedules import Schedule, parse_schedule
from bsadvisor.core.temperature import TemperatureModel

# Relative slack for float noise when comparing batch targets.
_EPS = 1e-9
#: Most spans of constant LR a conversion handles (a smooth schedule has one per epoch).
MAX_SPANS = 10_000

#: The note every plan carries (convert-schedule has no model to look at; advise and validate,
#: which do, warn when the model really has BatchNorm layers).
BATCHNORM_NOTE = ("if the model has BatchNorm layers: their statistics depend on the batch; keep a fixed "
                  "per-device group (ghost batch norm) or check with bsadvisor validate")


@dataclass
class _Span:
    """Epochs [start, end) with one original LR/momentum and, once planned, one (batch, lr)."""

    start: int
    end: int
    batch: int
    lr: float
    momentum: float
    rho: float  # what the original schedule asks for, g/g0
    phase: str


def _check_positive(name: str, value, integer: bool = False, allow_none: bool = False, high=checks.MAX_INT):
    if value is None and allow_none:
        return None
    if integer:
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} must be a whole number, got {checks._show(value)}")
        return checks.integer(name, value, low=1, high=high)
    return checks.positive(name, value)


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


def _as_schedule(schedule: Union[str, Schedule, None]) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if schedule is None:
        raise UserError("no schedule given; pass --schedule, e.g. 'MultiStepLR(milestones=[60,120,160], gamma=0.2)'")
    return parse_schedule(schedule)


def _original(lr, batch_size, dataset_size, epochs, schedule, momentum, schedule_unit):
    """Validate the common inputs; return the schedule, ε0, the spans of constant LR, steps an epoch, N, B0, E.

    Each span is (start_epoch, end_epoch, lr, momentum) of the original run; the spans tile
    [0, E) and come from the schedule's pieces, so their number does not grow with E for a
    step schedule.
    """
    n = _check_positive("--dataset-size", dataset_size, integer=True)
    b0 = _check_positive("--batch-size", batch_size, integer=True)
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > MAX_EPOCHS:
        raise UserError(f"--epochs {checks._show(epochs)} is more than {MAX_EPOCHS:,}: a plan covers at most "
                        f"{MAX_EPOCHS:,} epochs (its users walk it epoch by epoch); give the run's real length")
    e = _check_positive("--epochs", epochs, integer=True)
    if b0 > n:
        raise UserError(f"--batch-size {b0} is larger than --dataset-size {n}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (0 <= momentum < 1):
        raise UserError(f"--momentum must be in [0, 1), got {checks._show(momentum)}")
    if schedule_unit not in ("epoch", "step"):
        raise UserError(f"--schedule-unit must be epoch or step, got {checks._show(schedule_unit)}")
    sched = _as_schedule(schedule)
    if lr is None:
        lrs = getattr(sched, "lrs", None)
        if not lrs:
            raise UserError("--lr is required (the LR the schedule starts from)")
        lr = lrs[0]
    lr = _check_positive("--lr", lr)
    sched.check_lr(lr)
    # A scheduler stepped per iteration is read at each epoch's first step, ceil(N/B0) steps an epoch.
    steps = math.ceil(n / b0) if schedule_unit == "step" else 1
    sched.check(e * steps, schedule_unit)
    spans = []
    for start, end in _epoch_spans(sched, e, steps):
        k = start * steps
        try:
            value = sched.lr(k, lr)
        except OverflowError:
            value = math.inf
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"the schedule gives LR {value!r} at epoch {start}; it must be a finite number ≥ 0")
        m = sched.momentum(k)
        spans.append((start, end, value, float(momentum) if m is None else m))
    return sched, lr, spans, steps, n, b0, e


def _epoch_spans(sched: Schedule, epochs: int, steps: int) -> list[tuple[int, int]]:
    """Epoch intervals tiling [0, epochs) over which the original LR and momentum are constant.

    Epoch j reads the schedule at step j·steps; a constant piece [a, b) of steps covers the
    epochs ⌈a/steps⌉ … ⌈b/steps⌉ − 1, a smooth piece one span per epoch.
    """
    horizon = epochs * steps
    spans: list[tuple[int, int]] = []
    seen = 0
    for a, b, smooth in sched.pieces(horizon, steps):
        seen += 1
        ea, eb = -(-a // steps), -(-b // steps)
        if ea < eb:
            if smooth:
                spans.extend((j, j + 1) for j in range(ea, min(eb, ea + MAX_SPANS + 1)))
            else:
                spans.append((ea, eb))
        if len(spans) > MAX_SPANS or seen > 4 * MAX_SPANS:
            raise UserError(f"the schedule changes the LR at more than {MAX_SPANS:,} of the {epochs:,} epochs "
                            f"({sched.describe()[:60]}); a plan holds at most {MAX_SPANS:,} stages: use a step "
                            "schedule (MultiStepLR, a CSV table) or fewer epochs")
    if not spans or spans[0][0] != 0 or spans[-1][1] != epochs or any(
            x[1] != y[0] for x, y in zip(spans, spans[1:])):  # a bug in a Schedule.pieces, not bad input
        raise AssertionError(f"schedule pieces do not tile [0, {epochs}): {spans[:5]}")
    return spans


def _temperatures(model: TemperatureModel, spans, b0: int, lr0: float) -> list[float]:
    """The original temperature of each span; an overflow says which number is too large."""
    temps = []
    for start, _end, x, m in spans:
        t = model.temperature(x, m, b0)
        if not math.isfinite(t):
            if x == lr0:
                raise UserError(f"--lr {lr0:g} is too large: the noise temperature ε/(1−m)·(N/B−1) overflows; "
                                "give the LR your schedule starts from (e.g. 0.1)")
            raise UserError(f"the schedule's LR {x:g} at epoch {start} is too large: the noise temperature overflows; "
                            "check the schedule's arguments")
        temps.append(t)
    return temps


def baseline_plan(*, lr: Optional[float], batch_size: int, dataset_size: int, epochs: int,
                  schedule: Union[str, Schedule], momentum: float = 0.0, schedule_unit: str = "epoch",
                  optimizer: str = "sgd", rule: str = "exact", adam_rule: str = "sqrt") -> Plan:
    """The original schedule as a Plan: batch B0 throughout, the schedule's LR in each epoch."""
    sched, lr, spans, steps, n, b0, e = _original(lr, batch_size, dataset_size, epochs, schedule, momentum,
                                                  schedule_unit)
    model = TemperatureModel(n, rule, optimizer, adam_rule)
    temps = _temperatures(model, spans, b0, lr)
    g_ref = max(temps)
    # B0 = N (full batch) has no gradient noise: g = 0 throughout; report the LR ratio instead.
    rho = [t / g_ref for t in temps] if g_ref > 0 else [x / max(s[2] for s in spans) if x else 0.0
                                                       for _, _, x, _ in spans]
    per_span = [_Span(a, z, b0, x, m, r, "original") for (a, z, x, m), r in zip(spans, rho)]
    stages = _merge(per_span, model, g_ref)
    return Plan(stages=stages, dataset_size=n, baseline_updates=e * math.ceil(n / b0),
                inputs={"kind": "baseline", "lr": lr, "batch_size": b0, "dataset_size": n, "epochs": e,
                        "momentum": momentum, "schedule": sched.describe(), "schedule_unit": schedule_unit},
                notes=["the original LR schedule at a fixed batch"])


def convert_schedule(*, lr: Optional[float], batch_size: int, dataset_size: int, epochs: int,
                     schedule: Union[str, Schedule], momentum: float = 0.0, schedule_unit: str = "epoch",
                     optimizer: str = "sgd", rule: str = "exact", max_batch: Optional[int] = None,
                     max_fraction: float = 0.1, round_to: int = 1, max_stages: Optional[int] = None,
                     stage_factor: Optional[float] = None, increase_lr: Optional[float] = None,
                     momentum_to: Optional[float] = None, adam_rule: str = "sqrt",
                     noise_cap_batch: Optional[float] = None, world_size: int = 1,
                     micro_batch: Optional[int] = None) -> Plan:
    """Convert an LR schedule at fixed batch into a batch-growth plan with the same temperature g(t).

    ``max_batch`` is the device cap (largest batch that fits, × devices × accumulation);
    ``max_fraction`` caps B at that fraction of N (the paper stops near N/10);
    ``noise_cap_batch`` caps it at a multiple of the measured noise scale (McCandlish et al.);
    ``increase_lr=K`` starts at K·ε0 with the batch that keeps g0 (paper §5.2);
    ``momentum_to=M`` trains at momentum M with B × (1−m)/(1−M) (paper §5.2);
    ``world_size``/``micro_batch``: data-parallel devices and the per-device micro-batch
    limit; the plan's batches are then rounded as :class:`Rounding` says (B0 itself is the
    user's and is kept).
    """
    sched, lr0, spans, steps, n, b0, e = _original(lr, batch_size, dataset_size, epochs, schedule, momentum,
                                                   schedule_unit)
    if b0 == n:
        raise UserError(f"--batch-size {b0} equals --dataset-size {n}: every step already uses the whole data set, so "
                        "there is no gradient noise to trade and no batch to grow into; give the batch size the "
                        "schedule was tuned at (batch growth needs B0 < N, typically B0 ≤ N/10)")
    model = TemperatureModel(n, rule, str(optimizer).lower(), adam_rule)
    if isinstance(max_fraction, bool) or not isinstance(max_fraction, (int, float)) or not 0 < max_fraction <= 1:
        raise UserError(f"--max-fraction must be in (0, 1], got {max_fraction!r}")
    round_to = _check_positive("--round-to", round_to, integer=True)
    world_size = _check_positive("--world-size", world_size, integer=True)
    micro_batch = _check_positive("--max-micro-batch", micro_batch, integer=True, allow_none=True)
    rounding = Rounding(round_to, world_size, micro_batch)
    max_batch = _check_positive("--max-batch", max_batch, integer=True, allow_none=True)
    max_stages = _check_positive("--max-stages", max_stages, integer=True, allow_none=True)
    stage_factor = _check_positive("--stage-factor", stage_factor, allow_none=True)
    if stage_factor is not None and stage_factor < 1:
        raise UserError(f"--stage-factor must be ≥ 1, got {stage_factor}")
    increase_lr = _check_positive("--increase-lr", increase_lr, allow_none=True)
    if increase_lr is not None and increase_lr < 1:
        raise UserError(f"--increase-lr must be ≥ 1 (it multiplies the LR and the batch), got {increase_lr}")
    if momentum_to is not None:
        if model.is_adam:
            raise UserError("--momentum-to applies to SGD momentum; Adam's β1 does not set the temperature")
        if isinstance(momentum_to, bool) or not isinstance(momentum_to, (int, float)) or not 0 <= momentum_to < 1:
            raise UserError(f"--momentum-to must be in [0, 1), got {momentum_to!r}")
    if max_batch is not None and max_batch < b0:
        raise UserError(f"--max-batch {max_batch} is smaller than --batch-size {b0}: the original batch does not fit; "
                        "lower --batch-size or allow gradient accumulation")

    warnings: list[str] = []
    notes: list[str] = [f"temperature model: {model.describe()}"]

    # The original temperature trajectory, relative to its peak (after any warmup).
    temps = _temperatures(model, spans, b0, lr0)
    g_ref = max(temps)
    if g_ref <= 0:
        raise UserError("the schedule's LR is 0 throughout; nothing to convert")
    rho = [t / g_ref for t in temps]
    peak = temps.index(g_ref)  # a span index; its first epoch is spans[peak][0]
    peak_epoch = spans[peak][0]
    if peak_epoch > 0:
        notes.append(f"epochs 0–{peak_epoch - 1} are LR warmup: kept as an LR warmup at the starting batch; "
                     f"only the decay from epoch {peak_epoch} on is converted")
    if any(rho[i] > rho[i - 1] * (1 + 1e-6) for i in range(peak + 1, len(rho))):
        warnings.append("the schedule rises again after its peak; the batch is never reduced, the LR carries the rise")

    # Base point of the plan: (ε_b, m_b, B_b) with the original's peak temperature.
    lr_peak, m_peak = spans[peak][2], spans[peak][3]
    lr_base = lr_peak * (increase_lr or 1.0)
    if not math.isfinite(lr_base):
        raise UserError(f"--increase-lr {increase_lr:g} times the LR {lr_peak:g} overflows; the paper used K = 5")
    m_base = momentum_to if momentum_to is not None else m_peak
    variant = increase_lr not in (None, 1.0) or (momentum_to is not None and momentum_to != m_peak)
    b_base = model.batch_for(g_ref, lr_base, m_base) if variant else float(b0)
    if increase_lr not in (None, 1.0):
        notes.append(f"increased-LR variant (§5.2): LR × {increase_lr:g} and the batch that keeps g0: "
                     f"{b0} → {b_base:.1f}")
    if momentum_to is not None and momentum_to != m_peak:
        notes.append(f"momentum {m_peak:g} → {momentum_to:g} (§5.2): batch × (1−m)/(1−m′) keeps g0")
        warnings.append("raising the momentum costs some accuracy and the momentum buffer needs a few epochs "
                        "to adapt after each batch change (Smith et al. §5.2); validate before adopting")
    if model.is_adam:
        warnings.append(f"{optimizer}: applied the {'square-root' if model.power == 0.5 else 'linear'} rule "
                        "(a decay of the LR by α becomes batch × "
                        f"{'α²' if model.power == 0.5 else 'α'}); for full equivalence also scale 1−β1, 1−β2 and "
                        "Adam's ε (Malladi et al. 2205.10287); only a validation run settles it (bsadvisor validate)")

    # The cap: the smallest of the device, the dataset fraction and the noise-scale limit.
    limits = {"max_fraction": max(1, math.floor(max_fraction * n))}
    if max_batch is not None:
        limits["device"] = max_batch
    if noise_cap_batch is not None:
        limits["noise_scale"] = max(1, math.floor(min(noise_cap_batch, n)))
    limited_by = min(limits, key=limits.get)
    cap = min(rounding.floor(min(limits.values())), n)
    b_start = rounding.nearest(min(b_base, float(n))) if variant else b0  # b_base may be inf (g0 needs B > N)
    if cap < b_start:
        if variant:
            warnings.append(f"the variant's starting batch {b_start} exceeds the cap {cap}: it starts at the cap "
                            "with the LR lowered to keep g0")
            b_start, b_base = cap, float(cap)
        else:
            warnings.append(f"--batch-size {b0} already exceeds the cap {cap} ({limited_by}); no room to grow, "
                            "the LR decay stays as it is")
            cap = b_start
            limited_by = "batch_size"
    cap_info = {"batch_size": cap, "limited_by": limited_by, **{k: v for k, v in limits.items()}}

    if stage_factor is None:
        # Step schedules: one batch stage per step of the schedule. Smooth ones: a staircase of doublings.
        stage_factor = 1.0 if sched.piecewise_constant else 2.0
    targets = _targets(rho, g_ref, model, lr_base, m_base, peak)
    fit = max_stages is not None and _count_batches(
        _batches(targets, b_base, b_start, cap, rounding, stage_factor, peak)) > max_stages
    cap_words = _CAP_WORDS[limited_by]
    if fit and max_stages == 1:  # one batch size: the staircase always steps up at the cap, so keep B, decay the LR
        cap, cap_words = b_start, "--max-stages 1"
    elif fit:
        stage_factor = _fit_factor(targets, b_base, b_start, cap, rounding, stage_factor, peak, max_stages)
    per_span = _staircase(spans, rho, targets, g_ref, model, lr_base, m_base, b_base, b_start, cap, rounding,
                          stage_factor, peak)
    if fit:
        notes.append(f"at most {max_stages} batch stages: a new batch when the target grew by ×{stage_factor:.3g}")
    elif stage_factor > 1:
        notes.append(f"a new batch stage when the target batch has grown by ×{stage_factor:.3g}; "
                     "inside a stage the LR carries the rest")

    stages = _merge(per_span, model, g_ref)
    hybrid_from = next((p.start for p in per_span if p.phase == "hybrid"), None)
    if hybrid_from is not None:
        warnings.append(f"the batch reaches the cap of {cap} ({cap_words}) at epoch {hybrid_from}; "
                        "from there the LR carries the rest of the decay (hybrid)")
    biggest = max(p.batch for p in per_span)
    if biggest > n / 10:
        why = (", and the proportional rule overstates the batch as B nears N (the exact rule, --rule exact, "
               "does not)" if model.rule == "proportional" and not model.is_adam else "; validate before adopting")
        warnings.append(f"batch {biggest} exceeds N/10 = {n / 10:g}: the paper stopped growing near N/10{why}")
    if rounding != Rounding():
        worst = max((abs(s.temperature / s.target_temperature - 1) for s in stages if s.target_temperature > 0),
                    default=0.0)
        notes.append(f"batches rounded to {rounding.describe()}: the realised temperature differs from the "
                     f"original by at most {100 * worst:.2f}%")
        if not variant and not rounding.allows(b0):
            notes.append(f"--batch-size {b0} is not one of those batches: the plan starts at your batch {b0} "
                         f"(the original run, unchanged) and rounds only the grown batches")
    if schedule_unit == "step":
        notes.append(f"schedule read per step, {steps} steps an epoch (ceil(N/B0)); the plan is indexed in epochs")
    notes.append("updates count ceil(N/B) per epoch: the last partial batch of an epoch is kept")
    notes.append(BATCHNORM_NOTE)

    inputs = {"lr": lr0, "batch_size": b0, "dataset_size": n, "epochs": e, "momentum": momentum,
              "schedule": sched.describe(), "schedule_unit": schedule_unit, "optimizer": str(optimizer).lower(),
              "rule": rule, "max_batch": max_batch, "max_fraction": max_fraction, "round_to": round_to,
              "world_size": world_size, "micro_batch": micro_batch,
              "max_stages": max_stages, "stage_factor": stage_factor, "increase_lr": increase_lr,
              "momentum_to": momentum_to, "adam_rule": adam_rule if model.is_adam else None}
    return Plan(stages=stages, dataset_size=n, inputs=inputs, baseline_updates=e * math.ceil(n / b0),
                cap=cap_info, warnings=warnings, notes=notes)


_CAP_WORDS = {"device": "device memory", "max_fraction": "--max-fraction of N", "noise_scale": "noise-scale cap",
              "batch_size": "the starting batch"}


def _targets(rho, g_ref, model, lr_base, m_base, peak) -> list[Optional[float]]:
    """The unrounded batch each span asks for (from the peak on; None for the warmup before it)."""
    return [model.batch_for(g_ref * r, lr_base, m_base) if i >= peak else None for i, r in enumerate(rho)]


def _batches(targets, b_base, b_start, cap, rounding, factor, peak) -> list[tuple[int, float]]:
    """(batch, ref) of each span: ``ref`` is the unrounded batch the current stage was chosen for.

    A new stage starts when the target grew by ``factor`` or passed the cap (then straight
    to the cap). The starting batch itself is never re-rounded (a B0 that is not a multiple
    of --round-to stays B0): stages change only after the peak span.
    """
    out = []
    ref = min(b_base, float(cap))
    batch = b_start
    lo, top = cap * (1 - _EPS), float(cap)
    for i, target in enumerate(targets):
        if i > peak:
            want = min(target, top)
            if want >= ref * factor * (1 - _EPS) or target >= lo:
                nearest = min(rounding.nearest(want), cap)
                if nearest > batch:
                    ref, batch = want, nearest
        out.append((batch, ref))
    return out


def _staircase(spans, rho, targets, g_ref, model, lr_base, m_base, b_base, b_start, cap, rounding, factor,
               peak) -> list[_Span]:
    """(batch, lr, momentum) of each span, following g_ref·ρ(t); see the module docstring.

    Spans before ``peak`` (the span the conversion starts from) are the LR warmup, kept at
    the starting batch; inside a stage the LR carries the residual, ε = lr_for(g, ref).
    """
    out: list[_Span] = []
    for i, ((start, end, _x, _m), r, target, (batch, ref)) in enumerate(
            zip(spans, rho, targets, _batches(targets, b_base, b_start, cap, rounding, factor, peak))):
        g = g_ref * r
        if i >= peak:
            phase = "hybrid" if batch == cap and target > cap * (1 + _EPS) else "growth"
        else:
            phase = "warmup"
        lr = model.lr_for(g, m_base, ref)
        if not math.isfinite(lr):  # B = N leaves no gradient noise, so no LR can raise g again
            raise UserError(f"at epoch {start} the schedule asks for a higher temperature than batch {batch} (= N) can "
                            "give at any LR; lower --max-fraction, or end the schedule before it rises again")
        if abs(lr / lr_base - 1) < _EPS:  # float noise of the inverse; keep the user's number
            lr = lr_base
        out.append(_Span(start, end, batch, lr, m_base, r, phase))
    return out


def _count_batches(batches) -> int:
    """Distinct consecutive batch sizes in a list of spans or of (batch, ref) pairs."""
    bs = [b.batch if isinstance(b, _Span) else b[0] for b in batches]
    return 1 + sum(1 for a, b in zip(bs, bs[1:]) if a != b)


def _fit_factor(targets, b_base, b_start, cap, rounding, factor, peak, max_stages) -> float:
    """Smallest stage factor (bisection in log space) giving at most ``max_stages`` batch sizes."""
    lo, hi = math.log(max(factor, 1.0)), math.log(max(cap / max(b_start, 1), 1.0) * 2 + 1)
    best = math.exp(hi)
    for _ in range(60):  # to float precision: a factor just above a boundary would skip a step
        mid = (lo + hi) / 2
        if _count_batches(_batches(targets, b_base, b_start, cap, rounding, math.exp(mid), peak)) <= max_stages:
            best, hi = math.exp(mid), mid
        else:
            lo = mid
    return best


def _merge(per_span: list[_Span], model: TemperatureModel, g_ref: float) -> list[Stage]:
    """Consecutive spans with the same (batch, lr, momentum, phase) become one Stage."""
    stages: list[Stage] = []
    i = 0
    while i < len(per_span):
        cur, j = per_span[i], i + 1
        while j < len(per_span) and (per_span[j].batch, per_span[j].lr, per_span[j].momentum, per_span[j].phase) \
                == (cur.batch, cur.lr, cur.momentum, cur.phase):
            j += 1
        realised = model.temperature(cur.lr, cur.momentum, cur.batch) / g_ref if g_ref > 0 else 1.0
        stages.append(Stage(start_epoch=cur.start, end_epoch=per_span[j - 1].end, batch_size=cur.batch, lr=cur.lr,
                            momentum=cur.momentum, temperature=realised, target_temperature=cur.rho, phase=cur.phase))
        i = j
    return stages
