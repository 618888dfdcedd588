"""A fourth model written as a new user would (not a builtin), after AdamW's finer default staircase was chosen:
a residual MLP regressing a smooth random function of 16 inputs (a sum of 32 random Fourier features) from noisy
labels, MSE loss. AdamW with torch's default betas (0.9, 0.999), weight decay 0.01, no clipping, linear warmup
then cosine to zero per step, two passes over 8,192 examples at batch 64 (256 updates). The metric is the held-out
MSE against the noise-free function, negated (higher is better).

`bsadvisor advise benchmarks/fourier_mlp.py:make_target --out plan.json`, then `bsadvisor validate
benchmarks/fourier_mlp.py:make_target --plan plan.json --seeds 6` (docs/results.md, "What `advise` recommends
today, on every model")."""
import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsadvisor

DIM, FEATURES, NOISE, BATCH, LR, N, EPOCHS = 16, 32, 0.3, 64, 1e-3, 8192, 2


def function(x: torch.Tensor) -> torch.Tensor:
    """The regression target: a fixed sum of random Fourier features, about unit variance."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(DIM, FEATURES, generator=g) / math.sqrt(DIM) * 2.0
    phase = torch.rand(FEATURES, generator=g) * 2 * math.pi
    a = torch.randn(FEATURES, generator=g) / math.sqrt(FEATURES / 2)
    return torch.cos(x @ w + phase) @ a


def data(n: int, seed: int, noise: float) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=g)
    y = function(x) + noise * torch.randn(n, generator=g)
    return TensorDataset(x, y)


class ResidualMLP(nn.Module):
    def __init__(self, width: int = 128, blocks: int = 2):
        super().__init__()
        self.inp = nn.Linear(DIM, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                                  nn.Linear(width, width)) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).squeeze(-1)


def make_target():
    torch.manual_seed(0)
    steps = EPOCHS * math.ceil(N / BATCH)
    warm = steps // 20
    loss = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])
    return bsadvisor.Target(
        model=ResidualMLP(), train_dataset=data(N, 1, NOISE), eval_dataset=data(2048, 2, 0.0), loss_fn=loss,
        metric_fn=lambda m, b: -loss(m, b).item(), batch_size=BATCH, lr=LR, optimizer="adamw",
        weight_decay=0.01, name="fourier-mlp",
        metadata={"schedule": f"SequentialLR([LinearLR(start_factor=0.01, total_iters={warm}), "
                              f"CosineAnnealingLR(T_max={steps - warm})], milestones=[{warm}])",
                  "schedule_unit": "step", "epochs": EPOCHS})
