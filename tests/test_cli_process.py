"""The CLI as its own process: `python -m bsadvisor` starts, refuses bad input in one line from every
command, and prints exactly what the in-process harness shows.

Every other CLI test runs the entry point in-process (tests/hostile.py ``run_main``), a hundred times
faster than a fresh interpreter. These few smoke tests keep the real process honest: the ``__main__``
entry, nothing printed at interpreter exit, and the byte-for-byte agreement of ``run_main`` with
``run_cli`` (piped, 80 columns) that lets the rest of the suite trust it.
"""
from __future__ import annotations

import json

import pytest

from hostile import ROOT, assert_one_line_error, cli_env, run_cli, run_main

PAPER = ["--lr", "0.1", "--batch-size", "128", "--dataset-size", "50000", "--epochs", "200", "--momentum", "0.9",
         "--schedule", "MultiStepLR(milestones=[60,120,160], gamma=0.2)"]
LINREG = ["builtin:linreg", "--schedule", "MultiStepLR(milestones=[2, 4], gamma=0.2)", "--epochs", "6"]


def test_help_names_every_command():
    r = run_cli(["--help"], cwd=ROOT)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for command in ("convert-schedule", "export", "probe", "advise", "validate", "demo"):
        assert command in r.stdout, command


# one refusal per command, through the real interpreter: exit 2, one line, nothing else at exit
@pytest.mark.parametrize("argv, fragments", [
    (["convert-schedule", *PAPER[:-2], "--schedule", "WarpLR(gamma=0.1)"], ["unknown scheduler", "WarpLR"]),
    (["export", "missing.json"], ["missing.json"]),
    (["advise", "nope.py:make", "--epochs", "6", "--schedule", "StepLR(step_size=2)"], ["nope.py", "not found"]),
    (["probe", "builtin:linreg", "--seed", "-1"], ["--seed"]),
    (["validate", *LINREG, "--seeds", "0"], ["--seeds", "0"]),
    (["demo", "--seeds", "0"], ["--seeds"]),
], ids=["convert-schedule", "export", "advise", "probe", "validate", "demo"])
def test_every_command_refuses_in_one_line_as_a_process(tmp_path, argv, fragments):
    assert_one_line_error(run_cli(argv, cwd=tmp_path), fragments)


@pytest.mark.parametrize("argv, columns", [
    ([*PAPER], "80"),  # the table, fitted to a piped 80 columns
    ([*PAPER, "--json"], "80"),
    (["export", "--help"], "100"),  # typer's own help console
    (["convert-schedule", *PAPER[:-2], "--schedule", "StepLR(step_size=0)"], "80"),  # a refusal
], ids=["table", "json", "help-100-columns", "refusal"])
def test_in_process_harness_prints_what_the_process_prints(tmp_path, argv, columns):
    argv = ["convert-schedule", *argv] if argv[0].startswith("--") else argv
    env = cli_env(COLUMNS=columns)
    real, here = run_cli(argv, cwd=tmp_path, env=env), run_main(argv, cwd=tmp_path, env=env)
    assert (here.returncode, here.stdout, here.stderr) == (real.returncode, real.stdout, real.stderr)
    if "--json" in argv:
        assert json.loads(here.stdout)["schema"].startswith("bsadvisor.plan/")
