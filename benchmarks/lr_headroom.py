"""Does an early look tell a recipe's LR from its best? The original at LR × K and × 2K, seed 0, evaluated at 10
points: the metric at × 2K minus the metric at × K at 20 % and 30 % of the run ("doubling gain"), for K = 1 (the
recipes' LR, below their best on every model but gauss) and K = 4 (the best LR of the sweep; gauss's best is × 1).

Why: the full AdamW conversion held at the recipes' LRs and lost at a tuned one (docs/results.md), and nothing
the noise scale or the curvature measured told the two apart. If 2 × LR already does worse early, the LR is at or
past its best. Curves cached in benchmarks/results/lr_headroom.json.

    python benchmarks/lr_headroom.py --models charlm,wordlm,sorter,mixer1d,gauss,wave
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adam_rules  # noqa: E402
import noise_advice  # noqa: E402

from bsadvisor.core.fileio import write_atomic  # noqa: E402

CACHE = Path(__file__).resolve().parent / "results" / "lr_headroom.json"
FACTORS = (1, 2, 4, 8)


def curves(name: str) -> dict:
    from bsadvisor.runtime.train import initial_state, train_plan

    target = noise_advice.load(name)
    init = initial_state(target.model)
    base = adam_rules.make_plan(target, adam_rules.ORIGINAL, {})
    out = {}
    for k in FACTORS:
        r = train_plan(target, adam_rules.lr_times(base, k), seed=0, init_state=init, evals=10)
        out[str(k)] = [[e.samples, e.metric] for e in r.evals]
        print(f"  {name} × {k}: " + " ".join(f"{e.metric:.4f}" for e in r.evals), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="charlm,wordlm,sorter,mixer1d,gauss,wave")
    args = ap.parse_args()
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    for name in args.models.split(","):
        if name not in cache:
            cache[name] = curves(name)
            write_atomic(CACHE, (json.dumps(cache, indent=1, sort_keys=True) + "\n").encode())
    print("model     doubling gain at 20 % / 30 %:  × 1 → × 2        × 4 → × 8")
    for name in args.models.split(","):
        c = cache[name]
        gain = {k: [c[str(2 * k)][i][1] - c[str(k)][i][1] for i in (1, 2)] for k in (1, 4)}
        print(f"{name:<9} {'':31}{gain[1][0]:+.3f} / {gain[1][1]:+.3f}   {gain[4][0]:+.3f} / {gain[4][1]:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
