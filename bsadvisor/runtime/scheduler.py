"""The optimizer side of a Plan: LR and momentum, epoch by epoch.

Smith et al. (arXiv 1711.00489) replace "decay the learning rate" by "increase the
batch size"; the plan says, epoch by epoch, which batch size, LR and momentum to use.
``BatchSizeScheduler`` is shaped like a torch LR scheduler (``step()`` once per epoch)
and sets each param group's LR and momentum (SGD ``momentum``, Adam ``betas[0]``); the
batch size is the sampler's business (runtime/sampler.py).
"""
from __future__ import annotations

from typing import Optional

import torch

from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan, Setting


class BatchSizeScheduler:
    """Sets LR and momentum from ``plan.at(epoch)``; call ``step()`` at the end of each epoch.

    Like torch's LR schedulers it applies epoch 0 on construction. The batch size is not
    the optimizer's business: read it with ``get_last_batch_size()`` (or let a
    ``PlanBatchSampler`` follow the same plan). Param groups keep their LR ratios to the
    first group, so per-layer LR multipliers survive. For Adam/AdamW the plan's momentum
    is β1.
    """

    def __init__(self, plan: Plan, optimizer: torch.optim.Optimizer, last_epoch: int = -1):
        self.plan = plan
        self.optimizer = optimizer
        base = optimizer.param_groups[0]["lr"]
        self._ratios = [(g["lr"] / base) if base > 0 else 1.0 for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._setting: Optional[Setting] = None
        self.step()

    def step(self) -> None:
        self.last_epoch += 1
        self._apply(self.plan.at(self.last_epoch))

    def _apply(self, s: Setting) -> None:
        # Only write when the setting changes: inside a stage nothing moves, and a user
        # who tweaks a group by hand mid-stage is left alone.
        if s == self._setting:
            return
        for ratio, group in zip(self._ratios, self.optimizer.param_groups):
            group["lr"] = s.lr * ratio
            if "betas" in group:
                group["betas"] = (s.momentum, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = s.momentum
        self._setting = s

    def get_last_batch_size(self) -> int:
        return self.plan.at(self.last_epoch).batch_size

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_momentum(self) -> list[float]:
        return [g["betas"][0] if "betas" in g else g.get("momentum", 0.0) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "ratios": list(self._ratios), "plan": self.plan.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("plan") is not None and state["plan"]["stages"] != self.plan.to_dict()["stages"]:
            raise UserError("BatchSizeScheduler state was saved with a different plan; resume with the same plan")
        self.last_epoch = int(state["last_epoch"])
        self._ratios = list(state.get("ratios", self._ratios))
        self._setting = None  # force a write: the optimizer may have been rebuilt
        self._apply(self.plan.at(self.last_epoch))
