"""A tiny model and data set of their own for the transformers Trainer tests, and a run counted from outside:
the examples the forward sees between optimizer steps and the LR (and β1/momentum) at each step.

Also the torchrun worker of tests/test_transformers.py: ``python -m torch.distributed.run ... hf_parts.py OUT KIND``.
"""
from __future__ import annotations

import json
import sys

import torch

from bsadvisor import BatchSizeScheduler, Plan, convert_schedule

#: an epoch-milestone SGD plan (batch 8 → 16 at epoch 4) and a one-epoch per-step AdamW plan whose growth
#: (8 → 16 → 32) falls inside the epoch, at samples that are whole micro-batch groups of the new batch
PLANS = {
    "sgd": dict(lr=0.05, batch_size=8, momentum=0.9, dataset_size=512, epochs=6, max_fraction=1.0, growth_factor=2,
                schedule="MultiStepLR(milestones=[2, 4], gamma=0.5)"),
    "adamw": dict(lr=1e-3, batch_size=8, dataset_size=2048, epochs=1, optimizer="adamw", schedule_unit="step",
                  growth_factor=2, round_to=8, max_batch=32, max_growth=4,
                  schedule="SequentialLR([LinearLR(start_factor=0.1, total_iters=8), "
                           "CosineAnnealingLR(T_max=256, eta_min=1e-4)], milestones=[8])"),
}


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x @ torch.randn(6, generator=g) + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class Net(torch.nn.Module):
    """Counts the examples its forward sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.seen = 0

    def forward(self, x, labels):
        self.seen += len(x)
        return {"loss": torch.nn.functional.mse_loss(self.body(x).squeeze(-1), labels)}


def make_plan(kind: str) -> Plan:
    return convert_schedule(**PLANS[kind])


def run(kind: str, out: str, per_device: int = 8, resume: str | None = None, save_steps: int | None = None,
        plan: Plan | None = None, **args):
    """Train ``kind``'s plan with the two-line change; returns (model, [(examples, lr, momentum) per step])."""
    from transformers import Trainer, TrainingArguments

    from bsadvisor import HFFollowPlan

    plan = plan or make_plan(kind)
    model = Net()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if kind == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-3))
    sched = BatchSizeScheduler(plan, opt)
    log = []

    def before_step(optimizer, *_):
        g = optimizer.param_groups[0]
        log.append((model.seen, g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
        model.seen = 0

    opt.register_step_pre_hook(before_step)
    targs = TrainingArguments(output_dir=out, per_device_train_batch_size=per_device,
                              num_train_epochs=args.pop("num_train_epochs", plan.full_epochs), report_to=[], logging_strategy="no",
                              save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
                              use_cpu=True, disable_tqdm=True, seed=3, **args)
    trainer = Trainer(model=model, args=targs, train_dataset=Data(plan.dataset_size), optimizers=(opt, sched),
                      callbacks=[HFFollowPlan(sched)])
    trainer.train(resume_from_checkpoint=resume)
    return model, log


if __name__ == "__main__":  # a torchrun worker: train, write this rank's log and weights
    out, kind = sys.argv[1], sys.argv[2]
    model, log = run(kind, out + "/trainer", per_device=4)
    rank = torch.distributed.get_rank()
    with open(f"{out}/log{rank}.json", "w") as f:
        json.dump(log, f)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/weights{rank}.pt")
    # The Trainer leaves its gloo group open, and a finished rank's interpreter teardown intermittently aborts
    # on it (SIGABRT, "terminate called without an active exception"; CI saw it): end as bsadvisor's CLI does.
    from bsadvisor.runtime.distributed import exit_job

    torch.distributed.barrier()
    exit_job(0)
