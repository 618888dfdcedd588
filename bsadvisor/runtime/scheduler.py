"""The optimizer side of a Plan: LR and momentum, update by update.

Smith et al. (arXiv 1711.00489) replace "decay the learning rate" by "increase the batch
size"; the plan says, at every sample position, which batch size, LR and momentum to use
(inside a stage the LR follows the original schedule × the stage's factor, eq. 14 of
docs/concepts.md). ``BatchSizeScheduler`` is shaped like a torch LR scheduler:
``step()`` once per optimizer update. It sets each param group's LR and momentum (SGD
``momentum``, Adam ``betas[0]``); the batch size is the sampler's business
(runtime/sampler.py), and both count the same samples.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.plan import Plan, Setting


class BatchSizeScheduler:
    """Sets LR and momentum from ``plan.at_sample(samples_seen)``; call ``step()`` after each optimizer step.

    Like torch's LR schedulers it applies the first setting on construction. Each
    ``step()`` moves on by the batch just trained on: the plan's batch size at the current
    position, cut at the end of the epoch or of the run exactly as ``PlanBatchSampler``
    cuts it (pass ``samples=`` when your loader made a batch of another size). For a plan
    of whole-epoch stages, ``set_epoch(e)`` jumps to the start of epoch e (the epoch-level
    convenience: call it at each epoch start instead of stepping per update).

    The batch size is not the optimizer's business: read it with ``get_last_batch_size()``.
    Param groups keep their LR ratios to the first group, so per-layer LR multipliers
    survive. For Adam/AdamW the plan's momentum is β1, and a plan made with the companion
    scaling (``adam_sde``) also scales each group's 1−β2 and ε from the values the optimizer
    had when the scheduler was made (docs/concepts.md eq. 27).
    """

    def __init__(self, plan: Plan, optimizer: torch.optim.Optimizer, samples_seen: int = 0):
        self.plan = checks.instance("plan", plan, Plan, "a bsadvisor Plan (Plan.load('plan.json'))")
        self.optimizer = checks.instance("optimizer", optimizer, torch.optim.Optimizer,
                                         "a torch.optim optimizer (torch.optim.SGD(model.parameters(), lr=...))")
        samples_seen = self._position("samples_seen", samples_seen)
        base = optimizer.param_groups[0]["lr"]
        self._ratios = [(g["lr"] / base) if base > 0 else 1.0 for g in optimizer.param_groups]
        # Adam's own β2 and ε, which a plan's companion scaling multiplies (1−β2 by κ, ε by 1/√κ)
        self._adam_base = [[g["betas"][1], g.get("eps", 0.0)] if "betas" in g else None for g in optimizer.param_groups]
        self.samples_seen = int(samples_seen)
        self.last_step = 0  # optimizer updates stepped through
        self._setting: Optional[Setting] = None
        self._apply()

    def _batch_here(self) -> int:
        """Examples in the update that starts at ``samples_seen``: the plan's batch, cut at the epoch's end."""
        s = self.samples_seen
        return max(0, self.plan.update_end(s) - s) if s < self.plan.total_samples else 0

    def _position(self, name: str, value: Any) -> int:
        """A sample count or position: a whole number from 0 to the plan's total_samples."""
        return checks.integer(name, value, low=0, high=self.plan.total_samples)

    def step(self, samples: Optional[int] = None) -> None:
        """After an optimizer update: move on by ``samples`` (default: the planned batch here) and apply."""
        self.samples_seen += self._batch_here() if samples is None else self._position("samples", samples)
        self.last_step += 1
        self._apply()

    def seek(self, samples_seen: int) -> None:
        """Go to sample position ``samples_seen`` (a run resumed mid-epoch) and apply its setting."""
        self.samples_seen = self._position("samples_seen", samples_seen)
        self._apply()

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch`` (for loops that think in epochs; the plan's stages are whole epochs)."""
        if self.plan.dataset_size is None:
            raise UserError("this plan has no data set size (streaming); step() once per update instead")
        epoch = checks.integer("epoch", epoch, low=0, high=self.plan.full_epochs)
        self.seek(min(epoch * self.plan.dataset_size, self.plan.total_samples))

    @property
    def done(self) -> bool:
        """True once the plan's samples are all consumed."""
        return self.samples_seen >= self.plan.total_samples

    def _apply(self) -> None:
        s = self.plan.at_sample(min(self.samples_seen, self.plan.total_samples - 1))
        # Only write when the setting changes, so a user who tweaks a group by hand between
        # changes of the plan is left alone.
        if s == self._setting:
            return
        for ratio, base, group in zip(self._ratios, self._adam_base, self.optimizer.param_groups):
            group["lr"] = s.lr * ratio
            if "betas" in group:
                beta2 = group["betas"][1] if base is None else 1.0 - min(1.0, s.beta2_factor * (1.0 - base[0]))
                group["betas"] = (s.momentum, beta2)
                if base is not None and "eps" in group:
                    group["eps"] = base[1] * s.eps_factor
            elif "momentum" in group:
                group["momentum"] = s.momentum
        self._setting = s

    def get_last_batch_size(self) -> int:
        """The batch size of the update about to run (the plan's; the epoch's last batch may be shorter)."""
        return self.plan.at_sample(min(self.samples_seen, self.plan.total_samples - 1)).batch_size

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_momentum(self) -> list[float]:
        return [g["betas"][0] if "betas" in g else g.get("momentum", 0.0) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"samples_seen": self.samples_seen, "last_step": self.last_step, "ratios": list(self._ratios),
                "adam_base": [list(b) if b is not None else None for b in self._adam_base], "plan": self.plan.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        checks.instance("state", state, dict, "a dict from BatchSizeScheduler.state_dict()")
        saved_plan, identity = state.get("plan"), self.plan.fingerprint()  # a plan's identity (a resume's too)
        if saved_plan is not None and (not isinstance(saved_plan, dict)
                                       or {k: saved_plan.get(k) for k in identity} != identity):
            raise UserError("BatchSizeScheduler state was saved with a different plan; resume with the same plan")
        if "samples_seen" not in state:
            raise UserError("BatchSizeScheduler state needs 'samples_seen' (give what state_dict() returned)")
        seen = self._position("samples_seen", state["samples_seen"])
        self.last_step = checks.integer("last_step", state.get("last_step", 0), low=0)
        self.samples_seen = seen
        self._ratios = list(state.get("ratios", self._ratios))
        self._adam_base = [list(b) if b is not None else None for b in state.get("adam_base", self._adam_base)]
        self._setting = None  # force a write: the optimizer may have been rebuilt
        self._apply()
