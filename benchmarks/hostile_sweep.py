"""A sweep of hostile inputs: no traceback, no hang, nothing lost.

Every case runs in this process (the CLI through ``cli.app.main``, the library directly),
each in a scratch folder that holds the user's own files (notes, a plan, a draft); after it
the folder must be exactly as it was (a case that writes an output says which file), no
file named PWNED may appear (no code of ours ran the user's strings), and it must finish
within a time limit (SIGALRM). The outcome of each case is one of:

- refused:   the CLI exited 2 with one ``error:`` line and no traceback; the library raised
             ValueError or TypeError with a one-line message;
- accepted:  the input was valid after all (exit 0, or the call returned), wrote only the
             output it names (--out, --probe-out), lost and changed none of the user's files;
- BUG:       a traceback, another exception, another exit code, several lines, a hang,
             a changed folder; and an exit 0 that accepted garbage (a value no option takes:
             nan, inf, abc, ...) or changed numbers (a resumed run whose results differ from
             the uninterrupted one), or that wrote a file it does not name or lost one.

Families (``--only``): ``cli``, ``library``, ``api`` (misuse of
bsadvisor.recommend/advise/probe/Recommendation/load_trace/NoiseMonitor/train_step/ProbeOptions),
``out`` (validate/demo --out beside the user's own files, links out of --out, crafted manifests),
``checkpoint`` (a stopped validate run's checkpoint hand-edited, then --resume: refused, or the
uninterrupted run's numbers exactly), ``signal`` (SIGINT/SIGTERM/SIGKILL mid-run, then --resume),
``torchrun`` (bad input under two processes) and ``hang`` (a target that never returns, against
the stated bound: --max-minutes for validate, 10 × --budget-seconds + 300 s for probe and advise;
``--quick-hangs`` leaves out the two that wait that bound). Every BUG line carries its family.

    python benchmarks/hostile_sweep.py              # all cases, prints the counts (about 17 minutes; 3 with
                                                    # --quick-hangs, which leaves out two 5-minute hangs)
    python benchmarks/hostile_sweep.py --list       # every case and its outcome
    python benchmarks/hostile_sweep.py --only cli   # or: library, api, out, checkpoint, signal, torchrun, hang

Torch is loaded only by the cases that need it (a few probe/validate refusals after the
target is built, the runtime API); most refusals happen before.
"""
from __future__ import annotations

import argparse
import atexit
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
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["COLUMNS"] = "80"

from bsadvisor.cli import app as cli_app  # noqa: E402
import bsadvisor.cli  # noqa: E402,F401  (registers the commands)

LIMIT_S = 60  # a case that runs longer is a hang
#: The exit codes of a command that ran to its end: 0, and validate's 3 (a one-seed verdict is only
#: indicative; inconclusive); 1 (rejected) never comes from these cases' tolerance of 1.
FINISHED = (0, 3)

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
                   "--total-samples", "--total-steps", "--seq-len", "--growth-factor", "--max-growth"]
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
    for budget in ("1e9", "9e8", "1e300"):  # signal.setitimer overflows on these
        yield f"probe --budget-seconds {budget}", ["probe", "t.py:ok", "--budget-seconds", budget], None
        yield f"advise --budget-seconds {budget}", ["advise", "t.py:ok", "--schedule", "StepLR(step_size=1)",
                                                    "--epochs", "2", "--budget-seconds", budget], None
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
    if code in FINISHED:
        return accepted_outcome(argv, before, after)
    return f"BUG: exit {code}: {err.getvalue()[-300:]!r}"


#: Values no numeric option takes: an exit 0 with one of them accepted garbage.
GARBAGE = {"nan", "inf", "-inf", "1e309", "9" * 5001, "abc", "", " ", "True", "1,5", "2**70", "0x10", "-1"}
#: The options for which 0 is a valid value (no cap, no momentum, seed 0, no warmup, no monitor budget, no growth
#: limit).
ZERO_OK = {"--momentum", "--momentum-to", "--noise-cap", "--seed", "--warmup-steps", "--monitor-overhead", "--max-growth"}


def garbage_in(argv) -> Optional[str]:
    """The option given a value no option takes ("--lr=nan"), or None."""
    for opt, value in zip(argv, argv[1:]):
        if opt.startswith("--") and (value in GARBAGE or value == "0" and opt not in ZERO_OK) \
                and opt in CONVERT_NUMERIC + PROBE_NUMERIC + VALIDATE_NUMERIC:
            return f"{opt}={value[:12]!r}"
    return None


def outputs_of(argv) -> list[str]:
    """The paths a command names as its outputs (--out, --probe-out): the only files it may create."""
    return [value for opt, value in zip(argv, argv[1:]) if opt in ("--out", "--probe-out")]


def accepted_outcome(argv, before: dict, after: dict) -> str:
    """An exit 0: garbage accepted, a file lost or changed, or a file written that the command does not name,
    is a BUG."""
    bad = garbage_in(argv)
    if bad is not None:
        return f"BUG: wrong result: accepted garbage {bad}"
    # typer reads --out "" as Path(""), which is "." (the current folder): every file there is the output's
    outs = [o.rstrip("/") or "." for o in outputs_of(argv)]
    named = lambda k: any(o == "." or k == o or k.startswith(o + "/") for o in outs)  # noqa: E731
    lost = sorted(k for k in before if k not in after)
    # a file the command names may be replaced (its own kind: convert --out plan.json); the user's others never
    changed = sorted(k for k in before if k in after and after[k] != before[k]
                     and (not named(k) or k in USER_FILES and k not in outs))
    new = sorted(k for k in after if k not in before and not named(k))
    if lost or changed:
        return f"BUG: data loss: accepted and lost {lost[:3]} changed {changed[:3]}"
    if new:
        return f"BUG: data loss: accepted and wrote files it does not name {new[:3]}"
    return "accepted"


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
    ap.add_argument("--only", choices=["cli", "library", *FAMILIES])
    ap.add_argument("--quick-hangs", action="store_true", help="leave out the two hangs that wait the probe's bound")
    args = ap.parse_args()
    counts: dict[str, dict[str, int]] = {}
    bugs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if args.only in (None, "cli"):
            for i, (name, argv, extra) in enumerate(cli_cases()):
                folder = home / f"c{i}"
                folder.mkdir()
                for fname, text in USER_FILES.items():
                    (folder / fname).write_text(text)
                (folder / "t.py").write_text(TARGET)
                outcome = run_cli_case(argv, extra, folder)
                shutil.rmtree(folder, ignore_errors=True)
                _count(counts, "cli", outcome, name, bugs, args.list)
        if args.only in (None, "library"):
            old = os.getcwd()
            os.chdir(home)
            try:
                for name, call in library_cases():
                    _count(counts, "library", run_library_case(call), name, bugs, args.list)
            finally:
                os.chdir(old)
        for family, cases in FAMILIES.items():
            if args.only not in (None, family):
                continue
            for i, (name, case) in enumerate(cases(args)):
                folder = home / f"{family}{i}"
                folder.mkdir()
                for fname, text in USER_FILES.items():
                    (folder / fname).write_text(text)
                (folder / "t.py").write_text(TARGET)
                (folder / "t_slow.py").write_text(SLOW_TARGET)
                (folder / "t_hang.py").write_text(HANG_TARGET)
                outcome = _guarded_case(case, folder)
                shutil.rmtree(folder, ignore_errors=True)
                _count(counts, family, outcome, name, bugs, args.list)
    if _REFERENCE:
        shutil.rmtree(_REFERENCE["home"], ignore_errors=True)
    total = sum(sum(c.values()) for c in counts.values())
    print(f"{total} hostile inputs in {time.perf_counter() - started:.0f} s")
    for where, c in counts.items():
        print(f"  {where:<10} {sum(c.values()):>5}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    kinds: dict[str, int] = {}
    for b in bugs:
        kind = next((k for k in ("traceback", "hang", "data loss", "wrong result") if f"BUG: {k}" in b), "other")
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"BUGS: {len(bugs)}" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")" if bugs else ""))
    for line in HANG_TIMES:
        print("  hang case: " + line)
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


# ================================================================================================
# Issue 32's families: each case is (name, case(folder) -> outcome), run in a scratch folder that
# holds the user's files and the targets t.py (fast), t_slow.py (a few seconds of training),
# t_hang.py (an import, a TARGET function and a loss that never return).
# ================================================================================================
SLOW_TARGET = '''
import time
import torch
from bsadvisor import Target


def ok():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 4, generator=g), torch.randn(512, generator=g)

    def loss(m, b):
        time.sleep(0.004)  # about 2 s of training per run: a signal or --max-minutes lands mid-run
        return ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()
    torch.manual_seed(0)  # the same initial weights in every call (the sweep runs many in one process)
    return Target(model=torch.nn.Linear(4, 1), train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss,
                  batch_size=8, lr=0.01, momentum=0.9)
'''
HANG_TARGET = '''
import os
import time
import torch
from bsadvisor import Target

if os.environ.get("HANG_AT") == "import":
    time.sleep(10**6)


def ok():
    if os.environ.get("HANG_AT") == "target":
        time.sleep(10**6)
    x, y = torch.randn(64, 4), torch.randn(64)

    def loss(m, b):
        time.sleep(10**6)
    return Target(model=torch.nn.Linear(4, 1), train_dataset=torch.utils.data.TensorDataset(x, y), loss_fn=loss,
                  batch_size=8, lr=0.01)
'''
SLOW = ["t_slow.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2", "--checkpoint-every", "4",
        "--tolerance", "1", "--seeds", "1"]


def _guarded_case(case, folder: Path) -> str:
    """A family case's outcome; an exception escaping the harness itself is a BUG of its own kind."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        return case(folder)
    except BaseException:  # noqa: BLE001
        return "BUG: harness " + traceback.format_exc()[-300:].replace("\n", " | ")
    finally:
        os.chdir(old)


def _cli(argv, limit: float = LIMIT_S) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``bsadvisor ARGV`` in this process; code None on a hang, -1 on a traceback."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), cli_app.time_limit(limit):
            try:
                cli_app.main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except cli_app.OverTime:
        return None, out.getvalue(), err.getvalue()
    except BaseException:  # noqa: BLE001
        return -1, out.getvalue(), err.getvalue() + traceback.format_exc()
    return code, out.getvalue(), err.getvalue()


def _refusal(code, err: str) -> Optional[str]:
    """None for a clean refusal (exit 2, one error line), else what is wrong with it."""
    if code is None:
        return f"BUG: hang (over {LIMIT_S} s)"
    if code == -1 or "Traceback" in err:
        return "BUG: traceback " + err[-300:].replace("\n", " | ")
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("warning:", "note:"))]
    if code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return f"BUG: exit {code}, not one error line: {err[-200:]!r}"
    return None


def _tree(root: Path) -> dict:
    """Every file under ``root`` (links as links: never followed out), with its content's hash."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            found[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file() and "__pycache__" not in p.parts:
            found[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _numbers(doc: dict) -> dict:
    """What a validate run computed, without wall times: equal numbers mean an equal run."""
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if "wall" not in k and k not in ("resumed_from_epoch", "plots")}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    return clean({name: [{k: s[k] for k in ("metric", "final_train_loss", "updates", "examples", "history", "steps",
                                             "evals")} for s in run["seeds"]] for name, run in doc["runs"].items()})


# -- api: the new library API given garbage --------------------------------------------------------
def api_cases(args):
    import torch

    import bsadvisor

    plan_opts = dict(lr=0.1, batch_size=8, dataset_size=640, epochs=3, schedule="MultiStepLR(milestones=[1])")

    def target():
        return bsadvisor.load_target("t.py:ok")

    garbage = [None, "x", -1, math.nan, math.inf, 10**30, [], {}, True, object()]
    calls = {
        "recommend(g)": lambda g: bsadvisor.recommend(g),
        "recommend(opts, probe=g)": lambda g: bsadvisor.recommend(plan_opts, probe=g),
        "recommend(opts, noise_trace=g)": lambda g: bsadvisor.recommend(plan_opts, noise_trace=g),
        "recommend(opts, batchnorm=g)": lambda g: bsadvisor.recommend(plan_opts, batchnorm=g),
        "recommend(lr=g)": lambda g: bsadvisor.recommend({**plan_opts, "lr": g}),
        "advise('t.py:ok', g)": lambda g: bsadvisor.advise("t.py:ok", g),
        "advise(g, opts)": lambda g: bsadvisor.advise(g, plan_opts),
        "advise(target, opts, budget_seconds=g)": lambda g: bsadvisor.advise(target(), plan_opts, budget_seconds=g),
        "probe(g)": lambda g: bsadvisor.probe(g),
        "probe(target, g)": lambda g: bsadvisor.probe(target(), g),
        "probe(target, budget_seconds=g)": lambda g: bsadvisor.probe(target(), budget_seconds=g),
        "Recommendation(g).to_dict()": lambda g: bsadvisor.Recommendation(g).to_dict(),
        "load_trace('x', run=g)": lambda g: bsadvisor.load_trace("plan.json", run=g),
        "NoiseMonitor(g)": lambda g: bsadvisor.NoiseMonitor(g),
        "NoiseMonitor(model, g)": lambda g: bsadvisor.NoiseMonitor(torch.nn.Linear(2, 1), g),
        "NoiseMonitor(...).maybe_measure(g, ...)": lambda g: bsadvisor.NoiseMonitor(
            torch.nn.Linear(2, 1), lambda m, b: m(b[0]).mean(),
            torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8))).maybe_measure(g, 0.1, 0.0, 4, 1, 80),
        "train_step(g, ...)": lambda g: bsadvisor.train_step(g, None, None, None, torch.arange(2)),
        "train_step(model, opt, loss, gather, g)": lambda g: bsadvisor.train_step(
            torch.nn.Linear(2, 1), torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1),
            lambda m, b: m(b[0]).mean(), lambda i: (torch.randn(len(i), 2),), g),
        "ProbeOptions(min_draws=g)": lambda g: bsadvisor.ProbeOptions(min_draws=g),
        "ProbeOptions(max_draws=g)": lambda g: bsadvisor.ProbeOptions(max_draws=g),
        "ProbeOptions(measure_memory=g)": lambda g: bsadvisor.ProbeOptions(measure_memory=g),
        "ProbeOptions(measure_throughput=g)": lambda g: bsadvisor.ProbeOptions(measure_throughput=g),
    }
    # values a caller may pass on purpose: an accepted call with one of them is no garbage accepted
    allowed = [("recommend(opts, probe=g)", None), ("recommend(opts, noise_trace=g)", None),
               ("recommend(opts, batchnorm=g)", None), ("recommend(opts, batchnorm=g)", True),
               ("recommend(g)", None), ("recommend(g)", {}), ("probe(target, g)", None),
               ("ProbeOptions(max_draws=g)", None), ("ProbeOptions(measure_memory=g)", True),
               ("ProbeOptions(measure_throughput=g)", True), ("advise('t.py:ok', g)", None),
               ("NoiseMonitor(model, g)", None)]
    for name, call in calls.items():
        for g in garbage:
            label = f"{name} g={g!r:.12}"

            def case(folder, call=call, g=g, key=(name, g)):
                outcome = run_library_case(lambda: call(g))
                if outcome == "accepted" and not any(key[0] == a and (key[1] is a2 or key[1] == a2 and
                                                                     type(key[1]) is type(a2)) for a, a2 in allowed):
                    return f"BUG: wrong result: accepted garbage {key[1]!r:.20}"
                return outcome
            yield label, case
    for value in ("no", "yes", "false", 0, 1, 2):
        yield f"recommend(batchnorm={value!r})", lambda folder, v=value: _batchnorm_case(v)


def _batchnorm_case(value) -> str:
    import bsadvisor

    try:
        bsadvisor.recommend(dict(lr=0.1, batch_size=8, dataset_size=640, epochs=3,
                                 schedule="MultiStepLR(milestones=[1])"), batchnorm=value)
    except (ValueError, TypeError) as exc:
        return "refused" if "\n" not in str(exc) else "BUG: several lines"
    except BaseException as exc:  # noqa: BLE001
        return f"BUG: {type(exc).__name__}: {str(exc)[:100]}"
    return "BUG: wrong result: accepted garbage" if value in ("no", "false", 2) else "accepted"


# -- out: validate/demo --out beside the user's own files -------------------------------------------
VALIDATE_FAST = ["validate", "t.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2",
                 "--tolerance", "1", "--no-noise-monitor"]


def _out_case(setup, argv, expect_refusal: bool, keep: tuple = ()):
    """Set up ``v`` (and an ``outside`` folder), run; every file of the user's (``keep`` and everything
    outside ``v``) must be as it was, whatever the outcome; a refusal must leave everything as it was."""
    def case(folder: Path) -> str:
        (folder / "outside").mkdir()
        (folder / "outside" / "precious.pt").write_bytes(b"outside --out")
        (folder / "outside" / "original-seed0.pt").write_bytes(b"outside --out too")
        setup(folder)
        before = _tree(folder)
        code, out, err = _cli(argv)
        after = _tree(folder)
        outside = {k: v for k, v in before.items() if not k.startswith("v/") and k != "v"}
        lost = [k for k in list(outside) + list(keep) if after.get(k) != before.get(k)]
        if lost:
            return f"BUG: data loss: {sorted(lost)[:3]} changed or lost (exit {code})"
        if code == 2:
            bad = _refusal(code, err)
            if bad:
                return bad
            lock = "v/.bsadvisor.lock"  # the lock file stays, empty, by design (core.fileio.FolderLock)
            if after.get(lock) == hashlib.sha256(b"").hexdigest() and before.get(lock, after[lock]) == after[lock]:
                after.pop(lock)
                before.pop(lock, None)
            if after != before:
                changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
                return f"BUG: refused but the folder changed: {changed[:3]}"
            return "refused"
        if code in FINISHED:
            return "BUG: wrong result: accepted a folder it must refuse" if expect_refusal else "accepted"
        return _refusal(code, err) or f"BUG: exit {code}"
    return case


def _earlier_run(folder: Path) -> None:
    code, _, err = _cli([*VALIDATE_FAST, "--out", "v"])
    if code not in FINISHED:
        raise RuntimeError(f"the earlier run failed: {err[-300:]}")


def out_cases(args):
    def user_file(name, data=b"mine"):
        def setup(folder):
            (folder / "v" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "v" / name).write_bytes(data)
        return setup

    for name in ("noise.png", "report.md", "results.json", "curves_epoch.png", "checkpoints/original-seed0.pt"):
        for flags in ([], ["--overwrite"], ["--resume"]):
            yield (f"validate --out v holding the user's {name} {' '.join(flags)}",
                   _out_case(user_file(name, b'{"mine": 1}' if name.endswith(".json") else b"mine"),
                             [*VALIDATE_FAST, "--out", "v", *flags], True, (f"v/{name}",)))
        yield (f"demo --out v holding the user's {name} --overwrite",
               _out_case(user_file(name), ["demo", "--out", "v", "--overwrite", "--skip-probe"], True, (f"v/{name}",)))

    def my_model(folder):
        _earlier_run(folder)
        (folder / "v" / "checkpoints" / "my_model.pt").write_bytes(b"the user's model")
        (folder / "v" / "notes.txt").write_text("mine")
    for flags in ([], ["--overwrite"], ["--resume"]):
        yield (f"validate --out v: an earlier run and the user's my_model.pt {' '.join(flags)}",
               _out_case(my_model, [*VALIDATE_FAST, "--out", "v", *flags], flags == [],
                         ("v/checkpoints/my_model.pt", "v/notes.txt")))

    def link(folder):
        (folder / "v").mkdir()
        (folder / "v" / "checkpoints").symlink_to(folder / "outside", target_is_directory=True)
    def link_after_run(folder):
        _earlier_run(folder)
        shutil.rmtree(folder / "v" / "checkpoints")
        (folder / "v" / "checkpoints").symlink_to(folder / "outside", target_is_directory=True)
    def file_link(folder):
        (folder / "v").mkdir()
        (folder / "v" / "results.json").symlink_to(folder / "notes.txt")
    def crafted_manifest(folder):
        _earlier_run(folder)
        (folder / "v" / ".bsadvisor-manifest.json").write_text(json.dumps(
            {"schema": "bsadvisor.manifest/1", "files": ["../notes.txt", str(folder / "notes.txt"),
                                                         "../outside/precious.pt", "checkpoints/../../data.csv"]}))
    for label, setup in (("a checkpoints link out of --out", link), ("an earlier run's checkpoints turned into a link",
                         link_after_run), ("results.json a link to the user's notes", file_link)):
        for flags in ([], ["--overwrite"], ["--resume"]):
            yield (f"validate --out v with {label} {' '.join(flags)}",
                   _out_case(setup, [*VALIDATE_FAST, "--out", "v", *flags], True, ()))
    yield ("validate --overwrite with a crafted manifest naming files outside --out",
           _out_case(crafted_manifest, [*VALIDATE_FAST, "--out", "v", "--overwrite"], False,
                     ("notes.txt", "data.csv")))
    for out in ("notes.txt", "plan.json", "data.csv"):
        def link_out(folder, out=out):
            (folder / "link.json").symlink_to(folder / out)
        yield (f"convert --out a link to the user's {out}",
               _out_case(link_out, [*CONVERT, "--out", "link.json"], True, (out,)))


# -- checkpoint: a stopped run's checkpoint hand-edited, then --resume --------------------------------
_REFERENCE: dict = {}
#: --max-minutes tried for the stopped run, until its checkpoint of the original holds a finished epoch and a
#: partial one (so every edit applies; where exactly it stops depends on the machine's load).
STOP_MINUTES = ("0.03", "0.045", "0.06", "0.08", "0.1", "0.13", "0.17")


def _reference(folder: Path) -> tuple[dict, Path]:
    """The uninterrupted run's numbers, and a folder of the same run stopped part way (--max-minutes), made once."""
    if not _REFERENCE:
        import torch

        home = Path(tempfile.mkdtemp(prefix="bsa-ckpt-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)  # the sweep's cases read it until the end
        for name in ("t_slow.py",):
            shutil.copy(folder / name, home / name)
        old = os.getcwd()
        os.chdir(home)
        try:
            code, out, err = _cli(["validate", *SLOW, "--json"], limit=600)
            if code not in FINISHED:
                raise RuntimeError(f"the reference run failed: {err[-300:]}")
            ref = _numbers(json.loads(out))
            for minutes in STOP_MINUTES:  # until the original's checkpoint has a finished epoch and a partial one
                shutil.rmtree(home / "stopped", ignore_errors=True)
                code, _, err = _cli(["validate", *SLOW, "--out", "stopped", "--max-minutes", minutes], limit=600)
                if code not in (*FINISHED, 124) or not list((home / "stopped" / "checkpoints").glob("*.pt")):
                    continue
                doc = torch.load(home / "stopped" / "checkpoints" / "original-seed0.pt", weights_only=True)
                if doc["history"] and doc["partial"]:
                    break
            else:
                raise RuntimeError(f"no stopped run left a checkpoint inside epoch 2 (exit {code}): {err[-300:]}")
        finally:
            os.chdir(old)
        _REFERENCE.update(numbers=ref, stopped=home / "stopped", home=home)
    return _REFERENCE["numbers"], _REFERENCE["stopped"]


def _edit(path: Path, change, redigest: bool) -> None:
    import torch

    from bsadvisor.runtime.checkpoint import digest

    doc = torch.load(path, weights_only=True)
    change(doc)
    if redigest and "digest" in doc:
        doc["digest"] = digest(doc)
    torch.save(doc, path)


def _setter(path: str, value):
    keys = [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]

    def change(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value
    return change


def _resume_case(change, redigest: bool, must_refuse: bool = True):
    """Edit the stopped run's first checkpoint, resume: refused in one line, or the uninterrupted numbers."""
    def case(folder: Path) -> str:
        ref, stopped = _reference(folder)
        shutil.copytree(stopped, folder / "v")
        ck = sorted((folder / "v" / "checkpoints").glob("*.pt"))[0]
        if change is not None:
            try:
                _edit(ck, change, redigest)
            except (IndexError, KeyError, TypeError):  # the field is not in this checkpoint (no epoch finished yet)
                return "not applicable"
        code, out, err = _cli(["validate", *SLOW, "--out", "v", "--resume", "--json"], limit=600)
        if code == 2:
            return _refusal(code, err) or ("refused" if change is not None else
                                           f"BUG: refused an unedited checkpoint: {err.strip()[-200:]}")
        if code in FINISHED:
            doc = json.loads(out)
            walls = [s.get("wall_s") for r in doc["runs"].values() for s in r["seeds"]]
            if any(w is None or w < 0 for w in walls) or (doc["verdict"].get("wall_ratio") or 1) < 0:
                return f"BUG: wrong result: wall times {walls}"
            if _numbers(doc) != ref:
                return "BUG: wrong result: the resumed run's numbers differ from the uninterrupted run's"
            return "accepted, numbers equal" if change is not None or not must_refuse else "accepted, numbers equal"
        return _refusal(code, err) or f"BUG: exit {code}"
    return case


def checkpoint_cases(args):
    def first_group(key, value):
        return _setter(f"optimizer.param_groups.0.{key}", value)

    def drop(section, keep):
        return lambda doc: doc.__setitem__(section, keep(doc[section]))

    def off_batch(doc):
        if doc["partial"]:
            doc["partial"]["offset"] += 1
            doc["partial"]["seen"] += 1
        doc["totals"]["examples"] += 1
        doc["since"]["seen"] += 1

    yield "resume unedited (control)", _resume_case(None, False, must_refuse=False)
    edits = [
        ("scheduler.ratios = [5.0]", _setter("scheduler.ratios", [5.0])),
        ("scheduler.samples_seen = 0", _setter("scheduler.samples_seen", 0)),
        ("scheduler.last_step + 5", _setter("scheduler.last_step", lambda v: v + 5)),
        ("scheduler.adam_base changed", _setter("scheduler.adam_base", [[0.5, 1.0]])),
        ("optimizer weight_decay 0.5", first_group("weight_decay", 0.5)),
        ("optimizer nesterov", first_group("nesterov", True)),
        ("optimizer dampening 0.3", first_group("dampening", 0.3)),
        ("optimizer maximize", first_group("maximize", True)),
        ("sampler.seed = 7", _setter("sampler.seed", 7)),
        ("sampler.epoch + 1", _setter("sampler.epoch", lambda v: v + 1)),
        ("sampler.offset = 8", _setter("sampler.offset", 8)),
        ("history truncated by one", drop("history", lambda h: h[:-1])),
        ("history emptied", drop("history", lambda h: [])),
        ("history doubled", drop("history", lambda h: h + h)),
        ("history[0].lr × 5", _setter("history.0.lr", lambda v: v * 5)),
        ("history[0].batch_size + 1", _setter("history.0.batch_size", lambda v: v + 1)),
        ("partial offset off a batch boundary", off_batch),
        ("partial.offset = 0", _setter("partial.offset", 0)),
        ("partial.epoch + 1", _setter("partial.epoch", lambda v: v + 1)),
        ("totals.wall_s = -1e9", _setter("totals.wall_s", -1e9)),
        ("totals.wall_s = 1e308", _setter("totals.wall_s", 1e308)),
        ("totals.updates + 1", _setter("totals.updates", lambda v: v + 1)),
        ("totals.examples + 8", _setter("totals.examples", lambda v: v + 8)),
        ("since.seen + 1", _setter("since.seen", lambda v: v + 1)),
        ("steps truncated", drop("steps", lambda s: s[:-1])),
        ("steps[0].lr × 5", _setter("steps.0.lr", lambda v: v * 5)),
        ("evals emptied", drop("evals", lambda e: [])),
    ]
    for label, change in edits:
        yield f"checkpoint {label} (digest recomputed)", _resume_case(change, True)
    by_hand = [
        ("since.loss_sum = 1e308", _setter("since.loss_sum", 1e308)),
        ("since.loss_sum = -5", _setter("since.loss_sum", -5.0)),
        ("partial.loss_sum = 0", lambda d: d["partial"].__setitem__("loss_sum", 0.0) if d["partial"] else
         d["since"].__setitem__("loss_sum", 0.0)),
        ("totals.wall_s = -1e9", _setter("totals.wall_s", -1e9)),
        ("totals.wall_s × 1000", _setter("totals.wall_s", lambda v: v * 1000)),
        ("history[0].metric = 1.0", lambda d: d["history"][0].__setitem__("metric", 1.0) if d["history"] else
         d["since"].__setitem__("loss_sum", 1.0)),
        ("history[0].train_loss = 0.001", lambda d: d["history"][0].__setitem__("train_loss", 0.001)
         if d["history"] else d["since"].__setitem__("loss_sum", 2.0)),
        ("monitor points dropped", lambda d: d["monitor"].__setitem__("points", []) if d.get("monitor") else
         d["since"].__setitem__("loss_sum", 3.0)),
        ("rng replaced", lambda d: d.__setitem__("rng", {**d["rng"], "python": None}) if isinstance(d["rng"], dict)
         else None),
        ("digest removed", lambda d: d.pop("digest", None)),
        ("digest garbage", _setter("digest", "0" * 64)),
        ("scheduler.ratios = [5.0]", _setter("scheduler.ratios", [5.0])),
        ("optimizer lr × 5 (the plan's LR is re-applied)", first_group("lr", lambda v: v * 5)),
        ("optimizer momentum 0.1 (the plan's is re-applied)", first_group("momentum", 0.1)),
        ("meta seed 3", _setter("meta.seed", 3)),
        ("format other", _setter("format", "bsadvisor.checkpoint/9")),
    ]
    for label, change in by_hand:
        yield f"checkpoint {label} (edited by hand)", _resume_case(change, False)


# -- signal: a validate run killed mid-run, then --resume -------------------------------------------
def signal_cases(args):
    import signal
    import subprocess

    def case_for(sig, wait: float):
        def case(folder: Path) -> str:
            ref, _ = _reference(folder)
            env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", OMP_NUM_THREADS="1")
            proc = subprocess.Popen([sys.executable, "-m", "bsadvisor", "validate", *SLOW, "--out", "v"],
                                    cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None and not list(folder.glob("v/checkpoints/*.pt")):
                time.sleep(0.05)
            time.sleep(wait)
            proc.send_signal(sig)
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                return f"BUG: hang after {signal.Signals(sig).name}"
            if "Traceback" in err:
                return "BUG: traceback " + err[-300:].replace("\n", " | ")
            if sig == signal.SIGINT and proc.returncode not in (130, 0):
                return f"BUG: SIGINT gave exit {proc.returncode}: {err[-200:]!r}"
            if sig == signal.SIGINT and proc.returncode == 130 and not (
                    len(err.strip().splitlines()) == 1 and "resume with" in err):
                return f"BUG: SIGINT's line: {err[-200:]!r}"
            code, out, err = _cli(["validate", *SLOW, "--out", "v", "--resume", "--json"], limit=600)
            if code not in FINISHED:
                return f"BUG: the resume after {signal.Signals(sig).name} failed (exit {code}): {err[-200:]!r}"
            if _numbers(json.loads(out)) != ref:
                return f"BUG: wrong result: resumed after {signal.Signals(sig).name}, the numbers differ"
            return "accepted, numbers equal"
        return case

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        for wait in (0.0, 0.7):
            yield f"validate {signal.Signals(sig).name} {wait:g} s after the first checkpoint, then --resume", \
                case_for(sig, wait)


# -- torchrun: bad input under two processes ----------------------------------------------------------
def torchrun_cases(args):
    import socket
    import subprocess

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def case_for(argv, expect: str, env_extra=None):
        def case(folder: Path) -> str:
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                                    "MASTER_PORT")}
            env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", BSADVISOR_DIST_TIMEOUT="60", COLUMNS="80")
            env.update(env_extra or {})
            before = _tree(folder)
            try:
                r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                                    "--master_addr=127.0.0.1", f"--master_port={port()}", "-m", "bsadvisor", *argv],
                                   cwd=folder, env=env, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                return "BUG: hang under torchrun (over 300 s)"
            # torchrun's launcher raises ChildFailedError with its own traceback when a rank exits non-zero (as
            # documented by torch); a traceback of ours has a frame in bsadvisor's files
            if "Traceback (most recent call last)" in r.stderr and "bsadvisor/" in r.stderr.replace(
                    "-m bsadvisor", "").replace("bsadvisor FAILED", ""):
                return "BUG: traceback " + r.stderr[-300:].replace("\n", " | ")
            if expect == "refused":
                ours = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
                if r.returncode == 0 or not ours or "exitcode  : 2" not in r.stderr:
                    return f"BUG: exit {r.returncode}, no one-line refusal: {r.stderr[-200:]!r}"
                if _tree(folder) != before:
                    return "BUG: refused but the folder changed"
                return "refused"
            # torchrun exits 1 when a rank exits non-zero: a one-seed verdict's 3 is in its summary
            if r.returncode != 0 and not (r.returncode == 1 and "exitcode  : 3" in r.stderr):
                return f"BUG: exit {r.returncode}: {r.stderr[-200:]!r}"
            return accepted_outcome(argv, before, _tree(folder))
        return case

    v = ["validate", "t.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2", "--device", "cpu",
         "--tolerance", "1", "--no-noise-monitor"]
    yield "torchrun validate --seeds 0", case_for([*v, "--seeds", "0"], "refused")
    yield "torchrun validate --out a file", case_for([*v, "--out", "notes.txt"], "refused")
    yield "torchrun validate --plan garbage", case_for(["validate", "t.py:ok", "--plan", "data.csv", "--device", "cpu"],
                                                       "refused")
    yield "torchrun validate --max-micro-batch 0", case_for([*v, "--max-micro-batch", "0"], "refused")
    yield "torchrun probe --estimator two-batch", case_for(["probe", "t.py:ok", "--device", "cpu", "--estimator",
                                                            "two-batch"], "refused")
    for timeout in ("inf", "1e308", "-5", "abc"):  # timedelta overflows on these
        yield f"torchrun validate BSADVISOR_DIST_TIMEOUT={timeout}", case_for(
            [*v, "--seeds", "1"], "refused", {"BSADVISOR_DIST_TIMEOUT": timeout})
    yield "torchrun validate --out v (accepted)", case_for([*v, "--out", "v"], "accepted")
    yield "torchrun validate --out v with the user's noise.png", \
        lambda folder: ((folder / "v").mkdir(), (folder / "v" / "noise.png").write_bytes(b"mine"),
                        case_for([*v, "--out", "v"], "refused")(folder))[-1]


# -- hang: a target that never returns, against the stated bound ---------------------------------------
def hang_cases(args):
    import subprocess

    def case_for(argv, hang_at: str, bound: float, slack: float = 30):
        """``bound``: the stated bound (the limit's own seconds); ``slack``: the interpreter's and torch's start-up
        before the limit is armed, on a busy machine."""
        def case(folder: Path) -> str:
            env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", OMP_NUM_THREADS="1", HANG_AT=hang_at)
            t0 = time.monotonic()
            try:
                r = subprocess.run([sys.executable, "-m", "bsadvisor", *argv], cwd=folder, env=env,
                                   capture_output=True, text=True, timeout=bound + slack)
            except subprocess.TimeoutExpired:
                return f"BUG: hang past the stated bound of {bound:g} s (+ {slack:g} s to start)"
            took = time.monotonic() - t0
            if "Traceback" in r.stderr:
                return "BUG: traceback " + r.stderr[-300:].replace("\n", " | ")
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            if r.returncode not in (2, 124) or len(lines) != 1:
                return f"BUG: exit {r.returncode} after {took:.0f} s: {r.stderr[-200:]!r}"
            HANG_TIMES.append(f"{' '.join(argv[:2])} (hang at {hang_at}): stopped after {took:.1f} s (process start "
                              f"included), stated bound {bound:g} s")
            if took > bound + slack:
                return f"BUG: hang: stopped after {took:.0f} s, past the stated bound of {bound:g} s"
            return "stopped within its bound"
        return case

    vt = ["validate", "t_hang.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2"]
    for at in ("import", "target", "loss"):
        yield f"validate --max-minutes 0.05, hang at {at}", case_for([*vt, "--max-minutes", "0.05"], at, 3)
    if not args.quick_hangs:
        yield "probe --budget-seconds 1, hang in the loss", case_for(
            ["probe", "t_hang.py:ok", "--budget-seconds", "1"], "loss", 10 * 1 + 300)
        yield "advise --budget-seconds 1, hang at import", case_for(
            ["advise", "t_hang.py:ok", "--schedule", "MultiStepLR(milestones=[1])", "--epochs", "2",
             "--budget-seconds", "1"], "import", 10 * 1 + 300)


HANG_TIMES: list = []
FAMILIES = {"api": api_cases, "out": out_cases, "checkpoint": checkpoint_cases, "signal": signal_cases,
            "torchrun": torchrun_cases, "hang": hang_cases}

if __name__ == "__main__":
    main()
