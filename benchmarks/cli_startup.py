"""Cold-start time of the bsadvisor CLI, next to `import torch`.

Each figure is the median wall time of fresh `python ...` subprocesses (nothing is
reused between runs, so every run pays the interpreter start and all imports).
It also reports whether torch was imported on each path, checked in a separate
subprocess that runs the same command in-process and then inspects ``sys.modules``.

    python benchmarks/cli_startup.py            # 7 runs each
    python benchmarks/cli_startup.py --runs 11

Target: `bsadvisor --help` and a `convert-schedule` run under 0.3 s.
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
TARGET_S = 0.3

CONVERT = ["convert-schedule", "--lr", "0.1", "--batch-size", "128", "--dataset-size", "50000", "--epochs", "200",
           "--momentum", "0.9", "--schedule", "MultiStepLR(milestones=[60,120,160], gamma=0.2)"]

CASES = {
    "python -c pass (interpreter only)": ["-c", "pass"],
    "bsadvisor --help": ["-m", "bsadvisor", "--help"],
    "bsadvisor convert-schedule (table)": ["-m", "bsadvisor", *CONVERT],
    "bsadvisor convert-schedule --json": ["-m", "bsadvisor", *CONVERT, "--json"],
    'python -c "import torch"': ["-c", "import torch"],
}

# Runs the CLI in-process (as `python -m bsadvisor ARGS` would), then says whether torch got imported.
_PROBE = """
import sys
args = sys.argv[1:]
from bsadvisor.cli import main
try:
    main(args)
except SystemExit:
    pass
sys.__stderr__.write("TORCH_IMPORTED=%s\\n" % ("torch" in sys.modules))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("COLUMNS", "120")
    return env


def time_runs(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.decode()[-500:]}")
    return times


def torch_imported(cli_args: list[str]) -> bool:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *cli_args], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = [x for x in proc.stderr.splitlines() if x.startswith("TORCH_IMPORTED=")]
    if not line:
        raise SystemExit(f"probe failed: {proc.stderr[-500:]}")
    return line[-1].endswith("True")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="fresh subprocesses per case (≥ 5)")
    args = ap.parse_args()
    runs = max(5, args.runs)

    # One untimed run of each first, so the file-system cache and .pyc files are warm for all cases alike.
    for argv in CASES.values():
        time_runs(argv, 1)

    print(f"cold start, median of {runs} fresh subprocesses ({sys.executable}, Python {sys.version.split()[0]})")
    print(f"{'case':40s} {'median':>8s} {'min':>8s} {'max':>8s}  torch imported")
    over = []
    for name, argv in CASES.items():
        t = time_runs(argv, runs)
        med = statistics.median(t)
        if argv[:2] == ["-m", "bsadvisor"]:
            imported = "yes" if torch_imported(argv[2:]) else "no"
            if med > TARGET_S:
                over.append(name)
        elif "torch" in " ".join(argv):
            imported = "yes"
        else:
            imported = "-"
        print(f"{name:40s} {med:7.3f}s {min(t):7.3f}s {max(t):7.3f}s  {imported}")
    print(f"target: bsadvisor paths under {TARGET_S} s -> " + ("met" if not over else "MISSED: " + ", ".join(over)))


if __name__ == "__main__":
    main()
