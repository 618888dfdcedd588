"""Evaluating a run: the metric over the eval data set, and where along the run its curve is taken.

``evaluate`` is the one pass over ``target.eval_dataset`` (split over ranks under torchrun);
``eval_points`` places a run's curve (``train_plan(..., evals=k)``, validate's ``--evals``).
"""
from __future__ import annotations

from typing import Optional

import torch

from bsadvisor.runtime.batches import make_gather, split_share, to_device
from bsadvisor.runtime.distributed import Dist
from bsadvisor.targets.target import Target


@torch.no_grad()
def evaluate(target: Target, batch_size: int = 1024, dist: Optional[Dist] = None,
             device: Optional[torch.device] = None) -> Optional[float]:
    """Mean of ``target.metric_fn`` over ``eval_dataset`` (weighted by batch length).

    Under torchrun each rank scores a contiguous share of the examples and the sums are
    all-reduced: every rank returns the same number.
    """
    if target.eval_dataset is None or target.metric_fn is None:
        return None
    dist = dist or Dist()
    ds, model = target.eval_dataset, target.model
    n = len(ds)
    mine = split_share(torch.arange(n), dist.rank, dist.world_size)
    gather = make_gather(ds, target.collate_fn)
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for lo in range(0, len(mine), batch_size):
            idx = mine[lo:lo + batch_size]
            total += float(target.metric_fn(model, to_device(gather(idx), device))) * len(idx)
    finally:
        model.train(was_training)
    if dist.enabled:
        total = float(dist.all_reduce(torch.tensor(total, dtype=torch.float64)))
    return total / n


def eval_points(total_samples: int, evals: int) -> list[int]:
    """The sample positions of a run's curve: ``evals`` evenly spaced places, the last at the run's end."""
    return sorted({max(1, round(total_samples * k / evals)) for k in range(1, evals + 1)})


__all__ = ["evaluate", "eval_points"]
