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
1. plan ACCEPTED by validate's paired verdict (docs/concepts.md eqs. 21–23): the 90 % interval
   of the per-seed accuracy differences lies above −0.005,
2. with ≥ 2.5× fewer parameter updates and ≥ 1.8× less training wall time,
3. increased-lr also ACCEPTED, with ≥ 10× fewer updates,
4. constant-lr is REJECTED (the schedule matters).

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
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsadvisor.core.baseline import baseline_plan  # noqa: E402
from bsadvisor.core.convert import convert_schedule  # noqa: E402
from bsadvisor.targets.loading import load_target  # noqa: E402
from bsadvisor.runtime.train import initial_state, train_plan  # noqa: E402
from bsadvisor.core.verdict import paired_verdict  # noqa: E402
from bsadvisor.core.plan import Plan, Stage  # noqa: E402


def constant_plan(plan: Plan) -> Plan:
    """One stage at the schedule's starting LR and batch: the control without any schedule."""
    first = plan.stages[0]
    stage = Stage(0, plan.total_samples, first.batch_size, first.lr, first.momentum, temperature=1.0, phase="constant")
    # the plan's inputs (a copy), and nothing else of it
    return replace(plan.with_inputs(), stages=[stage], baseline_updates=0, cap={}, warnings=[], notes=[], probe=None)


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

    def paired(name):
        v = paired_verdict([r["metric"] for r in res[name]], [r["metric"] for r in res["original"]])
        iv = v["interval"]
        ci = f"[{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv else "(1 seed: no interval)"
        return v["status"], f"d = {v['difference']:+.4f}, 90% CI {ci}, per seed " + \
            " ".join(f"{d:+.4f}" for d in v["paired"])

    print("\npaired by seed (candidate − original, same initial weights and data order), margin 0.005:")
    verdicts = {name: paired(name) for name in runs if name != "original"}
    for name, (status, text) in verdicts.items():
        print(f"  {name:<13} {status.upper():<12} {text}")
    checks = [
        (f"plan accepted (paired): {verdicts['plan'][1]}", verdicts["plan"][0] == "accepted"),
        (f"plan ≥ 2.5× fewer updates: {ref_upd / res['plan'][0]['updates']:.2f}×",
         ref_upd / res["plan"][0]["updates"] >= 2.5),
        (f"plan ≥ 1.8× less wall time: {ref_wall / wall('plan'):.2f}×", ref_wall / wall("plan") >= 1.8),
        (f"increased-lr accepted (paired): {verdicts['increased-lr'][1]}", verdicts["increased-lr"][0] == "accepted"),
        (f"increased-lr ≥ 10× fewer updates: {ref_upd / res['increased-lr'][0]['updates']:.2f}×",
         ref_upd / res["increased-lr"][0]["updates"] >= 10),
        (f"the schedule matters: constant-lr rejected (paired): {verdicts['constant-lr'][1]}",
         verdicts["constant-lr"][0] == "rejected"),
    ]
    print()
    for text, ok in checks:
        print(f"[{'holds' if ok else 'FAILS'}] {text}")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
