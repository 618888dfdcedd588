"""One declarative schema per file type (bsadvisor.core.schema): plan, probe, JSON reading."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest

from bsadvisor.core import schema as S
from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import read_json
from bsadvisor.core.plan import Plan, Stage
from bsadvisor.core.probe_result import ProbeResult, ThroughputPoint, _build
from test_convert_cli import PLAN, PROBE


def test_validate_names_the_path_and_the_fix():
    spec = S.Obj({"stages": S.req(S.List(S.Obj({"batch_size": S.req(S.Int(low=1))})))})
    with pytest.raises(UserError) as info:
        S.validate({"stages": [{"batch_size": 1}, {"batch_size": 2}, {"batch_size": "big"}]}, spec, "plan file x.json",
                   "regenerate it")
    assert str(info.value) == ("plan file x.json: stages[2].batch_size must be a whole number ≥ 1, got 'big'; "
                               "regenerate it")


@pytest.mark.parametrize("spec,value,fragment", [
    (S.Int(low=1), 2**70, "below 2**63"),
    (S.Num(), float("nan"), "finite"),
    (S.Num(low=0, high=1, high_open=True), 1.0, "< 1"),
    (S.Str(choices=("a", "b")), "c", "one of a, b"),
    (S.List(S.Num(), length=2), [1.0], "2 values"),
    (S.Json(max_depth=2), [[[1]]], "nested more than 2"),
    (S.Json(max_depth=0), {"a": 1}, "a number, text"),
    (S.Bool(), 1, "true or false"),
])
def test_each_kind_refuses(spec, value, fragment):
    with pytest.raises(S.Invalid) as info:
        spec.check(value, "x")
    assert fragment in str(info.value)


def test_integral_floats_are_whole_numbers_and_null_is_nan_where_allowed():
    assert S.Int(low=1).check(128.0, "b") == 128 and isinstance(S.Int().check(128.0, "b"), int)
    assert math.isnan(S.Num(nullable=True, null_nan=True).check(None, "t"))
    assert S.Num(nullable=True).check(None, "t") is None


# ---------------------------------------------------------------- plan files
def test_plan_round_trip_keeps_stage_extras_and_inputs():
    doc = copy.deepcopy(PLAN)
    doc["stages"][1]["predicted_seconds"] = 12.5
    plan = Plan.from_dict(doc)
    assert plan.stages[1].extra == {"predicted_seconds": 12.5}
    assert plan.inputs == PLAN["inputs"] and plan.to_dict()["stages"][1]["predicted_seconds"] == 12.5
    assert Plan.from_dict(plan.to_dict()) == plan


def test_plan_inputs_that_disagree_with_the_stages_are_refused():
    for path, value, fragment in [("epochs", 300, "epochs is 300"), ("dataset_size", 100, "dataset_size is 100")]:
        doc = copy.deepcopy(PLAN)
        doc["inputs"][path] = value
        with pytest.raises(UserError, match=f"inputs.{fragment}"):
            Plan.from_dict(doc)


def test_plan_with_a_probe_holding_nan_serialises():
    """A NaN in the probe summary (e.g. an unbounded interval) is written as null, not a crash."""
    plan = Plan.from_dict(PLAN)
    plan.probe = {"ci90": [math.nan, math.inf]}
    assert json.loads(plan.to_json())["probe"]["ci90"] == [None, None]


def test_stage_lookup_and_batch_sizes_on_a_long_plan():
    n = 50_000
    stages = [Stage(0, 60 * n, 128, 0.1, 0.9, 1.0), Stage(60 * n, 999_000 * n, 640, 0.1, 0.9, 0.2),
              Stage(999_000 * n, 1_000_000 * n, 3200, 0.1, 0.9, 0.04)]
    plan = Plan(stages=stages, dataset_size=n)
    for epoch, i in [(0, 0), (59, 0), (59.5, 0), (60, 1), (998_999, 1), (999_000, 2), (10**12, 2)]:
        assert plan.stage_index(epoch) == i
    assert plan.stage_batch_sizes() == [128, 640, 3200]
    assert len(plan.batch_sizes()) == 1_000_000
    with pytest.raises(UserError, match="1,000,000"):
        Plan(stages=[Stage(0, 10**12 * n, 128, 0.1, 0.9, 1.0)], dataset_size=n)


def test_plan_from_a_conversion_with_a_million_epochs_loads():
    p = convert_schedule(lr=0.1, batch_size=128, dataset_size=50_000, epochs=1_000_000, momentum=0.9,
                         schedule="MultiStepLR(milestones=[60,120,160], gamma=0.2)")
    assert Plan.from_json(p.to_json()) == p


# ---------------------------------------------------------------- probe files
def test_probe_ignores_unknown_members_and_round_trips():
    doc = copy.deepcopy(PROBE)
    doc["future"] = {"deep": [[[[[[[[[1]]]]]]]]]}
    doc["noise"]["something_new"] = "x"
    doc["throughput"][0]["spread"] = 0.1
    r = ProbeResult.from_dict(doc)
    assert r.noise.b_simple == 400.0 and r.noise.ci90 == (360.0, 440.0)
    again = ProbeResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.to_dict() == r.to_dict()


def test_probe_reads_fields_a_newer_result_class_adds():
    """Another version may add fields with defaults (e.g. warnings, a throughput spread): read when present."""
    Newer = dataclasses.make_dataclass("Newer", [("batch_size", int), ("examples_per_s", float),
                                                 ("spread", float, dataclasses.field(default=0.0)),
                                                 ("warnings", list, dataclasses.field(default_factory=list))])
    p = _build(Newer, {"batch_size": 32, "examples_per_s": 1e4}, {"spread": 0.25, "warnings": ["busy"]}, "x", "probe")
    assert (p.spread, p.warnings) == (0.25, ["busy"])
    assert _build(Newer, {"batch_size": 32, "examples_per_s": 1e4}, {}, "x", "probe").warnings == []
    with pytest.raises(UserError, match="x.warnings"):
        _build(Newer, {"batch_size": 32, "examples_per_s": 1e4}, {"warnings": 5}, "x", "probe")
    assert _build(ThroughputPoint, {"batch_size": 8, "examples_per_s": 1.0}, {}, "t", "probe").batch_size == 8


# ---------------------------------------------------------------- read_json
@pytest.mark.parametrize("body,fragment", [
    (b"", "is empty"),
    (b"\xff\xfe\x00", "not a text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": ' + b"9" * 5000 + b"}", "5000 digits"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": 1e400}', "too large"),
    (b'{"a": 1,}', "not valid JSON"),
])
def test_read_json_refuses_in_one_line(tmp_path, body, fragment):
    f = tmp_path / "doc.json"
    f.write_bytes(body)
    with pytest.raises(UserError) as info:
        read_json(f, "plan file")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_read_json_accepts_a_byte_order_mark(tmp_path):
    f = tmp_path / "doc.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert read_json(f) == {"a": 1}
