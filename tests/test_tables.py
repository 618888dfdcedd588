"""Schedules given as a table (CSV) are recorded in the plan, followed through restarts and
momentum cycles, and compared against torch's own schedulers stepped once an update.

The truth is torch: OneCycleLR and CosineAnnealingWarmRestarts are stepped per update and written
to a CSV table, exactly what the docs tell a user to do; every update of the plan is then checked
against the original at the same sample with the temperature of docs/concepts.md eq. 1
(g = ε/(1−m)·(N/B − 1)), computed here, not by bsadvisor.
"""

import pytest
import torch

from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan
from bsadvisor.core.schedules import parse_schedule

N, B0, EPOCHS = 20_000, 100, 10
STEPS_PER_EPOCH = N // B0
STEPS = EPOCHS * STEPS_PER_EPOCH


def torch_table(make, momentum=0.9, cycle=False):
    """(lrs, momenta) torch's scheduler ``make(opt)`` holds at each update of the original run."""
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1, momentum=momentum)
    sched = make(opt)
    lrs, moms = [], []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    return lrs, (moms if cycle else None)


def write_table(path, lrs, moms=None, unit="step"):
    head = f"{unit},lr" + (",momentum" if moms else "")
    rows = [f"{k},{lr!r}" + (f",{moms[k]!r}" if moms else "") for k, lr in enumerate(lrs)]
    path.write_text("\n".join([head] + rows) + "\n")
    return path


def g(lr, m, b):  # docs/concepts.md eq. 1, exact rule
    return lr / (1 - m) * (N / b - 1)


def walk(plan):
    """(sample, setting) at the start of every update of the plan (its batches end at each epoch's end)."""
    s = 0
    while s < plan.total_samples:
        yield s, plan.at_sample(s)
        s = plan.update_end(s)


RESTARTS = {
    "warm_restarts": (lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=300, T_mult=2), False),
    "one_cycle": (lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=STEPS), True),
}


@pytest.mark.parametrize("name", RESTARTS)
def test_per_step_table_follows_torch_lr_and_temperature(tmp_path, name):
    make, cycle = RESTARTS[name]
    lrs, moms = torch_table(make, cycle=cycle)
    path = write_table(tmp_path / "lr.csv", lrs, moms)
    # a table with a momentum column sets the momentum: a different momentum beside it is refused
    plan = convert_schedule(batch_size=B0, dataset_size=N, epochs=EPOCHS, momentum=None if moms else 0.9,
                            schedule=str(path), schedule_unit="step", max_fraction=0.25)
    peak, worst, batches = max(lrs), 0.0, set()
    for s, st in walk(plan):
        k = (s // N) * STEPS_PER_EPOCH + (s % N) // B0  # the original's update at this sample
        m0 = moms[k] if moms else 0.9
        assert st.lr <= peak * 1.05 * (1 + 1e-12), (s, st)
        assert st.batch_size >= B0
        assert st.momentum == pytest.approx(m0, rel=1e-12)  # the table's momentum, as the original trains
        worst = max(worst, abs(g(st.lr, st.momentum, st.batch_size) / g(lrs[k], m0, B0) - 1))
        batches.add(st.batch_size)
    assert worst < 0.05
    assert len(batches) > 2  # it did grow the batch (else the check above says nothing)
    if name == "warm_restarts":  # after each restart (steps 300 and 900) the batch is back at B0
        for step in (300, 900):
            assert plan.at_sample((step // STEPS_PER_EPOCH) * N + (step % STEPS_PER_EPOCH) * B0).batch_size == B0


def test_the_plan_records_the_table_and_rebuilds_it_without_the_file(tmp_path):
    lrs, moms = torch_table(RESTARTS["one_cycle"][0], cycle=True)
    path = write_table(tmp_path / "lr.csv", lrs, moms)
    plan = convert_schedule(batch_size=B0, dataset_size=N, epochs=EPOCHS, schedule=str(path), schedule_unit="step")
    plan.save(tmp_path / "plan.json")
    path.unlink()  # the plan must not need the file
    again = Plan.load(tmp_path / "plan.json")
    run = again.original
    assert run is not None
    for k in (0, 1, 599, 600, 1234, STEPS - 1):
        s = (k // STEPS_PER_EPOCH) * N + (k % STEPS_PER_EPOCH) * B0
        assert run.lr_at(s) == lrs[k] and run.momentum_at(s) == moms[k]
        assert again.at_sample(s) == plan.at_sample(s)


def test_validate_rebuilds_the_original_of_a_table_plan(tmp_path):
    from bsadvisor.runtime.validate import baseline_of

    path = write_table(tmp_path / "lr.csv", [0.1] * 30 + [0.02] * 30, unit="epoch")
    plan = convert_schedule(batch_size=B0, dataset_size=N, epochs=60, schedule=str(path))
    plan.save(tmp_path / "plan.json")
    path.unlink()
    base = baseline_of(Plan.load(tmp_path / "plan.json"))
    for sample, lr in ((0, 0.1), (30 * N - 1, 0.1), (30 * N, 0.02), (60 * N - 1, 0.02)):
        assert base.at_sample(sample).lr == lr and base.at_sample(sample).batch_size == B0


def test_step_header_needs_schedule_unit_step(tmp_path):
    path = write_table(tmp_path / "lr.csv", [0.1] * 500 + [0.01] * 1500, unit="step")
    plan = convert_schedule(batch_size=B0, dataset_size=N, epochs=EPOCHS, schedule=str(path), schedule_unit="step")
    assert [s.batch_size for s in plan.stages] == [B0, round(N / (1 + (N / B0 - 1) * 0.1))]
    with pytest.raises(UserError, match="--schedule-unit step"):
        convert_schedule(batch_size=B0, dataset_size=N, epochs=EPOCHS, schedule=str(path))


def test_inline_table_text_parses_back_exactly():
    text = "step,lr,momentum\n0,0.1,0.85\n7,0.030000000000000002,0.95\n"
    t = parse_schedule(text)
    assert t.unit == "step" and t.lrs == [0.1, 0.030000000000000002] and t.momenta == [0.85, 0.95]
    assert parse_schedule(t.describe()).describe() == t.describe() == text


def test_the_plan_table_shows_a_peak_inside_a_stage(tmp_path):
    from bsadvisor.cli.render import plan_rows, plan_table
    from bsadvisor.core.baseline import baseline_plan

    path = write_table(tmp_path / "lr.csv", [0.01] * 3 + [0.1] * 2 + [0.01] * 5, unit="epoch")
    base = baseline_plan(batch_size=B0, dataset_size=N, epochs=10, schedule=str(path))  # one stage at B0
    (row,) = plan_rows(base)
    assert row["lr"] == (0.01, 0.01) and row["lr_max"] == 0.1
    assert "(max 0.1)" in plan_table(base).rows[0][3]
    grown = convert_schedule(batch_size=B0, dataset_size=N, epochs=10, schedule=str(path))
    assert all(r["lr_max"] <= max(r["lr"]) for r in plan_rows(grown))  # no stage hides a rise


def test_a_restart_in_an_expression_comes_back_down_like_a_table():
    """SequentialLR of two cosines (a restart written as an expression) against torch's own, per epoch."""
    def make(o):
        return torch.optim.lr_scheduler.SequentialLR(o, [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
                                                         torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)],
                                                     milestones=[10])
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1, momentum=0.9)
    sched, lrs = make(opt), []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    plan = convert_schedule(lr=0.1, batch_size=B0, dataset_size=N, epochs=20, momentum=0.9, max_fraction=0.5,
                            schedule="SequentialLR([CosineAnnealingLR(T_max=10), CosineAnnealingLR(T_max=10)], "
                                     "milestones=[10])")
    assert plan.at_sample(9 * N).batch_size > 4 * B0 and plan.at_sample(10 * N).batch_size == B0
    for s, st in walk(plan):
        lr0 = lrs[s // N]
        assert st.lr <= 0.1 * 1.05 * (1 + 1e-12) and st.batch_size >= B0
        assert g(st.lr, 0.9, st.batch_size) == pytest.approx(g(lr0, 0.9, B0), rel=1e-9)


def test_a_plan_that_recorded_only_the_tables_path_says_how_to_fix_it(tmp_path):
    lrs = [0.1] * 30 + [0.02] * 30
    plan = convert_schedule(batch_size=B0, dataset_size=N, epochs=60,
                            schedule=str(write_table(tmp_path / "lr.csv", lrs, unit="epoch")))
    doc = plan.to_dict()
    doc["inputs"]["schedule"] = f"table {tmp_path / 'gone.csv'}"  # as plans recorded a table before
    old = Plan.from_dict(doc)
    assert old.original is None  # the stages still load
    from bsadvisor.runtime.validate import baseline_of

    with pytest.raises(UserError, match="records its schedule table by path only.*convert the schedule again"):
        baseline_of(old)
