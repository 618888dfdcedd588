"""convert_schedule against closed forms (Smith et al. 1711.00489; docs/concepts.md §1–3) and the paper's numbers.

Every expected number is computed here from the formulas (or taken from the paper /
torch), never through bsadvisor's own TemperatureModel:

    g = ε/(1−m)·(N/B − 1)                 exact rule
    g = ε·N/(B·(1−m))                     proportional rule
    B(t) = N/(1 + (N/B0 − 1)·ρ(t))        exact,   B(t) = B0/ρ(t) proportional
    hybrid past the cap: ε(t) = ε0·ρ(t)·(N/B0 − 1)/(N/B_cap − 1)  (exact)
"""
from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsadvisor.core.baseline import baseline_plan
from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.spans import MAX_SPANS
from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan

N, B0, LR, M, E = 50_000, 128, 0.1, 0.9, 200
PAPER = "MultiStepLR(milestones=[60,120,160], gamma=0.2)"


def g_exact(lr, m, b, n):
    return lr / (1 - m) * (n / b - 1)


def g_prop(lr, m, b, n):
    return lr * n / (b * (1 - m))


def batches(plan):
    return [(plan.epoch_of(s.start_sample), plan.epoch_of(s.end_sample), s.batch_size) for s in plan.stages]


def updates(plan, n):
    return sum((s.end_epoch - s.start_epoch) * math.ceil(n / s.batch_size) for s in plan.stages)


# ---------------------------------------------------------------- the paper's CIFAR-10 case
def test_cifar_proportional_paper_numbers():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER,
                         rule="proportional", max_fraction=1.0)
    assert batches(p) == [(0, 60, 128), (60, 120, 640), (120, 160, 3200), (160, 200, 16000)]
    assert all(math.isclose(s.lr, LR, rel_tol=1e-12) for s in p.stages)
    assert p.updates == 29_000 == 60 * 391 + 60 * 79 + 40 * 16 + 40 * 4
    assert p.baseline_updates == 78_200 == 200 * math.ceil(N / B0)


def test_cifar_exact_closed_form():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER,
                         rule="exact", max_fraction=1.0)
    expect = [N / (1 + (N / B0 - 1) * 0.2 ** k) for k in range(4)]
    assert [s.batch_size for s in p.stages] == [round(b) for b in expect]
    assert abs(p.stages[-1].batch_size - 12_145) <= 1  # docs/concepts.md §2: 12 145
    for s, k in zip(p.stages, range(4)):
        # realised temperature (stage LR and batch through the formula) vs 0.2^k
        g = g_exact(s.lr, s.momentum, s.batch_size, N) / g_exact(LR, M, B0, N)
        assert math.isclose(g, 0.2 ** k, rel_tol=1e-3)
        assert math.isclose(s.temperature, g, rel_tol=1e-9)
        assert math.isclose(s.target_temperature, 0.2 ** k, rel_tol=1e-12)
    assert p.updates == sum((b - a) * math.ceil(N / bs) for a, b, bs in batches(p))


def test_default_cap_is_a_tenth_of_n_and_hybrid():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER)
    assert p.cap["batch_size"] == 5000 and p.cap["limited_by"] == "max_fraction"
    last = p.stages[-1]
    assert last.batch_size == 5000 and last.phase == "hybrid"
    assert math.isclose(last.lr, LR * 0.008 * (N / B0 - 1) / (N / 5000 - 1), rel_tol=1e-12)


@pytest.mark.parametrize("cap", [1000, 2000, 4096])
def test_hybrid_exact_lr_beyond_device_cap(cap):
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER,
                         max_batch=cap, max_fraction=1.0)
    assert p.cap["batch_size"] == cap and p.cap["limited_by"] == "device"
    for epoch in (0, 60, 120, 160, 199):
        s, setting = p.stages[p.stage_index(epoch)], p.at(epoch)
        rho = 0.2 ** sum(epoch >= x for x in (60, 120, 160))
        target = N / (1 + (N / B0 - 1) * rho)
        if target > cap:
            assert setting.batch_size == cap and s.phase == "hybrid"
        else:
            assert setting.batch_size == round(target)
        # the LR factor keeps g exactly: ε = ε0·ρ·(N/B0 − 1)/(N/B − 1) at the stage's (rounded) batch
        b = setting.batch_size
        assert math.isclose(setting.lr, LR * rho * (N / B0 - 1) / (N / b - 1), rel_tol=1e-12)
    assert max(s.batch_size for s in p.stages) == cap


def test_hybrid_proportional_lr():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER,
                         rule="proportional", max_batch=1024, max_fraction=1.0)
    # the two capped stages are one stage at 1024 whose LR follows the original's decay (lr_scale 8)
    assert [s.batch_size for s in p.stages] == [128, 640, 1024]
    assert p.stages[-1].lr_scale == pytest.approx(1024 / B0, rel=1e-12)
    for epoch, rho in ((120, 0.04), (160, 0.008)):
        assert math.isclose(p.at(epoch).lr, LR * rho * 1024 / B0, rel_tol=1e-12)


# ---------------------------------------------------------------- §5.2 variants, Adam
BIG_N = 10_000_000  # so that nothing reaches a cap


def test_increase_lr_five():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=BIG_N, epochs=E, momentum=M, schedule=PAPER,
                         rule="proportional", increase_lr=5)
    assert [s.batch_size for s in p.stages] == [640, 3200, 16000, 80000]
    assert all(math.isclose(s.lr, 5 * LR, rel_tol=1e-12) for s in p.stages)
    g0 = g_prop(LR, M, B0, BIG_N)
    assert math.isclose(g_prop(p.stages[0].lr, M, 640, BIG_N), g0, rel_tol=1e-12)  # same g0
    plain = convert_schedule(lr=LR, batch_size=B0, dataset_size=BIG_N, epochs=E, momentum=M, schedule=PAPER,
                             rule="proportional")
    assert [s.batch_size for s in p.stages] == [5 * s.batch_size for s in plain.stages]


def test_momentum_to():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=BIG_N, epochs=E, momentum=0.9, schedule=PAPER,
                         rule="proportional", momentum_to=0.95)
    factor = (1 - 0.9) / (1 - 0.95)  # 2
    assert [s.batch_size for s in p.stages] == [round(B0 * factor * 5 ** k) for k in range(4)]
    assert all(s.momentum == 0.95 and math.isclose(s.lr, LR, rel_tol=1e-12) for s in p.stages)
    assert any("momentum" in w for w in p.warnings)


def test_momentum_to_with_adam_rejected():
    with pytest.raises(UserError, match="^momentum_to applies to SGD momentum"):
        convert_schedule(lr=1e-3, batch_size=B0, dataset_size=N, epochs=E, schedule=PAPER, optimizer="adam",
                         momentum_to=0.95)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_square_root_rule(optimizer):
    # LR decay by α = 0.5 at each milestone ⇒ batch × α⁻² = 4 (Malladi et al.), proportional rule
    p = convert_schedule(lr=1e-3, batch_size=32, dataset_size=BIG_N, epochs=30, schedule="MultiStepLR([10, 20], 0.5)",
                         optimizer=optimizer, rule="proportional", adam_rule="sqrt", max_growth=0)
    assert batches(p) == [(0, 10, 32), (10, 20, 128), (20, 30, 512)]
    assert all(math.isclose(s.lr, 1e-3, rel_tol=1e-12) for s in p.stages)
    assert any("square-root" in w for w in p.warnings)
    lin = convert_schedule(lr=1e-3, batch_size=32, dataset_size=BIG_N, epochs=30,
                           schedule="MultiStepLR([10, 20], 0.5)", optimizer=optimizer, rule="proportional",
                           max_growth=0)
    assert [s.batch_size for s in lin.stages] == [32, 64, 128]  # the linear rule is the default (results.md)
    assert lin.inputs["adam_rule"] == "linear"


def test_adam_ignores_momentum_for_temperature():
    a = convert_schedule(lr=1e-3, batch_size=32, dataset_size=BIG_N, epochs=30, schedule="MultiStepLR([10, 20], 0.5)",
                         optimizer="adam", rule="proportional", momentum=0.9, max_growth=0)
    assert [s.batch_size for s in a.stages] == [32, 64, 128]


# ---------------------------------------------------------------- warmup, units, tables
WARMUP = "SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=95)], milestones=[5])"


def test_warmup_stays_lr_warmup():
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as L

    prm = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([prm], lr=0.4, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sch = L.SequentialLR(opt, [L.LinearLR(opt, start_factor=0.1, total_iters=5), L.CosineAnnealingLR(opt, T_max=95)],
                             milestones=[5])
        ref = []
        for _ in range(100):
            ref.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
    n, b0 = 1_281_167, 256
    p = convert_schedule(lr=0.4, batch_size=b0, dataset_size=n, epochs=100, momentum=0.9, schedule=WARMUP)
    for epoch in range(5):
        st_ = p.at(epoch)
        assert st_.batch_size == b0
        assert math.isclose(st_.lr, ref[epoch], rel_tol=1e-9)
        assert p.stages[p.stage_index(epoch)].phase == "warmup"
    assert p.at(5).batch_size == b0 and math.isclose(p.at(5).lr, 0.4, rel_tol=1e-12)
    g_peak = g_exact(0.4, 0.9, b0, n)
    for epoch in range(5, 100):
        s = p.stages[p.stage_index(epoch)]
        assert s.batch_size >= b0 and s.phase != "warmup"
        # target from torch's LR, not from the code under test
        start = p.epoch_of(s.start_sample)
        assert math.isclose(s.target_temperature, g_exact(ref[start], 0.9, b0, n) / g_peak, rel_tol=1e-9)
        # inside the stage the LR follows torch's cosine times the stage's factor
        assert math.isclose(p.at(epoch).lr, ref[epoch] * s.lr_scale, rel_tol=1e-9)
    assert any("warmup" in x for x in p.notes)


def test_schedule_unit_step():
    spe = math.ceil(N / B0)  # 391 steps an epoch
    ms = [60 * spe, 120 * spe + 100]  # the second falls inside epoch 120, at its 101st update
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, rule="proportional",
                         max_fraction=1.0, schedule=f"MultiStepLR(milestones={ms}, gamma=0.2)", schedule_unit="step")
    # the plan follows the step where it happens, not the next epoch: sample 120·N + 100·B0
    assert [(s.start_sample, s.end_sample, s.batch_size) for s in p.stages] == [
        (0, 60 * N, 128), (60 * N, 120 * N + 100 * B0, 640), (120 * N + 100 * B0, 200 * N, 3200)]
    with pytest.raises(UserError, match="milestone"):
        convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, schedule_unit="step",
                         schedule=f"MultiStepLR(milestones=[{E * spe}], gamma=0.2)")
    # the same milestones read per epoch are past the end
    with pytest.raises(UserError):
        convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, schedule=f"MultiStepLR(milestones={ms})")


def test_csv_table_with_momentum(tmp_path):
    f = tmp_path / "lr.csv"
    f.write_text("epoch,lr,momentum\n0,0.1,0.9\n60,0.02,0.9\n120,0.004,0.95\n")
    p = convert_schedule(lr=None, batch_size=B0, dataset_size=BIG_N, epochs=E, schedule=str(f), rule="proportional")
    g0 = g_prop(0.1, 0.9, B0, BIG_N)
    rhos = [1.0, g_prop(0.02, 0.9, B0, BIG_N) / g0, g_prop(0.004, 0.95, B0, BIG_N) / g0]  # 1, 0.2, 0.08
    # the plan follows the table's momentum as the original does, so the batch carries the LR's decay only
    assert batches(p) == [(0, 60, 128), (60, 120, round(B0 * 0.1 / 0.02)), (120, 200, round(B0 * 0.1 / 0.004))]
    assert [s.momentum for s in p.stages] == [0.9, 0.9, 0.95]
    for s, r in zip(p.stages, rhos):
        assert math.isclose(g_prop(s.lr, s.momentum, s.batch_size, BIG_N) / g0, r, rel_tol=1e-9)


def test_round_to():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER,
                         max_fraction=1.0, round_to=8)
    exact = [N / (1 + (N / B0 - 1) * 0.2 ** k) for k in range(4)]
    assert [s.batch_size for s in p.stages] == [max(8, 8 * round(b / 8)) for b in exact]  # 128, 632, 3016, 12144
    for s, b, k in zip(p.stages, exact, range(4)):
        assert s.batch_size % 8 == 0
        realised = g_exact(s.lr, s.momentum, s.batch_size, N) / g_exact(LR, M, B0, N)
        assert math.isclose(s.temperature, realised, rel_tol=1e-9)
        assert abs(realised / 0.2 ** k - 1) < 0.01
    assert any("rounded" in x for x in p.notes)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_max_stages(k):
    p = convert_schedule(lr=0.4, batch_size=256, dataset_size=1_281_167, epochs=90, momentum=0.9,
                         schedule="CosineAnnealingLR(T_max=90)", max_batch=16384, max_stages=k)
    distinct = {s.batch_size for s in p.stages}
    assert len(distinct) <= k
    if k > 1:
        assert len(distinct) >= 2
    bs = [s.batch_size for s in p.stages]
    assert bs == sorted(bs)


def test_baseline_plan():
    p = baseline_plan(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER)
    # one stage at B0 whose LR is the original's own (lr_scale 1), read where torch would step it
    assert batches(p) == [(0, 200, 128)] and p.stages[0].lr_scale == 1.0
    assert [p.at(e).lr for e in (0, 59, 60, 120, 160, 199)] == pytest.approx(
        [0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008], rel=1e-12)
    assert p.updates == p.baseline_updates == 78_200


def test_lr_zero_at_full_dataset_batch():
    # cosine reaches LR 0 at its last epoch; with the cap at N the exact rule needs B = N there (g = 0);
    # stage factor 1: a new batch at every epoch, so the last step to the cap is allowed however small
    p = convert_schedule(lr=0.1, batch_size=100, dataset_size=1000, epochs=101, momentum=0.9,
                         schedule="CosineAnnealingLR(T_max=100)", max_fraction=1.0, stage_factor=1.0)
    last = p.stages[-1]
    assert last.batch_size == 1000 and last.lr == 0.0


def test_json_round_trip_cifar():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER)
    q = Plan.from_json(p.to_json())
    assert q == p
    assert q.at(170).batch_size == 5000


# ---------------------------------------------------------------- property tests
# Independent closed forms of the schedules (torch-equal, see tests/test_schedules.py), non-increasing only.
@st.composite
def cases(draw):
    n = draw(st.integers(2_000, 3_000_000))
    b0 = draw(st.integers(64, min(4096, n // 4)))
    epochs = draw(st.integers(3, 250))
    lr = draw(st.sampled_from([0.01, 0.1, 0.4]))
    kind = draw(st.sampled_from(["multistep", "step", "exp", "cos", "linear", "poly"]))
    if kind == "multistep":
        ms = sorted(draw(st.lists(st.integers(1, epochs - 1), min_size=1, max_size=4)))
        gamma = draw(st.floats(0.05, 0.9))
        text = f"MultiStepLR(milestones={ms}, gamma={gamma!r})"
        f = lambda k: gamma ** sum(k >= x for x in ms)  # noqa: E731
    elif kind == "step":
        size, gamma = draw(st.integers(1, epochs)), draw(st.floats(0.1, 0.9))
        text = f"StepLR(step_size={size}, gamma={gamma!r})"
        f = lambda k: gamma ** (k // size)  # noqa: E731
    elif kind == "exp":
        gamma = draw(st.floats(0.8, 0.999))
        text = f"ExponentialLR(gamma={gamma!r})"
        f = lambda k: gamma ** k  # noqa: E731
    elif kind == "cos":
        tmax = draw(st.integers(epochs, 2 * epochs))
        eta = draw(st.sampled_from([0.0, 0.01]))
        text = f"CosineAnnealingLR(T_max={tmax}, eta_min={eta * lr!r})"
        f = lambda k: (eta + (1 - eta) * (1 + math.cos(math.pi * k / tmax)) / 2)  # noqa: E731
    elif kind == "linear":
        end, iters = draw(st.floats(0.01, 1.0)), draw(st.integers(1, epochs))
        text = f"LinearLR(start_factor=1.0, end_factor={end!r}, total_iters={iters})"
        f = lambda k: 1.0 + (end - 1.0) * min(k, iters) / iters  # noqa: E731
    else:
        iters, power = draw(st.integers(epochs, 2 * epochs)), draw(st.floats(0.5, 3.0))
        text = f"PolynomialLR(total_iters={iters}, power={power!r})"
        f = lambda k: (1 - min(k, iters) / iters) ** power  # noqa: E731
    kw = dict(lr=lr, batch_size=b0, dataset_size=n, epochs=epochs,
              momentum=draw(st.sampled_from([0.0, 0.5, 0.9])), schedule=text,
              rule=draw(st.sampled_from(["exact", "proportional"])),
              max_fraction=draw(st.floats(0.02, 0.5)),
              max_batch=draw(st.one_of(st.none(), st.integers(b0, 8 * b0))))
    return kw, f, kind in ("multistep", "step")


def _caps(kw):
    n = kw["dataset_size"]
    caps = [max(1, math.floor(kw["max_fraction"] * n)), n]
    if kw["max_batch"] is not None:
        caps.append(kw["max_batch"])
    return min(caps)


def _g(kw, lr, m, b):
    n = kw["dataset_size"]
    return g_exact(lr, m, b, n) if kw["rule"] == "exact" else g_prop(lr, m, b, n)


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(cases())
def test_properties(case):
    kw, factor, stepwise = case
    p = convert_schedule(**kw)
    n, b0, e, lr0, m = kw["dataset_size"], kw["batch_size"], kw["epochs"], kw["lr"], kw["momentum"]
    cap = _caps(kw)

    # stages tile [0, epochs·N) in whole epochs (an epoch-stepped schedule changes only there)
    assert p.stages[0].start_sample == 0 and p.stages[-1].end_sample == e * n and p.epoch_aligned
    assert all(a.end_sample == b.start_sample for a, b in zip(p.stages, p.stages[1:]))
    # updates add up (ceil per epoch)
    assert p.updates == sum((s.samples // n) * math.ceil(n / s.batch_size) for s in p.stages)
    assert p.baseline_updates == e * math.ceil(n / b0)
    # batch never decreases; no cap exceeded (a B0 already above the cap stays at B0)
    bs = [s.batch_size for s in p.stages]
    assert bs == sorted(bs) and bs[0] == b0
    assert all(b <= n for b in bs)
    assert all(b == b0 or b <= cap for b in bs)
    if kw["max_batch"] is not None:
        assert max(bs) <= kw["max_batch"]

    # realised g/g0 vs the original's, computed from the formula of docs/concepts.md §1, at every epoch
    g0 = _g(kw, lr0, m, b0)
    for t in range(e):
        setting = p.at(t)
        target = factor(t)  # ρ(t) = ε(t)/ε0 (constant momentum)
        realised = _g(kw, setting.lr, setting.momentum, setting.batch_size) / g0
        # the LR factor absorbs the rounding of B: the temperature follows the original exactly
        assert math.isclose(realised, target, rel_tol=1e-9, abs_tol=1e-12), (t, realised, target)
    for s in p.stages:
        assert math.isclose(s.temperature, _g(kw, s.lr, s.momentum, s.batch_size) / g0, rel_tol=1e-9, abs_tol=1e-12)

    # the LR: for step schedules (stage factor 1) it drops below ε0 only while B sits at its cap.
    # For smooth ones (default stage factor 2) off the cap the LR carries the residual of a stage, so it
    # stays in [ε0/2, ε0] under the proportional rule; under the exact rule the residual is
    # v(2B)/v(B) = (N/2B − 1)/(N/B − 1), a little under ½ (B ≤ N/2 here, rounding of B adds ≤ 2%).
    # Rounding B to a whole number moves the LR factor by at most about 1/(2B) (≤ 1/B for B ≤ N/2).
    for s in p.stages:
        rounding = 1 / s.batch_size
        assert s.lr <= lr0 * (1 + rounding)
        # at the cap, or within one stage factor under it: a last step smaller than the stage factor is not
        # taken, the batch stays and the LR carries the rest (the plan marks that stage "hybrid")
        at_cap = s.batch_size == max(b0, cap) or s.batch_size >= cap or (
            s.phase == "hybrid" and s.batch_size * p.inputs["stage_factor"] > cap)
        if stepwise:
            if s.lr < lr0 * (1 - rounding):
                assert at_cap, s
        elif not at_cap:
            if kw["rule"] == "proportional":
                low = lr0 / 2
            else:
                b = s.batch_size
                low = lr0 * (n / (2 * b) - 1) / (n / b - 1)
            assert s.lr >= low * (1 - 0.02), (s, low)

    # JSON round trip
    assert Plan.from_json(p.to_json()) == p


@PROPS
@given(cases(), st.integers(2, 64))
def test_round_to_property(case, round_to):
    kw, factor, _ = case
    p = convert_schedule(**kw, round_to=round_to)
    cap = _caps(kw)
    b0 = kw["batch_size"]
    for s in p.stages:
        assert s.batch_size == b0 or s.batch_size % round_to == 0
        assert s.batch_size == b0 or s.batch_size <= cap
    assert Plan.from_json(p.to_json()) == p


# -- data-parallel rounding (docs/concepts.md §4: a multiple of micro-batch × world size) --------------
@PROPS
@given(cases(), st.integers(2, 8), st.one_of(st.none(), st.integers(1, 64)))
def test_world_size_rounding_splits_every_batch_evenly(case, world, micro):
    """Every grown batch splits into W equal shares of k equal micro-batches ≤ m, k the fewest that fit."""
    kw, _, _ = case
    kw = dict(kw, max_batch=None)  # the cap then comes from N·max_fraction, rounded down the same way
    p = convert_schedule(**kw, world_size=world, micro_batch=micro)
    b0 = kw["batch_size"]
    for s in p.stages:
        b = s.batch_size
        if b == b0:
            continue  # the user's own batch is kept
        k = 1 if micro is None else -(-b // (world * micro))  # fewest accumulation steps that fit
        assert b % (world * k) == 0, (b, world, k)
        assert micro is None or b // (world * k) <= micro
        assert b <= max(_caps(kw), world)
    assert p.inputs["world_size"] == world and p.inputs["micro_batch"] == micro
    if any(s.batch_size != b0 for s in p.stages):
        assert any(f"world size {world}" in n for n in p.notes)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.sampled_from([1, 2, 3, 4, 8]), st.one_of(st.none(), st.integers(1, 40)),
       st.floats(1, 1500))
def test_rounding_nearest_and_floor_against_brute_force(round_to, world, micro, b):
    from bsadvisor.core.rounding import Rounding

    r = Rounding(round_to, world, micro)
    unit = math.lcm(round_to, world)

    def steps(c):
        return 1 if micro is None else -(-c // (world * micro))

    allowed = [c for c in range(1, int(3 * b) + 4 * unit * (steps(int(b)) + 2)) if c % (unit * steps(c)) == 0]
    kb = 1 if micro is None else math.ceil(b / (world * micro) - 1e-9)
    near = [c for c in allowed if abs(steps(c) - kb) <= 1]
    if near:
        assert r.nearest(b) == min(near, key=lambda c: (abs(c - b), c))
    else:  # round_to/W coarser than the micro-batch limit: plain multiples of lcm(round_to, W)
        assert r.nearest(b) % unit == 0 and abs(r.nearest(b) - b) <= max(unit / 2, unit - b)
    below = [c for c in allowed if c <= b]
    if below:
        assert r.floor(b) == max(below)


# ---------------------------------------------------------------- rounding ties, spans, refusals, messages
@pytest.mark.parametrize("rounding,b,expect", [
    ((8, 1, None), 12, 8), ((8, 1, None), 20, 16), ((8, 1, None), 28, 24), ((8, 1, None), 36, 32),  # ties → smaller
    ((8, 1, None), 12.01, 16), ((8, 1, None), 4, 8), ((6, 1, None), 9, 6), ((3, 2, None), 15, 12),
    ((64, 1, 8), 96, 64),  # round_to coarser than the micro-batch limit: the plain-multiple fallback
])
def test_rounding_nearest_ties_go_to_the_smaller(rounding, b, expect):
    """Rounding.nearest's docstring: ties go to the smaller batch (round() would send 20/8 = 2.5 to 2 but 28/8 to 4)."""
    from bsadvisor.core.rounding import Rounding

    assert Rounding(*rounding).nearest(b) == expect


def test_ci_hypothesis_profile_is_derandomized():
    from hypothesis import settings as hs

    ci = hs.get_profile("ci")
    assert ci.derandomize and ci.database is None


def _counting(text):
    """A parsed schedule whose lr() counts its calls."""
    from bsadvisor.core.schedules import parse_schedule

    sched = parse_schedule(text)
    calls = []
    inner = sched.lr

    def lr(k, base):
        calls.append(k)
        return inner(k, base)
    sched.lr = lr
    return sched, calls


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_step_schedule_over_a_million_epochs_reads_each_span_once(unit):
    """Stages are intervals: a step schedule is read once per constant span, not once per epoch."""
    spe = math.ceil(N / B0) if unit == "step" else 1
    ms = [60 * spe, 120 * spe, 160 * spe]
    sched, calls = _counting(f"MultiStepLR(milestones={ms}, gamma=0.2)")
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=1_000_000, momentum=M, schedule=sched,
                         rule="proportional", max_fraction=1.0, schedule_unit=unit)
    assert len(calls) == 4
    assert batches(p) == [(0, 60, 128), (60, 120, 640), (120, 160, 3200), (160, 1_000_000, 16000)]
    assert p.updates == 60 * 391 + 60 * 79 + 40 * 16 + (1_000_000 - 160) * 4
    sched, calls = _counting("StepLR(step_size=100_000, gamma=0.5)")
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=1_000_000, schedule=sched, max_stages=3)
    assert len(calls) <= 10 and len({s.batch_size for s in p.stages}) <= 3


def test_smooth_schedule_reads_each_epoch_and_is_bounded():
    sched, calls = _counting("CosineAnnealingLR(T_max=300)")
    convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=300, momentum=M, schedule=sched)
    assert sorted(calls) == list(range(300))
    # a smooth schedule longer than MAX_SPANS reads is read on a coarser grid (where a stage may
    # start), while the LR inside each stage still follows every epoch of it
    sched, calls = _counting("ExponentialLR(gamma=0.9995)")
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=30_000, schedule=sched, max_fraction=1.0)
    assert len(calls) <= MAX_SPANS
    for epoch in (0, 1, 777, 12_345, 29_999):
        s = p.stages[p.stage_index(epoch)]
        assert math.isclose(p.at(epoch).lr, s.lr_scale * LR * 0.9995 ** epoch, rel_tol=1e-9)
    with pytest.raises(UserError, match="1,000,000"):
        convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=10**9, schedule=PAPER)


def test_round_to_keeps_the_original_batch_and_says_so():
    """--round-to 64 with B0 = 32: the first stage trains at 32 (the original run), not silently at 64."""
    n = 50_000
    p = convert_schedule(lr=LR, batch_size=32, dataset_size=n, epochs=E, momentum=M, round_to=64,
                         schedule="MultiStepLR(milestones=[60,120,160], gamma=0.5)")
    assert p.stages[0].batch_size == 32 and p.stages[0].lr == LR and p.stages[0].temperature == 1.0
    exact = [n / (1 + (n / 32 - 1) * 0.5 ** k) for k in range(1, 4)]  # 63.9, 127.7, 255.2
    assert [s.batch_size for s in p.stages[1:]] == [64 * max(1, round(b / 64)) for b in exact]
    assert any("--batch-size 32 is not one of those batches" in x for x in p.notes)


@pytest.mark.parametrize("schedule,fragment", [
    ("StepLR(step_size=30, gamma=1.5)", "gamma=1.5 > 1"),
    ("MultiStepLR(milestones=[60], gamma=1e308)", "> 1"),
    ("ExponentialLR(gamma=1.001)", "grow"),
    ("CosineAnnealingLR(T_max=50)", "T_max=200"),  # the plan ended at LR 4.33 and batch 5,000
    ("CosineAnnealingLR(T_max=200, eta_min=0.5)", "eta_min"),
    ("LinearLR(start_factor=0.1, total_iters=200)", "warmup"),
    ("SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=20)], milestones=[5])",
     "T_max=195"),
])
def test_schedules_that_make_no_sense_are_refused(schedule, fragment):
    with pytest.raises(UserError, match=None) as info:
        convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=schedule)
    assert fragment in str(info.value)


def test_cosine_to_the_end_of_the_run_is_accepted():
    for tmax in (E - 1, E, 2 * E):
        p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E,
                             schedule=f"CosineAnnealingLR(T_max={tmax})")
        # never above the peak LR, beyond the rounding of a batch to a whole number (≤ 1/(2B) relative)
        assert max(s.lr for s in p.stages) <= LR * (1 + 1 / (2 * B0))


def test_messages_for_full_batch_and_huge_lr():
    with pytest.raises(UserError, match="^batch_size 128 equals dataset_size 128") as info:
        convert_schedule(lr=LR, batch_size=128, dataset_size=128, epochs=E, schedule=PAPER)
    assert "LR is 0" not in str(info.value)
    with pytest.raises(UserError, match="^lr 1e\\+308 is too large") as info:
        convert_schedule(lr=1e308, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER)
    assert "= N" not in str(info.value)


def test_overstates_warning_only_under_the_proportional_rule():
    kw = dict(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER, max_fraction=1.0)
    exact = convert_schedule(**kw, rule="exact")
    prop = convert_schedule(**kw, rule="proportional")
    assert any("N/10" in w for w in exact.warnings) and not any("overstates" in w for w in exact.warnings)
    assert any("overstates" in w for w in prop.warnings)


def test_batchnorm_is_one_note_not_a_warning():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER)
    assert not any("BatchNorm" in w for w in p.warnings)
    assert sum("BatchNorm" in x for x in p.notes) == 1


def test_rounding_floor_is_quick_when_large_batches_cannot_split_evenly():
    """Multiples of 5 over one device of ≤ 7 examples a step: only 5 (1 step), 10 (2 × 5), 15 (3 × 5) split evenly."""
    from bsadvisor.core.rounding import Rounding

    r = Rounding(5, 1, 7)
    assert [r.floor(b) for b in (5, 9, 10, 14, 15, 1e6, 1e18)] == [5, 5, 10, 10, 15, 15, 15]
    assert Rounding(64, 3, 7).floor(4.6e18) == 192  # no batch splits evenly: the smallest multiple of lcm(64, 3)


def test_extreme_variant_starts_at_the_cap_instead_of_overflowing():
    p = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=E, momentum=M, schedule=PAPER,
                         rule="proportional", increase_lr=1e300)
    assert p.stages[0].batch_size == N // 10 and any("exceeds the cap" in w for w in p.warnings)
    with pytest.raises(UserError, match="^increase_lr 1e\\+300 times"):
        convert_schedule(lr=1e10, batch_size=B0, dataset_size=N, epochs=E, schedule=PAPER, increase_lr=1e300)


def test_library_errors_name_parameters_and_the_cli_spells_them_as_options():
    """The library names its own parameters; the CLI shows the options the user typed."""
    from bsadvisor.cli.app import as_typed

    with pytest.raises(UserError) as info:
        convert_schedule(lr=LR, batch_size=600, dataset_size=500, epochs=E, schedule=PAPER)
    assert str(info.value).startswith("batch_size 600 is larger than dataset_size 500")
    shown = as_typed(info.value, ["convert-schedule"])
    assert shown.startswith("--batch-size 600 is larger than --dataset-size 500")
    # a command without such an option leaves the library's name as it is
    assert as_typed(info.value, ["export"]).startswith("batch_size 600")


def test_the_cli_spells_parameters_but_not_words_or_file_names():
    """A parameter named like an English word (probe) becomes its option only as a whole word, never
    inside a file name (probe.json) or a longer name."""
    from bsadvisor.cli.app import as_typed

    err = UserError("noise_cap needs a measured noise scale: give probe (a probe.json file)",
                    parameters=("noise_cap", "probe"))
    assert as_typed(err, ["convert-schedule"]) == \
        "--noise-cap needs a measured noise scale: give --probe (a probe.json file)"


def test_adam_sde_keeps_beta1s_horizon_in_examples():
    """eq. 27: at a batch κ·B0, β1 → β1^κ (the averaging horizon 1/(1−β) keeps its length in examples);
    ≈ 1 − κ(1−β1) when β1 is near 1, and never below 0 (κ 9.6 at β1 0.9: 0.36, where 1 − κ(1−β1) gave 0.04)."""
    from bsadvisor.core.convert import convert
    from bsadvisor.core.options import ConvertOptions

    plan = convert(ConvertOptions(lr=0.002, batch_size=32, dataset_size=16384, momentum=0.9, epochs=1,
                                  optimizer="adamw", schedule="CosineAnnealingLR(T_max=512)", schedule_unit="step",
                                  adam_rule="linear", adam_sde=True))
    grown = [st for st in plan.stages if st.batch_size > 32]
    assert grown
    for st in grown:
        kappa = st.batch_size / 32
        assert st.momentum == pytest.approx(0.9 ** kappa, rel=1e-12)
        assert st.extra["beta2_factor"] == pytest.approx(kappa) and st.extra["eps_factor"] == pytest.approx(kappa ** -0.5)
    assert 0.9 ** 9.6 == pytest.approx(0.364, abs=1e-3) and 0.999 ** 2 == pytest.approx(1 - 2 * 0.001, abs=1e-5)
