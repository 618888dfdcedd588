"""bsadvisor.probe against independent truths, and its side-effect freedom."""
import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bsadvisor
from bsadvisor.core.errors import UserError
from bsadvisor.core.probe_result import SCHEMA, ProbeResult, load_probe
from bsadvisor.targets.loading import load_target
from bsadvisor.targets.target import Target
from failing_loss import CPU_OOM, backward_raises, fails_over, raising

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(measure_memory=False, measure_throughput=False)
#: A budget no loaded machine runs out of: the accuracy tests fix their draws (``draws=N``), so what they
#: measure, and whether it is within its tolerance, never depends on the seconds a draw took.
NO_CLOCK = dict(budget_seconds=600)


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
    r = bsadvisor.probe(t, warmup_steps=0, seed=3, draws=27, **NO_CLOCK, **FAST)
    tr, g2 = t.metadata["truth"](t.model)  # population closed form at θ = init (warmup 0)
    assert r.noise.b_simple == pytest.approx(tr / g2, rel=0.10)
    assert r.noise.trace_sigma == pytest.approx(tr, rel=0.15)
    ftr, fg2 = linreg_finite_truth(t, t.model.weight.detach())
    assert r.noise.b_simple == pytest.approx(ftr / fg2, rel=0.10)


def test_linreg_after_warmup_measured_state():
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=20, seed=4, draws=40, **NO_CLOCK, **FAST)
    w = r.measured_state["weight"]
    assert not torch.equal(w, t.model.weight.detach())  # warmup moved θ, the model itself is untouched
    m = copy.deepcopy(t.model)
    m.load_state_dict(r.measured_state)
    tr, g2 = t.metadata["truth"](m)
    assert r.noise.b_simple == pytest.approx(tr / g2, rel=0.10)


@pytest.mark.slow  # fifty probes
def test_linreg_interval_coverage_50_probes():
    t = load_target("builtin:linreg")
    hits = 0
    for seed in range(50):
        r = bsadvisor.probe(t, warmup_steps=3, seed=100 + seed, draws=40, **NO_CLOCK, **FAST)
        tr, g2 = linreg_finite_truth(t, r.measured_state["weight"])
        lo, hi = r.noise.ci90
        hits += lo <= tr / g2 <= hi
    assert 40 <= hits <= 48  # 80–97 %


DRAWS = {"two-batch": 900, "per-example": 14}  # about what each takes to converge on an idle machine


@pytest.mark.parametrize("estimator", ["two-batch", "per-example"])
def test_other_estimators_linreg(estimator):
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=0, seed=5, estimator=estimator, draws=DRAWS[estimator], **NO_CLOCK,
                        **FAST)
    tr, g2 = linreg_finite_truth(t, t.model.weight.detach())
    assert r.noise.b_simple == pytest.approx(tr / g2, rel=0.15)
    assert r.settings.estimator == estimator


def small_mlp_target(n=4000):
    from bsadvisor.targets.builtins import mnist1d_arrays

    a = mnist1d_arrays()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(a["x"][:n]), torch.from_numpy(a["y"][:n]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    return Target(model=model, train_dataset=ds, batch_size=32, lr=0.05, momentum=0.9,
                  loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))


@pytest.mark.slow  # a probe of an MLP and its exact per-example truth
def test_mlp_default_probe_within_10_percent_of_exact_per_example_truth():
    t = small_mlp_target()
    r = bsadvisor.probe(t, seed=0, draws=700, **NO_CLOCK, **FAST)
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
    from bsadvisor.core.fileio import write_json

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


# --------------------------------------------------------------------------- failures after warmup
@pytest.mark.parametrize("make_error, kwargs, pattern", [
    (raising(RuntimeError("my loss broke")), {}, "loss_fn raised RuntimeError at memory trial at batch .*my loss broke"),
    (backward_raises, {}, "backward raised RuntimeError at memory trial"),
    (raising(ValueError("ladder only")), dict(measure_memory=False),
     "loss_fn raised ValueError at the throughput step at batch 256: ladder only"),
], ids=["loss-in-memory-trial", "backward-in-memory-trial", "loss-on-throughput-ladder"])
def test_failure_after_warmup_is_one_line_and_restores_state(make_error, kwargs, pattern):
    t = load_target("builtin:linreg")
    t.model.weight.grad = torch.ones_like(t.model.weight)
    t.loss_fn = fails_over(64, make_error)(t.loss_fn)
    random.seed(3)
    before = state_of(t.model)
    with pytest.raises(UserError, match=pattern) as err:
        bsadvisor.probe(t, warmup_steps=3, draws=3, budget_seconds=3, seed=0, **kwargs)
    assert "\n" not in str(err.value)
    assert_same_state(before, state_of(t.model))


def test_cpu_allocator_out_of_memory_means_does_not_fit():
    t = load_target("builtin:linreg")
    t.loss_fn = fails_over(300, raising(CPU_OOM))(t.loss_fn)
    before = state_of(t.model)
    r = bsadvisor.probe(t, warmup_steps=2, draws=3, budget_seconds=3, seed=0)
    assert 64 <= r.memory.max_batch <= 300 and r.memory.limited_by == "memory"
    assert max(p.batch_size for p in r.throughput) <= 300
    assert_same_state(before, state_of(t.model))


def test_cpu_out_of_memory_in_warmup_says_so():
    t = load_target("builtin:linreg")
    t.loss_fn = fails_over(0, raising(CPU_OOM))(t.loss_fn)
    with pytest.raises(UserError, match="ran out of memory at warmup step 1 .*lower --batch-size"):
        bsadvisor.probe(t, warmup_steps=2, draws=3, **FAST)


def test_batchnorm_at_batch_one_under_a_tiny_memory_limit():
    t = example_target()  # BatchNorm: a batch of one cannot train
    before = state_of(t.model)
    with pytest.raises(UserError, match="even batch 32 does not fit .*Expected more than 1 value.*raise --memory-limit"):
        bsadvisor.probe(t, warmup_steps=2, draws=3, memory_limit=2000, budget_seconds=3, seed=0)
    assert_same_state(before, state_of(t.model))


# --------------------------------------------------------------------------- budget, draws, warnings
def test_budget_starts_when_measuring_starts(tmp_path):
    """Building the target (importing, generating data) is not charged to the budget."""
    f = tmp_path / "slow.py"
    f.write_text("import time\nfrom bsadvisor.targets.builtins import linreg\n\n"
                 "def make():\n    time.sleep(2.0)  # a slow data set build\n    return linreg(size=2048)\n")
    r = bsadvisor.probe(f"{f}:make", budget_seconds=1.0, warmup_steps=0, seed=0, **FAST)
    assert r.noise.draws >= 2 and r.noise.b_simple > 0


def test_draws_make_the_noise_estimate_reproducible():
    t = load_target("builtin:linreg")
    a = bsadvisor.probe(t, draws=12, seed=5, target_rel_ci=0.5, **FAST)
    b = bsadvisor.probe(t, draws=12, seed=5, target_rel_ci=0.01, budget_seconds=0.5, **FAST)
    assert a.noise.draws == b.noise.draws == 12 and a.settings.draws == 12
    assert a.noise.b_simple == b.noise.b_simple and a.noise.ci90 == b.noise.ci90
    assert a.to_dict()["settings"]["draws"] == 12
    c = bsadvisor.probe(t, draws=12, seed=6, **FAST)
    assert c.noise.b_simple != a.noise.b_simple


def test_warmup_obeys_the_time_budget():
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, warmup_steps=10**12, budget_seconds=0.5, seed=0, **FAST)
    assert r.settings.warmup_steps < 10**12
    assert any("warmup stopped after" in w for w in r.warnings)
    with pytest.raises(UserError, match="warmup .*--draws"):
        bsadvisor.probe(t, warmup_steps=10**12, budget_seconds=0.5, draws=3, **FAST)


def test_sum_reduced_loss_is_flagged():
    t = load_target("builtin:linreg")
    mean = bsadvisor.probe(t, draws=4, seed=0, **FAST)
    assert not any("sum-reduced" in w for w in mean.warnings)
    t.loss_fn = lambda m, b: 0.5 * ((m(b[0]).squeeze(-1) - b[1]) ** 2).sum()  # sums over the batch
    r = bsadvisor.probe(t, draws=4, seed=0, **FAST)
    (w,) = [w for w in r.warnings if "sum-reduced" in w]
    assert "8.0×" in w and ".mean()" in w  # exactly k = 8 micro-batches: the gradient is their sum
    assert r.to_dict()["warnings"] == r.warnings


def test_throughput_rungs_are_repeated_with_their_spread():
    t = load_target("builtin:linreg")
    r = bsadvisor.probe(t, draws=3, budget_seconds=3, seed=0, memory_limit=2 * 2**20)
    assert len(r.throughput) >= 2
    assert [p.batch_size for p in r.throughput] == sorted(p.batch_size for p in r.throughput)
    for p in r.throughput:
        assert p.repeats >= 1 and p.spread >= 0 and p.examples_per_s > 0
    assert max(p.repeats for p in r.throughput) == 3  # every rung timed three times when time allows
    assert {"repeats", "spread"} <= set(r.to_dict()["throughput"][0])


def _pt(b, eps):
    from bsadvisor.core.probe_result import ThroughputPoint

    return ThroughputPoint(b, float(eps), b / eps)


def test_ladder_warning_flags_a_busy_machines_ladder():
    from bsadvisor.measure.throughput import ladder_warning

    # measured on a busy 2-core machine: 1,024 faster per step than 512, then 2,048 slower
    w = ladder_warning([_pt(256, 2000), _pt(512, 2607), _pt(1024, 36058), _pt(2048, 11121)])
    assert w and "not monotone" in w and "batch 1024: 36,058" in w and "OMP_NUM_THREADS" in w
    assert ladder_warning([_pt(16, 1e4), _pt(32, 1.9e4), _pt(64, 3e4), _pt(128, 3.1e4), _pt(256, 2.9e4)]) is None
    # a cache-bound fall at the top of the ladder is not a disturbance
    assert ladder_warning([_pt(8192, 1.15e5), _pt(16384, 6.8e4), _pt(32000, 4.4e4)]) is None
    assert ladder_warning([_pt(512, 1e5), _pt(1024, 4e4)])  # examples/s more than halved by one doubling


@pytest.mark.parametrize("threads, cores, load, expect", [
    (2, 2, 3.5, "OMP_NUM_THREADS=1"), (16, 16, 4.0, "OMP_NUM_THREADS=12"), (1, 2, 5.0, "busy"),
    (1, 2, 0.3, None), (2, 2, 0.2, None), (8, 16, 6.0, None), (4, 4, None, None)])
def test_cpu_load_warning(threads, cores, load, expect):
    from bsadvisor.measure.throughput import cpu_load_warning

    w = cpu_load_warning(threads, cores, load)
    assert (w is None) if expect is None else (expect in w)


def test_library_refuses_nonsense_options():
    t = load_target("builtin:linreg")
    # the library names its own parameters (the CLI shows them as --seed, --budget-seconds, ...)
    for kwargs, pattern in [(dict(seed=2**70), "^seed "), (dict(budget_seconds=math.inf), "^budget_seconds "),
                            (dict(budget_seconds=math.nan), "^budget_seconds "),
                            (dict(warmup_steps=-1), "^warmup_steps "), (dict(memory_limit=0.5), "^memory_limit "),
                            (dict(draws=1), "^draws "), (dict(target_rel_ci=math.nan), "^target_rel_ci "),
                            (dict(lr=-1.0), "^lr ")]:
        with pytest.raises(UserError, match=pattern):
            bsadvisor.probe(t, **kwargs)


def test_ladder_below_a_quarter_of_the_batch_is_the_cap_alone():
    """A memory cap under B/4 once left an empty ladder and an IndexError (a traceback after the work)."""
    from bsadvisor.measure.throughput import ladder

    assert ladder(256, 10) == [10]
    assert ladder(256, 64) == [64]
    assert sorted(ladder(256, 1024)) == [64, 128, 256, 512, 1024]
    assert sorted(ladder(256, 1000)) == [64, 128, 256, 512, 1000]
