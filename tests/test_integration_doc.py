"""docs/integration.md's training loops run, are short, and really follow the plan."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PER_STEP = ("SequentialLR([LinearLR(start_factor=0.1, total_iters=10), "
            "CosineAnnealingLR(T_max=118, eta_min=0.001)], milestones=[10])")


def blocks_under(heading: str | None) -> list[str]:
    """The ```python blocks of integration.md under the ``## heading`` (None: before the first heading)."""
    sections = re.split(r"^## ", (ROOT / "docs" / "integration.md").read_text(), flags=re.M)
    body = sections[0] if heading is None else next(s for s in sections[1:] if s.startswith(heading + "\n"))
    return re.findall(r"```python\n(.*?)```", body, re.S)


def python_blocks() -> list[str]:
    blocks = blocks_under(None)
    assert len(blocks) == 2, "integration.md opens with two ```python blocks: a per-step loop and an epoch loop"
    return blocks


def test_every_python_block_is_run_here():
    # plain PyTorch (2, run together), Lightning (1), Accelerate (1), the transformers Trainer (1) and
    # DeepSpeed (1, where it is installed): nothing else goes untested
    every = re.findall(r"```python\n", (ROOT / "docs" / "integration.md").read_text())
    assert len(every) == 6 == len(python_blocks()) + len(blocks_under("PyTorch Lightning")) + len(
        blocks_under("Hugging Face Accelerate")) + len(blocks_under("Hugging Face Trainer")) + len(
        blocks_under("DeepSpeed"))


def test_blocks_are_under_30_lines():
    for block in python_blocks():
        assert len([ln for ln in block.splitlines() if ln.strip()]) < 30


def run_blocks(tmp_path) -> list[str]:
    script = tmp_path / "loop.py"
    script.write_text("\n".join(python_blocks()))  # the second block goes on with the first one's data and model
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


def plan_updates(plan):
    """(start sample, batch) of every update, from the rule (a batch ends early only at an epoch's end)."""
    n, s, out = plan.dataset_size, 0, []
    while s < plan.total_samples:
        b = plan.at_sample(s).batch_size
        stop = min(s + b, (s // n + 1) * n, plan.total_samples)
        out.append((s, stop - s))
        s = stop
    return out


@pytest.mark.slow  # trains the doc's loops in a fresh interpreter
def test_blocks_run_and_follow_the_plan(tmp_path):
    lines = run_blocks(tmp_path)
    from bsadvisor.core.convert import convert_schedule  # the same plans, built here independently

    # the per-step loop: every 20th update prints the samples seen, its batch and the next LR
    step_plan = convert_schedule(lr=0.01, batch_size=32, dataset_size=4096, epochs=1, optimizer="adamw",
                                 momentum=0.9, schedule_unit="step", schedule=PER_STEP)
    updates = plan_updates(step_plan)
    printed = [re.match(r"update (\d+): (\d+) samples, batch (\d+), next lr ([\d.e-]+), loss ([\d.]+)", ln)
               for ln in lines if ln.startswith("update")]
    assert len(printed) == len(range(0, len(updates), 20))
    for m in printed:
        k, seen, batch, lr, _ = m.groups()
        start, size = updates[int(k)]
        assert int(batch) == size and int(seen) == start + size
        assert float(lr) == float(f"{step_plan.at_sample(min(int(seen), 4095)).lr:.4g}")
    assert lines[len(printed)] == f"{len(updates)} updates instead of 128" and len(updates) < 128

    # the epoch loop: at each epoch's start, the plan's batch and LR for that epoch
    epoch_plan = convert_schedule(lr=0.05, batch_size=32, momentum=0.9, dataset_size=4096, epochs=8,
                                  schedule="MultiStepLR(milestones=[3, 5, 7], gamma=0.2)")
    rows = [re.match(r"epoch (\d+): batch (\d+), lr ([\d.e-]+)", ln).groups() for ln in lines if ln.startswith("epoch")]
    assert [int(b) for _, b, _ in rows] == epoch_plan.batch_sizes()
    assert [float(lr) for _, _, lr in rows] == [float(f"{epoch_plan.at(e).lr:.4g}") for e in range(8)]
    assert max(epoch_plan.batch_sizes()) > 32  # the batch really grows
    final = float(lines[-1].split()[-1])
    assert final < 0.1 and math.isfinite(final)  # and the model trains


def run_in_process(block: str, monkeypatch, tmp_path, capsys) -> tuple[dict, list[str]]:
    """Execute a block here (files it writes go to tmp_path); its namespace and printed lines."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(block, "docs/integration.md", "exec"), namespace)
    return namespace, capsys.readouterr().out.strip().splitlines()


@pytest.mark.slow  # trains with Lightning
def test_lightning_block_follows_the_plan(monkeypatch, tmp_path, capsys):
    (block,) = blocks_under("PyTorch Lightning")
    assert len([ln for ln in block.splitlines() if ln.strip()]) < 35
    ns, lines = run_in_process(block, monkeypatch, tmp_path, capsys)
    plan, follow, trainer = ns["plan"], ns["follow"], ns["trainer"]
    assert max(plan.stage_batch_sizes()) > follow.max_micro_batch  # the block really accumulates
    assert trainer.global_step == follow.updates == len(plan_updates(plan)) and follow.updates < plan.baseline_updates
    assert follow.samples_seen == plan.total_samples
    m = re.fullmatch(r"(\d+) updates instead of 1024, loss ([\d.]+)", lines[-1])
    assert m and int(m.group(1)) == plan.updates and float(m.group(2)) < 0.1


@pytest.mark.slow  # trains with Accelerate and with bsadvisor
def test_accelerate_block_trains_as_bsadvisor_does(monkeypatch, tmp_path, capsys):
    import copy

    import torch
    from accelerate import Accelerator

    from bsadvisor import Target
    from bsadvisor.runtime.train import train_plan

    (block,) = blocks_under("Hugging Face Accelerate")
    assert len([ln for ln in block.splitlines() if ln.strip()]) < 35
    start = []  # the model's weights as the block hands it to Accelerate
    prepare = Accelerator.prepare

    def spy(self, *objects):
        start.append(copy.deepcopy(objects[0].state_dict()))
        return prepare(self, *objects)

    monkeypatch.setattr(Accelerator, "prepare", spy)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # the reference below runs on the CPU too
    ns, lines = run_in_process(block, monkeypatch, tmp_path, capsys)
    plan = ns["plan"]
    rows = [re.match(r"epoch (\d+): batch (\d+), lr ([\d.e-]+)", ln).groups() for ln in lines if ln.startswith("epoch")]
    assert [int(b) for _, b, _ in rows] == plan.batch_sizes() and max(plan.batch_sizes()) > ns["max_micro_batch"]
    assert [float(lr) for _, _, lr in rows] == [float(f"{plan.at(e).lr:.4g}") for e in range(plan.full_epochs)]

    # bsadvisor's own loop from the same weights, data, seed and micro-batches: the same model
    model = torch.nn.Linear(10, 1)
    model.load_state_dict(start[0])
    ours = Target(model=model, train_dataset=ns["data"], batch_size=32, lr=0.05, momentum=0.9,
                  loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1]),
                  precision="bf16-mixed", max_grad_norm=ns["max_grad_norm"])
    train_plan(ours, plan, seed=0, max_micro_batch=ns["max_micro_batch"])
    trained = ns["accelerator"].unwrap_model(ns["model"])
    torch.testing.assert_close(trained.state_dict(), model.state_dict())
    assert float(lines[-1].split()[-1]) < 0.1


@pytest.mark.slow  # trains with the transformers Trainer
def test_trainer_block_follows_the_plan(monkeypatch, tmp_path, capsys):
    pytest.importorskip("transformers")
    import torch

    (block,) = blocks_under("Hugging Face Trainer")
    assert len([ln for ln in block.splitlines() if ln.strip()]) < 35
    steps = count_updates(monkeypatch, "Regression", torch.optim.AdamW)
    ns, lines = run_in_process(block, monkeypatch, tmp_path, capsys)
    plan = ns["plan"]
    want = plan_updates(plan)
    assert len(set(plan.stage_batch_sizes())) >= 2 and plan.full_epochs == 1  # growth inside the epoch
    assert [b for b, _, _ in steps] == [size for _, size in want]
    assert [lr for _, lr, _ in steps] == pytest.approx([plan.at_sample(s).lr for s, _ in want], rel=1e-12)
    assert lines[-1] == f"{len(want)} updates instead of {plan.baseline_updates}"


def count_updates(monkeypatch, model_class: str, optimizer) -> list:
    """(examples the forward of ``model_class`` saw, LR, momentum) at every ``optimizer.step``, counted from outside."""
    import torch

    seen, steps = [], []
    forward = torch.nn.Module.__call__

    def counting(self, *args, **kwargs):
        if type(self).__name__ == model_class:
            first = kwargs.get("x", args[0] if args else None)
            seen.append(len(first))
        return forward(self, *args, **kwargs)

    original = optimizer.step

    def step(self, *args, **kwargs):
        g = self.param_groups[0]
        steps.append((sum(seen), g["lr"], g.get("momentum", g.get("betas", (None,))[0])))
        seen.clear()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", counting)
    monkeypatch.setattr(optimizer, "step", step)
    return steps


@pytest.mark.slow  # trains with DeepSpeed (on a CPU)
def test_deepspeed_block_follows_the_plan(monkeypatch, tmp_path, capsys):
    pytest.importorskip("deepspeed")
    import torch

    (block,) = blocks_under("DeepSpeed")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    steps = count_updates(monkeypatch, "Linear", torch.optim.SGD)
    ns, lines = run_in_process(block, monkeypatch, tmp_path, capsys)
    plan = ns["plan"]
    want = plan_updates(plan)
    assert len(set(plan.batch_sizes())) >= 3 and max(plan.batch_sizes()) > ns["micro"]  # it accumulates
    assert [b for b, _, _ in steps] == [size for _, size in want]
    assert [(lr, m) for _, lr, m in steps] == [(plan.at_sample(s).lr, plan.at_sample(s).momentum) for s, _ in want]
    assert lines[-1].startswith(f"{len(want)} updates instead of {plan.baseline_updates}")
