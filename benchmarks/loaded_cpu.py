"""A short training run on a quiet CPU and next to 2 and 4 busy processes, with the tool's defaults.

Every run is a fresh process that does what the CLI does first (core.machine.passive_wait:
OMP_WAIT_POLICY=PASSIVE unless set) and then trains a small MLP with ``train_plan`` for a
fixed number of updates at torch's default thread count. Busy processes are plain Python
spin loops started before the run and killed after it. The conditions are interleaved
(quiet, 2 busy, 4 busy, quiet, ...) so a change in the machine's other load shows in every
column alike; each line prints the wall time, its ratio to the quiet median, and whether the
trained weights are bit-identical to the first quiet run's.

    python benchmarks/loaded_cpu.py                    # 2 rounds, passive waiting (the tool's default)
    python benchmarks/loaded_cpu.py --policy ACTIVE    # what OpenMP's spin-waiting does instead (slow!)
    python benchmarks/loaded_cpu.py --threads 1        # a thread count the user chose (the tool never does)
    python benchmarks/loaded_cpu.py --rounds 3 --busy 0 2 4 --updates 1500

The machine may be shared: the figures are this machine's at this moment, and the quiet
runs are quiet only as far as the others allow (the load average is printed with them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import hashlib, os, sys, time
sys.path.insert(0, sys.argv[1])
from bsadvisor.core.machine import passive_wait
passive_wait()                      # what bsadvisor's CLI does before torch loads
import torch
from bsadvisor.core.plan import Plan, Stage
from bsadvisor.runtime.train import train_plan
from bsadvisor.targets.target import Target

updates = int(sys.argv[2])
g = torch.Generator().manual_seed(0)
n, batch = 4096, 64
x, y = torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                            torch.nn.Linear(256, 10))
target = Target(model=model, train_dataset=torch.utils.data.TensorDataset(x, y), batch_size=batch, lr=0.05,
                momentum=0.9, loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]))
plan = Plan(stages=[Stage(0, updates * batch, batch, 0.05, 0.9, 1.0)], dataset_size=n)
t0 = time.perf_counter()
train_plan(target, plan, seed=0)
took = time.perf_counter() - t0
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
print(f"{took:.4f} {digest} {torch.get_num_threads()} {os.environ.get('OMP_WAIT_POLICY')}")
'''


def run_once(busy: int, updates: int, policy: str, threads: int = 0) -> tuple[float, str, str]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.3 if busy else 0.0)  # let the busy processes take their cores
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)  # torch's default thread count, as a user gets it
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)  # the user's choice, never the tool's
        if policy == "default":
            env.pop("OMP_WAIT_POLICY", None)  # the child sets PASSIVE, as the CLI does
        else:
            env["OMP_WAIT_POLICY"] = policy
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(updates)], capture_output=True, text=True,
                             env=env, timeout=3600, check=True).stdout.split()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return float(out[0]), out[1], f"{out[2]} threads, OMP_WAIT_POLICY={out[3]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2, 4], help="busy processes per condition")
    ap.add_argument("--updates", type=int, default=1500)
    ap.add_argument("--policy", default="default", help="default (the tool's: PASSIVE unless set), ACTIVE or PASSIVE")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the runs (0: torch's default)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores; load average now {os.getloadavg()[0]:.2f}; {args.updates} updates per run")
    times: dict[int, list[float]] = {b: [] for b in args.busy}
    reference, identical, how = None, True, ""
    for r in range(args.rounds):
        for busy in args.busy:
            took, digest, how = run_once(busy, args.updates, args.policy, args.threads)
            reference = reference or digest
            identical &= digest == reference
            times[busy].append(took)
            print(f"round {r + 1}  busy {busy}: {took:7.2f} s  weights {digest} "
                  f"{'same' if digest == reference else 'DIFFERENT'}  (load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"({how})")
    quiet = statistics.median(times[min(args.busy)])
    for busy in args.busy:
        med = statistics.median(times[busy])
        print(f"busy {busy}: median {med:.2f} s, {med / quiet:.2f}× the quiet run")
    print("results identical in every run:", "yes" if identical else "NO")


if __name__ == "__main__":
    main()
