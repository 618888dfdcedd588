"""Messages a newcomer reads: the cap a warning names, the verdict's ratios, the help text, piped output."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hostile import cli_env, run_main

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "data" / "lm_probe.json"
WARMUP_COSINE = ("SequentialLR([LinearLR(start_factor=0.01, total_iters=300), "
                 "CosineAnnealingLR(T_max=5950, eta_min=0.0003)], milestones=[300])")
LM = ["convert-schedule", "--probe", str(PROBE), "--epochs", "1", "--schedule", WARMUP_COSINE,
      "--schedule-unit", "step", "--max-growth", "0"]  # the full conversion, whose caps these messages name


def _convert(*extra):
    r = run_main([*LM, *extra, "--json"], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_cap_warning_names_the_noise_cap_where_it_binds():
    """A device cap of 200 at the end, a noise-scale cap of 62 where the batch meets it: the warning names
    the noise-scale cap (not "device memory") and the device cap it rises to."""
    doc = _convert("--max-batch", "200", "--noise-cap", "10")
    assert doc["cap"]["limited_by"] == "device" and doc["cap"]["batch_size"] == 200
    (hybrid,) = [w for w in doc["warnings"] if "(hybrid)" in w]
    there = int(re.search(r"cap of (\d+)", hybrid).group(1))
    assert there < 200 and f"cap of {there} (noise-scale cap)" in hybrid, hybrid
    assert "cap line's 200 (device memory)" in hybrid and f"{there} (device memory)" not in hybrid


def test_a_noise_cap_below_the_batch_is_not_reached():
    """A noise-scale cap below the starting batch: the batch stays, and no warning says it "reaches the cap of 1"."""
    doc = _convert("--noise-cap", "0.001")
    text = " ".join(doc["warnings"])
    assert "cap of 1 " not in text and "the the" not in text, text
    assert "exceeds the cap 1 (noise-scale cap)" in text and "so the batch stays at 32" in text, text


@pytest.mark.parametrize("ratio,text", [(3.0, "3.00× fewer updates"), (0.86, "1.16× more updates"),
                                        (1.0, "1.00× fewer updates")])
def test_a_slower_plan_says_more_not_less(ratio, text):
    from bsadvisor.cli.render import ratio_text as _ratio_text

    assert _ratio_text(ratio, "fewer updates", "more updates") == text


def test_the_verdict_line_of_a_slower_plan():
    import io

    from rich.console import Console

    import bsadvisor.cli  # noqa: F401
    from bsadvisor.cli.render import print_verdict as _print_verdict

    v = {"status": "accepted", "reference": "original", "candidate": "plan", "reason": None, "difference": 0.001,
         "interval": [-0.001, 0.003], "paired": [0.001] * 5, "sd": 0.001, "margin": 0.005,
         "margin_rule": "the default", "confidence": 0.9, "method": "cs", "looks": 1, "update_ratio": 2.5,
         "wall_ratio": 0.86, "variants": {}}
    buf = io.StringIO()
    _print_verdict({"verdict": v, "metric": "metric"}, Console(file=buf, width=200, color_system=None))
    line = buf.getvalue()
    assert "2.50× fewer updates" in line and "1.16× more training time" in line and "less training" not in line


@pytest.mark.parametrize("args", [["--help"], ["advise", "--help"], ["validate", "--help"], ["probe", "--help"]])
def test_help_shows_no_developer_note(args):
    r = run_main(args, cwd=ROOT, env=cli_env(COLUMNS="100"))
    assert r.returncode == 0 and "Long because" not in r.stdout and "signature" not in r.stdout, r.stdout


def test_validate_help_states_the_verdict_contract():
    r = run_main(["validate", "--help"], cwd=ROOT, env=cli_env(COLUMNS="200"))
    text = " ".join(r.stdout.replace("│", " ").split())
    for phrase in ("INDICATIVE", "3 or more", "80%", "valid however many times", "124", "spends α across looks",
                   "0.05·6/(π²k²)"):
        assert phrase in text, phrase


def test_piped_plan_is_one_line_per_stage_not_per_value():
    """A per-step LM plan too wide for 80 columns: each stage is one wrapped line of fields, so the report stays
    readable in a pipe (it was about 9 lines per stage, one per value)."""
    r = run_main([*LM, "--noise-cap", "10"], cwd=ROOT, env=cli_env(COLUMNS="80"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    stages = [ln for ln in lines if re.match(r"stage \d+", ln)]
    table = lines[lines.index("Recommended plan") + 1:]
    assert len(stages) >= 10 and all(len(ln) <= 80 for ln in lines)
    body = table[:next(i for i, ln in enumerate(table) if ln.startswith("total"))]
    assert len(body) <= 2 * len(stages), "\n".join(body)  # at most two lines a stage at 80 columns
    assert all("batch" in ln and "updates" in ln for ln in " ".join(body).split("stage ")[1:])
