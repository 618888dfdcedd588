"""Export time against the number of stages: every format should grow linearly.

Builds plans of K stages whose batch changes at every stage (the worst case for the OLMo-core
rows, one row per batch change) and times ``core.exports.export`` for each format. A linear
exporter keeps the last column (microseconds per stage) flat as K grows.

    python benchmarks/export_scaling.py                  # 5k, 20k, 80k stages
    python benchmarks/export_scaling.py --stages 1000 200000
"""
from __future__ import annotations

import argparse
import time

from bsadvisor.core.exports import EXPORT_FORMATS, export
from bsadvisor.core.plan import Plan, Stage


def plan_of(k: int) -> Plan:
    n = 10 * k  # every stage a tenth of an epoch, batches 1, 2, 1, 2, ...
    stages = [Stage(i * 10, (i + 1) * 10, 1 + i % 2, 0.1, 0.0, 1.0) for i in range(k * 10)]
    return Plan(stages=stages[:k], dataset_size=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, nargs="+", default=[5_000, 20_000, 80_000])
    args = ap.parse_args()
    print(f"{'format':<10}{'stages':>10}{'seconds':>10}{'µs/stage':>10}")
    for fmt in EXPORT_FORMATS:
        for k in args.stages:
            plan = plan_of(k)
            t0 = time.perf_counter()
            export(plan, fmt)
            took = time.perf_counter() - t0
            print(f"{fmt:<10}{k:>10,}{took:>10.2f}{took / k * 1e6:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
