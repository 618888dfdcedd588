"""B_noise(s) from a trace, computed once per temperature model: the same numbers as the per-call algorithm.

The per-call algorithm recomputes log(B·T) at every trace point on every lookup (O(points ×
spans) for a conversion); the reference below is that algorithm, written out, and every plan
and every lookup must agree with it exactly (bit for bit: the arithmetic is the same).
"""
from __future__ import annotations

import bisect
import math
import random

import pytest

from bsadvisor.core.noise_model import NoiseModel
from bsadvisor.core.recommend import recommend
from bsadvisor.core.temperature import TemperatureModel


def _old_log_bt(self, sample, model):
    values = [math.log(self._bt(p, model)) for p in self.points]
    xs = [p.sample for p in self.points]
    if sample <= xs[0]:
        return values[0]
    if sample >= xs[-1]:
        return values[-1]
    i = bisect.bisect_right(xs, sample)
    w = (sample - xs[i - 1]) / (xs[i] - xs[i - 1])
    return values[i - 1] * (1 - w) + values[i] * w


def _trace(seed: int, n: int, total: int) -> list[dict]:
    rng = random.Random(seed)
    samples = sorted(rng.randrange(total) for _ in range(n))
    return [{"sample": s, "b_simple": rng.uniform(50, 5000), "lr": rng.choice([0.1, 0.05, 3e-4]),
             "momentum": rng.choice([0.0, 0.9]), "batch_size": rng.choice([32, 64, 128]),
             "ci90": [1.0, 1e5], "ci_kind": "bounded"} for s in samples]


CASES = [
    dict(lr=0.1, batch_size=64, dataset_size=50_000, epochs=10, momentum=0.9,
         schedule="MultiStepLR(milestones=[3,6,8], gamma=0.2)"),
    dict(lr=3e-4, batch_size=32, dataset_size=20_000, epochs=2, optimizer="adamw",
         schedule="CosineAnnealingLR(T_max=1250)", schedule_unit="step"),
    dict(lr=3e-4, batch_size=32, dataset_size=20_000, epochs=2, optimizer="adamw", adam_rule="noise",
         schedule="CosineAnnealingLR(T_max=1250)", schedule_unit="step"),
    dict(lr=0.05, batch_size=16, dataset_size=8_000, epochs=3, momentum=0.9, schedule="ExponentialLR(gamma=0.5)"),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("points", [1, 2, 7, 40])
def test_plans_with_a_trace_equal_the_old_algorithms(monkeypatch, case, points):
    options = CASES[case]
    total = int(options["dataset_size"] * options["epochs"])
    model = NoiseModel.from_trace(_trace(case * 100 + points, points, total))
    new = recommend(options, noise_trace=model).to_dict()
    with monkeypatch.context() as m:
        m.setattr(NoiseModel, "_log_bt", _old_log_bt)
        old = recommend(options, noise_trace=NoiseModel.from_trace(_trace(case * 100 + points, points, total)))
    assert new == old.to_dict()


def test_every_lookup_equals_the_old_one_under_models_interleaved():
    """The cache is per model object: two models asked in turn each get their own numbers."""
    trace = NoiseModel.from_trace(_trace(7, 25, 100_000))
    models = [TemperatureModel(10_000), TemperatureModel(10_000, optimizer="adamw", adam_rule="sqrt"),
              TemperatureModel(None, rule="proportional")]
    rng = random.Random(3)
    for _ in range(300):
        model = rng.choice(models)
        s = rng.uniform(-10, 120_000)
        assert trace._log_bt(s, model) == _old_log_bt(trace, s, model)
        assert trace.b_noise(s, 0.01, model) == math.exp(_old_log_bt(trace, s, model)) / 0.01


def test_the_cache_stays_small():
    trace = NoiseModel.from_trace(_trace(1, 5, 1000))
    for _ in range(50):
        trace.b_noise(10, 1.0, TemperatureModel(10_000))
    assert len(trace._curves) <= 8
