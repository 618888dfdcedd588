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
# max_growth 0: the full conversion, whose growth the exports are about (AdamW's default stops at 2 × B0)
LLM = dict(lr=6e-4, batch_size=500, dataset_size=10_000_000, epochs=1, optimizer="adamw", schedule_unit="step",
           adam_rule="sqrt", max_growth=0, schedule="SequentialLR([LinearLR(start_factor=0.01, total_iters=2000), "
                                      "CosineAnnealingLR(T_max=18000, eta_min=6e-5)], milestones=[2000])")


#: the LLM example under the default Adam rule (docs/integration.md's command)
DEFAULT_RULE = {k: v for k, v in LLM.items() if k != "adam_rule"}


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


# ---------------------------------------------------------------------- Megatron-Core >= 0.18: the step schedule
def megatron_core_parser() -> argparse.ArgumentParser:
    """The flags as Megatron-Core 0.18's training_config.py declares them (argparse from the dataclass fields)."""
    p = argparse.ArgumentParser()
    p.add_argument("--step-batch-size-schedule", type=str, default=None)
    p.add_argument("--global-batch-size", type=int, default=None)
    p.add_argument("--rampup-batch-size", nargs=3, type=int, default=None)
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--train-iters", type=int, default=None)
    p.add_argument("--seq-length", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--lr-decay-style", choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"],
                   default="linear")
    p.add_argument("--lr-warmup-samples", type=int, default=0)
    p.add_argument("--lr-warmup-init", type=float, default=0.0)
    p.add_argument("--lr-decay-samples", type=int, default=None)
    p.add_argument("--lr-wsd-decay-samples", type=int, default=None)
    p.add_argument("--lr-wsd-decay-style", default="exponential")
    return p


def megatron_core_run(text: str):
    """(consumed samples, global batch, LR) of every update Megatron-Core >= 0.18 trains from ``text``.

    Its rules, written out from num_microbatches_calculator.py (StepBatchsizeNumMicroBatchesCalculator:
    entries split on spaces and commas, each number read as int(float(x) × K/M/B/T), thresholds in tokens
    divided by --seq-length when there is one, sorted, the first at 0, strictly increasing; the batch of
    the last threshold <= consumed), training.py (update_train_iters: updates until consumed >=
    --train-samples; --global-batch-size refused beside the schedule) and optimizer_param_scheduler.py
    (get_lr over consumed samples: linear warmup from --lr-warmup-init, then the decay style)."""
    args = megatron_core_parser().parse_args(shlex.split(text))
    assert args.global_batch_size is None and args.rampup_batch_size is None and args.train_iters is None

    def number(x: str) -> int:
        x = x.strip().upper()
        mult = {"T": 10**12, "B": 10**9, "M": 10**6, "K": 10**3}.get(x[-1:], 1)
        return int(float(x[:-1] if mult > 1 else x) * mult)

    schedule = []
    for entry in args.step_batch_size_schedule.strip().replace(",", " ").split():
        t, b = entry.split(":", 1)
        t = number(t) // args.seq_length if args.seq_length is not None else number(t)
        schedule.append((t, number(b)))
    schedule.sort(key=lambda e: e[0])
    assert schedule[0][0] == 0 and all(b[0] > a[0] for a, b in zip(schedule, schedule[1:]))
    decay = args.lr_decay_samples or args.train_samples
    warm, peak, floor = args.lr_warmup_samples, args.lr, args.min_lr
    assert warm < decay and floor <= peak

    def lr_at(c: int) -> float:
        if warm > 0 and c <= warm:
            return args.lr_warmup_init + (peak - args.lr_warmup_init) * c / warm
        if args.lr_decay_style == "constant":
            return peak
        if c > decay:
            return floor
        ratio = (c - warm) / (decay - warm)
        if args.lr_decay_style == "linear":
            coeff = 1 - ratio
        elif args.lr_decay_style == "cosine":
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1)
        else:  # WSD
            start = decay - args.lr_wsd_decay_samples
            w = 0.0 if c <= start else (c - start) / args.lr_wsd_decay_samples
            coeff = 1 - w if args.lr_wsd_decay_style == "linear" else 0.5 * (math.cos(math.pi * w) + 1)
        return floor + coeff * (peak - floor)

    def batch_at(c: int) -> int:
        return [b for t, b in schedule if c >= t][-1]

    out, consumed = [], 0
    while consumed < args.train_samples:
        out.append((consumed, batch_at(consumed), lr_at(consumed)))
        consumed += batch_at(consumed)
    megatron_core_run.batch_at = batch_at  # the calculator's batch at any consumed count, for the last text run
    return out


def same_updates(ran, want) -> bool:
    """Megatron's updates are the plan's; its last one takes a whole batch where the plan's is cut at the end."""
    return ([u[:2] for u in ran[:-1]] == [u[:2] for u in want[:-1]] and ran[-1][0] == want[-1][0]
            and ran[-1][1] >= want[-1][1] and len(ran) == len(want))


def plan_updates(plan: Plan):
    """(start, examples, LR) of every update of the plan, walked from Plan.at_sample and the epoch's end."""
    out, s, n = [], 0, plan.dataset_size
    while s < plan.total_samples:
        st = plan.at_sample(s)
        end = min(s + st.batch_size, plan.total_samples, (s // n + 1) * n if n else plan.total_samples)
        out.append((s, end - s, st.lr))
        s = end
    return out


def test_megatron_step_schedule_parsed_as_megatron_core_gives_the_plans_batch_at_every_update():
    plan = convert_schedule(**{k: v for k, v in LLM.items() if k != "adam_rule"}, seq_len=2048, round_to=8)
    text, rows, notes = export(plan, "megatron")
    assert "--seq-length 2048" in text and "--global-batch-size" not in text
    ran, want = megatron_core_run(text), plan_updates(plan)
    assert same_updates(ran, want)
    for st in plan.stages:  # the calculator's batch at every stage start is the stage's
        assert megatron_core_run.batch_at(st.start_sample) == st.batch_size
    # the temperature error the notes state, at the plan's batch: |LR_megatron / LR_plan − 1|, sample-weighted
    errors = [(abs(lr / w[2] - 1), w[1]) for (_, _, lr), w in zip(ran, want)]
    mean = sum(e * n for e, n in errors) / plan.total_samples
    stated = next(n for n in notes if "keep the temperature within" in n)
    stated_mean = float(stated.split("within ")[1].split("%")[0]) / 100
    stated_max = float(stated.split("average, ")[1].split("%")[0]) / 100
    assert abs(mean - stated_mean) < 0.01 and max(e for e, _ in errors) <= stated_max + 0.005


def test_megatron_step_schedule_is_exact_for_a_plan_whose_lr_megatron_holds():
    # batch growth replacing a step decay entirely (constant LR): batches exact, LR exact, in samples (no seq_len)
    bounds = [(0, 4000, 32), (4000, 8000, 64), (8000, 20000, 256)]
    plan = Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=20_000)
    text, _, notes = export(plan, "megatron")
    assert "--seq-length" not in text and "--lr-decay-style constant" in text
    ran, want = megatron_core_run(text), plan_updates(plan)
    assert same_updates(ran, want) and [u[2] for u in ran] == [u[2] for u in want]
    assert any("the batch and the LR are the plan's at every update" in n for n in notes)


def test_megatron_step_notes_a_multi_epoch_plan_whose_epochs_it_would_not_cut():
    plan = convert_schedule(lr=0.1, batch_size=128, dataset_size=50_000, epochs=30, momentum=0.9,
                            schedule="MultiStepLR(milestones=[10, 20], gamma=0.2)")
    _, _, notes = export(plan, "megatron")
    assert any("Megatron counts no epochs" in n and "from sample 50,000" in n for n in notes)
    # batches that divide the data set: Megatron's updates are the plan's across epochs
    aligned = Plan(stages=[Stage(0, 2000, 100, 0.1, 0.0, 1.0), Stage(2000, 6000, 200, 0.1, 0.0, 1.0)],
                   dataset_size=1000)
    text, _, notes = export(aligned, "megatron")
    assert not any("Megatron counts no epochs" in n for n in notes)
    assert megatron_core_run(text) == plan_updates(aligned)  # the last update too: the batches divide the run


def test_megatron_refuses_an_lr_its_schedules_cannot_hold_and_numbers_its_parser_would_round():
    plan = convert_schedule(**{k: v for k, v in LLM.items() if k != "adam_rule"}, growth_factor=2, seq_len=2048)
    with pytest.raises(UserError, match="cannot hold this plan's LR") as e:
        export(plan, "megatron")
    assert "\n" not in str(e.value) and "--format csv" in str(e.value)
    jump = Plan(stages=[Stage(0, 1000, 1, 0.1, 0.0, 1.0), Stage(1000, 1000 + 2**60, 2**60, 0.1, 0.0, 1.0)],
                dataset_size=None)
    with pytest.raises(UserError, match="2\\^53"):
        export(jump, "megatron")


@pytest.mark.parametrize("fmt, version", [("megatron", "0.18"), ("megatron", "0.17"), ("olmo", "0.18"),
                                          ("maxtext", "0.18"), ("levanter", "0.18"), ("csv", "0.18")])
def test_a_batch_jump_of_2_to_the_60_answers_at_once(fmt, version):
    """A ramp search that divides by every number up to √(2^60) takes ~10^9 turns; every format
    answers in a bounded number of steps, with its export or a one-line refusal (the time is
    benchmarks/export_scaling.py's to measure; here a bound on the work: no more than a few thousand
    candidate increments are ever tried)."""
    import bsadvisor.core.exports.fit as ex

    jump = Plan(stages=[Stage(0, 1000, 1, 0.1, 0.0, 1.0), Stage(1000, 1000 + 2**60, 2**60, 0.1, 0.0, 1.0)],
                dataset_size=None, inputs={"optimizer": "adamw", "seq_len": 2})
    assert len(ex.ramp_increments(2**60, 1)) <= ex.RAMP_MAX_INCREMENTS
    try:
        text, _, _ = export(jump, fmt, version)
    except UserError as e:
        assert "\n" not in str(e)
        return
    if fmt == "megatron":
        assert megatron_batches(text, [0, 1000]) == [1, 2**60]


def test_megatron_version_is_checked():
    plan = Plan(stages=[Stage(0, 1000, 8, 0.1, 0.0, 1.0)], dataset_size=1000)
    assert export(plan, "megatron", "0.19.1")[0].startswith("--step-batch-size-schedule")
    assert export(plan, "megatron", "0.16")[0].startswith("--global-batch-size")
    with pytest.raises(UserError, match="--megatron-version"):
        export(plan, "megatron", "latest")


# ------------------------------------------------------------------------------------------- Levanter, MaxText
def levanter_run(text: str):
    """(consumed samples, batch, LR) of every step Levanter trains from the exported config, by its rules written
    out from levanter/schedule.py (BatchSchedule: segments [start, next start) at their value; the data offset
    is the sum of the batches before) and levanter/optim/config.py (lr_scheduler: optax linear warmup from 0 for
    ``warmup`` steps, a stable part when ``decay`` is set, then constant / cosine_decay_schedule(lr, decay_steps,
    min_lr_ratio) / linear_schedule(lr, min_lr, decay_steps), joined at the boundaries)."""
    import yaml

    doc = yaml.safe_load(text)
    t, o = doc["trainer"], doc["optimizer"]
    segments = [(e["start"], e["value"]) for e in t["train_batch_size"]]
    assert segments[0][0] == 0 and all(b[0] > a[0] for a, b in zip(segments, segments[1:]))
    steps, lr, warm = t["num_train_steps"], o["learning_rate"], o["warmup"]
    assert isinstance(warm, int)  # an int is steps (a float would be a fraction)
    decay = o["decay"] if o["decay"] is not None else steps - warm
    stable = steps - warm - decay
    floor = lr * o["min_lr_ratio"]

    def lr_at(step: int) -> float:
        if warm and step < warm:
            return lr * step / warm
        k = step - warm
        if k < stable:
            return lr
        k -= stable
        if o["lr_schedule"] == "constant":
            return lr
        if o["lr_schedule"] == "cosine":
            c = min(k, decay) / decay
            return lr * ((1 - o["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * c)) + o["min_lr_ratio"])
        return lr + (floor - lr) * min(k, decay) / decay  # linear

    out, consumed = [], 0
    for step in range(steps):
        batch = [v for start, v in segments if step >= start][-1]
        out.append((consumed, batch, lr_at(step)))
        consumed += batch
    return out


def test_levanter_batch_schedule_is_the_plans_and_its_lr_error_is_as_stated():
    plan = convert_schedule(**{**DEFAULT_RULE, "batch_size": 512}, seq_len=2048, round_to=8)
    text, rows, notes = export(plan, "levanter")
    ran, want = levanter_run(text), plan_updates(plan)
    assert same_updates(ran, want) and len({b for _, b, _ in ran}) == len(rows) > 5
    errors = [(abs(lr / w[2] - 1), w[1]) for (_, _, lr), w in zip(ran, want)]
    mean = sum(e * n for e, n in errors) / plan.total_samples
    stated = next(n for n in notes if "keep" in n or "keeps" in n)
    assert abs(mean - float(stated.split("within ")[1].split("%")[0]) / 100) < 0.01


def test_levanter_is_exact_for_a_constant_lr_plan_and_refuses_an_lr_it_cannot_hold():
    bounds = [(0, 4000, 32), (4000, 8000, 64), (8000, 20000, 256)]
    plan = Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=20_000)
    text, _, notes = export(plan, "levanter")
    ran, want = levanter_run(text), plan_updates(plan)
    assert same_updates(ran, want) and [u[2] for u in ran] == [u[2] for u in want]
    with pytest.raises(UserError, match="Levanter's LR schedules") as e:
        export(convert_schedule(**DEFAULT_RULE, growth_factor=2, seq_len=2048), "levanter")
    assert "\n" not in str(e.value)


def maxtext_run(text: str, devices: int = 1):
    """(consumed, batch, LR) of every step MaxText trains from the exported config, by its rules written out from
    maxtext/utils/rampup_batch.py (RampupBatchManager: global = int(devices × per-device); samples per
    increment R/n; after each step the samples of the stage grow by the batch, and once they reach R/n the batch
    grows by the increment and the count restarts at 0) and maxtext_utils.create_learning_rate_schedule (linear
    warmup from 0 over int(schedule_steps × warmup_steps_fraction) steps; cosine to the final fraction over the
    rest with pct = step/(len − 1), or WSD: stable, then linear over int(schedule_steps ×
    wsd_decay_steps_fraction) − 1 steps or cosine)."""
    import yaml

    c = yaml.safe_load(text)
    lr, final_lr, sched = c["learning_rate"], c["learning_rate"] * c["learning_rate_final_fraction"], \
        c["learning_rate_schedule_steps"]
    warm = int(sched * c["warmup_steps_fraction"])

    def cos(init, end, n, k):
        pct = k / (n - 1) if n > 1 else 1.0
        a = 0.5 * (math.cos(math.pi * pct) + 1)
        return init * a + end * (1 - a)

    def lr_at(step: int) -> float:
        if warm and step < warm:
            return lr * step / warm
        k = step - warm
        if c["lr_schedule_type"] == "cosine":
            return cos(lr, final_lr, sched - warm, k)
        decay = int(sched * c["wsd_decay_steps_fraction"])
        stable = sched - warm - decay
        if k < stable:
            return lr
        k -= stable
        if c["wsd_decay_style"] == "linear":
            return lr + (final_lr - lr) * min(k, decay - 1) / max(decay - 1, 1)
        return cos(lr, final_lr, decay, k)

    end = int(devices * c["per_device_batch_size"])
    if c["enable_rampup_batch_size"]:
        current = int(devices * c["per_device_batch_size_start"])
        inc = int(devices * c["per_device_batch_size_increment"])
        per = c["global_rampup_samples"] / ((c["per_device_batch_size"] - c["per_device_batch_size_start"])
                                            // c["per_device_batch_size_increment"])
    else:
        current = end
    out, consumed, accum = [], 0, 0
    for step in range(c["steps"]):
        out.append((consumed, current, lr_at(step)))
        consumed += current
        if current < end:
            accum += current
            if accum >= per:
                current, accum = min(current + inc, end), 0
    return out


def test_maxtext_ramp_trains_a_linear_plan_exactly():
    bounds = [(0, 3072, 32), (3072, 6144, 64), (6144, 9216, 96), (9216, 20000, 128)]
    plan = Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=20_000)
    text, rows, notes = export(plan, "maxtext")
    assert "enable_rampup_batch_size: true" in text and "within 0.0%" in notes[0]
    ran, want = maxtext_run(text), plan_updates(plan)
    assert same_updates(ran, want) and [u[2] for u in ran] == pytest.approx([u[2] for u in want], rel=1e-12)


def test_maxtext_per_device_batches_and_refusals():
    bounds = [(0, 3072, 32), (3072, 6144, 64), (6144, 9216, 96), (9216, 20000, 128)]
    plan = Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=20_000,
                inputs={"world_size": 4})
    text, _, _ = export(plan, "maxtext")
    assert "per_device_batch_size_start: 8\n" in text and "per_device_batch_size: 32\n" in text
    assert same_updates(maxtext_run(text, devices=4), plan_updates(plan))
    # a geometric plan is no linear ramp: one line
    with pytest.raises(UserError, match="MaxText") as e:
        export(convert_schedule(**{**DEFAULT_RULE, "batch_size": 512}, seq_len=2048, round_to=8),
               "maxtext")
    assert "\n" not in str(e.value)


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


def test_olmo_snippet_trains_the_plans_batch_and_lr_with_olmo_core_itself(tmp_path):
    """The same run with OLMo-core's own BatchSizeSchedulerCallback, Scheduler base class, data loader batch-size
    setter and TransformerTrainModule type (built without a model: the callback reads only its optim and
    scheduler), where OLMo-core is installed (pip install ai2-olmo-core; it imports on a CPU)."""
    pytest.importorskip("olmo_core.train.callbacks")
    import types

    import torch
    from olmo_core.data.data_loader import DataLoaderBase
    from olmo_core.optim.scheduler import Scheduler
    from olmo_core.train.common import Duration as OlmoDuration
    from olmo_core.train.train_module import TransformerTrainModule

    plan = convert_schedule(**{**LLM, "adam_rule": "linear"}, growth_factor=2, seq_len=128, max_batch=4000)
    path = tmp_path / "plan.json"
    plan.save(path)
    text, _, _ = export(plan, "olmo")
    ns = {}
    exec(compile(text.replace("'plan.json'", repr(str(path))), "snippet", "exec"), ns)
    cb, sched, seq = ns["batch_size_scheduler"], ns["lr_scheduler"], plan.seq_len
    assert isinstance(sched, Scheduler) and isinstance(cb.schedule[0], OlmoDuration)

    class Loader(DataLoaderBase):  # OLMo-core's global_batch_size setter, nothing else
        _iter_batches = get_mock_batch = load_state_dict = reshuffle = state_dict = total_batches = None

    Loader.__abstractmethods__ = frozenset()
    loader = object.__new__(Loader)
    loader._global_batch_size, loader.batches_processed = cb.batch_sizes[0], 0
    module = object.__new__(TransformerTrainModule)
    module.optim = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=6e-4 * 2)  # a group at 2× the LR
    module.scheduler = sched
    trainer = types.SimpleNamespace(train_module=module, data_loader=loader, global_step=0, global_train_tokens_seen=0,
                                    epoch=1, max_duration=OlmoDuration.tokens(plan.total_samples * seq),
                                    callbacks={}, record_metric=lambda *a, **k: None)
    cb.trainer = trainer
    cb.post_attach()  # OLMo-core's check of the scheduler's units
    group = module.optim.param_groups[0]
    ran = []
    while trainer.global_train_tokens_seen < plan.total_samples * seq:
        cb.pre_load_batch()
        first = trainer.global_train_tokens_seen // seq
        trainer.global_step += 1
        trainer.global_train_tokens_seen += loader.global_batch_size
        loader.batches_processed += 1
        ran.append((first, loader.global_batch_size // seq, sched.set_lr(group, trainer) / 2))
    for s, b, lr in ran:  # the LR of the plan's stage at the batch OLMo-core trains, its √ factor undone
        stage = [x for x in plan.stages if x.start_sample <= s and x.batch_size == b][-1]
        assert lr == pytest.approx(plan.lr_at(stage, s), rel=1e-12)
    on_time = [st for st in changes(plan) if st.start_sample % st.batch_size == 0]
    assert len(on_time) >= 2
    by_start = {s: (b, lr) for s, b, lr in ran}
    for st in on_time:
        assert by_start[st.start_sample][0] == st.batch_size


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
    example = {k: v for k, v in LLM.items() if k != "adam_rule"}  # the doc's command: the default rule, no limit
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
    lev, _, lev_notes = export(fine, "levanter")
    assert f"$ bsadvisor export plan.json --format levanter\n{lev}" + "".join(f"note: {n}\n" for n in lev_notes) in doc
    with pytest.raises(UserError) as e:
        export(fine, "maxtext")
    assert f"$ bsadvisor export plan.json --format maxtext\nerror: {e.value}" in doc
    assert f"$ bsadvisor export plan.json --format megatron --megatron-version 0.17\n{ramp}" in doc


def test_the_export_command_takes_every_format_and_the_megatron_version(tmp_path):
    import json

    from hostile import assert_one_line_error, run_main

    bounds = [(0, 3072, 32), (3072, 6144, 64), (6144, 9216, 96), (9216, 20000, 128)]
    Plan(stages=[Stage(a, b, batch, 0.1, 0.0, 1.0) for a, b, batch in bounds], dataset_size=20_000).save(
        tmp_path / "plan.json")
    for fmt in ("megatron", "maxtext", "levanter"):
        r = run_main(["export", "plan.json", "--format", fmt, "--json"], cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["text"] == export(Plan.load(tmp_path / "plan.json"), fmt)[0]
    r = run_main(["export", "plan.json", "--format", "megatron", "--megatron-version", "0.17"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("--rampup-batch-size 32 32 ")
    r = run_main(["export", "plan.json", "--format", "megatron", "--megatron-version", "latest"], cwd=tmp_path)
    assert_one_line_error(r, ["--megatron-version", "latest"])


def test_the_doc_megatron_flags_through_megatron_cores_own_code():
    """Where a Megatron-LM checkout is at hand (MEGATRON_LM=path; Megatron-Core >= 0.18 is not on PyPI), the
    worked example's flags run through its own calculator and LR scheduler (benchmarks/megatron_paste_check.py)."""
    import os
    import sys
    from pathlib import Path

    root = os.environ.get("MEGATRON_LM")
    if not root:
        pytest.skip("set MEGATRON_LM to a Megatron-LM checkout (Megatron-Core >= 0.18) to run its own code")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from megatron_paste_check import run_flags

    plan = convert_schedule(**DEFAULT_RULE, seq_len=2048, round_to=8)
    text, _, notes = export(plan, "megatron")
    updates, same, err = run_flags(Path(root), text, plan)
    assert updates == len(plan_updates(plan)) and same == updates - 1  # the plan cuts its last update at the end
    stated = next(n for n in notes if "keep the temperature within" in n)
    assert abs(err - float(stated.split("within ")[1].split("%")[0]) / 100) < 0.005


@pytest.mark.parametrize("fmt", ["megatron", "levanter"])
def test_adamws_default_plan_is_refused_with_the_way_to_a_shape_the_framework_holds(fmt):
    """AdamW's default stops growing at 2 × B0 and its LR then decays as the original's × 2: no parametric LR
    schedule holds it, and the one-line refusal says which conversion they do hold, and at what measured cost."""
    plan = convert_schedule(**{k: v for k, v in DEFAULT_RULE.items() if k != "max_growth"}, seq_len=2048, round_to=8)
    assert plan.cap["limited_by"] == "growth"
    with pytest.raises(UserError) as e:
        export(plan, fmt)
    assert "\n" not in str(e.value) and "--max-growth 0" in str(e.value) and "0.012" in str(e.value)
    full = convert_schedule(**DEFAULT_RULE, seq_len=2048, round_to=8)  # max_growth 0: held
    export(full, fmt)
