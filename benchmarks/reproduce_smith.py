"""Reproduce Smith et al. (arXiv 1711.00489), "Don't decay the learning rate, increase
the batch size", at laptop scale on builtin:mnist1d-mlp.

Setup: 32 000 training examples, SGD momentum 0.9, LR 0.05, batch B0 = 32, the LR
decayed by 5 at 30%, 60% and 80% of the epochs; three seeds (data order), the same
initial weights. Runs:

- original      : the LR schedule at B0 = 32
- plan          : batch growth with the same noise temperature (bsadvisor convert, exact rule, N/10 cap)
- increased-lr  : the paper's §5.2 variant, ×5 LR and ×5 batch from the start, then growth
- constant-lr   : LR 0.05 at B0 throughout (control: does the schedule matter at all?)

Targets (printed with the table):
1. plan matches the original's test accuracy within the seeds' spread (|Δ| ≤ 2 × sd),
2. with ≥ 2.5× fewer parameter updates and ≥ 1.8× less training wall time,
3. increased-lr within 0.5 percentage points with ≥ 10× fewer updates,
4. constant-lr is worse than the original by more than the spread (the schedule matters).

Runs alternate seed by seed so a busy machine slows them all alike; wall time counts
training steps only (evaluation excluded) and is the fastest of the seeds (timing noise
from other processes only ever adds time).

    python benchmarks/reproduce_smith.py [--epochs 10] [--seeds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsadvisor.core.convert import baseline_plan, convert_schedule  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402
from bsadvisor.runtime.train import initial_state, train_plan  # noqa: E402
from bsadvisor.runtime.validate import constant_plan  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description="Smith et al. 2018 at laptop scale (builtin:mnist1d-mlp)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    e = args.epochs
    target = load_target("builtin:mnist1d-mlp")
    n = target.dataset_size
    milestones = sorted({max(1, round(e * f)) for f in (0.3, 0.6, 0.8)})
    schedule = f"MultiStepLR(milestones={milestones}, gamma=0.2)"
    common = dict(lr=0.05, batch_size=32, dataset_size=n, epochs=e, schedule=schedule, momentum=0.9)
    original = baseline_plan(**common)
    runs = {"original": original, "plan": convert_schedule(**common),
            "increased-lr": convert_schedule(**common, increase_lr=5), "constant-lr": constant_plan(original)}
    print(f"builtin:mnist1d-mlp, N = {n}, {e} epochs, {schedule}, SGD m 0.9, LR 0.05, B0 32, {args.seeds} seeds")
    for name, p in runs.items():
        print(f"  {name:<13} batch sizes {' '.join(str(s.batch_size) for s in p.stages)}, "
              f"LRs {' '.join(f'{s.lr:.3g}' for s in p.stages)}, {p.updates} updates")

    init = initial_state(target.model)
    res: dict[str, list] = {k: [] for k in runs}
    t_all = time.perf_counter()
    for seed in range(args.seeds):
        for name, p in runs.items():
            r = train_plan(target, p, seed=seed, name=name, init_state=init).final
            res[name].append(r)
            print(f"  seed {seed} {name:<13} acc {r['metric']:.4f} loss {r['train_loss']:.4f} "
                  f"wall {r['wall_s']:.1f}s", flush=True)

    def stat(name, key):
        xs = [r[key] for r in res[name]]
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    ref_acc, ref_sd = stat("original", "metric")
    def wall(name):
        return min(r["wall_s"] for r in res[name])

    ref_wall = wall("original")
    ref_upd = res["original"][0]["updates"]
    print("\n| run | test accuracy | final train loss | updates | fewer updates | train wall s (best seed) | less wall |")
    print("|---|---|---|---|---|---|---|")
    for name in runs:
        acc, sd = stat(name, "metric")
        loss, lsd = stat(name, "train_loss")
        w = wall(name)
        upd = res[name][0]["updates"]
        print(f"| {name} | {acc:.4f} ± {sd:.4f} | {loss:.4f} ± {lsd:.4f} | {upd:,} | {ref_upd / upd:.2f}× | "
              f"{w:.1f} | {ref_wall / w:.2f}× |")

    plan_acc, plan_sd = stat("plan", "metric")
    spread = 2 * max(ref_sd, plan_sd)
    inc_acc = stat("increased-lr", "metric")[0]
    const_acc = stat("constant-lr", "metric")[0]
    checks = [
        (f"plan within the seeds' spread: |Δ| = {abs(plan_acc - ref_acc):.4f} ≤ 2×sd = {spread:.4f}",
         abs(plan_acc - ref_acc) <= spread),
        (f"plan ≥ 2.5× fewer updates: {ref_upd / res['plan'][0]['updates']:.2f}×",
         ref_upd / res["plan"][0]["updates"] >= 2.5),
        (f"plan ≥ 1.8× less wall time: {ref_wall / wall('plan'):.2f}×", ref_wall / wall("plan") >= 1.8),
        (f"increased-lr within 0.5 pp: Δ = {inc_acc - ref_acc:+.4f}", ref_acc - inc_acc <= 0.005),
        (f"increased-lr ≥ 10× fewer updates: {ref_upd / res['increased-lr'][0]['updates']:.2f}×",
         ref_upd / res["increased-lr"][0]["updates"] >= 10),
        (f"the schedule matters: constant-lr Δ = {const_acc - ref_acc:+.4f} < −2×sd = {-spread:.4f}",
         const_acc - ref_acc < -spread),
    ]
    print()
    for text, ok in checks:
        print(f"[{'holds' if ok else 'FAILS'}] {text}")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
