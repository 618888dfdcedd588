"""Export time against the number of stages: every format should grow linearly (target: under 5 s at 10^5).

Builds plans of K stages whose batch changes at every stage (the worst case: one schedule entry,
one OLMo-core row, one ramp candidate per change) and times ``core.exports.export`` for each format
(Megatron-Core's step schedule and, with ``megatron-0.17``, its old linear ramp). A linear exporter
keeps the last column (microseconds per stage) flat as K grows. Then a plan whose batch jumps by
2^60 (which the ramp search once divided by every number up to √(2^60)): each format answers at
once, with its export or a one-line refusal.

    python benchmarks/export_scaling.py                  # 5k, 20k, 100k stages
    python benchmarks/export_scaling.py --stages 1000 200000
"""
from __future__ import annotations

import argparse
import time

from bsadvisor.core.errors import UserError
from bsadvisor.core.exports import EXPORT_FORMATS, export
from bsadvisor.core.plan import Plan, Stage

#: (label, format, Megatron-Core version)
CASES = [(f, f, "0.18") for f in EXPORT_FORMATS] + [("megatron-0.17", "megatron", "0.17")]


def plan_of(k: int, growing: bool = False) -> Plan:
    """K stages of a tenth of an epoch each, batches 8, 16, 8, 16, ... (an Adam plan in tokens, so OLMo-core
    takes it); ``growing``: 8, 16, 24, ... (the linear ramps, Megatron 0.17 and MaxText, refuse a batch that
    comes back down at once)."""
    n = 160 * k // 10
    stages = [Stage(i * 160, (i + 1) * 160, 8 * (i + 1) if growing else 8 * (1 + i % 2), 0.1, 0.9, 1.0)
              for i in range(k)]
    return Plan(stages=stages, dataset_size=n, inputs={"optimizer": "adamw", "seq_len": 4})


def jump_plan() -> Plan:
    jump = 2 ** 60
    return Plan(stages=[Stage(0, 1000, 1, 0.1, 0.9, 1.0), Stage(1000, 1000 + jump, jump, 0.1, 0.9, 1.0)],
                dataset_size=None, inputs={"optimizer": "adamw", "seq_len": 2})


def timed(plan: Plan, fmt: str, version: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    try:
        export(plan, fmt, version)
        outcome = "exported"
    except UserError as e:
        outcome = "refused: " + str(e)[:70] + "…"
    return time.perf_counter() - t0, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, nargs="+", default=[5_000, 20_000, 100_000])
    args = ap.parse_args()
    print(f"{'format':<15}{'stages':>10}{'seconds':>10}{'µs/stage':>10}  outcome")
    for label, fmt, version in CASES:
        for k in args.stages:
            took, outcome = timed(plan_of(k, growing=version == "0.17" or fmt == "maxtext"), fmt, version)
            print(f"{label:<15}{k:>10,}{took:>10.2f}{took / k * 1e6:>10.1f}  {outcome}", flush=True)
    print("\na batch jump of 2^60:")
    for label, fmt, version in CASES:
        took, outcome = timed(jump_plan(), fmt, version)
        print(f"{label:<15}{took:>10.3f} s  {outcome}", flush=True)


if __name__ == "__main__":
    main()
