"""`bsadvisor validate` end to end on a tiny target, plus the library pieces behind it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bsadvisor.plan import Plan, Stage

ROOT = Path(__file__).resolve().parents[1]

# A small classifier with dropout (so the global RNG matters for resume). BSA_SLEEP slows
# each step down so the kill test can catch the run mid-way; BSA_NAN poisons the loss.
TARGET_SRC = '''
import os, time, torch
from bsadvisor import Target

def make():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    xt = torch.randn(400, 6, generator=g)
    yt = (xt[:, 0] + 0.5 * xt[:, 1] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))
    sleep, nan = float(os.environ.get("BSA_SLEEP", "0")), os.environ.get("BSA_NAN")

    def loss_fn(m, b):
        if sleep:
            time.sleep(sleep)
        loss = torch.nn.functional.cross_entropy(m(b[0]), b[1])
        return loss * float("nan") if nan else loss

    def metric_fn(m, b):
        return float((m(b[0]).argmax(-1) == b[1]).float().mean())

    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss_fn, batch_size=8,
                  lr=0.05, momentum=0.9, eval_dataset=torch.utils.data.TensorDataset(xt, yt), metric_fn=metric_fn)
'''
SCHEDULE = ["--schedule", "MultiStepLR(milestones=[2, 4], gamma=0.2)", "--epochs", "6"]
LENIENT = ["--tolerance", "1"]  # for tests about resume, not about the verdict


@pytest.fixture()
def target_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TARGET_SRC)
    return f"{path}:make"


def cli(*args, env=None, **kw):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "bsadvisor", *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=300, **kw)


def write_plan(path, stages, n=320, **inputs):
    doc = {"lr": 0.05, "batch_size": 8, "dataset_size": n, "epochs": stages[-1][1], "momentum": 0.9,
           "schedule": "MultiStepLR(milestones=[2, 4], gamma=0.2)"}
    doc.update(inputs)
    Plan(stages=[Stage(a, b, bs, lr, 0.9, 1.0) for a, b, bs, lr in stages], dataset_size=n, inputs=doc).save(path)
    return path


def strip_wall(doc):
    """The results minus what legitimately differs between two runs (timings, resume markers)."""
    out = {}
    for name, run in doc["runs"].items():
        out[name] = [[{k: v for k, v in rec.items() if k != "wall_s"} for rec in s["history"]] for s in run["seeds"]]
    return out


def test_accepted_plan_writes_results_and_exits_0(target_file, tmp_path):
    out = tmp_path / "out"
    r = cli("validate", target_file, *SCHEDULE, "--seeds", "2", "--variants", "--max-fraction", "0.5", "--out", out,
            "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bsadvisor.validation/1" and doc["verdict"]["accepted"] is True
    cap = max(s["batch_size"] for s in doc["runs"]["plan"]["plan"]["stages"]) // 4  # the documented default
    assert cap > 8 and set(doc["runs"]) == {"original", "plan", f"hybrid-{cap}", "increased-lr-x5"}
    assert max(s["batch_size"] for s in doc["runs"][f"hybrid-{cap}"]["plan"]["stages"]) == cap
    orig = doc["runs"]["original"]["summary"]
    for name, run in doc["runs"].items():
        # Independent truth for the counts: ceil(N/B) per epoch, from each plan's batch sizes,
        # and the per-epoch history must show exactly those batch sizes.
        stages = run["plan"]["stages"]
        assert run["summary"]["updates"] == sum((s["end_epoch"] - s["start_epoch"]) * -(-320 // s["batch_size"])
                                                for s in stages)
        sizes = [s["batch_size"] for s in stages for _ in range(s["end_epoch"] - s["start_epoch"])]
        assert [h["batch_size"] for h in run["seeds"][0]["history"]] == sizes
    assert doc["runs"]["increased-lr-x5"]["plan"]["stages"][0]["batch_size"] > 8
    assert orig["updates"] == 6 * 40 and orig["examples"] == doc["runs"]["plan"]["summary"]["examples"] == 6 * 320
    assert doc["verdict"]["tolerance"] >= 0.005
    assert json.loads((out / "results.json").read_text())["verdict"] == doc["verdict"]
    report = (out / "report.md").read_text()
    assert "ACCEPTED" in report and "curves_epoch.png" in report and (out / "curves_updates.png").is_file()


def test_rejected_plan_exits_1(target_file, tmp_path):
    # A "plan" with LR 0 never trains: the untrained model is far below the original.
    plan = write_plan(tmp_path / "bad.json", [(0, 6, 8, 0.0)])
    r = cli("validate", target_file, "--plan", plan)
    assert r.returncode == 1, r.stderr
    assert "REJECTED" in r.stdout


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"schema": "other/1"}', "schema"),
    (json.dumps({"schema": "bsadvisor.plan/1", "dataset_size": 320,
                 "stages": [{"start_epoch": 0, "end_epoch": 2, "batch_size": 0, "lr": 0.1, "momentum": 0}]}),
     "batch_size"),
])
def test_bad_plan_file_exits_2_with_one_line(target_file, tmp_path, content, message):
    path = tmp_path / "plan.json"
    path.write_text(content)
    r = cli("validate", target_file, "--plan", path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_plan_for_another_dataset_size_exits_2(target_file, tmp_path):
    plan = write_plan(tmp_path / "plan.json", [(0, 6, 8, 0.05)], n=1000)
    r = cli("validate", target_file, "--plan", plan)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "1000" in lines[0] and "320" in lines[0]


def test_nan_loss_names_run_and_epoch(target_file):
    r = cli("validate", target_file, *SCHEDULE, env={"BSA_NAN": "1"})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "run original" in lines[0] and "epoch 1/6" in lines[0] and "nan" in lines[0]


def test_resume_after_sigkill_matches_uninterrupted_run(target_file, tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    ref = cli("validate", target_file, *SCHEDULE, *LENIENT, "--out", ref_out)
    assert ref.returncode == 0, ref.stderr

    # Slow each step down, wait for the plan run's first epoch checkpoint, then SIGKILL.
    env = dict(os.environ, PYTHONPATH=str(ROOT), BSA_SLEEP="0.01")
    proc = subprocess.Popen([sys.executable, "-m", "bsadvisor", "validate", target_file, *SCHEDULE, *LENIENT, "--out", str(out)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "original-seed0.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(torch.load(ckpt, weights_only=False)["history"])
    assert 1 <= done < 6  # killed part way through the first run
    assert not (out / "results.json").exists()

    r = cli("validate", target_file, *SCHEDULE, *LENIENT, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    got, want = json.loads((out / "results.json").read_text()), json.loads((ref_out / "results.json").read_text())
    assert got["runs"]["original"]["seeds"][0]["resumed_from_epoch"] == done
    assert strip_wall(got) == strip_wall(want)  # losses, metrics, counts: exactly equal
    a = torch.load(out / "checkpoints" / "plan-seed0.pt", weights_only=False)["model"]
    b = torch.load(ref_out / "checkpoints" / "plan-seed0.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_are_deterministic_start_from_the_same_weights_and_restore_rng(target_file):
    from bsadvisor.target import load_target
    from bsadvisor.validate import RunSpec, run_validation

    target = load_target(target_file)
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    n = target.dataset_size
    same = Plan(stages=[Stage(0, 2, 8, 0.05, 0.9, 1.0)], dataset_size=n)
    torch.manual_seed(1234)
    rng = torch.random.get_rng_state()
    doc = run_validation(target, [RunSpec("original", same), RunSpec("plan", same)], seeds=2)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the user's RNG stream is untouched
    assert all(torch.equal(before[k], v) for k, v in target.model.state_dict().items())
    o, p = doc["runs"]["original"]["seeds"], doc["runs"]["plan"]["seeds"]
    # Same plan + same seed + same initial weights => identical runs; different seeds differ.
    assert [h["train_loss"] for h in o[0]["history"]] == [h["train_loss"] for h in p[0]["history"]]
    assert o[0]["history"][0]["train_loss"] != o[1]["history"][0]["train_loss"]


def test_fit_to_devices_rounds_a_single_device_plan_and_says_so():
    """Under torchrun a plan whose batches do not split evenly is re-converted with W × k × μ batches."""
    from bsadvisor.convert import convert_schedule
    from bsadvisor.errors import UserError
    from bsadvisor.validate import fit_to_devices

    kw = dict(lr=0.1, batch_size=50, dataset_size=50_000, epochs=20, momentum=0.9,
              schedule="MultiStepLR(milestones=[5,10,15], gamma=0.3)")
    plan = convert_schedule(**kw)
    assert any(b % 8 for b in plan.batch_sizes()[1:])  # 50/0.3 ≈ 166 etc.: not multiples of 8
    fitted, note = fit_to_devices(plan, 8, 12)
    assert note.startswith("8 processes: batches rounded to") and "became" in note
    for b in fitted.batch_sizes():
        if b != 50:
            k = -(-b // (8 * 12))  # fewest accumulation steps with micro-batches ≤ 12
            assert b % (8 * k) == 0 and b // (8 * k) <= 12, b
    assert len(fitted.stages) == len(plan.stages) and fitted.epochs == plan.epochs
    assert fit_to_devices(fitted, 8, 12) == (fitted, None)  # already fits: untouched
    assert fit_to_devices(plan, 1, None) == (plan, None)
    bare = Plan(stages=[Stage(0, 20, 50, 0.1, 0.9, 1.0), Stage(20, 30, 166, 0.1, 0.9, 0.3)], dataset_size=50_000,
                inputs={"batch_size": 50})
    with pytest.raises(UserError, match="convert-schedule --world-size 8"):
        fit_to_devices(bare, 8, None)
