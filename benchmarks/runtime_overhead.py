"""What following a plan costs: bsadvisor's training loop against a hand-written one.

Both train builtin:mnist1d-mlp on the same batch sizes (a plan 32 → 160 → 800) with
index_select batches and torch SGD; bsadvisor's loop adds the plan sampler, the
scheduler stepped once per update (the plan looked up at every sample position), per-step
NaN checks, the per-update record and progress hooks. The target is < 10% overhead.
The machine may be shared, so the two loops alternate and the fastest of
``--repeats`` runs of each is compared.

    python benchmarks/runtime_overhead.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bsadvisor.core.plan import Plan, Stage  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402
from bsadvisor.runtime.train import train_plan  # noqa: E402


def hand_loop(target, plan, init):
    """The loop a user would write for the same batch sizes: no plan objects, no checks."""
    model = target.model
    model.load_state_dict(init)
    x, y = target.train_dataset.tensors
    opt = torch.optim.SGD(model.parameters(), lr=plan.at(0).lr, momentum=plan.at(0).momentum)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(plan.epochs):
        b = plan.at(epoch).batch_size
        for g in opt.param_groups:
            g["lr"] = plan.at(epoch).lr
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), b):
            idx = perm[i:i + b]
            opt.zero_grad(set_to_none=True)
            loss = target.loss_fn(model, [x.index_select(0, idx), y.index_select(0, idx)])
            loss.backward()
            opt.step()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    target = load_target("builtin:mnist1d-mlp")
    target.eval_dataset = None  # time the training loop only
    target.metric_fn = None
    n = target.dataset_size
    plan = Plan(stages=[Stage(0, 2 * n, 32, 0.05, 0.9, 1.0), Stage(2 * n, 3 * n, 160, 0.05, 0.9, 0.2),
                        Stage(3 * n, 4 * n, 800, 0.05, 0.9, 0.04)], dataset_size=n)  # whole epochs, in samples
    init = copy.deepcopy(target.model.state_dict())
    hand, ours = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        hand_loop(target, plan, init)
        hand.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        train_plan(target, plan, seed=0, init_state=init, on_step=lambda k: None)
        ours.append(time.perf_counter() - t0)
    ratio = min(ours) / min(hand)
    print(f"plan batch sizes {plan.batch_sizes()}, {plan.updates} updates, N = {n}")
    print(f"hand-written loop : {min(hand):.3f} s  (runs: {', '.join(f'{t:.3f}' for t in hand)})")
    print(f"bsadvisor loop    : {min(ours):.3f} s  (runs: {', '.join(f'{t:.3f}' for t in ours)})")
    ok = ratio < 1.10
    print(f"ratio             : {ratio:.3f}  (target < 1.10: {'holds' if ok else 'FAILS'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
