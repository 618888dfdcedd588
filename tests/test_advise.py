"""Issue 4: a probe file shapes the plan (cap, defaults, predicted time, efficiency), advise, export.

Expected numbers are computed here from the formulas (McCandlish et al. eq. 2.11/2.12,
docs/concepts.md eqs. 1 and 10), independently of bsadvisor.core.predict.
"""
import json
import math
import subprocess
import sys

import pytest

from bsadvisor.core.exports import export_csv, export_megatron
from bsadvisor.core.predict import plan_from_options
from bsadvisor.core.plan import Plan

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
        b_noise = 400.0 * g_probe / g(s.lr, s.momentum, s.batch_size)
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


def test_noise_cap_caps_and_flags(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(probe_doc(max_batch=100000, b_simple=50.0)))
    flagged = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0)
    assert any("noise scale" in w for w in flagged.warnings)  # 800 > 10 × 50
    capped = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, noise_cap=3)
    assert capped.cap == {**capped.cap, "batch_size": 150, "limited_by": "noise_scale"}
    assert max(capped.batch_sizes()) == 150
    # past the cap the LR carries the rest (hybrid, exact rule): ε = ε0·ρ·(N/B0−1)/(N/B_cap−1)
    assert capped.at(8).batch_size == 150
    assert capped.at(8).lr == pytest.approx(LR * 0.2**3 * (N / B0 - 1) / (N / 150 - 1), rel=1e-12)


def test_export_formats():
    plan = plan_from_options(lr=LR, batch_size=B0, dataset_size=N, momentum=M, epochs=10, schedule=SCHEDULE,
                             rule="proportional", max_fraction=1.0)
    assert export_megatron(plan).split() == ["0:32", f"{3 * N}:160", f"{6 * N}:800", f"{8 * N}:4000"]
    rows = export_csv(plan).strip().splitlines()
    assert rows[0] == "start_sample,end_sample,batch_size,lr_scale,lr,momentum,phase" and len(rows) == 5
    # one row per stage; proportional rule: the LR factor is B/B0 (docs/concepts.md)
    assert [r.split(",")[:4] for r in rows[1:]] == [
        ["0", str(3 * N), "32", "1"], [str(3 * N), str(6 * N), "160", "5"], [str(6 * N), str(8 * N), "800", "25"],
        [str(8 * N), str(10 * N), "4000", "125"]]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bsadvisor", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


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
    r = run_cli("convert-schedule", "--probe", str(path), "--epochs", "10", "--schedule", SCHEDULE)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--world-size", "0"], "--world-size"),
    (["--grad-accum", "-1"], "--grad-accum"),
    (["--dataset-size", "999"], "disagrees"),
    (["--noise-cap", "0"], "--noise-cap"),
])
def test_mismatched_probe_options_exit_2(probe_file, args, needle):
    r = run_cli("convert-schedule", "--probe", str(probe_file), "--epochs", "10", "--schedule", SCHEDULE, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_probe_file_not_json_or_missing(tmp_path):
    bad = tmp_path / "probe.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json"):
        r = run_cli("convert-schedule", "--probe", str(path), "--epochs", "10", "--schedule", SCHEDULE)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_export_cli_and_bad_plan(tmp_path):
    plan = plan_from_options(lr=LR, batch_size=B0, dataset_size=N, momentum=M, epochs=10, schedule=SCHEDULE)
    path = tmp_path / "plan.json"
    plan.save(path)
    r = run_cli("export", str(path), "--format", "megatron")
    assert r.returncode == 0 and r.stdout.split()[0] == "0:32"
    r = run_cli("export", str(path), "--format", "lightning")
    assert r.returncode == 2 and "lightning" in r.stderr
    path.write_text(json.dumps({"schema": "nope"}))
    r = run_cli("export", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_advise_on_mnist1d_stays_within_the_measured_cap():
    r = run_cli("advise", "builtin:mnist1d-mlp", "--epochs", "10", "--schedule", SCHEDULE, "--device", "cpu",
                "--budget-seconds", "8", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bsadvisor.advice/1"
    cap = doc["probe"]["memory"]["max_batch"]
    plan = Plan.from_dict(doc["plan"])
    assert max(plan.batch_sizes()) <= cap
    assert doc["plan"]["probe"]["b_simple"] == doc["probe"]["noise"]["b_simple"]


def test_probe_world_size_is_the_default_for_convert(tmp_path):
    doc = probe_doc()
    doc["settings"]["world_size"] = 4  # a probe taken under torchrun
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0)
    assert plan.cap["batch_size"] == 256 * 4
    plan = plan_from_options(probe=path, epochs=10, schedule=SCHEDULE, max_fraction=1.0, world_size=1)
    assert plan.cap["batch_size"] == 256
