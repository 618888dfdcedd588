"""Hostile inputs to `bsadvisor validate` and `bsadvisor demo`: one line, exit 2, nothing changed.

Each case runs the CLI's entry point in-process (tests/hostile.py). Most fail on the options
before torch is imported; the checkpoint cases resume from a crafted file and must refuse
it without running anything in it (weights_only loading) and without touching the folder.
"""
from __future__ import annotations

import fcntl
import json
import os
import pickle
from pathlib import Path

import pytest

from hostile import Snapshot, assert_one_line_error, cli_env, run_main

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


# -- the cases: (id, argv, set-up or None, fragments the error line must contain) -----------------
CASES = [
    ("tolerance-nan", [*LINREG, "--tolerance", "nan"], None, ["--tolerance", "finite"]),
    ("tolerance-inf", [*LINREG, "--tolerance", "inf"], None, ["--tolerance", "finite"]),
    ("tolerance-minus-inf", [*LINREG, "--tolerance", "-inf"], None, ["--tolerance", "finite"]),
    ("tolerance-negative", [*LINREG, "--tolerance", "-0.01"], None, ["--tolerance", "-0.01"]),
    ("seeds-zero", [*LINREG, "--seeds", "0"], None, ["--seeds", "0"]),
    ("seeds-negative", [*LINREG, "--seeds", "-3"], None, ["--seeds", "-3"]),
    ("seeds-huge", [*LINREG, "--seeds", "1000000"], None, ["--seeds", "1000"]),
    ("seeds-2**70", [*LINREG, "--seeds", str(2**70)], None, ["--seeds"]),
    ("increase-lr-nan", [*LINREG, "--increase-lr", "nan"], None, ["--increase-lr", "finite"]),
    ("increase-lr-inf", [*LINREG, "--increase-lr", "inf"], None, ["--increase-lr", "finite"]),
    ("increase-lr-zero", [*LINREG, "--increase-lr", "0"], None, ["--increase-lr", "> 1"]),
    ("increase-lr-negative", [*LINREG, "--increase-lr", "-5"], None, ["--increase-lr", "> 1"]),
    ("increase-lr-one", [*LINREG, "--increase-lr", "1"], None, ["--increase-lr", "> 1"]),
    ("increase-lr-half", [*LINREG, "--increase-lr", "0.5"], None, ["--increase-lr", "0.5"]),
    ("hybrid-cap-zero", [*LINREG, "--variants", "--hybrid-cap", "0"], None, ["--hybrid-cap", "0"]),
    ("hybrid-cap-negative", [*LINREG, "--variants", "--hybrid-cap", "-64"], None, ["--hybrid-cap", "-64"]),
    ("max-micro-batch-zero", [*LINREG, "--max-micro-batch", "0"], None, ["--max-micro-batch", "0"]),
    ("max-micro-batch-negative", [*LINREG, "--max-micro-batch", "-8"], None, ["--max-micro-batch", "-8"]),
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
