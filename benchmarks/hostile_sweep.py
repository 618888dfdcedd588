"""A sweep of hostile inputs (issue 21's fresh sweep): no traceback, no hang, nothing lost.

Every case runs in this process (the CLI through ``cli.app.main``, the library directly),
each in a scratch folder that holds the user's own files (notes, a plan, a draft); after it
the folder must be exactly as it was (a case that writes an output says which file), no
file named PWNED may appear (no code of ours ran the user's strings), and it must finish
within a time limit (SIGALRM). The outcome of each case is one of:

- refused:   the CLI exited 2 with one ``error:`` line and no traceback; the library raised
             ValueError or TypeError with a one-line message;
- accepted:  the input was valid after all (exit 0, or the call returned);
- BUG:       a traceback, another exception, another exit code, several lines, a hang,
             a changed folder.

    python benchmarks/hostile_sweep.py              # all cases, prints the counts (about a minute)
    python benchmarks/hostile_sweep.py --list       # every case and its outcome
    python benchmarks/hostile_sweep.py --only cli   # or: library

Torch is loaded only by the cases that need it (a few probe/validate refusals after the
target is built, the runtime API); most refusals happen before.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["COLUMNS"] = "80"

from bsadvisor.cli import app as cli_app  # noqa: E402
import bsadvisor.cli  # noqa: E402,F401  (registers the commands)

LIMIT_S = 60  # a case that runs longer is a hang

PLAN = {"schema": "bsadvisor.plan/2", "dataset_size": 640, "total_samples": 1920, "epochs": 3,
        "inputs": {"lr": 0.1, "batch_size": 8, "dataset_size": 640, "epochs": 3, "momentum": 0.9,
                   "schedule": "MultiStepLR(milestones=[1])"},
        "stages": [{"start_sample": 0, "end_sample": 640, "batch_size": 8, "lr": 0.1, "momentum": 0.9,
                    "temperature": 1.0},
                   {"start_sample": 640, "end_sample": 1920, "batch_size": 16, "lr": 0.1, "momentum": 0.9,
                    "temperature": 1.0}]}
USER_FILES = {"notes.txt": "my notes\n", ".draft.tmp": "a draft\n", "plan.json": json.dumps(PLAN),
              "data.csv": "a,b\n1,2\n"}
TARGET = '''
import torch
from bsadvisor import Target


def ok():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, generator=g)
    return Target(model=torch.nn.Linear(4, 1), train_dataset=torch.utils.data.TensorDataset(x, y),
                  loss_fn=lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean(), batch_size=8, lr=0.01)
'''

# -- the CLI cases -------------------------------------------------------------------------------
NUMBERS = ["-1", "0", "nan", "inf", "-inf", "1e309", "9" * 5001, "abc", "", " ", "0x10", "1e-320", "True", "1,5",
           "１", "2**70"]
CONVERT = ["convert-schedule", "--lr", "0.1", "--batch-size", "8", "--dataset-size", "640", "--epochs", "3",
           "--schedule", "MultiStepLR(milestones=[1])", "--momentum", "0.9"]
CONVERT_NUMERIC = ["--lr", "--batch-size", "--dataset-size", "--epochs", "--momentum", "--max-batch", "--max-fraction",
                   "--round-to", "--max-stages", "--stage-factor", "--increase-lr", "--momentum-to", "--noise-cap",
                   "--total-samples", "--total-steps", "--seq-len", "--growth-factor"]
SCHEDULES = [
    "__import__('os').system('touch PWNED')", "open('PWNED', 'w')", "MultiStepLR(milestones=[1e309])",
    "StepLR(step_size=0)", "StepLR(step_size=-1, gamma=0.5)", "CosineAnnealingLR(T_max=-1)",
    "SequentialLR([" * 500 + "]" * 500, "MultiStepLR(milestones=[" + "9" * 5001 + "])", "LambdaLR(lambda e: 1)",
    "ExponentialLR(gamma=nan)", "ExponentialLR(gamma=-1)", "ExponentialLR(gamma=1e308)", "MultiStepLR(milestones=1)",
    "MultiStepLR(milestones=[2, 1])", "MultiStepLR(milestones=[1], gamma='x')", "StepLR(step_size=1, gamma=0)",
    "MultiStepLR(milestones=[1], gamma=0.5, extra=1)", "LinearLR(start_factor=0, total_iters=3)",
    "PolynomialLR(total_iters=0, power=1)", "ConstantLR(factor=2, total_iters=-3)", "x" * 100_000, "", "()",
    "MultiStepLR", "MultiStepLR(", "MultiStepLR(milestones=[1]))", "multisteplr(milestones=[1])",
    "MultiStepLR(milestones=[True])", "MultiStepLR(milestones=[1], gamma=(0.1+0j))", "MultiStepLR(**{'a': 1})",
    "[MultiStepLR(milestones=[1])]", "MultiStepLR(milestones=[1])\nimport os", "SequentialLR([], milestones=[])",
    "SequentialLR([StepLR(step_size=1)], milestones=[1, 2])", "nonexistent.csv", "data.csv", "notes.txt",
]
PLAN_BREAKS = {
    "not json": "{", "a list": "[]", "null": "null", "schema missing": {k: v for k, v in PLAN.items() if k != "schema"},
    "schema other": {**PLAN, "schema": "bsadvisor.probe/1"}, "schema huge": {**PLAN, "schema": "x" * 10_000},
    "stages empty": {**PLAN, "stages": []}, "stages a string": {**PLAN, "stages": "abc"},
    "stage a number": {**PLAN, "stages": [5]}, "batch 0": {**PLAN, "stages": [{**PLAN["stages"][0], "batch_size": 0},
                                                                            PLAN["stages"][1]]},
    "batch > N": {**PLAN, "stages": [PLAN["stages"][0], {**PLAN["stages"][1], "batch_size": 10**6}]},
    "gap": {**PLAN, "stages": [PLAN["stages"][0], {**PLAN["stages"][1], "start_sample": 700}]},
    "lr NaN literal": json.dumps(PLAN).replace('"lr": 0.1', '"lr": NaN', 1),
    "lr huge": json.dumps(PLAN).replace('"lr": 0.1', '"lr": 1e999', 1),
    "int 5000 digits": json.dumps(PLAN).replace('"batch_size": 8', '"batch_size": ' + "9" * 5000, 1),
    "momentum 1": {**PLAN, "stages": [{**PLAN["stages"][0], "momentum": 1}, PLAN["stages"][1]]},
    "dataset_size string": {**PLAN, "dataset_size": "640"}, "deep": "[" * 100_000 + "]" * 100_000,
    "binary": b"\x00\xff\xfe" * 100, "empty": "", "epochs mismatch": {**PLAN, "epochs": 7},
    "inputs a list": {**PLAN, "inputs": [1]}, "total mismatch": {**PLAN, "total_samples": 5},
}
TRACE_BREAKS = {
    "runs a list": {"schema": "bsadvisor.validation/1.1", "runs": [1]},
    "points a number": {"schema": "bsadvisor.noise_trace/1", "points": 5},
    "point momentum 1": {"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": 0, "b_simple": 10, "lr": 0.1, "momentum": 1, "batch_size": 8, "ci90": [1, 20]}]},
    "point batch = N": {"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": 0, "b_simple": 10, "lr": 0.1, "momentum": 0, "batch_size": 640, "ci90": [1, 20]}]},
    "point b_simple string": {"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": 0, "b_simple": "x", "lr": 0.1, "momentum": 0, "batch_size": 8, "ci90": [1, 20]}]},
    "point lr negative": {"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": 0, "b_simple": 10, "lr": -1, "momentum": 0, "batch_size": 8, "ci90": [1, 20]}]},
    "no usable point": {"schema": "bsadvisor.noise_trace/1", "points": [
        {"sample": 0, "b_simple": -10, "lr": 0.1, "momentum": 0, "batch_size": 8, "ci90": [1, 20]}]},
}
PROBE_NUMERIC = ["--budget-seconds", "--draws", "--seed", "--batch-size", "--lr", "--warmup-steps", "--target-rel-ci"]
VALIDATE_NUMERIC = ["--seeds", "--evals", "--max-minutes", "--checkpoint-every", "--monitor-overhead",
                    "--increase-lr", "--hybrid-cap", "--max-micro-batch"]
VALIDATE = ["validate", "t.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2"]


def cli_cases():
    """(name, argv, the file it may write when accepted or None)."""
    for opt in CONVERT_NUMERIC:
        for v in NUMBERS:
            yield f"convert {opt}={v[:12]!r}", [*CONVERT, opt, v], None
    for s in SCHEDULES:
        yield f"convert --schedule {s[:30]!r}", [*CONVERT[:-4], "--momentum", "0.9", "--schedule", s], None
    for name, doc in PLAN_BREAKS.items():
        yield f"export plan {name}", ["export", f"bad-{len(name)}.json"], ("plan", doc)
        yield f"convert --probe {name}", [*CONVERT, "--probe", f"bad-{len(name)}.json"], ("plan", doc)
        yield f"validate --plan {name}", ["validate", "t.py:ok", "--plan", f"bad-{len(name)}.json"], ("plan", doc)
    for name, doc in TRACE_BREAKS.items():
        yield f"convert --noise-trace {name}", [*CONVERT, "--noise-trace", "trace.json"], ("trace", doc)
    for out in ["notes.txt", "data.csv", ".", "nowhere/x.json", "", "x" * 5000, ".draft.tmp"]:
        yield f"convert --out {out[:20]!r}", [*CONVERT, "--out", out], None
        yield f"export --out {out[:20]!r}", ["export", "plan.json", "--out", out], None
        yield f"probe --out {out[:20]!r}", ["probe", "t.py:ok", "--out", out], None
    yield "export --out its own input", ["export", "plan.json", "--out", "plan.json"], None
    for out in ["x" * 5000, "notes.txt/sub", "plan.json", ".draft.tmp", "", "/proc/self"]:
        yield f"validate --out {out[:20]!r}", [*VALIDATE, "--out", out], None
        yield f"advise --probe-out {out[:20]!r}", ["advise", "t.py:ok", "--schedule", "StepLR(step_size=1)",
                                                    "--epochs", "2", "--probe-out", out], None
    for opt in PROBE_NUMERIC:
        for v in ["-1", "0", "nan", "inf", "9" * 5001, "abc", "1e309"]:
            yield f"probe {opt}={v[:12]!r}", ["probe", "t.py:ok", opt, v], None
    for opt in VALIDATE_NUMERIC:
        for v in ["-1", "0", "nan", "inf", "9" * 5001, "abc", "1e309"]:
            yield f"validate {opt}={v[:12]!r}", [*VALIDATE, opt, v], None
    for v in ["-5%", "nan%", "%", "1e309", "abc", "200%"]:
        yield f"validate --tolerance={v}", [*VALIDATE, "--tolerance", v], None
    for t in ["t.py", "t.py:", ":ok", "t.py:nope", "t.py:1x", "builtin:", "builtin:nope", "x" * 100_000 + ".py:f",
              "notes.txt:ok", "os:system", "sys:exit", "/etc/passwd:ok", "nonexistent.module:f", "t.py:ok:ok"]:
        yield f"probe target {t[:24]!r}", ["probe", t, "--budget-seconds", "1"], None
    for t in ["--estimator", "--device", "--memory-limit"]:
        for v in ["", "x" * 5000, "cuda:-1", "tpu", "-1GB", "1e309GiB", "nan"]:
            yield f"probe {t}={v[:12]!r}", ["probe", "t.py:ok", t, v], None
    yield "validate --resume without --out", [*VALIDATE, "--resume"], None
    yield "validate --resume --overwrite", [*VALIDATE, "--out", "v", "--resume", "--overwrite"], None
    yield "validate --out a file", [*VALIDATE, "--out", "notes.txt"], None
    yield "validate --plan and --schedule", ["validate", "t.py:ok", "--plan", "plan.json", "--schedule",
                                             "StepLR(step_size=1)"], None
    for unknown in ["--frobnicate", "-x", "--" + "a" * 10_000, "--lr=", "---lr"]:
        yield f"unknown option {unknown[:14]!r}", ["convert-schedule", unknown], None


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def run_cli_case(argv, extra, folder: Path) -> str:
    """The case's outcome: refused / accepted / BUG: why."""
    if extra is not None:
        kind, doc = extra
        name = "trace.json" if kind == "trace" else next(a for a in argv if a.startswith("bad-"))
        data = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    before = snapshot(folder)
    out, err = io.StringIO(), io.StringIO()
    code, crash = 0, None
    old = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), cli_app.time_limit(LIMIT_S):
            try:
                cli_app.main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    except cli_app.OverTime:
        return f"BUG: hang (over {LIMIT_S} s)"
    except BaseException:  # noqa: BLE001
        crash = traceback.format_exc()
    finally:
        os.chdir(old)
    if crash or "Traceback" in err.getvalue() + out.getvalue():
        return "BUG: traceback " + (crash or err.getvalue())[-300:].replace("\n", " | ")
    if (folder / "PWNED").exists():
        return "BUG: code ran"
    after = snapshot(folder)
    if code == 2:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return f"BUG: refusal not one error line: {err.getvalue()[-300:]!r}"
        if after != before:
            return f"BUG: refused but the folder changed: {sorted(set(after.items()) ^ set(before.items()))[:3]}"
        if len(lines[0]) > 2600:
            return f"BUG: error line of {len(lines[0])} characters"
        return "refused"
    if code == 0:
        changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
        lost = {k for k in changed if k in USER_FILES and k != "plan.json" or k not in after}
        if lost:
            return f"BUG: accepted and changed the user's files {sorted(lost)}"
        return "accepted"
    return f"BUG: exit {code}: {err.getvalue()[-300:]!r}"


# -- the library cases ----------------------------------------------------------------------------
def library_cases():
    """(name, call) pairs; each call returns normally or raises."""
    import torch

    from bsadvisor import BatchSizeScheduler, NoiseModel, Plan, PlanBatchSampler, Stage, load_trace, temperature
    from bsadvisor.core.convert import convert_schedule
    from bsadvisor.core.probe_result import load_probe
    from bsadvisor.core.schedules import parse_schedule

    plan = Plan(stages=[Stage(0, 3000, 100, 0.1, 0.0, 1.0)], dataset_size=1000)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    garbage = [None, "x", -1, 1.5, math.nan, math.inf, 10**30, 2**70, [], {}, b"\0", True, object(), -0.0, 1e308]
    for g in garbage:
        yield f"Plan.at({g!r:.12})", lambda g=g: plan.at(g)
        yield f"Plan.at_sample({g!r:.12})", lambda g=g: plan.at_sample(g)
        yield f"Plan.epoch_of({g!r:.12})", lambda g=g: plan.epoch_of(g)
        yield f"Plan.update_end({g!r:.12})", lambda g=g: plan.update_end(g)
        yield f"Plan.load({g!r:.12})", lambda g=g: Plan.load(g)
        yield f"Plan.from_dict({g!r:.12})", lambda g=g: Plan.from_dict(g)
        yield f"Plan(stages={g!r:.12})", lambda g=g: Plan(stages=g, dataset_size=1000)
        yield f"Plan(dataset_size={g!r:.12})", lambda g=g: Plan(stages=plan.stages, dataset_size=g)
        yield f"PlanBatchSampler(seed={g!r:.12})", lambda g=g: PlanBatchSampler(plan, seed=g)
        yield f"PlanBatchSampler(dataset_size={g!r:.12})", lambda g=g: PlanBatchSampler(plan, g)
        yield f"PlanBatchSampler.set_epoch({g!r:.12})", lambda g=g: PlanBatchSampler(plan).set_epoch(g)
        yield f"PlanBatchSampler.load_state_dict({g!r:.12})", lambda g=g: PlanBatchSampler(plan).load_state_dict(g)
        yield f"BatchSizeScheduler(plan, {g!r:.12})", lambda g=g: BatchSizeScheduler(plan, g)
        yield f"BatchSizeScheduler({g!r:.12}, opt)", lambda g=g: BatchSizeScheduler(g, opt)
        yield f"BatchSizeScheduler.step({g!r:.12})", lambda g=g: BatchSizeScheduler(plan, opt).step(samples=g)
        yield f"BatchSizeScheduler.seek({g!r:.12})", lambda g=g: BatchSizeScheduler(plan, opt).seek(g)
        yield f"BatchSizeScheduler.load_state_dict({g!r:.12})", \
            lambda g=g: BatchSizeScheduler(plan, opt).load_state_dict(g)
        yield f"temperature(lr={g!r:.12})", lambda g=g: temperature(g, 10, 100)
        yield f"temperature(batch={g!r:.12})", lambda g=g: temperature(0.1, g, 100)
        yield f"temperature(N={g!r:.12})", lambda g=g: temperature(0.1, 10, g)
        yield f"temperature(momentum={g!r:.12})", lambda g=g: temperature(0.1, 10, 100, momentum=g)
        yield f"load_trace(seed={g!r:.12})", lambda g=g: load_trace("nope.json", seed=g)
        yield f"load_trace({g!r:.12})", lambda g=g: load_trace(g)
        yield f"load_probe({g!r:.12})", lambda g=g: load_probe(g)
        yield f"parse_schedule({g!r:.12})", lambda g=g: parse_schedule(g)
        yield f"NoiseModel.from_trace({g!r:.12})", lambda g=g: NoiseModel.from_trace(g)
        yield f"convert_schedule(lr={g!r:.12})", lambda g=g: convert_schedule(
            lr=g, batch_size=8, dataset_size=640, epochs=3, schedule="MultiStepLR(milestones=[1])")
        yield f"convert_schedule(epochs={g!r:.12})", lambda g=g: convert_schedule(
            lr=0.1, batch_size=8, dataset_size=640, epochs=g, schedule="MultiStepLR(milestones=[1])")


def run_library_case(call) -> str:
    try:
        with cli_app.time_limit(LIMIT_S):
            call()
    except cli_app.OverTime:
        return f"BUG: hang (over {LIMIT_S} s)"
    except (ValueError, TypeError) as exc:
        text = str(exc)
        if not text or "\n" in text or len(text) > 600:
            return f"BUG: {type(exc).__name__} message {text[:200]!r}"
        if type(exc).__name__ in ("ZeroDivisionError", "OverflowError", "JSONDecodeError"):
            return f"BUG: raw {type(exc).__name__}"
        return "refused"
    except BaseException as exc:  # noqa: BLE001
        return f"BUG: {type(exc).__name__}: {str(exc)[:200]}"
    return "accepted"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print every case and its outcome")
    ap.add_argument("--only", choices=["cli", "library"])
    args = ap.parse_args()
    counts: dict[str, dict[str, int]] = {}
    bugs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if args.only != "library":
            for i, (name, argv, extra) in enumerate(cli_cases()):
                folder = home / f"c{i}"
                folder.mkdir()
                for fname, text in USER_FILES.items():
                    (folder / fname).write_text(text)
                (folder / "t.py").write_text(TARGET)
                outcome = run_cli_case(argv, extra, folder)
                shutil.rmtree(folder, ignore_errors=True)
                _count(counts, "cli", outcome, name, bugs, args.list)
        if args.only != "cli":
            old = os.getcwd()
            os.chdir(home)
            try:
                for name, call in library_cases():
                    _count(counts, "library", run_library_case(call), name, bugs, args.list)
            finally:
                os.chdir(old)
    total = sum(sum(c.values()) for c in counts.values())
    print(f"{total} hostile inputs in {time.perf_counter() - started:.0f} s")
    for where, c in counts.items():
        print(f"  {where:<8} {sum(c.values()):>5}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print(f"BUGS: {len(bugs)}")
    for b in bugs:
        print("  " + b)


def _count(counts, where, outcome, name, bugs, show) -> None:
    key = "BUG" if outcome.startswith("BUG") else outcome
    counts.setdefault(where, {}).setdefault(key, 0)
    counts[where][key] += 1
    if key == "BUG":
        bugs.append(f"{where}: {name}: {outcome}")
    if show:
        print(f"{where:<8} {outcome[:100]:<40} {name}", flush=True)


if __name__ == "__main__":
    main()
