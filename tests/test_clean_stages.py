"""A plan has no stage that never trains, no two batch stages closer than the stage factor, and
its cap line and warnings agree (a language model's per-step warmup + cosine under a rising noise-scale cap,
from a stored probe file)."""
import json
import re
from pathlib import Path

import pytest

from bsadvisor.core.plan import Plan
from bsadvisor.core.predict import plan_from_options
from hostile import run_main

PROBE = Path(__file__).parent / "data" / "lm_probe.json"
WARMUP_COSINE = ("SequentialLR([LinearLR(start_factor=0.01, total_iters=300), "
                 "CosineAnnealingLR(T_max=5950, eta_min=0.0003)], milestones=[300])")


def batch_runs(plan):
    """(start, end, batch) of each run of equal batch."""
    runs = []
    for s in plan.stages:
        if runs and runs[-1][2] == s.batch_size:
            runs[-1] = (runs[-1][0], s.end_sample, s.batch_size)
        else:
            runs.append((s.start_sample, s.end_sample, s.batch_size))
    return runs


def assert_clean(plan):
    factor = plan.inputs["stage_factor"]
    assert all(c >= 1 for c in plan.updates_per_stage()), plan.updates_per_stage()
    runs = batch_runs(plan)
    for (a0, a1, a), (b0, b1, b) in zip(runs, runs[1:]):
        assert b1 - b0 >= b  # at least one whole update at its batch
        assert max(a, b) >= min(a, b) * factor * (1 - 1e-9), (a, b, factor)


def test_noise_capped_lm_plan_has_clean_stages_and_one_cap():
    r = run_main(["convert-schedule", "--probe", str(PROBE), "--epochs", "1", "--schedule", WARMUP_COSINE,
                  "--schedule-unit", "step", "--noise-cap", "10", "--max-growth", "0", "--json"])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    plan = Plan.from_dict(doc)
    assert len(plan.stages) <= 20
    assert_clean(plan)
    cap = doc["cap"]["batch_size"]
    assert max(plan.stage_batch_sizes()) <= cap and doc["cap"]["limited_by"] == "noise_scale"
    (hybrid,) = [w for w in doc["warnings"] if "reaches the cap" in w]
    there = int(re.search(r"cap of (\d+)", hybrid).group(1))
    # the warning names the cap where the batch meets it, and the cap line's figure it rises to
    assert there < cap and f"cap line's {cap}" in hybrid
    first_hybrid = next(s for s in plan.stages if s.phase == "hybrid")
    assert first_hybrid.batch_size <= there < first_hybrid.batch_size * plan.inputs["stage_factor"]


@pytest.mark.parametrize("kw", [
    dict(max_batch=400),  # a fixed cap a little above a stage
    dict(round_to=8, max_batch=2048),
    dict(growth_factor=2, max_batch=1000),
])
def test_per_step_cosine_plans_are_clean(kw):
    plan = plan_from_options(lr=0.1, batch_size=50, dataset_size=5000, epochs=20, momentum=0.9, schedule_unit="step",
                             schedule="CosineAnnealingLR(T_max=2000)", **kw)
    assert_clean(plan)
