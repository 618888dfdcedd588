"""`bsadvisor probe` through the CLI: bad targets are one line on stderr, exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bsadvisor.cli import main
from hostile import Snapshot, assert_one_line_error, cli_env, refusals, run_main

ROOT = Path(__file__).resolve().parents[1]

HEADER = "import torch\nfrom torch import nn\nfrom bsadvisor import Target\n"
GOOD_DATA = "ds = torch.utils.data.TensorDataset(torch.randn(64, 3), torch.randn(64))\n"
BAD_TARGETS = {
    "raises": ("def make():\n    raise RuntimeError('broken setup')\n", "raised RuntimeError"),
    "wrong_type": ("def make():\n    return 42\n", "not a bsadvisor.Target"),
    "no_params": (GOOD_DATA + "def make():\n    return Target(model=nn.ReLU(), train_dataset=ds, "
                  "loss_fn=lambda m, b: m(b[0]).mean(), batch_size=8, lr=0.1)\n", "no trainable parameters"),
    "empty": ("def make():\n    ds = torch.utils.data.TensorDataset(torch.randn(0, 3), torch.randn(0))\n"
              "    return Target(model=nn.Linear(3, 1), train_dataset=ds, loss_fn=lambda m, b: m(b[0]).mean(), "
              "batch_size=8, lr=0.1)\n", "empty"),
    "not_scalar": (GOOD_DATA + "def make():\n    return Target(model=nn.Linear(3, 1), train_dataset=ds, "
                   "loss_fn=lambda m, b: (m(b[0]).squeeze(-1) - b[1]) ** 2, batch_size=8, lr=0.1)\n", "not a scalar"),
    "nan_loss": (GOOD_DATA + "def make():\n    return Target(model=nn.Linear(3, 1), train_dataset=ds, "
                 "loss_fn=lambda m, b: m(b[0]).mean() * float('nan'), batch_size=8, lr=0.1)\n",
                 "not finite .* warmup step 1"),
}


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("name", sorted(BAD_TARGETS))
def test_bad_target_one_line_exit_2(name, tmp_path, capsys):
    body, pattern = BAD_TARGETS[name]
    f = tmp_path / f"{name}.py"
    f.write_text(HEADER + body)
    code, out, err = run_cli(["probe", f"{f}:make", "--budget-seconds", "2"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("spec,pattern", [("nowhere/missing.py:make", "not found"),
                                          (f"{ROOT / 'docs/examples/my_target.py'}:nope", "no function 'nope'"),
                                          ("builtin:nope", "unknown builtin")])
def test_missing_file_or_function(spec, pattern, capsys):
    code, out, err = run_cli(["probe", spec], capsys)
    assert code == 2 and pattern in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,pattern", [(["--memory-limit", "lots"], "--memory-limit"),
                                          (["--estimator", "magic"], "--estimator"),
                                          (["--device", "tpu"], "--device")])
def test_bad_options(args, pattern, capsys):
    code, out, err = run_cli(["probe", "builtin:linreg", *args], capsys)
    assert code == 2 and pattern in err and len(err.strip().splitlines()) == 1


def test_json_and_out(tmp_path, capsys):
    out_path = tmp_path / "probe.json"
    code, out, err = run_cli(["probe", "builtin:linreg", "--json", "--out", str(out_path), "--budget-seconds", "3",
                              "--warmup-steps", "0", "--seed", "4"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc == json.loads(out_path.read_text())
    assert doc["schema"] == "bsadvisor.probe/1" and doc["settings"]["seed"] == 4
    lo, hi = doc["noise"]["ci90"]
    assert lo < doc["noise"]["b_simple"] < hi
    assert err == ""  # no progress bar with --json


@pytest.mark.slow
def test_summary_subprocess_and_no_torch_at_import(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", "import sys, bsadvisor.cli; print('torch' in sys.modules)"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.stdout.strip() == "False"
    r = subprocess.run([sys.executable, "-m", "bsadvisor", "probe", f"{ROOT / 'docs/examples/my_target.py'}:make_target",
                        "--budget-seconds", "3", "--memory-limit", "500MB"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "B_simple" in r.stdout and "Memory cap" in r.stdout and "Throughput" in r.stdout
    assert "…" not in r.stdout  # piped: nothing cut
    r = subprocess.run([sys.executable, "-m", "bsadvisor", "probe", "--help"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert "--target-rel-ci" in r.stdout and "Examples" in r.stdout


# --------------------------------------------------------------------------- --draws
@pytest.mark.slow
def test_draws_give_the_same_b_simple_twice(capsys):
    docs = []
    for _ in range(2):
        code, out, err = run_cli(["probe", "builtin:linreg", "--json", "--draws", "6", "--seed", "3",
                                  "--budget-seconds", "2"], capsys)
        assert code == 0, err
        docs.append(json.loads(out))
    a, b = (d["noise"] for d in docs)
    assert a["draws"] == b["draws"] == 6 and docs[0]["settings"]["draws"] == 6
    assert a["b_simple"] == b["b_simple"] and a["ci90"] == b["ci90"]


@pytest.mark.slow
def test_fresh_cache_probe(tmp_path):
    """On a fresh machine (empty cache) generating MNIST-1D is not charged to --budget-seconds."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BSADVISOR_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "bsadvisor", "probe", "builtin:mnist1d-mlp", "--device", "cpu",
                        "--budget-seconds", "4", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bsadvisor.probe/1" and doc["target"] == "builtin:mnist1d-mlp"
    assert doc["noise"]["draws"] >= 2 and doc["noise"]["b_simple"] > 0
    assert doc["memory"]["max_batch"] >= 32 and len(doc["throughput"]) >= 2
    assert isinstance(doc["warnings"], list)
    assert list(cache.glob("mnist1d-*.npz"))  # the data set was generated into the fresh cache


def _extreme_result():
    from bsadvisor.core.probe_result import MemoryResult, NoiseResult, ProbeResult, ProbeSettings, ThroughputPoint

    noise = NoiseResult(b_simple=123456.789, ci90=(98765.4321, 234567.891), trace_sigma=1.23456e-7,
                        grad_sq_norm=9.87654e-12, examples=123456789, draws=99999, micro_batch=131072,
                        big_batch=1048576, relative_noise=0.3432,
                        sqrt_table=[{"batch_size": 1048576 * 2**i, "std_vs_B": 2 ** (-i / 2),
                                     "relative_noise": 0.3432 * 2 ** (-i / 2)} for i in range(6)], seconds=1234.5)
    mem = MemoryResult(max_batch=987654321, bytes_per_sample=123456.0, fixed_bytes=9.87e12, trials=8,
                       limit_bytes=1.2e15, headroom=0.1, peak_bytes=1e15, limited_by="memory")
    points = [ThroughputPoint(2**i, 1234567890.123 / (i + 1), 1234.5 / (i + 1), repeats=3, spread=0.123)
              for i in range(10, 31, 2)]
    settings = ProbeSettings(lr=0.000123456789, momentum=0.999, batch_size=1048576, dataset_size=1234567890123,
                             device="cuda:7", optimizer="adamw", estimator="microbatch", seed=2**62,
                             warmup_steps=123456789, budget_seconds=1e6, draws=None)
    return ProbeResult(noise=noise, memory=mem, throughput=points, settings=settings, temperature=12345.678,
                       throughput_knee=2**20, target="[/x]my [bold]model[/bold] [link=x]",
                       warnings=["a warning with [/x] markup in it", "second"])


def test_summary_fits_80_columns_with_every_number_whole():
    from io import StringIO

    from rich.console import Console

    from bsadvisor.cli.probe import _summary
    from bsadvisor.core.memory import format_bytes

    r = _extreme_result()
    buf = StringIO()
    # a short --out path (only printed): a temporary folder's long name would wrap it at 80 columns
    _summary(r, format_bytes, Path("probes") / "[/x]out.json", con=Console(width=80, file=buf))
    text = buf.getvalue()
    assert "…" not in text and "..." not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "[/x]my [bold]model[/bold] [link=x]" in text  # the user's name, escaped, not interpreted
    assert "warning: a warning with [/x] markup in it" in text and "[/x]out.json" in text
    for p in r.throughput:  # every rung with its whole number of examples/s
        assert f"{p.examples_per_s:,.0f}" in text
    for row in r.noise.sqrt_table:
        assert f"{row['relative_noise']:.3f}" in text and str(row["batch_size"]) in text
    assert "987654321" in text and "123,456,789" not in text.replace(str(r.noise.examples), "")
    table = text[text.index("Throughput"):]
    header = table.splitlines()[1]
    assert header.split() == ["batch", "┃", "examples/s", "┃", "step", "┃", "spread"]  # every column labelled
    assert "time budget: B_simple varies between runs" in " ".join(text.split())


@pytest.mark.slow
def test_piped_summary_of_a_target_named_with_markup(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("from bsadvisor.targets.builtins import linreg\n\ndef make():\n    t = linreg(size=2048)\n"
                 "    t.name = '[/x]mine[bold]'\n    return t\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "bsadvisor", "probe", f"{f}:make", "--budget-seconds", "2",
                        "--draws", "4", "--out", str(tmp_path / "p.json")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[/x]mine[bold]" in r.stdout and "…" not in r.stdout
    assert "4 draws fixed by --draws" in " ".join(r.stdout.split())
    assert json.loads((tmp_path / "p.json").read_text())["target"] == "[/x]mine[bold]"


# ---- hostile inputs to probe ----------------------------------------------------------------------
# Hostile inputs to `bsadvisor probe`: each is exit 2, one `error:` line, no traceback,
# nothing in the folder changed or half-written.
#
# Option values are refused before torch is imported (cheap); the target cases (a user's code that
# fails after warmup: in a memory trial, on the throughput ladder, in backward, out of memory, BatchNorm
# at batch 1 under a tiny --memory-limit) run the real probe on a small linear-regression target.

# Targets whose code fails in one phase only. linreg(size=2048): batch 64, micro-batches of 8;
# memory trials at 64, 1024, 2048; throughput rungs 16, 64, 256, ..., 32, 128, ...
TARGETS = '''
import sys

sys.path.insert(0, {tests!r})  # the probe tests' failing losses (tests/failing_loss.py)

import torch
from bsadvisor.targets.builtins import linreg
from failing_loss import CPU_OOM, backward_raises, fails_over, raising


def _with(wrap):
    t = linreg(size=2048)
    t.loss_fn = wrap(t.loss_fn)
    return t


def raises_at_big_batch():
    return _with(fails_over(64, raising(RuntimeError("batch too large for my loss"))))


def raises_on_ladder():
    def wrap(inner):
        def loss(m, b):
            if len(b[1]) == 16:  # only the throughput ladder uses batch 16
                raise ValueError("no batches of 16")
            return inner(m, b)
        return loss
    return _with(wrap)


def backward_raises_at_big_batch():
    return _with(fails_over(64, backward_raises))


def backward_raises_always():
    return _with(fails_over(0, backward_raises))


def cpu_oom_always():
    return _with(fails_over(0, raising(CPU_OOM)))


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


def refused(flag: str, *cases: tuple, prefix=None) -> list[tuple]:
    """Rows for bad values of one flag on builtin:linreg (hostile.refusals)."""
    return refusals(flag, ["builtin:linreg"], cases, prefix)

# (id, arguments after `probe`, fragments the error line must contain)
CASES = [
    *refused("--seed", ("2**70", str(2**70)), ("2**63", str(2**63)), ("negative", "-1"), ("float", "1.5")),
    *refused("--budget-seconds", ("inf", "inf"), ("nan", "nan"), ("zero", "0"), ("negative", "-5"),
             ("1e400", "1e400"), prefix="budget"),
    *refused("--warmup-steps", ("1e12", "1e12"), ("2**70", str(2**70)), ("negative", "-1"), prefix="warmup"),
    *refused("--memory-limit", ("half-byte", "0.5B", "below one byte"), ("nano-kb", "1e-9KB", "below one byte"),
             ("zero", "0"), ("negative", "-1GB"), ("nan", "nan"), ("inf", "inf"), ("1e400", "1e400", "larger than any"),
             ("1e30TB", "1e30TB", "larger than any"), ("5000-digits", "9" * 5000), ("words", "lots"), prefix="memory"),
    *refused("--target-rel-ci", ("nan", "nan"), ("zero", "0"), ("above-1", "1.5"), prefix="rel-ci"),
    *refused("--lr", ("zero", "0"), ("nan", "nan"), ("inf", "inf")),
    *refused("--batch-size", ("zero", "0"), ("one", "1"), prefix="batch"),
    *refused("--draws", ("one", "1"), ("huge", str(10**9)), ("word", "many")),
    *refused("--estimator", ("unknown", "magic")),
    # --out: refused before the target is even built (`touches` would leave a file behind)
    ("out-is-folder", ["{tmp}/t.py:touches", "--out", "{tmp}/existing"], ["is a folder", "--out"]),
    ("out-missing-folder", ["{tmp}/t.py:touches", "--out", "{tmp}/nowhere/probe.json"], ["does not exist", "--out"]),
    # the user's code fails after warmup (or in it): one line, the step named
    ("loss-raises-in-memory-trial", ["{tmp}/t.py:raises_at_big_batch", *Q],
     ["memory trial at batch", "batch too large for my loss"]),
    ("loss-raises-on-ladder", ["{tmp}/t.py:raises_on_ladder", *Q], ["throughput step at batch 16", "no batches"]),
    ("backward-raises-in-memory-trial", ["{tmp}/t.py:backward_raises_at_big_batch", *Q],
     ["backward raised", "memory trial", "backward exploded"]),
    ("backward-raises-in-warmup", ["{tmp}/t.py:backward_raises_always", *Q], ["backward raised", "warmup step 1"]),
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
    (tmp_path / "t.py").write_text(TARGETS.replace("{tests!r}", repr(str(Path(__file__).parent))))
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
