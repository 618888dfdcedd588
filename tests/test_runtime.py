"""The runtime pieces, each checked against an independent truth (hand-built plans only)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from bsadvisor import BatchSizeScheduler, PlanBatchSampler
from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan, Stage
from bsadvisor.runtime.batches import make_gather
from bsadvisor.runtime.step import train_step


def make_plan(n=103, stages=((0, 2, 10, 0.1, 0.9), (2, 3, 25, 0.1, 0.9), (3, 5, 40, 0.02, 0.5))):
    """A plan of whole-epoch stages (given in epochs, stored in samples)."""
    return Plan(stages=[Stage(a * n, b * n, bs, lr, m, temperature=1.0) for a, b, bs, lr, m in stages],
                dataset_size=n)


def test_sampler_yields_planned_batch_sizes_and_each_example_once():
    plan = make_plan()
    s = PlanBatchSampler(plan, seed=3)
    orders = []
    for epoch in range(plan.epochs):
        s.set_epoch(epoch)
        batches = list(s)
        b = plan.batch_sizes()[epoch]
        expected = [b] * (103 // b) + ([103 % b] if 103 % b else [])
        assert [len(x) for x in batches] == expected
        assert len(s) == len(expected) == math.ceil(103 / b)
        flat = [i for x in batches for i in x]
        assert sorted(flat) == list(range(103))
        orders.append(flat)
    assert orders[0] != orders[1]  # a fresh shuffle every epoch
    assert sum(len(PlanBatchSampler(plan).index_batches(e)) for e in range(plan.epochs)) == plan.updates


def test_sampler_advances_itself_and_is_reproducible():
    plan = make_plan()
    auto = PlanBatchSampler(plan, seed=7)
    explicit = PlanBatchSampler(plan, seed=7)
    for epoch in range(plan.epochs):
        explicit.set_epoch(epoch)
        assert list(auto) == list(explicit)
    assert list(PlanBatchSampler(plan, seed=8)) != list(PlanBatchSampler(plan, seed=7))


def test_sampler_drop_last():
    plan = make_plan()
    s = PlanBatchSampler(plan, drop_last=True)
    s.set_epoch(3)
    batches = list(s)
    assert len(batches) == len(s) == 103 // 40 and all(len(b) == 40 for b in batches)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_sampler_ranks_split_each_global_batch(world_size):
    plan = make_plan()
    for epoch in range(plan.epochs):
        glob = PlanBatchSampler(plan, seed=1)
        glob.set_epoch(epoch)
        global_batches = list(glob)
        per_rank = []
        for r in range(world_size):
            s = PlanBatchSampler(plan, seed=1, rank=r, world_size=world_size)
            s.set_epoch(epoch)
            per_rank.append(list(s))
            assert len(s) == len(global_batches)
        for k, gb in enumerate(global_batches):
            shares = [per_rank[r][k] for r in range(world_size)]
            assert sorted(i for sh in shares for i in sh) == sorted(gb)  # disjoint, together the global batch
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
        union = [i for r in range(world_size) for b in per_rank[r] for i in b]
        assert sorted(union) == list(range(103))


def test_sampler_works_with_dataloader_and_rejects_wrong_size():
    plan = make_plan()
    ds = torch.utils.data.TensorDataset(torch.arange(103))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=PlanBatchSampler(plan))
    assert [len(b[0]) for b in loader] == [10] * 10 + [3]
    with pytest.raises(UserError):
        PlanBatchSampler(plan, dataset_size=100)


def test_scheduler_sets_lr_and_momentum_and_round_trips():
    plan = make_plan()
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 2.0}], lr=1.0, momentum=0.0)
    sched = BatchSizeScheduler(plan, opt)  # applies the start on construction
    seen = []
    for epoch in range(plan.epochs):  # the epoch-level convenience
        sched.set_epoch(epoch)
        seen.append((sched.get_last_batch_size(), sched.get_last_lr(), opt.param_groups[0]["momentum"]))
    assert seen == [(10, [0.1, 0.2], 0.9)] * 2 + [(25, [0.1, 0.2], 0.9)] + [(40, [0.02, 0.04], 0.5)] * 2

    opt2 = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 2.0}], lr=1.0)
    sched2 = BatchSizeScheduler(plan, opt2)
    s1 = BatchSizeScheduler(plan, opt)
    for _ in range(11 + 11 + 5):  # per update: epochs 0 and 1 at 10 (11 updates each), epoch 2 at 25 (5)
        s1.step()
    sched2.load_state_dict(copy.deepcopy(s1.state_dict()))
    assert sched2.samples_seen == 3 * 103 and sched2.last_step == 27 and sched2.get_last_batch_size() == 40
    assert sched2.get_last_lr() == pytest.approx([0.02, 0.04]) and opt2.param_groups[1]["momentum"] == 0.5


def test_scheduler_sets_adam_beta1():
    plan = make_plan()
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = BatchSizeScheduler(plan, opt)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    sched.set_epoch(3)
    assert opt.param_groups[0]["betas"] == (0.5, 0.999) and sched.get_last_lr() == [0.02]


@pytest.mark.parametrize("micro", [1, 7, 16, 50, 64])
def test_accumulation_equals_one_large_batch_update(micro):
    torch.manual_seed(0)
    n, d = 50, 5
    x, y = torch.randn(n, d, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    base = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(torch.float64)

    def loss_fn(m, batch):
        return ((m(batch[0]).squeeze(-1) - batch[1]) ** 2).mean()

    # Independent truth: the full-batch gradient, then one SGD step by hand.
    ref = copy.deepcopy(base)
    grads = torch.autograd.grad(loss_fn(ref, [x, y]), list(ref.parameters()))
    expected = [p.detach() - 0.1 * g for p, g in zip(ref.parameters(), grads)]

    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gather = make_gather(torch.utils.data.TensorDataset(x, y))
    loss = train_step(model, opt, loss_fn, gather, torch.arange(n), max_micro_batch=micro)
    assert loss == pytest.approx(float(loss_fn(base, [x, y]).detach()), rel=1e-12)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_generic_dataset_goes_through_collate():
    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"x": torch.tensor([float(i)])}

    calls = []

    def collate(items):
        calls.append(len(items))
        return torch.stack([it["x"] for it in items])

    batch = make_gather(Items(), collate)(torch.tensor([4, 1, 2]))
    assert calls == [3] and batch.squeeze(-1).tolist() == [4.0, 1.0, 2.0]


# ------------------------------------------------------------------ per update, stages inside an epoch
def mid_epoch_plan() -> Plan:
    """N = 100; batch 8 until sample 150 (inside epoch 1), then 30 until 260 (epoch 2 ends at 60 of 100)."""
    return Plan(stages=[Stage(0, 150, 8, 0.1, 0.9, 1.0), Stage(150, 260, 30, 0.05, 0.9, 1.0)], dataset_size=100)


def expected_updates(plan: Plan) -> list[tuple[int, int]]:
    """(start sample, examples) of every update, from the rule written out: a batch takes the size of
    the stage holding its first sample and ends early only at the epoch's or the run's end."""
    n, out, s = plan.dataset_size, [], 0
    bounds = [(st.start_sample, st.end_sample, st.batch_size) for st in plan.stages]
    while s < plan.total_samples:
        b = next(bs for a, e, bs in bounds if a <= s < e)
        stop = min(s + b, (s // n + 1) * n, plan.total_samples)
        out.append((s, stop - s))
        s = stop
    return out


def test_stage_boundary_inside_an_epoch_and_every_example_once():
    plan = mid_epoch_plan()
    sampler = PlanBatchSampler(plan, seed=5)
    got = []
    for epoch in range(plan.full_epochs):  # 3 epochs, the last one partial
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert len(flat) == len(set(flat))  # no example twice in an epoch
        if epoch < 2:
            assert sorted(flat) == list(range(100))  # every example of a whole epoch
        else:
            assert len(flat) == 60  # the run ends 60 examples into epoch 2
        pos = epoch * 100
        for b in batches:
            got.append((pos, len(b)))
            pos += len(b)
    assert got == expected_updates(plan) and len(got) == plan.updates
    # epoch 1 switches from 8 to 30 after 7 updates (sample 148 < 150 keeps 8; 156 ≥ 150 takes 30), and
    # its last batch is cut at the epoch's end (186 + 30 > 200)
    assert [b for s, b in got if 100 <= s < 200] == [8] * 7 + [30, 14]


def test_scheduler_per_update_follows_at_sample():
    plan = mid_epoch_plan()
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0, momentum=0.0)
    sched = BatchSizeScheduler(plan, opt)
    for start, size in expected_updates(plan):
        setting = plan.at_sample(start)
        assert sched.samples_seen == start and sched.get_last_batch_size() == setting.batch_size
        assert sched.get_last_lr() == [setting.lr] and opt.param_groups[0]["momentum"] == setting.momentum
        sched.step()  # no argument: the scheduler cuts the batch at the epoch end as the sampler does
    assert sched.done and sched.samples_seen == plan.total_samples


def test_sampler_resumes_mid_epoch_from_its_state():
    plan = mid_epoch_plan()
    first = PlanBatchSampler(plan, seed=2)
    it = iter(first)
    head = [next(it) for _ in range(9)]
    state = copy.deepcopy(first.state_dict())
    again = PlanBatchSampler(plan, seed=2)
    again.load_state_dict(state)
    whole = PlanBatchSampler(plan, seed=2)
    assert head + list(again) == list(whole)


def test_sampler_seek_stands_at_a_sample_position_like_a_resumed_state():
    plan = mid_epoch_plan()
    whole = PlanBatchSampler(plan, seed=2)
    it = iter(whole)
    head = [next(it) for _ in range(9)]
    rest = list(it)
    seeked = PlanBatchSampler(plan, seed=2)
    seeked.seek(sum(len(b) for b in head))
    assert list(seeked) == rest
    with pytest.raises(UserError, match="samples"):
        seeked.seek(plan.total_samples + 1)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shares_stand_ins_and_loss_weights_sum_to_the_global_mean(world):
    from bsadvisor.runtime.batches import loss_weight, micro_batches, rank_share

    for n in (1, 2, 5, 12):
        batch = torch.arange(100, 100 + n)
        shares = [rank_share(batch, r, world) for r in range(world)]
        assert torch.cat([s for s, stand_in in shares if not stand_in]).tolist() == batch.tolist()
        assert all(s.tolist() == [100] for s, stand_in in shares if stand_in)
        total = 0.0
        for share, stand_in in shares:
            k = micro_batches(len(share), 2)
            parts = torch.tensor_split(share, k)
            assert len(parts) == k and all(len(p) <= 2 for p in parts)
            total += sum(loss_weight(len(p), n, world, stand_in) for p in parts)
        assert total / world == pytest.approx(1.0)  # DDP's mean of the summed weights: the global batch's mean


def test_split_batch_walks_nested_batches_and_refuses_other_leaves():
    from collections import namedtuple

    from bsadvisor.runtime.batches import batch_rows, split_batch

    Pair = namedtuple("Pair", "x y")
    batch = {"a": Pair(torch.arange(5), torch.arange(5) * 2), "b": [torch.ones(5, 2)]}
    assert batch_rows(batch) == 5
    parts = split_batch(batch, 2, 5, "max_micro_batch")
    assert [p["a"].x.tolist() for p in parts] == [[0, 1, 2], [3, 4]] and isinstance(parts[1]["a"], Pair)
    assert parts[1]["b"][0].shape == (2, 2)
    with pytest.raises(UserError, match="^max_micro_batch splits batches of tensors with 5 rows each; this batch "
                                        "holds a str"):
        split_batch({"x": torch.arange(5), "name": "s"}, 2, 5, "max_micro_batch")
    assert batch_rows(["no tensor"]) is None


def test_plan_fingerprint_is_its_stages_and_inputs():
    plan = Plan(stages=[Stage(0, 20, 4, 0.1, 0.9, 1.0)], dataset_size=10, inputs={"schedule": "A", "lr": 0.1})
    same = Plan.from_json(plan.to_json())
    assert same.fingerprint() == plan.fingerprint()
    other_schedule = Plan(stages=plan.stages, dataset_size=10, inputs={"schedule": "B", "lr": 0.1})
    other_batch = Plan(stages=[Stage(0, 20, 5, 0.1, 0.9, 1.0)], dataset_size=10, inputs=plan.inputs)
    assert other_schedule.fingerprint() != plan.fingerprint() != other_batch.fingerprint()


def test_train_options_are_checked_once_and_keywords_override_them():
    from bsadvisor.runtime.train import TrainOptions, train_plan

    with pytest.raises(UserError, match="checkpoint_every must be a whole number"):
        TrainOptions(checkpoint_every=0)
    with pytest.raises(UserError, match="evals"):
        TrainOptions(evals=0)
    with pytest.raises(TypeError):
        train_plan(None, None, no_such_setting=1)
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    data = torch.utils.data.TensorDataset(x, x.sum(1))

    def run(*args, **kwargs):
        from bsadvisor import Target

        torch.manual_seed(0)
        target = Target(model=torch.nn.Linear(3, 1), train_dataset=data, batch_size=8, lr=0.05,
                        loss_fn=lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean())
        plan = Plan(stages=[Stage(0, 80, 8, 0.05, 0.0, 1.0)], dataset_size=40)
        return train_plan(target, plan, *args, **kwargs)

    def losses(result):
        return [(rec["train_loss"], rec["updates"]) for rec in result.history]

    by_keywords = losses(run(seed=3, max_micro_batch=4))
    assert by_keywords == losses(run(TrainOptions(seed=3, max_micro_batch=4)))
    assert by_keywords == losses(run(TrainOptions(seed=5), seed=3, max_micro_batch=4))
    assert losses(run(seed=4)) != by_keywords


# ------------------------------------------------------------------ one owner per rule
def test_scheduler_resumes_only_with_the_plans_identity():
    """The scheduler's state holds Plan.fingerprint (what checkpoints compare): same stages with other inputs are
    another plan; a state written with the whole plan document (plan.to_dict()) still loads."""
    plan = mid_epoch_plan()
    model = torch.nn.Linear(2, 1)
    first = BatchSizeScheduler(plan, torch.optim.SGD(model.parameters(), lr=1.0))
    first.step()
    state = first.state_dict()
    assert state["plan"] == plan.fingerprint()
    again = BatchSizeScheduler(plan, torch.optim.SGD(model.parameters(), lr=1.0))
    again.load_state_dict({**state, "plan": plan.to_dict()})
    assert again.samples_seen == first.samples_seen
    other = Plan(stages=plan.stages, dataset_size=plan.dataset_size, inputs={"lr": 0.1})
    assert other.fingerprint()["stages"] == plan.fingerprint()["stages"]
    with pytest.raises(UserError, match="different plan"):
        BatchSizeScheduler(other, torch.optim.SGD(model.parameters(), lr=1.0)).load_state_dict(state)


def test_one_dataset_size_refusal_for_every_path():
    from bsadvisor.core.original import check_dataset_size

    plan = mid_epoch_plan()  # N = 100
    with pytest.raises(UserError) as direct:
        check_dataset_size(plan, 64)
    with pytest.raises(UserError) as sampler:
        PlanBatchSampler(plan, dataset_size=64)
    assert str(direct.value) == str(sampler.value) == (
        "the plan was made for 100 training examples but the dataset has 64; re-run convert-schedule with "
        "--dataset-size 64")
    check_dataset_size(plan, 100)  # the plan's own size passes


def test_lengths_given_reads_dicts_and_option_objects():
    from types import SimpleNamespace

    from bsadvisor.core.options import LENGTH_OPTIONS, lengths_given

    assert LENGTH_OPTIONS == ("epochs", "total_samples", "total_steps")
    assert lengths_given({"epochs": 3, "total_samples": None}) == ["epochs"]
    assert lengths_given({"total_steps": 0, "epochs": None}) == ["total_steps"]  # 0 is given (and refused later)
    assert lengths_given(SimpleNamespace(epochs=None, total_samples=10, total_steps=5)) == ["total_samples",
                                                                                          "total_steps"]
    assert lengths_given({}) == []
