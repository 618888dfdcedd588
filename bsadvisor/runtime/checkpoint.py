"""The checkpoint format of bsadvisor's loop (runtime/train.py): what is written, read back, and refused.

A checkpoint is the run's ``RunState.state_dict()`` (runtime/state.py) with the run's ``meta``
and a digest; this module writes it, reads it, checks it against the plan, the target and the
seed, and hands it to ``RunState.load_state_dict``. It knows nothing else of the training loop.

Checkpoints hold only tensors, plain containers, numbers and strings, and are read with
``torch.load(..., weights_only=True)``: a crafted checkpoint cannot run code (a pickle's
``__reduce__`` is refused, not called). A checkpoint records what identifies its run (the
``meta``: the plan's fingerprint, the seed, the settings, the model's architecture as module
types and weight shapes); resuming another run is refused with a line that names the
first difference (process count, architecture, schedule, the rest). Every field that is
read after a resume is checked to have the type it is read as, so a hand-edited or damaged
file is one line, not a traceback epochs later.

Under torchrun rank 0 writes the checkpoint (with every rank's RNG state) and, on resume,
reads it and sends it to the others, so no shared filesystem is needed.
"""
from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import write_atomic
from bsadvisor.core.plan import Plan
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.state import MAX_STEP_RECORDS, RunState

CHECKPOINT_FORMAT = "bsadvisor.checkpoint/2"


def run_meta(plan: Plan, name: str, seed: int, max_micro_batch: Optional[int], model: torch.nn.Module,
             evals: Optional[int], dist: Dist) -> dict:
    """What a checkpoint must match to be resumed: the run's name, seed and settings, the plan, the model.

    The plan's fingerprint holds its inputs as well as its stages: the original's stages are
    the same for any schedule at a fixed batch, its LR comes from the recorded inputs.
    """
    meta = {"name": name, "seed": seed, **plan.fingerprint(), "max_micro_batch": max_micro_batch,
            "model": model_signature(model)}
    if evals is not None:
        meta["evals"] = evals
    if dist.enabled:
        meta["world_size"] = dist.world_size  # the RNG streams are per rank
    return meta


def write(path: Optional[Path], meta: dict, state: RunState) -> None:
    """Rank 0 writes the run's ``state_dict()`` (every rank's random streams in it) with its ``meta`` and digest
    (no-op without a path; under torchrun every rank calls it)."""
    if path is None:
        return
    contents = state.state_dict()
    if state.dist.is_main:
        doc = {"format": CHECKPOINT_FORMAT, "meta": meta, **contents}
        doc["digest"] = digest(doc)
        _save(path, doc)


def restore(path: Optional[Path], state: RunState, doc: dict) -> None:
    """Load a checkpoint's contents (``read``) into the run's state, after checking every field it reads.

    A field of the wrong type is a ValueError (the "damaged" line). What the plan, the target's
    optimizer and the seed determine (the position, the update count, the scheduler, the sampler,
    the optimizer's settings, the step records, the history's settings) is re-derived and the
    checkpoint's must agree; what they cannot determine (losses, metrics, wall times, the RNG and
    monitor states) must be the numbers bsadvisor wrote (its ``digest``) and be sane. A
    disagreement is one UserError line naming the field (a hand-edited file is never resumed as is).
    """
    _check_types(state, doc)
    try:
        derived = _derive(state, doc)
        for check in SECTION_CHECKS:
            check(state, doc, derived)
        expected_groups = _groups(state.optimizer)  # the fresh optimizer at the resume position (seek in _derive)
        # the position, update count and scheduler as the plan derives them (the checks found the file's the same)
        totals = {"updates": derived.updates, "examples": derived.position, "wall_s": doc["totals"]["wall_s"]}
        state.load_state_dict({**doc, "scheduler": derived.scheduler, "totals": totals})
        _check_optimizer(state, doc, derived, expected_groups)
    except _Disagrees as exc:
        raise UserError(f"checkpoint {path} disagrees with the run it belongs to: {exc}; it was edited or "
                        "damaged, so it is not resumed: delete it to start over, or --overwrite") from None


def _save(path: Path, doc: dict) -> None:
    buf = io.BytesIO()
    torch.save(doc, buf)
    write_atomic(path, buf.getvalue())  # temp file + os.replace: a kill leaves the old one


def read(path: Optional[Path], dist: Dist) -> Optional[dict]:
    """Rank 0 reads the checkpoint (if there is one) and every rank gets its contents."""
    doc, error = None, None
    if dist.is_main and path is not None and path.is_file():
        try:
            doc = _load(path)
        except UserError as exc:
            error = str(exc)
    doc, error = dist.broadcast_object((doc, error))
    if error is not None:
        raise UserError(error)
    return doc


def _load(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain containers only, never code."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "unsupported global" in str(exc).lower():
            raise UserError(f"checkpoint {path} holds Python objects, not only tensors and numbers (a crafted file "
                            "or one from an older bsadvisor), so it was not loaded: loading it could run code; "
                            "delete it to start over") from None
        raise UserError(f"checkpoint {path} cannot be read safely (damaged, or not written by this bsadvisor: "
                        f"{type(exc).__name__}), so it was not loaded; delete it to start over") from None
    if isinstance(doc, dict) and doc.get("format") == "bsadvisor.checkpoint/1":
        raise UserError(f"checkpoint {path} was written by an older bsadvisor (checkpoints per epoch, before plans "
                        "in samples) and cannot be continued; delete it to start over, or --overwrite")
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT or not isinstance(doc.get("meta"), dict):
        raise UserError(f"checkpoint {path} is not a bsadvisor checkpoint; delete it to start over")
    return doc


def model_signature(model: torch.nn.Module) -> dict:
    """What identifies a model's architecture: its module types and its weights' names, shapes and dtypes."""
    return {"modules": [[name, type(m).__name__] for name, m in model.named_modules()],
            "state": [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
                      for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)]}


def _architecture_difference(saved: dict, now: dict) -> Optional[str]:
    """A short description of the first difference between two model signatures (None: the same)."""
    if saved == now or not saved:  # no signature: the meta comparison refuses it
        return None
    old_s, new_s = {k: (s, d) for k, s, d in saved.get("state", [])}, {k: (s, d) for k, s, d in now.get("state", [])}
    for k in new_s:
        if k in old_s and old_s[k] != new_s[k]:
            return (f"weight {k!r} is {old_s[k][0]} {old_s[k][1]} in the checkpoint, "
                    f"{new_s[k][0]} {new_s[k][1]} in the model")
    for k in old_s:
        if k not in new_s:
            return f"the checkpoint has a weight {k!r} the model lacks"
    for k in new_s:
        if k not in old_s:
            return f"the model has a weight {k!r} the checkpoint lacks"
    old_m, new_m = dict(map(tuple, saved.get("modules", []))), dict(map(tuple, now.get("modules", [])))
    for k, t in new_m.items():
        if old_m.get(k) != t:
            return f"module {k or '(root)'!r} is {old_m.get(k) or 'missing'} in the checkpoint, {t} in the model"
    return "its modules differ"


def refuse_other_run(saved: dict, meta: dict, path: Optional[Path], world_size: int) -> None:
    """A UserError unless the checkpoint's ``meta`` is this run's (process count, model, then the rest)."""
    if saved.get("world_size", 1) != meta.get("world_size", 1):
        raise UserError(f"checkpoint {path} was written by a {saved.get('world_size', 1)}-process "
                        f"run; resume it with the same number of processes (now {world_size})")
    change = _architecture_difference(saved.get("model") or {}, meta["model"])
    if change is not None:
        raise UserError(f"checkpoint {path} is from a different model ({change}); use another --out, "
                        "or --overwrite to start over")
    if saved.get("inputs") != meta.get("inputs"):
        raise UserError(f"checkpoint {path} was made with another schedule ({_schedule_difference(saved, meta)}); "
                        "resume with the same --schedule and options, or --overwrite to start over")
    if saved != meta:
        raise UserError(f"checkpoint {path} belongs to a different run (plan, seed or settings differ); "
                        "use another --out or drop --resume")


def _schedule_difference(saved: dict, meta: dict) -> str:
    """``schedule 'A' in the checkpoint, 'B' now``: the first recorded input that differs (short)."""
    old, new = saved.get("inputs"), meta.get("inputs") or {}
    if not isinstance(old, dict):
        return "the checkpoint records none: an older bsadvisor wrote it"
    for k in sorted(set(old) | set(new), key=lambda k: (k != "schedule", str(k))):
        if old.get(k) != new.get(k):
            return f"{k} {checks.show(old.get(k), 60)} in the checkpoint, {checks.show(new.get(k), 60)} now"
    return "its inputs differ"


#: The fields a checkpoint's records must hold, as (name, kind): "int" a whole number, "num" a number or None.
_RECORD_FIELDS = {
    "history": (("epoch", "int"), ("train_loss", "num"), ("metric", "num"), ("updates", "int"), ("examples", "int"),
                ("wall_s", "num"), ("batch_size", "int"), ("lr", "num"), ("momentum", "num")),
    "steps": (("samples", "int"), ("batch_size", "int"), ("lr", "num"), ("momentum", "num")),
    "evals": (("point", "int"), ("samples", "int"), ("updates", "int"), ("batch_size", "int"), ("train_loss", "num"),
              ("metric", "num"), ("wall_s", "num")),
}


def _field_ok(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int) and value >= 0
    return value is None or isinstance(value, (int, float))


def _check_types(state: RunState, doc: dict) -> None:
    """Every field of a checkpoint that is read after the resume has the type it is read as.

    Its metadata can be right while a field is not (a hand-edited or damaged file): a ValueError
    here becomes the "damaged checkpoint" line, not a traceback epochs later.
    """
    for name in ("history", "steps", "evals"):
        records = doc.get(name, [] if name != "history" else None)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError(f"{name} is not a list of records")
        for i, rec in enumerate(records):
            for key, kind in _RECORD_FIELDS[name]:
                if key not in rec or not _field_ok(rec[key], kind):
                    raise ValueError(f"{name}[{i}].{key} is {checks.show(rec.get(key))}")
    sections = (("partial", (("epoch", "int"), ("offset", "int"), ("loss_sum", "num"), ("seen", "int"))),
                ("since", (("loss_sum", "num"), ("seen", "int"))),
                ("totals", (("updates", "int"), ("examples", "int"), ("wall_s", "num"))))
    for name, fields in sections:
        section = doc.get(name) if name != "since" else (doc.get("since") or {"loss_sum": 0.0, "seen": 0})
        if not isinstance(section, dict) or (name == "totals" and not section):
            raise ValueError(f"{name} is {type(section).__name__}")
        for key, kind in fields:
            if section and not (key in section and _field_ok(section[key], kind)):
                raise ValueError(f"{name}.{key} is {checks.show(section.get(key))}")
    for name in ("scheduler", "sampler", "optimizer"):
        if not isinstance(doc.get(name), dict):
            raise ValueError(f"{name} is {type(doc.get(name)).__name__}")
    partial = doc.get("partial")
    if partial and not partial["offset"] <= state.plan.dataset_size:
        raise ValueError(f"partial.offset {partial['offset']} is past the epoch's end")
    if len(doc["history"]) > state.plan.full_epochs:
        raise ValueError(f"it holds {len(doc['history'])} epochs, the plan has {state.plan.full_epochs}")


class _Disagrees(Exception):
    """A checkpoint's field disagrees with what the plan, the target and the seed say it must be."""


@dataclass(frozen=True)
class _Derived:
    """What the plan, the target and the seed say about a checkpoint of this run (``_derive``)."""

    position: int               # samples trained: the epochs the history holds and the partial epoch's offset
    updates: int                # updates the plan takes to get there
    epoch_updates: tuple        # updates at the end of each epoch the history holds
    steps: tuple                # the per-update records train.py keeps (every stride-th update)
    scheduler: dict             # the scheduler's state there (BatchSizeScheduler.state_dict)


def _derive(state: RunState, doc: dict) -> _Derived:
    """The position, update counts and step records of the run the checkpoint's history and partial epoch say.

    Walks the plan's batches (the sampler's spans) from the start: O(updates), as the training itself.
    A position that is not at the end of a batch is refused.
    """
    plan, n, history, partial = state.plan, state.plan.dataset_size, doc["history"], doc.get("partial") or {}
    diverged = bool(history) and bool(history[-1].get("diverged"))
    if partial and (diverged or partial["epoch"] != len(history)):
        raise _Disagrees(f"partial.epoch is {partial['epoch']} but the history holds {len(history)} epoch(s) "
                         "(a partial epoch is the one after them)")
    if diverged:  # the run stopped at the update whose loss was not finite
        position = history[-1]["examples"]
    elif partial:
        position = partial["epoch"] * n + partial["offset"]
    else:
        position = min(len(history) * n, plan.total_samples)
    stride = max(1, plan.updates // MAX_STEP_RECORDS)
    ratios = state.scheduler.state_dict()["ratios"]  # the target's optimizer's groups, relative to the first
    lr_ratio = ratios[0] if ratios else 1.0
    group = state.optimizer.param_groups[0]
    has_momentum = "betas" in group or "momentum" in group
    def record(start: int, size: int) -> dict:
        s = plan.at_sample(start)
        return {"samples": start, "batch_size": size, "lr": s.lr * lr_ratio,
                "momentum": s.momentum if has_momentum else 0.0}

    # an update the GradScaler skipped (fp16) moved the plan and the scheduler on but is no update (train.py)
    skipped = {rec.get("samples") for rec in doc.get("skipped_steps") or [] if isinstance(rec, dict)}
    updates, attempts, ends, steps = 0, 0, [], []
    for epoch in range(plan.full_epochs):
        first = epoch * n
        if first > position or first == position and not diverged:
            break
        for a, b in state.sampler.spans(epoch):
            if first + a >= position:
                # the update whose loss was not finite was recorded before it ran (train._before_update)
                if diverged and first + a == position and updates % stride == 0:
                    steps.append(record(first + a, b - a))
                break
            if first + b > position:
                raise _Disagrees(f"the run's position {position:,} (from its history and partial epoch) is inside "
                                 f"a batch ({first + a:,} to {first + b:,}), not at the end of one")
            if updates % stride == 0:
                steps.append(record(first + a, b - a))
            attempts += 1
            updates += first + a not in skipped
        ends.append(updates)
    state.scheduler.seek(position)  # the fresh optimizer's groups at the position: what the loaded ones must be
    scheduler = {**state.scheduler.state_dict(), "last_step": attempts}
    return _Derived(position, updates, tuple(ends), tuple(steps), scheduler)


def _same(name: str, saved: Any, derived: Any, source: str) -> None:
    if saved != derived or type(saved) is not type(derived) and not (
            isinstance(saved, (int, float)) and isinstance(derived, (int, float)) and not isinstance(saved, bool)):
        raise _Disagrees(f"{name} is {checks.show(saved, 60)} in the checkpoint, {checks.show(derived, 60)} {source}")


def _check_digest(state: RunState, doc: dict, derived: _Derived) -> None:
    """The numbers nothing re-derives (losses, metrics, wall times, RNG and monitor states) are bsadvisor's own."""
    if "digest" not in doc:
        raise _Disagrees("it has no digest of its records (an older bsadvisor wrote it, or it was edited)")
    if doc.get("digest") != digest(doc):
        raise _Disagrees("its records were changed after bsadvisor wrote them (the digest of its losses, metrics, "
                         "wall times and random states does not match)")


def _check_totals(state: RunState, doc: dict, derived: _Derived) -> None:
    totals = doc["totals"]
    _same("totals.examples", totals["examples"], derived.position, "from its history and partial epoch")
    _same("totals.updates", totals["updates"], derived.updates, "from the plan")
    walls = [r["wall_s"] for r in doc["history"] + doc.get("evals", [])] + [totals["wall_s"]]
    for w in walls:
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise _Disagrees(f"a wall time is {checks.show(w)} (it must be a finite number ≥ 0)")
    if totals["wall_s"] < max(walls):
        raise _Disagrees(f"totals.wall_s {totals['wall_s']:g} is below a wall time it recorded earlier "
                         f"({max(walls):g})")


def _check_history(state: RunState, doc: dict, derived: _Derived) -> None:
    """Each epoch's record: its number, the plan's setting, the updates and examples to its end; finite sums."""
    plan, n = state.plan, state.plan.dataset_size
    for i, rec in enumerate(doc["history"]):
        setting = plan.at(i)
        last_diverged = rec.get("diverged") and i == len(doc["history"]) - 1
        expect = {"epoch": i + 1, "batch_size": setting.batch_size, "lr": setting.lr, "momentum": setting.momentum,
                  "examples": derived.position if last_diverged else min((i + 1) * n, plan.total_samples),
                  "updates": derived.updates if last_diverged else derived.epoch_updates[i]}
        for key, value in expect.items():
            _same(f"history[{i}].{key}", rec[key], value, "from the plan")
        if rec.get("diverged") and not last_diverged:
            raise _Disagrees(f"history[{i}] is marked diverged but the run went on after it")
        if not last_diverged and not (rec["train_loss"] is not None and math.isfinite(rec["train_loss"])):
            raise _Disagrees(f"history[{i}].train_loss is {checks.show(rec['train_loss'])} in an epoch that finished")


def _check_steps(state: RunState, doc: dict, derived: _Derived) -> None:
    """The per-update records are the plan's batches, LRs and momenta at their positions: re-derived whole."""
    steps = doc.get("steps", [])
    if len(steps) != len(derived.steps):
        raise _Disagrees(f"it holds {len(steps)} step records, the plan gives {len(derived.steps)} to its position")
    for i, (rec, expect) in enumerate(zip(steps, derived.steps)):
        for key, value in expect.items():
            _same(f"steps[{i}].{key}", rec[key], value, "from the plan")


def _check_partial_and_since(state: RunState, doc: dict, derived: _Derived) -> None:
    """The partial epoch's sums cover its offset; the curve's running sum covers the samples since its last point."""
    partial, since = doc.get("partial") or {}, doc.get("since") or {"loss_sum": 0.0, "seen": 0}
    if partial:
        _same("partial.seen", partial["seen"], partial["offset"], "(its offset)")
    evals = doc.get("evals", [])
    _same("since.seen", since["seen"], derived.position - (evals[-1]["samples"] if evals else 0),
          "from its position and last curve point")
    for name, sums in (("partial", partial), ("since", since)):
        if sums and not math.isfinite(sums["loss_sum"]):
            raise _Disagrees(f"{name}.loss_sum is {checks.show(sums['loss_sum'])}, no sum of finite losses")


def _check_evals(state: RunState, doc: dict, derived: _Derived) -> None:
    """The curve's points: where they were due (eval_points), reached by then, with the plan's batch there."""
    evals, due = doc.get("evals", []), state.eval_at
    passed = sum(1 for p in due if p < derived.position)
    if len(evals) > len(due) or len(evals) < passed:
        raise _Disagrees(f"it holds {len(evals)} curve point(s), the run has passed {passed}")
    for i, rec in enumerate(evals):
        _same(f"evals[{i}].point", rec["point"], due[i], "from --evals")
        if not due[i] <= rec["samples"] <= derived.position:
            raise _Disagrees(f"evals[{i}].samples is {rec['samples']}, not between its point {due[i]} and the run's "
                             f"position {derived.position}")
        _same(f"evals[{i}].batch_size", rec["batch_size"], state.plan.at_sample(max(rec["samples"] - 1, 0)).batch_size,
              "from the plan")


def _check_scheduler(state: RunState, doc: dict, derived: _Derived) -> None:
    """The scheduler's state is the plan's at the position, with the target's optimizer's group ratios."""
    saved, now = doc["scheduler"], derived.scheduler
    for key in sorted(set(saved) | set(now)):
        if key == "plan":
            if not isinstance(saved.get("plan"), dict) or saved["plan"].get("stages") != now["plan"]["stages"]:
                raise _Disagrees("scheduler.plan is not the run's plan")
            continue
        _same(f"scheduler.{key}", saved.get(key), now.get(key), "from the plan and the target's optimizer")


def _check_sampler(state: RunState, doc: dict, derived: _Derived) -> None:
    """The sampler's state: the run's seed and the epoch in progress (it walks spans; no offset of its own)."""
    history, partial = doc["history"], doc.get("partial") or {}
    epoch = partial["epoch"] if partial else max(len(history) - 1, 0)
    expect = {"epoch": epoch, "seed": state.seed, "advance": False, "offset": 0}
    saved = doc["sampler"]
    for key in sorted(set(saved) | set(expect)):
        _same(f"sampler.{key}", saved.get(key), expect.get(key), "for this run and seed")


def _groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The optimizer's settings per param group (everything but the parameters)."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def _check_optimizer(state: RunState, doc: dict, derived: _Derived, expected: list[dict]) -> None:
    """After loading: every group's settings are the target's optimizer's (LR and momentum: the plan's there),
    and an Adam-style step count is the run's update count."""
    loaded = _groups(state.optimizer)
    if len(loaded) != len(expected):
        raise _Disagrees(f"the optimizer has {len(loaded)} param groups in the checkpoint, {len(expected)} in the "
                         "target's")
    for i, (got, want) in enumerate(zip(loaded, expected)):
        for key in sorted(set(got) | set(want)):
            _same(f"optimizer.param_groups[{i}].{key}", got.get(key), want.get(key),
                  "for the target's optimizer at this point of the plan")
    for kept in state.optimizer.state.values():
        step = kept.get("step") if isinstance(kept, dict) else None
        if step is not None and float(step) != derived.updates:
            raise _Disagrees(f"the optimizer's step count is {float(step):g} in the checkpoint, {derived.updates} "
                             "updates from the plan")


#: The checks of a checkpoint's sections against the plan, the target and the seed, in order (each raises
#: _Disagrees). A new section of the checkpoint gets its own function here.
SECTION_CHECKS = (_check_digest, _check_totals, _check_history, _check_steps, _check_partial_and_since,
                  _check_evals, _check_scheduler, _check_sampler)

#: The sections a digest covers: everything but the weights and the optimizer's tensors (their settings
#: are checked against the target's optimizer) and the digest itself.
_UNDIGESTED = ("model", "optimizer", "digest")


def digest(doc: dict) -> str:
    """SHA-256 of a checkpoint's sections but the weights and the optimizer: a hand edit of a number is seen."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                feed(k)
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for v in x:
                feed(v)
            h.update(b"]")
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed({k: v for k, v in doc.items() if k not in _UNDIGESTED})
    return h.hexdigest()


__all__ = ["CHECKPOINT_FORMAT", "run_meta", "write", "restore", "read", "model_signature", "refuse_other_run"]
