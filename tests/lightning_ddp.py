"""Two-process DDP (gloo, CPU) with FollowPlan: ``python lightning_ddp.py OUT_DIR MAX_MICRO_BATCH``.

Lightning's ``strategy="ddp"`` starts rank 1 by running this script again. Each rank writes
``rank<r>.json`` (the rows of every training_step call, and per update the examples it
trained on, LR and momentum); rank 0 also writes the final weights to ``weights.pt``.
"""
import json
import sys
from pathlib import Path

import torch

from lightning_parts import Regression, make_plan, trainer

from bsadvisor import FollowPlan

if __name__ == "__main__":
    out, micro = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    module = Regression()
    fit = trainer(out, [FollowPlan(make_plan(), max_micro_batch=micro)], strategy="ddp", devices=2)
    fit.fit(module)
    rank = fit.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps({"shares": module.shares, "updates": module.updates,
                                                      "epoch_batches": module.epoch_batches}))
    if rank == 0:
        torch.save(module.net.state_dict(), out / "weights.pt")
    # Lightning leaves its gloo group open; a finished rank's interpreter teardown can abort on it (SIGABRT,
    # "terminate called without an active exception", as the Trainer's torchrun test saw in CI): end as the CLI does.
    from bsadvisor.runtime.distributed import exit_job

    torch.distributed.barrier()
    exit_job(0)
