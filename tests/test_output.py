"""Output people can read: tables whole at 80 columns and in pipes, the efficiency
legend, export notes and number formats, full "next" commands, rich markup in user strings,
targets that import their neighbours, probe and BatchNorm warnings in advise."""
from __future__ import annotations

import csv
import math
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bsadvisor.cli import advise as cmd_advise
from bsadvisor.targets.target import batchnorm_layers
from bsadvisor.cli.advise import next_commands
from bsadvisor.core.exports import export_csv, export_megatron_ramp as export_megatron, megatron_ramp_notes as megatron_notes
from bsadvisor.core.predict import plan_from_options
from bsadvisor.core.recommend import BATCHNORM_WARNING, recommend
from bsadvisor.core.plan import Plan
from bsadvisor.core.probe_result import ProbeResult
from bsadvisor.cli.render import plan_rows, plan_summary

from hostile import ROOT, cli_env, run_main

CIFAR = dict(lr=0.1, batch_size=128, dataset_size=50000, epochs=200, momentum=0.9,
             schedule="MultiStepLR(milestones=[60,120,160], gamma=0.2)")
N, B0, LR, M = 32000, 32, 0.05, 0.9
SCHEDULE = "MultiStepLR(milestones=[3,6,8], gamma=0.2)"


def probe_doc(max_batch=256, b_simple=400.0):
    return {
        "schema": "bsadvisor.probe/1", "target": "test",
        "noise": {"b_simple": b_simple, "ci90": [b_simple * 0.9, b_simple * 1.1], "trace_sigma": 4.0,
                  "grad_sq_norm": 4.0 / b_simple, "examples": 10000},
        "memory": {"max_batch": max_batch, "bytes_per_sample": 1e5, "fixed_bytes": 1e7, "trials": 3},
        "throughput": [{"batch_size": b, "examples_per_s": r} for b, r in [(32, 1e4), (128, 3e4), (512, 4e4)]],
        "settings": {"lr": LR, "momentum": M, "batch_size": B0, "dataset_size": N, "device": "cpu",
                     "optimizer": "sgd", "estimator": "microbatch", "seed": 0},
    }


def plans() -> dict[str, Plan]:
    """The plans every table is rendered for: the paper's, hybrid, warmup+cosine, CSV momenta, Adam, probe."""
    probe = ProbeResult.from_dict(probe_doc())
    return {
        "cifar-paper": plan_from_options(**CIFAR, rule="proportional", max_fraction=1),
        "hybrid": plan_from_options(**CIFAR, max_batch=2000, max_fraction=1),
        "warmup-cosine-rounded": plan_from_options(
            lr=0.4, batch_size=256, dataset_size=1281167, epochs=90, max_batch=2048, round_to=64, max_stages=5,
            schedule="SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=85)], "
                     "milestones=[5])"),
        "adamw": plan_from_options(optimizer="adamw", lr=3e-4, batch_size=32, dataset_size=1000000, epochs=30,
                                   schedule="MultiStepLR(milestones=[10,20], gamma=0.5)", max_batch=777),
        "increase-lr": plan_from_options(**CIFAR, increase_lr=5, max_batch=5000),
        "probe": plan_from_options(probe=probe, epochs=10, schedule=SCHEDULE, max_fraction=1.0),
        "probe-hybrid-noise-cap": plan_from_options(probe=probe, epochs=10, schedule=SCHEDULE, max_fraction=1.0,
                                                    noise_cap=0.7, world_size=3, grad_accum=2),
    }


def render(renderable, width: int) -> str:
    con = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    con.print(renderable)
    return con.file.getvalue()


def numbers_of(plan: Plan) -> list[str]:
    """The figures the table must show whole, formatted as the report formats them (4 significant digits)."""
    def pair(a, b):  # one value to 4 digits, or a range inside the stage, a→b to 3
        return f"{a:.4g}" if math.isclose(a, b, rel_tol=1e-9) else f"{a:.3g}→{b:.3g}"

    out = []
    for r in plan_rows(plan):
        out += [f"{r['batch']:,}", pair(*r["lr"]), pair(*r["temperature"]), f"{r['updates']:,}"]
    return out


@pytest.mark.parametrize("width", [80, 60, 40])
@pytest.mark.parametrize("name", list(plans()))
def test_every_plan_table_is_whole_at_narrow_widths(name, width):
    plan = plans()[name]
    text = render(plan_summary(plan), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    words = set(text.split())
    for figure in numbers_of(plan):
        assert figure in words, (figure, text)


def test_wide_plans_keep_the_table_layout_at_80_columns():
    for name in ("cifar-paper", "hybrid", "probe", "adamw"):
        text = render(plan_summary(plans()[name]), 80)
        assert re.search(r"^stage\s+epochs\s+batch\s+LR", text, re.M), text  # a table, not the fallback


def test_efficiency_column_is_explained():
    text = " ".join(render(plan_summary(plans()["probe"]), 80).split())
    assert "eff." in text and "efficiency" in text and "1/(1 + B/B_noise)" in text
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert "efficiency" in doc and "B_noise" in doc


def test_advise_output_is_whole_and_prints_markup_verbatim(monkeypatch):
    """The whole advise report (headline, warnings, both tables, next commands) at 80 columns, for a
    target whose path holds rich markup, with probe warnings and a BatchNorm model."""
    probe = ProbeResult.from_dict(probe_doc())
    probe.warnings = ["the loss looks sum-reduced [bold]x[/]: the gradient norm grows with the batch"]
    options = {k: None for k in cmd_advise.CONVERT_OPTIONS}
    options.update(epochs=10, schedule=SCHEDULE, max_fraction=1.0, round_to=4, noise_cap=3.0)
    plan = recommend(options, probe=probe, batchnorm=True)
    con = Console(width=80, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(cmd_advise, "console", con)
    target = "a[/x]b/train [red].py:make_target"
    cmd_advise._print_advice(target, probe, plan, None, Path("a[/x]b/probe.json"), options,
                             dict(cmd_advise.PROBE_DEFAULTS))
    text = con.file.getvalue()
    assert "…" not in text
    assert f"Measured on {target}" in text
    assert "warning: probe: the loss looks sum-reduced [bold]x[/]" in text
    assert text.count("BatchNorm") == 1 and "warning: the model has BatchNorm" in text
    words = text.split()
    for figure in (f"{plan.baseline_updates:,}", f"{plan.updates:,}", f"{plan.dataset_size * plan.epochs:,}"):
        assert figure in words  # the comparison table's updates and examples, whole
    replan = next(line for line in text.splitlines() if "re-plan offline" in line)
    assert shlex.quote("a[/x]b/probe.json") in replan and "--noise-cap 3" in replan and "--round-to 4" in replan


def test_batchnorm_warning_only_for_models_with_batchnorm():
    torch = pytest.importorskip("torch")
    assert batchnorm_layers(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))) == ['1']
    assert batchnorm_layers(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.SyncBatchNorm(2))) == ['1']
    assert not batchnorm_layers(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3)))
    probe = ProbeResult.from_dict(probe_doc())
    assert any("BatchNorm" in x for x in recommend(probe=probe, epochs=10, schedule=SCHEDULE).notes)  # unknown
    plan = recommend(probe=probe, epochs=10, schedule=SCHEDULE, batchnorm=False)
    assert not any("BatchNorm" in x for x in plan.warnings + plan.notes)
    plan = recommend(probe=probe, epochs=10, schedule=SCHEDULE, batchnorm=True)
    assert [w for w in plan.warnings + plan.notes if "BatchNorm" in w] == [BATCHNORM_WARNING]


def test_convert_schedule_piped_at_80_columns_shows_every_number_whole():
    args = ["convert-schedule", "--lr", "0.4", "--batch-size", "256", "--dataset-size", "1281167", "--epochs", "90",
            "--schedule", "SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=85)], "
                          "milestones=[5])", "--max-batch", "2048", "--round-to", "64", "--max-stages", "5"]
    r = run_main(args, cwd=ROOT, env=cli_env(COLUMNS="80"))
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and max(len(line) for line in r.stdout.splitlines()) <= 80
    plan = plan_from_options(lr=0.4, batch_size=256, dataset_size=1281167, epochs=90, schedule=args[10],
                             max_batch=2048, round_to=64, max_stages=5)
    words = set(r.stdout.split())
    assert all(f in words for f in numbers_of(plan))


# ------------------------------------------------------------------------------------------- export
def test_csv_numbers_are_formatted_and_exact_to_10_digits():
    plan = plan_from_options(lr=0.05, batch_size=32, dataset_size=3200, epochs=4, max_batch=32,
                             schedule="StepLR(step_size=2, gamma=0.1)")
    assert any(repr(plan.at(e).lr) == "0.005000000000000001" for e in range(4))  # the float a plain repr prints
    text = export_csv(plan)
    assert "0.005000000000000001" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["start_sample"], r["end_sample"], r["batch_size"]) for r in rows] == [
        (str(s.start_sample), str(s.end_sample), str(s.batch_size)) for s in plan.stages]
    for r in rows:  # the LR at any sample is lr_scale × the original schedule's LR there
        start = int(r["start_sample"])
        assert float(r["lr"]) == pytest.approx(plan.at_sample(start).lr, rel=1e-10)
        for sample in (start, int(r["end_sample"]) - 1):
            original = plan.original.lr_at(sample)
            assert float(r["lr_scale"]) * original == pytest.approx(plan.at_sample(sample).lr, rel=1e-9)
        assert float(r["momentum"]) == plan.at_sample(start).momentum


def test_megatron_says_what_it_drops_and_who_reads_it(tmp_path):
    # one milestone and a device cap: 128 → 500, one step of a linear ramp, the LR × a factor after it
    hybrid = plan_from_options(**{**CIFAR, "schedule": "MultiStepLR(milestones=[60,120], gamma=0.2)"}, max_batch=500,
                               max_fraction=1)
    assert hybrid.stage_batch_sizes()[0] == 128 and len(set(hybrid.stage_batch_sizes())) == 2
    notes = " ".join(megatron_notes(hybrid))
    assert "exactly Megatron's linear ramp" in notes and "LR" in notes
    for s in hybrid.stages:  # every LR factor the format drops is named
        if s.lr_scale != 1.0:
            assert format(s.lr_scale, ".10g") in notes
    flat = plan_from_options(**{**CIFAR, "schedule": "MultiStepLR(milestones=[60], gamma=0.2)"}, rule="proportional",
                             max_fraction=1)
    assert "--lr-decay-style constant" in " ".join(megatron_notes(flat))
    path = tmp_path / "plan.json"
    hybrid.save(path)
    r = run_main(["export", path, "--format", "megatron", "--megatron-version", "0.17"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == export_megatron(hybrid)
    assert r.stdout.startswith("--rampup-batch-size 128 372 ")
    assert "note:" in r.stderr and "--train-samples" in r.stderr and "0.01298750" not in r.stdout
    r = run_main(["export", path, "--format", "megatron", "--megatron-version", "0.17", "--json"], cwd=tmp_path)
    doc = json.loads(r.stdout)
    assert doc["schema"] == "bsadvisor.export/2" and doc["text"] == export_megatron(hybrid)
    assert doc["rows"][0]["start"] == 128 and doc["rows"][0]["final"] == 500 and doc["rows"][0]["max_error"] == 0
    assert doc["notes"] == megatron_notes(hybrid) and r.stderr == ""
    r = run_main(["export", path, "--json"], cwd=tmp_path)
    doc = json.loads(r.stdout)
    assert len(doc["rows"]) == len(hybrid.stages)
    assert doc["rows"][-1]["lr"] == hybrid.stages[-1].lr and doc["rows"][-1]["lr_scale"] == hybrid.stages[-1].lr_scale
    # three batch sizes growing ×5: no linear ramp is close; one line, exit 2
    plans()["hybrid"].save(path)
    r = run_main(["export", path, "--format", "megatron", "--megatron-version", "0.17"], cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "cannot be expressed as Megatron-LM's linear --rampup-batch-size" in r.stderr


def test_a_narrow_table_keeps_its_title_on_one_line():
    """The curves' table is a few sparklines wide; its title ("curves: 10 point(s) over 1 epoch(s), ...") was
    wrapped at the table's width, not the terminal's."""
    from bsadvisor.cli.render import FitTable

    title = "curves: 10 point(s) over 1 epoch(s), same samples in every run"
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(FitTable(title, [("run", "left"), ("metric", "left")], [["plan", "▁▄▆███████"]]))
    lines = console.file.getvalue().splitlines()
    assert lines[0].rstrip() == title and "plan" in lines[-1]


def test_export_help_puts_each_example_on_its_own_line():
    r = run_main(["export", "--help"], cwd=ROOT, env=cli_env(COLUMNS="100"))
    lines = [ln.strip() for ln in r.stdout.splitlines()]
    for cmd in ("bsadvisor export plan.json --format megatron", "bsadvisor export plan.json --format csv --out plan.csv",
                "bsadvisor export plan.json --format megatron --json"):
        assert cmd in lines, r.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_every_command_help_fills_the_width_without_orphan_lines(width):
    """A help paragraph wraps at the terminal's width only: no line ends where the next line's first word
    still fit (what a docstring's own line breaks left behind at 80 columns, 'not used: it' alone)."""
    import typer.main

    from bsadvisor.cli.app import app

    for name in typer.main.get_group(app).commands:
        out = run_main([name, "--help"], cwd=ROOT, env=cli_env(COLUMNS=str(width))).stdout.splitlines()
        usage = next(i for i, ln in enumerate(out) if ln.strip().startswith("Usage:"))
        panel = next(i for i, ln in enumerate(out) if ln.startswith("╭"))
        text = [ln.rstrip() for ln in out[usage + 1:panel]]
        for line, nxt in zip(text, text[1:]):
            if line.strip() and nxt.strip():
                first = nxt.split()[0]
                assert len(line) + 1 + len(first) > width - 1, f"{name} --help at {width}: {line!r} / {nxt!r}"


def test_every_command_has_json():
    """README: every command has --json (demo may go without)."""
    import typer.main

    from bsadvisor.cli.app import app

    group = typer.main.get_group(app)
    missing = {name for name, cmd in group.commands.items() if not any("--json" in p.opts for p in cmd.params)}
    assert missing <= {"demo"}, missing
    assert "--json" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------------------- next commands
def test_replan_command_gives_the_same_plan(tmp_path):
    probe_path = tmp_path / "probe.json"
    probe_path.write_text(json.dumps(probe_doc()))
    options = {k: None for k in cmd_advise.CONVERT_OPTIONS}
    options.update(epochs=10, schedule=SCHEDULE, max_fraction=0.5, round_to=8, max_stages=3, stage_factor=1.5,
                   rule="proportional", noise_cap=4.0, grad_accum=2, momentum=0.8)
    want = plan_from_options(probe=ProbeResult.from_dict(probe_doc()), **options)
    cmds = dict(next_commands("t.py:make", Path("plan.json"), None, probe_path, options,
                              dict(cmd_advise.PROBE_DEFAULTS, seed=7)))
    argv = shlex.split(cmds["re-plan offline"])
    assert argv[:2] == ["bsadvisor", "convert-schedule"]
    r = run_main(argv[1:] + ["--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = Plan.from_dict(json.loads(r.stdout))
    assert got.stages == want.stages and got.cap == want.cap
    save = shlex.split(cmds["save the plan"])
    for flag, value in (("--max-fraction", "0.5"), ("--round-to", "8"), ("--max-stages", "3"), ("--seed", "7"),
                        ("--stage-factor", "1.5"), ("--noise-cap", "4"), ("--grad-accum", "2"), ("--out", "plan.json")):
        assert save[save.index(flag) + 1] == value


def test_a_flag_option_is_printed_as_a_flag_and_the_replan_command_runs(tmp_path):
    """--adam-sde given: the printed commands carry the flag alone (``--adam-sde True`` is refused by the CLI)."""
    probe_path = tmp_path / "probe.json"
    probe_path.write_text(json.dumps(probe_doc()))
    options = {k: None for k in cmd_advise.CONVERT_OPTIONS}
    options.update(epochs=10, schedule=SCHEDULE, optimizer="adamw", adam_sde=True, streaming=False)
    want = plan_from_options(probe=ProbeResult.from_dict(probe_doc()), **options)
    cmds = dict(next_commands("t.py:make", Path("plan.json"), None, probe_path, options, cmd_advise.PROBE_DEFAULTS))
    save, replan = shlex.split(cmds["save the plan"]), shlex.split(cmds["re-plan offline"])
    for argv in (save, replan):
        i = argv.index("--adam-sde")
        assert i == len(argv) - 1 or argv[i + 1].startswith("--")
        assert "--streaming" not in argv  # false: not given
    r = run_main(replan[1:] + ["--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = Plan.from_dict(json.loads(r.stdout))
    assert got.stages == want.stages and got.options.adam_sde


HELPER = "from bsadvisor.targets.builtins import linreg\n\ndef make():\n    return linreg(size=2048)\n"
TARGET = "from helper import make\n\ndef make_target():\n    t = make()\n    t.name = 'markup [/x] target'\n    return t\n"


@pytest.mark.slow  # a real probe of several seconds
def test_advise_end_to_end_markup_folder_sibling_import_and_replan(tmp_path):
    """A target file in a folder named a[/x]b that imports a module beside it (no PYTHONPATH): advise runs,
    prints its report, and the re-plan command it prints rebuilds the very same plan."""
    folder = tmp_path / "a[/x]b"
    folder.mkdir(parents=True)  # the folders "a[" and "x]b": the path reads a[/x]b
    (folder / "helper.py").write_text(HELPER)
    (folder / "t.py").write_text(TARGET)
    env = cli_env(COLUMNS="80")
    r = run_main(["advise", "a[/x]b/t.py:make_target", "--epochs", "6", "--schedule",
                 "MultiStepLR(milestones=[2,4], gamma=0.2)", "--device", "cpu", "--budget-seconds", "10",
                 "--max-fraction", "0.25", "--round-to", "8", "--probe-out", "a[/x]b/probe.json",
                 "--out", "a[/x]b/plan.json"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "…" not in r.stdout
    assert "Measured on a[/x]b/t.py:make_target" in r.stdout
    assert "BatchNorm" not in r.stdout  # linear regression has none
    line = next(ln for ln in r.stdout.splitlines() if "re-plan offline:" in ln)
    argv = shlex.split(line.split("re-plan offline:", 1)[1])
    assert "--max-fraction" in argv and "--round-to" in argv
    r2 = run_main(argv[1:] + ["--json"], cwd=tmp_path, env=env)
    assert r2.returncode == 0, r2.stderr
    assert Plan.from_dict(json.loads(r2.stdout)).stages == Plan.load(folder / "plan.json").stages


# ------------------------------------------------------------------------------------- target paths
RUNNER = """import sys
from bsadvisor.targets.loading import _load_function
print(_load_function(sys.argv[1])())
"""


@pytest.mark.parametrize("spec", ["sub/t.py:make", "mymod:make"])
def test_targets_import_their_neighbours_without_pythonpath(tmp_path, spec):
    """As `python sub/t.py` and `python -m mymod` would: the file's folder, and for module:function
    the current folder, are on sys.path (the runner lives elsewhere, like the bsadvisor script)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "sibling.py").write_text("VALUE = 'from the sibling'\n")
    (tmp_path / "sub" / "t.py").write_text("from sibling import VALUE\n\ndef make():\n    return VALUE\n")
    (tmp_path / "other.py").write_text("VALUE = 'from cwd'\n")
    (tmp_path / "mymod.py").write_text("from other import VALUE\n\ndef make():\n    return VALUE\n")
    runner = tmp_path / "bin" / "runner.py"
    runner.parent.mkdir()
    runner.write_text(RUNNER)
    r = subprocess.run([sys.executable, str(runner), spec], capture_output=True, text=True, cwd=tmp_path,
                       env=cli_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("from the sibling" if spec.startswith("sub/") else "from cwd")


def test_convert_and_export_print_paths_with_markup_verbatim(tmp_path):
    (tmp_path / "a[" / "x]b").mkdir(parents=True)
    out = "a[/x]b/plan.json"
    r = run_main(["convert-schedule", *[f"--{k.replace('_', '-')}={v}" for k, v in CIFAR.items()], "--out", out],
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"plan written to {out}" in r.stdout
    r = run_main(["export", out, "--format", "csv", "--out", "a[/x]b/stages.csv"], cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "a[/x]b/stages.csv").read_text().splitlines()[1].startswith("0,")


def test_batchnorm_texts_come_from_one_place():
    from bsadvisor.core.recommend import BATCHNORM_WARNING
    from bsadvisor.core.remarks import BATCHNORM_NOTE, batchnorm_text

    assert BATCHNORM_NOTE == batchnorm_text() and BATCHNORM_WARNING == batchnorm_text(known=True)
    layers = batchnorm_text(layers=["a", "b", "c", "d", "e"])
    assert layers.startswith("the model has BatchNorm layers (a, b, c and 2 more): ")
    fix = "keep a fixed per-device group as the batch grows (ghost batch norm)"
    assert all("their statistics depend on the batch" in t and fix in t for t in (BATCHNORM_NOTE, BATCHNORM_WARNING,
                                                                                    layers))
