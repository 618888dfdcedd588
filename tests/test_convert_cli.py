"""`bsadvisor convert-schedule` through the command line: the CLI's entry point, run in-process at
120 columns (tests/hostile.py ``run_main``), and one fresh interpreter to show the command never loads torch."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.plan import PLAN_SCHEMA, Plan
from hostile import Snapshot, assert_one_line_error, cli_env, run_main

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
            "--schedule", "MultiStepLR([10, 20], 0.5)", "--max-growth", "0", *big]
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


# ---- hostile files and schedule strings -----------------------------------------------------------
# Hostile files and schedule strings through the CLI's entry point (in-process, tests/hostile.py).
#
# Plan files go through ``bsadvisor export PLAN`` (it only reads the plan), probe files
# through ``convert-schedule --probe``, TOML through ``convert-schedule --config``, and
# schedule strings and CSV tables through ``convert-schedule --schedule``. Every case:
# exit 2, one ``error:`` line naming the problem, no traceback, and the folder the command
# ran in (holding its input files and the ``--out`` it was given) unchanged.

HOSTILE_PAPER = "MultiStepLR(milestones=[60,120,160], gamma=0.2)"
BASE = ["--lr", "0.1", "--batch-size", "128", "--dataset-size", "50000", "--epochs", "200", "--momentum", "0.9"]
PLAN = convert_schedule(lr=0.1, batch_size=128, dataset_size=50_000, epochs=200, momentum=0.9,
                        schedule=HOSTILE_PAPER).to_dict()
PROBE = {
    "schema": "bsadvisor.probe/1", "target": "test",
    "noise": {"b_simple": 400.0, "ci90": [360.0, 440.0], "trace_sigma": 4.0, "grad_sq_norm": 0.01,
              "examples": 10000},
    "memory": {"max_batch": 256, "bytes_per_sample": 1e5, "fixed_bytes": 1e7, "trials": 3},
    "throughput": [{"batch_size": b, "examples_per_s": r} for b, r in [(32, 1e4), (128, 3e4), (512, 4e4)]],
    "settings": {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "dataset_size": 32000, "device": "cpu",
                 "optimizer": "sgd", "estimator": "microbatch", "seed": 0},
}


def mutated(doc: dict, change) -> str:
    d = copy.deepcopy(doc)
    change(d)
    return json.dumps(d)


def plan_with(change) -> str:
    return mutated(PLAN, change)


def probe_with(change) -> str:
    return mutated(PROBE, change)


def _set(path: str, value):
    """A change that sets ``doc[a][b]...`` (ints index lists)."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


def _trillion(d):
    d["stages"][-1]["end_sample"] = 10**12 * 50_000
    d["epochs"] = d["inputs"]["epochs"] = 10**12
    d.pop("total_samples")


# a bsadvisor.plan/1 document (epochs) with a gap: /1 files still load, and are still checked
V1_GAP = {"schema": "bsadvisor.plan/1", "epochs": 200, "total_samples": None,
          "stages": [{"start_epoch": 0, "end_epoch": 60, "batch_size": 128, "lr": 0.1, "momentum": 0.9},
                     {"start_epoch": 61, "end_epoch": 200, "batch_size": 640, "lr": 0.1, "momentum": 0.9}]}
DEEP_JSON = "[" * 100_000 + "]" * 100_000
BIG_INT = "9" * 5000
MINUS_600 = "-" * 600 + "1"


def export(files: dict, fragments: list[str]):
    return (["export", "plan.json"], files, fragments)


def plan_case(change, fragments):
    return export({"plan.json": plan_with(change)}, ["plan file", *fragments])


def probe_case(change, fragments):
    return (["convert-schedule", "--probe", "probe.json", "--epochs", "10", "--schedule",
             "MultiStepLR(milestones=[3,6,8], gamma=0.2)", "--out", "out.json"],
            {"probe.json": probe_with(change)}, ["probe file", *fragments])


def schedule_case(schedule: str, fragments, *extra: str):
    return (["convert-schedule", *BASE, "--schedule", schedule, *extra, "--out", "out.json"], {}, fragments)


def config_case(body, fragments, *extra: str):
    argv = ["convert-schedule", *BASE, "--schedule", HOSTILE_PAPER, "--config", "run.toml", *extra, "--out", "out.json"]
    return (argv, {"run.toml": body}, fragments)


def table_case(body, fragments):
    return (["convert-schedule", *BASE, "--schedule", "lr.csv", "--out", "out.json"], {"lr.csv": body}, fragments)


# (id, (argv, {file name: content}, fragments the one error line must contain))
CASES = [
    # ------------------------------------------------------------------ plan files (bsadvisor.plan/1)
    ("plan-inputs-string", plan_case(_set("inputs", "x"), ["inputs must be an object"])),
    ("plan-batch-text", plan_case(_set("stages.2.batch_size", "big"),
                                  ["stages[2].batch_size must be a whole number ≥ 1", "'big'", "regenerate"])),
    ("plan-batch-zero", plan_case(_set("stages.2.batch_size", 0), ["stages[2].batch_size", "got 0"])),
    ("plan-batch-fraction", plan_case(_set("stages.1.batch_size", 12.5), ["stages[1].batch_size", "12.5"])),
    ("plan-batch-bool", plan_case(_set("stages.1.batch_size", True), ["stages[1].batch_size", "true"])),
    ("plan-batch-over-n", plan_case(_set("stages.3.batch_size", 60000), ["stages[3].batch_size", "larger than"])),
    ("plan-batch-2**70", plan_case(_set("stages.3.batch_size", 2**70), ["stages[3].batch_size", "2**63"])),
    ("plan-lr-null", plan_case(_set("stages.0.lr", None), ["stages[0].lr", "null"])),
    ("plan-lr-negative", plan_case(_set("stages.0.lr", -0.1), ["stages[0].lr", "≥ 0"])),
    ("plan-lr-text", plan_case(_set("stages.0.lr", "0.1"), ["stages[0].lr", "'0.1'"])),
    ("plan-lr-missing", plan_case(lambda d: d["stages"][0].pop("lr"), ["stages[0].lr is missing"])),
    ("plan-momentum-one", plan_case(_set("stages.0.momentum", 1.0), ["stages[0].momentum", "< 1"])),
    ("plan-start-negative", plan_case(_set("stages.0.start_sample", -5), ["stages[0].start_sample"])),
    ("plan-gap", plan_case(_set("stages.1.start_sample", 3_000_001), ["stages[1]", "must start at 3000000"])),
    ("plan-empty-stage", plan_case(_set("stages.0.end_sample", 0), ["stages[0]"])),
    ("plan-total-disagree", plan_case(_set("total_samples", 7), ["total_samples is 7", "10000000"])),
    ("plan-v1-gap", plan_case(lambda d: d.update(V1_GAP), ["stages[1]", "must start at 60"])),
    ("plan-epochs-disagree", plan_case(_set("epochs", 300), ["epochs is 300", "200"])),
    ("plan-inputs-epochs-disagree", plan_case(_set("inputs.epochs", 100), ["inputs.epochs is 100"])),
    ("plan-inputs-n-disagree", plan_case(_set("inputs.dataset_size", 100), ["inputs.dataset_size is 100"])),
    ("plan-inputs-b0-over-n", plan_case(_set("inputs.batch_size", 10**6), ["inputs.batch_size"])),
    ("plan-inputs-lr-text", plan_case(_set("inputs.lr", "fast"), ["inputs.lr"])),
    ("plan-trillion-epochs", plan_case(_trillion, ["50000000000000000", "1,000,000 epochs"])),
    ("plan-stages-empty", plan_case(_set("stages", []), ["stages is empty"])),
    ("plan-stages-object", plan_case(_set("stages", {}), ["stages must be a list"])),
    ("plan-stage-number", plan_case(_set("stages", [1]), ["stages[0] must be an object"])),
    ("plan-warnings-numbers", plan_case(_set("warnings", [1, 2]), ["warnings[0] must be text"])),
    ("plan-phase-unknown", plan_case(_set("stages.0.phase", "party"), ["stages[0].phase", "'party'"])),
    ("plan-stage-extra-list", plan_case(_set("stages.0.note", [[1]]), ["stages[0].note"])),
    ("plan-probe-deep", plan_case(_set("probe", [[[[[[1]]]]]]), ["probe is nested"])),
    ("plan-cap-without-batch", plan_case(_set("cap", {"limited_by": "device"}), ["cap.batch_size is missing"])),
    ("plan-dataset-size-text", plan_case(_set("dataset_size", "many"), ["dataset_size", "'many'"])),
    ("plan-wrong-schema", plan_case(_set("schema", "bsadvisor.plan/0"), ["schema", "bsadvisor.plan/1"])),
    ("plan-no-schema", plan_case(lambda d: d.pop("schema"), ["no 'schema' field"])),
    ("plan-nested-100k", export({"plan.json": DEEP_JSON}, ["plan.json", "nested too deeply"])),
    ("plan-5000-digits", export({"plan.json": '{"schema": "bsadvisor.plan/1", "dataset_size": ' + BIG_INT + "}"},
                                ["integer of 5000 digits"])),
    ("plan-nan-literal", export({"plan.json": plan_with(lambda d: None).replace('"lr": 0.1', '"lr": NaN', 1)},
                                ["NaN"])),
    ("plan-infinity-literal", export({"plan.json": plan_with(lambda d: None).replace('"lr": 0.1', '"lr": -Infinity',
                                                                                      1)}, ["Infinity"])),
    ("plan-1e400", export({"plan.json": plan_with(lambda d: None).replace('"lr": 0.1', '"lr": 1e400', 1)},
                          ["1e400", "too large"])),
    ("plan-empty-file", export({"plan.json": ""}, ["plan.json is empty"])),
    ("plan-binary-file", export({"plan.json": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"}, ["not a text"])),
    ("plan-json-list", export({"plan.json": "[1, 2]"}, ["not a JSON object"])),
    ("plan-truncated", export({"plan.json": plan_with(lambda d: None)[:200]}, ["not valid JSON"])),
    ("plan-is-folder", (["export", "plans"], {"plans/x.json": "{}"}, ["plans", "folder"])),
    # ------------------------------------------------------------------ probe files (bsadvisor.probe/1)
    ("probe-ci90-nulls", probe_case(_set("noise.ci90", [None, None]), ["noise.ci90", "open end", "bounded"])),
    ("probe-ci90-one-value", probe_case(_set("noise.ci90", [1.0]), ["noise.ci90", "2 values"])),
    ("probe-ci90-reversed", probe_case(_set("noise.ci90", [500.0, 100.0]), ["noise.ci90", "low end"])),
    ("probe-b-simple-zero", probe_case(_set("noise.b_simple", 0), ["noise.b_simple", "> 0", "got 0"])),
    ("probe-b-simple-text", probe_case(_set("noise.b_simple", "big"), ["noise.b_simple", "'big'"])),
    ("probe-throughput-batch-zero", probe_case(_set("throughput.1.batch_size", 0), ["throughput[1].batch_size"])),
    ("probe-throughput-string", probe_case(_set("throughput", "fast"), ["throughput must be a list"])),
    ("probe-throughput-rate-text", probe_case(_set("throughput.0.examples_per_s", "x"),
                                              ["throughput[0].examples_per_s"])),
    ("probe-momentum-one", probe_case(_set("settings.momentum", 1.0), ["settings.momentum"])),
    ("probe-seed-2**70", probe_case(_set("settings.seed", 2**70), ["settings.seed", "2**63"])),
    ("probe-settings-list", probe_case(_set("settings", [1]), ["settings must be an object"])),
    ("probe-memory-missing", probe_case(lambda d: d.pop("memory"), ["memory is missing"])),
    ("probe-max-batch-fraction", probe_case(_set("memory.max_batch", 2.5), ["memory.max_batch"])),
    ("probe-b0-over-n", probe_case(_set("settings.batch_size", 10**6), ["settings.batch_size", "larger than"])),
    ("probe-knee-text", probe_case(_set("throughput_knee", "x"), ["throughput_knee"])),
    ("probe-wall-seconds-text", probe_case(_set("wall_seconds", "x"), ["wall_seconds"])),
    ("probe-nested-100k", (["convert-schedule", "--probe", "probe.json", "--epochs", "10", "--schedule", HOSTILE_PAPER],
                           {"probe.json": DEEP_JSON}, ["probe.json", "nested too deeply"])),
    ("probe-nan-literal", (["convert-schedule", "--probe", "probe.json", "--epochs", "10", "--schedule", HOSTILE_PAPER],
                           {"probe.json": json.dumps(PROBE).replace("400.0", "NaN", 1)}, ["NaN"])),
    ("probe-empty-file", (["convert-schedule", "--probe", "probe.json", "--epochs", "10", "--schedule", HOSTILE_PAPER],
                          {"probe.json": "  \n"}, ["probe.json is empty"])),
    # ------------------------------------------------------------------ TOML --config
    ("toml-probe-5", config_case("probe = 5\n", ["run.toml", "probe must be text", "got 5"])),
    ("toml-deep-array", config_case("epochs = " + "[" * 5000 + "]" * 5000 + "\n", ["run.toml", "nested too deeply"])),
    ("toml-5000-digits", config_case(f"epochs = {BIG_INT}\n", ["run.toml", "thousands of digits"])),
    ("toml-momentum-text", config_case('momentum = "0.9"\n', ["run.toml", "momentum", "'0.9'"])),
    ("toml-round-to-fraction", config_case("round-to = 2.5\n", ["round-to", "whole number"])),
    ("toml-table-for-number", config_case("[lr]\nx = 1\n", ["lr must be a finite number", "an object"])),
    ("toml-date-for-epochs", config_case("epochs = 1979-05-27\n", ["epochs must be a", "1979"])),
    ("toml-billion-epochs", config_case("epochs = 1000000000\n", ["epochs", "1,000,000"])),
    ("toml-nan-lr", config_case("lr = nan\n", ["lr must be a finite number"])),
    ("toml-bool-world-size", config_case("world-size = true\nmax-batch = 1000\n", ["world-size", "true"])),
    ("toml-micro-batch-zero", config_case("max-micro-batch = 0\n", ["--max-micro-batch"])),
    ("toml-is-folder", (["convert-schedule", *BASE, "--schedule", HOSTILE_PAPER, "--config", "conf"], {"conf/a": "x"},
                        ["conf", "folder"])),
    # ------------------------------------------------------------------ schedule strings
    ("sched-600-unary-minus", schedule_case(f"StepLR(step_size=30, gamma={MINUS_600})", ["gamma"])),
    ("sched-600-nested-minus", schedule_case("StepLR(step_size=30, gamma=" + "-(" * 600 + "1" + ")" * 600 + ")",
                                             ["nested parentheses"])),
    ("sched-9000-unary-minus", schedule_case("StepLR(step_size=30, gamma=" + "-" * 9000 + "1)", ["nested too deeply"])),
    ("sched-deep-attribute", schedule_case("a." * 3000 + "StepLR(30)", ["nested too deeply"])),
    ("sched-gamma-1e308", schedule_case("StepLR(step_size=30, gamma=1e308)", ["gamma", "> 1", "grow"])),
    ("sched-gamma-1e400", schedule_case("StepLR(step_size=30, gamma=1e400)", ["gamma", "finite"])),
    ("sched-step-gamma-above-one", schedule_case("StepLR(step_size=30, gamma=1.5)", ["gamma=1.5 > 1"])),
    ("sched-multistep-gamma-above-one", schedule_case("MultiStepLR(milestones=[60], gamma=2)", ["gamma=2 > 1"])),
    ("sched-exponential-gamma-above-one", schedule_case("ExponentialLR(gamma=1.01)", ["gamma=1.01 > 1"])),
    ("sched-5000-digit-int", schedule_case(f"StepLR(step_size={BIG_INT})", ["thousands of digits"])),
    ("sched-4000-digit-int", schedule_case(f"StepLR(step_size={'9' * 4000})", ["step_size", "2**63"])),
    ("sched-deep-list", schedule_case("MultiStepLR(milestones=" + "[" * 300 + "]" * 300 + ")", ["nested"])),
    ("sched-list-in-list", schedule_case("MultiStepLR(milestones=[[60]], gamma=0.1)", ["milestone", "[60]"])),
    ("sched-very-long", schedule_case(HOSTILE_PAPER + " " * 20_000 + "x", ["--schedule", "10,000"])),
    ("sched-newline", schedule_case("StepLR(\nstep_size=0)", ["step_size"])),
    ("sched-call-in-argument", schedule_case("StepLR(step_size=len('abc'))", ["step_size", "literal"])),
    ("sched-cosine-shorter-than-run", schedule_case("CosineAnnealingLR(T_max=50)", ["T_max=50", "T_max=200"])),
    ("sched-cosine-short-in-sequential", schedule_case(
        "SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=50)], milestones=[5])",
        ["T_max=50", "T_max=195"])),
    ("sched-cosine-eta-min-above-lr", schedule_case("CosineAnnealingLR(T_max=200, eta_min=1e308)", ["eta_min"])),
    ("sched-linear-warmup-past-end", schedule_case("LinearLR(start_factor=0.1, total_iters=500)",
                                                   ["total_iters=500", "200 epochs"])),
    ("sched-sequential-warmup-past-end", schedule_case(
        "SequentialLR([LinearLR(start_factor=0.1, total_iters=300), CosineAnnealingLR(T_max=100)], milestones=[300])",
        ["milestone 300"])),
    ("sched-billion-epochs", (["convert-schedule", *BASE[:6], "--epochs", "1000000000", "--schedule", HOSTILE_PAPER,
                               "--out", "out.json"], {}, ["--epochs", "1,000,000"])),
    ("sched-total-twice", (["convert-schedule", *BASE[:6], "--epochs", "10", "--total-steps", "100", "--schedule",
                            "CosineAnnealingLR(T_max=1000000)"], {}, ["training length once", "--epochs", "--total-steps"])),
    ("sched-epochs-streaming-no-n", (["convert-schedule", "--lr", "0.1", "--batch-size", "128", "--epochs", "1",
                                      "--streaming", "--schedule", HOSTILE_PAPER], {}, ["--epochs needs --dataset-size"])),
    ("sched-shorter-than-a-batch", (["convert-schedule", *BASE[:6], "--total-samples", "100", "--schedule", HOSTILE_PAPER],
                                    {}, ["100 samples", "--batch-size 128"])),
    ("sched-growth-factor-one", (["convert-schedule", *BASE[:6], "--epochs", "200", "--growth-factor", "1",
                                  "--schedule", HOSTILE_PAPER], {}, ["--growth-factor", "≥ 2"])),
    ("lr-1e308", (["convert-schedule", "--lr", "1e308", *BASE[2:], "--schedule", HOSTILE_PAPER], {}, ["--lr", "too large"])),
    ("n-equals-b0", (["convert-schedule", "--lr", "0.1", "--batch-size", "128", "--dataset-size", "128",
                      "--epochs", "200", "--schedule", HOSTILE_PAPER], {}, ["--batch-size 128 equals --dataset-size"])),
    # ------------------------------------------------------------------ CSV schedule tables
    ("csv-huge-epoch", table_case("epoch,lr\n0,0.1\n1e300,0.01\n", ["lr.csv", "row 2", "epoch"])),
    ("csv-binary", table_case(b"\x00\x01\xff\xfe", ["lr.csv", "text"])),
    ("csv-nul-bytes", table_case("epoch,lr\n0,0.1\x00\n", ["lr.csv", "NUL"])),
    ("csv-1e400-lr", table_case("epoch,lr\n0,1e400\n", ["lr.csv", "lr must be"])),
    ("csv-is-folder", (["convert-schedule", *BASE, "--schedule", "t.csv"], {"t.csv/a": "x"}, ["t.csv", "folder"])),
]


@pytest.mark.parametrize("argv,files,fragments", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_file_is_one_line_exit_2(tmp_path, argv, files, fragments):
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    before = Snapshot(tmp_path)
    r = run_main(argv, cwd=tmp_path)
    assert_one_line_error(r, fragments)
    before.assert_unchanged()


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60


def test_a_good_plan_and_probe_are_accepted(tmp_path):
    """The documents the cases mutate are valid, so each case fails for its own change only."""
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    (tmp_path / "probe.json").write_text(json.dumps(PROBE))
    r = run_main(["export", "plan.json", "--format", "csv"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    n, b0 = 50_000, 128  # exact rule B = N/(1 + (N/B0 − 1)·0.2^k), capped at N/10
    batches = [min(round(n / (1 + (n / b0 - 1) * 0.2**k)), n // 10) for k in range(4)]
    rows = [line.split(",") for line in r.stdout.splitlines()[1:]]
    assert [(int(a), int(b)) for a, _, b, *_ in rows] == [(e * n, b) for e, b in zip([0, 60, 120, 160], batches)]
    r = run_main(probe_case(lambda d: None, [])[0], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(Path(tmp_path / "out.json").read_text())["schema"] == "bsadvisor.plan/2"


@pytest.mark.parametrize("value, fragment", [("0.5", "0 (no limit) or ≥ 1"), ("-1", "≥ 0"), ("nan", "")])
def test_max_growth_out_of_range_is_one_line_exit_2(value, fragment):
    r = run_main(["convert-schedule", "--lr", "1e-3", "--batch-size", "32", "--dataset-size", "3200", "--epochs", "6",
                  "--optimizer", "adamw", "--schedule", "MultiStepLR([2,4],0.2)", "--max-growth", value])
    assert_one_line_error(r, ["--max-growth", fragment])


def test_a_huge_max_growth_is_no_limit_not_an_overflow():
    """--max-growth 1e308 times the batch is past any float: the run's length bounds it, as no limit would."""
    args = ["convert-schedule", "--lr", "1e-3", "--batch-size", "32", "--dataset-size", "3200", "--epochs", "6",
            "--optimizer", "adamw", "--schedule", "MultiStepLR([2,4],0.2)", "--json"]
    huge, none = run_main(args + ["--max-growth", "1e308"]), run_main(args + ["--max-growth", "0"])
    assert huge.returncode == 0 and none.returncode == 0, huge.stderr
    assert [s["batch_size"] for s in json.loads(huge.stdout)["stages"]] == \
        [s["batch_size"] for s in json.loads(none.stdout)["stages"]]
