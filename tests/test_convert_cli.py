"""`bsadvisor convert-schedule` through the command line: the CLI's entry point, run in-process at
120 columns (tests/hostile.py ``run_main``), and one fresh interpreter to show the command never loads torch."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bsadvisor.core.plan import PLAN_SCHEMA, Plan
from hostile import cli_env, run_main

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["--lr", "0.1", "--batch-size", "128", "--dataset-size", "50000", "--epochs", "200", "--momentum", "0.9",
         "--schedule", "MultiStepLR(milestones=[60,120,160], gamma=0.2)"]


def cli(*args, cwd=None):
    """``bsadvisor ARGS`` in a 120-column pipe, in-process."""
    return run_main(args, cwd=cwd or ROOT, env=cli_env(COLUMNS="120"))


def run_json(*args, cwd=None) -> dict:
    r = cli("convert-schedule", *args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def stage_batches(doc):
    return [(s["start_epoch"], s["end_epoch"], s["batch_size"]) for s in doc["stages"]]


def test_cifar_proportional_json():
    doc = run_json(*PAPER, "--rule", "proportional", "--max-fraction", "1")
    assert doc["schema"] == PLAN_SCHEMA
    assert stage_batches(doc) == [(0, 60, 128), (60, 120, 640), (120, 160, 3200), (160, 200, 16000)]
    assert doc["plan"]["updates"] == 29_000 and doc["baseline"]["updates"] == 78_200
    assert [s["updates"] for s in doc["stages"]] == [60 * 391, 60 * 79, 40 * 16, 40 * 4]
    assert math.isclose(doc["plan"]["update_ratio"], 78_200 / 29_000)
    assert all(math.isclose(s["lr"], 0.1, rel_tol=1e-12) for s in doc["stages"])


def test_cifar_exact_json_and_hybrid():
    n, b0 = 50_000, 128
    doc = run_json(*PAPER, "--max-fraction", "1")
    assert [s["batch_size"] for s in doc["stages"]] == [round(n / (1 + (n / b0 - 1) * 0.2 ** k)) for k in range(4)]
    assert doc["stages"][-1]["batch_size"] == 12_145
    capped = run_json(*PAPER, "--max-batch", "2000", "--max-fraction", "1")
    assert capped["cap"]["batch_size"] == 2000 and capped["cap"]["limited_by"] == "device"
    for s, rho in zip(capped["stages"][2:], (0.04, 0.008)):
        assert s["batch_size"] == 2000 and s["phase"] == "hybrid"
        assert math.isclose(s["lr"], 0.1 * rho * (n / b0 - 1) / (n / 2000 - 1), rel_tol=1e-12)


def test_variants_cli():
    big = ["--dataset-size", "10000000", "--rule", "proportional"]
    doc = run_json(*PAPER, *big, "--increase-lr", "5")
    assert [s["batch_size"] for s in doc["stages"]] == [640, 3200, 16000, 80000]
    assert all(math.isclose(s["lr"], 0.5, rel_tol=1e-12) for s in doc["stages"])
    doc = run_json(*PAPER, *big, "--momentum-to", "0.95")
    assert [s["batch_size"] for s in doc["stages"]] == [256, 1280, 6400, 32000]
    assert {s["momentum"] for s in doc["stages"]} == {0.95}
    adam = ["--lr", "0.001", "--batch-size", "32", "--epochs", "30", "--optimizer", "adam",
            "--schedule", "MultiStepLR([10, 20], 0.5)", *big]
    doc = run_json(*adam, "--adam-rule", "sqrt")
    assert [s["batch_size"] for s in doc["stages"]] == [32, 128, 512]  # α = ½ ⇒ B × 4 (square-root rule)
    doc = run_json(*adam)
    assert [s["batch_size"] for s in doc["stages"]] == [32, 64, 128]  # α = ½ ⇒ B × 2 (linear rule, the default)


def test_schedule_unit_step_cli():
    spe = math.ceil(50_000 / 128)
    doc = run_json("--lr", "0.1", "--batch-size", "128", "--dataset-size", "50000", "--epochs", "200",
                   "--momentum", "0.9", "--rule", "proportional", "--max-fraction", "1", "--schedule-unit", "step",
                   "--schedule", f"MultiStepLR(milestones=[{60 * spe}, {120 * spe}], gamma=0.2)")
    assert stage_batches(doc) == [(0, 60, 128), (60, 120, 640), (120, 200, 3200)]


def test_csv_table_and_toml_config(tmp_path):
    (tmp_path / "lr.csv").write_text("epoch,lr,momentum\n0,0.1,0.9\n60,0.02,0.9\n120,0.004,0.95\n")
    (tmp_path / "run.toml").write_text('batch-size = 128\ndataset_size = 10000000\nepochs = 200\n'
                                       'rule = "proportional"\nround-to = 1\n')
    doc = run_json("--config", "run.toml", "--schedule", "lr.csv", cwd=tmp_path)
    # the table's momentum is followed (0.95 in the last rows), so the batch carries the LR's decay: ×5, ×25
    assert [s["batch_size"] for s in doc["stages"]] == [128, 640, 3200]
    assert [s["momentum"] for s in doc["stages"]] == [0.9, 0.9, 0.95]
    assert doc["inputs"]["lr"] == 0.1 and doc["inputs"]["rule"] == "proportional"
    # the command line wins over the config file
    doc = run_json("--config", "run.toml", "--schedule", "lr.csv", "--batch-size", "256", cwd=tmp_path)
    assert [s["batch_size"] for s in doc["stages"]] == [256, 1280, 6400]
    assert doc["inputs"]["batch_size"] == 256


def test_round_to_and_max_stages_cli():
    doc = run_json(*PAPER, "--max-fraction", "1", "--round-to", "8")
    assert [s["batch_size"] for s in doc["stages"]] == [128, 632, 3016, 12144]
    doc = run_json("--lr", "0.4", "--batch-size", "256", "--dataset-size", "1281167", "--epochs", "90",
                   "--momentum", "0.9", "--max-batch", "16384", "--max-stages", "3", "--round-to", "64",
                   "--schedule", "SequentialLR([LinearLR(start_factor=0.1, total_iters=5), "
                                 "CosineAnnealingLR(T_max=85)], milestones=[5])")
    sizes = {s["batch_size"] for s in doc["stages"]}
    assert 2 <= len(sizes) <= 3 and all(b % 64 == 0 for b in sizes)
    assert all(s["batch_size"] == 256 for s in doc["stages"] if s["start_epoch"] < 5)


def test_out_writes_valid_json_and_failures_leave_it(tmp_path):
    out = tmp_path / "plan.json"
    r = cli("convert-schedule", *PAPER, "--out", out)
    assert r.returncode == 0, r.stderr
    plan = Plan.load(out)
    assert [s.batch_size for s in plan.stages] == [128, 634, 3015, 5000]
    before = out.read_bytes()
    bad = cli("convert-schedule", *PAPER[:-2], "--schedule", "MultiStepLR(milestones=[60,120,260])", "--out", out)
    assert bad.returncode == 2 and "260" in bad.stderr
    bad = cli("convert-schedule", *PAPER, "--lr", "nan", "--out", out)
    assert bad.returncode == 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]  # no temporary files left behind
    # --json and --out together: the same document
    both = cli("convert-schedule", *PAPER, "--out", out, "--json")
    assert json.loads(both.stdout) == json.loads(out.read_text())


def test_table_report_mentions_totals():
    r = cli("convert-schedule", *PAPER, "--rule", "proportional", "--max-fraction", "1")
    assert r.returncode == 0, r.stderr
    assert "29,000" in r.stdout and "78,200" in r.stdout and "16,000" in r.stdout


def test_help_lists_every_option():
    r = cli("convert-schedule", "--help")
    assert r.returncode == 0
    for opt in ("--lr", "--batch-size", "--dataset-size", "--epochs", "--momentum", "--schedule", "--schedule-unit",
                "--optimizer", "--rule", "--max-batch", "--max-fraction", "--round-to", "--max-stages",
                "--stage-factor", "--increase-lr", "--momentum-to", "--adam-rule", "--config", "--json", "--out"):
        assert opt in r.stdout, opt


def test_no_torch_on_the_convert_path():
    code = ("import sys\n"
            "import bsadvisor.cli as cli\n"
            "assert 'torch' not in sys.modules, 'import bsadvisor.cli pulled in torch'\n"
            "try:\n"
            f"    cli.main(['convert-schedule', *{PAPER!r}, '--json'])\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["updates"] > 0
    assert "TORCH False" in r.stderr
