"""Hostile inputs to advise's targets and options and to export: each is one ``error:``
line on stderr, exit 2, no traceback, and nothing in the folder changed or half-written.

Every case fails before the probe: the target and option cases of advise before torch is
imported (except the two marked ``dry run``, which load builtin:linreg and are refused by the
conversion of the options with the target's settings, still before any measurement).
"""
from __future__ import annotations

import json

import pytest

from hostile import Snapshot, assert_one_line_error, run_main

SCHED = "MultiStepLR(milestones=[2,4], gamma=0.2)"
ADVISE = ["--epochs", "6", "--schedule", SCHED, "--device", "cpu"]

# Files a case can ask for (relative path → content); "/" in a name makes folders.
FILES = {
    "ok.py": "def make():\n    return 42\n",
    "notes.txt": "def make():\n    pass\n",
    "raises.py": "raise RuntimeError('broken at import')\n",
    "syntax.py": "def make(:\n    pass\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "fn_raises.py": "def make():\n    raise ValueError('bad setup\\nsecond line of the message')\n",
    "returns_none.py": "def make():\n    return None\n",
    "not_callable.py": "make = 5\n",
    "binary.py": b"\xff\xfe\x00\x00garbage",
    "markup.py": "def make():\n    raise RuntimeError('[/red] closing tag [bold]oops')\n",
    "a[/x]b/t.py": "def make():\n    raise KeyError('[/x]')\n",
    "brokenmod.py": "import no_such_dependency_xyz\n\ndef make():\n    pass\n",
    "folder.py/keep.txt": "a folder named like a file\n",
    "sub/keep.txt": "",
    "plan.json": None,  # a valid plan, written by the fixture
    "list.json": "[1, 2, 3]\n",
    "notjson.json": "{not json",
    "empty.json": "",
    "schema.json": json.dumps({"schema": "bsadvisor.plan/0", "stages": []}),
    "garbage.json": b"\x00\xff\x13\x37",
    "existing.csv": "keep me\n",
}


def case(id_, argv, *fragments):
    return pytest.param(argv, fragments, id=id_)


CASES = [
    # ---- bad targets (advise loads the target before anything else that is slow)
    case("target-file-missing", ["advise", "nope.py:make", *ADVISE], "nope.py", "not found"),
    case("target-not-py", ["advise", "notes.txt:make", *ADVISE], "not a .py file"),
    case("target-folder", ["advise", "sub/:make", *ADVISE], "is a folder"),
    case("target-folder-named-py", ["advise", "folder.py:make", *ADVISE], "is a folder"),
    case("target-function-missing", ["advise", "ok.py:nothere", *ADVISE], "no function 'nothere'"),
    case("target-raises-on-import", ["advise", "raises.py:make", *ADVISE], "RuntimeError", "broken at import"),
    case("target-syntax-error", ["advise", "syntax.py:make", *ADVISE], "SyntaxError"),
    case("target-sys-exit-on-import", ["advise", "exits.py:make", *ADVISE], "SystemExit"),
    case("target-binary-file", ["advise", "binary.py:make", *ADVISE], "binary.py"),
    case("target-function-raises-multiline", ["advise", "fn_raises.py:make", *ADVISE], "ValueError",
         "bad setup second line"),
    case("target-returns-int", ["advise", "ok.py:make", *ADVISE], "returned int", "bsadvisor.Target"),
    case("target-returns-none", ["advise", "returns_none.py:make", *ADVISE], "returned NoneType"),
    case("target-not-callable", ["advise", "not_callable.py:make", *ADVISE], "not callable"),
    case("target-module-missing", ["advise", "no_such_module_xyz:make", *ADVISE], "no_such_module_xyz", "not found"),
    case("target-module-dependency-missing", ["advise", "brokenmod:make", *ADVISE], "ModuleNotFoundError",
         "no_such_dependency_xyz"),
    case("target-module-function-missing", ["advise", "json:make_target", *ADVISE], "no function 'make_target'"),
    case("target-no-colon", ["advise", "ok.py", *ADVISE], "must look like"),
    case("target-bad-function-name", ["advise", "ok.py:1abc", *ADVISE], "not a function name"),
    case("target-empty-module", ["advise", ":make", *ADVISE], "names no file or module"),
    case("target-unknown-builtin", ["advise", "builtin:nope", *ADVISE], "unknown builtin"),
    case("target-markup-path-missing", ["advise", "a[/x]b/nope.py:make", *ADVISE], "a[/x]b/nope.py"),
    case("target-markup-in-message", ["advise", "markup.py:make", *ADVISE], "[/red] closing tag [bold]oops"),
    case("target-markup-folder-raises", ["advise", "a[/x]b/t.py:make", *ADVISE], "KeyError", "[/x]"),
    # ---- bad advise options (refused before the target is loaded)
    case("advise-noise-cap-nan", ["advise", "builtin:linreg", *ADVISE, "--noise-cap", "nan"], "--noise-cap"),
    case("advise-noise-cap-negative", ["advise", "builtin:linreg", *ADVISE, "--noise-cap", "-1"], "--noise-cap"),
    case("advise-noise-cap-inf", ["advise", "builtin:linreg", *ADVISE, "--noise-cap", "inf"], "--noise-cap"),
    case("advise-budget-inf", ["advise", "builtin:linreg", *ADVISE, "--budget-seconds", "inf"], "--budget-seconds"),
    case("advise-budget-zero", ["advise", "builtin:linreg", *ADVISE, "--budget-seconds", "0"], "--budget-seconds"),
    case("advise-seed-negative", ["advise", "builtin:linreg", *ADVISE, "--seed", "-1"], "--seed"),
    case("advise-seed-2-70", ["advise", "builtin:linreg", *ADVISE, "--seed", str(2**70)], "--seed"),
    case("advise-epochs-zero", ["advise", "builtin:linreg", "--epochs", "0", "--schedule", SCHED], "--epochs"),
    case("advise-epochs-text", ["advise", "builtin:linreg", "--epochs", "ten", "--schedule", SCHED], "--epochs"),
    case("advise-no-schedule", ["advise", "builtin:linreg", "--epochs", "6"], "--schedule"),
    case("advise-no-epochs", ["advise", "builtin:linreg", "--schedule", SCHED], "--epochs"),
    case("advise-schedule-syntax", ["advise", "builtin:linreg", "--epochs", "6", "--schedule", "MultiStepLR("],
         "malformed schedule"),
    case("advise-schedule-lambda", ["advise", "builtin:linreg", "--epochs", "6", "--schedule",
                                    "LambdaLR(lr_lambda=lambda e: 0.1)"], "LambdaLR"),
    case("advise-world-size-zero", ["advise", "builtin:linreg", *ADVISE, "--world-size", "0"], "--world-size"),
    case("advise-grad-accum-negative", ["advise", "builtin:linreg", *ADVISE, "--grad-accum", "-2"], "--grad-accum"),
    case("advise-device-tpu", ["advise", "builtin:linreg", "--epochs", "6", "--schedule", SCHED, "--device", "tpu"],
         "--device"),
    case("advise-lr-nan", ["advise", "builtin:linreg", *ADVISE, "--lr", "nan"], "--lr"),
    case("advise-momentum-1.5", ["advise", "builtin:linreg", *ADVISE, "--momentum", "1.5"], "--momentum"),
    case("advise-batch-size-zero", ["advise", "builtin:linreg", *ADVISE, "--batch-size", "0"], "--batch-size"),
    case("advise-max-fraction-nan", ["advise", "builtin:linreg", *ADVISE, "--max-fraction", "nan"], "--max-fraction"),
    case("advise-round-to-zero", ["advise", "builtin:linreg", *ADVISE, "--round-to", "0"], "--round-to"),
    case("advise-out-is-folder", ["advise", "builtin:linreg", *ADVISE, "--out", "sub"], "sub", "folder"),
    case("advise-out-missing-folder", ["advise", "builtin:linreg", *ADVISE, "--out", "nowhere/plan.json"],
         "does not exist"),
    case("advise-probe-out-is-folder", ["advise", "builtin:linreg", *ADVISE, "--probe-out", "sub"], "--probe-out"),
    case("advise-out-equals-probe-out", ["advise", "builtin:linreg", *ADVISE, "--out", "p.json",
                                         "--probe-out", "p.json"], "different files"),
    case("advise-unknown-option", ["advise", "builtin:linreg", *ADVISE, "--frobnicate", "3"], "--frobnicate"),
    case("advise-dry-run-max-fraction-2", ["advise", "builtin:linreg", *ADVISE, "--max-fraction", "2"],
         "--max-fraction"),  # dry run
    case("advise-dry-run-batch-over-n", ["advise", "builtin:linreg", *ADVISE, "--batch-size", "100000"],
         "100000"),  # dry run
    # ---- export
    case("export-plan-missing", ["export", "missing.json"], "missing.json", "not found"),
    case("export-plan-folder", ["export", "sub"], "sub"),
    case("export-plan-not-json", ["export", "notjson.json"], "not valid JSON"),
    case("export-plan-empty", ["export", "empty.json"], "empty.json"),
    case("export-plan-list", ["export", "list.json"], "not a JSON object"),
    case("export-plan-wrong-schema", ["export", "schema.json"], "schema"),
    case("export-plan-binary", ["export", "garbage.json"], "garbage.json"),
    case("export-plan-markup-missing", ["export", "a[/x]b/plan.json"], "a[/x]b/plan.json"),
    case("export-format-lightning", ["export", "plan.json", "--format", "lightning"], "--format", "lightning"),
    case("export-format-empty", ["export", "plan.json", "--format", ""], "--format"),
    case("export-out-folder", ["export", "plan.json", "--out", "sub"], "sub", "folder"),
    case("export-out-missing-folder", ["export", "plan.json", "--out", "nowhere/plan.csv"], "does not exist"),
    case("export-bad-plan-keeps-out", ["export", "notjson.json", "--out", "existing.csv"], "not valid JSON"),
    case("export-unknown-option", ["export", "plan.json", "--frobnicate"], "--frobnicate"),
    case("export-no-plan", ["export"], "missing argument PLAN_FILE"),
    case("advise-no-target", ["advise", *ADVISE], "missing argument TARGET"),
]


@pytest.fixture
def folder(tmp_path):
    for name, content in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            from bsadvisor.core.convert import convert_schedule

            convert_schedule(lr=0.1, batch_size=32, dataset_size=3200, epochs=6, schedule=SCHED).save(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tmp_path


@pytest.mark.parametrize("argv, fragments", CASES)
def test_hostile_output_inputs(folder, argv, fragments):
    snap = Snapshot(folder)
    r = run_main(argv, cwd=folder)
    assert_one_line_error(r, fragments)
    snap.assert_unchanged()


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
