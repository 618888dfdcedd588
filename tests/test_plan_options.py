"""``Plan.options``: the typed ConvertOptions a plan was made with, read back from its file (older files
migrated), and ``Plan.temperature_model``, the one model every reader of a plan rebuilds; the advice
documents advise prints."""
from __future__ import annotations

import json
import math

import pytest

from bsadvisor.core.baseline import baseline_of
from bsadvisor.core.convert import convert, convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.exports.fit import noise_factor
from bsadvisor.core.noise_model import NoiseModel
from bsadvisor.core.options import ConvertOptions
from bsadvisor.core.plan import V1_ADAM_RULE, Plan, Stage
from bsadvisor.core.predict import KeepBatchAdvice, StartAdvice, noise_at_start
from bsadvisor.core.probe_result import ProbeResult
from bsadvisor.core.recommend import Recommendation, recommend

from test_pipeline import probe_doc  # a probe at B 64, LR 0.01, N 16384 that measured the B_simple given

N, B0, LR = 16384, 128, 0.01
SCHEDULE = "MultiStepLR(milestones=[3,6,8], gamma=0.2)"
OPTIONS = dict(lr=0.1, batch_size=128, dataset_size=50_000, epochs=200, momentum=0.9, rule="proportional",
               schedule="MultiStepLR(milestones=[60,120,160], gamma=0.2)", max_batch=4096, round_to=8,
               max_fraction=0.5, stage_factor=1.5)


def reloaded(plan: Plan, tmp_path) -> Plan:
    path = tmp_path / "plan.json"
    plan.save(path)
    return Plan.load(path)


# -- Plan.options round-trips ------------------------------------------------------------------------------
def test_a_plan_file_gives_back_the_options_it_was_made_with(tmp_path):
    options = ConvertOptions(**OPTIONS)
    plan = convert(options)
    loaded = reloaded(plan, tmp_path)
    assert loaded.options.to_dict() == options.to_dict()
    assert convert(loaded.options).to_dict() == plan.to_dict()  # converting them again makes the same plan


def test_a_plan_made_with_a_probe_gives_back_its_layout_and_cap(tmp_path):
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(probe_doc(400.0)))
    plan = recommend(probe=probe, epochs=10, schedule=SCHEDULE, noise_cap=3, world_size=2, optimizer="adamw",
                     adam_rule="sqrt")
    loaded = reloaded(plan, tmp_path)
    o = loaded.options
    assert (o.world_size, o.micro_batch, o.optimizer, o.adam_rule, o.batch_size, o.lr) == (2, 1024, "adamw", "sqrt",
                                                                                          64, LR)
    assert loaded.noise_cap == 3 and loaded.probe_source == str(probe)
    assert o.noise_model is not None and o.noise_model.to_dict() == plan.probe["noise_model"]


def v1_doc(**inputs) -> dict:
    """A bsadvisor.plan/1 file (stages in whole epochs) of an Adam run that names no rule."""
    recorded = {"lr": 0.001, "batch_size": 32, "dataset_size": 3200, "epochs": 10, "momentum": 0.9,
                "schedule": "MultiStepLR(milestones=[5], gamma=0.1)", "optimizer": "adam", **inputs}
    return {"schema": "bsadvisor.plan/1", "dataset_size": 3200, "epochs": 10, "inputs": recorded,
            "stages": [{"start_epoch": 0, "end_epoch": 5, "batch_size": 32, "lr": 0.001, "momentum": 0.9},
                       {"start_epoch": 5, "end_epoch": 10, "batch_size": 320, "lr": 0.001, "momentum": 0.9}]}


def test_an_old_v1_file_is_migrated_missing_options_taking_their_defaults(tmp_path):
    plan = Plan.from_dict(v1_doc())
    o = plan.options
    # every /1 file was written while the square-root rule was Adam's default
    assert V1_ADAM_RULE == "sqrt" and o.adam_rule == "sqrt" and o.optimizer == "adam"
    defaults = ConvertOptions(lr=0.001, batch_size=32, dataset_size=3200, epochs=10, momentum=0.9,
                              schedule="MultiStepLR(milestones=[5], gamma=0.1)", optimizer="adam")
    assert o.to_dict() == {**defaults.to_dict(), "adam_rule": "sqrt", "max_growth": 0}  # made without a limit
    again = reloaded(plan, tmp_path)  # written as /2, the rule it meant is now said
    assert json.loads((tmp_path / "plan.json").read_text())["inputs"]["adam_rule"] == "sqrt"
    assert again.options.to_dict() == o.to_dict()
    # a rule the file names is kept
    assert Plan.from_dict(v1_doc(adam_rule="linear")).options.adam_rule == "linear"


def test_a_plan_without_its_run_reads_its_own_stages():
    plan = Plan(stages=[Stage(0, 2000, 10, 0.1, 0.9, 1.0), Stage(2000, 3000, 50, 0.1, 0.9, 1.0)],
                dataset_size=1000, inputs={"optimizer": "adamw", "world_size": 2})
    assert plan.missing_run() == ["lr", "batch_size", "schedule", "epochs"]
    o = plan.options
    assert (o.batch_size, o.lr, o.run_samples, o.optimizer, o.world_size) == (10, 0.1, 3000, "adamw", 2)
    with pytest.raises(UserError, match=r"lr, batch_size, schedule, epochs missing from 'inputs'"):
        baseline_of(plan)


# -- one temperature model -----------------------------------------------------------------------------------
def without_adam_rule(plan: Plan) -> Plan:
    """``plan`` as a bsadvisor.plan/2 file that names no Adam rule (one written by hand) reads back."""
    doc = plan.to_dict()
    del doc["inputs"]["adam_rule"]
    return Plan.from_dict(doc)


@pytest.mark.parametrize("schema", ["/2", "/1"])
def test_predict_and_the_exports_read_one_rule_for_an_adam_plan_without_adam_rule(schema):
    """The issue's disagreement: for an Adam plan whose file names no rule, predict read the linear rule and
    the exports the square-root one. Both now read Plan.temperature_model: today's default (linear) for a /2
    file, the square root a /1 file meant. Checked against the closed forms: B_noise(0) = B_simple ×
    T(probe's batch)/T(B0) (eq. 16) with T ∝ (N/B − 1)^p, p = 1 (linear) or ½ (sqrt)."""
    probe = ProbeResult.from_dict(probe_doc(400.0))
    made = convert_schedule(lr=LR, batch_size=B0, dataset_size=N, epochs=10, schedule=SCHEDULE, optimizer="adamw",
                            max_batch=1024)
    if schema == "/2":
        plan, p = without_adam_rule(made), 1.0
    else:
        plan, p = Plan.from_dict(v1_doc(lr=LR, batch_size=B0, dataset_size=N, epochs=10, schedule=SCHEDULE,
                                        optimizer="adamw") | {"dataset_size": N, "stages": [
            {"start_epoch": 0, "end_epoch": 10, "batch_size": B0, "lr": LR, "momentum": 0.9}]}), 0.5
    ratio = (N / 64 - 1) / (N / B0 - 1)
    model = plan.temperature_model()
    assert model.power == p and noise_factor(plan)[0] == p  # predict's model is the exports' model
    v = noise_factor(plan)[1]
    assert v(256) / v(B0) == pytest.approx((N / 256 - 1) / (N / B0 - 1), rel=1e-12)
    assert noise_at_start(plan, NoiseModel.from_probe(probe)) == pytest.approx(400.0 * ratio ** p, rel=1e-12)


# -- the advice documents ------------------------------------------------------------------------------------
def test_the_advice_documents_are_typed_and_print_as_before():
    grow = Recommendation.from_options(probe=ProbeResult.from_dict(probe_doc(4000.0)), epochs=10, schedule=SCHEDULE)
    advice = grow.start_advice
    assert isinstance(advice, StartAdvice) and advice.variants and advice.b0 == 64
    doc = grow.to_dict()["advice"]
    assert list(doc) == ["b0", "b_noise_at_start", "efficiency_at_b0", "plan_updates", "variants"]
    assert list(doc["variants"][0]) == ["increase_lr", "start_batch", "updates", "efficiency_at_start",
                                        "predicted_seconds"]
    first = advice.variants[0]
    assert doc["variants"][0]["updates"] == first.updates and first.start_batch > advice.b0
    assert advice.efficiency_at_b0 == pytest.approx(1 / (1 + advice.b0 / advice.b_noise_at_start))
    assert advice["b0"] == advice.b0  # read as the dict it replaced
    with pytest.raises(KeyError):
        advice["b_0"]
    keep = Recommendation.from_options(probe=ProbeResult.from_dict(probe_doc(2.0)), epochs=10, schedule=SCHEDULE,
                                       noise_cap=4).keep_batch
    assert isinstance(keep, KeepBatchAdvice) and keep.ratio == pytest.approx(keep.b0 / keep.b_noise)
    # the keys as before, then why the batch is kept (--noise-cap here; --tuned-lr gives a TunedLRAdvice)
    assert list(keep.to_dict()) == ["b0", "b_noise", "sample", "ratio", "efficiency_at_b0", "noise_cap", "reason"]
    assert math.isfinite(keep.efficiency_at_b0) and keep.noise_cap == 4 and keep.reason == "noise_cap"
    before = {k: v for k, v in keep.to_dict().items() if k != "reason"}  # an advice document written before it
    assert KeepBatchAdvice.from_dict(before) == keep


def test_recommend_takes_a_convert_options_that_carries_a_noise_model():
    """A ConvertOptions built with a noise model (as validate's library call gets one) is recommended as if that
    model were given as the trace: the same batches and the same B_noise annotation, not a TypeError."""
    from dataclasses import replace

    import bsadvisor
    from bsadvisor.core.noise_model import NoiseModel

    model = NoiseModel.from_dict({"source": "probe", "points": [
        {"sample": 0, "b_simple": 20.0, "lr": 0.05, "momentum": 0.9, "batch_size": 8, "ci90": [15.0, 25.0],
         "ci_kind": "bounded"}]})
    options = bsadvisor.ConvertOptions(lr=0.05, batch_size=8, momentum=0.9, dataset_size=3200, epochs=6,
                                       schedule="MultiStepLR(milestones=[2, 4], gamma=0.2)")
    want = bsadvisor.recommend(options, noise_trace=model, noise_cap=2)
    got = bsadvisor.recommend(replace(options, noise_model=model), noise_cap=2)
    assert got.stage_batch_sizes() == want.stage_batch_sizes()
    assert [s.extra.get("b_noise") for s in got.stages] == [s.extra.get("b_noise") for s in want.stages]
    assert all(s.extra.get("b_noise") for s in got.stages)
