"""A fifth model written as a new user would (not a builtin), after AdamW's finer default staircase was chosen:
a small transformer encoder reading a sequence of 20 tokens over 6 symbols and telling whether symbol 0 first
occurs before symbol 1 does (no when 0 never occurs), from a mean pool over the positions. AdamW betas (0.9,
0.98), weight decay 0.05, no clipping, linear warmup (10 %) then cosine to a tenth per step, one pass over 8,192
sequences at batch 32 (256 updates). The metric is the held-out cross-entropy, negated. At this LR it barely
learns in one pass; its best LR is 16 × this one (docs/results.md, "A finer staircase to 2 × B0").

`bsadvisor advise benchmarks/compare_transformer.py:make_target --out plan.json`, then `bsadvisor validate
benchmarks/compare_transformer.py:make_target --plan plan.json --seeds 6` (docs/results.md, "What `advise`
recommends today, on every model")."""
import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsadvisor

VOCAB, LEN, WIDTH, BATCH, LR, N = 6, 20, 32, 32, 5e-4, 8192


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, LEN), generator=g)
    pos = torch.arange(LEN).expand(n, LEN)
    first = lambda s: torch.where(x == s, pos, LEN).min(1).values  # noqa: E731  (LEN where it never occurs)
    y = (first(0) < first(1)).long()
    return TensorDataset(x, y)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(torch.randn(LEN, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(WIDTH, nhead=4, dim_feedforward=4 * WIDTH, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, 2)

    def forward(self, x):
        return self.head(self.body(self.emb(x) + self.pos).mean(1))


def make_target():
    torch.manual_seed(0)
    steps = math.ceil(N / BATCH)
    warm = steps // 10
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])
    return bsadvisor.Target(
        model=Encoder(), train_dataset=data(N, 1), eval_dataset=data(2048, 2), loss_fn=loss,
        metric_fn=lambda m, b: -loss(m, b).item(), batch_size=BATCH, lr=LR, optimizer="adamw",
        weight_decay=0.05, optimizer_kwargs={"betas": (0.9, 0.98)}, name="compare-transformer",
        metadata={"schedule": f"SequentialLR([LinearLR(start_factor=0.01, total_iters={warm}), "
                              f"CosineAnnealingLR(T_max={steps - warm}, eta_min={LR / 10:g})], milestones=[{warm}])",
                  "schedule_unit": "step", "epochs": 1})
