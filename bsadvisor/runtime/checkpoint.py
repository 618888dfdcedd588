"""The checkpoint format of bsadvisor's loop (runtime/train.py): what is written, read back, and refused.

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

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from bsadvisor.core import checks
from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import write_atomic
from bsadvisor.core.plan import Plan
from bsadvisor.runtime.distributed import Dist
from bsadvisor.runtime.rng import get_state as get_rng_state, set_state as set_rng_state

if TYPE_CHECKING:
    from bsadvisor.runtime.train import _Training

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


def write(run: "_Training") -> None:
    """Rank 0 writes everything a resume needs, with every rank's random streams (no-op without a path)."""
    if run.checkpoint is None:
        return
    dist = run.dist
    rng = dist.all_gather_object(get_rng_state()) if dist.enabled else get_rng_state()
    if dist.is_main:
        _save(run.checkpoint, {
            "format": CHECKPOINT_FORMAT, "meta": run.meta, "model": run.target.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "sampler": run.sampler.state_dict(), "rng": rng, "history": run.result.history,
            "steps": run.result.steps, "evals": run.result.evals, "since": dict(run.since),
            "partial": dict(run.partial),
            "monitor": run.monitor.state_dict() if run.monitor is not None else None,
            "scaler": run.recipe.state_dict(), "skipped_steps": run.result.skipped_steps,  # fp16: the loss scale
            "totals": {"updates": run.updates, "examples": run.examples, "wall_s": run.wall}})


def restore(run: "_Training", doc: dict) -> None:
    """Load a checkpoint's contents (``read``) into the run, then check every field read (ValueError if not)."""
    result = run.result
    run.target.model.load_state_dict(doc["model"])
    run.optimizer.load_state_dict(doc["optimizer"])
    run.scheduler.load_state_dict(doc["scheduler"])
    run.sampler.load_state_dict(doc["sampler"])
    run.recipe.load_state_dict(doc.get("scaler"))  # the GradScaler's scale and growth tracker
    result.skipped_steps = [dict(rec) for rec in doc.get("skipped_steps", [])]
    rng = doc["rng"]
    set_rng_state(rng[run.dist.rank] if isinstance(rng, list) else rng)
    result.history = [dict(rec) for rec in doc["history"]]
    result.steps = [dict(rec) for rec in doc.get("steps", [])]
    result.evals = [dict(rec) for rec in doc.get("evals", [])]
    run.since = dict(doc.get("since") or {"loss_sum": 0.0, "seen": 0})
    run.partial = dict(doc.get("partial") or {})
    if run.monitor is not None and doc.get("monitor") is not None:
        run.monitor.load_state_dict(doc["monitor"])
        result.noise_trace = run.monitor.points
    totals = doc.get("totals") or {}
    run.updates, run.examples, run.wall = totals.get("updates", 0), totals.get("examples", 0), totals.get(
        "wall_s", 0.0)
    _check_restored(run, totals)


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
    import warnings

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


def _check_restored(run: "_Training", totals: Any) -> None:
    """Every field of a checkpoint that is read after the resume has the type it is read as.

    Its metadata can be right while a field is not (a hand-edited or damaged file): a ValueError
    here becomes the "damaged checkpoint" line, not a traceback epochs later.
    """
    result = run.result
    for name, fields in _RECORD_FIELDS.items():
        for i, rec in enumerate(getattr(result, name)):
            for key, kind in fields:
                if key not in rec or not _field_ok(rec[key], kind):
                    raise ValueError(f"{name}[{i}].{key} is {checks.show(rec.get(key))}")
    checks_ = (("partial", run.partial, (("epoch", "int"), ("offset", "int"), ("loss_sum", "num"), ("seen", "int"))),
               ("since", run.since, (("loss_sum", "num"), ("seen", "int"))),
               ("totals", totals, (("updates", "int"), ("examples", "int"), ("wall_s", "num"))))
    for name, doc, fields in checks_:
        if not isinstance(doc, dict):
            raise ValueError(f"{name} is {type(doc).__name__}")
        for key, kind in fields:
            if (doc or name == "since") and not _field_ok(doc.get(key, 0), kind):
                raise ValueError(f"{name}.{key} is {checks.show(doc.get(key))}")
    if run.partial and not run.partial["offset"] <= run.plan.dataset_size:
        raise ValueError(f"partial.offset {run.partial['offset']} is past the epoch's end")
    if len(result.history) > run.plan.full_epochs:
        raise ValueError(f"it holds {len(result.history)} epochs, the plan has {run.plan.full_epochs}")


__all__ = ["CHECKPOINT_FORMAT", "run_meta", "write", "restore", "read", "model_signature", "refuse_other_run"]
