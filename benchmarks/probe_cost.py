"""Probe cost: noise-estimation wall time against plain training steps over the same examples.

    python benchmarks/probe_cost.py [--draws 200]

Plain baseline for the micro-batch and two-batch estimators: gradient accumulation over
the same k micro-batches of b (zero_grad, k forward/backward, optimizer step); for
per-example: the same, over batches of B. Target: microbatch ≤ 1.2× plain;
per-example typically 5–40× slower.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bsadvisor  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402


def plain(t, micro, k, draws, seed=0):
    model = t.model
    saved = {n: v.clone() for n, v in model.state_dict().items()}
    opt = t.make_optimizer()
    x, y = t.train_dataset.tensors
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    perm, pos = torch.randperm(n, generator=gen), 0
    t0 = time.perf_counter()
    for _ in range(draws):
        if pos + k * micro > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + k * micro]
        pos += k * micro
        opt.zero_grad(set_to_none=True)
        for j in range(k):
            mi = idx[j * micro:(j + 1) * micro]
            t.loss_fn(model, (x[mi], y[mi])).div(k).backward()
        opt.step()
    el = time.perf_counter() - t0
    model.load_state_dict(saved)
    return el


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'target':12} {'estimator':12} {'examples':>8} {'probe s':>8} {'plain s':>8} {'ratio':>6}")
    for name in ("builtin:linreg", "builtin:mnist1d-mlp"):
        t = load_target(name)
        B = t.batch_size
        for est in ("microbatch", "two-batch", "per-example"):
            bsadvisor.probe(t, estimator=est, warmup_steps=0, draws=5, measure_memory=False,
                            measure_throughput=False)  # warm caches (scipy import, torch.func tracing)
            r = bsadvisor.probe(t, estimator=est, warmup_steps=0, draws=args.draws,
                                measure_memory=False, measure_throughput=False, budget_seconds=600)
            n = r.noise
            if est == "microbatch":
                base = plain(t, n.micro_batch, n.big_batch // n.micro_batch, n.draws)
            elif est == "two-batch":  # a small batch b and a big batch B per draw
                base = plain(t, n.micro_batch, 1, n.draws) + plain(t, n.big_batch, 1, n.draws)
            else:
                base = plain(t, B, 1, n.draws)
            print(f"{name[8:]:12} {est:12} {n.examples:8d} {n.seconds:8.3f} {base:8.3f} {n.seconds / base:6.2f}")


if __name__ == "__main__":
    main()
