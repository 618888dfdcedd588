"""Batch growth for a language model's per-step warmup + cosine, on builtin:charlm.

builtin:charlm is a small causal transformer on bytes of Python standard-library source,
trained for one epoch with AdamW and the recipe the target records: a per-step LinearLR
warmup then a cosine to a tenth of the peak. Runs (same initial weights, seeds = data order):

- original : the recipe at B0, the LR stepped once per update exactly as torch does
- linear   : the bsadvisor plan under the linear rule for Adam (T ∝ η/B, as Smith et al. used for Adam;
             the default: the rule that held on every model of benchmarks/adam_rules.py)
- sqrt     : the plan under the square-root rule (T ∝ η/√B, Malladi et al.)

Both plans keep the warmup and grow the batch after it (one pass: the N → ∞ form). The
table gives the final eval loss (mean ± sd over seeds), parameter updates and training wall
time (the fastest seed: other processes only ever add time), then each plan's paired verdict
(the same as bsadvisor validate's: per-seed differences in the metric, their 90% t interval
against the margin 0.005). Whatever the result, it is a result: if a rule loses, it says by how much.

    python benchmarks/reproduce_llm.py [--seeds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsadvisor.core.baseline import baseline_plan  # noqa: E402
from bsadvisor.core.recommend import recommend  # noqa: E402
from bsadvisor.core.verdict import paired_verdict  # noqa: E402
from bsadvisor.runtime.recipe import options_for_target  # noqa: E402
from bsadvisor.runtime.train import initial_state, train_plan  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description="batch growth on builtin:charlm (per-step warmup + cosine, AdamW)")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    target = load_target("builtin:charlm")
    recipe = target.metadata
    common = options_for_target(target).options  # the recipe, as advise and validate read it
    runs = {"original": baseline_plan(**common),
            "linear": recommend(common),
            "sqrt": recommend(common, adam_rule="sqrt")}
    print(f"builtin:charlm, N = {target.dataset_size} sequences of {recipe.get('seq_len')} bytes, "
          f"{recipe['epochs']} epoch, {recipe['schedule']} per step, AdamW lr {target.lr:g}, B0 {target.batch_size}, "
          f"{args.seeds} seeds")
    for name, plan in runs.items():
        print(f"  {name:<8} batches {' '.join(str(b) for b in plan.stage_batch_sizes())}, {plan.updates} updates")

    init = initial_state(target.model)
    results: dict[str, list] = {k: [] for k in runs}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for name, plan in runs.items():  # interleaved, so a busy machine slows every run alike
            r = train_plan(target, plan, seed=seed, name=name, init_state=init).final
            results[name].append(r)
            print(f"  seed {seed} {name:<8} eval loss {-r['metric']:.4f} train loss {r['train_loss']:.4f} "
                  f"updates {r['updates']} wall {r['wall_s']:.1f}s", flush=True)

    def mean_sd(name: str) -> tuple[float, float]:
        xs = [-r["metric"] for r in results[name]]  # the metric is the negative eval loss
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    ref_loss, _ = mean_sd("original")
    ref_updates = results["original"][0]["updates"]
    ref_wall = min(r["wall_s"] for r in results["original"])
    print("\n| run | final eval loss | Δ vs original | updates | fewer updates | train wall s (best seed) | less wall |")
    print("|---|---|---|---|---|---|---|")
    for name in runs:
        loss, sd = mean_sd(name)
        updates = results[name][0]["updates"]
        wall = min(r["wall_s"] for r in results[name])
        print(f"| {name} | {loss:.4f} ± {sd:.4f} | {loss - ref_loss:+.4f} | {updates:,} | {ref_updates / updates:.2f}× "
              f"| {wall:.1f} | {ref_wall / wall:.2f}× |")
    for name in ("linear", "sqrt"):
        v = paired_verdict([r["metric"] for r in results[name]], [r["metric"] for r in results["original"]])
        interval = "no interval (1 seed)" if v["interval"] is None else \
            f"90% CI [{v['interval'][0]:+.4f}, {v['interval'][1]:+.4f}]"
        print(f"{name}: {v['status'].upper()}, plan − original in metric (−eval loss) {v['difference']:+.4f}, "
              f"{interval}, margin {v['margin']:g}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
