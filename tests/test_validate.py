"""`bsadvisor validate` end to end on a tiny target, plus the library pieces behind it."""
from __future__ import annotations

import fcntl
import json
import math
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from bsadvisor.core.plan import Plan, Stage
from hostile import Snapshot, assert_one_line_error, cli_env, refusals, run_main

ROOT = Path(__file__).resolve().parents[1]

# A small classifier with dropout (so the global RNG matters for resume). BSA_SLEEP slows
# each step down so the kill test can catch the run mid-way; BSA_NAN poisons the loss.
# The other knobs: BSA_HIDDEN / BSA_ACT / BSA_BN change the architecture, BSA_METRIC_NAN
# makes metric_fn return NaN, BSA_DIVERGE_ABOVE=B makes the loss infinite for batches
# larger than B, BSA_MARK=path is created at the first step, BSA_NAME names the target,
# BSA_BLOCK_AT=path holds every step from the moment that file exists until the process is
# signalled (so the kill and Ctrl-C tests catch the run mid-way whatever the machine's load).
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
    hidden = int(os.environ.get("BSA_HIDDEN", "16"))
    act = torch.nn.Tanh() if os.environ.get("BSA_ACT") == "tanh" else torch.nn.ReLU()
    norm = [torch.nn.BatchNorm1d(hidden)] if os.environ.get("BSA_BN") else []
    model = torch.nn.Sequential(torch.nn.Linear(6, hidden), *norm, act, torch.nn.Dropout(0.2),
                                torch.nn.Linear(hidden, 2))
    sleep, nan = float(os.environ.get("BSA_SLEEP", "0")), os.environ.get("BSA_NAN")
    metric_nan, mark = os.environ.get("BSA_METRIC_NAN"), os.environ.get("BSA_MARK")
    diverge_above = int(os.environ.get("BSA_DIVERGE_ABOVE", "0"))
    block_at = os.environ.get("BSA_BLOCK_AT")

    def loss_fn(m, b):
        if mark and not os.path.exists(mark):
            open(mark, "w").close()
        while block_at and os.path.exists(block_at):
            time.sleep(0.05)
        if sleep:
            time.sleep(sleep)
        loss = torch.nn.functional.cross_entropy(m(b[0]), b[1])
        if diverge_above and len(b[0]) > diverge_above:
            return loss * float("inf")
        return loss * float("nan") if nan else loss

    def metric_fn(m, b):
        if metric_nan:
            return float("nan")
        return float((m(b[0]).argmax(-1) == b[1]).float().mean())

    return Target(model=model, train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss_fn, batch_size=8,
                  lr=0.05, momentum=0.9, eval_dataset=torch.utils.data.TensorDataset(xt, yt), metric_fn=metric_fn,
                  name=os.environ.get("BSA_NAME", "tiny"))
'''
SCHEDULE = ["--schedule", "MultiStepLR(milestones=[2, 4], gamma=0.2)", "--epochs", "6"]
LENIENT = ["--tolerance", "1"]  # for tests about resume, not about the verdict


@pytest.fixture()
def target_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TARGET_SRC)
    return f"{path}:make"


class Trained(NamedTuple):
    """A finished ``bsadvisor validate`` run shared by the tests that only read it (or copy it first)."""
    target: str  # the TARGET spec it was run on (a resume must name the same one)
    out: Path  # its --out folder: results.json, report.md, plots, checkpoints
    run: subprocess.CompletedProcess  # the command's exit code, stdout and stderr


def _in_process(*args) -> subprocess.CompletedProcess:
    from hostile import run_main

    return run_main(args, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny target, written once for the module's shared runs."""
    path = tmp_path_factory.mktemp("target") / "tiny.py"
    path.write_text(TARGET_SRC)
    return f"{path}:make"


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """``validate SCHEDULE --tolerance 1 --out ref``, uninterrupted: the reference of the resume tests, the
    finished run the architecture check resumes (a copy), and the BatchNorm test's model without BatchNorm."""
    out = tmp_path_factory.mktemp("finished") / "ref"
    return Trained(tiny, out, _in_process("validate", tiny, *SCHEDULE, *LENIENT, "--out", out))


@pytest.fixture(scope="module")
def accepted(tiny, tmp_path_factory):
    """An accepted plan with both variants and 3 seeds, as --json: the outputs test reads it, the
    --overwrite test overwrites a copy of it."""
    out = tmp_path_factory.mktemp("accepted") / "out"
    # 3 seeds give a wide interval (t = 3.87 at the first look, α spent across looks, tests/test_verdict.py):
    # a margin of 5 % of the original's accuracy (about 0.045) lets the test be about the
    # outputs; the default margin is tested below.
    return Trained(tiny, out, _in_process("validate", tiny, *SCHEDULE, "--seeds", "3", "--variants", "--max-fraction",
                                          "0.5", "--out", out, "--json", "--tolerance", "5%"))


def main_run(monkeypatch, *args, env=None):
    """``bsadvisor ARGS`` through the CLI's entry point in this process, no interpreter to start: for the
    commands nobody kills. ``env``: the target's BSA_* knobs, set for the rest of the test."""
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return _in_process(*args)


def write_plan(path, stages, n=320, **inputs):
    """A plan of whole-epoch stages (a, b in epochs) with constant LRs."""
    doc = {"lr": 0.05, "batch_size": 8, "dataset_size": n, "epochs": stages[-1][1], "momentum": 0.9,
           "schedule": "MultiStepLR(milestones=[2, 4], gamma=0.2)"}
    doc.update(inputs)
    Plan(stages=[Stage(a * n, b * n, bs, lr, 0.9, 1.0) for a, b, bs, lr in stages], dataset_size=n,
         inputs=doc).save(path)
    return path


def strip_wall(doc):
    """The results minus what legitimately differs between two runs (timings, resume markers)."""
    out = {}
    for name, run in doc["runs"].items():
        out[name] = [[{k: v for k, v in rec.items() if k != "wall_s"} for rec in s["history"] + s.get("evals", [])]
                     for s in run["seeds"]]
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("validate-accepted")
def test_accepted_plan_writes_results_and_exits_0(accepted):
    r, out = accepted.run, accepted.out
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bsadvisor.validation/1.2" and doc["verdict"]["accepted"] is True
    cap = max(s["batch_size"] for s in doc["runs"]["plan"]["plan"]["stages"]) // 4  # the documented default
    assert cap > 8 and set(doc["runs"]) == {"original", "plan", f"hybrid-{cap}", "increased-lr-x5"}
    assert max(s["batch_size"] for s in doc["runs"][f"hybrid-{cap}"]["plan"]["stages"]) == cap
    orig = doc["runs"]["original"]["summary"]
    for name, run in doc["runs"].items():
        # Independent truth for the counts: ceil(N/B) per epoch, from each plan's batch sizes,
        # and the per-epoch history must show exactly those batch sizes.
        stages = run["plan"]["stages"]
        assert all(s["start_sample"] % 320 == 0 and s["end_sample"] % 320 == 0 for s in stages)  # epoch stages
        assert run["summary"]["updates"] == sum((s["end_epoch"] - s["start_epoch"]) * -(-320 // s["batch_size"])
                                                for s in stages)
        sizes = [s["batch_size"] for s in stages for _ in range(s["end_epoch"] - s["start_epoch"])]
        assert [h["batch_size"] for h in run["seeds"][0]["history"]] == sizes
    assert doc["runs"]["increased-lr-x5"]["plan"]["stages"][0]["batch_size"] > 8
    assert orig["updates"] == 6 * 40 and orig["examples"] == doc["runs"]["plan"]["summary"]["examples"] == 6 * 320
    v = doc["verdict"]
    ref_mean = doc["runs"]["original"]["summary"]["metric_mean"]
    assert v["status"] == "accepted" and v["margin"] == pytest.approx(0.05 * ref_mean) and v["interval"][0] > -v["margin"]
    assert v["paired"] == [p["metric"] - o["metric"] for p, o in zip(doc["runs"]["plan"]["seeds"],
                                                                      doc["runs"]["original"]["seeds"])]
    assert set(v["variants"]) == set(doc["runs"]) - {"original", "plan"}
    assert json.loads((out / "results.json").read_text())["verdict"] == doc["verdict"]
    report = (out / "report.md").read_text()
    assert "ACCEPTED" in report and "curves_epoch.png" in report and (out / "curves_updates.png").is_file()


@pytest.mark.slow
def test_rejected_plan_exits_1(target_file, tmp_path, monkeypatch):
    # A "plan" with LR 0 never trains: the untrained model is far below the original.
    plan = write_plan(tmp_path / "bad.json", [(0, 6, 8, 0.0)])
    r = main_run(monkeypatch, "validate", target_file, "--plan", plan, "--seeds", "3")  # one seed never rejects
    assert r.returncode == 1, r.stderr
    assert "REJECTED" in r.stdout


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"schema": "other/1"}', "schema"),
    (json.dumps({"schema": "bsadvisor.plan/1", "dataset_size": 320,
                 "stages": [{"start_epoch": 0, "end_epoch": 2, "batch_size": 0, "lr": 0.1, "momentum": 0}]}),
     "batch_size"),
])
def test_bad_plan_file_exits_2_with_one_line(target_file, tmp_path, content, message, monkeypatch):
    path = tmp_path / "plan.json"
    path.write_text(content)
    r = main_run(monkeypatch, "validate", target_file, "--plan", path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_plan_for_another_dataset_size_exits_2(target_file, tmp_path, monkeypatch):
    plan = write_plan(tmp_path / "plan.json", [(0, 6, 8, 0.05)], n=1000)
    r = main_run(monkeypatch, "validate", target_file, "--plan", plan)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "1000" in lines[0] and "320" in lines[0]


def test_nan_loss_names_run_and_epoch(target_file, monkeypatch):
    r = main_run(monkeypatch, "validate", target_file, *SCHEDULE, env={"BSA_NAN": "1"})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "run original" in lines[0] and "epoch 1/6" in lines[0] and "nan" in lines[0]


def kill_at_checkpoint(ckpt: Path, argv: list) -> None:
    """Run ``bsadvisor ARGV`` with every step slowed down and held once ``ckpt`` exists (BSA_BLOCK_AT),
    then SIGKILL it there: a run killed right after its first checkpoint, whatever the machine's load."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), BSA_SLEEP="0.01", BSA_BLOCK_AT=str(ckpt))
    proc = subprocess.Popen([sys.executable, "-m", "bsadvisor", *map(str, argv)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.mark.slow
@pytest.mark.xdist_group("validate-finished")
def test_resume_after_sigkill_matches_uninterrupted_run(finished, tmp_path, monkeypatch):
    target_file, ref_out, out = finished.target, finished.out, tmp_path / "killed"
    assert finished.run.returncode == 3, finished.run.stderr  # one seed: INDICATIVE

    # Slow each step down, wait for the original run's first checkpoint (an epoch's end), then SIGKILL.
    ckpt = out / "checkpoints" / "original-seed0.pt"
    kill_at_checkpoint(ckpt, ["validate", target_file, *SCHEDULE, *LENIENT, "--out", str(out)])
    done = len(torch.load(ckpt, weights_only=True)["history"])
    assert 1 <= done < 6  # killed part way through the first run
    assert not (out / "results.json").exists()

    r = main_run(monkeypatch, "validate", target_file, *SCHEDULE, *LENIENT, "--out", out, "--resume")
    assert r.returncode == 3, r.stderr  # one seed: INDICATIVE
    got, want = json.loads((out / "results.json").read_text()), json.loads((ref_out / "results.json").read_text())
    assert got["runs"]["original"]["seeds"][0]["resumed_from_epoch"] == done
    assert strip_wall(got) == strip_wall(want)  # losses, metrics, counts: exactly equal
    a = torch.load(out / "checkpoints" / "plan-seed0.pt", weights_only=True)["model"]
    b = torch.load(ref_out / "checkpoints" / "plan-seed0.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_are_deterministic_start_from_the_same_weights_and_restore_rng(target_file):
    from bsadvisor.targets.loading import load_target
    from bsadvisor.runtime.validate import RunSpec, run_validation

    target = load_target(target_file)
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    n = target.dataset_size
    same = Plan(stages=[Stage(0, 2 * n, 8, 0.05, 0.9, 1.0)], dataset_size=n)
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
    from bsadvisor.core.convert import convert_schedule
    from bsadvisor.core.errors import UserError
    from bsadvisor.runtime.validate import fit_to_devices

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
    bare = Plan(stages=[Stage(0, 20 * 50_000, 50, 0.1, 0.9, 1.0), Stage(20 * 50_000, 30 * 50_000, 166, 0.1, 0.9, 0.3)],
                dataset_size=50_000,
                inputs={"batch_size": 50})
    with pytest.raises(UserError, match="convert-schedule --world-size 8"):
        fit_to_devices(bare, 8, None)


# -- hardening ----------------------------------------------------------------------------------
def strict_json(text):
    """json.loads that refuses NaN/Infinity (what a strict JSON reader does)."""
    def bad(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=bad)


@pytest.mark.slow
def test_nan_metric_is_null_everywhere_and_rejects_with_the_reason(target_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    name = "tiny [/x] [bold]t"  # rich markup in a user string is shown, not interpreted
    env = {"BSA_METRIC_NAN": "1", "BSA_NAME": name}
    r = main_run(monkeypatch, "validate", target_file, *SCHEDULE, "--out", out, "--json", env=env)
    assert r.returncode == 1, r.stderr  # rejected, not a crash
    doc = strict_json(r.stdout)
    v = doc["verdict"]
    assert v["accepted"] is False and "not finite" in v["reason"] and v["difference"] is None
    assert doc["runs"]["plan"]["summary"]["metric_mean"] is None
    assert all(h["metric"] is None for h in doc["runs"]["original"]["seeds"][0]["history"])
    assert strict_json((out / "results.json").read_text())["verdict"] == v
    report = (out / "report.md").read_text()
    assert "REJECTED" in report and "not finite" in report and "| original | n/a |" in report
    # resume reads the finished checkpoints back and reports the same; the table shows the name as typed
    r2 = main_run(monkeypatch, "validate", target_file, *SCHEDULE, "--out", out, "--resume", env=env)
    assert r2.returncode == 1, r2.stderr
    assert "Traceback" not in r2.stderr and name in r2.stdout and "REJECTED" in r2.stdout and "not finite" in r2.stdout
    assert "…" not in r2.stdout
    assert strict_json((out / "results.json").read_text())["verdict"] == v


@pytest.mark.slow
def test_a_diverging_plan_is_rejected_and_the_others_still_reported(target_file, tmp_path, monkeypatch):
    """The plan's loss turns infinite once its batch grows past B0 = 8: that run stops, the verdict says so."""
    out = tmp_path / "out"
    env = {"BSA_DIVERGE_ABOVE": "8"}
    r = main_run(monkeypatch, "validate", target_file, *SCHEDULE, "--out", out, "--json", env=env)
    assert r.returncode == 1, r.stderr
    doc = strict_json(r.stdout)
    plan = doc["runs"]["plan"]
    first_grown = next(s["start_epoch"] for s in plan["plan"]["stages"] if s["batch_size"] > 8)
    seed = plan["seeds"][0]
    assert seed["diverged_at_epoch"] == first_grown + 1  # independent truth: the plan's own stages
    assert len(seed["history"]) == first_grown + 1 and seed["history"][-1]["diverged"] is True
    assert seed["history"][-1]["train_loss"] is None and seed["metric"] is None
    assert doc["runs"]["original"]["summary"]["metric_mean"] > 0.5  # the original trained all 6 epochs
    assert len(doc["runs"]["original"]["seeds"][0]["history"]) == 6
    assert "diverged" in doc["verdict"]["reason"] and doc["verdict"]["accepted"] is False
    # resume: the diverged run stays diverged (it is not trained on from NaN weights)
    r2 = main_run(monkeypatch, "validate", target_file, *SCHEDULE, "--out", out, "--resume", "--json", env=env)
    assert r2.returncode == 1, r2.stderr
    again = strict_json(r2.stdout)
    assert strip_wall(again) == strip_wall(doc) and again["verdict"]["reason"] == doc["verdict"]["reason"]


@pytest.mark.slow
@pytest.mark.xdist_group("validate-finished")
def test_resume_with_another_architecture_is_refused(finished, tmp_path, monkeypatch):
    target_file, out = finished.target, tmp_path / "out"
    assert finished.run.returncode == 3, finished.run.stderr  # one seed: INDICATIVE
    shutil.copytree(finished.out, out)  # a finished run of the 16-unit ReLU model
    for env, words in (({"BSA_HIDDEN": "32"}, ["'0.weight'", "[16, 6]", "[32, 6]"]),
                       ({"BSA_ACT": "tanh"}, ["'1'", "ReLU", "Tanh"])):  # same shapes, another activation
        with monkeypatch.context() as mp:  # each knob alone
            r = main_run(mp, "validate", target_file, *SCHEDULE, *LENIENT, "--out", out, "--resume", env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "is from a different model" in lines[0], r.stderr
        assert all(w in lines[0] for w in words), lines[0]


def _default_sigint():
    """In the child: SIGINT back to its default. A job started in the background by a shell (as
    CI may start this suite) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_the_command_works(target_file, tmp_path, monkeypatch):
    out = tmp_path / "out dir"  # a space: the printed command must quote it
    mark = tmp_path / "started"
    ckpt = out / "checkpoints" / "original-seed0.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), BSA_SLEEP="0.01", BSA_MARK=str(mark), BSA_BLOCK_AT=str(ckpt))
    argv = ["validate", target_file, *SCHEDULE, *LENIENT, "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "bsadvisor", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), "the run never wrote its first checkpoint"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted; resume with `bsadvisor validate ") and lines[0].endswith(" --resume`")
    import shlex

    cmd = shlex.split(lines[0].split("`")[1])
    assert cmd[:2] == ["bsadvisor", "validate"] and str(out) in cmd
    r = main_run(monkeypatch, *cmd[1:])  # the printed command, as typed (in this process: no knobs set)
    assert r.returncode == 3, r.stderr  # one seed: INDICATIVE
    got = json.loads((out / "results.json").read_text())
    assert got["runs"]["original"]["seeds"][0]["resumed_from_epoch"] >= 1

    # interrupted before anything resumable exists: just "interrupted"
    mark.unlink()
    env["BSA_BLOCK_AT"] = str(mark)  # held from the first step on: nothing resumable exists yet
    proc = subprocess.Popen([sys.executable, "-m", "bsadvisor", "validate", target_file, *SCHEDULE], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 120  # its own wait: the first part may have taken long on a loaded machine
    while not mark.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert mark.exists(), "the run never reached its first step"  # so the child is in Python, SIGINT handled
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip() == "interrupted", err


@pytest.mark.slow
@pytest.mark.xdist_group("validate-accepted")
def test_overwrite_orphans_and_umask(accepted, tmp_path, monkeypatch):
    """--overwrite removes the earlier run's files (not the user's); resume removes orphaned
    temporary files; every output gets the user's umask."""
    target_file, out = accepted.target, tmp_path / "out"
    assert accepted.run.returncode == 0, accepted.run.stderr
    shutil.copytree(accepted.out, out)  # the earlier run: 2 variants beside original and plan, 3 seeds each
    assert len(list((out / "checkpoints").glob("*.pt"))) == 4 * 3
    (out / "notes.txt").write_text("mine")
    umask = os.umask(0o027)
    try:
        r = main_run(monkeypatch, "validate", target_file, *SCHEDULE, *LENIENT, "--out", out, "--overwrite")
    finally:
        os.umask(umask)
    assert r.returncode == 3, r.stderr  # one seed: INDICATIVE
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["original-seed0.pt", "plan-seed0.pt"]
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"original", "plan"}
    assert (out / "notes.txt").read_text() == "mine"
    written = [p for p in out.rglob("*") if p.is_file() and p.name not in ("notes.txt", ".bsadvisor.lock")]
    assert {p.name for p in written} >= {"results.json", "report.md", "curves_epoch.png", "plan-seed0.pt"}
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o640)}  # 0666 less umask 027, not 0600

    # a kill during an atomic write leaves .NAME.XXXXXXXX.bsadvisor.tmp files: resume removes them (only those)
    orphans = [out / ".results.json.k2j3ab_9.bsadvisor.tmp", out / "checkpoints" / ".plan-seed0.pt.a8x1zzzz.bsadvisor.tmp"]
    for p in orphans:
        p.write_bytes(b"\0" * 1000)
    (out / "keep.tmp").write_text("mine too")
    mine = [out / ".draft.tmp", out / "checkpoints" / ".notes.tmp", out / ".results.json.k2j3.tmp"]
    for p in mine:
        p.write_text("the user's own")
    r = main_run(monkeypatch, "validate", target_file, *SCHEDULE, *LENIENT, "--out", out, "--resume")
    assert r.returncode == 3, r.stderr
    assert not any(p.exists() for p in orphans) and (out / "keep.tmp").exists()
    assert all(p.read_text() == "the user's own" for p in mine)


@pytest.mark.slow
@pytest.mark.xdist_group("validate-finished")
def test_batchnorm_warning_only_for_a_model_with_batchnorm(finished, monkeypatch):
    r = main_run(monkeypatch, "validate", finished.target, *SCHEDULE, *LENIENT, "--json", env={"BSA_BN": "1"})
    assert r.returncode == 3, r.stderr  # one seed: INDICATIVE
    warns = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "BatchNorm layers (1)" in warns[0], r.stderr
    assert json.loads(r.stdout)["warnings"] == [warns[0][len("warning: "):]]
    r = finished.run  # the same command and model without BatchNorm
    assert r.returncode == 3, r.stderr  # one seed: INDICATIVE
    assert "BatchNorm" not in r.stderr + r.stdout  # the plan's generic note is not repeated here
    assert "…" not in r.stdout


def _wide_doc(epochs=200, names=("original", "plan", "hybrid-1281167", "increased-lr-x123456")):
    """A results document with every field as wide as it gets: long names, huge counts, n/a values."""
    hist = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "metric": None if e % 7 == 0 else -12345.678 + e,
             "updates": 10**12, "examples": 10**13, "wall_s": 98765.4} for e in range(epochs)]
    runs = {}
    for i, n in enumerate(names):
        runs[n] = {"description": "d", "plan": {}, "seeds": [{"seed": 0, "history": hist}],
                   "summary": {"metric_mean": None if i == 2 else -12345.6789, "metric_sd": 123.456789,
                               "final_train_loss_mean": 1.234567e-05, "final_train_loss_sd": 0.0,
                               "updates": 123_456_789_012, "examples": 9_876_543_210_123,
                               "wall_s_mean": 98765.4321, "wall_s_sd": 0.0}}
    return {"target": "/very/long/path/to/some/project/[/x]train_with_a_long_name.py:make_target " * 2,
            "metric": "negative final training loss", "epochs": epochs, "seeds": 3, "runs": runs,
            "verdict": {"accepted": False, "reason": None, "reference": "original", "candidate": "plan",
                        "difference": -1234.56789, "tolerance": 0.005, "tolerance_rule": "--tolerance",
                        "update_ratio": 12.3456, "wall_ratio": 11.1, "within_tolerance": {}}}


@pytest.mark.parametrize("width", [80, 60, 200])
def test_results_table_shows_every_number_whole(width):
    import io

    from rich.console import Console

    import bsadvisor.cli  # noqa: F401  (registers the commands; cmd_validate is imported through it)
    from bsadvisor.cli.validate import print_results

    for doc in (_wide_doc(), _wide_doc(epochs=3, names=("original", "plan"))):
        buf = io.StringIO()
        print_results(doc, Console(file=buf, width=width, color_system=None))
        text = buf.getvalue()
        assert "…" not in text and "..." not in text
        assert max(len(ln) for ln in text.splitlines()) <= width
        for token in ("123,456,789,012", "-1.235e+04", "1.235e-05", "98,765.4", "12.35×", "[/x]"):
            assert token in text, (token, text)
        assert text.count("n/a") >= (1 if len(doc["runs"]) > 2 else 0)


def test_demo_json_prints_one_document(monkeypatch, target_file):
    """demo --json: probe, plan and validation as one JSON document on stdout (narration on stderr)."""
    from typer.testing import CliRunner

    import bsadvisor
    from bsadvisor.cli.app import app

    tiny = bsadvisor.load_target(target_file)
    monkeypatch.setattr(bsadvisor, "load_target", lambda spec: tiny)  # the public name demo calls
    r = CliRunner().invoke(app, ["demo", "--json", "--epochs", "5", "--seeds", "1", "--no-variants", "--skip-probe"])
    assert r.exit_code in (0, 1, 3), r.output
    doc = strict_json(r.stdout)
    assert doc["schema"] == "bsadvisor.demo/1" and doc["probe"] is None
    assert doc["validation"]["schema"] == "bsadvisor.validation/1.2"
    assert doc["plan"]["epochs"] == 5 and set(doc["validation"]["runs"]) == {"original", "plan"}


@pytest.mark.slow
@pytest.mark.xdist_group("validate-finished")
def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(finished, tmp_path, monkeypatch):
    """Checkpoints every 7 updates (an epoch here is 40): killed at the first one, 7 updates into epoch 1,
    the resumed run finishes with exactly the numbers of a run never interrupted."""
    target_file, ref_out, out = finished.target, finished.out, tmp_path / "killed"
    assert finished.run.returncode == 3, finished.run.stderr  # one seed: INDICATIVE
    ckpt = out / "checkpoints" / "original-seed0.pt"
    args = [*SCHEDULE, *LENIENT, "--out", str(out), "--checkpoint-every", "7"]
    kill_at_checkpoint(ckpt, ["validate", target_file, *args])
    saved = torch.load(ckpt, weights_only=True)
    assert saved["history"] == [] and saved["partial"]["offset"] == 7 * 8  # mid-epoch: 7 batches of 8 into epoch 1
    r = main_run(monkeypatch, "validate", target_file, *args, "--resume")
    assert r.returncode == 3, r.stderr  # one seed: INDICATIVE
    got, want = json.loads((out / "results.json").read_text()), json.loads((ref_out / "results.json").read_text())
    assert strip_wall(got) == strip_wall(want)
    for name in ("original", "plan"):  # the per-update record too: same samples, batches and LRs
        assert got["runs"][name]["seeds"][0]["steps"] == want["runs"][name]["seeds"][0]["steps"]
    a = torch.load(out / "checkpoints" / "plan-seed0.pt", weights_only=True)["model"]
    b = torch.load(ref_out / "checkpoints" / "plan-seed0.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_original_run_steps_its_lr_per_update_like_torch(tmp_path):
    """--schedule-unit step: the original run's LR at every update is what torch's scheduler holds there."""
    from bsadvisor.core.baseline import baseline_plan
    from bsadvisor.runtime.train import train_plan
    from bsadvisor.targets.builtins import linreg

    target = linreg(size=1000)
    plan = baseline_plan(lr=0.01, batch_size=64, dataset_size=1000, epochs=3, schedule_unit="step",
                         schedule="SequentialLR([LinearLR(start_factor=0.1, total_iters=10), "
                                  "CosineAnnealingLR(T_max=38)], milestones=[10])")
    steps = train_plan(target, plan, seed=0).steps
    assert len(steps) == plan.updates == 3 * 16  # ⌈1000/64⌉ = 16 updates an epoch, the last one of 40
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    S = torch.optim.lr_scheduler
    sched = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=10), S.CosineAnnealingLR(opt, T_max=38)],
                           milestones=[10])
    for k, rec in enumerate(steps):
        assert rec["batch_size"] == (40 if k % 16 == 15 else 64)
        assert math.isclose(rec["lr"], opt.param_groups[0]["lr"], rel_tol=1e-9), k
        opt.step()
        sched.step()


def _tiny(target_file):
    from bsadvisor.targets.loading import load_target

    return load_target(target_file)


def test_more_seeds_on_resume_train_only_the_new_ones(target_file, tmp_path):
    """--resume with a larger --seeds: the finished seeds are read back, only the new one trains."""
    from bsadvisor.core.baseline import baseline_plan
    from bsadvisor.runtime.validate import RunSpec, run_validation

    target = _tiny(target_file)
    n = target.dataset_size
    orig = baseline_plan(lr=0.05, batch_size=8, dataset_size=n, epochs=2, momentum=0.9,
                         schedule="MultiStepLR(milestones=[1], gamma=0.5)")
    plan = Plan(stages=[Stage(0, n, 8, 0.05, 0.9, 1.0), Stage(n, 2 * n, 16, 0.05, 0.9, 0.5)], dataset_size=n)
    specs = [RunSpec("original", orig), RunSpec("plan", plan)]
    one = run_validation(target, specs, seeds=1, out=tmp_path, evals=4)
    two = run_validation(target, specs, seeds=2, out=tmp_path, resume=True, evals=4)
    fresh = run_validation(target, specs, seeds=2, evals=4)
    for name in ("original", "plan"):
        s0, s1 = two["runs"][name]["seeds"]
        assert s0["resumed_from_epoch"] == 2 and s1["resumed_from_epoch"] is None  # seed 0 read back, seed 1 trained
        assert s0["wall_s"] == one["runs"][name]["seeds"][0]["wall_s"]  # not trained again: its own record
    assert strip_wall(two) == strip_wall(fresh)
    v = two["verdict"]
    assert len(v["paired"]) == 2 and v["interval"] is not None and one["verdict"]["interval"] is None
    assert v["paired"] == pytest.approx([p["metric"] - o["metric"] for p, o in
                                         zip(fresh["runs"]["plan"]["seeds"], fresh["runs"]["original"]["seeds"])])


def test_curve_points_are_the_model_at_those_samples(target_file):
    """A one-epoch run evaluated at 8 points: each point's metric is what a run stopped there scores
    (an independent run of the same plan cut at that sample), and the last is the run's final metric."""
    from bsadvisor.runtime.evaluation import eval_points, evaluate
    from bsadvisor.runtime.train import initial_state, train_plan

    target = _tiny(target_file)
    n = target.dataset_size
    init = initial_state(target.model)
    plan = Plan(stages=[Stage(0, n // 2, 8, 0.05, 0.9, 1.0), Stage(n // 2, n, 32, 0.05, 0.9, 0.25)], dataset_size=n)
    r = train_plan(target, plan, seed=3, init_state=init, evals=8)
    assert [p["point"] for p in r.evals] == eval_points(n, 8) == [40 * k for k in range(1, 9)]
    # batches of 32 from sample 160 on: a point is taken by the first update that reaches it
    assert [p["samples"] for p in r.evals] == [40, 80, 120, 160, 224, 256, 288, 320]
    assert [p["updates"] for p in r.evals] == [5, 10, 15, 20, 22, 23, 24, 25]
    assert [p["batch_size"] for p in r.evals] == [8, 8, 8, 8, 32, 32, 32, 32]
    assert r.evals[-1]["metric"] == r.history[-1]["metric"]
    for k in (1, 4):  # cut the same plan where the k-th point was taken
        at = r.evals[k]["samples"]
        cut = Plan(stages=[s for s in plan.stages if s.start_sample < at], dataset_size=n)
        last = cut.stages[-1]
        cut.stages[-1] = Stage(last.start_sample, at, last.batch_size, last.lr, last.momentum, last.temperature)
        train_plan(target, cut, seed=3, init_state=init)
        assert evaluate(target) == pytest.approx(r.evals[k]["metric"], abs=1e-12)


def test_realised_temperature_of_the_original_peaks_at_1_despite_a_short_last_batch():
    """N = 1000 at B = 64: every epoch ends with a batch of 40, whose temperature is higher; the
    table's reference is the schedule's peak, so the original reads 1 at the start (eq. 1)."""
    from bsadvisor.core.baseline import baseline_plan
    from bsadvisor.runtime.validate import RunSpec, realised_temperatures

    plan = baseline_plan(lr=0.1, batch_size=64, dataset_size=1000, epochs=3, momentum=0.9,
                         schedule="MultiStepLR(milestones=[2], gamma=0.1)")
    steps = [{"samples": e * 1000 + a, "batch_size": min(64, 1000 - a), "lr": 0.1 if e < 2 else 0.01,
              "momentum": 0.9} for e in range(3) for a in range(0, 1000, 64)]
    runs = {"original": {"seeds": [{"steps": steps}]}}
    t = realised_temperatures([RunSpec("original", plan)], runs)
    series = t["series"]["original"]
    assert series[0][1] == pytest.approx(1.0) and max(g for _, g in series) == pytest.approx(1.0)
    assert series[-1][1] == pytest.approx(0.1)
    assert all(x % 1000 != 960 for x, _ in series)  # the short batches are left out


def test_noise_monitor_keeps_at_least_min_points_on_a_short_budget(target_file):
    from bsadvisor.runtime.train import train_plan

    target = _tiny(target_file)
    n = target.dataset_size
    plan = Plan(stages=[Stage(0, n, 8, 0.05, 0.9, 1.0)], dataset_size=n)
    starved = train_plan(target, plan, noise_monitor={"overhead": 1e-6})
    kept = train_plan(target, plan, noise_monitor={"overhead": 1e-6, "min_points": 5})
    assert len(starved.noise_trace) == 1 and len(kept.noise_trace) == 5
    places = [p["sample"] for p in kept.noise_trace]
    assert all(places[k] >= k * n // 5 for k in range(5))  # spread over the run, not bunched at its start


def test_inconclusive_exits_3_and_says_how_many_seeds(monkeypatch, target_file):
    """The CLI's side of an inconclusive verdict: exit 3, the suggested seeds and the command to add them."""
    from typer.testing import CliRunner

    import bsadvisor.runtime.validate as rv
    from bsadvisor.cli.app import app

    def fake(target, specs, **kw):
        runs = {"original": _doc_run([0.80, 0.70, 0.90]), "plan": _doc_run([0.795, 0.697, 0.897])}
        return {"schema": rv.VALIDATION_SCHEMA, "target": "tiny", "metric": "metric", "epochs": 6, "seeds": 3,
                "dataset_size": 320, "runs": runs, "verdict": rv.verdict(runs, kw.get("tolerance")), "warnings": []}

    monkeypatch.setattr(rv, "run_validation", fake)
    r = CliRunner().invoke(app, ["validate", target_file, *SCHEDULE, "--seeds", "3"])
    assert r.exit_code == 3, r.output
    n = rv.verdict({"original": _doc_run([0.80, 0.70, 0.90]), "plan": _doc_run([0.795, 0.697, 0.897])})["seeds_suggested"]
    assert n is not None and "80% chance" in " ".join(r.output.split())
    assert "INCONCLUSIVE" in r.output and f"--seeds {n} --resume" in " ".join(r.output.split())


def _doc_run(metrics):
    seeds = [{"seed": i, "metric": m, "final_train_loss": 1.0, "updates": 10, "examples": 320, "wall_s": 1.0,
              "history": [{"epoch": 1, "metric": m, "train_loss": 1.0, "updates": 10, "wall_s": 1.0}]}
             for i, m in enumerate(metrics)]
    return {"description": "", "plan": {}, "seeds": seeds,
            "summary": {"metric_mean": sum(metrics) / len(metrics), "metric_sd": 0.0, "final_train_loss_mean": 1.0,
                        "final_train_loss_sd": 0.0, "updates": 10, "examples": 320, "wall_s_mean": 1.0,
                        "wall_s_sd": 0.0}}


# -- the library call: bsadvisor.validate and its Validation ------------------------------------
def _without_clock(doc):
    """A results document with the wall-clock readings (and the ratio of two) blanked: what two runs of the same
    inputs cannot share."""
    if isinstance(doc, dict):
        return {k: None if ("wall" in k or k == "seconds") else _without_clock(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_without_clock(v) for v in doc]
    return doc


@pytest.mark.slow
@pytest.mark.xdist_group("validate-accepted")
def test_the_library_call_returns_what_validate_json_prints(accepted, tmp_path):
    """bsadvisor.validate on the inputs of ``accepted`` (3 seeds, variants, --max-fraction 0.5, --tolerance 5%):
    its Validation's to_dict() is the document `validate --json` printed (but for the clock and the plots,
    which only --out writes); written, results.json is that document with the plots, and report.md the same
    report the CLI wrote."""
    import re

    import bsadvisor
    from bsadvisor.core.errors import UserError
    from bsadvisor.targets.loading import load_target

    cli = strict_json(accepted.run.stdout)
    plan = {"schedule": SCHEDULE[1], "epochs": float(SCHEDULE[3]), "max_fraction": 0.5}
    got = bsadvisor.validate(load_target(accepted.target), plan, bsadvisor.ValidateOptions(seeds=3, variants=True,
                                                                                          tolerance="5%"))
    assert isinstance(got, bsadvisor.Validation) and got.status == "accepted" and got.plots is None
    assert list(got.runs) == list(cli["runs"])
    assert _without_clock(got.to_dict()) == _without_clock({k: v for k, v in cli.items() if k != "plots"})
    assert got.verdict.margin == cli["verdict"]["margin"] and got.runs["plan"].summary.updates == \
        cli["runs"]["plan"]["summary"]["updates"]
    assert bsadvisor.Validation.from_dict(got.to_dict()) == got  # the document reads back whole

    written = got.write(tmp_path / "lib")
    assert written.plots == tuple(cli["plots"])
    assert json.loads((tmp_path / "lib" / "results.json").read_text()) == written.to_dict()
    clock = re.compile(r"\| [0-9.]+ \|$", re.M)  # the wall-s column
    assert clock.sub("|", (tmp_path / "lib" / "report.md").read_text()) == \
        clock.sub("|", (accepted.out / "report.md").read_text())
    with pytest.raises(UserError, match="holds an earlier run's results"):
        got.write(tmp_path / "lib")  # no second write over the first without overwrite
    assert got.write(tmp_path / "lib", overwrite=True).plots == written.plots


def test_validation_write_refuses_a_foreign_file_as_the_cli_does(tiny, tmp_path):
    """A file of the user's with a name validate writes (report.md, no manifest naming it): Validation.write
    refuses with the line the CLI prints for the same --out, and leaves the folder as it was."""
    from hostile import Snapshot, assert_one_line_error

    from bsadvisor.core.errors import UserError
    from bsadvisor.runtime.validation import Validation

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes\n")
    before = Snapshot(tmp_path)
    line = assert_one_line_error(_in_process("validate", tiny, *SCHEDULE, "--out", out), ["report.md", "never replaces"])
    doc = {"schema": "bsadvisor.validation/1.2", "target": "tiny", "metric": "metric", "epochs": 6, "seeds": 1,
           "dataset_size": 320, "runs": {}, "verdict": {}}
    with pytest.raises(UserError) as refused:
        Validation.from_dict(doc).write(out)
    assert line.endswith(str(refused.value))
    before.assert_unchanged()


def test_the_library_call_refuses_what_it_cannot_validate_before_training(tiny):
    """A target given as its string, a plan made for another data set, nothing to convert: one clear error
    each, before any run (no --out needed to find out)."""
    import bsadvisor
    from bsadvisor.core.errors import UserError
    from bsadvisor.targets.loading import load_target

    with pytest.raises(TypeError, match="load it first"):
        bsadvisor.validate("builtin:linreg", {})
    target = load_target(tiny)
    other = Plan(stages=[Stage(0, 640, 8, 0.05, 0.9, 1.0)], dataset_size=640, inputs={"batch_size": 8})
    with pytest.raises(UserError, match="made for 640 training examples but the dataset has 320"):
        bsadvisor.validate(target, other)
    with pytest.raises(UserError, match="--schedule and --epochs"):
        bsadvisor.validate(target, {"lr": 0.1})
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        bsadvisor.validate(target, other, seed=3)


def test_variants_and_the_device_refit_carry_the_noise_annotation():
    """Validate's variants and the torchrun refit are made by recommend, so each stage carries its B_noise and
    efficiency as the plan's do (a plan made with a noise model); their batches are those of a conversion
    of the same options with the same noise model and cap."""
    import bsadvisor
    from dataclasses import replace

    from bsadvisor.core.convert import convert
    from bsadvisor.core.noise_model import NoiseModel
    from bsadvisor.core.validate_options import ValidateOptions
    from bsadvisor.runtime.validate import build_runs, fit_to_devices

    model = NoiseModel.from_dict({"source": "probe", "points": [
        {"sample": 0, "b_simple": 20.0, "lr": 0.05, "momentum": 0.9, "batch_size": 8, "ci90": [15.0, 25.0],
         "ci_kind": "bounded"}]})
    plan = bsadvisor.recommend({"lr": 0.05, "batch_size": 8, "momentum": 0.9, "dataset_size": 3200, "epochs": 6,
                                "schedule": "MultiStepLR(milestones=[2, 4], gamma=0.2)"}, noise_trace=model,
                               noise_cap=8)
    assert all("efficiency" in s.extra for s in plan.stages)
    runs = {r.name: r.plan for r in build_runs(plan, ValidateOptions(variants=True))}
    fitted, note = fit_to_devices(plan, 3, 5)
    assert note is not None and len(runs) == 4
    recorded = plan.noise_model
    for got, changes in ((runs["increased-lr-x5"], {"increase_lr": 5}), (fitted, {"world_size": 3, "micro_batch": 5}),
                         *((p, {"max_batch": int(n.split("-")[1])}) for n, p in runs.items() if n.startswith("hybrid"))):
        assert all("efficiency" in s.extra and "b_noise" in s.extra for s in got.stages), changes
        want = convert(replace(plan.options, noise_cap_batch=recorded.cap(8), **changes))
        assert got.stage_batch_sizes() == want.stage_batch_sizes(), changes
    assert all(b == 8 or b % 3 == 0 for b in fitted.stage_batch_sizes())


# ---- hostile inputs to validate and demo ----------------------------------------------------------
# Hostile inputs to `bsadvisor validate` and `bsadvisor demo`: one line, exit 2, nothing changed.
#
# Each case runs the CLI's entry point in-process (tests/hostile.py). Most fail on the options
# before torch is imported; the checkpoint cases resume from a crafted file and must refuse
# it without running anything in it (weights_only loading) and without touching the folder.

SCHED = ["--schedule", "MultiStepLR(milestones=[2, 4], gamma=0.2)", "--epochs", "6"]
LINREG = ["builtin:linreg", *SCHED]
CHECKPOINT_FORMAT = "bsadvisor.checkpoint/2"  # written out here: a test must not trust the code it checks


class Evil:
    """A pickle whose loading would create the file PWNED beside it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


# -- set-ups: each gets the case's folder and leaves there what the case needs -----------------
def earlier_run(tmp: Path, checkpoint: bytes | None = None) -> None:
    """An --out folder as a finished (or killed) validate run leaves it."""
    out = tmp / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".bsadvisor.lock").write_text("")
    (out / "results.json").write_text(json.dumps({"schema": "bsadvisor.validation/1"}))
    if checkpoint is not None:
        (out / "checkpoints" / "original-seed0.pt").write_bytes(checkpoint)


def only_checkpoints(tmp: Path) -> None:
    (tmp / "out" / "checkpoints").mkdir(parents=True)
    (tmp / "out" / "checkpoints" / "plan-seed0.pt").write_bytes(b"x")


def a_file(tmp: Path) -> None:
    (tmp / "out").write_text("my notes\n")


def torch_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def evil_zip(tmp: Path) -> None:
    earlier_run(tmp, torch_bytes({"format": CHECKPOINT_FORMAT, "meta": {}, "x": Evil(str(tmp / "PWNED"))}))


def evil_pickle(tmp: Path) -> None:
    earlier_run(tmp, pickle.dumps(Evil(str(tmp / "PWNED")), protocol=2))


def evil_pickle_new_protocol(tmp: Path) -> None:
    earlier_run(tmp, pickle.dumps({"format": CHECKPOINT_FORMAT, "x": Evil(str(tmp / "PWNED"))}, protocol=5))


def garbage_checkpoint(tmp: Path) -> None:
    earlier_run(tmp, b"\x00not a checkpoint at all" * 10)


def truncated_checkpoint(tmp: Path) -> None:
    import torch

    data = torch_bytes({"format": CHECKPOINT_FORMAT, "meta": {}, "model": {"w": torch.zeros(1000)}})
    earlier_run(tmp, data[: len(data) // 2])  # what a kill during a non-atomic write would leave


def list_checkpoint(tmp: Path) -> None:
    earlier_run(tmp, torch_bytes([1, 2, 3]))


def other_format_checkpoint(tmp: Path) -> None:
    earlier_run(tmp, torch_bytes({"format": "someone-else/1", "meta": {}}))


def other_model_checkpoint(tmp: Path) -> None:
    """A checkpoint of a model with another architecture (linreg has one Linear(16, 1))."""
    meta = {"name": "original", "seed": 0, "model": {"modules": [["", "Sequential"], ["0", "Linear"]],
                                                     "state": [["0.weight", [1, 32], "float32"],
                                                               ["0.bias", [1], "float32"]]}}
    earlier_run(tmp, torch_bytes({"format": CHECKPOINT_FORMAT, "meta": meta}))


def old_format_checkpoint(tmp: Path) -> None:
    """A checkpoint of bsadvisor before plans in samples (format /1: per epoch, no position inside one)."""
    earlier_run(tmp, torch_bytes({"format": "bsadvisor.checkpoint/1", "meta": {}}))


def huge_epoch_plan(tmp: Path) -> None:
    stages = [{"start_epoch": 0, "end_epoch": 10**6, "batch_size": 64, "lr": 0.1, "momentum": 0.0}]
    (tmp / "plan.json").write_text(json.dumps({"schema": "bsadvisor.plan/1", "dataset_size": 16384,
                                               "inputs": {"lr": 0.1, "batch_size": 64, "epochs": 10**6,
                                                          "schedule": "constant"}, "stages": stages}))


def refused(flag: str, *cases: tuple, head=LINREG) -> list[tuple]:
    """Rows for bad values of one flag (hostile.refusals), with no set-up."""
    return [(id_, argv, None, fragments) for id_, argv, fragments in refusals(flag, head, cases)]


# -- the cases: (id, argv, set-up or None, fragments the error line must contain) -----------------
CASES = [
    *refused("--tolerance", ("nan", "nan", "finite"), ("inf", "inf", "finite"), ("minus-inf", "-inf", "finite"),
             ("negative", "-0.01", "-0.01")),
    *refused("--seeds", ("zero", "0", "0"), ("negative", "-3", "-3"), ("huge", "1000000", "1000"), ("2**70", str(2**70))),
    *refused("--increase-lr", ("nan", "nan", "finite"), ("inf", "inf", "finite"), ("zero", "0", "> 1"),
             ("negative", "-5", "> 1"), ("one", "1", "> 1"), ("half", "0.5", "0.5")),
    *refused("--hybrid-cap", ("zero", "0", "0"), ("negative", "-64", "-64"), head=[*LINREG, "--variants"]),
    *refused("--max-micro-batch", ("zero", "0", "0"), ("negative", "-8", "-8")),
    ("epochs-1e9", ["builtin:linreg", "--schedule", "constant", "--epochs", "1000000000"], None,
     ["--epochs 1000000000", "at most 100,000", "every epoch"]),
    ("epochs-2**70", ["builtin:linreg", "--schedule", "constant", "--epochs", str(2**70)], None, ["--epochs"]),
    ("epochs-zero", ["builtin:linreg", "--schedule", "constant", "--epochs", "0"], None, ["--epochs", "0"]),
    ("epochs-negative", ["builtin:linreg", "--schedule", "constant", "--epochs", "-5"], None, ["--epochs", "-5"]),
    ("plan-with-1e6-epochs", ["builtin:linreg", "--plan", "{tmp}/plan.json"], huge_epoch_plan, ["epochs"]),
    ("out-is-a-file", [*LINREG, "--out", "{tmp}/out"], a_file, ["{tmp}/out", "is a file"]),
    ("out-is-a-file-resume", [*LINREG, "--out", "{tmp}/out", "--resume"], a_file, ["{tmp}/out", "is a file"]),
    ("out-under-a-file", [*LINREG, "--out", "{tmp}/out/sub"], a_file, ["{tmp}/out", "is a file"]),
    ("out-holds-results", [*LINREG, "--out", "{tmp}/out"], earlier_run, ["--resume", "--overwrite", "results.json"]),
    ("out-holds-checkpoints", [*LINREG, "--out", "{tmp}/out"], only_checkpoints, ["--resume", "plan-seed0.pt"]),
    ("resume-and-overwrite", [*LINREG, "--out", "{tmp}/out", "--resume", "--overwrite"], earlier_run,
     ["--resume", "--overwrite", "not both"]),
    ("resume-without-out", [*LINREG, "--resume"], None, ["--resume needs --out"]),
    ("overwrite-without-out", [*LINREG, "--overwrite"], None, ["--overwrite needs --out"]),
    ("demo-seeds-zero", ["demo", "--seeds", "0"], None, ["--seeds"]),
    ("demo-epochs-huge", ["demo", "--epochs", "1000000000"], None, ["--epochs", "at most"]),
    ("demo-epochs-too-short", ["demo", "--epochs", "3"], None, ["--epochs 3", "too short"]),
    ("demo-out-is-a-file", ["demo", "--out", "{tmp}/out", "--json"], a_file, ["{tmp}/out", "is a file"]),
    ("demo-out-holds-results", ["demo", "--out", "{tmp}/out"], earlier_run, ["--overwrite"]),
    # below: the target is loaded (torch), the check comes after the plan is built
    ("hybrid-cap-not-above-b0", [*LINREG, "--variants", "--hybrid-cap", "64"], None, ["--hybrid-cap 64", "above"]),
    ("hybrid-cap-above-n", [*LINREG, "--variants", "--hybrid-cap", "100000"], None, ["--hybrid-cap 100000", "16384"]),
    ("resume-evil-checkpoint", [*LINREG, "--out", "{tmp}/out", "--resume"], evil_zip,
     ["original-seed0.pt", "python objects", "not loaded"]),
    ("resume-evil-pickle", [*LINREG, "--out", "{tmp}/out", "--resume"], evil_pickle, ["original-seed0.pt", "not loaded"]),
    ("resume-evil-pickle-protocol-5", [*LINREG, "--out", "{tmp}/out", "--resume"], evil_pickle_new_protocol,
     ["original-seed0.pt", "not loaded"]),
    ("resume-garbage-checkpoint", [*LINREG, "--out", "{tmp}/out", "--resume"], garbage_checkpoint,
     ["original-seed0.pt", "delete it"]),
    ("resume-truncated-checkpoint", [*LINREG, "--out", "{tmp}/out", "--resume"], truncated_checkpoint,
     ["original-seed0.pt", "delete it"]),
    ("resume-list-checkpoint", [*LINREG, "--out", "{tmp}/out", "--resume"], list_checkpoint,
     ["not a bsadvisor checkpoint"]),
    ("resume-foreign-checkpoint", [*LINREG, "--out", "{tmp}/out", "--resume"], other_format_checkpoint,
     ["not a bsadvisor checkpoint"]),
    ("resume-old-format", [*LINREG, "--out", "{tmp}/out", "--resume"], old_format_checkpoint,
     ["older bsadvisor", "delete it"]),
    ("resume-other-model", [*LINREG, "--out", "{tmp}/out", "--resume"], other_model_checkpoint,
     ["original-seed0.pt", "different model", "0.weight"]),
]


@pytest.mark.parametrize("argv,setup,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, argv, setup, fragments):
    if setup is not None:
        setup(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] != "demo":
        argv = ["validate", *argv]
    before = Snapshot(tmp_path)
    r = run_main(argv, cwd=tmp_path)
    assert_one_line_error(r, [f.replace("{tmp}", str(tmp_path)) for f in fragments])
    before.assert_unchanged()
    assert not (tmp_path / "PWNED").exists()  # the crafted pickle never ran


def test_evil_pickle_would_run_if_loaded_unsafely(tmp_path):
    """The crafted checkpoints really are hostile: the unsafe load creates the file."""
    import torch

    evil_zip(tmp_path)
    torch.load(tmp_path / "out" / "checkpoints" / "original-seed0.pt", weights_only=False)
    assert (tmp_path / "PWNED").exists()


def test_second_run_into_a_locked_out_is_refused(tmp_path):
    """A validate already writing to --out holds its lock: a second one is refused, nothing touched."""
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / ".bsadvisor.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the first run holds it
        before = Snapshot(tmp_path)
        r = run_main(["validate", *LINREG, "--out", out], cwd=tmp_path)
        assert_one_line_error(r, [str(out), "in use", "another"])
        before.assert_unchanged()
    finally:
        os.close(fd)


def test_cases_are_many_and_unique():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_env_is_80_columns():
    assert cli_env()["COLUMNS"] == "80"


# ---- inputs wrong inside: targets, traces, checkpoints, --out -------------------------------------
# Inputs well-formed on the surface and wrong inside, each one line and exit 2, never a traceback.
#
# Run in-process (hostile.run_main): a dataset whose ``__len__`` raises or lies, a model on the meta
# device, a recipe with bad metadata, ``sys.exit(7)`` inside ``loss_fn``, an unreadable folder,
# ``checkpoints`` as a file, a noise trace of the wrong shape or values, checkpoint fields that are
# damaged while their metadata is right, and an ``--out`` naming a file the command did not write.

TARGETS = '''
import sys
import torch
from bsadvisor import Target


class DS(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.x, self.y = n, torch.randn(64, 4), torch.randn(64)

    def __len__(self):
        if self.n == "raise":
            raise RuntimeError("no length today")
        return self.n

    def __getitem__(self, i):
        return self.x[i % 64], self.y[i % 64]


def _t(ds=None, model=None, loss=None, **kw):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, generator=g)
    def lf(m, b):
        return ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()
    return Target(model=model if model is not None else torch.nn.Linear(4, 1),
                  train_dataset=ds if ds is not None else torch.utils.data.TensorDataset(x, y),
                  loss_fn=loss or lf, batch_size=8, lr=0.01, **kw)


def ok(): return _t()
def len_raises(): return _t(DS("raise"))
def len_negative(): return _t(DS(-5))
def len_huge(): return _t(DS(10**18))
def meta_model(): return _t(model=torch.nn.Linear(4, 1, device="meta"))
def epochs_none(): return _t(metadata={"schedule": "MultiStepLR(milestones=[1], gamma=0.5)", "epochs": None})
def epochs_text(): return _t(metadata={"schedule": "MultiStepLR(milestones=[1], gamma=0.5)", "epochs": "three"})
def schedule_number(): return _t(metadata={"schedule": 5, "epochs": 2})
def metadata_text(): return _t(metadata="schedule")


def exits_7():
    def lf(m, b):
        sys.exit(7)
    return _t(loss=lf)
'''
USER_DATA_SCHED = ["--schedule", "MultiStepLR(milestones=[1], gamma=0.5)", "--epochs", "2"]


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "t.py").write_text(TARGETS)
    return tmp_path


def refused(folder: pathlib.Path, argv, fragments=()):
    snap = Snapshot(folder)
    r = run_main(argv, cwd=folder)
    line = assert_one_line_error(r, fragments)
    snap.assert_unchanged()
    return line


# -- targets -----------------------------------------------------------------------------
@pytest.mark.parametrize("fn,fragments", [
    ("len_raises", ["len(train_dataset) raised RuntimeError", "no length today"]),
    ("len_negative", ["len(train_dataset) raised ValueError"]),
    ("len_huge", ["1e+18 examples", "subset"]),
    ("meta_model", ["meta device"]),
    ("metadata_text", ["metadata must be a dict"]),
])
@pytest.mark.parametrize("command", ["probe", "validate"])
def test_bad_targets(folder, fn, fragments, command):
    extra = USER_DATA_SCHED if command == "validate" else ["--budget-seconds", "5"]
    refused(folder, [command, f"t.py:{fn}", *extra], fragments)


@pytest.mark.parametrize("fn,fragments", [
    ("epochs_none", ["metadata['epochs'] must be a number, got None"]),
    ("epochs_text", ["metadata['epochs'] must be a number, got 'three'"]),
    ("schedule_number", ["metadata['schedule'] must be a schedule text"]),
])
def test_bad_recipe_metadata(folder, fn, fragments):
    refused(folder, ["validate", f"t.py:{fn}"], fragments)


@pytest.mark.parametrize("argv", [["probe", "t.py:exits_7", "--budget-seconds", "5"], ["validate", "t.py:exits_7", *USER_DATA_SCHED]])
def test_sys_exit_in_loss_fn_is_one_line(folder, argv):
    refused(folder, argv, ["loss_fn raised SystemExit", "7"])


def test_unreadable_folder_of_the_target(folder, monkeypatch):
    """``probe sub/x.py:ok`` with ``sub`` unreadable: Path.is_dir raises PermissionError (as a non-root user sees it)."""
    real = pathlib.Path.is_dir

    def is_dir(self):
        if "sub" in self.parts:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(pathlib.Path, "is_dir", is_dir)
    refused(folder, ["probe", "sub/x.py:ok"], ["cannot be read", "Permission denied"])


def test_checkpoints_is_a_file(folder):
    (folder / "v").mkdir()
    (folder / "v" / "checkpoints").write_text("my notes")
    refused(folder, ["validate", "t.py:ok", *USER_DATA_SCHED, "--out", "v"], ["'checkpoints'", "another --out"])


# -- noise traces ------------------------------------------------------------------------
POINT = {"sample": 0, "b_simple": 100.0, "lr": 0.01, "momentum": 0.0, "batch_size": 8, "ci90": [50, 200],
         "ci_kind": "bounded"}
V = {"schema": "bsadvisor.validation/1.1"}
T = "bsadvisor.noise_trace/1"
TRACES = {
    "runs a list": ({**V, "runs": [1, 2]}, "'runs' is not an object"),
    "runs with int keys": ({**V, "runs": {"original": 3}}, "no list of seeds"),
    "a run a string": ({**V, "runs": {"original": "x"}}, "no list of seeds"),
    "seeds a string": ({**V, "runs": {"original": {"seeds": "abc"}}}, "no list of seeds"),
    "seeds an object": ({**V, "runs": {"original": {"seeds": {"0": 1}}}}, "no list of seeds"),
    "seeds of numbers": ({**V, "runs": {"original": {"seeds": [1, 2]}}}, "recorded no noise trace"),
    "trace an object": ({**V, "runs": {"original": {"seeds": [{"noise_trace": {"a": 1}}]}}}, "not a list"),
    "points a string": ({"schema": T, "points": "xyz"}, "not a list"),
    "momentum 1": ({"schema": T, "points": [{**POINT, "momentum": 1}]}, "momentum 1"),
    "momentum 5": ({"schema": T, "points": [{**POINT, "momentum": 5}]}, "momentum 5"),
    "momentum -1": ({"schema": T, "points": [{**POINT, "momentum": -1}]}, "momentum -1"),
    "batch = N": ({"schema": T, "points": [{**POINT, "batch_size": 64}]}, "batch 64"),
    "batch > N": ({"schema": T, "points": [{**POINT, "batch_size": 10**6}]}, "batch 1000000"),
    "batch 0": ({"schema": T, "points": [{**POINT, "batch_size": 0}]}, "batch_size 0"),
    "batch 2.5": ({"schema": T, "points": [{**POINT, "batch_size": 2.5}]}, "lacks"),
    "sample -5": ({"schema": T, "points": [{**POINT, "sample": -5}]}, "negative sample"),
    "lr huge": ({"schema": T, "points": [{**POINT, "lr": 1e308, "b_simple": 1e308}]}, "no positive noise temperature"),
    "ci a number": ({"schema": T, "points": [{**POINT, "ci90": 5}]}, "lacks"),
    "point a list": ({"schema": T, "points": [[1, 2]]}, "not a list of objects"),
}
CONVERT = ["convert-schedule", "--lr", "0.1", "--batch-size", "8", "--dataset-size", "64", "--epochs", "3",
           "--schedule", "MultiStepLR(milestones=[1])", "--momentum", "0.9"]


@pytest.mark.parametrize("case", sorted(TRACES))
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_bad_noise_traces(folder, case, optimizer):
    doc, fragment = TRACES[case]
    (folder / "trace.json").write_text(json.dumps(doc))
    refused(folder, [*CONVERT, "--optimizer", optimizer, "--noise-trace", "trace.json"], [fragment])


def test_advise_refuses_a_trace_of_another_data_set_before_the_probe(folder, monkeypatch):
    import bsadvisor.measure.probe as probe

    def never(*a, **k):
        raise AssertionError("the probe ran before the trace was checked")

    monkeypatch.setattr(probe, "probe", never)
    (folder / "trace.json").write_text(json.dumps({"schema": T, "points": [{**POINT, "batch_size": 64}]}))
    refused(folder, ["advise", "t.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "3",
                     "--noise-trace", "trace.json"], ["batch 64", "another data set"])


# -- checkpoints whose metadata is right and whose fields are not ---------------------------
def _damage(doc: dict, how: str) -> None:
    if how == "offset text":
        doc["partial"] = {"epoch": 0, "offset": "x", "loss_sum": 0.0, "seen": 0}
    elif how == "offset past the epoch":
        doc["partial"] = {"epoch": 0, "offset": 10**9, "loss_sum": 0.0, "seen": 0}
    elif how == "history without train_loss":
        doc["history"] = [{k: v for k, v in doc["history"][0].items() if k != "train_loss"}]
    elif how == "history a string":
        doc["history"] = "abc"
    elif how == "steps samples text":
        doc["steps"] = [{"samples": "a", "batch_size": 8, "lr": 0.1, "momentum": 0.0}]
    elif how == "evals metric text":
        doc["evals"] = [{**doc["evals"][0], "metric": "high"}] if doc["evals"] else [{"metric": "x"}]
    elif how == "totals a list":
        doc["totals"] = [1, 2]
    elif how == "since seen negative":
        doc["since"] = {"loss_sum": 0.0, "seen": -4}
    elif how == "too many epochs":
        doc["history"] = doc["history"] * 5


@pytest.mark.parametrize("how", ["offset text", "offset past the epoch", "history without train_loss",
                                 "history a string", "steps samples text", "evals metric text", "totals a list",
                                 "since seen negative", "too many epochs"])
def test_damaged_checkpoint_fields(tmp_path, how):
    import torch

    from bsadvisor.core.baseline import baseline_plan
    from bsadvisor.core.errors import UserError
    from bsadvisor.runtime.train import train_plan
    from bsadvisor.targets.builtins import linreg

    target = linreg(size=128)
    plan = baseline_plan(lr=0.01, batch_size=16, dataset_size=128, epochs=2, schedule="MultiStepLR(milestones=[1])")
    ck = tmp_path / "c.pt"
    train_plan(target, plan, checkpoint=ck, evals=2)
    doc = torch.load(ck, weights_only=True)
    _damage(doc, how)
    torch.save(doc, ck)
    with pytest.raises(UserError, match="is damaged"):
        train_plan(target, plan, checkpoint=ck, resume=True, evals=2)


# -- one --out rule for every command ---------------------------------------------------------
CONVERT_OUT = ["convert-schedule", "--lr", "0.1", "--batch-size", "8", "--dataset-size", "640", "--epochs", "3",
               "--schedule", "MultiStepLR(milestones=[1])", "--momentum", "0.9", "--out"]


def test_every_command_refuses_to_replace_a_file_it_did_not_write(folder, monkeypatch):
    import bsadvisor.measure.probe as probe

    def never(*a, **k):
        raise AssertionError("the probe ran before --out was checked")

    monkeypatch.setattr(probe, "probe", never)
    (folder / "notes.txt").write_text("mine\n")
    (folder / "probe.json").write_text(json.dumps({"schema": "bsadvisor.probe/1"}))
    fragments = ["notes.txt already exists", "--overwrite"]
    refused(folder, [*CONVERT_OUT, "notes.txt"], fragments)
    refused(folder, ["probe", "t.py:ok", "--out", "notes.txt"], fragments)
    refused(folder, ["advise", "t.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "3",
                     "--out", "notes.txt"], fragments)
    refused(folder, ["advise", "t.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "3",
                     "--probe-out", "notes.txt"], ["--probe-out notes.txt already exists"])
    # a plan file is not a probe file, and a probe file is not a plan
    assert run_main([*CONVERT_OUT, "plan.json"], cwd=folder).returncode == 0
    refused(folder, ["probe", "t.py:ok", "--out", "plan.json"], ["not a bsadvisor.probe file"])
    refused(folder, [*CONVERT_OUT, "probe.json"], ["not a bsadvisor.plan file"])
    # export: its output has no schema, so any existing file (the input plan above all) needs --overwrite
    refused(folder, ["export", "plan.json", "--out", "plan.json"], ["plan.json already exists", "--overwrite"])
    assert (folder / "notes.txt").read_text() == "mine\n"


def test_own_files_are_replaced_and_overwrite_replaces_any(folder):
    assert run_main([*CONVERT_OUT, "plan.json"], cwd=folder).returncode == 0
    first = (folder / "plan.json").read_text()
    r = run_main([*CONVERT_OUT[:-3], "--momentum", "0.5", "--out", "plan.json"], cwd=folder)
    assert r.returncode == 0, r.stderr  # an earlier plan is replaced
    assert (folder / "plan.json").read_text() != first
    (folder / "notes.txt").write_text("mine\n")
    assert run_main([*CONVERT_OUT, "notes.txt", "--overwrite"], cwd=folder).returncode == 0
    assert json.loads((folder / "notes.txt").read_text())["schema"] == "bsadvisor.plan/2"
    assert run_main(["export", "plan.json", "--out", "e.csv"], cwd=folder).returncode == 0
    assert run_main(["export", "plan.json", "--out", "e.csv", "--overwrite"], cwd=folder).returncode == 0
