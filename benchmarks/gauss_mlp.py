"""A model written as a new user would (not a builtin): AdamW, a 2-layer MLP classifying a 20-class Gaussian mixture
in 32-d, one pass, warmup + cosine per step. `bsadvisor advise benchmarks/gauss_mlp.py:make_target --out plan.json`,
then `bsadvisor validate benchmarks/gauss_mlp.py:make_target --plan plan.json --seeds 12` (docs/results.md)."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsadvisor


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(20, 32, generator=torch.Generator().manual_seed(7)) * 1.2
    y = torch.randint(0, 20, (n,), generator=g)
    x = centers[y] + torch.randn(n, 32, generator=g) * 1.5
    return TensorDataset(x, y)


def make_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 20))
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])
    steps = 12800 // 32
    return bsadvisor.Target(
        model=model, train_dataset=make_data(12800, 1), eval_dataset=make_data(4096, 2), loss_fn=loss,
        metric_fn=lambda m, b: -nn.functional.cross_entropy(m(b[0]), b[1]).item(), batch_size=32, lr=3e-3,
        optimizer="adamw", momentum=0.9, weight_decay=0.01, optimizer_kwargs={"betas": (0.9, 0.95)},
        max_grad_norm=1.0, name="gauss-mlp",
        metadata={"schedule": f"SequentialLR([LinearLR(start_factor=0.01, total_iters=20), "
                              f"CosineAnnealingLR(T_max={steps - 20}, eta_min=3e-4)], milestones=[20])",
                  "schedule_unit": "step", "epochs": 1})
