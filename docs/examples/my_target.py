"""A complete bsadvisor target: a small classifier with BatchNorm and dropout.

    bsadvisor probe docs/examples/my_target.py:make_target
"""
import torch
from torch import nn

from bsadvisor import Target


def make_target() -> Target:
    gen = torch.Generator().manual_seed(0)
    # Synthetic 3-class data: 2 000 training and 500 evaluation examples of 20 features.
    centers = torch.randn(3, 20, generator=gen)
    def sample(n):
        y = torch.randint(0, 3, (n,), generator=gen)
        x = centers[y] + 1.5 * torch.randn(n, 20, generator=gen)
        return torch.utils.data.TensorDataset(x, y)

    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 3))

    def loss_fn(model, batch):            # mean loss over the batch, a scalar tensor
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    def metric_fn(model, batch):          # higher is better
        x, y = batch
        return float((model(x).argmax(-1) == y).float().mean())

    return Target(model=model, train_dataset=sample(2000), loss_fn=loss_fn, batch_size=32, lr=0.05,
                  momentum=0.9, optimizer="sgd", weight_decay=5e-4, eval_dataset=sample(500),
                  metric_fn=metric_fn, name="my_target")
