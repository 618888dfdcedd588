"""Reliability: resume refuses another schedule, only our own temporary files are
removed, the results outlive the plots, a resumed run's noise trace is the uninterrupted one's.

Everything runs in-process (the library and ``cli.app.main``) on builtin:linreg: a few seconds in all.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bsadvisor.core.errors import UserError

N = 256
SCHED = "MultiStepLR(milestones=[1], gamma=0.1)"


def _target():
    from bsadvisor.targets.builtins import linreg

    return linreg(size=N)


def _specs(target, schedule=SCHED, epochs=3):
    from bsadvisor.core.predict import plan_from_options
    from bsadvisor.runtime.validate import build_runs

    plan = plan_from_options(lr=0.01, batch_size=16, dataset_size=N, epochs=epochs, schedule=schedule, momentum=0.0,
                             optimizer="sgd", max_fraction=0.5)
    return build_runs(plan)


class _StopAfter:
    """A rich-Progress stand-in that raises KeyboardInterrupt after ``n`` updates (a Ctrl-C mid-run)."""

    def __init__(self, n: int):
        self.left = n

    def add_task(self, *a, **k):
        return 0

    def advance(self, task, n):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt

    def update(self, *a, **k):
        pass


def test_resume_with_another_schedule_is_refused(tmp_path):
    """gamma 0.1 checkpoints, resumed with gamma 0.5: the original's stages are the same, the schedule is not."""
    from bsadvisor.runtime.validate import run_validation

    target = _target()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C part way, then a changed --schedule
        run_validation(target, _specs(target), out=tmp_path, noise_monitor=None, evals=2, progress=_StopAfter(30))
    assert (tmp_path / "checkpoints" / "original-seed0.pt").is_file()
    other = _specs(target, "MultiStepLR(milestones=[1], gamma=0.5)")
    assert other[0].plan.to_dict()["stages"] == _specs(target)[0].plan.to_dict()["stages"]  # why stages are not enough
    with pytest.raises(UserError, match=r"another schedule \(schedule .*gamma=0.1.* in the checkpoint, .*gamma=0.5"):
        run_validation(target, other, out=tmp_path, resume=True, noise_monitor=None, evals=2)
    # the same schedule resumes
    doc = run_validation(target, _specs(target), out=tmp_path, resume=True, noise_monitor=None, evals=2)
    assert doc["runs"]["original"]["seeds"][0]["resumed_from_epoch"] is not None


class _Clock:
    """A fake perf_counter for the noise monitor: one millisecond a call, so its budget is the same in every run."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        self.t += 1e-3
        return self.t


def _comparable(doc: dict) -> dict:
    """The results minus wall-clock times and the resume marker (they legitimately differ)."""
    doc = json.loads(json.dumps(doc))
    doc["verdict"].pop("wall_ratio", None)
    for run in doc["runs"].values():
        run["summary"].pop("wall_s_mean"), run["summary"].pop("wall_s_sd")
        for s in run["seeds"]:
            s.pop("wall_s"), s.pop("resumed_from_epoch")
            for rec in s["history"] + s["evals"]:
                rec.pop("wall_s")
    return doc


def _monitored_run(monkeypatch, out, clock=None, **kw):
    """Validation with the noise monitor on a fake clock, checkpoints every 5 updates."""
    import bsadvisor.runtime.monitor as monitor
    from bsadvisor.runtime.validate import run_validation

    monkeypatch.setattr(monitor, "time", clock or _Clock())
    target = _target()
    return run_validation(target, _specs(target), out=out, noise_monitor={"overhead": 0.05, "min_points": 5}, evals=4,
                          checkpoint_every=5, **kw)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The folder of the uninterrupted run that every cut-and-resumed run below must reproduce."""
    from bsadvisor.runtime.report import write_outputs

    out = tmp_path_factory.mktemp("uninterrupted") / "ref"
    with pytest.MonkeyPatch.context() as mp:
        write_outputs(_monitored_run(mp, out), out)
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("reliability-uninterrupted")
@pytest.mark.parametrize("stop_after", [7, 23, 41])
def test_resumed_results_equal_uninterrupted_noise_trace_included(uninterrupted, tmp_path, monkeypatch, stop_after):
    """Killed at several places (mid-epoch checkpoints every 5 updates), resumed: results.json is the uninterrupted
    run's, the noise trace included (the monitor's pace and budget are in its checkpoint)."""
    from bsadvisor.runtime.report import write_outputs

    with pytest.raises(KeyboardInterrupt):
        _monitored_run(monkeypatch, tmp_path / "cut", progress=_StopAfter(stop_after))
    clock = _Clock()
    clock.t = 123.0  # the resumed process's clock starts elsewhere
    got = _monitored_run(monkeypatch, tmp_path / "cut", clock, resume=True)
    assert got["runs"]["original"]["seeds"][0]["resumed_from_epoch"] is not None
    assert got["runs"]["plan"]["seeds"][0]["noise_trace"], "the monitor recorded nothing"
    write_outputs(got, tmp_path / "cut")
    a = json.loads((uninterrupted / "results.json").read_text())
    b = json.loads((tmp_path / "cut" / "results.json").read_text())
    for d in (a, b):
        for run_ in d["runs"].values():
            for s in run_["seeds"]:
                for p in s["noise_trace"]:
                    p.pop("seconds")  # the fake clock's reading, not a measurement
    assert _comparable(a) == _comparable(b)


def test_only_our_own_temp_files_are_orphans(tmp_path):
    from bsadvisor.core.fileio import is_own_temp, remove_orphan_temps, write_atomic

    mine = [".draft.tmp", ".notes.tmp", ".results.json.k2j3.tmp", "keep.tmp", ".x.abcdefgh.tmp"]
    for name in mine:
        (tmp_path / name).write_text("user")
    ours = tmp_path / ".results.json.ab_9xYz1.bsadvisor.tmp"
    ours.write_bytes(b"\0")
    assert remove_orphan_temps(tmp_path) == [ours]
    assert all((tmp_path / n).read_text() == "user" for n in mine)
    # the names write_atomic makes are the ones recognised
    import tempfile

    seen = []
    real = tempfile.mkstemp

    def spy(*a, **k):
        fd, name = real(*a, **k)
        seen.append(Path(name).name)
        return fd, name

    tempfile.mkstemp = spy
    try:
        write_atomic(tmp_path / "results.json", "{}")
    finally:
        tempfile.mkstemp = real
    assert seen and all(is_own_temp(n) for n in seen)


def _doc_with_target(name: str) -> dict:
    from bsadvisor.runtime.validate import run_validation

    target = _target()
    target.name = name
    return run_validation(target, _specs(target, epochs=2), noise_monitor=None, evals=2)


@pytest.mark.slow
def test_dollar_target_name_plots_and_results(tmp_path):
    """A target named ``loss $\\foo{x}$``: matplotlib would raise ParseFatalException; the `$` is escaped."""
    pytest.importorskip("matplotlib")
    from bsadvisor.runtime.report import write_outputs

    doc = _doc_with_target(r"loss $\foo{x}$")
    assert write_outputs(doc, tmp_path) == []
    assert json.loads((tmp_path / "results.json").read_text())["plots"] == doc["plots"] != []
    assert (tmp_path / "report.md").is_file()


def test_a_failing_plot_keeps_the_results(tmp_path, monkeypatch):
    """Plots fail (matplotlib raising, a full disk): one warning, results.json and report.md written first."""
    import bsadvisor.runtime.report as report

    doc = _doc_with_target("tiny")

    def boom(*a, **k):
        raise RuntimeError("ParseFatalException: Expected end of text\nline two")

    monkeypatch.setattr(report, "plot_curves", boom)
    warnings = report.write_outputs(doc, tmp_path)
    assert len(warnings) == 1 and "\n" not in warnings[0] and "no plots" in warnings[0]
    assert json.loads((tmp_path / "results.json").read_text())["schema"].startswith("bsadvisor.validation")
    assert (tmp_path / "report.md").is_file()

    def full(*a, **k):
        raise UserError(f"cannot write {tmp_path}/curves_epoch.png: No space left on device; free some space")

    monkeypatch.setattr(report, "plot_curves", full)
    (tmp_path / "results.json").unlink()
    warnings = report.write_outputs(doc, tmp_path)
    assert "No space left" in warnings[0] and (tmp_path / "results.json").is_file()


# -- unbounded work ------------------------------------------------------------------------
def test_olmo_rows_count_the_updates_of_every_batch_change():
    """The linear walk gives what the per-row sum over all stages gave (the quadratic form it replaces)."""
    from bsadvisor.core.exports import olmo_rows
    from bsadvisor.core.exports.fit import batch_steps

    from bsadvisor.core.plan import Plan, Stage

    batches = [4, 4, 8, 8, 8, 16, 16, 32, 64, 64, 64]  # several stages a batch, as OLMo-core takes them (× integers)
    stages = [Stage(i * 64, (i + 1) * 64, b, 0.1, 0.9, 1.0) for i, b in enumerate(batches)]
    plan = Plan(stages=stages, dataset_size=128, inputs={"optimizer": "adamw", "seq_len": 16})
    counts = plan.updates_per_stage()
    steps = batch_steps(plan)
    ends = [s["samples"] for s in steps[1:]] + [plan.total_samples]
    want = [sum(c for s, c in zip(plan.stages, counts) if st["samples"] <= s.start_sample < end)
            for st, end in zip(steps, ends)]
    assert [r["updates"] for r in olmo_rows(plan)] == want and sum(want) == plan.updates


def test_long_user_text_is_shortened_in_error_lines():
    from hostile import assert_one_line_error, run_main

    r = run_main(["convert-schedule", "--lr", "0.1", "--batch-size", "9" * 5001, "--dataset-size", "100"])
    line = assert_one_line_error(r, ["--batch-size", "5,003 characters"])
    assert len(line) < 400
    r = run_main(["probe", "builtin:" + "a" * 100_000])
    line = assert_one_line_error(r, ["unknown builtin target", "characters"])
    assert len(line) < 400


def test_the_consoles_do_not_highlight_user_text():
    """rich's highlighter takes minutes over a 100,000-character name; the CLI's consoles never run it."""
    from bsadvisor.cli.app import console, err_console

    assert console._highlight is False and err_console._highlight is False


def test_a_loss_fn_that_never_returns_is_stopped(tmp_path, monkeypatch):
    """probe --budget-seconds 0.5 with a loss_fn that sleeps: stopped at factor × budget + grace (shortened here)."""
    import bsadvisor.cli.app as app
    from hostile import assert_one_line_error, run_main

    (tmp_path / "t.py").write_text(
        "import time\nfrom bsadvisor.targets.builtins import linreg\n\n"
        "def make():\n    t = linreg(size=256)\n    t.loss_fn = lambda m, b: time.sleep(3600)\n    return t\n")
    monkeypatch.setattr(app, "PROBE_GRACE_S", 0.5)
    monkeypatch.setattr(app, "PROBE_LIMIT_FACTOR", 2.0)
    r = run_main(["probe", "t.py:make", "--budget-seconds", "0.5"], cwd=tmp_path)
    assert_one_line_error(r, ["stopped after 1.5 s", "did not return"])


def test_fixed_draws_that_do_not_fit_the_budget_are_refused(monkeypatch):
    """--draws N with a budget that cannot hold them: one line, not minutes past the budget. The clock is faked
    (every draw past the budget), so the test does not depend on the machine's speed."""
    import bsadvisor.measure.noise as noise
    from hostile import assert_one_line_error, run_main

    real = noise.make_estimator

    def late_estimator(bench, late):
        return real(bench, lambda: [1.0, 1.0])

    monkeypatch.setattr(noise, "make_estimator", late_estimator)
    r = run_main(["probe", "builtin:linreg", "--draws", "100000", "--budget-seconds", "5"])
    assert_one_line_error(r, ["--draws 100000 cannot be taken within --budget-seconds 5", "lower --draws"])


@pytest.mark.slow
def test_validate_max_minutes_stops_with_exit_124_and_resumes(tmp_path, monkeypatch):
    """--max-minutes: the alarm fires (made immediate here), exit 124 with the resume command; resume finishes."""
    import bsadvisor.cli.app as app
    import bsadvisor.cli.validate as cv
    from hostile import run_main

    out = tmp_path / "v"
    args = ["validate", "builtin:linreg", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "3", "--out", out,
            "--no-noise-monitor", "--tolerance", "1"]
    real = app.time_limit
    seen = []

    def soon(seconds):
        seen.append(seconds)
        return real(0.3)  # stop part way

    monkeypatch.setattr(cv, "time_limit", soon)
    import bsadvisor.runtime.train as train

    slow = train.train_step

    def slow_step(*a, **k):
        time.sleep(0.01)
        return slow(*a, **k)

    monkeypatch.setattr(train, "train_step", slow_step)
    r = run_main([*args, "--max-minutes", "2"])
    assert seen == [120.0]
    assert r.returncode == 124 and r.stderr.strip().startswith("stopped after --max-minutes 2"), r.stderr
    assert "Traceback" not in r.stderr and not (out / "results.json").exists()
    monkeypatch.setattr(cv, "time_limit", real)
    monkeypatch.setattr(train, "train_step", slow)
    r = run_main([*args, "--resume"])
    assert r.returncode in (0, 1, 3), r.stderr
    assert (out / "results.json").is_file()


# -- a loaded machine ------------------------------------------------------------------------
def test_passive_wait_respects_the_users_policy():
    from bsadvisor.core.machine import passive_wait

    env = {}
    assert passive_wait(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert passive_wait(env) is False and env == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.slow
def test_the_cli_sets_the_policy_before_torch_loads():
    """A fresh interpreter: main() sets OMP_WAIT_POLICY first; torch is loaded by the training command after it."""
    import subprocess
    import sys

    from hostile import ROOT, cli_env

    code = ("import os, sys\nfrom bsadvisor.cli import main\n"
            "try:\n    main(['convert-schedule', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = cli_env()
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.stdout.split()[-2:] == ["PASSIVE", "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.stdout.split()[-2:] == ["ACTIVE", "False"], out.stderr


@pytest.mark.parametrize("threads,cores,load,policy,want", [
    (2, 2, 1.5, None, None),
    (2, 2, 2.0, None, None),
    (2, 2, 4.2, "PASSIVE", "load average 4.2 on 2 cores"),
    (2, 2, 4.2, None, "set OMP_WAIT_POLICY=PASSIVE"),
    (1, 2, 9.0, "PASSIVE", "torch uses 1 thread)"),
    (2, 2, None, None, None),
])
def test_busy_cpu_warning(threads, cores, load, policy, want):
    from bsadvisor.core.machine import busy_cpu_warning

    text = busy_cpu_warning(threads, cores, load, policy)
    assert (text is None) if want is None else (want in text and "\n" not in text)
