"""Paste check: `bsadvisor export --format megatron` fed to Megatron-Core's own code.

Loads megatron/core/num_microbatches_calculator.py (StepBatchsizeNumMicroBatchesCalculator) and
megatron/core/optimizer_param_scheduler.py (OptimizerParamScheduler) from a Megatron-LM checkout as
they are (megatron.core.utils.log_single_rank stubbed: the rest of Megatron needs CUDA builds), runs
training.py's sample-based update loop over the exported flags (the calculator's batch with its
consistency check, the scheduler stepped by each batch) and prints, per plan, how many updates take
the plan's batch and how far the LR is from the plan's, beside what the export states.

    git clone https://github.com/NVIDIA/Megatron-LM && python benchmarks/megatron_paste_check.py Megatron-LM
    # and the --megatron-version 0.17 ramp through an older checkout's RampupBatchsizeNumMicroBatchesCalculator:
    git -C Megatron-LM worktree add ../mcore-0.17 core_v0.17.1
    python benchmarks/megatron_paste_check.py Megatron-LM --ramp-checkout mcore-0.17
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import types
from pathlib import Path

from bsadvisor.core.convert import convert_schedule
from bsadvisor.core.exports import export

LLM = dict(lr=6e-4, batch_size=500, dataset_size=10_000_000, epochs=1, optimizer="adamw", schedule_unit="step",
           schedule="SequentialLR([LinearLR(start_factor=0.01, total_iters=2000), "
                    "CosineAnnealingLR(T_max=18000, eta_min=6e-5)], milestones=[2000])")


def load(root: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"megatron.core.{name}", root / "megatron" / "core" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def megatron_core(root: Path):
    """(StepBatchsizeNumMicroBatchesCalculator, OptimizerParamScheduler) from the checkout at ``root``."""
    utils = types.ModuleType("megatron.core.utils")
    utils.log_single_rank = lambda *a, **k: None
    for name in ("megatron", "megatron.core"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["megatron.core.utils"] = utils
    return (load(root, "num_microbatches_calculator").StepBatchsizeNumMicroBatchesCalculator,
            load(root, "optimizer_param_scheduler").OptimizerParamScheduler)


def run_flags(root: Path, text: str, plan, data_parallel: int = 4) -> tuple[int, int, float]:
    """(updates, updates with the plan's batch, sample-weighted mean |LR/LR_plan − 1|) of Megatron-Core's own
    calculator and scheduler over the flags ``text``, in training.py's sample-based loop."""
    calculator, scheduler = megatron_core(root)
    toks = shlex.split(text)
    flag = {toks[i]: toks[i + 1] for i in range(0, len(toks), 2)}
    calc = calculator(micro_batch_size=1, data_parallel_size=data_parallel, decrease_batch_size_if_needed=False,
                      rank=0, schedule=flag["--step-batch-size-schedule"],
                      seq_length=int(flag["--seq-length"]) if "--seq-length" in flag else None)
    opt = types.SimpleNamespace(param_groups=[{"lr": 0.0}])
    sch = scheduler(opt, init_lr=float(flag["--lr-warmup-init"]), max_lr=float(flag["--lr"]),
                    min_lr=float(flag["--min-lr"]), lr_warmup_steps=int(flag["--lr-warmup-samples"]),
                    lr_decay_steps=int(flag["--lr-decay-samples"]), lr_decay_style=flag["--lr-decay-style"],
                    start_wd=0.0, end_wd=0.0, wd_incr_steps=1, wd_incr_style="constant",
                    wsd_decay_steps=int(flag.get("--lr-wsd-decay-samples", 0)) or None,
                    lr_wsd_decay_style=flag.get("--lr-wsd-decay-style"))
    consumed, updates, same, err = 0, 0, 0, 0.0
    while consumed < int(flag["--train-samples"]):
        calc.update(consumed, consistency_check=True)
        batch = calc.get_current_global_batch_size()
        want = plan.update_end(consumed) - consumed
        same += batch == want
        updates += 1
        err += abs(opt.param_groups[0]["lr"] / plan.at_sample(consumed).lr - 1) * want
        sch.step(batch)
        consumed += batch
    return updates, same, err / plan.total_samples


def check_ramp(root: Path, data_parallel: int) -> None:
    """The --megatron-version 0.17 export of a one-step plan through that release's ramp calculator."""
    for name in ("megatron", "megatron.core"):
        sys.modules.setdefault(name, types.ModuleType(name))
    ramp_class = load(root, "num_microbatches_calculator").RampupBatchsizeNumMicroBatchesCalculator
    plan = convert_schedule(**LLM, growth_factor=2, max_batch=1000, seq_len=2048)
    text = export(plan, "megatron", "0.17")[0]
    toks = shlex.split(text)
    start, inc, ramp = (int(x) for x in toks[1:4])
    calc = ramp_class(global_batch_size=int(toks[toks.index("--global-batch-size") + 1]), micro_batch_size=1,
                      data_parallel_size=data_parallel, decrease_batch_size_if_needed=False, rank=0,
                      start_global_batch_size=start, batch_size_increment=inc, ramup_samples=ramp)
    consumed, updates, same = 0, 0, 0
    while consumed < plan.total_samples:
        calc.update(consumed, consistency_check=True)
        batch = calc.get_current_global_batch_size()
        same += batch == plan.update_end(consumed) - consumed
        updates += 1
        consumed += batch
    print(f"{text.strip()}\n  through RampupBatchsizeNumMicroBatchesCalculator: {updates} updates, {same} take the "
          "plan's batch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("megatron", type=Path, help="a Megatron-LM checkout (Megatron-Core >= 0.18)")
    ap.add_argument("--data-parallel", type=int, default=4)
    ap.add_argument("--ramp-checkout", type=Path, help="a Megatron-LM checkout of Megatron-Core <= 0.17")
    args = ap.parse_args()
    if args.ramp_checkout is not None:
        check_ramp(args.ramp_checkout, args.data_parallel)
    plans = {"warmup + cosine, AdamW, --seq-len 2048 --round-to 8": convert_schedule(**LLM, seq_len=2048, round_to=8),
             "the same without --seq-len (thresholds in samples)": convert_schedule(**LLM, round_to=8)}
    for name, plan in plans.items():
        text, _, notes = export(plan, "megatron")
        updates, same, err = run_flags(args.megatron, text, plan, args.data_parallel)
        stated = next(n for n in notes if "temperature" in n or "the LR are the plan's" in n)
        print(f"{name}:\n  {updates} updates, {same} take the plan's batch ({updates - same} differ: the plan cuts "
              f"its last update at the end of the run); mean |LR/LR_plan - 1| = {err:.4f}\n"
              f"  the export says: {stated}")


if __name__ == "__main__":
    main()
