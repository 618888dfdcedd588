"""A small LightningModule and its data for tests/test_lightning.py and its DDP script (no BatchNorm).

The module records, for every optimizer update, the examples it trained on (summed over
micro-batches), the LR and the momentum in force at ``optimizer.step``, and at every epoch
start the batch count Lightning shows (``trainer.num_training_batches``).
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch

from bsadvisor import Target, convert_schedule

N = 512  # training examples
FEATURES = 8


def make_data(seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, FEATURES, generator=g)
    y = torch.tanh(x @ torch.randn(FEATURES, generator=g)) + 0.1 * torch.randn(N, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def make_plan(world_size: int = 1):
    """A per-step cosine at batch 16 over 3 epochs: stages start inside epochs, the LR moves every update."""
    return convert_schedule(lr=0.05, batch_size=16, momentum=0.9, dataset_size=N, epochs=3, schedule_unit="step",
                            schedule="CosineAnnealingLR(T_max=96, eta_min=0.005)", world_size=world_size)


def make_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def mse(net: torch.nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(net(x).squeeze(-1), y)


class Regression(pl.LightningModule):
    def __init__(self, lr: float = 0.05, momentum: float = 0.9, seed: int = 0):
        super().__init__()
        self.net = make_net(seed)
        self.lr, self.momentum = lr, momentum
        self.data = make_data()
        self.rows = 0
        self.updates: list[tuple[int, float, float]] = []  # (examples, lr, momentum) per optimizer step
        self.epoch_batches: list[int] = []  # trainer.num_training_batches at each epoch start
        self.shares: list[int] = []  # rows of every training_step call

    def training_step(self, batch, batch_idx):
        self.rows += len(batch[0])
        self.shares.append(len(batch[0]))
        loss = mse(self.net, batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", mse(self.net, batch))

    def on_before_optimizer_step(self, optimizer):
        group = optimizer.param_groups[0]
        self.updates.append((self.rows, group["lr"], group["momentum"]))
        self.rows = 0

    def on_train_epoch_start(self):
        self.epoch_batches.append(self.trainer.num_training_batches)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=16, shuffle=True)


def reference_target(seed: int = 0) -> Target:
    """The same model, data and optimizer as a bsadvisor Target, for bsadvisor's own loop."""
    return Target(model=make_net(seed), train_dataset=make_data(), loss_fn=mse, batch_size=16, lr=0.05,
                  momentum=0.9, optimizer="sgd")


def trainer(tmp_path, callbacks, **kwargs) -> pl.Trainer:
    """A quiet CPU Trainer writing under ``tmp_path``."""
    options = dict(accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   default_root_dir=str(tmp_path))
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)
