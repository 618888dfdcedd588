"""Library API misuse: every public function refuses garbage with ValueError or TypeError and one
clear sentence, never a raw ZeroDivisionError/OverflowError/AttributeError and never a silently wrong answer."""
from __future__ import annotations

import math

import pytest

from bsadvisor.core.plan import Plan, Stage


def _plan(n=1000, epochs=3, batch=100):
    return Plan(stages=[Stage(0, epochs * n, batch, 0.1, 0.0, 1.0)], dataset_size=n)


def refuses(call, kind=(ValueError, TypeError), match=None):
    """``call()`` raises ``kind`` with a one-line message (matching ``match``)."""
    with pytest.raises(kind) as info:
        call()
    text = str(info.value)
    assert text and "\n" not in text and len(text) < 400, text
    assert type(info.value) not in (ZeroDivisionError, OverflowError), type(info.value)
    if match:
        assert match.lower() in text.lower(), text
    return text


# -- PlanBatchSampler --------------------------------------------------------------------
def sampler(*a, **k):
    from bsadvisor.runtime.sampler import PlanBatchSampler

    return PlanBatchSampler(*a, **k)


@pytest.mark.parametrize("args,kw,match", [
    ((None,), {}, "plan"),
    (("plan.json",), {}, "plan"),
    ((_plan(), "1000"), {}, "dataset_size"),
    ((_plan(), 1000.5), {}, "dataset_size"),
    ((_plan(), 999), {}, "1000"),
    ((_plan(),), {"seed": -1}, "seed"),
    ((_plan(),), {"seed": float("nan")}, "seed"),
    ((_plan(),), {"seed": 2**70}, "seed"),
    ((_plan(),), {"seed": "7"}, "seed"),
    ((_plan(),), {"rank": 2, "world_size": 2}, "rank"),
    ((_plan(),), {"world_size": 0}, "world_size"),
])
def test_sampler_constructor(args, kw, match):
    refuses(lambda: sampler(*args, **kw), match=match)


@pytest.mark.parametrize("state,match", [
    ({"epoch": 0, "seed": 2**70, "advance": False, "offset": 0}, "seed"),
    ({"epoch": -1, "seed": 0, "advance": False, "offset": 0}, "epoch"),
    ({"epoch": 10**30, "seed": 0, "advance": False, "offset": 0}, "epoch"),
    ({"epoch": 0, "seed": 0, "advance": False, "offset": -3}, "offset"),
    ({"epoch": 0, "seed": 0, "advance": False, "offset": 10**9}, "offset"),
    ({"epoch": "x", "seed": 0, "advance": False, "offset": 0}, "epoch"),
    ({"seed": 0}, "epoch"),
    ("garbage", "dict"),
    (None, "dict"),
])
def test_sampler_load_state_dict(state, match):
    s = sampler(_plan())
    before = s.state_dict()
    refuses(lambda: s.load_state_dict(state), match=match)
    assert s.state_dict() == before  # a refused state changes nothing


@pytest.mark.parametrize("epoch", [10**30, -1, 1.5, float("nan"), "2", None])
def test_sampler_set_epoch(epoch):
    refuses(lambda: sampler(_plan()).set_epoch(epoch), match="epoch")


def test_sampler_still_works():
    s = sampler(_plan(), seed=3)
    s.set_epoch(2)
    assert sum(len(b) for b in s) == 1000
    s.load_state_dict({"epoch": 1, "seed": 3, "advance": False, "offset": 200})
    assert sum(len(b) for b in s) == 800


# -- BatchSizeScheduler -----------------------------------------------------------------
def scheduler(plan=None, opt="sgd"):
    import torch

    from bsadvisor.runtime.scheduler import BatchSizeScheduler

    if opt == "sgd":
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return BatchSizeScheduler(_plan() if plan is None else plan, opt)


@pytest.mark.parametrize("plan,opt,match", [
    (None, None, "optimizer"),
    (None, "adam", "optimizer"),
    ("x", "sgd", "plan"),
])
def test_scheduler_constructor(plan, opt, match):
    import bsadvisor.runtime.scheduler as sch
    import torch

    p = _plan() if plan is None else plan
    o = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1) if opt == "sgd" else opt
    refuses(lambda: sch.BatchSizeScheduler(p, o), match=match)


@pytest.mark.parametrize("samples", ["x", -5, 1.5, float("nan"), 10**30, True])
def test_scheduler_step(samples):
    s = scheduler()
    refuses(lambda: s.step(samples=samples), match="samples")
    assert s.samples_seen == 0


@pytest.mark.parametrize("where", [-1, "x", 10**30, float("inf")])
def test_scheduler_seek_and_set_epoch(where):
    s = scheduler()
    refuses(lambda: s.seek(where), match="samples_seen")
    refuses(lambda: s.set_epoch(where), match="epoch")


@pytest.mark.parametrize("state", [None, "x", {"samples_seen": "a"}, {"samples_seen": -4}, {}])
def test_scheduler_load_state_dict(state):
    s = scheduler()
    refuses(lambda: s.load_state_dict(state))


# -- Plan ------------------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda p: p.at(float("inf")), "epoch"),
    (lambda p: p.at(-1), "epoch"),
    (lambda p: p.at("1"), "epoch"),
    (lambda p: p.at_sample(-1), "sample"),
    (lambda p: p.at_sample(2.5), "sample"),
    (lambda p: p.epoch_of(-5), "sample"),
    (lambda p: p.epoch_of("x"), "sample"),
    (lambda p: p.epoch_of(float("nan")), "sample"),
    (lambda p: p.update_end(-3), "sample"),
    (lambda p: p.stage_index(float("nan")), "epoch"),
])
def test_plan_queries(call, match):
    refuses(lambda: call(_plan()), match=match)


def test_plan_queries_still_work():
    p = _plan()
    assert p.epoch_of(2000) == 2 and p.epoch_of(500) == 0.5 and p.at(1e9).batch_size == 100
    # past the end (1e308 epochs: no OverflowError) the last stage holds, as at_sample says
    assert p.at(1e308) == p.at_sample(p.total_samples - 1) and p.stage_index(1e308) == len(p.stages) - 1


@pytest.mark.parametrize("path", [None, 5, ["plan.json"], b"\0"])
def test_plan_load_bad_path(path):
    refuses(lambda: Plan.load(path), match="plan")


@pytest.mark.parametrize("kw,match", [
    ({"stages": ["x"], "dataset_size": 10}, "stage"),
    ({"stages": "abc", "dataset_size": 10}, "stages"),
    ({"stages": None, "dataset_size": 10}, "stages"),
    ({"stages": [Stage(0, 10, 2, 0.1, 0.0, 1.0)], "dataset_size": "10"}, "dataset_size"),
    ({"stages": [Stage(0, 10, 2, "0.1", 0.0, 1.0)], "dataset_size": 10}, "lr"),
    ({"stages": [Stage(0, 10, 2, 0.1, None, 1.0)], "dataset_size": 10}, "momentum"),
    ({"stages": [Stage(0, "10", 2, 0.1, 0.0, 1.0)], "dataset_size": 10}, "stage 0"),
    ({"stages": [Stage(0, 10, 2, 0.1, 0.0, 1.0)], "dataset_size": 10, "inputs": "x"}, "inputs"),
])
def test_plan_constructor(kw, match):
    refuses(lambda: Plan(**kw), match=match)


# -- temperature ---------------------------------------------------------------------------
@pytest.mark.parametrize("args,kw,match", [
    ((0.1, 0, 100), {}, "batch_size"),
    ((0.1, 10, 100), {"momentum": 1}, "momentum"),
    ((0.1, 10, 100), {"momentum": 5}, "momentum"),
    ((float("nan"), 10, 100), {}, "lr"),
    ((-0.1, 10, 100), {}, "lr"),
    ((0.1, 200, 100), {}, "batch_size"),
    ((0.1, 10, 0), {}, "dataset_size"),
    ((0.1, "10", 100), {}, "batch_size"),
    ((0.1, 10, 100), {"rule": "magic"}, "rule"),
])
def test_temperature(args, kw, match):
    from bsadvisor.core.temperature import temperature

    refuses(lambda: temperature(*args, **kw), match=match)


def test_temperature_still_works():
    from bsadvisor.core.temperature import temperature

    assert math.isclose(temperature(0.1, 10, 100, momentum=0.9), 0.1 / 0.1 * 9)
    assert temperature(0.1, 100, 100) == 0


# -- load_trace ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,kind", [({"seed": -1}, ValueError), ({"seed": 1.5}, ValueError),
                                     ({"seed": True}, ValueError), ({"run": 3}, TypeError)])
def test_load_trace_arguments(tmp_path, kw, kind):
    from bsadvisor.core.noise_model import load_trace

    refuses(lambda: load_trace(tmp_path / "x.json", **kw), kind)
