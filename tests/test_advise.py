"""A probe file shapes the plan (cap, defaults, predicted time, efficiency), advise, export.

Expected numbers are computed here from the formulas (McCandlish et al. eq. 2.11/2.12,
docs/concepts.md eqs. 1 and 10), independently of bsadvisor.core.predict.
"""
from __future__ import annotations

import json
import math

import pytest

from bsadvisor.core.errors import UserError
from bsadvisor.core.exports import export_csv, export_megatron_ramp as export_megatron
from bsadvisor.core.plan import Plan
from bsadvisor.core.predict import NOISE_NOT_USED, plan_from_options
from hostile import Snapshot, assert_one_line_error, run_main

N, B0, LR, M = 32000, 32, 0.05, 0.9
SCHEDULE = "MultiStepLR(milestones=[3,6,8], gamma=0.2)"
LADDER = [(32, 10000.0), (128, 30000.0), (512, 40000.0)]


def probe_doc(max_batch=256, b_simple=400.0, ladder=LADDER):
    return {
        "schema": "bsadvisor.probe/1", "target": "test",
        "noise": {"b_simple": b_simple, "ci90": [b_simple * 0.9, b_simple * 1.1], "trace_sigma": 4.0,
                  "grad_sq_norm": 4.0 / b_simple, "examples": 10000},
        "memory": {"max_batch": max_batch, "bytes_per_sample": 1e5, "fixed_bytes": 1e7, "trials": 3},
        "throughput": [{"batch_size": b, "examples_per_s": r} for b, r in ladder],
        "settings": {"lr": LR, "momentum": M, "batch_size": B0, "dataset_size": N, "device": "cpu",
                     "optimizer": "sgd", "estimator": "microbatch", "seed": 0},
    }


@pytest.fixture
def probe_file(tmp_path):
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(probe_doc()))
    return path


def g(lr, m, b, n=N):  # docs/concepts.md eq. 1, exact rule
    return lr / (1 - m) * (n / b - 1)


def rate(b):  # linear interpolation in log batch, flat outside the ladder
    xs = [math.log(x) for x, _ in LADDER]
    x = math.log(b)
    if x <= xs[0]:
        return LADDER[0][1]
    if x >= xs[-1]:
        return LADDER[-1][1]
    for (x0, r0), (x1, r1), lx0, lx1 in zip(LADDER, LADDER[1:], xs, xs[1:]):
        if lx0 <= x <= lx1:
            w = (x - lx0) / (lx1 - lx0)
            return r0 + w * (r1 - r0)


def test_probe_supplies_defaults_and_device_cap(probe_file):
    plan = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0)
    assert plan.dataset_size == N and plan.inputs["batch_size"] == B0
    assert plan.inputs["lr"] == LR and plan.inputs["momentum"] == M
    assert plan.cap["batch_size"] == 256 and plan.cap["limited_by"] == "device"
    assert max(plan.batch_sizes()) == 256
    # world size and accumulation multiply the per-device cap
    plan = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0,
                             world_size=2, grad_accum=3)
    assert plan.cap["batch_size"] == 256 * 2 * 3
    # an explicit --max-batch wins over the probe
    plan = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0, max_batch=100)
    assert plan.cap["batch_size"] == 100


def test_predicted_time_and_efficiency_follow_the_formulas(probe_file):
    plan = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0)
    g_probe = g(LR, M, B0)
    for s in plan.stages:
        micro = math.ceil(s.batch_size / math.ceil(s.batch_size / 256))
        assert s.extra["predicted_seconds"] == pytest.approx(s.samples / rate(micro), rel=1e-12)
        middle = (s.start_sample + s.end_sample) // 2  # figures at the stage's middle, its LR there (eq. 16)
        lr_mid = s.lr_scale * LR * 0.2 ** sum(middle >= m * N for m in (3, 6, 8))
        b_noise = 400.0 * g_probe / g(lr_mid, s.momentum, s.batch_size)
        assert s.extra["b_noise"] == pytest.approx(b_noise, rel=1e-12)
        assert s.extra["efficiency"] == pytest.approx(1 / (1 + s.batch_size / b_noise), rel=1e-12)
        assert s.extra["step_efficiency"] == pytest.approx(1 / (1 + b_noise / s.batch_size), rel=1e-12)
    pred = plan.probe["predicted"]
    assert pred["baseline_predicted_seconds"] == pytest.approx(10 * N / rate(B0), rel=1e-12)
    assert pred["predicted_seconds"] == pytest.approx(sum(s.extra["predicted_seconds"] for s in plan.stages))
    doc = plan.to_dict()
    assert doc["schema"] == "bsadvisor.plan/2" and doc["probe"]["b_simple"] == 400.0
    assert all("predicted_seconds" in s and "efficiency" in s for s in doc["stages"])
    # plans without a probe carry none of it
    bare = plan_from_options(lr=LR, batch_size=B0, dataset_size=N, momentum=M, epochs=10, schedule=SCHEDULE)
    assert "probe" not in bare.to_dict() and all("efficiency" not in s for s in bare.to_dict()["stages"])


def test_growth_far_past_the_noise_scale_is_flagged_where_it_happens(tmp_path):
    # B0 = 32 against B_simple = 2 at the probe's temperature: 16× B_noise at the start
    path = tmp_path / "p.json"
    path.write_text(json.dumps(probe_doc(max_batch=100000, b_simple=2.0)))
    # the probe's one point near initialisation flags nothing about late in the run; the same point as a
    # measured trace (one point: flat through the run) does
    from_probe = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=0)
    assert not any("noise scale there" in w for w in from_probe.warnings)
    flagged = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=0,
                                noise_trace=_trace(tmp_path, [(0, 2.0, LR)]))
    warning = next(w for w in flagged.warnings if "noise scale there" in w)
    first = flagged.stages[0]
    assert f"batch {first.batch_size:,} " in warning and "B_noise ≈ 2 at sample 0" in warning
    # B_simple = 400: B_noise grows as 1/T as fast as the plan's batch, so nothing is flagged
    path.write_text(json.dumps(probe_doc(max_batch=100000, b_simple=400.0)))
    assert not any("noise scale there" in w for w in plan_from_options(
        probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=0).warnings)
    # by default nothing is capped (the noise scale did not predict the outcome, docs/results.md), and the plan
    # says the noise scale is reported, not used
    default = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0)
    assert default.inputs["noise_cap"] is None and NOISE_NOT_USED in default.notes
    assert default.stages == plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0,
                                               noise_cap=0).stages
    assert NOISE_NOT_USED not in plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0,
                                                   noise_cap=4).notes


def _trace(tmp_path, points):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": s, "b_simple": b, "ci90": [b * 0.9, b * 1.1], "ci_kind": "bounded", "lr": lr, "momentum": M,
         "batch_size": B0} for s, b, lr in points]}))
    return path


def test_noise_cap_from_a_trace_caps_and_the_lr_carries_the_rest(tmp_path):
    # A trace whose B_simple stays at 50 while the LR falls 125×: B_noise no longer grows as 1/T, so a
    # cap of 3 × B_noise(s) binds and the LR carries the rest of the decay (hybrid, exact rule).
    trace = _trace(tmp_path, [(0, 50.0, LR), (10 * N, 50.0, LR * 0.2 ** 3)])
    probe_file = tmp_path / "probe.json"
    probe_file.write_text(json.dumps(probe_doc(max_batch=100000)))
    capped = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=3,
                               noise_trace=trace)
    t0, t_end = g(LR, M, B0), g(LR * 0.2 ** 3, M, B0)

    def b_noise(sample):  # eq. 16: B·T interpolated log-linearly between the two points, over T(s)
        bt = 50.0 * t0 * (t_end / t0) ** (sample / (10 * N))
        return bt / g(LR * 0.2 ** sum(sample >= m * N for m in (3, 6, 8)), M, B0)

    assert capped.cap["noise_scale"] == math.floor(3 * b_noise(8 * N))  # the last piece's cap
    assert capped.cap["limited_by"] == "noise_scale"
    for st in capped.stages:
        assert st.batch_size <= 3 * b_noise(st.start_sample) * (1 + 1e-12)
    last = capped.at(8)
    assert last.batch_size == math.floor(3 * b_noise(8 * N)) and capped.stages[-1].phase == "hybrid"
    assert last.lr == pytest.approx(LR * 0.2 ** 3 * (N / B0 - 1) / (N / last.batch_size - 1), rel=1e-12)
    assert capped.inputs["noise_trace"] == str(trace) and capped.probe["noise_model"]["source"] == "trace"


def test_noise_cap_follows_the_temperature_under_adam(tmp_path):
    # Adam, square-root rule: the target batch grows as 1/ρ², B_noise as 1/ρ, so a cap of
    # K·B_noise(s) binds later in the run (not at its start): hybrid from there.
    doc = probe_doc(max_batch=100000, b_simple=100.0)
    doc["settings"]["optimizer"] = "adam"
    doc["settings"]["momentum"] = 0.9
    path = tmp_path / "adam.json"
    path.write_text(json.dumps(doc))
    plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=2,
                             adam_rule="sqrt", max_growth=0)

    def t_adam(lr, b):  # T ∝ η·√(N/B − 1) (Malladi et al.), Adam's β1 not in it
        return lr * math.sqrt(N / b - 1)

    for s in plan.stages:
        rho = 0.2 ** sum(s.start_sample >= m * N for m in (3, 6, 8))
        cap = 2 * 100.0 * t_adam(LR, B0) / t_adam(LR * rho, B0)
        assert s.batch_size <= cap * (1 + 1e-9)  # a cap of exactly 5,000 is 4,999.999… in floats: 5,000 fits
        # the cap, the efficiency and the warning read the same B_noise (eq. 16)
        assert s.extra["efficiency"] == pytest.approx(1 / (1 + s.batch_size / s.extra["b_noise"]), rel=1e-12)
    assert any(s.phase == "hybrid" for s in plan.stages) and plan.stages[0].phase != "hybrid"
    assert plan.cap["limited_by"] == "noise_scale"


@pytest.mark.parametrize("b_simple", [2.0, 100.0])
def test_cap_efficiency_and_warning_read_one_noise_scale(tmp_path, b_simple):
    doc = probe_doc(max_batch=100000, b_simple=b_simple)
    doc["settings"]["optimizer"] = "adam"
    path = tmp_path / "adam.json"
    path.write_text(json.dumps(doc))
    # the warning reads a measured trace (here one point, the probe's own reading); the probe alone flags nothing
    free = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=0,
                             noise_trace=_trace(tmp_path, [(0, b_simple, LR)]))
    over = [s for s in free.stages if s.batch_size > 10 * s.extra["b_noise"]]
    assert bool(over) == any("noise scale there" in w for w in free.warnings)
    for k in (2, 10, 4):
        capped = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=k)
        for s in capped.stages:
            if s.batch_size > B0:  # B0 itself is the user's, kept even above a cap (the batch never shrinks)
                assert s.batch_size <= k * s.extra["b_noise"] * (1 + 1e-9)
            assert s.extra["efficiency"] == pytest.approx(1 / (1 + s.batch_size / s.extra["b_noise"]), rel=1e-12)
        assert not any("noise scale there" in w for w in capped.warnings)  # a cap given: nothing to flag


def test_noise_cap_refuses_an_estimate_without_a_bounded_interval(tmp_path):
    from bsadvisor.core.errors import UserError

    doc = probe_doc(b_simple=400.0)
    doc["noise"].update(ci90=[150.0, None], ci_kind="lower-bound")
    path = tmp_path / "open.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="not a usable cap.*--budget-seconds.*--batch-size"):
        plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, noise_cap=10)
    plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE)  # without a cap: no efficiency, a warning
    assert all("efficiency" not in s.extra for s in plan.stages)
    assert any("no upper bound" in w for w in plan.warnings)
    # a negative estimate never becomes a cap either
    doc = probe_doc(b_simple=400.0)
    doc["noise"].update(b_simple=-85.0, ci90=[0.0, None], ci_kind="unbounded")
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="not a usable cap"):
        plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, noise_cap=10)
    r = cli("convert-schedule", "--probe", str(path), "--epochs", "10", "--schedule", SCHEDULE, "--noise-cap", "10")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_export_formats():
    plan = plan_from_options(lr=LR, batch_size=B0, dataset_size=N, momentum=M, epochs=10, schedule=SCHEDULE,
                             rule="proportional", max_fraction=1.0)
    with pytest.raises(UserError, match="cannot be expressed"):  # ×5 steps: no linear ramp is close
        export_megatron(plan)
    rows = export_csv(plan).strip().splitlines()
    assert rows[0] == "start_sample,end_sample,batch_size,lr_scale,lr,momentum,phase" and len(rows) == 5
    # one row per stage; proportional rule: the LR factor is B/B0 (docs/concepts.md)
    assert [r.split(",")[:4] for r in rows[1:]] == [
        ["0", str(3 * N), "32", "1"], [str(3 * N), str(6 * N), "160", "5"], [str(6 * N), str(8 * N), "800", "25"],
        [str(8 * N), str(10 * N), "4000", "125"]]


def cli(*args, cwd=None):
    """``bsadvisor ARGS`` through the CLI's entry point, in-process (tests/hostile.py)."""
    return run_main(args, cwd=cwd)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(schema="bsadvisor.probe/0"), "schema"),
    (lambda d: d["memory"].pop("max_batch"), "max_batch"),
    (lambda d: d["noise"].update(b_simple="big"), "b_simple"),
    (lambda d: d.pop("throughput"), "throughput"),
    (lambda d: d["settings"].update(dataset_size=None), "dataset_size"),
])
def test_bad_probe_files_exit_2_with_one_line(tmp_path, mutate, needle):
    doc = probe_doc()
    mutate(doc)
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    r = cli("convert-schedule", "--probe", str(path), "--epochs", "10", "--schedule", SCHEDULE)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--world-size", "0"], "--world-size"),
    (["--grad-accum", "-1"], "--grad-accum"),
    (["--dataset-size", "999"], "disagrees"),
    (["--noise-cap", "-1"], "--noise-cap"),  # 0 turns the default cap off
])
def test_mismatched_probe_options_exit_2(probe_file, args, needle):
    r = cli("convert-schedule", "--probe", str(probe_file), "--epochs", "10", "--schedule", SCHEDULE, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_probe_file_not_json_or_missing(tmp_path):
    bad = tmp_path / "probe.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json"):
        r = cli("convert-schedule", "--probe", str(path), "--epochs", "10", "--schedule", SCHEDULE)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_export_cli_and_bad_plan(tmp_path):
    plan = plan_from_options(lr=LR, batch_size=B0, dataset_size=N, momentum=M, epochs=10, schedule=SCHEDULE)
    path = tmp_path / "plan.json"
    plan.save(path)
    r = cli("export", str(path), "--format", "csv")
    assert r.returncode == 0 and r.stdout.splitlines()[1].split(",")[:3] == ["0", str(3 * N), "32"]
    r = cli("export", str(path), "--format", "lightning")
    assert r.returncode == 2 and "lightning" in r.stderr
    path.write_text(json.dumps({"schema": "nope"}))
    r = cli("export", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a real probe of several seconds
def test_advise_on_mnist1d_stays_within_the_measured_cap():
    r = cli("advise", "builtin:mnist1d-mlp", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                "--budget-seconds", "8", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bsadvisor.advice/1"
    cap = doc["probe"]["memory"]["max_batch"]
    plan = Plan.from_dict(doc["plan"])
    assert max(plan.batch_sizes()) <= cap
    assert doc["plan"]["probe"]["b_simple"] == doc["probe"]["noise"]["b_simple"]
    noise, advice = doc["probe"]["noise"], doc["advice"]
    if noise["ci_kind"] == "bounded" and noise["b_simple"] >= 4 * B0:  # B0 well below the noise scale
        # at the probe's own setting eq. 16 gives back the measured value
        assert advice["b_noise_at_start"] == pytest.approx(noise["b_simple"], rel=1e-12)
        for v in advice["variants"]:
            assert B0 < v["start_batch"] <= advice["b_noise_at_start"] and v["updates"] < plan.updates
            assert v["increase_lr"] == pytest.approx(v["start_batch"] / B0, rel=0.05)  # SGD: K = B/B0 (exact rule)
    else:
        assert advice is None


@pytest.mark.slow  # a real probe of several seconds
def test_advise_refuses_an_open_noise_estimate_as_a_cap_and_keeps_the_probe(tmp_path):
    # linear regression started at its optimum: the true gradient is 0, so |G|² is not significant
    (tmp_path / "at_optimum.py").write_text(
        "import torch\nfrom bsadvisor.targets.builtins import linreg\n\n\ndef make():\n    t = linreg()\n"
        "    with torch.no_grad():\n        t.model.weight.copy_(torch.as_tensor(t.metadata['w_star']).reshape(1, -1))\n"
        "    return t\n")
    r = cli("advise", "at_optimum.py:make", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                "--lr", "1e-7", "--budget-seconds", "3", "--noise-cap", "10", "--probe-out", "probe.json",
                cwd=tmp_path)
    probe = json.loads((tmp_path / "probe.json").read_text())  # written before the refusal: nothing lost
    assert probe["noise"]["ci_kind"] != "bounded", probe["noise"]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "not a usable cap" in r.stderr and "--budget-seconds" in r.stderr


def test_probe_world_size_is_the_default_for_convert(tmp_path):
    doc = probe_doc()
    doc["settings"]["world_size"] = 4  # a probe taken under torchrun
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0)
    assert plan.cap["batch_size"] == 256 * 4
    plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, world_size=1)
    assert plan.cap["batch_size"] == 256


def test_keep_batch_when_b0_is_already_past_the_noise_scale(tmp_path):
    """B0 ≥ 4 × B_noise where the decay begins: the original schedule is the recommendation (eq. 16: at the
    probe's own setting B_noise is the measured B_simple)."""
    from bsadvisor.core.predict import keep_batch_advice, noise_model_of
    from bsadvisor.core.probe_result import load_probe

    for b_simple, keeps in ((5.0, True), (7.9, True), (8.1, False), (400.0, False)):
        path = tmp_path / f"probe{b_simple}.json"
        path.write_text(json.dumps(probe_doc(b_simple=b_simple)))
        plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, noise_cap=4)
        keep = keep_batch_advice(plan, noise_model_of(load_probe(path)))
        assert (keep is not None) == keeps, (b_simple, keep)
        # without a --noise-cap the noise scale vetoes nothing
        assert keep_batch_advice(plan_from_options(probe=path, epochs=10, schedule=SCHEDULE),
                                 noise_model_of(load_probe(path))) is None
        if keeps:
            assert keep["ratio"] == pytest.approx(B0 / b_simple) and keep["b_noise"] == pytest.approx(b_simple)
            assert plan.stages[0].batch_size == B0  # no growth at the start (the cap 4 × B_noise is below B0)


def test_a_trace_whose_noise_scale_grows_later_lets_the_capped_plan_grow(tmp_path):
    """A trace that starts at B_simple 5 (B0 = 32 is 6× past it where the decay begins) and grows 100× by the
    second decay: B0 is past the noise scale at the start, but the plan capped at 4 × B_noise(s) grows later,
    so that plan is the advice (the probe alone, one point at initialisation, keeps the batch)."""
    from bsadvisor.core.predict import keep_batch_advice, noise_model_of
    from bsadvisor.core.probe_result import load_probe

    probe_file = tmp_path / "probe.json"
    probe_file.write_text(json.dumps(probe_doc(max_batch=100000, b_simple=5.0)))
    probe_only = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=4)
    assert keep_batch_advice(probe_only, noise_model_of(load_probe(probe_file))) is not None
    trace = _trace(tmp_path, [(0, 5.0, LR), (3 * N, 50.0, LR * 0.2), (6 * N, 500.0, LR * 0.2 ** 2)])
    plan = plan_from_options(probe=probe_file, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_trace=trace,
                             noise_cap=4)
    model = noise_model_of(load_probe(probe_file), trace)
    assert model.source == "trace" and keep_batch_advice(plan, model) is None
    assert plan.stages[0].batch_size == B0 and max(plan.stage_batch_sizes()) > B0
    for st in plan.stages:  # and it never grows past the cap
        assert st.batch_size <= max(B0, 4 * st.extra["b_noise"] * (1 + 1e-9))


@pytest.mark.slow  # a real probe of several seconds
def test_advise_keeps_the_batch_on_a_target_past_its_noise_scale():
    """linreg (d = 16) from w = 0 has B_simple ≈ d + 1 + d·s²/|w*|² ≈ 18: at B0 = 128, 7× past it."""
    r = cli("advise", "builtin:linreg", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                "--batch-size", "128", "--budget-seconds", "3", "--noise-cap", "4")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "Keep the batch" in text and "Recommended: your original schedule, unchanged" in text
    j = cli("advise", "builtin:linreg", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                "--batch-size", "128", "--budget-seconds", "3", "--json", "--noise-cap", "4")
    doc = json.loads(j.stdout)
    noise = doc["probe"]["noise"]
    assert noise["ci_kind"] == "bounded" and 128 >= 4 * noise["ci90"][1], noise  # clearly past 4 × B_simple
    assert doc["recommendation"] == "original" and doc["keep_batch"]["ratio"] >= 4
    assert Plan.from_dict(doc["plan"]).stage_batch_sizes() == [128] and doc["plan"]["inputs"]["kind"] == "baseline"


# ---- hostile inputs to advise and export ----------------------------------------------------------
# Hostile inputs to advise's targets and options and to export: each is one ``error:``
# line on stderr, exit 2, no traceback, and nothing in the folder changed or half-written.
#
# Every case fails before the probe: the target and option cases of advise before torch is
# imported (except the two marked ``dry run``, which load builtin:linreg and are refused by the
# conversion of the options with the target's settings, still before any measurement).

SCHED = "MultiStepLR(milestones=[2,4], gamma=0.2)"
ADVISE = ["--epochs", "6", "--schedule", SCHED, "--device", "cpu"]

# Files a case can ask for (relative path → content); "/" in a name makes folders.
FILES = {
    "ok.py": "def make():\n    return 42\n",
    "notes.txt": "def make():\n    pass\n",
    "raises.py": "raise RuntimeError('broken at import')\n",
    "syntax.py": "def make(:\n    pass\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "fn_raises.py": "def make():\n    raise ValueError('bad setup\\nsecond line of the message')\n",
    "returns_none.py": "def make():\n    return None\n",
    "not_callable.py": "make = 5\n",
    "binary.py": b"\xff\xfe\x00\x00garbage",
    "markup.py": "def make():\n    raise RuntimeError('[/red] closing tag [bold]oops')\n",
    "a[/x]b/t.py": "def make():\n    raise KeyError('[/x]')\n",
    "brokenmod.py": "import no_such_dependency_xyz\n\ndef make():\n    pass\n",
    "folder.py/keep.txt": "a folder named like a file\n",
    "sub/keep.txt": "",
    "plan.json": None,  # a valid plan, written by the fixture
    "list.json": "[1, 2, 3]\n",
    "notjson.json": "{not json",
    "empty.json": "",
    "schema.json": json.dumps({"schema": "bsadvisor.plan/0", "stages": []}),
    "garbage.json": b"\x00\xff\x13\x37",
    "existing.csv": "keep me\n",
}


def case(id_, argv, *fragments):
    return pytest.param(argv, fragments, id=id_)


CASES = [
    # ---- bad targets (advise loads the target before anything else that is slow)
    case("target-file-missing", ["advise", "nope.py:make", *ADVISE], "nope.py", "not found"),
    case("target-not-py", ["advise", "notes.txt:make", *ADVISE], "not a .py file"),
    case("target-folder", ["advise", "sub/:make", *ADVISE], "is a folder"),
    case("target-folder-named-py", ["advise", "folder.py:make", *ADVISE], "is a folder"),
    case("target-function-missing", ["advise", "ok.py:nothere", *ADVISE], "no function 'nothere'"),
    case("target-raises-on-import", ["advise", "raises.py:make", *ADVISE], "RuntimeError", "broken at import"),
    case("target-syntax-error", ["advise", "syntax.py:make", *ADVISE], "SyntaxError"),
    case("target-sys-exit-on-import", ["advise", "exits.py:make", *ADVISE], "SystemExit"),
    case("target-binary-file", ["advise", "binary.py:make", *ADVISE], "binary.py"),
    case("target-function-raises-multiline", ["advise", "fn_raises.py:make", *ADVISE], "ValueError",
         "bad setup second line"),
    case("target-returns-int", ["advise", "ok.py:make", *ADVISE], "returned int", "bsadvisor.Target"),
    case("target-returns-none", ["advise", "returns_none.py:make", *ADVISE], "returned NoneType"),
    case("target-not-callable", ["advise", "not_callable.py:make", *ADVISE], "not callable"),
    case("target-module-missing", ["advise", "no_such_module_xyz:make", *ADVISE], "no_such_module_xyz", "not found"),
    case("target-module-dependency-missing", ["advise", "brokenmod:make", *ADVISE], "ModuleNotFoundError",
         "no_such_dependency_xyz"),
    case("target-module-function-missing", ["advise", "json:make_target", *ADVISE], "no function 'make_target'"),
    case("target-no-colon", ["advise", "ok.py", *ADVISE], "must look like"),
    case("target-bad-function-name", ["advise", "ok.py:1abc", *ADVISE], "not a function name"),
    case("target-empty-module", ["advise", ":make", *ADVISE], "names no file or module"),
    case("target-unknown-builtin", ["advise", "builtin:nope", *ADVISE], "unknown builtin"),
    case("target-markup-path-missing", ["advise", "a[/x]b/nope.py:make", *ADVISE], "a[/x]b/nope.py"),
    case("target-markup-in-message", ["advise", "markup.py:make", *ADVISE], "[/red] closing tag [bold]oops"),
    case("target-markup-folder-raises", ["advise", "a[/x]b/t.py:make", *ADVISE], "KeyError", "[/x]"),
    # ---- bad advise options (refused before the target is loaded)
    case("advise-noise-cap-nan", ["advise", "builtin:linreg", *ADVISE, "--noise-cap", "nan"], "--noise-cap"),
    case("advise-noise-cap-negative", ["advise", "builtin:linreg", *ADVISE, "--noise-cap", "-1"], "--noise-cap"),
    case("advise-noise-cap-inf", ["advise", "builtin:linreg", *ADVISE, "--noise-cap", "inf"], "--noise-cap"),
    case("advise-budget-inf", ["advise", "builtin:linreg", *ADVISE, "--budget-seconds", "inf"], "--budget-seconds"),
    case("advise-budget-zero", ["advise", "builtin:linreg", *ADVISE, "--budget-seconds", "0"], "--budget-seconds"),
    case("advise-seed-negative", ["advise", "builtin:linreg", *ADVISE, "--seed", "-1"], "--seed"),
    case("advise-seed-2-70", ["advise", "builtin:linreg", *ADVISE, "--seed", str(2**70)], "--seed"),
    case("advise-epochs-zero", ["advise", "builtin:linreg", "--epochs", "0", "--schedule", SCHED], "--epochs"),
    case("advise-epochs-text", ["advise", "builtin:linreg", "--epochs", "ten", "--schedule", SCHED], "--epochs"),
    case("advise-no-schedule", ["advise", "builtin:linreg", "--epochs", "6"], "--schedule"),
    case("advise-no-epochs", ["advise", "builtin:linreg", "--schedule", SCHED], "--epochs"),
    case("advise-schedule-syntax", ["advise", "builtin:linreg", "--epochs", "6", "--schedule", "MultiStepLR("],
         "malformed schedule"),
    case("advise-schedule-lambda", ["advise", "builtin:linreg", "--epochs", "6", "--schedule",
                                    "LambdaLR(lr_lambda=lambda e: 0.1)"], "LambdaLR"),
    case("advise-world-size-zero", ["advise", "builtin:linreg", *ADVISE, "--world-size", "0"], "--world-size"),
    case("advise-grad-accum-negative", ["advise", "builtin:linreg", *ADVISE, "--grad-accum", "-2"], "--grad-accum"),
    case("advise-device-tpu", ["advise", "builtin:linreg", "--epochs", "6", "--schedule", SCHED, "--device", "tpu"],
         "--device"),
    case("advise-lr-nan", ["advise", "builtin:linreg", *ADVISE, "--lr", "nan"], "--lr"),
    case("advise-momentum-1.5", ["advise", "builtin:linreg", *ADVISE, "--momentum", "1.5"], "--momentum"),
    case("advise-batch-size-zero", ["advise", "builtin:linreg", *ADVISE, "--batch-size", "0"], "--batch-size"),
    case("advise-max-fraction-nan", ["advise", "builtin:linreg", *ADVISE, "--max-fraction", "nan"], "--max-fraction"),
    case("advise-round-to-zero", ["advise", "builtin:linreg", *ADVISE, "--round-to", "0"], "--round-to"),
    case("advise-out-is-folder", ["advise", "builtin:linreg", *ADVISE, "--out", "sub"], "sub", "folder"),
    case("advise-out-missing-folder", ["advise", "builtin:linreg", *ADVISE, "--out", "nowhere/plan.json"],
         "does not exist"),
    case("advise-probe-out-is-folder", ["advise", "builtin:linreg", *ADVISE, "--probe-out", "sub"], "--probe-out"),
    case("advise-out-equals-probe-out", ["advise", "builtin:linreg", *ADVISE, "--out", "p.json",
                                         "--probe-out", "p.json"], "different files"),
    case("advise-unknown-option", ["advise", "builtin:linreg", *ADVISE, "--frobnicate", "3"], "--frobnicate"),
    case("advise-dry-run-max-fraction-2", ["advise", "builtin:linreg", *ADVISE, "--max-fraction", "2"],
         "--max-fraction"),  # dry run
    case("advise-dry-run-batch-over-n", ["advise", "builtin:linreg", *ADVISE, "--batch-size", "100000"],
         "100000"),  # dry run
    # ---- export
    case("export-plan-missing", ["export", "missing.json"], "missing.json", "not found"),
    case("export-plan-folder", ["export", "sub"], "sub"),
    case("export-plan-not-json", ["export", "notjson.json"], "not valid JSON"),
    case("export-plan-empty", ["export", "empty.json"], "empty.json"),
    case("export-plan-list", ["export", "list.json"], "not a JSON object"),
    case("export-plan-wrong-schema", ["export", "schema.json"], "schema"),
    case("export-plan-binary", ["export", "garbage.json"], "garbage.json"),
    case("export-plan-markup-missing", ["export", "a[/x]b/plan.json"], "a[/x]b/plan.json"),
    case("export-format-lightning", ["export", "plan.json", "--format", "lightning"], "--format", "lightning"),
    case("export-format-empty", ["export", "plan.json", "--format", ""], "--format"),
    case("export-out-folder", ["export", "plan.json", "--out", "sub"], "sub", "folder"),
    case("export-out-missing-folder", ["export", "plan.json", "--out", "nowhere/plan.csv"], "does not exist"),
    case("export-bad-plan-keeps-out", ["export", "notjson.json", "--out", "existing.csv"], "not valid JSON"),
    case("export-unknown-option", ["export", "plan.json", "--frobnicate"], "--frobnicate"),
    case("export-no-plan", ["export"], "missing argument PLAN_FILE"),
    case("advise-no-target", ["advise", *ADVISE], "missing argument TARGET"),
]


@pytest.fixture
def folder(tmp_path):
    for name, content in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            from bsadvisor.core.convert import convert_schedule

            convert_schedule(lr=0.1, batch_size=32, dataset_size=3200, epochs=6, schedule=SCHED).save(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tmp_path


@pytest.mark.parametrize("argv, fragments", CASES)
def test_hostile_output_inputs(folder, argv, fragments):
    snap = Snapshot(folder)
    r = run_main(argv, cwd=folder)
    assert_one_line_error(r, fragments)
    snap.assert_unchanged()


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
