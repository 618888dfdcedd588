"""validate under torchrun against one process: same parameters, same accuracy?

Trains builtin:mnist1d-mlp (float32) with a plan made for 2 devices (convert-schedule
--world-size 2 --max-micro-batch 64) and its original schedule, once in one process and
once as a 2-process gloo job on the CPU (`torchrun --nproc_per_node=2 -m bsadvisor
validate`), same seed and data order, and prints per run: the largest parameter
difference between the two final models, the final test accuracies, and wall times.
In exact arithmetic the two runs are the same computation; in float32 they differ by
the order of the sums, which the training then carries along.

    python benchmarks/distributed_equivalence.py [--epochs 6]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list, cwd: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout), took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    import torch

    py = [sys.executable, "-m", "bsadvisor"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        m = max(2, args.epochs // 3)
        subprocess.run([*py, "convert-schedule", "--lr", "0.05", "--batch-size", "32", "--momentum", "0.9",
                        "--dataset-size", "32000", "--epochs", str(args.epochs),
                        "--schedule", f"MultiStepLR(milestones=[{m},{2 * m}], gamma=0.2)",
                        "--world-size", "2", "--max-micro-batch", "64", "--max-batch", "3200",
                        "--out", "plan.json"], cwd=d, env=_env(), check=True, capture_output=True)
        common = ["validate", "builtin:mnist1d-mlp", "--plan", "plan.json", "--device", "cpu",
                  "--max-micro-batch", "64", "--json"]
        one, t1 = _run([*py, *common, "--out", "one"], d)
        two, t2 = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--master_addr=127.0.0.1", f"--master_port={_port()}", "-m", "bsadvisor", *common,
                        "--out", "two"], d)
        stages = [s["batch_size"] for s in json.loads((d / "plan.json").read_text())["stages"]]
        print(f"builtin:mnist1d-mlp, {args.epochs} epochs, plan batches {stages}, --max-micro-batch 64")
        print(f"{'run':<10} {'max |Δθ|':>10} {'max |θ|':>8} {'acc 1 proc':>11} {'acc 2 proc':>11} "
              f"{'train s 1':>10} {'train s 2':>10}")
        for name in ("original", "plan"):
            a = torch.load(d / "one" / "checkpoints" / f"{name}-seed0.pt", weights_only=False)["model"]
            b = torch.load(d / "two" / "checkpoints" / f"{name}-seed0.pt", weights_only=False)["model"]
            diff = max(float((a[k] - b[k]).abs().max()) for k in a)
            size = max(float(a[k].abs().max()) for k in a)
            s1, s2 = one["runs"][name]["summary"], two["runs"][name]["summary"]
            print(f"{name:<10} {diff:>10.2e} {size:>8.3f} {s1['metric_mean']:>11.4f} {s2['metric_mean']:>11.4f} "
                  f"{s1['wall_s_mean']:>10.1f} {s2['wall_s_mean']:>10.1f}")
        print(f"whole command: 1 process {t1:.1f} s, 2 processes {t2:.1f} s (2 CPU cores here; the 2-process job "
              "includes its start-up and one all-reduce per update)")


if __name__ == "__main__":
    main()
