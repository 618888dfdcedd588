"""The plan as a CSV table, one row per stage: what any training loop can read."""
from __future__ import annotations

from typing import Optional

from bsadvisor.core.exports.fit import fmt_number

def _tokens(plan, samples: int) -> Optional[int]:
    return samples * plan.seq_len if plan.seq_len else None


def csv_rows(plan) -> list[dict]:
    """One row per stage: its samples (and tokens), batch, LR factor of the original (or constant LR), momentum, phase."""
    rows = []
    for s in plan.stages:
        row = {"start_sample": s.start_sample, "end_sample": s.end_sample}
        if plan.seq_len:
            row["start_token"], row["end_token"] = _tokens(plan, s.start_sample), _tokens(plan, s.end_sample)
        row.update({"batch_size": s.batch_size, "lr_scale": s.lr_scale, "lr": s.lr, "momentum": s.momentum,
                    "phase": s.phase})
        rows.append(row)
    return rows


def export_csv(plan) -> str:
    """One row per stage, numbers to 10 significant digits. ``lr_scale`` is the LR as a multiple of the
    original schedule's LR at the same sample (empty: the stage trains at the constant ``lr``); ``lr`` is
    the LR at the stage's first sample."""
    rows = csv_rows(plan)
    header = list(rows[0])
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join("" if r[k] is None else fmt_number(r[k]) if isinstance(r[k], float) else str(r[k])
                              for k in header))
    return "\n".join(lines) + "\n"
