"""advise reads the target's own recipe as validate does and takes --seq-len and --growth-factor;
--rule under Adam is applied and said (v(B) = N/B − 1 or N/B), not silently dropped."""
from types import SimpleNamespace

import pytest

from bsadvisor.runtime.recipe import apply_recipe
from bsadvisor.core.convert import convert_schedule
from hostile import run_main

RECIPE = {"schedule": "CosineAnnealingLR(T_max=100)", "schedule_unit": "step", "epochs": 1, "seq_len": 64}


def test_the_recipe_fills_what_is_not_given_and_nothing_else():
    target = SimpleNamespace(name="t", metadata=RECIPE)
    kw = {"schedule_unit": None, "seq_len": None}
    schedule, epochs, note = apply_recipe(target, None, None, kw)
    assert (schedule, epochs, kw) == (RECIPE["schedule"], 1, {"schedule_unit": "step", "seq_len": 64})
    assert "t's own recipe" in note
    kw = {"seq_len": 128}
    assert apply_recipe(target, None, None, kw)[:2] == (RECIPE["schedule"], 1) and kw["seq_len"] == 128
    # a schedule or a length given: the user's, no recipe
    assert apply_recipe(target, "StepLR(step_size=3)", 5, {}) == ("StepLR(step_size=3)", 5, None)
    assert apply_recipe(target, None, 3, {})[2] is None
    assert apply_recipe(SimpleNamespace(name="u", metadata={}), None, None, {}) == (None, None, None)


def test_advise_without_a_schedule_names_the_target_without_a_recipe():
    r = run_main(["advise", "builtin:linreg", "--seq-len", "16"])
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "--schedule and --epochs" in r.stderr and "builtin:linreg records no recipe" in r.stderr


@pytest.mark.parametrize("rule, batch", [
    ("exact", lambda n, b0: n / (1 + (n / b0 - 1) / 4)),  # √v(B) halves: N/B − 1 = (N/B0 − 1)/4
    ("proportional", lambda n, b0: 4 * b0),  # N/B = N/(4·B0)
])
def test_rule_applies_under_adam_and_is_said(rule, batch):
    n, b0 = 10_000, 32
    plan = convert_schedule(lr=3e-4, batch_size=b0, dataset_size=n, epochs=30, optimizer="adamw", rule=rule,
                            adam_rule="sqrt", schedule="MultiStepLR(milestones=[10], gamma=0.5)", max_growth=0)
    assert plan.stage_batch_sizes()[-1] == round(batch(n, b0))
    assert f"(--rule {rule})" in plan.notes[0]
