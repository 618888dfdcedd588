"""How close a recipe's LR sits to its curvature limit along the run, against the outcome of the conversion.

The hypothesis tested: growing the batch cuts only the gradient noise, while decaying the LR also shrinks the
step against the curvature. On a quadratic with Hessian eigenvalue h and gradient-noise variance σ²/B, SGD with
LR α settles at an excess loss of (α/B)·σ²/(2(2 − αh)): at a fixed temperature α/B the loss grows with α through
1/(1 − q), q = αh/2 the fraction of the stability limit (heavy-ball with momentum β: αh < 2(1 + β)). A conversion
keeps α/B but runs the peak α late in the run, where the original has decayed it: it should cost nothing while
q ≪ 1 and a lot as q → 1. Adam with EMA momentum is heavy-ball with α = ε(1 − β1), β = β1 in the coordinates
its preconditioner P = diag(1/(√v̂ + eps)) makes, so q = ε·h_P·(1 − β1)/(2(1 + β1)) with

    h_P = E[(P d)ᵀ H (P d)] / E[dᵀ P d],   d = g_a − g_b (two independent micro-batch gradients: E[ddᵀ] ∝ Σ),

the curvature along the directions the noise moves the weights (SGD: P = I, q = εh/(2(1 + m))). Hv is a
central difference of the big-batch gradient at the step's own scale. Also McCandlish et al.'s greedy optimal LR
ε* = GᵀPG / (GᵀPHPG + tr(PHPΣ)/B0) and the LR over it (rho). This script trains each model's original (seed 0)
at its recipe's LR × K and measures both at a few points. Measured (docs/results.md, "Growth to 2 × B0 for
Adam"): q stayed at most 0.26 and rho overlapped between × 1 and × 4, so neither tells the runs where the full
conversion held from those where it lost: a negative result.

    python benchmarks/curvature.py --models charlm,sorter --lr-times 1,4
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adam_rules  # noqa: E402
import noise_advice  # noqa: E402

from bsadvisor.core.defaults import ADAM_FAMILY  # noqa: E402
from bsadvisor.core.fileio import write_atomic  # noqa: E402
from bsadvisor.runtime.batches import make_gather  # noqa: E402
from bsadvisor.runtime.train import initial_state, train_plan  # noqa: E402

CACHE = Path(__file__).resolve().parent / "results" / "curvature.json"
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.95)
PAIRS = 6


def _grad(model, loss_fn, gather, idx, params):
    loss = loss_fn(model, gather(idx))
    return torch.autograd.grad(loss, params)


def _dot(a, b) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def _hv(model, loss_fn, gather, idx, params, u, r):
    """(∇L(θ + r·u) − ∇L(θ − r·u)) / 2r on the batch ``idx``: H·u at the scale r·|u|. The weights are put back
    exactly (a copy, not θ + r·u − r·u in floating point), so the run measured trains on unchanged."""
    saved = [p.detach().clone() for p in params]
    grads = []
    try:
        for sign in (1, -1):
            with torch.no_grad():
                for p, s, v in zip(params, saved, u):
                    p.copy_(s + sign * r * v)
            grads.append(_grad(model, loss_fn, gather, idx, params))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    plus, minus = grads
    return [(a - b) / (2 * r) for a, b in zip(plus, minus)]


def curvature(model, optimizer, loss_fn, gather, n: int, b0: int, step_lr: float, seed: int) -> dict:
    """h_P along the noise and along the signal (module docstring) at the model's current weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    group = optimizer.param_groups[0]
    if "betas" in group:
        beta2, eps = group["betas"][1], group["eps"]
        pre = []
        for p in params:
            st = optimizer.state[p]
            vhat = st["exp_avg_sq"] / (1 - beta2 ** float(st["step"]))
            pre.append(1.0 / (vhat.sqrt() + eps))
    else:
        pre = [torch.ones_like(p) for p in params]
    gen = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(n, generator=gen)
    big = perm[: 8 * b0]
    rest = perm[8 * b0:]
    was_training = model.training
    model.eval()  # no dropout: the differences must see the weights move, nothing else
    try:
        num = den = 0.0
        for k in range(PAIRS):
            a = rest[2 * k * b0:(2 * k + 1) * b0]
            b = rest[(2 * k + 1) * b0:(2 * k + 2) * b0]
            ga, gb = _grad(model, loss_fn, gather, a, params), _grad(model, loss_fn, gather, b, params)
            d = [x - y for x, y in zip(ga, gb)]
            u = [p * x for p, x in zip(pre, d)]
            hu = _hv(model, loss_fn, gather, big, params, u, step_lr)
            num += _dot(u, hu)
            den += _dot(d, u)
        g = _grad(model, loss_fn, gather, big, params)
        ug = [p * x for p, x in zip(pre, g)]
        hg = _hv(model, loss_fn, gather, big, params, ug, step_lr)
        # E[dᵀPd] = 2 tr(PΣ)/b0; E[gᵀPg] = GᵀPG + tr(PΣ)/(8 b0): the preconditioned B_simple, unbiased
        tr = den / PAIRS * b0 / 2
        gpg = _dot(g, ug) - tr / (8 * b0)
        h_noise, h_signal = num / den, _dot(ug, hg) / _dot(g, ug)
        return {"h_noise": h_noise, "h_signal": h_signal, "b_simple_p": tr / gpg if gpg > 0 else float("inf"),
                "eps_star_b0": gpg / (gpg * h_signal + tr * h_noise / b0) if gpg > 0 else 0.0}
    finally:
        model.train(was_training)


def measure(name: str, lr_times: float) -> dict:
    target = noise_advice.load(name)
    init = initial_state(target.model)
    original = adam_rules.lr_times(adam_rules.make_plan(target, adam_rules.ORIGINAL, {}), lr_times)
    linear = adam_rules.lr_times(adam_rules.make_plan(target, "linear", {}), lr_times)
    updates = original.updates
    at = {max(1, round(f * updates)): f for f in FRACTIONS}
    captured = {}
    make = target.make_optimizer

    def capture(*a, **k):
        captured["opt"] = make(*a, **k)
        return captured["opt"]

    target.make_optimizer = capture
    gather = make_gather(target.train_dataset, target.collate_fn)
    adam = target.optimizer in ADAM_FAMILY
    beta = target.beta1 if adam else target.momentum
    points, seen = [], {"updates": 0, "samples": 0}

    def on_step(size: int) -> None:
        seen["updates"] += 1
        seen["samples"] += size
        if seen["updates"] not in at:
            return
        s = seen["samples"]
        lr, plan_lr = original.at_sample(s).lr, linear.at_sample(s).lr
        with torch.random.fork_rng():
            c = curvature(target.model, captured["opt"], target.loss_fn, gather, target.dataset_size,
                          target.batch_size, lr, seen["updates"])
        factor = (1 - beta) / (2 * (1 + beta)) if adam else 1 / (2 * (1 + beta))
        row = {"fraction": at[seen["updates"]], "sample": s, "lr": lr, "plan_lr": plan_lr,
               "plan_batch": linear.at_sample(s).batch_size, **c,
               "rho": lr / c["eps_star_b0"] if c["eps_star_b0"] > 0 else float("inf"),
               "q_noise": lr * c["h_noise"] * factor, "q_noise_plan": plan_lr * c["h_noise"] * factor,
               "q_signal": lr * c["h_signal"] * factor, "q_signal_plan": plan_lr * c["h_signal"] * factor}
        points.append(row)
        print(f"  {name} ×{lr_times:g} {row['fraction']:.2f}: lr {lr:.2e} plan {plan_lr:.2e} "
              f"h_noise {c['h_noise']:.3g} h_signal {c['h_signal']:.3g} q_noise {row['q_noise']:.3f} "
              f"(plan {row['q_noise_plan']:.3f}) q_signal {row['q_signal']:.3f} (plan {row['q_signal_plan']:.3f}) "
              f"Bs_P {c['b_simple_p']:.3g} "
              f"eps*(B0) {c['eps_star_b0']:.3g} rho {row['rho']:.3g}",
              flush=True)

    r = train_plan(target, original, seed=0, init_state=init, on_step=on_step)
    return {"metric": r.final["metric"], "points": points}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="charlm,wordlm,sorter,mixer1d,gauss")
    ap.add_argument("--lr-times", default="1,4")
    args = ap.parse_args()
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    for name in args.models.split(","):
        for k in map(float, args.lr_times.split(",")):
            key = f"{name}|{k:g}"
            if key in cache:
                continue
            cache[key] = measure(name, k)
            fresh = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
            cache = {**fresh, **cache}
            write_atomic(CACHE, (json.dumps(cache, indent=1, sort_keys=True) + "\n").encode())
    for key, v in sorted(cache.items()):
        qs = " ".join(f"{p.get('rho', float('nan')):.3g}" for p in v["points"])
        print(f"{key:<14} metric {v['metric']:.4f}  lr/eps*(B0) at {FRACTIONS}: {qs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
