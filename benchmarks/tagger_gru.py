"""A third model written as a new user would (not a builtin): a small GRU tagging each token of a random
sequence over 8 symbols with the running count of symbol 0 minus symbol 1, mod 5. AdamW betas (0.9, 0.95),
clipping at 1.0, linear warmup then cosine per step, one pass over 16,384 sequences (512 updates).

`bsadvisor advise benchmarks/tagger_gru.py:make_target --out plan.json`, then `bsadvisor validate
benchmarks/tagger_gru.py:make_target --plan plan.json --seeds 6` (docs/results.md, "What `advise` recommends
today, on every model")."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsadvisor

VOCAB, LEN, BATCH, LR = 8, 24, 32, 2e-3


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, LEN), generator=g)
    y = torch.cumsum((x == 0).long() - (x == 1).long(), dim=1) % 5
    return TensorDataset(x, y)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.rnn = nn.GRU(16, 24, batch_first=True)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


def make_target():
    torch.manual_seed(0)
    n = 16384
    steps = n // BATCH
    warm = steps // 20
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0]).reshape(-1, 5), b[1].reshape(-1))
    return bsadvisor.Target(
        model=Tagger(), train_dataset=data(n, 1), eval_dataset=data(2048, 2), loss_fn=loss,
        metric_fn=lambda m, b: -loss(m, b).item(), batch_size=BATCH, lr=LR, optimizer="adamw",
        weight_decay=0.1, optimizer_kwargs={"betas": (0.9, 0.95)}, max_grad_norm=1.0, name="tagger-gru",
        metadata={"schedule": f"SequentialLR([LinearLR(start_factor=0.01, total_iters={warm}), "
                              f"CosineAnnealingLR(T_max={steps - warm}, eta_min={LR / 10:g})], milestones=[{warm}])",
                  "schedule_unit": "step", "epochs": 1})
