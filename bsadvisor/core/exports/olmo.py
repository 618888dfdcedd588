"""OLMo-core: its BatchSizeSchedulerCallback in tokens and an LR scheduler that trains the plan's LR."""
from __future__ import annotations

import math

from bsadvisor.core.defaults import ADAM_FAMILY
from bsadvisor.core.errors import UserError
from bsadvisor.core.exports.fit import batch_steps

def olmo_rows(plan) -> list[dict]:
    """One row per batch change, as OLMo-core's BatchSizeSchedulerCallback takes it: where it starts and the
    global batch, in tokens (and samples); its updates; and ``lr_factor``, the factor the user's LR scheduler
    applies on top of OLMo-core's own √(B/B_first) (a list when it changes inside the batch)."""
    _olmo_check(plan)
    seq, first = plan.seq_len, plan.stages[0].batch_size
    counts = plan.updates_per_stage()
    steps = batch_steps(plan)
    ends = [step["samples"] for step in steps[1:]] + [plan.total_samples]
    rows, i = [], 0
    for step, end in zip(steps, ends):
        inside = []  # the stages that start in [step, end): one walk over the stages for all steps (linear)
        while i < len(plan.stages) and plan.stages[i].start_sample < end:
            if plan.stages[i].start_sample >= step["samples"]:
                inside.append((plan.stages[i], counts[i]))
            i += 1
        own = math.sqrt(step["batch_size"] / first)  # OLMo-core's cumulative √ factor at this batch
        factors = list(dict.fromkeys((st.lr_scale if st.lr_scale is not None else 1.0) / own for st, _ in inside))
        rows.append({"start_samples": step["samples"], "start_tokens": step["samples"] * seq,
                     "batch_size": step["batch_size"], "batch_size_tokens": step["batch_size"] * seq,
                     "updates": sum(c for _, c in inside), "olmo_lr_factor": own,
                     "lr_factor": factors[0] if len(factors) == 1 else factors})
    return rows


def _olmo_check(plan) -> None:
    """Refuse, in one line, a plan OLMo-core's BatchSizeSchedulerCallback cannot follow as written."""
    optimizer = plan.options.optimizer
    if optimizer not in ADAM_FAMILY:
        raise UserError(f"OLMo-core's BatchSizeSchedulerCallback rescales the LR of Adam-family optimizers only (it "
                        f"raises NotImplementedError for {optimizer}); use --format csv for this plan")
    if not plan.seq_len:
        raise UserError("OLMo-core counts the batch and the schedule in tokens and the plan has no sequence length; "
                        "convert again with --seq-len (tokens per sample)")
    steps = batch_steps(plan)
    for a, b in zip(steps, steps[1:]):
        big, small = max(a["batch_size"], b["batch_size"]), min(a["batch_size"], b["batch_size"])
        if big % small:
            raise UserError(f"OLMo-core changes the batch by integer factors only, and the plan goes from "
                            f"{a['batch_size']} to {b['batch_size']} at sample {b['samples']:,}; convert again with "
                            "--growth-factor 2")


def export_olmo(plan, plan_path: str = "plan.json") -> str:
    """Python for OLMo-core: its BatchSizeSchedulerCallback in tokens, and an LR scheduler that trains the plan's LR.

    OLMo-core's callback multiplies an Adam LR's initial value by √(new/old) at each batch change
    (olmo_core/train/callbacks/batch_size_scheduler.py); the plan's LR is the original's × its own
    factor (eq. 14). ``PlanLR`` (an OLMo-core ``Scheduler`` in tokens, which the callback requires
    without a t_max) sets each group's LR to the plan's at the update's first sample, × the group's
    own ratio, so OLMo-core's √ factor is undone: ``Plan.at_sample`` is the LR, not a comment.
    While OLMo-core holds the old batch (it raises the batch only once the batches processed are a
    multiple of the factor) the LR stays that of the last stage at the batch it trains.
    """
    rows = olmo_rows(plan)
    batches = ", ".join(str(r["batch_size_tokens"]) for r in rows)
    schedule = ", ".join(f"Duration.tokens({r['start_tokens']})" for r in rows)
    lines = ["from dataclasses import dataclass",
             "",
             "from bsadvisor import Plan",
             "from olmo_core.optim.scheduler import Scheduler, SchedulerUnits",
             "from olmo_core.train.callbacks import BatchSizeSchedulerCallback",
             "from olmo_core.train.common import Duration",
             "",
             f"plan = Plan.load({plan_path!r})  # the plan's batches and LR; start the data loader at "
             f"global_batch_size={rows[0]['batch_size_tokens']}",
             f"SEQ_LEN = {plan.seq_len}",
             "batch_size_scheduler = BatchSizeSchedulerCallback(",
             f"    batch_sizes=[{batches}],",
             f"    schedule=[{schedule}],",
             ")",
             "",
             "",
             "@dataclass",
             "class PlanLR(Scheduler):",
             "    \"\"\"The plan's LR at every update (bsadvisor), in place of OLMo-core's sqrt(new/old) factor.\"\"\"",
             "",
             "    units: SchedulerUnits = SchedulerUnits.tokens",
             "",
             "    def get_lr(self, initial_lr, current, t_max):",
             "        return plan.at_sample(current // SEQ_LEN).lr",
             "",
             "    def set_lr(self, group, trainer):",
             "        batch = trainer.data_loader.global_batch_size  # tokens, as OLMo-core trains it now",
             "        start = (trainer.global_train_tokens_seen - batch) // SEQ_LEN  # this update's first sample",
             "        stage = plan.stages[plan.stage_index_at_sample(start)]",
             "        if stage.batch_size * SEQ_LEN != batch:  # OLMo-core has not changed the batch yet",
             "            stage = [s for s in plan.stages if s.start_sample <= start and s.batch_size * SEQ_LEN == batch][-1]",
             "        if group.get('plan_lr_ratio') is None:  # the group's LR relative to the plan's base LR",
             "            group['plan_lr_ratio'] = group.get(self.initial_lr_field) or group[self.lr_field]",
             f"            group['plan_lr_ratio'] /= {plan.options.lr!r}",
             "        lr = plan.lr_at(stage, start) * group['plan_lr_ratio']",
             "        if hasattr(group.get(self.lr_field), 'fill_'):  # a tensor LR (compiled optimizers), as OLMo-core",
             "            group[self.lr_field].fill_(lr)",
             "        else:",
             "            group[self.lr_field] = lr",
             "        return lr",
             "",
             "",
             "lr_scheduler = PlanLR()  # the train module's scheduler"]
    return "\n".join(lines) + "\n"


def olmo_notes(plan) -> list[str]:
    notes = ["OLMo-core raises the batch only once the batches processed are a multiple of the factor, so each "
             "increase may land up to factor − 1 updates after its token count"]
    if len({s.momentum for s in plan.stages}) > 1:
        notes.append("the plan also changes Adam's β1, which the callback cannot hold; use --format csv")
    return notes
