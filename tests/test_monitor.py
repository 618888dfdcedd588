"""NoiseMonitor (runtime/monitor.py): intervals against closed-form truths, and a trajectory it never changes."""
import math

import numpy as np
import pytest
import torch

from bsadvisor import NoiseMonitor
from bsadvisor.core import noise as noise_stats
from bsadvisor.core.plan import Plan, Stage
from bsadvisor.runtime.train import train_plan
from bsadvisor.targets.builtins import linreg
from bsadvisor.targets.target import Target


def full_data_truth(target, weight):
    """B_simple of the data set at ``weight`` from every example's gradient, in closed form.

    Loss ½(w·x − y)²: example i's gradient is x_i·(w·x_i − y_i); tr Σ = mean |g_i|² − |G|²
    over the N examples (the monitor samples these N without replacement).
    """
    x, y = (t.numpy() for t in target.train_dataset.tensors)
    per_example = x * (x @ weight - y)[:, None]
    mean = per_example.mean(0)
    g2 = float(mean @ mean)
    return (float((per_example ** 2).sum(1).mean()) - g2) / g2


@pytest.mark.slow
def test_interval_coverage_on_linear_regression_at_several_parameter_points():
    # 3 parameter points × 50 seeds: the 90% interval holds the full-data truth 85-95% of the time
    target = linreg()
    w_star = target.metadata["w_star"]
    rng = np.random.default_rng(0)
    hits = total = bounded = 0
    for scale in (0.05, 0.2, 1.0):  # B_simple from ~6,000 down to ~17
        weight = w_star + scale * rng.standard_normal(w_star.size)
        with torch.no_grad():
            target.model.weight.copy_(torch.as_tensor(weight).reshape(1, -1))
        truth = full_data_truth(target, weight)
        for seed in range(50):
            monitor = NoiseMonitor(target.model, target.loss_fn, target.train_dataset, draws=12, micro_batches=8,
                                   big_batch=max(256, int(truth) // 4), seed=seed)
            point = monitor.measure(0, 0.01, 0.0, 64)
            lo, hi = point["ci90"]
            hits += lo <= truth <= hi
            bounded += point["ci_kind"] == "bounded"
            total += 1
    assert 0.85 <= hits / total <= 0.95, hits / total
    assert bounded == total  # at these batch sizes every interval is a real one


def test_accumulation_reads_each_micro_batch_gradient_exactly():
    # The norms it reads from the accumulated .grad are the micro-batch gradients' (closed form for linreg).
    target = linreg()
    model, (x, y) = target.model, target.train_dataset.tensors
    with torch.no_grad():
        model.weight.fill_(0.3)
    monitor = NoiseMonitor(model, window=3, dataset_size=len(x))
    w = model.weight.detach().reshape(-1)
    small, big = [], []
    for update in range(3):
        rows = torch.arange(update * 96, update * 96 + 96)
        parts = torch.tensor_split(rows, 4)  # sizes 24 each
        model.zero_grad(set_to_none=True)
        micro = []
        for part in parts:
            loss = target.loss_fn(model, (x[part], y[part])) * (len(part) / len(rows))
            loss.backward()
            monitor.after_backward(len(part))
            xb, yb = x[part], y[part]
            micro.append(xb.T @ (xb @ w - yb) / len(part))
        point = monitor.end_update(samples=update * 96, lr=0.1, momentum=0.0)
        small.append(float(torch.stack([(g ** 2).sum() for g in micro]).mean()))
        big.append(float((torch.stack(micro).mean(0) ** 2).sum()))
    expected = noise_stats.estimate(small, big, 24, 96, dataset_size=len(x))
    assert point["b_simple"] == pytest.approx(expected.b_simple, rel=1e-9)
    assert point["ci90"] == pytest.approx(list(expected.ci90), rel=1e-9)
    assert point["how"] == "accumulation" and point["draws"] == 3


class _Noisy(torch.nn.Module):
    """Dropout (a random stream) and BatchNorm (buffers): what extra forward passes could disturb."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                       torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def _noisy_target():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(512, 8, generator=gen)
    y = torch.randint(0, 3, (512,), generator=gen)
    torch.manual_seed(0)

    def loss_fn(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return Target(model=_Noisy(), train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss_fn,
                  batch_size=32, lr=0.1, momentum=0.9, name="noisy")


def _plan():
    return Plan(stages=[Stage(start_sample=0, end_sample=1024, batch_size=32, lr=0.1, momentum=0.9, temperature=1.0),
                        Stage(start_sample=1024, end_sample=2048, batch_size=128, lr=0.1, momentum=0.9, temperature=1.0)],
                dataset_size=512)


@pytest.mark.slow
@pytest.mark.parametrize("max_micro_batch", [None, 32])
def test_the_monitor_leaves_the_training_trajectory_bit_identical(max_micro_batch):
    finals = []
    for settings in (None, {"every": 1, "draws": 3, "micro_batches": 4, "window": 4}):
        target = _noisy_target()
        init = {k: v.clone() for k, v in target.model.state_dict().items()}
        result = train_plan(target, _plan(), seed=1, init_state=init, max_micro_batch=max_micro_batch,
                            noise_monitor=settings)
        finals.append((target.model.state_dict(), result))
    (plain, r0), (monitored, r1) = finals
    assert all(torch.equal(plain[k], monitored[k]) for k in plain)  # weights and BatchNorm buffers
    assert r0.history[-1]["train_loss"] == r1.history[-1]["train_loss"]
    assert r0.noise_trace == [] and len(r1.noise_trace) > 0
    kinds = {p["how"] for p in r1.noise_trace}
    # with accumulation the batch-128 stage is read from its micro-batches; the rest takes draws
    assert kinds == ({"draws", "accumulation"} if max_micro_batch else {"draws"})
    assert all(p["sample"] < 2048 and p["lr"] == pytest.approx(0.1) for p in r1.noise_trace)


def test_overhead_budget_limits_the_extra_draws():
    target = _noisy_target()
    result = train_plan(target, _plan(), seed=0, noise_monitor={"overhead": 0.05, "draws": 4})
    trace = result.noise_trace
    assert trace[0]["sample"] == 32  # the first point after the first update (which pays the start-up costs)
    # budget: time measuring ≤ 5% of the training time seen, plus the one measurement at the start
    spent = sum(p["seconds"] for p in trace)
    assert spent - trace[0]["seconds"] <= 0.05 * result.history[-1]["wall_s"] + max(p["seconds"] for p in trace)


def test_trace_round_trips_into_a_noise_model(tmp_path):
    from bsadvisor.core.noise_model import load_trace
    from bsadvisor.core.temperature import TemperatureModel

    target = linreg()
    w_star = torch.as_tensor(target.metadata["w_star"]).reshape(1, -1)
    monitor = NoiseMonitor(target.model, target.loss_fn, target.train_dataset, draws=8, big_batch=256, seed=0)
    for sample, weight in ((0, torch.full_like(w_star, 0.5)), (8192, w_star + 0.1), (16384, w_star)):
        with torch.no_grad():
            target.model.weight.copy_(weight)
        monitor.measure(sample, 0.01, 0.0, 64)
    first, second, at_optimum = monitor.points
    assert first["ci_kind"] == second["ci_kind"] == "bounded"
    assert at_optimum["ci_kind"] != "bounded"  # G = 0 at w*: no upper bound, so it must not enter the model
    path = tmp_path / "trace.json"
    monitor.save(path)
    model = load_trace(path)
    assert len(model.points) == 2
    tm = TemperatureModel(len(target.train_dataset))
    t = tm.temperature(0.01, 0.0, 64)
    a, b = first["b_simple"], second["b_simple"]
    assert model.b_noise(0, t, tm) == pytest.approx(a)
    assert model.b_noise(8192, t, tm) == pytest.approx(b)
    assert model.b_noise(4096, t, tm) == pytest.approx(math.sqrt(a * b))  # log-linear between points
    assert model.b_noise(16384, t, tm) == pytest.approx(b)  # flat past the last usable point
    assert model.b_noise(8192, t / 2, tm) == pytest.approx(2 * b)  # ∝ 1/T


@pytest.mark.slow
def test_a_resumed_run_continues_the_trace(tmp_path):
    # the checkpoint keeps the points and the monitor's generator: a resumed run records what an unbroken one does
    settings = {"every": 3, "draws": 3, "micro_batches": 4}
    target = _noisy_target()
    init = {k: v.clone() for k, v in target.model.state_dict().items()}
    full = train_plan(target, _plan(), seed=1, init_state=init, noise_monitor=settings)

    class Stop(Exception):
        pass

    def stop_after_two(rec):
        if rec["epoch"] == 2:
            raise Stop

    target = _noisy_target()
    with pytest.raises(Stop):
        train_plan(target, _plan(), seed=1, init_state=init, noise_monitor=settings,
                   checkpoint=tmp_path / "run.pt", on_epoch=stop_after_two)
    resumed = train_plan(target, _plan(), seed=1, init_state=init, noise_monitor=settings,
                         checkpoint=tmp_path / "run.pt", resume=True)
    assert resumed.resumed_from == 2
    strip = lambda trace: [{k: v for k, v in p.items() if k != "seconds"} for p in trace]  # noqa: E731
    assert strip(resumed.noise_trace) == strip(full.noise_trace)


def test_settings_are_one_checked_object_that_keywords_override():
    from bsadvisor.core.errors import UserError
    from bsadvisor.runtime.monitor import MonitorSettings

    model = torch.nn.Linear(3, 1)
    given = MonitorSettings(window=3, overhead=0.2)
    monitor = NoiseMonitor(model, settings=given, window=5)
    assert monitor.settings == MonitorSettings(window=5, overhead=0.2) and given.window == 3
    assert NoiseMonitor(model).settings == MonitorSettings()
    assert NoiseMonitor(model, min_points=50, spread=4).settings.min_points == 4  # at most one point a place
    for bad in ({"draws": 1}, {"every": 0}, {"overhead": 0.0}, {"overhead": 1.5}):
        with pytest.raises(UserError):
            NoiseMonitor(model, **bad)
    with pytest.raises(TypeError):
        NoiseMonitor(model, windows=3)
