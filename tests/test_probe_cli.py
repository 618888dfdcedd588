"""`bsadvisor probe` through the CLI: bad targets are one line on stderr, exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bsadvisor.cli import main

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
    r = subprocess.run([sys.executable, "-m", "bsadvisor", "probe", "--help"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert "--target-rel-ci" in r.stdout and "Examples" in r.stdout
