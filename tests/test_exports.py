"""Exports a framework can run as is: stock Megatron-LM's ramp flags, OLMo-core's BatchSizeSchedulerCallback,
a CSV per stage; each export parsed back the way its framework would and compared with the plan.

The frameworks' rules are written out here from their sources, independently of bsadvisor.core.exports:
Megatron-LM's argparse flags and its RampupBatchsizeNumMicroBatchesCalculator (a linear ramp of START +
INCREMENT·⌊s/(SAMPLES/n)⌋, FINAL once more than SAMPLES are consumed); OLMo-core's callback dataclass
(batch sizes and Duration.tokens starts, from 0, strictly later, each an integer factor of the one before).
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import math
import shlex
from dataclasses import dataclass, field
from typing import List

import pytest

from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.exports import export, megatron_ramp
from bsadvisor.core.plan import Plan, Stage

# the square-root rule named explicitly: the closed forms below are its (T ∝ η/√B in one pass)
LLM = dict(lr=6e-4, batch_size=500, dataset_size=10_000_000, epochs=1, optimizer="adamw", schedule_unit="step",
           adam_rule="sqrt", schedule="SequentialLR([LinearLR(start_factor=0.01, total_iters=2000), "
                                      "CosineAnnealingLR(T_max=18000, eta_min=6e-5)], milestones=[2000])")


# --------------------------------------------------------------------------------------------- Megatron
def megatron_parser() -> argparse.ArgumentParser:
    """The flags as Megatron-LM's arguments.py defines them."""
    p = argparse.ArgumentParser()
    p.add_argument("--global-batch-size", type=int, default=None)
    p.add_argument("--rampup-batch-size", nargs="*", default=None)
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--train-iters", type=int, default=None)
    p.add_argument("--micro-batch-size", type=int, default=1)
    return p


def megatron_batches(text: str, consumed: list[int]) -> list[int]:
    """Parse ``text`` as Megatron-LM does and give its global batch after each of ``consumed`` samples."""
    args = megatron_parser().parse_args(shlex.split(text))
    assert args.train_iters is None and args.train_samples  # a ramp needs sample-based training
    if args.rampup_batch_size is None:
        return [args.global_batch_size] * len(consumed)
    assert len(args.rampup_batch_size) == 3
    start, inc, ramp = (int(x) for x in args.rampup_batch_size)
    final = args.global_batch_size
    assert final >= start and inc > 0 and (final - start) % inc == 0 and ramp >= 0
    per_increment = ramp / ((final - start) // inc)
    return [final if s > ramp else start + int(s / per_increment) * inc for s in consumed]


def update_starts(plan: Plan) -> list[int]:
    s, out = 0, []
    while s < plan.total_samples:
        out.append(s)
        s = plan.update_end(s)
    return out


def test_a_linear_ramp_is_megatrons_own_flags():
    """--rampup-batch-size 32 32 ~3000 --global-batch-size 128: 32 from 0, 64 from 1000, 96 from 2000, 128 from
    3000 (a hand-made plan without inputs: its LR 0.1 throughout)."""
    bounds = [(0, 1000, 32), (1000, 2000, 64), (2000, 3000, 96), (3000, 8000, 128)]
    plan = Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=10_000)
    ramp = megatron_ramp(plan)
    assert (ramp.start, ramp.increment, ramp.final) == (32, 32, 128) and ramp.max_error == 0
    text, rows, notes = export(plan, "megatron", "0.17")
    starts = update_starts(plan)
    assert megatron_batches(text, starts) == [plan.at_sample(s).batch_size for s in starts]
    assert any("exactly Megatron's linear ramp" in n for n in notes)
    assert any("--lr-decay-style constant" in n for n in notes)  # LR 0.1 throughout: said, not dropped


def test_megatron_ramp_close_to_the_plan_and_its_stated_temperature_error():
    plan = convert_schedule(**LLM, max_batch=800)  # 500 → 625 → 781: near a line
    text, rows, notes = export(plan, "megatron", "0.17")
    starts = update_starts(plan)
    ramp = megatron_batches(text, starts)
    assert ramp[0] == 500 and ramp[-1] == max(plan.stage_batch_sizes())
    # Adam's square-root rule, one pass (N → ∞): T ∝ η/√B, so at the plan's LR T_ramp/T_plan = √(B_plan/B_ramp);
    # weighted by the samples each update covers
    errors = [(abs(math.sqrt(plan.at_sample(s).batch_size / b) - 1), plan.update_end(s) - s)
              for s, b in zip(starts, ramp)]
    mean = sum(e * w for e, w in errors) / plan.total_samples
    (row,) = rows
    assert row["mean_error"] < 0.10 and abs(row["mean_error"] - mean) < 0.01
    assert max(e for e, _ in errors) <= row["max_error"] + 0.01
    assert any(f"{row['mean_error']:.1%}" in n for n in notes)


def test_a_geometric_plan_is_refused_for_megatron_in_one_line():
    plan = convert_schedule(**LLM)
    with pytest.raises(UserError, match="cannot be expressed as Megatron-LM's linear --rampup-batch-size") as e:
        export(plan, "megatron", "0.17")
    assert "\n" not in str(e.value) and "--rampup-batch-size 500 " in str(e.value)  # the best ramp, for reference


def test_a_plan_whose_batch_comes_back_down_is_refused_for_megatron_and_kept_by_olmo(tmp_path):
    table = tmp_path / "lr.csv"
    table.write_text("epoch,lr\n" + "".join(f"{e},{0.1 * 0.3 ** (e % 10)}\n" for e in range(20)))
    plan = convert_schedule(batch_size=128, dataset_size=50_000, epochs=20, schedule=str(table), optimizer="adamw",
                            growth_factor=2, seq_len=64)
    assert plan.stage_batch_sizes().count(128) >= 2  # back down after the restart at epoch 10
    with pytest.raises(UserError, match="comes back down"):
        export(plan, "megatron", "0.17")
    text, _, _ = export(plan, "olmo")
    assert [b // 64 for b in parse_olmo(text).batch_sizes] == [p.batch_size for p in changes(plan)]


# ------------------------------------------------------------------------------------------------ OLMo-core
@dataclass
class Duration:
    """OLMo-core's Duration (value, unit), with its tokens constructor."""

    value: int
    unit: str

    @classmethod
    def tokens(cls, tokens: int) -> "Duration":
        return cls(value=tokens, unit="tokens")


@dataclass
class BatchSizeSchedulerCallback:
    """OLMo-core's callback signature and the checks of its __post_init__."""

    batch_sizes: List[int] = field(default_factory=list)
    schedule: List[Duration] = field(default_factory=list)

    def __post_init__(self):
        assert len(self.batch_sizes) == len(self.schedule)
        assert len({d.unit for d in self.schedule}) == 1 and self.schedule[0].value == 0
        for (a, x), (b, y) in zip(zip(self.batch_sizes, self.schedule), zip(self.batch_sizes[1:], self.schedule[1:])):
            assert y.value > x.value, "events must occur after previous events"
            assert a != b and max(a, b) % min(a, b) == 0, "batch size changes by an integer factor only"


def parse_olmo(text: str) -> BatchSizeSchedulerCallback:
    """Read the snippet's call without running it: literal batch sizes and Duration.tokens(...) starts."""
    tree = ast.parse(text)
    if "BatchSizeSchedulerCallback(" in text and "PlanLR" in text:  # only the callback's call is read here
        start = text.index("batch_size_scheduler = ")
        tree = ast.parse(text[:text.index("from bsadvisor")] + text[start:text.index(")\n", start) + 2]
                         + "".join(ln + "\n" for ln in text.splitlines() if ln.startswith("from olmo_core")))
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {("olmo_core.train.callbacks", "BatchSizeSchedulerCallback"), ("olmo_core.train.common", "Duration")} <= imports
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
               "BatchSizeSchedulerCallback"]
    kw = {k.arg: k.value for k in call.keywords}
    batches = ast.literal_eval(kw["batch_sizes"])
    starts = []
    for d in kw["schedule"].elts:
        assert isinstance(d, ast.Call) and d.func.value.id == "Duration" and d.func.attr == "tokens"
        starts.append(Duration.tokens(ast.literal_eval(d.args[0])))
    return BatchSizeSchedulerCallback(batch_sizes=batches, schedule=starts)


def changes(plan):
    return [s for i, s in enumerate(plan.stages) if i == 0 or s.batch_size != plan.stages[i - 1].batch_size]


def test_olmo_snippet_builds_the_callback_and_round_trips_the_plan():
    plan = convert_schedule(**LLM, growth_factor=2, seq_len=2048)
    text, rows, notes = export(plan, "olmo")
    cb = parse_olmo(text)
    assert [b // 2048 for b in cb.batch_sizes] == [s.batch_size for s in changes(plan)]
    assert [d.value // 2048 for d in cb.schedule] == [s.start_sample for s in changes(plan)]
    assert all(b % 2048 == 0 for b in cb.batch_sizes) and all(d.value % 2048 == 0 for d in cb.schedule)
    # one pass under Adam's square-root rule: the plan's factor is √(B/B0)
    for s in plan.stages:
        assert s.lr_scale == pytest.approx(math.sqrt(s.batch_size / 500), rel=1e-9)


def run_olmo_standin(text: str, plan: Plan, plan_path) -> list[tuple[int, int, float]]:
    """Run the snippet against stand-ins with OLMo-core's signatures (Scheduler(units, lr_field, initial_lr_field),
    set_lr(group, trainer)) and its callback's rules, re-written from batch_size_scheduler.py and trainer.py:
    before each batch the latest due event applies, a raise only once batches_processed is a multiple of the
    factor, the group's initial LR × √(new/old) at each change; tokens seen include the batch when the
    scheduler sets the LR. Returns (first sample, batch in samples, LR) of every update."""
    import sys
    import types
    from dataclasses import dataclass as dc

    @dc
    class Scheduler:
        lr_field: str = "lr"
        initial_lr_field: str = "initial_lr"
        units: str = "steps"

    mods = {"olmo_core": types.ModuleType("olmo_core"), "olmo_core.optim": types.ModuleType("olmo_core.optim"),
            "olmo_core.optim.scheduler": types.ModuleType("s"), "olmo_core.train": types.ModuleType("t"),
            "olmo_core.train.callbacks": types.ModuleType("c"), "olmo_core.train.common": types.ModuleType("m")}
    mods["olmo_core.optim.scheduler"].Scheduler = Scheduler
    mods["olmo_core.optim.scheduler"].SchedulerUnits = types.SimpleNamespace(tokens="tokens", steps="steps")
    mods["olmo_core.train.callbacks"].BatchSizeSchedulerCallback = BatchSizeSchedulerCallback
    mods["olmo_core.train.common"].Duration = Duration
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        ns = {}
        exec(compile(text.replace("'plan.json'", repr(str(plan_path))), "snippet", "exec"), ns)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = v
    cb, sched, seq = ns["batch_size_scheduler"], ns["lr_scheduler"], plan.seq_len
    assert sched.units == "tokens"  # OLMo-core refuses a non-token scheduler without t_max
    loader = types.SimpleNamespace(global_batch_size=cb.batch_sizes[0], batches_processed=0)
    trainer = types.SimpleNamespace(data_loader=loader, global_train_tokens_seen=0)
    group = {"lr": 6e-4 * 2}  # a group at twice the base LR keeps its ratio
    out, total = [], plan.total_samples * seq
    while trainer.global_train_tokens_seen < total:
        for target, start in reversed(list(zip(cb.batch_sizes, cb.schedule))):  # pre_load_batch
            if trainer.global_train_tokens_seen >= start.value:
                cur = loader.global_batch_size
                if target > cur and loader.batches_processed % (target // cur) == 0 or target < cur:
                    group.setdefault("initial_lr", group["lr"])
                    group["initial_lr"] *= math.sqrt(target / cur)
                    loader.batches_processed = loader.batches_processed * cur // target
                    loader.global_batch_size = target
                break
        first = trainer.global_train_tokens_seen // seq
        trainer.global_train_tokens_seen += loader.global_batch_size
        loader.batches_processed += 1
        lr = sched.set_lr(group, trainer) / 2
        out.append((first, loader.global_batch_size // seq, lr))
    return out


def test_olmo_snippet_trains_the_plans_batch_and_lr_on_a_standin(tmp_path):
    plan = convert_schedule(**{**LLM, "adam_rule": "linear"}, growth_factor=2,
                            seq_len=128, max_batch=4000)
    path = tmp_path / "plan.json"
    plan.save(path)
    text, rows, _ = export(plan, "olmo")
    assert "# LR" not in text  # nothing the plan needs lives in a comment
    ran = run_olmo_standin(text, plan, path)
    by_start = {s: (b, lr) for s, b, lr in ran}
    on_time = 0
    for st in changes(plan):
        # OLMo-core changes on time where the samples so far are whole batches of the new size (its
        # batches_processed rule): there, the plan's batch and LR at the stage's first update
        if st.start_sample % st.batch_size == 0:
            assert by_start[st.start_sample] == (st.batch_size, pytest.approx(plan.at_sample(st.start_sample).lr,
                                                                               rel=1e-12))
            on_time += 1
    assert on_time >= 2
    for s, b, lr in ran:  # everywhere: the LR of the plan's stage at the batch OLMo-core trains
        stage = [x for x in plan.stages if x.start_sample <= s and x.batch_size == b][-1]
        assert lr == pytest.approx(plan.lr_at(stage, s), rel=1e-12)


@pytest.mark.parametrize("kw, fragment", [
    (dict(optimizer="sgd", seq_len=2048, growth_factor=2), "Adam-family"),
    (dict(growth_factor=2), "--seq-len"),
    (dict(seq_len=2048), "--growth-factor 2"),
])
def test_olmo_refuses_what_its_callback_cannot_follow(kw, fragment):
    plan = convert_schedule(**{**LLM, **kw})
    with pytest.raises(UserError, match=fragment) as e:
        export(plan, "olmo")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------------ CSV
def test_csv_round_trips_every_stage():
    plan = convert_schedule(**LLM, seq_len=1024)
    text, rows, notes = export(plan, "csv")
    table = list(csv.DictReader(io.StringIO(text)))
    assert notes == []
    assert [(int(r["start_sample"]), int(r["end_sample"]), int(r["batch_size"])) for r in table] == [
        (s.start_sample, s.end_sample, s.batch_size) for s in plan.stages]
    for r, s in zip(table, plan.stages):
        assert int(r["end_token"]) == s.end_sample * 1024 and r["phase"] == s.phase
        assert abs(float(r["lr_scale"]) - s.lr_scale) <= 1e-9 * s.lr_scale


def test_the_worked_example_in_integration_md_is_what_export_prints():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "integration.md").read_text()
    example = {k: v for k, v in LLM.items() if k != "adam_rule"}  # the doc's command: the default Adam rule
    plan = convert_schedule(**example, seq_len=2048, growth_factor=2, max_batch=8000)
    olmo, _, _ = export(plan, "olmo")
    assert f"```text\n{olmo}```" in doc
    with pytest.raises(UserError) as e:
        export(plan, "megatron")
    assert f"error: {e.value}" in doc
    with pytest.raises(UserError) as e:
        export(plan, "megatron", "0.17")
    assert f"error: {e.value}" in doc
    fine = convert_schedule(**example, seq_len=2048, round_to=8)
    step, _, notes = export(fine, "megatron")
    assert f"$ bsadvisor export plan.json --format megatron\n{step}" + "".join(f"note: {n}\n" for n in notes) in doc
    ramp, _, _ = export(convert_schedule(**example, seq_len=2048, growth_factor=2, max_batch=1000), "megatron", "0.17")
    assert f"$ bsadvisor export plan.json --format megatron --megatron-version 0.17\n{ramp}" in doc
