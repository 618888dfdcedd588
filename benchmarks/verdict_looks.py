"""The validate verdict across looks: how often it accepts, by simulation, before and after the sequential rule.

The setting: paired differences d_s ~ N(μ, 0.004²), margin δ = 0.005, the first verdict at
3 seeds, then `validate --resume --seeds K` with K as suggested, up to three more times ("resume until
settled"). For each true mean μ it prints P(ACCEPTED) at the first look and at any look, P(REJECTED),
and the mean number of looks, for

- before: the fixed-n rule (a two-sided 90 % Student-t interval at every look, one seed deciding alone,
  the seeds whose half-width would clear the margin if d̄ and sd held);
- after: bsadvisor's rule (core/verdict.py: the paired t interval with α spent across looks,
  α_k = 0.05·6/(π²k²) per side at look k, one seed only indicative, the seeds for 80 % power at
  the next look), through ``simulate_looks``.

A non-inferiority verdict must accept a plan whose true mean is exactly −δ at most 5 % of the time.
The one-seed rows give P(ACCEPTED) of a single seed (the default ``--seeds 1``).

    python benchmarks/verdict_looks.py [--sims 20000]

Recorded (``--sims 20000``, 2026-12-07), P(ACCEPTED) at the first look / at any look, P(REJECTED):

    true mean μ | fixed-n t (one look)     | confidence sequence (c = 0.25) | α spent across looks (bsadvisor)
    −0.0050     |  4.79%  16.09%  16.18%   |  0.34%   1.10%   1.20%         |  2.87%   3.50%   3.89%
    −0.0060     |  2.32%   3.89%  77.11%   |  0.20%   0.41%  24.10%         |  1.33%   1.43%  25.25%
    −0.0090     |  0.11%   0.12%  98.01%   |  0.01%   0.01%  77.53%         |  0.08%   0.08%  78.09%
    −0.0030     | 15.40%  90.44%   1.44%   |  1.17%  47.69%   0.15%         |  9.54%  47.96%   0.67%
    +0.0000     | 42.80%  99.23%   0.07%   |  4.11%  87.87%   0.00%         | 29.15%  88.04%   0.04%
    one seed, P(ACCEPTED) at μ = −0.0050 / −0.0090: fixed-n 49.6% / 15.1%; α spent 0.0% / 0.0% (indicative)

The confidence sequence (an anytime-valid t test, half-normal mixture; the alternative considered)
was valid across looks too but accepted a good plan (μ = 0) at the first
look 4% of the time: 3 seeds needed t > 11.3. Spending α across looks keeps the first look near the
one-look t interval (t = 3.87 at 3 seeds against 2.92) and is as good by the last look.

Other spending sequences (Σ α_k = α for any number of looks), same simulation, seed 0, 20000 runs:
P(ACCEPTED) at μ = −δ first / any look, P(REJECTED) at −δ; at μ = 0 first / any look:

    α·6/(π²k²)   (α_1 3.04%)   2.87%  3.50%  3.89%   29.2%  88.0%   (bsadvisor's)
    α/(k(k+1))   (α_1 2.50%)   2.34%  3.17%  3.49%   24.8%  88.0%
    α·¾·(¼)^(k−1) (α_1 3.75%)  3.65%  4.22%  4.50%   34.6%  88.0%
    α·k⁻³/ζ(3)   (α_1 4.16%)   4.11%  4.47%  4.51%   37.4%  88.1%

A steeper sequence buys a better first look at the cost of later ones and of the room left under 5 %
for seed counts chosen from the results (where the union bound is not exact); 6/(π²k²) keeps 1.1
points of that room and a closed form.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from bsadvisor.core.verdict import add_seeds, paired_verdict, simulate_looks  # noqa: E402

SD, DELTA = 0.004, 0.005


def before(true_mean: float, sims: int, seed: int = 0, start: int = 3, extra_looks: int = 3) -> dict:
    """The fixed-n t rule (one look's interval), resumed until settled the same way (sufficient statistics)."""
    rng = np.random.default_rng(seed)
    n = np.full(sims, start)
    mean = rng.normal(true_mean, SD / math.sqrt(start), sims)
    ss = SD ** 2 * rng.chisquare(start - 1, sims)
    status = np.zeros(sims, dtype=int)
    first = None
    for look in range(extra_looks + 1):
        active = status == 0
        s = np.sqrt(ss / (n - 1))
        half = stats.t.ppf(0.95, n - 1) * s / np.sqrt(n)
        status[active & (mean - half > -DELTA)] = 1
        status[active & (mean + half < -DELTA)] = -1
        first = float(np.mean(status == 1)) if first is None else first
        pending = np.flatnonzero(status == 0)
        if look == extra_looks or pending.size == 0:
            break
        gap, sp = np.abs(mean[pending] + DELTA), s[pending]
        want = np.zeros(pending.size, dtype=int)
        for k in range(4, 1001):  # the smallest n whose half-width t·sd/√n falls below the gap
            hit = (want == 0) & (stats.t.ppf(0.95, k - 1) * sp / math.sqrt(k) < gap) & (k > n[pending])
            want[hit] = k
        status[pending[want == 0]] = 2
        go, k = pending[want > 0], want[want > 0]
        mean[go], ss[go] = add_seeds(rng, true_mean, SD, n[go], mean[go], ss[go], k)
        n[go] = k
    return {"accepted": float(np.mean(status == 1)), "first_accepted": first,
            "rejected": float(np.mean(status == -1))}


def one_seed(true_mean: float, sims: int, seed: int = 1) -> tuple[float, float]:
    """P(ACCEPTED) with one seed: before (d ≥ −δ accepts) and now (the verdict itself, paired_verdict)."""
    d = np.random.default_rng(seed).normal(true_mean, SD, sims)
    now = sum(paired_verdict([x], [0.0])["status"] == "accepted" for x in d[:2000]) / 2000
    return float(np.mean(d >= -DELTA)), now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=20000)
    args = ap.parse_args()
    print(f"paired differences N(μ, {SD}²), margin δ = {DELTA}, first look at 3 seeds, then the suggested "
          f"seeds up to 3 times; {args.sims} simulations per row")
    print(f"{'true mean μ':>14} | {'before: 1st look':>16} {'any look':>9} {'rejected':>9} | "
          f"{'after: 1st look':>15} {'any look':>9} {'rejected':>9} {'looks':>6}")
    for mu in (-DELTA, -DELTA - 0.25 * SD, -DELTA - SD, -DELTA + 0.5 * SD, 0.0):
        b = before(mu, args.sims)
        a = simulate_looks(mu, SD, DELTA, sims=args.sims)
        print(f"{mu:>+14.4f} | {b['first_accepted']:>16.2%} {b['accepted']:>9.2%} {b['rejected']:>9.2%} | "
              f"{a['first_accepted']:>15.2%} {a['accepted']:>9.2%} {a['rejected']:>9.2%} {a['looks']:>6.2f}")
    for mu in (-DELTA, -DELTA - SD):
        was, now = one_seed(mu, args.sims)
        print(f"one seed, μ = {mu:+.4f}: P(ACCEPTED) before {was:.1%}, now {now:.1%}")


if __name__ == "__main__":
    main()
