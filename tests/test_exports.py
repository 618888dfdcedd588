"""Exports in samples and tokens: Megatron's ramp flags, an OLMo-core-style schedule, CSV per stage.

Expected values are written out by hand from each format's definition, not from the code.
"""
from __future__ import annotations

import csv
import io

from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.exports import export, export_megatron, megatron_ramp
from bsadvisor.core.plan import Plan, Stage

LLM = dict(lr=6e-4, batch_size=500, dataset_size=10_000_000, epochs=1, optimizer="adamw", schedule_unit="step",
           schedule="SequentialLR([LinearLR(start_factor=0.01, total_iters=2000), "
                    "CosineAnnealingLR(T_max=18000, eta_min=6e-5)], milestones=[2000])")


def ramp_plan() -> Plan:
    """Megatron's --rampup-batch-size 32 32 3000 with --global-batch-size 128: (128−32)/32 = 3 increments,
    one every 3000/3 = 1000 samples: 32 from 0, 64 from 1000, 96 from 2000, 128 from 3000."""
    bounds = [(0, 1000, 32), (1000, 2000, 64), (2000, 3000, 96), (3000, 8000, 128)]
    return Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=10_000)


def test_a_linear_ramp_is_megatrons_own_flags():
    plan = ramp_plan()
    assert megatron_ramp(plan) == (32, 32, 3000)
    assert export_megatron(plan) == "--rampup-batch-size 32 32 3000 --global-batch-size 128\n"
    text, rows, notes = export(plan, "megatron")
    assert not any("not a linear ramp" in n for n in notes)
    assert any("--lr-decay-style constant" in n for n in notes)  # LR 0.1 throughout: said, not dropped


def test_a_geometric_plan_is_stepwise_and_says_so():
    plan = convert_schedule(**LLM)
    text, rows, notes = export(plan, "megatron")
    assert megatron_ramp(plan) is None
    assert text.split() == [f"{s.start_sample}:{s.batch_size}" for s in plan.stages
                            if s is plan.stages[0] or s.batch_size != plan.stages[plan.stages.index(s) - 1].batch_size]
    joined = " ".join(notes)
    assert "not a linear ramp" in joined and "--rampup-batch-size" in joined
    # the LR part cannot be expressed: every stage's factor is listed (the first six)
    grown = [s for s in plan.stages if s.lr_scale != 1.0]
    assert all(format(s.lr_scale, ".10g") in joined for s in grown[:6])


def test_olmo_in_tokens_with_integer_factors():
    plan = convert_schedule(**LLM, growth_factor=2, seq_len=2048)
    text, rows, notes = export(plan, "olmo")
    lines = text.splitlines()
    assert lines[0] == "start_tokens,duration_tokens,updates,batch_size_tokens,factor"
    first = plan.stages[0].batch_size
    changes = [s for i, s in enumerate(plan.stages) if i == 0 or s.batch_size != plan.stages[i - 1].batch_size]
    ends = [s.start_sample for s in changes[1:]] + [plan.total_samples]
    rows = [line.split(",") for line in lines[1:]]
    assert [(int(r[0]), int(r[1]), int(r[3]), int(r[4])) for r in rows] == [
        (s.start_sample * 2048, (e - s.start_sample) * 2048, s.batch_size * 2048, s.batch_size // first)
        for s, e in zip(changes, ends)]
    # the updates of each group, counted by walking the plan update by update (one pass: no epoch cut)
    walked, pos = [], 0
    while pos < plan.total_samples:
        b = plan.at_sample(pos).batch_size
        walked.append(pos)
        pos = min(pos + b, plan.total_samples)
    assert [int(r[2]) for r in rows] == [sum(1 for p in walked if s.start_sample <= p < e) for s, e in zip(changes, ends)]
    assert not any("integer" in n for n in notes)
    # a plan without --growth-factor has batches that are not integer multiples: said
    _, _, notes = export(convert_schedule(**LLM), "olmo")
    assert any("not an integer multiple" in n and "--growth-factor" in n for n in notes)
    assert any("no sequence length" in n for n in notes)


def test_csv_per_stage_with_tokens_and_factors():
    plan = convert_schedule(**LLM, seq_len=1024)
    text, rows, notes = export(plan, "csv")
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == len(plan.stages) and notes == []
    for r, s in zip(table, plan.stages):
        assert int(r["start_sample"]) == s.start_sample and int(r["end_token"]) == s.end_sample * 1024
        assert int(r["batch_size"]) == s.batch_size and r["phase"] == s.phase
        # the LR at the stage's last sample: the factor × torch's schedule there (closed form of the cosine)
        assert abs(float(r["lr_scale"]) - s.lr_scale) <= 1e-9 * s.lr_scale
