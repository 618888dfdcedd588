"""The noise monitor against the truth, through training, on builtin:mnist1d-mlp (the reproduce_smith setting).

Setup: 32 000 training examples, SGD momentum 0.9, LR 0.05, B0 = 32, MultiStepLR(milestones=[3,6,8],
gamma=0.2), 10 epochs; the original schedule and bsadvisor's plan (exact rule, N/10 cap).

At the end of epochs 1, 3, 6, 8 and 10 of each run:
- the truth: B_simple = tr(Σ)/|G|² over the whole training set, from every example's gradient
  (torch.func per-example gradients; tr Σ = mean |g_i|² − |G|², docs/concepts.md eq. 10);
- the NoiseMonitor's estimate at the same parameters (``measure``: ``--draws`` extra draws, the
  draw size chosen by the monitor from its last estimate), with its 90% interval.
Target: the truth inside the monitor's interval at ≥ 4 of the 5 points, for both runs.

Overhead: each run trained without the monitor and with validate's default (extra draws within
a 5% time budget), interleaved, ``--repeats`` times; the ratio of the best training wall times.

    python benchmarks/noise_trace.py [--draws 16] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bsadvisor.core.baseline import baseline_plan  # noqa: E402
from bsadvisor.core.convert import convert_schedule  # noqa: E402
from bsadvisor.runtime.monitor import NoiseMonitor  # noqa: E402
from bsadvisor.runtime.train import initial_state, train_plan  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402

EPOCHS = (1, 3, 6, 8, 10)


def full_data_b_simple(target, chunk: int = 2000) -> float:
    """tr Σ / |G|² over every training example, from per-example gradients (torch.func), in float64 sums."""
    from torch.func import functional_call, grad, vmap

    model = target.model
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        return target.loss_fn(_Call(model, p, buffers, functional_call), (x.unsqueeze(0), y.unsqueeze(0)))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    x_all, y_all = target.train_dataset.tensors
    n = len(x_all)
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    sq_sum = 0.0
    for a in range(0, n, chunk):
        g = per_example(params, x_all[a:a + chunk], y_all[a:a + chunk])
        for k, v in g.items():
            v64 = v.to(torch.float64)
            total[k] += v64.sum(0)
            sq_sum += float(v64.square().sum())
    g2 = sum(float((t / n).square().sum()) for t in total.values())
    return (sq_sum / n - g2) / g2


class _Call(torch.nn.Module):
    """The model called with given parameters (functional_call), so the target's loss_fn works under vmap."""

    def __init__(self, model, params, buffers, functional_call):
        super().__init__()
        object.__setattr__(self, "_args", (model, {**buffers, **params}, functional_call))

    def forward(self, *args):
        model, state, call = self._args
        return call(model, state, args)


def trace_against_truth(target, plan, init, draws: int) -> list[dict]:
    """Train ``plan`` (seed 0); at the end of each epoch in EPOCHS, the monitor's estimate and the truth."""
    monitor = NoiseMonitor(target.model, target.loss_fn, target.train_dataset, draws=draws, seed=1)
    rows = []

    def on_epoch(rec):
        epoch = rec["epoch"]
        if epoch not in EPOCHS:
            return
        setting = plan.at_sample(min(epoch * plan.dataset_size, plan.total_samples - 1))
        started = time.perf_counter()
        point = monitor.measure(epoch * plan.dataset_size, setting.lr, setting.momentum, setting.batch_size)
        took = time.perf_counter() - started
        truth = full_data_b_simple(target)
        lo, hi = point["ci90"]
        rows.append({"epoch": epoch, "truth": truth, "estimate": point["b_simple"], "lo": lo, "hi": hi,
                     "kind": point["ci_kind"], "inside": lo <= truth <= (hi if hi is not None else float("inf")),
                     "big_batch": point["big_batch"], "seconds": took})

    train_plan(target, plan, seed=0, init_state=init, on_epoch=on_epoch)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description="NoiseMonitor vs full-data truth on builtin:mnist1d-mlp")
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    target = load_target("builtin:mnist1d-mlp")
    n = target.dataset_size
    common = dict(lr=0.05, batch_size=32, dataset_size=n, epochs=10,
                  schedule="MultiStepLR(milestones=[3,6,8], gamma=0.2)", momentum=0.9)
    runs = {"original": baseline_plan(**common), "plan": convert_schedule(**common)}
    init = initial_state(target.model)
    print(f"builtin:mnist1d-mlp, N = {n}, 10 epochs, {common['schedule']}, SGD m 0.9, LR 0.05, B0 32; "
          f"monitor: {args.draws} draws per point, 90% intervals")
    ok = True
    for name, plan in runs.items():
        rows = trace_against_truth(target, plan, init, args.draws)
        inside = sum(r["inside"] for r in rows)
        ok &= inside >= 4
        print(f"\n{name}: truth inside the 90% interval at {inside} of {len(rows)} points")
        print("| epoch | truth B_simple | monitor | 90% interval | kind | draw batch | inside | s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            hi = "∞" if r["hi"] is None or r["hi"] == float("inf") else f"{r['hi']:,.0f}"
            print(f"| {r['epoch']} | {r['truth']:,.0f} | {r['estimate']:,.0f} | {r['lo']:,.0f}–{hi} | {r['kind']} | "
                  f"{r['big_batch']:,} | {'yes' if r['inside'] else 'NO'} | {r['seconds']:.2f} |")

    print(f"\noverhead of validate's default monitor (extra draws within 5% of training time), best of "
          f"{args.repeats}, interleaved:")
    for name, plan in runs.items():
        walls = {"without": [], "with": []}
        for _ in range(args.repeats):
            for label, settings in (("without", None), ("with", {"overhead": 0.05})):
                r = train_plan(target, plan, seed=0, init_state=init, noise_monitor=settings)
                # wall_s leaves the monitor's draws out; add them back for the true cost
                spent = sum(p["seconds"] for p in r.noise_trace)
                walls[label].append((r.history[-1]["wall_s"] + spent, len(r.noise_trace), spent / r.history[-1]["wall_s"]))
        base = min(w for w, _, _ in walls["without"])
        best, points, share = min(walls["with"])
        print(f"  {name}: {base:.2f} s without, {best:.2f} s with ({points} points): ratio {best / base:.3f}; "
              f"the monitor's own time {share:.1%} of training")
    print("\nTARGET", "MET" if ok else "MISSED", "(truth inside the interval at ≥ 4 of 5 points for both runs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
