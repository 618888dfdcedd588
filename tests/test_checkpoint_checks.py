"""A hand-edited checkpoint whose identity still matches is never resumed as is.

What the plan, the target's optimizer and the seed determine is re-derived on resume and the
checkpoint's must agree; what they do not (losses, wall times, random states) must be the numbers
bsadvisor wrote (the digest). Each edit below keeps the run's identity (meta) and, where the field is
derivable, even re-computes the digest, so the derivation alone must catch it: one UserError line.
The control: the same checkpoint unedited resumes to the uninterrupted run's numbers exactly.
"""
from __future__ import annotations

import pytest
import torch

from bsadvisor.core.baseline import baseline_plan
from bsadvisor.core.errors import UserError
from bsadvisor.runtime.checkpoint import digest
from bsadvisor.runtime.train import train_plan
from bsadvisor.targets.builtins import linreg

N, B = 128, 16  # 8 updates an epoch


class _Stop(Exception):
    pass


def _plan():
    return baseline_plan(lr=0.01, batch_size=B, dataset_size=N, epochs=3, momentum=0.9,
                         schedule="MultiStepLR(milestones=[1, 2], gamma=0.5)")


def _checkpoint(tmp_path, after_updates: int):
    """The checkpoint a run leaves when it is stopped at its ``after_updates``-th update (checkpoint_every=2: the
    last one written is at the even update before it, or at the epoch's end)."""
    ck = tmp_path / "c.pt"
    count = [0]

    def on_step(_):
        count[0] += 1
        if count[0] == after_updates:
            raise _Stop

    with pytest.raises(_Stop):
        train_plan(linreg(size=N), _plan(), checkpoint=ck, checkpoint_every=2, evals=5, on_step=on_step)
    return ck


def _resume(ck):
    return train_plan(linreg(size=N), _plan(), checkpoint=ck, resume=True, checkpoint_every=2, evals=5)


@pytest.fixture(scope="module")
def uninterrupted():
    return train_plan(linreg(size=N), _plan(), evals=5).to_dict()


def _numbers(result: dict) -> dict:
    return {k: result[k] for k in ("final_train_loss", "metric", "updates", "examples", "steps")} | {
        "history": [{k: v for k, v in r.items() if k != "wall_s"} for r in result["history"]],
        "evals": [{k: v for k, v in r.items() if k != "wall_s"} for r in result["evals"]]}


@pytest.mark.parametrize("after", [11, 9])  # mid-epoch (epoch 2, offset 32), and exactly at the first epoch's end
def test_an_unedited_checkpoint_resumes_to_the_uninterrupted_numbers(tmp_path, uninterrupted, after):
    ck = _checkpoint(tmp_path, after)
    assert _numbers(_resume(ck).to_dict()) == _numbers(uninterrupted)


def _edit(ck, change, redigest: bool = True):
    doc = torch.load(ck, weights_only=True)
    change(doc)
    if redigest:
        doc["digest"] = digest(doc)
    torch.save(doc, ck)


def _set(path: str, value):
    """An edit setting doc[a][b]... = value (an int key indexes a list)."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


def _offset_off_a_batch(doc):
    for d in (doc["partial"],):
        d["offset"] += 1
        d["seen"] += 1
    doc["totals"]["examples"] += 1
    doc["since"]["seen"] += 1


EDITS = [
    ("scheduler ratios", _set("scheduler.ratios", [5.0]), "scheduler.ratios"),
    ("scheduler position", _set("scheduler.samples_seen", 0), "scheduler.samples_seen"),
    ("weight decay", _set("optimizer.param_groups.0.weight_decay", 0.5), "weight_decay"),
    ("nesterov", _set("optimizer.param_groups.0.nesterov", True), "nesterov"),
    ("dampening", _set("optimizer.param_groups.0.dampening", 0.3), "dampening"),
    ("sampler seed", _set("sampler.seed", 7), "sampler.seed"),
    ("history truncated", lambda d: d.__setitem__("history", []), "partial.epoch"),
    ("history lr", _set("history.0.lr", 0.05), "history[0].lr"),
    ("history updates", _set("history.0.updates", 3), "history[0].updates"),
    ("partial offset off a batch", _offset_off_a_batch, "inside a batch"),
    ("wall time negative", _set("totals.wall_s", -1e9), "wall time"),
    ("totals updates", _set("totals.updates", 99), "totals.updates"),
    ("a step record's lr", _set("steps.0.lr", 0.05), "steps[0].lr"),
    ("step records dropped", lambda d: d.__setitem__("steps", d["steps"][:-1]), "step records"),
    ("curve point moved", _set("evals.0.point", 1), "evals[0].point"),
]


@pytest.mark.parametrize("change,fragment", [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_a_derivable_field_edited_is_refused_in_one_line(tmp_path, change, fragment):
    ck = _checkpoint(tmp_path, 11)  # mid-epoch 2: history 1 epoch, partial offset 32
    _edit(ck, change)
    with pytest.raises(UserError) as info:
        _resume(ck)
    line = str(info.value)
    assert "\n" not in line and "disagrees" in line and fragment in line, line


@pytest.mark.parametrize("path,value", [("since.loss_sum", 1e308), ("partial.loss_sum", 0.0),
                                        ("history.0.train_loss", 0.001), ("history.0.metric", 1.0),
                                        ("totals.wall_s", 1e9)])
def test_an_underivable_number_edited_by_hand_is_refused(tmp_path, path, value):
    """Losses, metrics and wall times come from no formula: the digest of what bsadvisor wrote catches the edit."""
    ck = _checkpoint(tmp_path, 11)
    _edit(ck, _set(path, value), redigest=False)
    with pytest.raises(UserError, match="changed after bsadvisor wrote them"):
        _resume(ck)


def test_a_truncated_history_at_an_epoch_end_is_refused(tmp_path):
    ck = _checkpoint(tmp_path, 17)  # the end of epoch 2: two epochs of history, no partial epoch
    _edit(ck, lambda d: d.__setitem__("history", d["history"][:1]))
    with pytest.raises(UserError, match="totals.examples is 256 in the checkpoint, 128"):
        _resume(ck)


def test_a_checkpoint_without_its_digest_is_refused(tmp_path):
    ck = _checkpoint(tmp_path, 11)
    _edit(ck, lambda d: d.pop("digest"), redigest=False)
    with pytest.raises(UserError, match="no digest of its records .an older bsadvisor wrote it, or it was edited"):
        _resume(ck)


def test_adams_step_count_is_the_runs_update_count(tmp_path):
    """An Adam-family optimizer's per-parameter step count is derivable: the updates taken."""
    from bsadvisor.targets.target import Target

    def target():
        t = linreg(size=N)
        return Target(**{**t.__dict__, "optimizer": "adamw", "momentum": 0.9, "lr": 1e-3})

    plan = baseline_plan(lr=1e-3, batch_size=B, dataset_size=N, epochs=2, momentum=0.9, optimizer="adamw",
                         schedule="MultiStepLR(milestones=[1], gamma=0.5)")
    ck = tmp_path / "c.pt"
    train_plan(target(), plan, checkpoint=ck)

    def bump(doc):
        for state in doc["optimizer"]["state"].values():
            state["step"] = state["step"] + 3
    _edit(ck, bump)
    with pytest.raises(UserError, match="step count is 19 in the checkpoint, 16 updates"):
        train_plan(target(), plan, checkpoint=ck, resume=True)


def test_a_diverged_runs_checkpoint_resumes_as_diverged(tmp_path):
    """The update whose loss was not finite was recorded before it ran: the derivation includes it."""
    from bsadvisor.targets.target import Target

    def target():
        t = linreg(size=N)
        calls = [0]

        def loss(model, batch):
            calls[0] += 1
            value = t.loss_fn(model, batch)
            return value * float("inf") if calls[0] == 13 else value  # the 13th update: epoch 2, offset 32
        return Target(**{**t.__dict__, "loss_fn": loss})

    ck = tmp_path / "c.pt"
    first = train_plan(target(), _plan(), checkpoint=ck, stop_on_divergence=True).to_dict()
    assert first["diverged_at_epoch"] == 2
    again = train_plan(target(), _plan(), checkpoint=ck, resume=True, stop_on_divergence=True).to_dict()
    assert again["diverged_at_epoch"] == 2 and again["steps"] == first["steps"]
    assert repr(again["history"]) == repr(first["history"])  # NaN metric: compared as text
