"""Validate a batch-growth plan: train it next to the original LR schedule and compare.

Smith et al. (arXiv 1711.00489) claim that growing the batch at a fixed LR trains as
well as decaying the LR at a fixed batch, with fewer parameter updates. This file checks
that claim on the user's own model: every run is ``train.train_plan`` on a Plan (the
original schedule at B0 is a Plan too), over the same seeds, from the same initial
weights. The verdict compares the target's metric on ``eval_dataset``:

    accepted  ⇔  mean(plan) ≥ mean(original) − tolerance
    tolerance = max(2 × sd over seeds, 0.005)   (0.5 percentage points of accuracy)

(one-sided: a plan that beats the original is accepted). Without an eval metric the
negated final training loss stands in for it.
"""
from __future__ import annotations

import inspect
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from . import convert
from .errors import UserError
from .fileio import write_atomic, write_json
from .plan import Plan, Stage

VALIDATION_SCHEMA = "bsadvisor.validation/1"
MIN_TOLERANCE = 0.005


@dataclass
class RunSpec:
    """One run to train: a name, the plan it follows and why it is there."""

    name: str
    plan: Plan
    description: str = ""


# -- which runs --------------------------------------------------------------------------
def _call(fn: Callable, inputs: dict, **overrides) -> Plan:
    """Call ``fn`` with the plan's recorded inputs that it accepts, plus ``overrides``."""
    params = inspect.signature(fn).parameters
    kw = {k: v for k, v in inputs.items() if k in params and v is not None}  # None: take the default
    kw.update({k: v for k, v in overrides.items() if k in params})
    return fn(**kw)


def baseline_of(plan: Plan) -> Plan:
    """The original LR schedule at the fixed batch B0, from the plan's recorded inputs."""
    needed = ("lr", "batch_size", "epochs", "schedule")
    missing = [k for k in needed if plan.inputs.get(k) is None]
    if missing:
        raise UserError(f"the plan does not record its original schedule ({', '.join(missing)} missing from "
                        "'inputs'); regenerate it with bsadvisor convert-schedule --out")
    inputs = dict(plan.inputs, dataset_size=plan.dataset_size)
    return _call(convert.baseline_plan, inputs)


def _rounding(plan: Plan, world_size: Optional[int] = None, micro_batch: Optional[int] = None) -> convert.Rounding:
    """The plan's batch granularity (convert.Rounding), optionally for another device layout."""
    inp = plan.inputs
    return convert.Rounding(int(inp.get("round_to") or 1),
                            int(world_size if world_size is not None else inp.get("world_size") or 1),
                            micro_batch if world_size is not None else inp.get("micro_batch"))


def default_hybrid_cap(plan: Plan) -> int:
    """A quarter of the plan's largest batch, rounded down to its rounding granularity.

    The hybrid (the paper's practical plan) grows the batch to this cap, then decays the
    LR: a cap well below the plan's peak shows whether the tail of the growth matters.
    """
    return _rounding(plan).floor(max(plan.batch_sizes()) // 4)


def fit_to_devices(plan: Plan, world_size: int, micro_batch: Optional[int]) -> tuple[Plan, Optional[str]]:
    """The plan with every grown batch split evenly over ``world_size`` devices (convert.Rounding).

    Each batch other than B0 (the user's own, kept) must be world size × k accumulation
    steps × micro-batch (≤ ``micro_batch``). A plan that is not is converted again from
    its recorded inputs with that rounding; the second value then says what changed.
    """
    rounding = _rounding(plan, world_size, micro_batch)
    b0 = plan.inputs.get("batch_size")
    if all(b == b0 or rounding.nearest(b) == b for b in plan.batch_sizes()):
        return plan, None
    inputs = dict(plan.inputs, dataset_size=plan.dataset_size, world_size=world_size, micro_batch=micro_batch)
    if any(inputs.get(k) is None for k in ("lr", "batch_size", "epochs", "schedule")):
        raise UserError(f"the plan's batches {plan.batch_sizes()} do not split evenly over {world_size} processes and "
                        f"it does not record its inputs; regenerate it with convert-schedule --world-size {world_size}")
    cap = plan.cap or {}
    fitted = _call(convert.convert_schedule, inputs, noise_cap_batch=cap.get("noise_scale"))
    before, after = plan.batch_sizes(), fitted.batch_sizes()
    return fitted, (f"{world_size} processes: batches rounded to {rounding.describe()}: "
                    f"{' → '.join(map(str, before))} became {' → '.join(map(str, after))}")


def build_runs(plan: Plan, *, variants: bool = False, hybrid_cap: Optional[int] = None,
               increase_lr: float = 5.0) -> list[RunSpec]:
    """original + plan, and with ``variants`` the hybrid at ``hybrid_cap`` and the increased-LR plan."""
    runs = [RunSpec("original", baseline_of(plan), "the LR schedule at the fixed batch B0"),
            RunSpec("plan", plan, "batch growth (Smith et al. 2018)")]
    if variants:
        inputs = dict(plan.inputs, dataset_size=plan.dataset_size)
        b0 = int(inputs["batch_size"])
        cap = default_hybrid_cap(plan) if hybrid_cap is None else int(hybrid_cap)
        if cap > b0:
            runs.append(RunSpec(f"hybrid-{cap}", _call(convert.convert_schedule, inputs, max_batch=cap),
                                f"grow the batch up to {cap}, then decay the LR"))
        if increase_lr and increase_lr > 1:
            k = float(increase_lr)
            runs.append(RunSpec(f"increased-lr-x{k:g}", _call(convert.convert_schedule, inputs, increase_lr=k),
                                f"start at {k:g}× the LR and {k:g}× the batch, then grow (§5.2 of the paper)"))
    return runs


def constant_plan(plan: Plan, *, lr: Optional[float] = None, batch_size: Optional[int] = None) -> Plan:
    """One stage at the schedule's starting LR and batch: the control without any schedule."""
    first = plan.stages[0]
    return Plan(stages=[Stage(0, plan.epochs, batch_size or first.batch_size, first.lr if lr is None else lr,
                              first.momentum, temperature=1.0, phase="constant")],
                dataset_size=plan.dataset_size, inputs=dict(plan.inputs))


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


def verdict(runs: dict, tolerance: Optional[float] = None, reference: str = "original",
            candidate: str = "plan") -> dict:
    ref, cand = runs[reference]["summary"], runs[candidate]["summary"]
    sd = max(ref["metric_sd"], cand["metric_sd"])
    if tolerance is None:
        tol, rule = max(2 * sd, MIN_TOLERANCE), f"max(2 × sd over seeds = {2 * sd:.4g}, {MIN_TOLERANCE})"
    else:
        tol, rule = float(tolerance), "--tolerance"
    diff = cand["metric_mean"] - ref["metric_mean"]
    out = {"accepted": bool(diff >= -tol), "reference": reference, "candidate": candidate,
           "difference": diff, "tolerance": tol, "tolerance_rule": rule,
           "update_ratio": ref["updates"] / cand["updates"] if cand["updates"] else None,
           "wall_ratio": (ref["wall_s_mean"] / cand["wall_s_mean"]) if cand["wall_s_mean"] else None,
           "within_tolerance": {}}
    for name, r in runs.items():
        if name != reference:
            out["within_tolerance"][name] = bool(r["summary"]["metric_mean"] - ref["metric_mean"] >= -tol)
    return out


# -- the runs -------------------------------------------------------------------------
def run_validation(target, specs: list[RunSpec], *, seeds: int = 1, out: Optional[Path] = None,
                   resume: bool = False, max_micro_batch: Optional[int] = None,
                   tolerance: Optional[float] = None, progress=None, dist=None, device=None) -> dict:
    """Train every run for every seed; return the results document (schema bsadvisor.validation/1).

    ``progress`` is an optional rich ``Progress``; one bar per (run, seed). ``dist``: a
    torchrun job (bsadvisor.distributed.Dist); every rank trains its share and returns
    the same document; only rank 0 writes checkpoints. ``device``: where to train.
    """
    from .train import initial_state, train_plan

    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if resume and out is None:
        raise UserError("--resume needs --out DIR (the checkpoints live there)")
    for spec in specs:
        if spec.plan.dataset_size != target.dataset_size:
            raise UserError(f"the {spec.name} plan was made for {spec.plan.dataset_size} training examples but "
                            f"{target.name} has {target.dataset_size}; re-run convert-schedule for this target")
    ckpt_dir = None
    if out is not None:
        ckpt_dir = Path(out) / "checkpoints"
        if dist is None or dist.is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
    init = initial_state(target.model)  # every run and seed starts from these weights
    home = next((p.device for p in target.model.parameters()), None)
    metric_name = "metric" if target.metric_fn is not None and target.eval_dataset is not None \
        else "negative final training loss"
    runs: dict[str, Any] = {}
    try:
        for spec in specs:
            results = []
            for seed in range(seeds):
                task = None
                if progress is not None:
                    task = progress.add_task(f"{spec.name} seed {seed}", total=spec.plan.epochs * spec.plan.dataset_size)
                    on_step = lambda n, t=task: progress.advance(t, n)  # noqa: E731
                    on_epoch = lambda rec, t=task: progress.update(t, completed=rec["examples"])  # noqa: E731
                else:
                    on_step = on_epoch = None
                ckpt = ckpt_dir / f"{spec.name}-seed{seed}.pt" if ckpt_dir is not None else None
                r = train_plan(target, spec.plan, seed=seed, name=spec.name, init_state=init,
                               max_micro_batch=max_micro_batch, checkpoint=ckpt, resume=resume,
                               dist=dist, device=device, on_step=on_step, on_epoch=on_epoch)
                d = r.to_dict()
                if metric_name != "metric":
                    d["metric"] = -d["final_train_loss"]
                    for rec in d["history"]:
                        rec["metric"] = -rec["train_loss"]
                results.append(d)
            runs[spec.name] = {"description": spec.description, "plan": spec.plan.to_dict(),
                               "seeds": results, "summary": summarize(results)}
    finally:
        target.model.load_state_dict(init)  # leave the user's model as we found it
        if home is not None:
            target.model.to(home)
    return {"schema": VALIDATION_SCHEMA, "target": target.name, "metric": metric_name,
            "dataset_size": target.dataset_size, "seeds": seeds, "epochs": specs[0].plan.epochs,
            "world_size": dist.world_size if dist is not None else 1,
            "runs": runs, "verdict": verdict(runs, tolerance)}


# -- curves and report ----------------------------------------------------------------
def mean_curve(run: dict, x: str, y: str) -> tuple[list[float], list[float]]:
    """Seed-mean curve of history field ``y`` against ``x`` ("epoch", "updates", "wall_s")."""
    hs = [s["history"] for s in run["seeds"]]
    xs = [statistics.fmean(h[i][x] for h in hs) for i in range(len(hs[0]))]
    ys = [statistics.fmean(h[i][y] for h in hs) for i in range(len(hs[0]))]
    return xs, ys


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], lo: Optional[float] = None, hi: Optional[float] = None) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else hi
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, max(0, int((v - lo) / span * (len(SPARK) - 1) + 0.5)))]
                   for v in values)


def plot_curves(doc: dict, out: Path) -> list[str]:
    """PNG curves of loss and metric against epochs, updates and wall time (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for x, label in (("epoch", "epochs"), ("updates", "parameter updates"), ("wall_s", "wall time (s)")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for name, run in doc["runs"].items():
            for ax, y in zip(axes, ("train_loss", "metric")):
                xs, ys = mean_curve(run, x, y)
                ax.plot(xs, ys, marker=".", label=name)
        axes[0].set_ylabel("training loss")
        axes[0].set_yscale("log")
        axes[1].set_ylabel(doc["metric"])
        for ax in axes:
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        if x == "updates":
            axes[0].set_xscale("log")
            axes[1].set_xscale("log")
        axes[1].legend(fontsize=8)
        fig.suptitle(f"{doc['target']}: mean over {doc['seeds']} seed(s)")
        fig.tight_layout()
        path = Path(out) / f"curves_{x.split('_')[0]}.png"
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        write_atomic(path, buf.getvalue())
        files.append(path.name)
    return files


def report_markdown(doc: dict) -> str:
    v = doc["verdict"]
    lines = [f"# Validation of a batch-growth plan on {doc['target']}", "",
             f"**{'ACCEPTED' if v['accepted'] else 'REJECTED'}**: {v['candidate']} − {v['reference']} = "
             f"{v['difference']:+.4f} in {doc['metric']}; tolerance {v['tolerance']:.4f} ({v['tolerance_rule']}). "
             f"{doc['seeds']} seed(s), {doc['epochs']} epochs, N = {doc['dataset_size']}"
             + (f", data parallel over {doc['world_size']} processes" if doc.get("world_size", 1) > 1 else "") + ".", "",
             f"| run | {doc['metric']} | final train loss | updates | examples | wall s |",
             "|---|---|---|---|---|---|"]
    for name, run in doc["runs"].items():
        s = run["summary"]
        lines.append(f"| {name} | {s['metric_mean']:.4f} ± {s['metric_sd']:.4f} | "
                     f"{s['final_train_loss_mean']:.4g} ± {s['final_train_loss_sd']:.2g} | {s['updates']} | "
                     f"{s['examples']} | {s['wall_s_mean']:.1f} |")
    lines += ["", "Runs: " + "; ".join(f"**{n}**: {r['description']}" for n, r in doc["runs"].items()), ""]
    for f in doc.get("plots", []):
        lines += [f"![{f}]({f})", ""]
    if not doc.get("plots"):
        lines += ["(Install the `plot` extra, `pip install 'bsadvisor[plot]'`, for PNG curves.)", ""]
    return "\n".join(lines)


def write_outputs(doc: dict, out: Path) -> None:
    """results.json, curves_*.png (with matplotlib) and report.md in ``out``, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = plot_curves(doc, out)
    write_json(out / "results.json", doc)
    write_atomic(out / "report.md", report_markdown(doc))
