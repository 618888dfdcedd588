"""HFFollowPlan: the Hugging Face Trainer follows a plan with the user's two-line change, counted from outside
(the examples the forward sees between optimizer steps and the LR at each step, tests/hf_parts.py), and
refuses in one line what it cannot follow exactly."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from bsadvisor.core.errors import UserError  # noqa: E402
from bsadvisor.integrations.transformers.callback import (HFFollowPlan, check_transformers_version,  # noqa: E402
                                                          plan_updates, trainer_updates)

sys.path.insert(0, str(Path(__file__).parent))
from hf_parts import PLANS, make_plan, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def expected(plan):
    """Per update: the examples (the plan's batch, cut at the epoch's end) and the plan's LR and momentum there,
    walked here from Plan.at_sample independently of the callback's own walk."""
    out, s, n = [], 0, plan.dataset_size
    while s < plan.total_samples:
        b = min(plan.at_sample(s).batch_size, (s // n + 1) * n - s, plan.total_samples - s)
        st = plan.at_sample(s)
        out.append((b, st.lr, st.momentum))
        s += b
    return out


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_every_update_takes_the_plans_batch_at_the_plans_lr(kind, tmp_path):
    plan = make_plan(kind)
    assert len(set(plan.stage_batch_sizes())) >= 2
    if kind == "adamw":  # growth inside the one epoch
        assert plan.full_epochs == 1 and plan.stage_batch_sizes()[-1] == 32
    _, log = run(kind, str(tmp_path))
    want = expected(plan)
    assert [x[0] for x in log] == [w[0] for w in want]
    assert [x[1] for x in log] == pytest.approx([w[1] for w in want], rel=1e-12)
    assert [x[2] for x in log] == pytest.approx([w[2] for w in want], rel=1e-12)


def test_resume_from_a_trainer_checkpoint_continues_exactly(tmp_path):
    full, log = run("adamw", str(tmp_path / "a"))
    run("adamw", str(tmp_path / "b"), save_steps=40)  # before the first growth (update 146)
    resumed, rest = run("adamw", str(tmp_path / "c"), resume=str(tmp_path / "b" / "checkpoint-40"))
    assert rest == log[40:]
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_resume_the_trainer_would_place_elsewhere_is_refused(tmp_path):
    run("adamw", str(tmp_path / "b"), save_steps=160)  # after growth: the Trainer counts 160 micro-batches
    with pytest.raises(UserError, match="cannot resume this checkpoint exactly") as e:
        run("adamw", str(tmp_path / "c"), resume=str(tmp_path / "b" / "checkpoint-160"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change, fragment", [
    (dict(per_device=3), "per-device batch"),
    (dict(max_steps=10), "max_steps=10"),
    (dict(num_train_epochs=3), "num_train_epochs=3"),
    (dict(max_steps=320), "stop after 5 epochs"),  # the plan's 320 updates; the Trainer counts 64 an epoch
])
def test_settings_it_cannot_follow_are_refused_in_one_line(change, fragment, tmp_path):
    with pytest.raises(UserError, match=fragment) as e:
        run("sgd", str(tmp_path), **change)
    assert "\n" not in str(e.value)


def test_a_plan_whose_growth_falls_mid_group_is_refused():
    from bsadvisor import convert_schedule

    plan = convert_schedule(**{**PLANS["adamw"], "max_batch": None,
                               "schedule": "SequentialLR([LinearLR(start_factor=0.1, total_iters=16), "
                                           "CosineAnnealingLR(T_max=240, eta_min=1e-4)], milestones=[16])"})
    start = next(s for s in plan.stages if s.batch_size == 16).start_sample
    assert start % 16  # the growth starts half-way through a group of the new batch
    with pytest.raises(UserError, match="cannot follow this plan exactly") as e:
        run("adamw", "/tmp/unused-hf", plan=plan)
    assert "\n" not in str(e.value) and "--round-to" in str(e.value)


def test_the_replay_of_the_trainers_loop_shows_the_mid_group_step():
    # 8 micro-batches; updates of 1, 1, 1 micro-batch then k=2 from micro-batch 3 (odd): the Trainer steps at
    # (step + 1) % 2 == 0, so the first k=2 update ends after one micro-batch (half the gradient)
    got = trainer_updates(8, 8, 1, [[1, 1, 1, 2, 2, 1]])[0]
    assert got[:4] == [1, 1, 1, 1]
    assert trainer_updates(8, 8, 1, [[1, 1, 2, 2, 2]]) == [[1, 1, 2, 2, 2]]  # aligned: exact


def test_deepspeed_iterable_data_wrong_scheduler_and_other_releases_are_refused():
    plan = make_plan("sgd")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.05, momentum=0.9)
    from bsadvisor import BatchSizeScheduler

    sched = BatchSizeScheduler(plan, opt)
    cb = HFFollowPlan(sched)
    args = SimpleNamespace(deepspeed="ds_config.json", per_device_train_batch_size=8, n_gpu=0, world_size=1)
    with pytest.raises(UserError, match="DeepSpeed"):
        cb._refuse_settings(args, None, sched)
    args.deepspeed = None
    with pytest.raises(UserError, match="optimizers=\\(optimizer, scheduler\\)"):
        cb._refuse_settings(args, None, object())

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(3)

    with pytest.raises(UserError, match="auto_find_batch_size"):
        cb._refuse_settings(SimpleNamespace(**{**vars(args), "auto_find_batch_size": True}), None, sched)
    with pytest.raises(UserError, match="IterableDataset"):
        cb._refuse_settings(args, SimpleNamespace(dataset=Stream()), sched)
    with pytest.raises(UserError, match="pip install 'transformers>=5.25,<5.26'"):
        check_transformers_version("5.24.0")
    check_transformers_version("5.25.3")
    assert [b for _, _, b in plan_updates(plan)] == [w[0] for w in expected(plan)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_two_processes_follow_the_plan_and_stay_identical(kind, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(Path(__file__).parent / "hf_parts.py"),
           str(tmp_path), kind]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [json.loads((tmp_path / f"log{i}.json").read_text()) for i in range(2)]
    want = expected(make_plan(kind))
    assert [a[0] + b[0] for a, b in zip(*logs)] == [w[0] for w in want]  # both ranks' examples: the plan's batch
    assert [a[1] for a in logs[0]] == pytest.approx([w[1] for w in want], rel=1e-12)
    w0, w1 = (torch.load(tmp_path / f"weights{i}.pt") for i in range(2))
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)
