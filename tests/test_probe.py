"""bsadvisor.probe against independent truths, and its side-effect freedom."""
import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bsadvisor
from bsadvisor.errors import UserError
from bsadvisor.probe_result import SCHEMA, ProbeResult, load_probe
from bsadvisor.target import Target, load_target

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(measure_memory=False, measure_throughput=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: avoid OpenMP contention on a shared 2-core box
    yield
    torch.set_num_threads(n)


def linreg_finite_truth(target, weight):
    """Exact B_simple over the finite training set from closed-form per-example gradients."""
    x, y = target.train_dataset.tensors
    g = (x @ weight.reshape(-1) - y)[:, None] * x
    G = g.mean(0)
    tr = float(((g - G) ** 2).sum() / (len(x) - 1))
    return tr, float(G @ G)


def test_linreg_within_10_percent_of_closed_form():
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=0, seed=3, **FAST)
    tr, g2 = t.metadata["truth"](t.model)  # population closed form at θ = init (warmup 0)
    assert r.noise.b_simple == pytest.approx(tr / g2, rel=0.10)
    assert r.noise.trace_sigma == pytest.approx(tr, rel=0.15)
    ftr, fg2 = linreg_finite_truth(t, t.model.weight.detach())
    assert r.noise.b_simple == pytest.approx(ftr / fg2, rel=0.10)


def test_linreg_after_warmup_measured_state():
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=20, seed=4, **FAST)
    w = r.measured_state["weight"]
    assert not torch.equal(w, t.model.weight.detach())  # warmup moved θ, the model itself is untouched
    m = copy.deepcopy(t.model)
    m.load_state_dict(r.measured_state)
    tr, g2 = t.metadata["truth"](m)
    assert r.noise.b_simple == pytest.approx(tr / g2, rel=0.10)


def test_linreg_interval_coverage_50_probes():
    t = load_target("builtin:linreg")
    hits = 0
    for seed in range(50):
        r = bsadvisor.probe(t, warmup_steps=3, seed=100 + seed, **FAST)
        tr, g2 = linreg_finite_truth(t, r.measured_state["weight"])
        lo, hi = r.noise.ci90
        hits += lo <= tr / g2 <= hi
    assert 40 <= hits <= 48  # 80–97 %


@pytest.mark.parametrize("estimator", ["two-batch", "per-example"])
def test_other_estimators_linreg(estimator):
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=0, seed=5, estimator=estimator, **FAST)
    tr, g2 = linreg_finite_truth(t, t.model.weight.detach())
    assert r.noise.b_simple == pytest.approx(tr / g2, rel=0.15)
    assert r.settings.estimator == estimator


def small_mlp_target(n=4000):
    from bsadvisor.builtins import mnist1d_arrays

    a = mnist1d_arrays()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(a["x"][:n]), torch.from_numpy(a["y"][:n]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    return Target(model=model, train_dataset=ds, batch_size=32, lr=0.05, momentum=0.9,
                  loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))


def test_mlp_default_probe_within_10_percent_of_exact_per_example_truth():
    t = small_mlp_target()
    r = bsadvisor.probe(t, seed=0, **FAST)
    model = copy.deepcopy(t.model)
    model.load_state_dict(r.measured_state)
    params = list(model.parameters())
    x, y = t.train_dataset.tensors
    n = len(x)
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    sq = 0.0
    for i in range(n):  # plain autograd, one example at a time
        g = torch.autograd.grad(nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        for acc, gi in zip(total, g):
            acc += gi.double()
        sq += sum(float(gi.double().square().sum()) for gi in g)
    g2 = sum(float((acc / n).square().sum()) for acc in total)
    trace = (sq - n * g2) / (n - 1)
    assert r.noise.b_simple == pytest.approx(trace / g2, rel=0.10)
    assert r.noise.converged


def state_of(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [m.training for m in model.modules()],
            random.getstate(), np.random.get_state(), torch.random.get_rng_state())


def assert_same_state(a, b):
    sa, ga, ma, pa, na, ta = a
    sb, gb, mb, pb, nb, tb = b
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype, k
    assert len(ga) == len(gb) and all((x is None and y is None) or torch.equal(x, y) for x, y in zip(ga, gb))
    assert ma == mb
    assert pa == pb
    assert na[0] == nb[0] and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:]
    assert torch.equal(ta, tb)


def example_target():
    return load_target(f"{ROOT / 'docs/examples/my_target.py'}:make_target")


def test_example_target_probe_is_side_effect_free():
    t = example_target()  # BatchNorm + dropout
    t.model.eval()
    t.model[0].weight.grad = torch.ones_like(t.model[0].weight)
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = state_of(t.model)
    r = bsadvisor.probe(t, budget_seconds=3, memory_limit=64 * 2**20, seed=1)
    assert_same_state(before, state_of(t.model))
    assert r.noise.b_simple > 0 and r.memory.max_batch >= 1 and r.throughput
    assert r.memory.max_batch <= t.dataset_size
    # the measured state differs (warmup moved θ, BatchNorm stats updated), the model does not
    assert not torch.equal(r.measured_state["1.running_mean"], t.model[1].running_mean)


def test_side_effect_free_when_loss_raises_mid_probe():
    t = example_target()
    calls = {"n": 0}
    inner = t.loss_fn

    def flaky(model, batch):
        calls["n"] += 1
        if calls["n"] == 30:
            raise RuntimeError("disk on fire")
        return inner(model, batch)

    t.loss_fn = flaky
    before = state_of(t.model)
    with pytest.raises(UserError, match="noise draw .*disk on fire"):
        bsadvisor.probe(t, warmup_steps=5, seed=2)
    assert_same_state(before, state_of(t.model))


def test_nan_loss_names_the_step():
    t = load_target("builtin:linreg")
    calls = {"n": 0}
    inner = t.loss_fn

    def nan_later(model, batch):
        calls["n"] += 1
        out = inner(model, batch)
        return out * float("nan") if calls["n"] == 3 else out

    t.loss_fn = nan_later
    with pytest.raises(UserError, match="warmup step 3"):
        bsadvisor.probe(t, warmup_steps=5, **FAST)


def test_memory_limit_caps_the_batch():
    t = small_mlp_target()
    limit = 2 * 2**20
    r = bsadvisor.probe(t, warmup_steps=0, memory_limit=limit, budget_seconds=2, seed=0, measure_throughput=False)
    m = r.memory
    assert m.limited_by == "memory" and 1 < m.max_batch < t.dataset_size
    assert m.peak_bytes <= 0.9 * limit
    # the fitted line predicts the cap: one more ~5% would cross the margin
    assert m.fixed_bytes + m.bytes_per_sample * m.max_batch * 1.05 > 0.85 * limit
    # fixed bytes ≥ parameters + gradients + momentum buffers
    n_params = sum(p.numel() for p in t.model.parameters())
    assert m.fixed_bytes >= 0.9 * 3 * 4 * n_params
    assert m.trials <= 8


def test_to_dict_roundtrip_and_validation(tmp_path):
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=0, budget_seconds=3, seed=0)
    doc = r.to_dict()
    assert doc["schema"] == SCHEMA
    for key in ("b_simple", "ci90", "trace_sigma", "grad_sq_norm", "examples"):
        assert key in doc["noise"]
    for key in ("max_batch", "bytes_per_sample", "fixed_bytes", "trials"):
        assert key in doc["memory"]
    assert {"batch_size", "examples_per_s"} <= set(doc["throughput"][0])
    assert set(doc["settings"]) >= {"lr", "momentum", "batch_size", "dataset_size", "device", "optimizer",
                                    "estimator", "seed"}
    assert doc["temperature"] == pytest.approx(0.01 * (16384 / 64 - 1))
    back = ProbeResult.from_dict(doc)
    assert back.to_dict() == doc
    from bsadvisor.fileio import write_json

    write_json(tmp_path / "p.json", doc)
    assert load_probe(tmp_path / "p.json").noise.b_simple == r.noise.b_simple
    bad = copy.deepcopy(doc)
    bad["schema"] = "other/1"
    with pytest.raises(UserError, match="schema"):
        ProbeResult.from_dict(bad)
    bad = copy.deepcopy(doc)
    del bad["memory"]["max_batch"]
    with pytest.raises(UserError, match="memory.max_batch"):
        ProbeResult.from_dict(bad)
    bad = copy.deepcopy(doc)
    bad["noise"]["ci90"] = [1.0]
    with pytest.raises(UserError, match="ci90"):
        ProbeResult.from_dict(bad)
    with pytest.raises(UserError):
        load_probe(tmp_path / "missing.json")


def test_bad_options():
    t = load_target("builtin:linreg")
    with pytest.raises(UserError, match="estimator"):
        bsadvisor.probe(t, estimator="magic")
    with pytest.raises(UserError, match="exceeds the dataset"):
        bsadvisor.probe(t, batch_size=10**6)
