"""FollowPlan: a real Lightning Trainer (CPU) follows a plan update by update, as bsadvisor's own loop does.

The truths are independent of the callback: the plan's batches come from ``plan.at_sample``
and the epoch rule written out here (a batch ends early only at an epoch's end), the
weights from ``bsadvisor.runtime.train.train_plan`` on the same model, data and seed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from bsadvisor import FollowPlan, Plan, Stage, UserError, load_target
from bsadvisor.runtime.train import train_plan

sys.path.insert(0, str(Path(__file__).parent))
from lightning_parts import N, Regression, make_data, make_plan, mse, reference_target, trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def planned_updates(plan) -> list[tuple[int, int]]:
    """(start sample, global batch) of every update: the stage's batch at its start, cut at the epoch's end."""
    s, out = 0, []
    while s < plan.total_samples:
        stop = min(s + plan.at_sample(s).batch_size, (s // N + 1) * N, plan.total_samples)
        out.append((s, stop - s))
        s = stop
    return out


def weights(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class BarTotals(TQDMProgressBar):
    """The progress bar's total at each epoch start (what a user sees)."""

    def __init__(self):
        super().__init__()
        self.totals = []

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.totals.append(self.train_progress_bar.total)


def test_every_update_has_the_planned_batch_lr_and_momentum(tmp_path):
    plan = make_plan()
    assert any(s.start_sample % N for s in plan.stages), "the test needs a stage that starts inside an epoch"
    module, bar = Regression(), BarTotals()
    # the progress bar first: FollowPlan still sets each epoch's length before the bar reads it;
    # max_epochs past the plan's 3: the plan ends the run
    trainer(tmp_path, [bar, FollowPlan(plan)], enable_progress_bar=True, max_epochs=10).fit(module)

    expected = planned_updates(plan)
    assert len(module.updates) == len(expected) == plan.updates
    for (rows, lr, momentum), (start, batch) in zip(module.updates, expected):
        setting = plan.at_sample(start)
        assert (rows, lr, momentum) == (batch, setting.lr, setting.momentum), start
    assert len({lr for _, lr, _ in module.updates}) > 10  # the LR moves update by update
    per_epoch = [sum(1 for start, _ in expected if start // N == e) for e in range(plan.full_epochs)]
    assert module.epoch_batches == per_epoch == bar.totals and len(set(per_epoch)) == 3


def test_a_shrinking_batch_gets_its_longer_epoch(tmp_path):
    # Lightning sizes every epoch by the first one; here the second has four times its batches
    plan = Plan(stages=[Stage(0, N, 64, 0.05, 0.9, 1.0), Stage(N, 2 * N, 16, 0.01, 0.5, 1.0)], dataset_size=N)
    module = Regression()
    trainer(tmp_path, [FollowPlan(plan)], max_epochs=2, reload_dataloaders_every_n_epochs=1).fit(module)
    assert module.epoch_batches == [8, 32]
    assert module.updates == [(64, 0.05, 0.9)] * 8 + [(16, 0.01, 0.5)] * 32


def test_validation_keeps_its_place_in_every_epoch(tmp_path):
    class Validated(Regression):
        def val_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.Subset(self.data, range(64)), batch_size=64)

        def on_validation_epoch_start(self):
            self.validated.append(self.current_epoch)

    module = Validated()
    module.validated = []
    # twice an epoch: Lightning would place both by the first epoch's 32 batches (21 and 11 follow)
    trainer(tmp_path, [FollowPlan(make_plan())], val_check_interval=0.5).fit(module)
    assert module.validated == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("micro", [None, 7])
def test_weights_match_bsadvisor_own_loop(tmp_path, micro):
    plan = make_plan()
    module = Regression()
    trainer(tmp_path, [FollowPlan(plan, max_micro_batch=micro, seed=3)]).fit(module)
    ours = reference_target()
    train_plan(ours, plan, seed=3, max_micro_batch=micro)
    torch.testing.assert_close(weights(module.net), weights(ours.model))
    if micro is not None:
        # the updates were really accumulated: micro-batches of at most 7, summing to each planned batch
        assert max(module.shares) <= 7 and len(module.shares) > 2 * plan.updates
        assert [rows for rows, _, _ in module.updates] == [b for _, b in planned_updates(plan)]
        whole = reference_target()
        train_plan(whole, plan, seed=3)  # no accumulation: equal up to float rounding
        torch.testing.assert_close(weights(module.net), weights(whole.model), rtol=1e-4, atol=1e-5)


def test_resume_from_a_mid_epoch_checkpoint_continues_the_plan(tmp_path):
    plan = make_plan()
    whole = Regression()
    trainer(tmp_path / "whole", [FollowPlan(plan)]).fit(whole)

    stop = 40  # epoch 1, 8 updates in: mid-epoch, inside the stage at batch 20
    first = Regression()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop, save_top_k=-1)
    with pytest.warns(UserWarning, match="max_steps=40"):
        trainer(tmp_path / "first", [FollowPlan(plan), saver], max_steps=stop, enable_checkpointing=True).fit(first)
    (path,) = (tmp_path / "ckpt").iterdir()
    state = torch.load(path, weights_only=False)["callbacks"]["FollowPlan"]
    assert state["samples_seen"] == planned_updates(plan)[stop][0] and state["samples_seen"] % N

    second = Regression(seed=1)  # other start weights: the checkpoint's must win
    follow = FollowPlan(plan)
    trainer(tmp_path / "second", [follow], enable_checkpointing=True).fit(second, ckpt_path=path)
    assert len(first.updates) == stop and second.updates == whole.updates[stop:]
    assert follow.samples_seen == plan.total_samples and follow.updates == plan.updates
    torch.testing.assert_close(weights(second.net), weights(whole.net))

    with pytest.raises(UserError, match="another plan"):
        trainer(tmp_path / "third", [FollowPlan(make_plan(world_size=2))]).fit(Regression(), ckpt_path=path)


@pytest.mark.slow
def test_ddp_two_processes_share_every_global_batch(tmp_path):
    micro = 8
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # Lightning starts rank 1 as a child of this script: a new session, so a hang ends both
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "lightning_ddp.py"), str(tmp_path),
                             str(micro)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("two-process DDP did not finish in 120 s")
    assert proc.returncode == 0, err[-3000:]
    plan = make_plan()
    expected = planned_updates(plan)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(ranks):
        shares = [rows for rows, _, _ in record["updates"]]
        assert shares == [b // 2 + (rank < b % 2) for _, b in expected]  # global/2 each (the first rank +1 if odd)
        assert max(record["shares"]) <= micro
        assert [lr for _, lr, _ in record["updates"]] == [plan.at_sample(s).lr for s, _ in expected]
    assert any(b % 2 for _, b in expected)  # uneven shares happened, and were weighted
    ours = reference_target()
    train_plan(ours, plan, seed=0)
    torch.testing.assert_close(torch.load(tmp_path / "weights.pt"), weights(ours.model))


def test_a_datamodule_or_loaders_given_to_fit_are_followed_too(tmp_path):
    import lightning.pytorch as pl

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(make_data(), batch_size=16, num_workers=0)

    class NoLoader(Regression):
        train_dataloader = None  # the data come from elsewhere

    plan, expected = make_plan(), [b for _, b in planned_updates(make_plan())]
    for data in (dict(datamodule=Data()), dict(train_dataloaders=Data().train_dataloader())):
        module = NoLoader()
        trainer(tmp_path, [FollowPlan(plan)]).fit(module, **data)
        assert [rows for rows, _, _ in module.updates] == expected


def test_manual_optimization_gets_the_plan_batches_and_lr(tmp_path):
    class Manual(Regression):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            self.rows += len(batch[0])
            self.manual_backward(mse(self.net, batch))
            opt.step()

    plan, module = make_plan(), Manual()
    trainer(tmp_path, [FollowPlan(plan)]).fit(module)
    assert module.updates == [(b, plan.at_sample(s).lr, plan.at_sample(s).momentum) for s, b in planned_updates(plan)]
    with pytest.raises(UserError, match="automatic_optimization = False"):
        trainer(tmp_path, [FollowPlan(plan, max_micro_batch=8)]).fit(Manual())


def test_the_sampler_gives_an_empty_share_a_stand_in():
    from bsadvisor.integrations.lightning.callback import _PlanBatches, _Update

    plan = Plan(stages=[Stage(0, 5, 2, 0.1, 0.0, 1.0)], dataset_size=5)  # batches 2, 2, 1
    rank0, rank1 = (list(_PlanBatches(None, plan, 5, 0, r, 2, 0)) for r in range(2))
    assert [len(b) for b in rank0] == [1, 1, 1] and rank1[:2] != rank0[:2]
    assert rank1[2] == rank0[2]  # the last global batch has one example: rank 1 repeats it...
    assert _Update(1, 0, 2).weight(1) == 0.0 and _Update(1, 1, 2).weight(1) == 2.0  # ...weighted by zero
    assert sorted(i for b in rank0 + rank1[:2] for i in b) == list(range(5))


@pytest.mark.parametrize("version", ["2.7.0", "3.0.1", "2.5.9", "2.10.0rc1", "unknown"])
def test_an_untested_lightning_is_refused_in_one_line(monkeypatch, version):
    import lightning

    monkeypatch.setattr(lightning, "__version__", version)
    with pytest.raises(UserError) as info:
        FollowPlan(make_plan())
    line = str(info.value)
    assert "\n" not in line and f"Lightning {version} is installed" in line and "tested with Lightning 2.6" in line
    assert line.endswith("pip install 'lightning>=2.6,<2.7'"), line


@pytest.mark.parametrize("version", ["2.6.0", "2.6.6", "2.6.10.dev3"])
def test_a_tested_lightning_is_accepted(monkeypatch, version):
    import lightning

    monkeypatch.setattr(lightning, "__version__", version)
    assert FollowPlan(make_plan()).plan is not None


def test_the_lightning_extra_pins_the_tested_releases():
    from pathlib import Path

    from bsadvisor.integrations.lightning.callback import LIGHTNING_REQUIREMENT

    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert f'lightning = ["{LIGHTNING_REQUIREMENT}"]' in pyproject
    assert f'"{LIGHTNING_REQUIREMENT}"' in pyproject.split("test = ", 1)[1].splitlines()[0]


@pytest.mark.parametrize("setting,pattern", [
    (dict(accumulate_grad_batches=2), "accumulate_grad_batches=2"),
    (dict(limit_train_batches=5), "limit_train_batches"),
    (dict(limit_train_batches=1), "limit_train_batches"),  # an int is a count of batches: one
])
def test_settings_that_fight_the_plan_are_refused(tmp_path, setting, pattern):
    with pytest.raises(UserError, match=pattern):
        trainer(tmp_path, [FollowPlan(make_plan())], **setting).fit(Regression())


def test_an_lr_scheduler_or_another_dataset_is_refused(tmp_path):
    class Scheduled(Regression):
        def configure_optimizers(self):
            opt = super().configure_optimizers()
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    with pytest.raises(UserError, match=r"LR scheduler \(StepLR\)"):
        trainer(tmp_path, [FollowPlan(make_plan())]).fit(Scheduled())

    class Smaller(Regression):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.Subset(self.data, range(100)), batch_size=16)

    with pytest.raises(UserError, match="made for 512 training examples but the dataset has 100"):
        trainer(tmp_path, [FollowPlan(make_plan())]).fit(Smaller())


LIGHTNING_TARGET = '''
import lightning.pytorch as pl
import torch


class Data(pl.LightningDataModule):
    def setup(self, stage):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(600, 5, generator=g)
        y = (x[:, 0] > 0).long()
        self.train, self.val = (torch.utils.data.TensorDataset(x[:500], y[:500]),
                                torch.utils.data.TensorDataset(x[500:], y[500:]))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=25, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=50)


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(5, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))
        self.log("val_acc", (self.net(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3, betas=(0.8, 0.99), weight_decay=0.01)


def make_module():
    return Classifier(), Data()
'''


def test_a_lightning_module_is_a_target(tmp_path):
    f = tmp_path / "lit.py"
    f.write_text(LIGHTNING_TARGET)
    target = load_target(f"{f}:make_module")
    assert (target.optimizer, target.lr, target.momentum, target.weight_decay) == ("adamw", 3e-3, 0.8, 0.01)
    assert (target.batch_size, len(target.train_dataset), len(target.eval_dataset)) == (25, 500, 100)
    x, y = target.eval_dataset.tensors
    logits = target.model.net(x)
    loss = target.loss_fn(target.model, [x, y])
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y))
    # the first logged value, a loss, negated: a Target's metric is higher-is-better
    assert target.metric_fn(target.model, [x, y]) == -float(torch.nn.functional.cross_entropy(logits.detach(), y))

    from bsadvisor import target_from_lightning

    data = sys.modules[type(target.model).__module__].Data()
    acc = target_from_lightning(target.model, data, metric="val_acc").metric_fn(target.model, [x, y])
    assert acc == float((logits.argmax(-1) == y).float().mean()) and 0 < acc < 1


def test_probe_cli_on_a_lightning_module(tmp_path, capsys):
    from bsadvisor.cli import main

    f = tmp_path / "lit.py"
    f.write_text(LIGHTNING_TARGET)
    with pytest.raises(SystemExit) as exc:
        main(["probe", f"{f}:make_module", "--budget-seconds", "3", "--draws", "6", "--json", "--device", "cpu"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    doc = json.loads(out)
    b = doc["noise"]["b_simple"]
    assert isinstance(b, float) and 0 < b < float("inf")
    assert doc["settings"]["optimizer"] == "adamw" and doc["settings"]["batch_size"] == 25


@pytest.mark.slow
def test_import_bsadvisor_does_not_load_lightning(tmp_path):
    f = tmp_path / "plain.py"
    f.write_text("import torch\nfrom bsadvisor import Target\n"
                 "def make():\n    ds = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8))\n"
                 "    return Target(model=torch.nn.Linear(2, 1), train_dataset=ds, batch_size=4, lr=0.1,\n"
                 "                  loss_fn=lambda m, b: (m(b[0]).squeeze(-1) - b[1]).pow(2).mean())\n")
    code = ("import sys, bsadvisor, bsadvisor.cli\n"
            f"bsadvisor.load_target({str(f) + ':make'!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
            "bsadvisor.FollowPlan\n"
            "print('lightning.pytorch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "True"]


class _Loud(Regression):
    """Regression with targets × 300: at the GradScaler's first scale (2¹⁶) the fp16 gradients overflow."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return super().training_step((x, 300 * y), batch_idx)


@pytest.mark.slow  # two trainings
def test_fp16_scaler_and_clipping_match_bsadvisor_own_loop_skipped_steps_included(tmp_path):
    """Lightning with an fp16 GradScaler (on the CPU: Lightning turns "16-mixed" into bf16 there, so the plugin is
    given) and gradient_clip_val: FollowPlan reports the steps the scaler skipped and does not count them, and the
    weights equal bsadvisor's own loop with precision "16-mixed" and max_grad_norm, bit for bit."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    plan = make_plan()
    module, follow = _Loud(), FollowPlan(plan, seed=3)
    trainer(tmp_path, [follow], plugins=[MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))],
            gradient_clip_val=1.0).fit(module)
    ours = reference_target()
    ours.loss_fn = lambda net, b: mse(net, (b[0], 300 * b[1]))
    ours.precision, ours.max_grad_norm = "16-mixed", 1.0
    run = train_plan(ours, plan, seed=3)
    assert follow.skipped_steps and follow.skipped_steps == run.skipped_steps
    assert follow.updates == run.final["updates"] == plan.updates - len(run.skipped_steps)
    assert follow.samples_seen == plan.total_samples
    torch.testing.assert_close(weights(module.net), weights(ours.model), rtol=0, atol=0)


@pytest.mark.slow  # two trainings
def test_bf16_and_clipping_carried_from_the_trainer_train_as_lightning_does(tmp_path):
    """target_from_lightning(module, trainer=...) carries bf16-mixed and gradient_clip_val; bsadvisor's loop on
    that target ends with FollowPlan's weights."""
    from bsadvisor import target_from_lightning

    plan = make_plan()
    module, follow = Regression(), FollowPlan(plan, seed=3)
    fit = trainer(tmp_path, [follow], precision="bf16-mixed", gradient_clip_val=0.5)
    target = target_from_lightning(Regression(), trainer=fit)
    assert (target.precision, target.max_grad_norm) == ("bf16-mixed", 0.5)
    fit.fit(module)
    train_plan(target, plan, seed=3)
    torch.testing.assert_close(weights(module.net), weights(target.model.net))


class _Grouped(Regression):
    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if n.endswith("weight")]
        rest = [p for n, p in self.named_parameters() if not n.endswith("weight")]
        return torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0, "lr": 0.01}], lr=0.003,
                                 betas=(0.9, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.1)


def test_a_lightning_targets_optimizer_kwargs_and_param_groups_carry_over():
    from bsadvisor import target_from_lightning
    from bsadvisor.targets.target import check_target

    module = _Grouped()
    target = check_target(target_from_lightning(module))
    assert target.optimizer_kwargs == {"betas": (0.9, 0.95), "eps": 1e-6, "amsgrad": True}
    assert target.param_groups == [{"params": ["net.0.weight", "net.2.weight"]},
                                   {"params": ["net.0.bias", "net.2.bias"], "lr": 0.01, "weight_decay": 0.0}]
    mine, theirs = target.make_optimizer(), module.configure_optimizers()
    for a, b in zip(mine.param_groups, theirs.param_groups):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]


def test_what_a_lightning_target_cannot_carry_is_named_in_one_warning(tmp_path):
    from bsadvisor import target_from_lightning

    fit = trainer(tmp_path, [], precision="bf16-true", gradient_clip_val=0.5, gradient_clip_algorithm="value")
    with pytest.warns(UserWarning) as caught:
        target = target_from_lightning(Regression(), trainer=fit)
    (w,) = [str(c.message) for c in caught if "not carried over" in str(c.message)]
    assert "\n" not in w and "gradient_clip_algorithm='value'" in w and "precision='bf16-true'" in w
    assert (target.precision, target.max_grad_norm) == ("32", None)
