"""Plans in samples: per-step and single-epoch schedules, checked against torch's own schedulers.

The truth here is torch: its LinearLR/CosineAnnealingLR/SequentialLR stepped once per update
on a dummy optimizer give the original run's LR at every update; the plan's LR at each of
its own updates must be that LR (at the same sample position) times the stage's factor.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from bsadvisor.core.baseline import baseline_plan
from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan, Stage

LLM_SCHEDULE = ("SequentialLR([LinearLR(start_factor=0.01, total_iters=2000), "
                "CosineAnnealingLR(T_max=18000, eta_min=6e-5)], milestones=[2000])")
# max_growth 0: the full conversion, whose growth these tests follow (AdamW's default stops at 2 × B0)
LLM = dict(lr=6e-4, batch_size=500, dataset_size=10_000_000, epochs=1, optimizer="adamw", schedule_unit="step",
           schedule=LLM_SCHEDULE, max_growth=0)


def torch_lrs(make, lr: float, steps: int) -> list[float]:
    """The LR torch's scheduler holds at each of ``steps`` updates (stepped once per update)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def llm_torch(opt):
    S = torch.optim.lr_scheduler
    return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.01, total_iters=2000),
                                S.CosineAnnealingLR(opt, T_max=18000, eta_min=6e-5)], milestones=[2000])


def plan_updates(plan: Plan) -> list[tuple[int, int]]:
    """(start sample, batch) of every update of ``plan``, walked one by one (batches end early only
    at the end of an epoch or of the run): the rule the runtime follows."""
    n, total, s, out = plan.dataset_size, plan.total_samples, 0, []
    while s < total:
        b = plan.at_sample(s).batch_size
        epoch_end = min(total, (s // n + 1) * n) if n else total
        out.append((s, b))
        s = min(s + b, epoch_end)
    return out


#: Adam's rules as T ∝ η/B^p with N → ∞ (docs/concepts.md eqs. 8 and 15): linear (the default) p = 1,
#: square-root p = ½; and the fewest times fewer updates each gives on this schedule.
ADAM_POWER = {"linear": (1.0, 1.5), "sqrt": (0.5, 2.0)}


@pytest.fixture(scope="module", params=sorted(ADAM_POWER))
def llm(request):
    rule = request.param
    kw = {} if rule == "linear" else {"adam_rule": rule}  # linear: the default
    plan = convert_schedule(**LLM, **kw)
    assert plan.inputs["adam_rule"] == rule
    return plan, torch_lrs(llm_torch, 6e-4, 20_000), ADAM_POWER[rule]


def test_llm_warmup_is_kept_exactly(llm):
    plan, ref, _ = llm
    for k in range(2000):  # the warmup's 2,000 updates: batch 500 and torch's own LR at each
        setting = plan.at_sample(k * 500)
        assert setting.batch_size == 500
        assert math.isclose(setting.lr, ref[k], rel_tol=1e-9), k
    assert plan.stages[0].phase == "warmup" and plan.stages[0].end_sample == 2000 * 500


def test_llm_batch_grows_and_temperature_follows_the_original(llm):
    plan, ref, (p, fewer) = llm
    growth = [s for s in plan.stages if s.phase != "warmup"]
    assert len({s.batch_size for s in growth}) >= 3
    updates = plan_updates(plan)
    assert len(updates) == plan.updates
    assert plan.baseline_updates == 20_000 and plan.baseline_updates / plan.updates >= fewer
    # the realised temperature at every 1% of training, T ∝ η/B^p with N → ∞, original vs plan at the same sample
    starts = [u[0] for u in updates]
    for pct in range(100):
        sample = pct * plan.total_samples // 100
        original = ref[sample // 500] / 500 ** p
        i = max(j for j in range(len(starts)) if starts[j] <= sample) if pct else 0
        s, b = updates[i]
        realised = plan.at_sample(s).lr / b ** p
        assert abs(realised / original - 1) <= 0.05, (pct, realised, original)


def test_llm_lr_inside_each_stage_follows_torch_at_every_update(llm):
    plan, ref, (p, _) = llm
    for s, b in plan_updates(plan):
        stage = plan.stages[plan.stage_index_at_sample(s)]
        assert math.isclose(plan.at_sample(s).lr, stage.lr_scale * ref[s // 500], rel_tol=1e-9)
        # the factor is (B/B0)^p: B/B0 for the linear rule, √(B/B0) for the square-root rule
        assert math.isclose(stage.lr_scale, (b / 500) ** p, rel_tol=1e-12)


def test_per_step_cosine_over_epochs_follows_torch_at_every_step():
    """20 epochs of a per-step cosine with --max-batch: a staircase, the LR the cosine's inside each stage."""
    n, b0, epochs = 5000, 50, 20
    steps = epochs * math.ceil(n / b0)  # 2,000 updates of the original
    plan = convert_schedule(lr=0.1, batch_size=b0, dataset_size=n, epochs=epochs, momentum=0.9, schedule_unit="step",
                            schedule=f"CosineAnnealingLR(T_max={steps})", max_batch=400)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps), 0.1, steps)
    batches = plan.stage_batch_sizes()
    # up to the cap, in steps of at least the stage factor 1.25 (a last step of less to the cap is left out)
    assert batches == sorted(batches) and batches[0] == b0 and 400 / 1.25 < max(batches) <= 400
    assert len(set(batches)) >= 3 and all(b >= a * 1.25 * (1 - 1e-9) for a, b in zip(batches, batches[1:]) if b != a)
    # a stage starts inside an epoch: no per-epoch quantisation
    assert any(s.start_sample % n for s in plan.stages)
    spe = math.ceil(n / b0)
    for s, b in plan_updates(plan):
        step = (s // n) * spe + (s % n) // b0  # the original's update in progress at sample s
        stage = plan.stages[plan.stage_index_at_sample(s)]
        assert math.isclose(plan.at_sample(s).lr, stage.lr_scale * ref[step], rel_tol=1e-9)
        # exact rule: the factor keeps g = ε/(1−m)·(N/B − 1)
        assert math.isclose(stage.lr_scale, (n / b0 - 1) / (n / b - 1), rel_tol=1e-12)


def test_adamw_default_staircase_follows_its_target_within_five_percent_up_to_twice_b0():
    """AdamW's default under its growth limit (2 × B0): a batch stage per 5 % of growth of the linear rule's target
    B0·ε_peak/ε(s), read from torch's own warmup + cosine at every update of the plan. The batch never passes the
    target (by more than the rounding to an integer) nor 2 × B0, trails it by less than 5 % until 2 × B0 / 1.05, and
    the LR is the original's × B/B0 (the temperature kept). Ratio 1.25 (SGD's, and the unlimited conversion's)
    trains more updates to the same limit."""
    b0, peak = 500, 6e-4
    common = {**LLM, "max_growth": None}
    plan = convert_schedule(**common)
    assert plan.inputs["stage_factor"] == 1.05 and plan.options.growth_limit == 2.0
    ref = torch_lrs(llm_torch, peak, 20_000)
    for s, b in plan_updates(plan):
        original_lr = ref[s // b0]
        target = b0 * peak / original_lr if s >= 2000 * b0 else b0  # the warmup stays at B0
        assert b <= 2 * b0 and b - 0.5 <= target, (s, b, target)
        if b < 2 * b0 / 1.05:
            assert target <= 1.05 * (b + 0.5), (s, b, target)
        assert math.isclose(plan.at_sample(s).lr, b / b0 * original_lr, rel_tol=1e-9)
    coarse = convert_schedule(**common, stage_factor=1.25)
    assert coarse.updates > plan.updates and len(set(coarse.stage_batch_sizes())) < len(set(plan.stage_batch_sizes()))
    assert convert_schedule(**{**common, "max_growth": 0}).inputs["stage_factor"] == 1.25
    assert convert_schedule(**{**common, "optimizer": "sgd", "momentum": 0.9}).inputs["stage_factor"] == 1.25


def test_baseline_steps_like_torch_per_update():
    plan = baseline_plan(**LLM)
    ref = torch_lrs(llm_torch, 6e-4, 20_000)
    updates = plan_updates(plan)
    assert len(updates) == plan.updates == 20_000
    for k, (s, b) in enumerate(updates):
        assert b == 500 and math.isclose(plan.at_sample(s).lr, ref[k], rel_tol=1e-9)


def test_epoch_schedule_is_what_it_was():
    """The paper's CIFAR-10 case: 128 → 640 → 3,200 → 16,000 and 78,200 → 29,000 updates."""
    p = convert_schedule(lr=0.1, batch_size=128, dataset_size=50_000, epochs=200, momentum=0.9, rule="proportional",
                         max_fraction=1.0, schedule="MultiStepLR(milestones=[60,120,160], gamma=0.2)")
    assert p.stage_batch_sizes() == [128, 640, 3200, 16000] and p.epoch_aligned
    assert [p.epoch_of(s.start_sample) for s in p.stages] == [0, 60, 120, 160]
    assert (p.baseline_updates, p.updates) == (78_200, 29_000)
    assert all(math.isclose(s.lr, 0.1, rel_tol=1e-12) for s in p.stages)


@pytest.mark.parametrize("k", [2, 4])
def test_growth_factor_gives_integer_multiples(k):
    plan = convert_schedule(**LLM, growth_factor=k, world_size=4, micro_batch=125)
    batches = plan.stage_batch_sizes()
    # the cosine falls to a tenth: the linear rule grows the batch up to 10×, so 500 → 1000 → 2000 → 4000 (k = 2)
    # or 500 → 2000 (k = 4; 8000 would overshoot the temperature)
    assert batches[0] == 500 and len(set(batches)) == {2: 4, 4: 2}[k]
    for a, b in zip(batches, batches[1:]):
        assert b == a or b == k * a
    assert all(b % 500 == 0 for b in batches)  # multiples of world size × micro-batch
    for s in plan.stages:  # the LR factor absorbs the difference from the exact target: B/B0 (linear rule)
        assert math.isclose(s.lr_scale, s.batch_size / 500, rel_tol=1e-12)
    assert any("integer growth" in note for note in plan.notes)


def test_single_pass_uses_the_streaming_form_and_no_n10_cap():
    plan = convert_schedule(**LLM)
    assert "max_fraction" not in plan.cap and max(plan.stage_batch_sizes()) > 10_000_000 // 100 // 100
    assert any("N → ∞" in note for note in plan.notes)
    # the same run over 4 epochs of a quarter of the data is not a single pass: N/10 applies
    four = convert_schedule(**{**LLM, "dataset_size": 2_500_000, "epochs": 4})
    assert four.cap["limited_by"] in ("max_fraction", "run_length") and "max_fraction" in four.cap


def test_streaming_without_a_dataset_size():
    kw = {k: v for k, v in LLM.items() if k not in ("dataset_size", "epochs")}
    plan = convert_schedule(**kw, streaming=True, total_samples=10_000_000, seq_len=2048)
    same = convert_schedule(**LLM)
    assert plan.dataset_size is None and plan.stage_batch_sizes() == same.stage_batch_sizes()
    assert plan.to_dict()["total_tokens"] == 10_000_000 * 2048
    assert Plan.from_json(plan.to_json()).stage_batch_sizes() == plan.stage_batch_sizes()
    with pytest.raises(UserError, match="epochs needs dataset_size"):
        convert_schedule(**kw, streaming=True, epochs=1)


def test_training_length_three_ways():
    n, b0 = 10_000, 64
    base = dict(lr=0.1, batch_size=b0, dataset_size=n, schedule="CosineAnnealingLR(T_max=400)", schedule_unit="step")
    spe = math.ceil(n / b0)  # 157 updates an epoch, the last of 16 examples
    assert convert_schedule(**base, epochs=2.5).total_samples == 25_000
    assert convert_schedule(**base, total_samples=25_000).total_samples == 25_000
    # 2 epochs and 10 updates: 2·N + 10·B0 samples
    assert convert_schedule(**base, total_steps=2 * spe + 10).total_samples == 2 * n + 640
    with pytest.raises(UserError, match="training length once"):
        convert_schedule(**base, epochs=2, total_steps=10)


def test_fractional_epoch_counts_updates_like_the_runtime():
    n, b0 = 1000, 64
    p = baseline_plan(lr=0.1, batch_size=b0, dataset_size=n, epochs=1.5, schedule="CosineAnnealingLR(T_max=30)",
                      schedule_unit="step")
    assert p.updates == math.ceil(n / b0) + math.ceil(500 / b0) == len(plan_updates(p))


def test_v1_plan_files_still_load():
    doc = {"schema": "bsadvisor.plan/1", "dataset_size": 1000, "epochs": 3,
           "inputs": {"lr": 0.1, "batch_size": 10, "dataset_size": 1000, "epochs": 3},
           "stages": [{"start_epoch": 0, "end_epoch": 2, "batch_size": 10, "lr": 0.1, "momentum": 0.9},
                      {"start_epoch": 2, "end_epoch": 3, "batch_size": 50, "lr": 0.1, "momentum": 0.9}]}
    p = Plan.from_dict(doc)
    assert [(s.start_sample, s.end_sample, s.batch_size) for s in p.stages] == [(0, 2000, 10), (2000, 3000, 50)]
    assert p.at(2).batch_size == 50 and p.at_sample(2999).lr == 0.1 and p.updates == 200 + 20
    assert p.to_dict()["schema"] == "bsadvisor.plan/2"


def test_a_batch_starts_in_its_stage_and_ends_at_the_epoch():
    """A stage boundary inside an epoch: the update that starts before it keeps its size."""
    plan = Plan(stages=[Stage(0, 150, 40, 0.1, 0.0, 1.0), Stage(150, 400, 100, 0.1, 0.0, 1.0)], dataset_size=200)
    # epoch 0: 0,40,80,120 (batch 40; the 4th runs to 160), then 160 (100 → cut at 200); epoch 1: 200, 300
    assert plan_updates(plan) == [(0, 40), (40, 40), (80, 40), (120, 40), (160, 100), (200, 100), (300, 100)]
    assert plan.updates == 7 and [plan.stage_updates(s) for s in plan.stages] == [4, 3]


def test_a_csv_table_plan_keeps_each_rows_lr(tmp_path):
    """A plan records a CSV table's rows, so it rebuilds the table's LR like any schedule's: the hybrid tail
    over two rows is one stage, and the LR at every epoch is the table's × the factor."""
    table = tmp_path / "lr.csv"
    table.write_text("epoch,lr\n0,0.1\n60,0.02\n120,0.004\n160,0.0008\n")
    p = convert_schedule(batch_size=128, dataset_size=50_000, epochs=200, momentum=0.9, schedule=str(table),
                         rule="proportional", max_batch=1024, max_fraction=1.0)
    assert p.original is not None and p.stage_batch_sizes() == [128, 640, 1024]
    for epoch, lr in ((0, 0.1), (60, 0.02), (120, 0.004), (160, 0.0008), (199, 0.0008)):
        b = p.at(epoch).batch_size
        assert math.isclose(p.at(epoch).lr, lr * b / 128, rel_tol=1e-12)  # proportional rule: f(B) = B/B0


def test_growth_factor_needs_a_start_batch_that_splits_evenly():
    with pytest.raises(UserError, match="^growth_factor makes every batch B0"):
        convert_schedule(**LLM, growth_factor=2, world_size=3)  # 500 is not a multiple of 3
