"""Hostile inputs to `bsadvisor probe`: each is exit 2, one `error:` line, no traceback,
nothing in the folder changed or half-written.

Option values are refused before torch is imported (cheap); the target cases (a user's code that
fails after warmup: in a memory trial, on the throughput ladder, in backward, out of memory, BatchNorm
at batch 1 under a tiny --memory-limit) run the real probe on a small linear-regression target.
"""
from __future__ import annotations

import pytest

from hostile import Snapshot, assert_one_line_error, cli_env, run_main

# Targets whose code fails in one phase only. linreg(size=2048): batch 64, micro-batches of 8;
# memory trials at 64, 1024, 2048; throughput rungs 16, 64, 256, ..., 32, 128, ...
TARGETS = '''
import torch
from bsadvisor.targets.builtins import linreg


def _with(wrap):
    t = linreg(size=2048)
    t.loss_fn = wrap(t.loss_fn)
    return t


class _Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward exploded")


def raises_at_big_batch():
    def wrap(inner):
        def loss(m, b):
            if len(b[1]) > 64:
                raise RuntimeError("batch too large for my loss")
            return inner(m, b)
        return loss
    return _with(wrap)


def raises_on_ladder():
    def wrap(inner):
        def loss(m, b):
            if len(b[1]) == 16:  # only the throughput ladder uses batch 16
                raise ValueError("no batches of 16")
            return inner(m, b)
        return loss
    return _with(wrap)


def backward_raises_at_big_batch():
    def wrap(inner):
        def loss(m, b):
            out = inner(m, b)
            return _Boom.apply(out) if len(b[1]) > 64 else out
        return loss
    return _with(wrap)


def backward_raises():
    return _with(lambda inner: (lambda m, b: _Boom.apply(inner(m, b))))


def cpu_oom_always():
    def wrap(inner):
        def loss(m, b):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 123456789 bytes. Error code 12")
        return loss
    return _with(wrap)


def touches():
    """Leaves a file behind when loaded: a refusal that comes before the target is built leaves none."""
    open(__file__ + ".loaded", "w").close()
    return linreg(size=2048)


def batchnorm():
    t = linreg(size=2048)
    t.model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                                  torch.nn.Linear(8, 1)).double()
    return t
'''

Q = ["--budget-seconds", "2"]  # keeps the target cases short
# (id, arguments after `probe`, fragments the error line must contain)
CASES = [
    # --seed
    ("seed-2**70", ["builtin:linreg", "--seed", str(2**70)], ["--seed"]),
    ("seed-2**63", ["builtin:linreg", "--seed", str(2**63)], ["--seed"]),
    ("seed-negative", ["builtin:linreg", "--seed", "-1"], ["--seed"]),
    ("seed-float", ["builtin:linreg", "--seed", "1.5"], ["--seed"]),
    # --budget-seconds
    ("budget-inf", ["builtin:linreg", "--budget-seconds", "inf"], ["--budget-seconds"]),
    ("budget-nan", ["builtin:linreg", "--budget-seconds", "nan"], ["--budget-seconds"]),
    ("budget-zero", ["builtin:linreg", "--budget-seconds", "0"], ["--budget-seconds"]),
    ("budget-negative", ["builtin:linreg", "--budget-seconds", "-5"], ["--budget-seconds"]),
    ("budget-1e400", ["builtin:linreg", "--budget-seconds", "1e400"], ["--budget-seconds"]),
    # --warmup-steps
    ("warmup-1e12", ["builtin:linreg", "--warmup-steps", "1e12"], ["--warmup-steps"]),
    ("warmup-2**70", ["builtin:linreg", "--warmup-steps", str(2**70)], ["--warmup-steps"]),
    ("warmup-negative", ["builtin:linreg", "--warmup-steps", "-1"], ["--warmup-steps"]),
    # --memory-limit
    ("memory-half-byte", ["builtin:linreg", "--memory-limit", "0.5B"], ["--memory-limit", "below one byte"]),
    ("memory-nano-kb", ["builtin:linreg", "--memory-limit", "1e-9KB"], ["--memory-limit", "below one byte"]),
    ("memory-zero", ["builtin:linreg", "--memory-limit", "0"], ["--memory-limit"]),
    ("memory-negative", ["builtin:linreg", "--memory-limit", "-1GB"], ["--memory-limit"]),
    ("memory-nan", ["builtin:linreg", "--memory-limit", "nan"], ["--memory-limit"]),
    ("memory-inf", ["builtin:linreg", "--memory-limit", "inf"], ["--memory-limit"]),
    ("memory-1e400", ["builtin:linreg", "--memory-limit", "1e400"], ["--memory-limit", "larger than any"]),
    ("memory-1e30TB", ["builtin:linreg", "--memory-limit", "1e30TB"], ["--memory-limit", "larger than any"]),
    ("memory-5000-digits", ["builtin:linreg", "--memory-limit", "9" * 5000], ["--memory-limit"]),
    ("memory-words", ["builtin:linreg", "--memory-limit", "lots"], ["--memory-limit"]),
    # --target-rel-ci, --lr, --batch-size, --draws, --estimator
    ("rel-ci-nan", ["builtin:linreg", "--target-rel-ci", "nan"], ["--target-rel-ci"]),
    ("rel-ci-zero", ["builtin:linreg", "--target-rel-ci", "0"], ["--target-rel-ci"]),
    ("rel-ci-above-1", ["builtin:linreg", "--target-rel-ci", "1.5"], ["--target-rel-ci"]),
    ("lr-zero", ["builtin:linreg", "--lr", "0"], ["--lr"]),
    ("lr-nan", ["builtin:linreg", "--lr", "nan"], ["--lr"]),
    ("lr-inf", ["builtin:linreg", "--lr", "inf"], ["--lr"]),
    ("batch-zero", ["builtin:linreg", "--batch-size", "0"], ["--batch-size"]),
    ("batch-one", ["builtin:linreg", "--batch-size", "1"], ["--batch-size"]),
    ("draws-one", ["builtin:linreg", "--draws", "1"], ["--draws"]),
    ("draws-huge", ["builtin:linreg", "--draws", str(10**9)], ["--draws"]),
    ("draws-word", ["builtin:linreg", "--draws", "many"], ["--draws"]),
    ("estimator-unknown", ["builtin:linreg", "--estimator", "magic"], ["--estimator"]),
    # --out: refused before the target is even built (`touches` would leave a file behind)
    ("out-is-folder", ["{tmp}/t.py:touches", "--out", "{tmp}/existing"], ["is a folder", "--out"]),
    ("out-missing-folder", ["{tmp}/t.py:touches", "--out", "{tmp}/nowhere/probe.json"], ["does not exist", "--out"]),
    # the user's code fails after warmup (or in it): one line, the step named
    ("loss-raises-in-memory-trial", ["{tmp}/t.py:raises_at_big_batch", *Q],
     ["memory trial at batch", "batch too large for my loss"]),
    ("loss-raises-on-ladder", ["{tmp}/t.py:raises_on_ladder", *Q], ["throughput step at batch 16", "no batches"]),
    ("backward-raises-in-memory-trial", ["{tmp}/t.py:backward_raises_at_big_batch", *Q],
     ["backward raised", "memory trial", "backward exploded"]),
    ("backward-raises-in-warmup", ["{tmp}/t.py:backward_raises", *Q], ["backward raised", "warmup step 1"]),
    ("cpu-out-of-memory-in-warmup", ["{tmp}/t.py:cpu_oom_always", *Q], ["ran out of memory at warmup step 1"]),
    ("batchnorm-batch-1-tiny-memory-limit", ["{tmp}/t.py:batchnorm", *Q, "--memory-limit", "2KB"],
     ["does not fit", "raise --memory-limit"]),
    ("huge-warmup-with-draws", ["builtin:linreg", "--warmup-steps", str(10**12), "--draws", "4",
                                "--budget-seconds", "1"], ["warmup", "--draws"]),
]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("mine\n")
    (tmp_path / "t.py").write_text(TARGETS)
    return tmp_path


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_probe_input(case, folder):
    _, args, fragments = case
    argv = ["probe", *(a.replace("{tmp}", str(folder)) for a in args)]
    snap = Snapshot(folder)
    r = run_main(argv, cwd=folder, env=cli_env(BSADVISOR_CACHE=str(folder / "cache")))
    assert_one_line_error(r, fragments)
    snap.assert_unchanged()
