"""Warmup: leave the initial transient before measuring (docs/probe.md, step 1).

Right after initialisation the gradient reflects the initial parameters more than the
data, and a noise scale measured there says little about the run. So the probe first
trains ``warmup_steps`` steps at the target's LR and batch, within WARMUP_SHARE of the
budget; θ is then frozen and every measurement happens there.
"""
from __future__ import annotations

import time

import torch

from bsadvisor.core.errors import UserError
from bsadvisor.measure.bench import Bench, Budget, over_ranks
from bsadvisor.measure.step import clear_grads, guarded_step

WARMUP_SHARE = 0.2  # of --budget-seconds: the warmup stops here (a warning; an error with --draws)


def default_warmup_steps(dataset_size: int, batch_size: int) -> int:
    """About 2% of an epoch, between 1 and 50 steps."""
    return int(max(1, min(50, round(0.02 * dataset_size / batch_size))))


def warm_up(bench: Bench, optimizer, budget: Budget) -> int:
    """Train the configured warmup steps with ``optimizer``; returns how many were taken.

    Steps stop at WARMUP_SHARE of the budget, all ranks at the same step (one rank's clock
    past the share stops every rank). Cut short, the result carries a warning; with a fixed
    number of noise draws (``--draws``, a reproducible result) it is an error instead.
    """
    config = bench.config
    steps = config.warmup_steps
    if not steps:
        return 0
    deadline = budget.start + WARMUP_SHARE * budget.seconds
    done = 0
    for step in range(steps):
        guarded_step(bench.target, bench.model, optimizer, bench.batches.next(config.local_batch),
                     f"warmup step {step + 1}", dist=bench.dist, recipe=bench.recipe)
        if not all(torch.isfinite(p).all() for p in bench.params):
            raise UserError(f"parameters became non-finite at warmup step {step + 1}; lower --lr")
        done = step + 1
        bench.progress("warmup", done / steps)
        late = over_ranks(bench.dist, time.perf_counter() >= deadline) > 0
        if late and done < steps:
            break
    clear_grads(bench.params)
    if done < steps:
        if config.draws is not None:
            raise UserError(f"warmup reached only {done} of {steps} steps within its {WARMUP_SHARE:.0%} of "
                            "--budget-seconds; --draws needs the whole warmup for a reproducible result: "
                            "raise --budget-seconds or lower --warmup-steps")
        bench.warn(f"warmup stopped after {done} of {steps} steps ({WARMUP_SHARE:.0%} of --budget-seconds), "
                   "so the noise was measured earlier in training than asked: raise --budget-seconds "
                   "or lower --warmup-steps")
    return done
