"""CSV schedule tables: limits in the table's own unit, and a momentum column against --momentum."""
from __future__ import annotations

import pytest

from hostile import assert_one_line_error, run_main

from bsadvisor import convert_schedule
from bsadvisor.core.errors import UserError
from bsadvisor.core.schedules import table_from_text


def test_a_per_step_table_takes_rows_past_a_million_steps():
    """A language model's per-step schedule (2M steps) written as a table: the rows are steps, not epochs."""
    n, b0 = 10**9, 512  # 1,953,125 steps an epoch
    plan = convert_schedule(lr=1e-3, batch_size=b0, dataset_size=n, epochs=1, optimizer="adamw",
                            schedule="step,lr\n0,0.001\n1500000,0.0005\n", schedule_unit="step")
    assert plan.inputs["schedule_unit"] == "step"
    # the decay by 2 at step 1,500,000 (sample 1.5e6 × 512) grows the batch by 2 there (Adam's linear rule)
    at = 1_500_000 * b0
    assert plan.at_sample(at - 1).batch_size == b0 and plan.at_sample(at).batch_size == 2 * b0


def test_an_epoch_table_keeps_its_epoch_limit_and_says_epoch():
    with pytest.raises(UserError, match=r"epoch must be a whole number .* below 1,000,000"):
        table_from_text("epoch,lr\n0,0.1\n1500000,0.01\n", "t.csv")
    with pytest.raises(UserError, match=r"step must be a whole number .* below 4,611,686,018,427,387,904"):
        table_from_text("step,lr\n0,0.1\n4611686018427387904,0.01\n", "t.csv")
    # a row past the run's end is refused in the run's unit
    with pytest.raises(UserError, match="row at step 1500000, at or past the end"):
        convert_schedule(lr=1e-3, batch_size=512, dataset_size=10**8, epochs=1,
                         schedule="step,lr\n0,0.001\n1500000,0.0005\n", schedule_unit="step")


TABLE = "epoch,lr,momentum\n0,0.1,0.8\n5,0.02,0.9\n"


def test_the_tables_momentum_column_sets_the_momentum_and_is_recorded():
    plan = convert_schedule(batch_size=64, dataset_size=50_000, epochs=10, schedule=TABLE)
    assert plan.inputs["momentum"] == 0.8
    assert [s.momentum for s in plan.stages][0] == 0.8 and plan.stages[-1].momentum == 0.9
    same = convert_schedule(batch_size=64, dataset_size=50_000, epochs=10, schedule=TABLE, momentum=0.8)
    assert same.to_dict() == plan.to_dict()


def test_a_conflicting_momentum_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="conflicts with the schedule table"):
        convert_schedule(batch_size=64, dataset_size=50_000, epochs=10, schedule=TABLE, momentum=0.5)
    (tmp_path / "m.csv").write_text(TABLE)
    r = run_main(["convert-schedule", "--batch-size", "64", "--dataset-size", "50000", "--epochs", "10",
                  "--schedule", "m.csv", "--momentum", "0.5"], cwd=tmp_path)
    assert_one_line_error(r, ["--momentum 0.5", "third column", "0.8"])


def test_validate_with_a_momentum_table_takes_the_tables_momentum_not_the_targets(tmp_path):
    """The target's own momentum is a default, not a conflict: the table's column is the momentum."""
    from bsadvisor.runtime.recipe import options_for_target
    from bsadvisor.targets.loading import load_target

    (tmp_path / "m.csv").write_text("epoch,lr,momentum\n0,0.05,0.5\n3,0.01,0.6\n")
    target = load_target("builtin:linreg")
    prepared = options_for_target(target, {"schedule": str(tmp_path / "m.csv"), "epochs": 6})
    assert prepared.options["momentum"] is None
    plan = convert_schedule(**prepared.options)
    assert plan.inputs["momentum"] == 0.5 and plan.stages[-1].momentum == 0.6
