"""The public pipeline: ``recommend`` is the plan convert-schedule prints, ``advise`` the document advise
prints, and ``options_for_target`` the options both advise and validate convert for a target."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

import bsadvisor
from bsadvisor.core.fileio import json_safe
from bsadvisor.core.probe_result import ProbeResult
from bsadvisor.core.recommend import BATCHNORM_WARNING, Recommendation, recommend
from bsadvisor.runtime.recipe import options_for_target

from hostile import run_main

SCHEDULE = "MultiStepLR(milestones=[3,6,8], gamma=0.2)"
CIFAR = dict(lr=0.1, batch_size=128, dataset_size=50000, epochs=200, momentum=0.9,
             schedule="MultiStepLR(milestones=[60,120,160], gamma=0.2)")


def probe_doc(b_simple: float, n: int = 16384, b0: int = 64, lr: float = 0.01, momentum: float = 0.0) -> dict:
    """A probe of builtin:linreg's settings measuring ``b_simple``."""
    return {
        "schema": "bsadvisor.probe/1", "target": "builtin:linreg",
        "noise": {"b_simple": b_simple, "ci90": [b_simple * 0.9, b_simple * 1.1], "trace_sigma": 4.0,
                  "grad_sq_norm": 4.0 / b_simple, "examples": 10000},
        "memory": {"max_batch": 1024, "bytes_per_sample": 1e5, "fixed_bytes": 1e7, "trials": 3},
        "throughput": [{"batch_size": b, "examples_per_s": r} for b, r in ((64, 1e4), (256, 3e4), (1024, 4e4))],
        "settings": {"lr": lr, "momentum": momentum, "batch_size": b0, "dataset_size": n, "device": "cpu",
                     "optimizer": "sgd", "estimator": "microbatch", "seed": 0},
    }


def as_json(doc) -> dict:
    """A document as the CLI prints it (emit_json: json_safe, then JSON)."""
    return json.loads(json.dumps(json_safe(doc)))


def printed(argv) -> dict:
    r = run_main(argv)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_pipeline_is_public():
    assert (bsadvisor.recommend, bsadvisor.Recommendation) == (recommend, Recommendation)
    from bsadvisor.measure.advise import advise

    assert bsadvisor.advise is advise


def test_recommend_is_the_plan_convert_schedule_prints(tmp_path):
    argv = ["convert-schedule", "--json"] + [f"--{k.replace('_', '-')}={v}" for k, v in CIFAR.items()]
    assert as_json(recommend(CIFAR).to_dict()) == printed(argv)
    assert as_json(recommend(bsadvisor.ConvertOptions(**CIFAR)).to_dict()) == printed(argv)
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(probe_doc(400.0)))
    argv = ["convert-schedule", "--json", "--probe", probe, "--epochs", "10", "--schedule", SCHEDULE,
            "--noise-cap", "3", "--world-size", "2"]
    plan = recommend(probe=probe, epochs=10, schedule=SCHEDULE, noise_cap=3, world_size=2)
    assert as_json(plan.to_dict()) == printed(argv)
    assert plan.cap["limited_by"] and plan.inputs["world_size"] == 2


def test_batchnorm_is_said_only_when_known():
    probe = ProbeResult.from_dict(probe_doc(400.0))
    plans = {bn: recommend(probe=probe, epochs=10, schedule=SCHEDULE, batchnorm=bn) for bn in (None, False, True)}
    said = {bn: [x for x in p.warnings + p.notes if "BatchNorm" in x] for bn, p in plans.items()}
    assert len(said[None]) == 1 and said[None][0] in plans[None].notes  # unknown: the generic note
    assert said[False] == [] and said[True] == [BATCHNORM_WARNING]
    assert plans[True].stages == plans[None].stages


def test_the_recommendation_is_the_original_schedule_when_b0_is_past_the_noise_scale():
    keep = Recommendation.from_options(probe=ProbeResult.from_dict(probe_doc(2.0)), epochs=10, schedule=SCHEDULE,
                                       noise_cap=4)
    assert keep.recommendation == "original" and keep.keep_batch["b0"] == 64 and keep.start_advice is None
    # without --noise-cap the probe's point vetoes nothing: the plan is recommended
    free = Recommendation.from_options(probe=ProbeResult.from_dict(probe_doc(2.0)), epochs=10, schedule=SCHEDULE)
    assert free.recommendation == "plan" and free.keep_batch is None and max(free.plan.stage_batch_sizes()) > 64
    assert keep.plan.inputs["kind"] == "baseline" and {s.batch_size for s in keep.plan.stages} == {64}
    grow = Recommendation.from_options(probe=ProbeResult.from_dict(probe_doc(4000.0)), epochs=10, schedule=SCHEDULE)
    assert grow.recommendation == "plan" and grow.keep_batch is None and grow.start_advice["variants"]
    assert grow.plan.to_dict() == recommend(probe=grow.probe, epochs=10, schedule=SCHEDULE).to_dict()


@pytest.fixture
def fake_probe(monkeypatch):
    """bsadvisor.probe replaced by one that returns a fixed measurement (and records how it was called)."""
    from bsadvisor.measure import probe as probe_module

    calls, result = [], {}

    def probe(target, **kw):
        calls.append(kw)
        return ProbeResult.from_dict(result["doc"])

    monkeypatch.setattr(probe_module, "probe", probe)
    return SimpleNamespace(calls=calls, set=lambda doc: result.update(doc=doc))


@pytest.mark.parametrize("b_simple", [4000.0, 2.0])  # a plan with start advice; the original schedule kept
def test_advise_returns_what_the_advise_command_prints(fake_probe, b_simple):
    fake_probe.set(probe_doc(b_simple))
    cli = printed(["advise", "builtin:linreg", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                   "--budget-seconds", "2", "--json"])
    rec = bsadvisor.advise(bsadvisor.load_target("builtin:linreg"), {"epochs": 10, "schedule": SCHEDULE},
                           device="cpu", budget_seconds=2, seed=0)
    assert as_json(rec.to_dict()) == cli
    assert cli["recommendation"] == "plan"  # the noise scale vetoes nothing by default
    asked = [{k: v for k, v in kw.items() if k != "progress"} for kw in fake_probe.calls]
    assert asked == [dict(batch_size=None, lr=None, device="cpu", budget_seconds=2, seed=0)] * 2


def test_advise_reads_the_noise_trace_once(fake_probe, tmp_path, monkeypatch):
    from bsadvisor.core import predict

    fake_probe.set(probe_doc(400.0))
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": s, "b_simple": 400.0, "ci90": [360.0, 440.0], "ci_kind": "bounded", "lr": lr, "momentum": 0.0,
         "batch_size": 64} for s, lr in ((0, 0.01), (100000, 0.0002))]}))
    reads = []
    monkeypatch.setattr(predict, "load_trace", lambda path: reads.append(path) or bsadvisor.load_trace(path))
    doc = printed(["advise", "builtin:linreg", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                   "--noise-trace", trace, "--json"])
    assert reads == [trace] and doc["plan"]["inputs"]["noise_trace"] == str(trace)


def test_options_for_target_fills_the_recipe_the_settings_and_adams_beta1():
    torch = pytest.importorskip("torch")
    recipe = {"schedule": "CosineAnnealingLR(T_max=100)", "schedule_unit": "step", "epochs": 1, "seq_len": 64}
    target = SimpleNamespace(name="t", metadata=recipe, lr=1e-3, batch_size=16, momentum=0.0, optimizer="adamw",
                             dataset_size=1000, model=torch.nn.Sequential(torch.nn.Linear(2, 2),
                                                                          torch.nn.BatchNorm1d(2)))
    made = options_for_target(target, {"rule": "proportional"})
    assert made.options == dict(rule="proportional", schedule=recipe["schedule"], epochs=1, schedule_unit="step",
                                seq_len=64, lr=1e-3, momentum=0.9, dataset_size=1000, batch_size=16,
                                optimizer="adamw")
    assert "t's own recipe" in made.note and made.batchnorm == ("1",) and made.length_given
    given = options_for_target(target, {"schedule": SCHEDULE, "epochs": 3, "momentum": 0.0, "lr": 0.5})
    assert given.note is None and given.options["momentum"] == 0.0 and given.options["lr"] == 0.5
    assert "seq_len" not in given.options and given.given["lr"] == 0.5


@pytest.mark.slow  # a real probe: a few seconds
def test_advise_with_a_real_probe_recommends_from_what_it_measured():
    rec = bsadvisor.advise(bsadvisor.load_target("builtin:linreg"), {"epochs": 10, "schedule": SCHEDULE},
                           device="cpu", budget_seconds=1.0)
    again = Recommendation.from_options(epochs=10, schedule=SCHEDULE, lr=0.01, batch_size=64, momentum=0.0,
                                        dataset_size=16384, optimizer="sgd", probe=rec.probe, batchnorm=False)
    assert rec.probe.target == "builtin:linreg" and rec.plan.to_dict() == again.plan.to_dict()
    assert rec.recommendation == again.recommendation


def test_advise_says_the_noise_scale_vetoes_nothing(fake_probe):
    """B0 = 64 against a probe B_simple of 2 (32× "past" it): by default advise still recommends the plan, and its
    output says the noise scale is reported, not used; --noise-cap 4 keeps the batch, saying it is the cap asked for."""
    fake_probe.set(probe_doc(2.0))
    argv = ["advise", "builtin:linreg", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu"]
    r = run_main(argv)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "the noise scale is reported, not used: it caps and vetoes nothing by default" in text
    assert "Keep the batch" not in text
    kept = run_main(argv + ["--noise-cap", "4"])
    assert kept.returncode == 0, kept.stderr
    kept_text = " ".join(kept.stdout.split())
    assert "Keep the batch" in kept_text and "--noise-cap 4 rules out growth past 4× the noise scale" in kept_text


def test_advise_grows_an_adam_runs_batch_to_twice_b0_by_default(fake_probe):
    """For Adam and AdamW the default plan grows the batch to at most 2 × B0 and lets the LR carry the rest
    (docs/results.md, "Growth to 2 × B0 for Adam"); --max-growth 0 lifts the limit. The original's updates are
    counted independently: one epoch of ⌈N/B0⌉ updates."""
    fake_probe.set(probe_doc(400.0, n=16384, b0=32, lr=0.002, momentum=0.9))
    base = ["advise", "builtin:charlm", "--device", "cpu", "--budget-seconds", "2", "--json"]
    capped, free = printed(base), printed(base + ["--max-growth", "0"])
    original = math.ceil(16384 / 32)
    assert capped["recommendation"] == "plan" and capped["keep_batch"] is None
    batches = [s["batch_size"] for s in capped["plan"]["stages"]]
    assert batches[0] == 32 and max(batches) <= 64 and capped["plan"]["cap"]["limited_by"] == "growth"
    assert capped["plan"]["inputs"]["max_growth"] == 2.0
    assert free["plan"]["plan"]["updates"] < capped["plan"]["plan"]["updates"] < original
    assert max(s["batch_size"] for s in free["plan"]["stages"]) > 64


def test_a_tuned_lr_keeps_an_adam_runs_batch_and_changes_nothing_for_sgd(fake_probe, tmp_path):
    """--tuned-lr: for AdamW the original schedule is recommended, with why and the plan it would have trained
    (docs/results.md: at a tuned LR growth to 2 × B0 was rejected on two of eight models); the plan file written
    is the original's, update by update. For SGD the plan is the same as without it, and a note says so."""
    fake_probe.set(probe_doc(400.0, n=16384, b0=32, lr=0.002, momentum=0.9))
    base = ["advise", "builtin:charlm", "--device", "cpu", "--budget-seconds", "2"]
    grown, kept = printed(base + ["--json"]), printed(base + ["--json", "--tuned-lr"])
    original = math.ceil(16384 / 32)
    assert kept["recommendation"] == "original" and kept["keep_batch"]["reason"] == "tuned_lr"
    assert kept["keep_batch"]["plan_updates"] == grown["plan"]["plan"]["updates"] < original
    assert kept["keep_batch"]["original_updates"] == kept["plan"]["plan"]["updates"] == original
    assert {s["batch_size"] for s in kept["plan"]["stages"]} == {32}
    text = run_main(base + ["--tuned-lr", "--out", str(tmp_path / "plan.json")])
    assert text.returncode == 0, text.stderr
    words = " ".join(text.stdout.split())
    assert "Keep the batch: your LR is tuned (--tuned-lr)" in words and "REJECTED on two of the eight" in words
    assert f"Recommended: your original schedule, unchanged ({original:,} updates)" in words
    assert bsadvisor.Plan.load(tmp_path / "plan.json").stage_batch_sizes() == [32]

    fake_probe.set(probe_doc(400.0, n=32000, b0=32, lr=0.1, momentum=0.9))
    sgd = ["advise", "builtin:mnist1d-mlp", "--device", "cpu", "--budget-seconds", "2", "--json", "--epochs", "10",
           "--schedule", "MultiStepLR(milestones=[3, 6, 8], gamma=0.2)"]
    plain, tuned = printed(sgd), printed(sgd + ["--tuned-lr"])
    assert tuned["recommendation"] == "plan" and tuned["plan"]["stages"] == plain["plan"]["stages"]
    assert any(n.startswith("--tuned-lr changes nothing for SGD") for n in tuned["plan"]["notes"])
    with pytest.raises(bsadvisor.UserError, match="tuned_lr"):
        Recommendation.from_options(ADAMW_STEPS, tuned_lr="yes")


#: AdamW with the LR stepped down × 0.2 at epochs 2 and 4: the growth limit's closed-form case.
ADAMW_STEPS = dict(lr=1e-3, batch_size=32, dataset_size=32000, epochs=6, rule="proportional",
                   schedule="MultiStepLR(milestones=[2, 4], gamma=0.2)", optimizer="adamw")


def test_growth_limit_is_the_hybrid_in_closed_form():
    """AdamW, MultiStepLR γ 0.2 at epochs 2 and 4, the paper's proportional rule (B = B0/ρ, the LR × B/B0 past
    the cap): the original trains (32, 1e-3), (32, 2e-4), (32, 4e-5). Growth to 2 × B0 gives (64, 4e-4) and
    (64, 8e-5): the batch stops at 64 and each stage's LR is the original's × 2, so ε/B is the original's.
    Without the limit the second stage is the full conversion (160, 1e-3). SGD has no limit by default."""
    common = ADAMW_STEPS
    mid = [32000 * e + 16000 for e in (1, 3, 5)]  # inside each LR step of the original

    def settings(plan):
        return [(plan.at_sample(s).batch_size, plan.at_sample(s).lr) for s in mid]

    capped = recommend(common)
    assert [b for b, _ in settings(capped)] == [32, 64, 64]
    assert [lr for _, lr in settings(capped)] == pytest.approx([1e-3, 4e-4, 8e-5], rel=1e-9)
    assert capped.cap["limited_by"] == "growth" and capped.options.growth_limit == 2.0
    free = recommend({**common, "max_growth": 0})
    assert settings(free)[:2] == [(32, 1e-3), (160, pytest.approx(1e-3))]
    three = recommend({**common, "max_growth": 3})
    assert [b for b, _ in settings(three)] == [32, 96, 96]
    assert [lr for _, lr in settings(three)] == pytest.approx([1e-3, 6e-4, 1.2e-4], rel=1e-9)
    sgd = recommend({**common, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9})
    assert sgd.options.growth_limit is None and max(s.batch_size for s in sgd.stages) > 64


def test_a_plan_file_from_before_the_growth_limit_reconverts_unlimited():
    """A plan whose inputs lack max_growth was made without a growth limit: read back, its options say 0 (no
    limit) and converting them again gives the same stages; a plan made today records its limit."""
    common = ADAMW_STEPS
    free = recommend({**common, "max_growth": 0})
    doc = free.to_dict()
    del doc["inputs"]["max_growth"]
    old = bsadvisor.Plan.from_dict(doc)
    assert old.options.max_growth == 0 and old.options.growth_limit is None
    again = recommend(old.options)
    assert [(s.batch_size, s.lr) for s in again.stages] == [(s.batch_size, s.lr) for s in free.stages]
    assert recommend(common).options.max_growth == 2.0
