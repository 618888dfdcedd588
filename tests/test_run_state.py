"""RunState (the training run's state by job), its Stopwatch, and the user_code guard.

RunState.state_dict() → load_state_dict() into fresh parts continues the run bit for bit (the
weights, the random streams a dropout layer draws from, the counters and records); the stopwatch
leaves out the noise monitor's seconds (a fake clock: no wall-time assertion); the guard turns what
the user's code raised into one line and lets a UserError through.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import bsadvisor
from bsadvisor.core.errors import UserError, first_line, raised, user_code
from bsadvisor.runtime.batches import make_gather
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.precision import StepRecipe
from bsadvisor.runtime.sampler import PlanBatchSampler
from bsadvisor.runtime.scheduler import BatchSizeScheduler
from bsadvisor.runtime.state import RunResult, RunState, Stopwatch
from bsadvisor.runtime.step import train_step
from bsadvisor.runtime.train import initial_state, train_plan
from bsadvisor.targets.target import Target


def _dropout_target(seed: int = 0, n: int = 256) -> Target:
    """A float32 MLP with dropout: its updates draw from torch's global stream, so a resume must restore it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = (x @ torch.randn(8, generator=gen) > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(x, y),
                  loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), batch_size=16, lr=0.05,
                  momentum=0.9, name="dropout")


def _plan(target: Target):
    return bsadvisor.convert_schedule(lr=target.lr, batch_size=target.batch_size, momentum=0.9,
                                      dataset_size=target.dataset_size, epochs=2, schedule="StepLR(step_size=1)")


def _state(target: Target, plan) -> RunState:
    s0 = plan.at_sample(0)
    optimizer = target.make_optimizer(target.model.parameters(), lr=s0.lr, momentum=s0.momentum)
    return RunState(plan=plan, seed=3, model=target.model, optimizer=optimizer,
                    scheduler=BatchSizeScheduler(plan, optimizer),
                    sampler=PlanBatchSampler(plan, target.dataset_size, seed=3), recipe=StepRecipe.of(target, None),
                    result=RunResult(name="run", seed=3, plan_updates=plan.updates))


def _advance(state: RunState, target: Target, updates: int) -> list[float]:
    """``updates`` updates of epoch 0 from where the state stands (a small loop over the state's parts)."""
    gather, losses = make_gather(target.train_dataset, None), []
    part = state.partial or {"epoch": 0, "offset": 0, "loss_sum": 0.0, "seen": 0}
    perm = state.sampler.permutation(0)
    for a, b in state.sampler.spans(0, part["offset"])[:updates]:
        loss = train_step(state.model, state.optimizer, target.loss_fn, gather, perm[a:b], recipe=state.recipe)
        losses.append(loss)
        part = {"epoch": 0, "offset": b, "loss_sum": part["loss_sum"] + loss * (b - a), "seen": b}
        state.partial, state.updates, state.examples = part, state.updates + 1, state.examples + b - a
        state.scheduler.step(samples=b - a)
    return losses


def test_state_dict_round_trip_continues_bit_for_bit():
    target = _dropout_target()
    plan = _plan(target)
    init = initial_state(target.model)
    whole = _state(target, plan)
    torch.manual_seed(11)
    _advance(whole, target, 4)
    saved = copy.deepcopy(whole.state_dict())
    later = _advance(whole, target, 5)
    weights = [p.detach().clone() for p in target.model.parameters()]

    target.model.load_state_dict(init)       # fresh parts, other weights and another global stream
    torch.manual_seed(999)
    resumed = _state(target, plan)
    resumed.load_state_dict(saved)
    assert (resumed.updates, resumed.examples, resumed.partial) == (4, 64, saved["partial"])
    assert _advance(resumed, target, 5) == later  # the same dropout masks: the random streams came back
    for w, p in zip(weights, target.model.parameters()):
        assert p.dtype == torch.float32 and torch.equal(w, p.detach())
    assert resumed.state_dict()["totals"] == whole.state_dict()["totals"]
    assert resumed.scheduler.state_dict() == whole.scheduler.state_dict()


def test_state_dict_holds_only_what_a_weights_only_load_reads(tmp_path):
    target = _dropout_target()
    state = _state(target, _plan(target))
    _advance(state, target, 2)
    torch.save(state.state_dict(), tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(back) == {"model", "optimizer", "scheduler", "sampler", "rng", "history", "steps", "evals", "since",
                         "partial", "monitor", "scaler", "skipped_steps", "totals"}


def test_train_plan_resumed_from_its_checkpoint_ends_with_the_same_float32_weights(tmp_path):
    target = _dropout_target()
    plan = _plan(target)
    init = initial_state(target.model)
    whole = train_plan(target, plan, seed=1, init_state=init)
    w_whole = [p.detach().clone() for p in target.model.parameters()]

    class Stop(Exception):
        pass

    def stop(rec):
        raise Stop

    with pytest.raises(Stop):
        train_plan(target, plan, seed=1, init_state=init, checkpoint=tmp_path / "c.pt", on_epoch=stop)
    resumed = train_plan(target, plan, seed=1, init_state=init, checkpoint=tmp_path / "c.pt", resume=True)
    assert resumed.resumed_from == 1
    for w, p in zip(w_whole, target.model.parameters()):
        assert p.dtype == torch.float32 and torch.equal(w, p.detach())
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]


class _FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_stopwatch_leaves_out_the_monitors_seconds_and_its_pauses():
    clock, monitor = _FakeClock(), {"seconds": 0.0}
    watch = Stopwatch(lambda: monitor["seconds"], clock=clock)
    watch.start()
    clock.now += 3.0                 # training
    clock.now += 2.0                 # the monitor's draws, which it books as its own seconds
    monitor["seconds"] += 2.0
    with watch.paused():             # an evaluation: not training time
        assert watch.seconds == 3.0  # up to date inside the pause (a curve point records it)
        clock.now += 50.0
    clock.now += 1.5
    watch.stop()
    assert watch.seconds == 4.5


def test_the_run_state_stopwatch_reads_the_monitor_it_has_now():
    target = _dropout_target()
    state = _state(target, _plan(target))
    clock = _FakeClock()
    state.stopwatch.clock = clock

    class Monitor:
        seconds = 0.0

    state.stopwatch.start()
    state.monitor = Monitor()        # train_plan attaches the monitor after building the state
    clock.now += 4.0
    Monitor.seconds = 1.0
    state.stopwatch.stop()
    assert state.wall == 3.0


def test_the_stopwatch_takes_the_slowest_rank():
    class TwoRanks(Dist):
        enabled = True

        def all_reduce(self, tensor, op="sum"):
            assert op == "max"
            return torch.maximum(tensor, torch.tensor(7.0, dtype=torch.float64))

    clock = _FakeClock()
    watch = Stopwatch(clock=clock, dist=TwoRanks())
    watch.start()
    clock.now += 2.0
    watch.stop()
    assert watch.seconds == 7.0


def test_user_code_turns_what_it_raised_into_one_line():
    with pytest.raises(UserError) as err:
        with user_code(lambda exc: f"metric_fn raised {raised(exc)}"):
            raise RuntimeError("shape mismatch\n  at layer 3\n")
    assert str(err.value) == "metric_fn raised RuntimeError: shape mismatch"
    assert err.value.__suppress_context__ and err.value.__context__.__traceback__ is None
    with pytest.raises(UserError, match="^loss_fn raised SystemExit: 3$"):
        with user_code(lambda exc: f"loss_fn raised {raised(exc)}"):
            raise SystemExit(3)
    with pytest.raises(UserError, match="^x raised KeyError$"):
        with user_code(lambda exc: f"x raised {type(exc).__name__}"):
            raise KeyError
    assert raised(ValueError("")) == "ValueError" and raised(ValueError("a" * 300), limit=5) == "ValueError: aaaaa"
    assert first_line(ValueError("\n  two\nthree")) == "two"


def test_user_code_lets_a_user_error_and_what_it_does_not_catch_through():
    mine = UserError("already one line")
    with pytest.raises(UserError) as err:
        with user_code(lambda exc: "wrapped"):
            raise mine
    assert err.value is mine
    with pytest.raises(UserError, match="^wrapped$"):
        with user_code(lambda exc: "wrapped", let_through=()):
            raise UserError("inner")
    with pytest.raises(TypeError):
        with user_code(lambda exc: "wrapped", catch=(Exception,), let_through=(TypeError,)):
            raise TypeError("no len")
    with pytest.raises(SystemExit):
        with user_code(lambda exc: "wrapped", catch=(Exception,)):
            raise SystemExit(1)
    with user_code(lambda exc: "wrapped"):
        ok = math.sqrt(4.0)
    assert ok == 2.0


def test_user_code_may_raise_another_exception_type():
    class OutOfMemory(Exception):
        pass

    with pytest.raises(OutOfMemory, match="batch 64"):
        with user_code(lambda exc: OutOfMemory(f"batch 64: {first_line(exc)}")):
            raise MemoryError("CUDA out of memory")


def test_run_state_is_a_public_name():
    assert bsadvisor.RunState is RunState


def test_the_run_documents_are_frozen_typed_and_write_the_json_they_always_wrote():
    import dataclasses
    import json

    from bsadvisor.runtime.documents import EpochRecord, EvalPoint, NoisePoint, SkippedStep, StepRecord

    rec = EpochRecord(epoch=1, batch_size=32, lr=0.1, momentum=0.9, train_loss=0.5, metric=None, updates=8,
                      examples=256, wall_s=1.5)
    assert list(rec.to_dict()) == ["epoch", "batch_size", "lr", "momentum", "train_loss", "metric", "updates",
                                   "examples", "wall_s"]  # "diverged" only when set
    bad = dataclasses.replace(rec, train_loss=math.inf, diverged=True)
    assert bad.to_dict()["diverged"] is True and bad["diverged"] and rec.get("diverged") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.lr = 1.0
    point = NoisePoint(sample=64, update=2, b_simple=100.0, ci90=(50.0, None), ci_kind="lower", trace_sigma=1.0,
                       grad_sq_norm=0.01, draws=8, micro_batch=8, big_batch=64, lr=0.1, momentum=0.0, batch_size=32,
                       how="draws", seconds=0.25)
    text = json.dumps(point.to_dict())
    assert text.startswith('{"sample": 64, "update": 2, "b_simple": 100.0, "ci90": [50.0, null], "ci_kind"')
    assert NoisePoint.from_dict(json.loads(text)) == point and point.ci90 == (50.0, None)
    assert point == json.loads(text) and point["ci90"] == [50.0, None]  # read as the dict it replaces
    for doc in (StepRecord(samples=0, batch_size=32, lr=0.1, momentum=0.9),
                SkippedStep(samples=32, update=1, loss_scale=65536.0),
                EvalPoint(point=40, samples=64, epoch=0.25, updates=2, batch_size=32, train_loss=None, metric=0.5,
                          wall_s=0.1)):
        assert type(doc).from_dict(doc.to_dict()) == doc and dict(doc) == doc.to_dict()


def test_a_runs_records_are_documents_and_its_json_their_to_dict():
    from bsadvisor.runtime.documents import EpochRecord, NoisePoint, StepRecord

    target = _dropout_target()
    r = train_plan(target, _plan(target), seed=0, max_micro_batch=4, noise_monitor={"window": 2})
    assert all(isinstance(h, EpochRecord) for h in r.history) and isinstance(r.steps[0], StepRecord)
    assert r.noise_trace and all(isinstance(p, NoisePoint) and p.how == "accumulation" for p in r.noise_trace)
    doc = r.to_dict()
    assert doc["history"] == [h.to_dict() for h in r.history] and type(doc["history"][0]) is dict
    assert doc["noise_trace"][0]["ci90"] == list(r.noise_trace[0].ci90)
    assert doc["final_train_loss"] == r.history[-1].train_loss and doc["updates"] == r.final.updates


def test_user_code_keeps_no_frame_of_the_failed_call_alive():
    import gc
    import weakref

    seen = []

    def step():
        activations = torch.ones(1000)  # what a failed probe step holds (memory an OOM trial must get back)
        seen.append(weakref.ref(activations))
        raise RuntimeError("CUDA out of memory")

    try:
        with user_code(lambda exc: f"loss_fn raised {raised(exc)}"):
            step()
    except UserError as exc:
        error = exc
    gc.disable()  # freed by reference counting, not by a collection later
    try:
        assert seen[0]() is None and str(error) == "loss_fn raised RuntimeError: CUDA out of memory"
    finally:
        gc.enable()
