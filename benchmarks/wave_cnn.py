"""A second model written as a new user would (not a builtin): AdamW, a small 1-D CNN telling 10 frequencies of
noisy, randomly shifted sine waves apart, two passes, warmup + cosine per step, β2 0.999, no clipping.

`bsadvisor advise benchmarks/wave_cnn.py:make_target --out plan.json`, then `bsadvisor validate
benchmarks/wave_cnn.py:make_target --plan plan.json --seeds 6` (docs/results.md, "Growth to 2 × B0 for Adam")."""
import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsadvisor

LENGTH, CLASSES, BATCH, LR, EPOCHS = 64, 10, 32, 3e-3, 2


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    freq = 1.0 + 0.2 * y.float()  # close frequencies: the noise makes neighbours hard to tell apart
    phase = torch.rand(n, generator=g) * 2 * math.pi
    t = torch.arange(LENGTH).float()
    x = torch.sin(freq[:, None] * t[None, :] * 2 * math.pi / LENGTH * 4 + phase[:, None])
    x = x + 2.0 * torch.randn(n, LENGTH, generator=g)
    return TensorDataset(x[:, None, :], y)


def make_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 16, 7, padding=3), nn.GELU(), nn.MaxPool1d(2),
                          nn.Conv1d(16, 32, 5, padding=2), nn.GELU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(),
                          nn.Linear(128, CLASSES))
    n = 8192
    steps = EPOCHS * n // BATCH
    warm = steps // 12
    return bsadvisor.Target(
        model=model, train_dataset=make_data(n, 1), eval_dataset=make_data(4096, 2),
        loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        metric_fn=lambda m, b: -nn.functional.cross_entropy(m(b[0]), b[1]).item(), batch_size=BATCH, lr=LR,
        optimizer="adamw", weight_decay=0.01, optimizer_kwargs={"betas": (0.9, 0.999)}, name="wave-cnn",
        metadata={"schedule": f"SequentialLR([LinearLR(start_factor=0.01, total_iters={warm}), "
                              f"CosineAnnealingLR(T_max={steps - warm}, eta_min={LR / 10:g})], milestones=[{warm}])",
                  "schedule_unit": "step", "epochs": EPOCHS})
