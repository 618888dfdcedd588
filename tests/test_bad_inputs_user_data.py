"""Inputs well-formed on the surface and wrong inside, each one line and exit 2, never a traceback.

Run in-process (hostile.run_main): a dataset whose ``__len__`` raises or lies, a model on the meta
device, a recipe with bad metadata, ``sys.exit(7)`` inside ``loss_fn``, an unreadable folder,
``checkpoints`` as a file, a noise trace of the wrong shape or values, checkpoint fields that are
damaged while their metadata is right, and an ``--out`` naming a file the command did not write.
"""
from __future__ import annotations

import json
import pathlib

import pytest

from hostile import Snapshot, assert_one_line_error, run_main

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
SCHED = ["--schedule", "MultiStepLR(milestones=[1], gamma=0.5)", "--epochs", "2"]


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
    extra = SCHED if command == "validate" else ["--budget-seconds", "5"]
    refused(folder, [command, f"t.py:{fn}", *extra], fragments)


@pytest.mark.parametrize("fn,fragments", [
    ("epochs_none", ["metadata['epochs'] must be a number, got None"]),
    ("epochs_text", ["metadata['epochs'] must be a number, got 'three'"]),
    ("schedule_number", ["metadata['schedule'] must be a schedule text"]),
])
def test_bad_recipe_metadata(folder, fn, fragments):
    refused(folder, ["validate", f"t.py:{fn}"], fragments)


@pytest.mark.parametrize("argv", [["probe", "t.py:exits_7", "--budget-seconds", "5"], ["validate", "t.py:exits_7", *SCHED]])
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
    refused(folder, ["validate", "t.py:ok", *SCHED, "--out", "v"], ["'checkpoints'", "another --out"])


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


#: This file's hostile inputs, for tests/test_bad_inputs_count.py (each is a parametrized case above).
CASES = ([f"{command}-{fn}" for command in ("probe", "validate") for fn in
          ("len_raises", "len_negative", "len_huge", "meta_model", "metadata_text")]
         + ["validate-epochs_none", "validate-epochs_text", "validate-schedule_number", "probe-exits_7",
            "validate-exits_7", "probe-unreadable-folder", "validate-checkpoints-a-file",
            "advise-trace-of-another-data-set"]
         + [f"trace-{case}-{opt}" for case in TRACES for opt in ("sgd", "adam")]
         + [f"checkpoint-{how}" for how in ("offset text", "offset past the epoch", "history without train_loss",
                                            "history a string", "steps samples text", "evals metric text",
                                            "totals a list", "since seen negative", "too many epochs")]
         + ["out-not-ours-convert", "out-not-ours-probe", "out-not-ours-advise", "probe-out-not-ours-advise",
            "out-probe-over-plan", "out-plan-over-probe", "out-export-over-its-input"])
