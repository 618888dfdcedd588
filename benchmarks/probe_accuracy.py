"""Probe accuracy: each estimator's B_simple against the exact truth, interval coverage, wall time.

    python benchmarks/probe_accuracy.py [--reps-linreg 40] [--reps-mlp 5]

Truth: linreg — exact over its finite training set from closed-form per-example
gradients at the parameters the probe measured at; mnist1d-mlp — exact from
per-example gradients (torch.func) over all 32 000 training examples, at
initialisation (the MLP probes run with --warmup-steps 0 so one truth serves all).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bsadvisor  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402

ESTIMATORS = ("microbatch", "two-batch", "per-example")


def linreg_truth(t, state):
    x, y = t.train_dataset.tensors
    w = state["weight"].reshape(-1)
    g = (x @ w - y)[:, None] * x
    G = g.mean(0)
    return float(((g - G) ** 2).sum() / (len(x) - 1)) / float(G @ G)


def mlp_truth(t):
    from torch.func import functional_call, grad, vmap

    m = t.model
    params = {k: v.detach() for k, v in m.named_parameters()}
    x, y = t.train_dataset.tensors
    f = vmap(grad(lambda p, xi, yi: torch.nn.functional.cross_entropy(functional_call(m, p, (xi[None],)), yi[None])),
             in_dims=(None, 0, 0))
    s = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    sq = 0.0
    for i in range(0, len(x), 4000):
        g = f(params, x[i:i + 4000], y[i:i + 4000])
        for k in g:
            gd = g[k].double()
            s[k] += gd.sum(0)
            sq += float(gd.square().sum())
    n = len(x)
    g2 = sum(float((v / n).square().sum()) for v in s.values())
    return (sq - n * g2) / (n - 1) / g2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps-linreg", type=int, default=40)
    ap.add_argument("--reps-mlp", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    t = load_target("builtin:linreg")
    for est in ESTIMATORS:
        errs, hits, secs = [], 0, []
        for s in range(args.reps_linreg):
            r = bsadvisor.probe(t, estimator=est, seed=s, warmup_steps=3, measure_memory=False,
                                measure_throughput=False, budget_seconds=20)
            truth = linreg_truth(t, r.measured_state)
            errs.append(r.noise.b_simple / truth - 1)
            hits += r.noise.ci90[0] <= truth <= r.noise.ci90[1]
            secs.append(r.wall_seconds)
        rows.append(("linreg", est, truth, np.median(np.abs(errs)), np.sqrt(np.mean(np.square(errs))),
                     hits / args.reps_linreg, np.mean(secs), args.reps_linreg))
    t = load_target("builtin:mnist1d-mlp")
    t0 = time.perf_counter()
    truth = mlp_truth(t)
    print(f"mnist1d-mlp exact truth B_simple = {truth:.4g} at init ({time.perf_counter() - t0:.1f}s over 32000 examples)")
    for est in ESTIMATORS:
        errs, hits, secs = [], 0, []
        for s in range(args.reps_mlp):
            r = bsadvisor.probe(t, estimator=est, seed=s, warmup_steps=0, measure_memory=False,
                                measure_throughput=False, budget_seconds=20)
            errs.append(r.noise.b_simple / truth - 1)
            hits += r.noise.ci90[0] <= truth <= r.noise.ci90[1]
            secs.append(r.wall_seconds)
        rows.append(("mnist1d-mlp", est, truth, np.median(np.abs(errs)), np.sqrt(np.mean(np.square(errs))),
                     hits / args.reps_mlp, np.mean(secs), args.reps_mlp))
    print(f"{'target':12} {'estimator':12} {'truth':>8} {'med|err|':>9} {'rms err':>8} {'cover90':>8} {'wall s':>7} {'reps':>5}")
    for name, est, tr, med, rms, cov, sec, reps in rows:
        print(f"{name:12} {est:12} {tr:8.4g} {med:9.1%} {rms:8.1%} {cov:8.0%} {sec:7.2f} {reps:5d}")


if __name__ == "__main__":
    main()
