"""The Adam temperature rules (docs/concepts.md §7, eqs. 8, 24–26): the noise-aware rule's limits, its
monotonicity, and plans that keep its temperature; Seesaw's batch and LR."""
from __future__ import annotations

import math

import pytest

from bsadvisor.core.baseline import baseline_plan
from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.noise_model import NoiseModel, NoisePoint
from bsadvisor.core.temperature import TemperatureModel

SCHED = ("SequentialLR([LinearLR(start_factor=0.01, total_iters=40), CosineAnnealingLR(T_max=460, eta_min=0.0002)], "
         "milestones=[40])")
RUN = dict(lr=2e-3, batch_size=32, dataset_size=16000, epochs=1, schedule=SCHED, schedule_unit="step",
           optimizer="adamw", momentum=0.9, max_growth=0)  # the rules' full growth (the default stops at 2 × B0)


def noise(b_simple, sample=0, lr=2e-3, batch=32):
    return NoiseModel((NoisePoint(sample, b_simple, lr, 0.9, batch),), "probe")


def model(b_noise, n=None):
    return TemperatureModel(n, "exact", "adamw", "noise", ((0.0,), (b_noise,)))


@pytest.mark.parametrize("n", [None, 50_000])
def test_noise_rule_limits_are_the_square_root_and_linear_rules(n):
    sqrt, linear = (TemperatureModel(n, "exact", "adamw", r) for r in ("sqrt", "linear"))
    far_below, far_above = model(1e12, n), model(1e-9, n)
    for b1, b2 in [(16, 64), (100, 400), (7, 3000)]:
        # ratios of T between two batches at one LR: the rules agree up to their constant factors
        assert far_below.temperature(1, 0, b1) / far_below.temperature(1, 0, b2) == pytest.approx(
            sqrt.temperature(1, 0, b1) / sqrt.temperature(1, 0, b2), rel=1e-6)
        # above the noise scale T ∝ η·v(B)/√(B/B_noise): v(B)/√B for N → ∞ is B^(-3/2)... only the 1/B of v
        # survives once (1 + B/B_noise) ≈ B/B_noise: T ∝ η·√(v(B)·B_noise/B), linear in 1/B when v = 1/B
        if n is None:
            assert far_above.temperature(1, 0, b1) / far_above.temperature(1, 0, b2) == pytest.approx(
                linear.temperature(1, 0, b1) / linear.temperature(1, 0, b2), rel=1e-6)
    # and the batch that gives a temperature inverts T in both limits
    for m in (far_below, far_above, model(50.0, n)):
        for b in (3, 40, 900):
            assert m.batch_for(m.temperature(0.01, 0.9, b), 0.01, 0.9) == pytest.approx(b, rel=1e-9)


def test_noise_rule_plans_are_the_sqrt_and_linear_plans_at_the_limits():
    sqrt = convert_schedule(**RUN, adam_rule="sqrt")
    linear = convert_schedule(**RUN, adam_rule="linear")
    assert convert_schedule(**RUN, adam_rule="noise", noise_model=noise(1e12)).stage_batch_sizes() == \
        sqrt.stage_batch_sizes()
    assert convert_schedule(**RUN, adam_rule="noise", noise_model=noise(1e-6)).stage_batch_sizes() == \
        linear.stage_batch_sizes()
    between = convert_schedule(**RUN, adam_rule="noise", noise_model=noise(50.0))
    assert linear.updates >= between.updates >= sqrt.updates and linear.updates > sqrt.updates


def test_noise_temperature_falls_as_the_batch_grows():
    for b_noise in (0.5, 10.0, 300.0, 1e6):
        for n in (None, 10_000):
            m = model(b_noise, n)
            ts = [m.temperature(1e-3, 0.9, b) for b in (1, 2, 5, 10, 50, 100, 1000, 5000)]
            assert all(a > b for a, b in zip(ts, ts[1:]))


def test_plan_keeps_the_noise_temperature_within_5_percent_at_every_percent_of_training():
    """A trace whose B_noise grows 20× through the run: at every 1% of training the plan's T_Adam
    (eq. 24, with B_noise(s) read from the trace as eq. 16 does) is within 5% of the original's."""
    trace = NoiseModel(tuple(NoisePoint(s, b, 2e-3, 0.9, 32) for s, b in
                             [(0, 5.0), (4000, 30.0), (8000, 60.0), (16000, 100.0)]), "trace")
    plan = convert_schedule(**RUN, adam_rule="noise", noise_model=trace)
    orig = baseline_plan(**RUN)
    proxy = TemperatureModel(None, "exact", "adamw", "sqrt")
    assert len(set(plan.stage_batch_sizes())) >= 4  # it really grows
    for k in range(100):
        s = k * plan.total_samples // 100
        p, o = plan.at_sample(s), orig.at_sample(s)
        b_noise = trace.b_noise(s, proxy.temperature(o.lr, 0.9, 32), proxy)  # eq. 16 along the original
        truth = model(b_noise)
        t_plan, t_orig = truth.temperature(p.lr, 0.9, p.batch_size), truth.temperature(o.lr, 0.9, 32)
        assert abs(t_plan / t_orig - 1) <= 0.05 + 1e-9, (k, p, o, b_noise)


def test_seesaw_grows_the_batch_by_the_decay_and_divides_the_lr_by_its_root():
    step = dict(RUN, schedule="MultiStepLR(milestones=[250], gamma=0.25)", schedule_unit="step")
    plan = convert_schedule(**step, adam_rule="seesaw")
    (a, b) = plan.stages[:2]
    assert (a.batch_size, b.batch_size) == (32, 128)  # batch × α for a decay by α = 4
    assert b.lr == pytest.approx(a.lr / 2)            # LR ÷ √α
    sqrt = TemperatureModel(None, "exact", "adamw", "sqrt")  # and the square-root temperature is the original's
    assert sqrt.temperature(b.lr, 0.9, 128) == pytest.approx(sqrt.temperature(a.lr * 0.25, 0.9, 32))


def test_noise_rule_without_a_noise_model_is_refused():
    with pytest.raises(UserError, match="noise scale"):
        convert_schedule(**RUN, adam_rule="noise")
    assert not math.isinf(model(10.0).noise_scale_at(5))
