"""Starting larger on top of the converted decay (docs/results.md, "A noise-bounded start"): the §5.2
increased-LR variant under AdamW's linear rule, and the two start configs benchmarks/adam_rules.py measures
(batch × K with the LR × √K; batch K·B0 only where the plan's batch is below it), against closed forms."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from bsadvisor.core.baseline import baseline_plan
from bsadvisor.core.recommend import recommend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import adam_rules  # noqa: E402  (the benchmark's plan transforms)

B0, WARMUP, STEPS = 32, 40, 500
SCHED = (f"SequentialLR([LinearLR(start_factor=0.01, total_iters={WARMUP}), CosineAnnealingLR(T_max={STEPS - WARMUP}, "
         f"eta_min=0.0002)], milestones=[{WARMUP}])")
RUN = dict(lr=2e-3, batch_size=B0, dataset_size=B0 * STEPS, epochs=1, schedule=SCHED, schedule_unit="step",
           optimizer="adamw", momentum=0.9, adam_rule="linear", max_batch=4096)


def walk(plan):
    """Every update of ``plan`` as (first sample, batch, LR): one batch from where the last ended (one epoch, so
    nothing cuts a batch but the run's end), counted here, not by Plan.updates."""
    out, s = [], 0
    while s < plan.total_samples:
        st = plan.at_sample(s)
        out.append((s, st.batch_size, st.lr))
        s += st.batch_size
    return out


def original_lr(s):
    """The original schedule's LR at sample s (per-step warmup then cosine, B0 per step): the closed form."""
    step = s // B0
    if step < WARMUP:
        return 2e-3 * (0.01 + 0.99 * step / WARMUP)
    return 2e-4 + (2e-3 - 2e-4) * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP))) / 2


@pytest.mark.parametrize("k", [2.0, 4.0])
def test_increase_lr_under_adam_linear_rule_starts_at_k_b0_with_k_times_the_lr(k):
    """§5.2 under the linear rule: the warmup is kept (as a warmup, at K·B0 over the same samples), and from the
    first update the batch is K·B0 and the LR K × the original's at the same sample, until the batch grows."""
    plan, plain = recommend(RUN, increase_lr=k), recommend(RUN)
    first = plan.stages[0]
    assert first.phase == "warmup" and first.batch_size == k * B0 and first.end_sample == WARMUP * B0
    ups = walk(plan)
    assert plan.updates == len(ups)
    for s, b, lr in ups:
        if b == k * B0:
            assert lr == pytest.approx(k * original_lr(s), rel=1e-9)
    # the warmup's K·B0 batches: WARMUP·B0 samples in WARMUP/K updates
    assert sum(1 for s, _, _ in ups if s < WARMUP * B0) == math.ceil(WARMUP / k)
    # the LR per example is kept: Σ LR over the updates as the original's (to the staircase's rounding), in
    # about K× fewer updates than the plain plan
    base = walk(baseline_plan(**{n: v for n, v in RUN.items() if n not in ("adam_rule", "max_batch")}))
    assert sum(lr for *_, lr in ups) / sum(lr for *_, lr in base) == pytest.approx(1.0, abs=0.02)
    assert plain.updates / (1.1 * k) < plan.updates < plain.updates / (0.9 * k)


def test_batch_times_k_lr_times_root_k_is_the_same_batches_at_lr_over_root_k():
    k = 2.0
    lin = recommend(RUN, increase_lr=k)
    root = adam_rules.lr_times(lin, k ** -0.5)
    assert walk(root) == [(s, b, pytest.approx(lr / math.sqrt(k), rel=1e-12)) for s, b, lr in walk(lin)]
    for s, b, lr in walk(root)[:WARMUP // 2]:  # the warmup at 2·B0: LR √2 × the original's
        assert b == 2 * B0 and lr == pytest.approx(math.sqrt(2) * original_lr(s), rel=1e-9)


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_start_at_raises_only_the_batches_below_k_b0(power):
    """``+sKlr`` / ``+sKsqrt``: the batch max(K·B0, B(s)) at every sample, the LR × (K·B0/B(s))^power where the
    plan's batch B(s) was below K·B0, the plan unchanged from where it passes K·B0."""
    plain = recommend(RUN)
    start = adam_rules.start_at(plain, 2 * B0, power)
    for s in range(0, plain.total_samples, 7):
        a, b = start.at_sample(s), plain.at_sample(s)
        assert a.batch_size == max(2 * B0, b.batch_size)
        want = b.lr * (2 * B0 / b.batch_size) ** power if b.batch_size < 2 * B0 else b.lr
        assert a.lr == pytest.approx(want, rel=1e-12)
    assert start.updates == len(walk(start)) < plain.updates


def test_parse_config_reads_the_start_flags():
    assert adam_rules.parse_config("linear+x2lr")["start"] == ("x", 2.0, "lr")
    assert adam_rules.parse_config("linear+x1.5sqrt")["start"] == ("x", 1.5, "sqrt")
    assert adam_rules.parse_config("linear+s4lr+cap2")["start"] == ("s", 4.0, "lr")
    assert adam_rules.parse_config("linear")["start"] is None
    with pytest.raises(SystemExit):
        adam_rules.parse_config("linear+x2")
    # the control: the original at B0 with its LR × K (no rule to parse)
    assert adam_rules.is_control("original*2") and adam_rules.is_control("sde-only")
    assert not adam_rules.is_control("linear+x2lr")


def test_the_lr_control_is_the_original_at_k_times_the_lr():
    base = baseline_plan(**{k: v for k, v in RUN.items() if k not in ("adam_rule", "max_batch")})
    walked = walk(adam_rules.lr_times(base, 8.0))
    assert walked == [(s, B0, pytest.approx(8 * original_lr(s), rel=1e-9)) for s, *_ in walk(base)]


def test_the_original_is_what_the_closed_form_says():
    """The check of ``original_lr`` itself: the library's original run at B0 trains at it."""
    base = baseline_plan(**{k: v for k, v in RUN.items() if k not in ("adam_rule", "max_batch")})
    for s, b, lr in walk(base):
        assert b == B0 and lr == pytest.approx(original_lr(s), rel=1e-9)


def test_advise_help_says_there_is_no_larger_start_by_default():
    from hostile import cli_env, run_main

    r = run_main(["advise", "--help"], cwd=Path(__file__).resolve().parents[1], env=cli_env(COLUMNS="200"))
    text = " ".join(r.stdout.replace("│", " ").split())
    assert r.returncode == 0 and "No larger start by default: --increase-lr K" in text, text
    assert "A noise-bounded start" in text


def test_train_seeds_trains_what_is_missing_and_copies_an_identical_config(monkeypatch):
    """The benchmarks' one seed loop: a seed already stored is skipped, a config that trains exactly as another
    copies that config's runs (marked same_as), the rest is trained, the original's seed 0 with the monitor; a
    stored run of another plan than the config makes now stops the loop instead of being read as this one's."""
    from types import SimpleNamespace

    trained = []
    P = SimpleNamespace(updates=10, stage_batch_sizes=lambda: [8])
    Q = SimpleNamespace(updates=10, stage_batch_sizes=lambda: [8])

    def train_one(target, init, plan, seed, monitor):
        trained.append((plan, seed, monitor))
        return row(float(seed)), ([{"sample": 0}] if monitor else [])

    def row(metric):  # what train_one returns, as the progress line reads it
        return {"metric": metric, "updates": 10, "wall_s": 0.1, "batches": [8]}

    monkeypatch.setattr(adam_rules, "train_one", train_one)
    runs, noise = {adam_rules.key("m", "original", 1): row(9.0)}, {}
    adam_rules.train_seeds("m", "original", P, 3, None, None, noise, None, runs.get, runs.__setitem__)
    assert trained == [(P, 0, True), (P, 2, False)] and noise == {"trace": [{"sample": 0}]}
    adam_rules.train_seeds("m", "linear", Q, 3, None, None, noise, "original", runs.get, runs.__setitem__)
    assert len(trained) == 2  # nothing trained again
    assert [runs[adam_rules.key("m", "linear", s)] for s in range(3)] == [
        {**row(m), "same_as": "original"} for m in (0.0, 9.0, 2.0)]
    split = SimpleNamespace(updates=10, stage_batch_sizes=lambda: [8, 8])  # the same batches, in two stages
    adam_rules.train_seeds("m", "linear", split, 3, None, None, noise, None, runs.get, runs.__setitem__)
    changed = SimpleNamespace(updates=9, stage_batch_sizes=lambda: [8, 16])  # the library's plan moved on
    with pytest.raises(SystemExit, match="the cached run trained another plan"):
        adam_rules.train_seeds("m", "linear", changed, 3, None, None, noise, None, runs.get, runs.__setitem__)
    assert len(trained) == 2
