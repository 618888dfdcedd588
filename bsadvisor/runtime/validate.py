"""Validate a batch-growth plan: train it next to the original LR schedule and compare.

Smith et al. (arXiv 1711.00489) claim that growing the batch at a fixed LR trains as
well as decaying the LR at a fixed batch, with fewer parameter updates. This file checks
that claim on the user's own model: every run is ``train.train_plan`` on a Plan (the
original schedule at B0 is a Plan too), over the same seeds, from the same initial
weights. The verdict compares the target's metric on ``eval_dataset``, paired by seed
(core/verdict.py, docs/concepts.md eqs. 21–23):

    d_s = metric(plan, s) − metric(original, s);   d̄ ± t_{1−α_k, n−1}·sd/√n at look k
    accepted ⇔ lo > −δ;   rejected ⇔ hi < −δ;   inconclusive otherwise (exit 3)
    (one seed: indicative only, exit 3; look k spends α_k = 0.05·6/(π²k²) per side, so the
    interval holds at every --resume look: eqs. 28–30)

δ = --tolerance (0.005 by default, or a percentage of the original's metric). Without an
eval metric the negated final training loss stands in for it. A metric that is not
finite (a metric_fn that returns NaN, or a candidate run whose training loss diverged)
rejects the plan and the verdict says why; NaN and infinity are written as null in every
output.

The report of the results (Markdown, plots, the CLI's curves) is runtime/report.py.
"""
from __future__ import annotations

import math
import os
import re
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from bsadvisor.core import checks

from bsadvisor.core.baseline import baseline_of
from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import (MANIFEST_NAME, FolderLock, _schema_of, inside_without_links, json_safe, own_files,
                                   read_json, read_manifest, remove_orphan_temps, write_manifest)
from bsadvisor.core.plan import Plan, Stage
from bsadvisor.core.recommend import recommend
from bsadvisor.core.rounding import Rounding
from bsadvisor.core.spans import temperature_model
from bsadvisor.core.validate_options import ValidateOptions
from bsadvisor.core.verdict import ACCEPTED, paired_verdict, parse_margin
from bsadvisor.targets.target import batchnorm_layers

#: 1.1: the paired verdict (verdict.status, interval, paired, margin, seeds_suggested, variants) and each
#: seed's ``evals`` (the curve at --evals points); every /1 field is still there. 1.2: the interval
#: spends α across looks, valid at every look (verdict.method, verdict.looks, verdict.look_seeds,
#: verdict.spending_look, verdict.too_close), and one seed's status is "indicative".
VALIDATION_SCHEMA = "bsadvisor.validation/1.2"
#: Fewest updates between two mid-epoch checkpoints by default (short epochs: only at their end).
MIN_CHECKPOINT_EVERY = 50


@dataclass
class RunSpec:
    """One run to train: a name, the plan it follows and why it is there."""

    name: str
    plan: Plan
    description: str = ""


# -- which runs --------------------------------------------------------------------------
def _rounding(plan: Plan, world_size: Optional[int] = None, micro_batch: Optional[int] = None) -> Rounding:
    """The plan's batch granularity (core/rounding.py), optionally for another device layout."""
    options = plan.options
    return Rounding(options.round_to, world_size if world_size is not None else options.world_size,
                    micro_batch if world_size is not None else options.micro_batch)


def default_hybrid_cap(plan: Plan) -> int:
    """A quarter of the plan's largest batch, rounded down to its rounding granularity.

    The hybrid (the paper's practical plan) grows the batch to this cap, then decays the
    LR: a cap well below the plan's peak shows whether the tail of the growth matters.
    """
    return _rounding(plan).floor(max(plan.stage_batch_sizes()) // 4)


def fit_to_devices(plan: Plan, world_size: int, micro_batch: Optional[int]) -> tuple[Plan, Optional[str]]:
    """The plan with every grown batch split evenly over ``world_size`` devices (core/rounding.py).

    Each batch other than B0 (the user's own, kept) must be world size × k accumulation
    steps × micro-batch (≤ ``micro_batch``). A plan that is not is converted again from
    its recorded inputs with that rounding; the second value then says what changed.
    """
    rounding = _rounding(plan, world_size, micro_batch)
    missing = plan.missing_run()
    b0 = None if "batch_size" in missing else plan.options.batch_size
    if all(b == b0 or rounding.nearest(b) == b for b in plan.stage_batch_sizes()):
        return plan, None
    if missing:
        raise UserError(f"the plan's batches {plan.stage_batch_sizes()} do not split evenly over {world_size} processes and "
                        f"it does not record its inputs; regenerate it with convert-schedule --world-size {world_size}")
    fitted = reconvert(plan, world_size=world_size, micro_batch=micro_batch)
    before, after = plan.stage_batch_sizes(), fitted.stage_batch_sizes()
    return fitted, (f"{world_size} processes: batches rounded to {rounding.describe()}: "
                    f"{' → '.join(map(str, before))} became {' → '.join(map(str, after))}")


def reconvert(plan: Plan, **changes: Any) -> Plan:
    """The plan converted again from the options it records, with ``changes``, through ``recommend`` (the one
    conversion path): capped at K × its recorded noise model (eq. 16) and annotated with it (B_noise and
    efficiency per stage) when it has one. A plan spread over several devices with neither a device cap nor a
    probe keeps its batch cap as the device cap (recommend scales only a measured one by the devices)."""
    model = plan.noise_model
    changes["noise_model"] = None  # given to recommend as the noise trace, which sets it
    options = replace(plan.options, **changes)
    if options.world_size > 1 and options.max_batch is None:
        cap = plan.cap or {}
        options = replace(options, max_batch=cap.get("max_fraction") or cap.get("run_length")
                          or cap.get("batch_size"))
    k = plan.noise_cap  # a noise cap needs the model it was taken from (recorded since plan/2)
    return recommend(options, noise_trace=model, noise_cap=k if model is not None else None)


def build_runs(plan: Plan, options: Optional[ValidateOptions] = None) -> list[RunSpec]:
    """original + plan, and with ``options.variants`` the hybrid at ``options.hybrid_cap`` and the
    increased-LR plan (``options.increase_lr``)."""
    options = options if options is not None else ValidateOptions()
    hybrid_cap, increase_lr = options.hybrid_cap, options.increase_lr
    runs = [RunSpec("original", baseline_of(plan), "the LR schedule at the fixed batch B0"),
            RunSpec("plan", plan, "batch growth (Smith et al. 2018)")]
    if options.variants:
        b0 = plan.options.batch_size
        if hybrid_cap is not None and not b0 < hybrid_cap <= plan.dataset_size:
            raise UserError(f"--hybrid-cap {hybrid_cap} must be above the starting batch {b0} (else the hybrid is the "
                            f"original schedule) and at most N = {plan.dataset_size}")
        cap = default_hybrid_cap(plan) if hybrid_cap is None else hybrid_cap
        if cap > b0:
            runs.append(RunSpec(f"hybrid-{cap}", reconvert(plan, max_batch=cap),
                                f"grow the batch up to {cap}, then decay the LR"))
        if increase_lr > 1:
            k = increase_lr
            runs.append(RunSpec(f"increased-lr-x{k:g}", reconvert(plan, increase_lr=k),
                                f"start at {k:g}× the LR and {k:g}× the batch, then grow (§5.2 of the paper)"))
    return runs


def constant_plan(plan: Plan, *, lr: Optional[float] = None, batch_size: Optional[int] = None) -> Plan:
    """One stage at the schedule's starting LR and batch: the control without any schedule."""
    first = plan.stages[0]
    stage = Stage(0, plan.total_samples, batch_size or first.batch_size, first.lr if lr is None else lr,
                  first.momentum, temperature=1.0, phase="constant")
    # the plan's inputs (a copy), and nothing else of it
    return replace(plan.with_inputs(), stages=[stage], baseline_updates=0, cap={}, warnings=[], notes=[], probe=None)


# -- statistics and verdict -----------------------------------------------------------
def _mean_sd(xs: list[float]) -> tuple[Optional[float], float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, 0.0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(seed_results: list[dict]) -> dict:
    """Mean ± sd over seeds of the final figures of one run."""
    m, msd = _mean_sd([r["metric"] for r in seed_results])
    loss, lsd = _mean_sd([r["final_train_loss"] for r in seed_results])
    wall, wsd = _mean_sd([r["wall_s"] for r in seed_results])
    return {"metric_mean": m, "metric_sd": msd, "final_train_loss_mean": loss, "final_train_loss_sd": lsd,
            "updates": seed_results[0]["updates"], "examples": seed_results[0]["examples"],
            "wall_s_mean": wall, "wall_s_sd": wsd}


def finite(x: Any) -> bool:
    """A number that is not NaN or infinite (None, a string: False)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def _why_notfinite(name: str, run: dict) -> str:
    """``plan's training loss diverged (seed 0, epoch 3)`` or ``plan's metric_fn gave nan``."""
    div = [(s["seed"], s["diverged_at_epoch"]) for s in run.get("seeds", []) if s.get("diverged_at_epoch")]
    if div:
        return f"{name}'s training loss diverged (" + "; ".join(f"seed {sd}, epoch {e}" for sd, e in div) + ")"
    bad = [s["seed"] for s in run.get("seeds", []) if not finite(s.get("metric"))]
    return f"{name}'s metric_fn gave no finite value" + (f" (seed {', '.join(map(str, bad))})" if bad else "")


def verdict(runs: dict, tolerance: Any = None, reference: str = "original", candidate: str = "plan",
            earlier: Optional[list[int]] = None) -> dict:
    """The paired verdict on ``candidate`` against ``reference`` (core/verdict.py, concepts eqs. 21–23, 28–30).

    Each seed's metric difference d_s = candidate − reference (same seed: same initial
    weights and data order), their mean and 90 % interval at this look decide (α spent across
    looks, eqs. 28–29): accepted when the interval is above −δ, rejected when below,
    inconclusive otherwise (with the seeds that give an 80 % chance of settling it at the next
    look), indicative with one seed. ``tolerance``: δ as a number, a text such as "1%", a
    ``Margin`` or None (the default 0.005). Every other run gets its own paired verdict in
    ``variants`` (they do not decide the exit code). A metric that is not finite (NaN from
    metric_fn, or a run whose loss diverged) rejects the candidate; ``reason`` then says
    which run and why (it is None otherwise). ``earlier``: the seed counts of the verdicts taken
    before on these runs (:func:`earlier_looks`); ``looks`` counts them with this one, and the k-th
    look at two seeds or more (``spending_look``) spends α_k = α·6/(π²k²) per side of α = 0.05
    (``method``), so the interval holds however many looks there are.
    """
    margin = parse_margin(tolerance)
    ref = runs[reference]
    looks = count_looks(earlier or [], len(ref["seeds"]))  # before judging: the look sets the α it spends

    def judge(name: str) -> dict:
        v = paired_verdict([s["metric"] for s in runs[name]["seeds"]], [s["metric"] for s in ref["seeds"]], margin,
                           look=looks["spending_look"])
        if v["reason"] is not None:
            bad = [n for n in (reference, name) if not all(finite(s["metric"]) for s in runs[n]["seeds"])]
            v["reason"] = ("the metric is not finite: " + "; ".join(_why_notfinite(n, runs[n]) for n in bad)
                           if bad else "the margin is not finite (the original's metric is not)")
        return v

    main = judge(candidate)
    rs, cs = ref["summary"], runs[candidate]["summary"]
    out = {"status": main["status"], "accepted": main["status"] == ACCEPTED, "reference": reference,
           "candidate": candidate, **{k: main[k] for k in ("reason", "difference", "interval", "paired", "sd",
                                                           "margin", "margin_rule", "confidence",
                                                           "method", "seeds_suggested", "too_close")},
           **looks,
           "update_ratio": rs["updates"] / cs["updates"] if cs["updates"] else None,
           "wall_ratio": (rs["wall_s_mean"] / cs["wall_s_mean"]) if finite(rs["wall_s_mean"]) and
           finite(cs["wall_s_mean"]) and cs["wall_s_mean"] else None,
           "variants": {}, "within_tolerance": {}}
    for name in runs:
        if name in (reference, candidate):
            continue
        v = judge(name)
        out["variants"][name] = {k: v[k] for k in ("status", "reason", "difference", "interval", "paired",
                                                  "seeds_suggested", "too_close")}
    out["within_tolerance"] = {candidate: out["accepted"],
                               **{n: v["status"] == ACCEPTED for n, v in out["variants"].items()}}
    return out


def count_looks(earlier: list[int], seeds: int) -> dict:
    """``looks`` (how many verdicts these runs have had, this one included), ``look_seeds`` (the seeds
    at each) and ``spending_look``: the k whose α_k this verdict spends (eq. 28), counting only the looks
    at two seeds or more (one seed has no interval, so it cannot miss and spends nothing; at least 1).
    A verdict on as many seeds as the last one (a resume that added none) is the same look."""
    looks = list(earlier) if earlier and earlier[-1] == seeds else [*earlier, seeds]
    return {"looks": len(looks), "look_seeds": looks, "spending_look": max(1, sum(k >= 2 for k in looks))}


def earlier_looks(out: Optional[Path]) -> list[int]:
    """The seed counts of the verdicts an earlier run in ``out`` took, from its results.json (``look_seeds``;
    a /1 or /1.1 file: one look at its ``seeds``). [] without one, or when the file cannot be read: the
    count sets the α this look spends (eq. 28), never a reason to refuse a resume."""
    if out is None:
        return []
    try:
        doc = read_json(Path(out) / "results.json")
        seen = doc["verdict"].get("look_seeds")
        if seen is None:
            seen = [doc["seeds"]]
        if isinstance(seen, list) and seen and all(type(k) is int and 0 < k <= 10 ** 6 for k in seen):
            return seen
    except (UserError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    return []


# -- the output folder ------------------------------------------------------------------
#: Every file validate writes in --out besides its checkpoints (noise.png with the noise monitor and matplotlib).
OUTPUT_FILES = ("results.json", "report.md", "curves_epoch.png", "curves_updates.png", "curves_wall.png",
                "noise.png")
CHECKPOINTS = "checkpoints"
#: A checkpoint's name (``NAME-seedK.pt``): only to recognise a run written before manifests (legacy_files).
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]+-seed[0-9]+\.pt")


def checkpoint_names(specs: list[RunSpec], seeds: int) -> list[str]:
    """The checkpoints (paths relative to --out) a validation of ``specs`` over ``seeds`` seeds writes."""
    return [f"{CHECKPOINTS}/{spec.name}-seed{seed}.pt" for spec in specs for seed in range(seeds)]


def _regular(path: Optional[Path]) -> bool:
    """A regular file, not a link (so never a file outside --out)."""
    try:
        return path is not None and not path.is_symlink() and path.is_file()
    except OSError:
        return False


def _legacy_files(out: Path) -> list[Path]:
    """A run written before manifests (none in ``out``): its checkpoints (checkpoints/NAME-seedK.pt, a
    killed run leaves only those) and, when results.json is a validation document, the files of
    validate's names (OUTPUT_FILES)."""
    if (out / MANIFEST_NAME).exists():
        return []
    found = []
    if _regular(out / "results.json") and _schema_of(out / "results.json").startswith("bsadvisor.validation/"):
        found = [out / n for n in OUTPUT_FILES if _regular(out / n)]
    ck = inside_without_links(out, CHECKPOINTS)
    if ck is not None and ck.is_dir():
        found += sorted(p for p in ck.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name) and _regular(p))
    return found


def earlier_results(out: Path) -> list[Path]:
    """The files an earlier validate run wrote in ``out`` (results, report, plots, checkpoints): those its
    manifest names (core.fileio.own_files), or a pre-manifest run's (continued with --resume; --overwrite
    deletes only what a manifest names)."""
    out = Path(out)
    return own_files(out) or _legacy_files(out)


def _foreign(out: Path, names) -> list[str]:
    """Which of ``names`` (relative to ``out``) exist but are not an earlier run's: the user's own files."""
    ours = set(earlier_results(out))
    found = []
    for name in names:
        path = out / name
        try:
            there = path.exists() or path.is_symlink()
        except OSError:
            there = True
        if there and path not in ours:
            found.append(name)
    return found


def _refuse_foreign(out: Path, names: list[str]) -> None:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise UserError(f"--out {out} holds {shown}, which validate would write but did not write there (its "
                    f"{MANIFEST_NAME} does not name it): bsadvisor never replaces a file of yours; move it away or "
                    "choose another --out")


def check_out(out: Optional[Path], *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before any work, an --out that cannot be used (read-only: changes nothing).

    ``--out`` must be a folder (or not exist yet, under a writable folder). A folder that
    holds an earlier run's results is used only with ``--resume`` (continue it) or
    ``--overwrite`` (replace it), so no result is lost by accident. The one rule of what
    validate may replace or delete there: the files its manifest (core.fileio.MANIFEST_NAME)
    names, never a file of yours of the same name (refused, whatever the flags) and never
    through a link (a ``checkpoints`` link out of --out is refused).
    """
    if out is None:
        if resume or overwrite:
            raise UserError(f"{'--resume' if resume else '--overwrite'} needs --out DIR (the folder of the run)")
        return
    if resume and overwrite:
        raise UserError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
    out = Path(out)
    try:
        out.exists(), (out / CHECKPOINTS).exists()
    except (OSError, ValueError) as exc:  # a name too long, a folder on the way we may not enter
        raise UserError(f"cannot use --out {out}: {getattr(exc, 'strerror', None) or exc}; choose another --out") from None
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give --out a folder (it will hold results.json, "
                        "report.md, plots and checkpoints)")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create --out {out}: {existing} is a file; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to --out {out}: {existing} is not writable; choose another --out")
    ck = out / CHECKPOINTS
    if ck.is_symlink():
        raise UserError(f"--out {out} holds a link {ck.name!r} where validate keeps its checkpoints folder: "
                        "bsadvisor writes and deletes only inside --out, never through a link; remove the link or "
                        "choose another --out")
    if ck.exists() and not ck.is_dir():
        raise UserError(f"--out {out} holds a file {ck.name!r} where validate keeps its checkpoints folder; move it "
                        "away or choose another --out")
    if not out.is_dir():
        return
    if not (resume or overwrite):
        old = earlier_results(out)
        if old:
            more = f" and {len(old) - 1} more" if len(old) > 1 else ""
            raise UserError(f"--out {out} holds an earlier run's results ({old[0].relative_to(out)}{more}); add --resume "
                            "to continue that run, --overwrite to replace it, or choose another --out")
    foreign = _foreign(out, OUTPUT_FILES)
    if foreign:
        _refuse_foreign(out, foreign)
    legacy = _legacy_files(out) if overwrite else []
    if legacy:  # no manifest names them: nothing proves they are not the user's
        raise UserError(f"--out {out} holds {legacy[0].relative_to(out)}"
                        + (f" and {len(legacy) - 1} more" if len(legacy) > 1 else "")
                        + f", from a run without a {MANIFEST_NAME} (an older bsadvisor): --overwrite deletes "
                        "only files a manifest names; delete them yourself, continue with --resume, or "
                        "choose another --out")


@contextmanager
def claim_out(out: Path, *, resume: bool = False, overwrite: bool = False, checkpoints: tuple[str, ...] = ()):
    """Hold ``out`` for this run: create it, lock it (a second run into it is refused), check that no
    file of the user's has a name the run writes (``checkpoints``: the run's checkpoints, relative to
    ``out``; with ``resume`` an existing one is read and checked as a checkpoint of this run), then,
    with ``overwrite``, delete the earlier run's files (its manifest's), record this run's files in
    the manifest before any is written, and remove temporary files a killed run left behind."""
    out = Path(out)
    check_out(out, resume=resume, overwrite=overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {out}: {exc.strerror or exc}; choose another --out") from None
    with FolderLock(out, "--out", "bsadvisor validate"):
        check_out(out, resume=resume, overwrite=overwrite)  # a run that held the lock may have written results
        foreign = [n for n in _foreign(out, checkpoints) if not (resume and _regular(out / n))]
        if foreign:
            _refuse_foreign(out, foreign)
        before = read_manifest(out) if (out / MANIFEST_NAME).exists() else None
        names = sorted(set(OUTPUT_FILES) | set(checkpoints) | (before or set()))
        stamps = _stamps(out, names)
        kept = set()
        if overwrite:
            for f in own_files(out):
                f.unlink()
        else:  # --resume, or a folder with nothing of an earlier run: its files stay ours
            kept = {str(p.relative_to(out)) for p in earlier_results(out)} | read_manifest(out)
        write_manifest(out, kept | set(OUTPUT_FILES) | set(checkpoints))  # before any is written
        remove_orphan_temps(out)
        remove_orphan_temps(out / CHECKPOINTS)
        try:
            yield out
        finally:  # the record keeps only what was written (a plot matplotlib could not draw is not ours)
            try:
                unchanged = _stamps(out, names) == stamps
                if unchanged and before is None:  # refused before writing: as it was
                    (out / MANIFEST_NAME).unlink()
                elif unchanged:
                    write_manifest(out, before)
                else:
                    write_manifest(out, [n for n in read_manifest(out) if _regular(out / n)])
            except (UserError, OSError):  # a full disk: the larger record stays, naming only validate's own names
                pass


def _stamps(out: Path, names) -> dict:
    """(size, mtime) of each of ``names`` there is in ``out``: whether a run wrote or deleted any."""
    found = {}
    for n in names:
        try:
            st = (out / n).lstat()
            found[n] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass
    return found


def batchnorm_warning(model) -> Optional[str]:
    """A warning for a model with BatchNorm: batch statistics change with the batch (None without)."""
    names = batchnorm_layers(model)
    if not names:
        return None
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"the model has BatchNorm layers ({shown}): their statistics depend on the batch, so a larger batch, "
            "and gradient accumulation above --max-micro-batch, change more than the gradient noise; "
            "the comparison includes that effect (keep a fixed per-device batch, ghost batch norm, to avoid it)")


# -- the runs -------------------------------------------------------------------------
def _check_runs(target, specs: list[RunSpec], resume: bool, out: Optional[Path]) -> None:
    """What must hold before anything trains: --resume has a folder, every plan fits the target's data."""
    if resume and out is None:
        raise UserError("--resume needs --out DIR (the checkpoints live there)")
    for spec in specs:
        if spec.plan.dataset_size != target.dataset_size:
            raise UserError(f"the {spec.name} plan was made for {spec.plan.dataset_size} training examples but "
                            f"{target.name} has {target.dataset_size}; re-run convert-schedule for this target")


def run_validation(target, specs: list[RunSpec], options: Optional[ValidateOptions] = None, *, progress=None,
                   dist=None, device=None, warnings: Optional[list[str]] = None, **fields) -> dict:
    """Train every run for every seed; return the results document (schema bsadvisor.validation/1.2).

    ``options``: a :class:`ValidateOptions` (None: the defaults); ``fields`` are its fields as
    keywords (``run_validation(target, specs, seeds=2)``), over ``options`` when both are given.
    ``progress`` is an optional rich ``Progress``; one bar per (run, seed). ``dist``: a
    torchrun job (bsadvisor.runtime.distributed.Dist); every rank trains its share and returns
    the same document; only rank 0 writes checkpoints. ``device``: where to train.
    ``warnings`` are recorded in the document (and the report). With ``out``, checkpoints
    are written at every epoch end and every ``checkpoint_every`` updates inside an epoch
    (default: a quarter of an epoch's updates, at least MIN_CHECKPOINT_EVERY, so a long
    single-epoch run can be resumed part way). With the noise monitor (runtime/monitor.py)
    every seed of every run records its B_simple trace (``noise_trace``). Every run is also
    evaluated at ``evals`` evenly spaced sample positions (its curve), the same for every run.
    With ``resume``, the seeds an earlier run finished are read back from their checkpoints:
    a larger ``seeds`` trains only the new ones, and the verdict counts the earlier run's looks
    (``verdict.looks``, from its results.json).
    """
    from bsadvisor.runtime.train import initial_state, train_plan

    options = checks.options_object(ValidateOptions, options, fields, "run_validation")
    seeds, out, resume = options.seeds, options.out, options.resume
    _check_runs(target, specs, resume, out)
    ckpt_dir = _checkpoint_dir(out, dist)
    init = initial_state(target.model)  # every run and seed starts from these weights
    home = next((p.device for p in target.model.parameters()), None)
    metric_name = "metric" if target.metric_fn is not None and target.eval_dataset is not None \
        else "negative final training loss"
    runs: dict[str, Any] = {}
    earlier = earlier_looks(out) if resume else []  # read before anything in --out is rewritten
    try:
        for spec in specs:
            results = []
            for seed in range(seeds):
                ckpt = ckpt_dir / f"{spec.name}-seed{seed}.pt" if ckpt_dir is not None else None
                on_step, on_epoch = _progress_hooks(progress, f"{spec.name} seed {seed}",
                                                    spec.plan.total_samples)
                every = options.checkpoint_every or max(MIN_CHECKPOINT_EVERY,
                                                -(-spec.plan.updates // (4 * spec.plan.full_epochs)))
                r = train_plan(target, spec.plan, seed=seed, name=spec.name, init_state=init,
                               max_micro_batch=options.max_micro_batch, checkpoint=ckpt, resume=resume,
                               checkpoint_every=every,
                               dist=dist, device=device, on_step=on_step, on_epoch=on_epoch,
                               stop_on_divergence=spec is not specs[0],  # the reference's divergence is an error
                               noise_monitor=options.monitor_settings, evals=options.evals)
                results.append(_seed_result(r.to_dict(), metric_name))
            runs[spec.name] = {"description": spec.description, "plan": spec.plan.to_dict(),
                               "seeds": results, "summary": summarize(results)}
    finally:
        target.model.load_state_dict(init)  # leave the user's model as we found it
        if home is not None:
            target.model.to(home)
    doc = {"schema": VALIDATION_SCHEMA, "target": target.name, "metric": metric_name,
           "recipe": target.recipe(),  # what every run trained with: optimizer and kwargs, clipping, precision
           "temperature": realised_temperatures(specs, runs), "dataset_size": target.dataset_size, "seeds": seeds,
           "epochs": specs[0].plan.epochs, "world_size": dist.world_size if dist is not None else 1,
           "runs": runs, "verdict": verdict(runs, options.tolerance, earlier=earlier), "warnings": list(warnings or [])}
    return json_safe(doc)  # NaN and infinity become null: the document is plain JSON


def _checkpoint_dir(out: Optional[Path], dist) -> Optional[Path]:
    """``out/checkpoints``, created by rank 0 (None without ``out``)."""
    if out is None:
        return None
    ckpt_dir = Path(out) / CHECKPOINTS
    if ckpt_dir.is_symlink():
        raise UserError(f"{ckpt_dir} is a link: bsadvisor writes checkpoints only inside --out, never through a "
                        "link; remove it or choose another --out")
    if dist is None or dist.is_main:
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {ckpt_dir}: {exc.strerror or exc}; choose another --out") from None
    return ckpt_dir


#: Points of each run's realised-temperature series kept in results.json.
MAX_TEMPERATURE_POINTS = 500


def realised_temperatures(specs: list[RunSpec], runs: dict) -> dict:
    """Each run's realised noise temperature against samples, relative to the original's peak (eq. 1, 2, 4).

    Read from the updates the first seed actually trained (their LR, momentum and batch),
    with the plan's temperature model; the original (the first run) sets the reference, so
    its peak reads 1. An epoch's short last batch (fewer examples than the plan's batch
    there) is left out: its one update's temperature spike says nothing about the schedule.
    """
    source = next((sp.plan for sp in specs if sp.plan.kind != "baseline"), specs[0].plan)
    if source.missing_run():  # a hand-written plan without its inputs: no model to read it with
        return {}
    try:
        model = temperature_model(source.options)
    except UserError:  # recorded inputs that are no valid options: no model to read them with
        return {}
    series = {}
    for spec in specs:
        steps = [r for r in runs[spec.name]["seeds"][0].get("steps") or []
                 if r["batch_size"] >= spec.plan.at_sample(r["samples"]).batch_size]
        stride = max(1, -(-len(steps) // MAX_TEMPERATURE_POINTS))
        series[spec.name] = [[r["samples"], model.temperature(r["lr"], r["momentum"], r["batch_size"], r["samples"])]
                             for r in steps[::stride]]
    g_ref = max((g for _, g in series.get(specs[0].name, [])), default=0.0)
    if g_ref > 0:
        series = {name: [[x, g / g_ref] for x, g in points] for name, points in series.items()}
    return {"relative_to": f"the peak of {specs[0].name}", "model": model.describe(), "series": series}


def _progress_hooks(progress, label: str, total: int) -> tuple[Optional[Callable], Optional[Callable]]:
    """(on_step, on_epoch) advancing a new bar of the rich ``progress`` (None, None without one)."""
    if progress is None:
        return None, None
    task = progress.add_task(label, total=total)
    return (lambda n: progress.advance(task, n)), (lambda rec: progress.update(task, completed=rec["examples"]))


def _seed_result(result: dict, metric_name: str) -> dict:
    """One seed's ``RunResult.to_dict()``; without an eval metric, the negated training loss stands in."""
    if metric_name != "metric":
        result["metric"] = -result["final_train_loss"]
        for rec in result["history"]:
            rec["metric"] = -rec["train_loss"]
    return result
