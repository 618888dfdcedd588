"""The validation report: Markdown, PNG curves, and the curves and numbers the CLI shows.

Everything here reads a :class:`Validation` (runtime/validation.py: the typed results document,
schema bsadvisor.validation/1.2; a results document given as a dict, older schemas included, is
read into one) by attribute, and changes nothing in it; :func:`write_outputs` sets the ``plots``
list of the document it writes. A value that
is null (not finite: NaN or infinity in a run) is shown as "n/a" and left out of a
curve. No torch: matplotlib is imported only to draw, and only if it is installed.
"""
from __future__ import annotations

import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from bsadvisor.core.errors import UserError
from bsadvisor.core.fileio import write_atomic, write_json
from bsadvisor.runtime.validate import finite
from bsadvisor.runtime.validation import Run, Validation, VariantVerdict, Verdict

#: A Validation, or a results document (a dict) read into one.
Doc = Union[Validation, Mapping]


def _mean(values: list) -> Optional[float]:
    """The mean of the finite values (None when there are none)."""
    vals = [v for v in values if finite(v)]
    return statistics.fmean(vals) if vals else None


def mean_curve(run: Run, x: str, y: str) -> tuple[list[float], list[Optional[float]]]:
    """Seed-mean curve of field ``y`` against ``x`` ("epoch", "samples", "updates", "wall_s").

    The points are the run's evaluations at fixed sample positions (each seed's ``evals``,
    the same positions for every run and seed; "epoch" is then samples / N, fractional), or
    its epoch ends for a document without them. Seeds can stop early (a diverged run); each
    point averages the seeds that reached it, and a value that is null (not finite) is left
    out (None when no seed has one).
    """
    hs = [s.evals or s.history for s in run.seeds]
    n = max(len(h) for h in hs)
    xs = [_mean([h[i].get(x) for h in hs if i < len(h)]) for i in range(n)]
    ys = [_mean([h[i].get(y) for h in hs if i < len(h)]) for i in range(n)]
    return xs, ys


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[Optional[float]], lo: Optional[float] = None, hi: Optional[float] = None,
              width: Optional[int] = None) -> str:
    """One character per value (a space for a missing one); with ``width``, at most that many
    characters: consecutive values are averaged in equal bins."""
    if width is not None and len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [_mean(values[a:b]) for a, b in zip(edges, edges[1:])]
    vals = [v for v in values if finite(v)]
    if not vals:
        return ""
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else hi
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, max(0, int((v - lo) / span * (len(SPARK) - 1) + 0.5)))]
                   if finite(v) else " " for v in values)


def plot_curves(doc: Doc, out: Path) -> list[str]:
    """PNG curves of loss and metric against epochs, updates and wall time (needs matplotlib)."""
    doc = Validation.of(doc)
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for x, label in (("epoch", "epochs (samples / N)"), ("updates", "parameter updates"),
                     ("wall_s", "wall time (s)")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for name, run in doc.runs.items():
            for ax, y in zip(axes, ("train_loss", "metric")):
                xs, ys = mean_curve(run, x, y)
                nan = float("nan")
                ax.plot([nan if v is None else v for v in xs], [nan if v is None else v for v in ys], marker=".",
                        label=name)
        axes[0].set_ylabel("training loss")
        axes[0].set_yscale("log")
        axes[1].set_ylabel(doc.metric)
        for ax in axes:
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        if x == "updates":
            axes[0].set_xscale("log")
            axes[1].set_xscale("log")
        axes[1].legend(fontsize=8)
        fig.suptitle(plot_text(f"{doc.target}: mean over {doc.seeds} seed(s)"))
        fig.tight_layout()
        path = Path(out) / f"curves_{x.split('_')[0]}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        write_atomic(path, buf.getvalue())
        files.append(path.name)
    return files


def fmt(x: Any, spec: str) -> str:
    """``x`` formatted with ``spec``, or "n/a" for a missing (null, not finite) value."""
    return format(x, spec) if finite(x) else "n/a"


def mean_sd(mean: Any, sd: Any, spec: str, sd_spec: Optional[str] = None) -> str:
    """``mean ± sd``, or just "n/a" when the mean is not finite."""
    return f"{fmt(mean, spec)} ± {fmt(sd, sd_spec or spec)}" if finite(mean) else "n/a"


def _md(text: Any) -> str:
    """A user-supplied string inside a Markdown table or heading: no stray markup, one line."""
    out = str(text).replace("\\", "\\\\").replace("\n", " ")
    for ch in "|*_`[]<>#":
        out = out.replace(ch, "\\" + ch)
    return out


STATUS_WORDS = {"accepted": "ACCEPTED", "rejected": "REJECTED", "inconclusive": "INCONCLUSIVE",
                "indicative": "INDICATIVE"}


def status_word(v: Union[Verdict, VariantVerdict]) -> str:
    """ACCEPTED, REJECTED, INCONCLUSIVE or INDICATIVE (a /1 document has only ``accepted``)."""
    return STATUS_WORDS.get(v.status, "ACCEPTED" if getattr(v, "accepted", None) else "REJECTED")


def difference_text(v: Union[Verdict, VariantVerdict], at: Optional[Verdict] = None) -> str:
    """``-0.0021, 90% interval [-0.0050, +0.0008] over 3 paired seeds, valid at every look`` (or the
    one-seed caveat). A /1.1 document's interval was a fixed-n t interval: ``90% CI``. ``at``: the
    verdict whose confidence, method and look it was judged at (default: ``v``'s own)."""
    at = v if at is None else at
    d = fmt(v.difference, "+.4f")
    iv = v.interval
    n = len(v.paired or [])
    pct = round((at.confidence or 0.9) * 100)
    if iv and at.method:
        lo = fmt(iv[0], "+.4f") if iv[0] is not None else "−∞"
        hi = fmt(iv[1], "+.4f") if iv[1] is not None else "+∞"
        looks = at.spending_look or at.looks or 1
        return (f"{d}, {pct}% interval [{lo}, {hi}] over {n} paired seeds, valid at every look"
                + (f" (look {looks})" if looks > 1 else ""))
    if iv:
        return f"{d}, {pct}% CI [{fmt(iv[0], '+.4f')}, {fmt(iv[1], '+.4f')}] over {n} paired seeds"
    return f"{d} (1 seed: no spread measured)"


def variant_difference_text(w: Union[VariantVerdict, Mapping], v: Union[Verdict, Mapping]) -> str:
    """:func:`difference_text` of a variant's verdict ``w``, read with the main verdict ``v``'s confidence,
    method and look (a variant is judged at the same look; its record does not repeat them)."""
    w = w if isinstance(w, VariantVerdict) else VariantVerdict.from_dict(w)
    v = v if isinstance(v, Verdict) else Verdict.from_dict(v)
    return difference_text(w, at=v)


def verdict_text(doc: Doc) -> str:
    """The verdict in one sentence (plain text: the caller adds any styling)."""
    doc = Validation.of(doc)
    v = doc.verdict
    if v.reason:
        return v.reason
    if not v.has_margin:  # a bsadvisor.validation/1 document
        return (f"{v.candidate} − {v.reference} = {fmt(v.difference, '+.4f')} in {doc.metric}; "
                f"tolerance {fmt(v.tolerance, '.4f')} ({v.tolerance_rule})")
    text = (f"{v.candidate} − {v.reference} in {doc.metric}: {difference_text(v)}; "
            f"margin {fmt(v.margin, '.4g')} ({v.margin_rule})")
    if v.status == "inconclusive":
        text += "; " + settle_text(doc)
    elif v.status == "indicative":
        text += "; " + indicative_text(v)
    return text


def indicative_text(v: Verdict) -> str:
    """What one seed says, and what a verdict needs."""
    side = "above" if finite(v.difference) and finite(v.margin) and v.difference > -v.margin else "not above"
    return (f"one seed is indicative only: its difference is {side} the margin, but one difference "
            "never decides; add seeds with --seeds K --resume (K ≥ 3 measures the spread, and the "
            "verdict then says how many would settle it)")


def settle_text(doc: Doc) -> str:
    """What an inconclusive verdict needs: the seeds for an 80 % chance of settling it (core/verdict.py)."""
    v = Validation.of(doc).verdict
    n = v.seeds_suggested
    if n is None and v.too_close:
        return ("too close to settle: the mean difference is within one standard error of the margin, so "
                "which side it is on is not known and more seeds may never decide it; treat it as a tie "
                "at the margin, or choose the margin anew")
    if n is None:
        return ("the difference is too close to the margin for any practical number of seeds to settle; "
                "treat it as a tie at the margin, or choose the margin anew")
    if not v.method:  # a /1.1 document: the fixed-n rule's suggestion
        return f"about {n} seeds would likely settle it (add them with --seeds {n} --resume)"
    return (f"{n} seeds in all would settle it with an 80% chance if the difference and its spread "
            f"stay as measured (add them with --seeds {n} --resume)")


def report_markdown(doc: Doc) -> str:
    """report.md: the verdict, a table of the runs (mean ± sd over seeds), warnings and the plots."""
    doc = Validation.of(doc)
    v = doc.verdict
    lines = [f"# Validation of a batch-growth plan on {_md(doc.target)}", "",
             f"**{status_word(v)}**: {_md(verdict_text(doc))}. "
             f"{doc.seeds} seed(s), {doc.epochs:.4g} epochs, N = {doc.dataset_size}"
             + (f", data parallel over {doc.world_size} processes" if doc.world_size > 1 else "") + ".", "",
             *recipe_lines(doc),
             f"| run | {doc.metric} | final train loss | updates | examples | wall s |",
             "|---|---|---|---|---|---|"]
    for name, run in doc.runs.items():
        s = run.summary
        lines.append(f"| {name} | {mean_sd(s.metric_mean, s.metric_sd, '.4f')} | "
                     f"{mean_sd(s.final_train_loss_mean, s.final_train_loss_sd, '.4g', '.2g')} | "
                     f"{s.updates} | {s.examples} | {fmt(s.wall_s_mean, '.1f')} |")
    lines.append("")
    if any(not finite(x) for r in doc.runs.values() for x in (r.summary.metric_mean, r.summary.final_train_loss_mean)):
        lines += ["n/a: not finite (NaN or infinity; null in results.json).", ""]
    lines += ["Runs: " + "; ".join(f"**{n}**: {r.description}" for n, r in doc.runs.items()), ""]
    lines += paired_table(doc)
    lines += curve_table(doc)
    lines += temperature_table(doc)
    lines += noise_table(doc)
    for w in doc.warnings or ():
        lines += [f"Warning: {_md(w)}", ""]
    for f in doc.plots or ():
        lines += [f"![{f}]({f})", ""]
    if not doc.plots:
        lines += ["(Install the `plot` extra, `pip install 'bsadvisor[plot]'`, for PNG curves.)", ""]
    return "\n".join(lines)


def recipe_text(recipe: dict) -> str:
    """``AdamW (betas [0.9, 0.95], eps 1e-08), weight decay 0.01, gradient clipping at norm 1, precision
    bf16-mixed``: the recipe every run trained with."""
    names = {"sgd": "SGD", "nesterov": "SGD (Nesterov)", "adam": "Adam", "adamw": "AdamW"}
    kwargs = recipe.get("optimizer_kwargs") or {}
    text = names.get(recipe.get("optimizer"), str(recipe.get("optimizer")))
    if kwargs:
        shown = {k: "(" + ", ".join(map(str, v)) + ")" if isinstance(v, list) else v for k, v in kwargs.items()}
        text += " (" + ", ".join(f"{k} {v}" for k, v in shown.items()) + ")"
    text += f", weight decay {recipe.get('weight_decay', 0):g}"
    clip = recipe.get("max_grad_norm")
    text += f", gradient clipping at norm {clip:g}" if clip is not None else ", no gradient clipping"
    text += f", precision {recipe.get('precision', '32')}"
    if recipe.get("param_groups"):
        text += f", {len(recipe['param_groups'])} param groups"
    return text


def recipe_lines(doc: Doc) -> list[str]:
    """The recipe line of report.md, and the steps a GradScaler skipped (fp16), when any."""
    doc = Validation.of(doc)
    if not doc.recipe:
        return []
    lines = [f"Trained with {_md(recipe_text(doc.recipe))} (every run, every seed).", ""]
    skipped = {name: sum(len(s.skipped_steps or ()) for s in run.seeds) for name, run in doc.runs.items()}
    if any(skipped.values()):
        lines += ["Steps the fp16 GradScaler skipped (inf/NaN gradients; not counted as updates): "
                  + ", ".join(f"{name} {n}" for name, n in skipped.items()) + " (all seeds).", ""]
    return lines


def paired_table(doc: Doc) -> list[str]:
    """report.md's per-seed table: each run's metric and its paired difference from the original's."""
    doc = Validation.of(doc)
    v = doc.verdict
    if not v.has_margin:
        return []
    ref = doc.runs[v.reference]
    others = [n for n in doc.runs if n != v.reference]
    lines = [f"Paired by seed (same initial weights and data order): {doc.metric} of each run, and its "
             f"difference from {_md(v.reference)} with the same seed (the verdict reads these).", "",
             "| seed | " + " | ".join(_md(n) for n in [v.reference, *others]) + " | "
             + " | ".join(f"{_md(n)} − {_md(v.reference)}" for n in others) + " |",
             "|---|" + "---|" * (1 + 2 * len(others))]
    for i, s in enumerate(ref.seeds):
        cells = [fmt(s.metric, ".4f")]
        diffs = []
        for n in others:
            seeds = doc.runs[n].seeds
            m = seeds[i].metric if i < len(seeds) else None
            cells.append(fmt(m, ".4f"))
            diffs.append(fmt(m - s.metric, "+.4f") if finite(m) and finite(s.metric) else "n/a")
        lines.append(f"| {s.seed} | " + " | ".join(cells + diffs) + " |")
    summary = [f"**{_md(v.candidate)}**: {STATUS_WORDS.get(v.status, '?').lower()}, "
               f"{_md(difference_text(v))}"]
    for n, w in v.variants.items():
        summary.append(f"**{_md(n)}**: {STATUS_WORDS.get(w.status, '?').lower()}, "
                       f"{_md(difference_text(w, at=v))}")
    return lines + ["", "Mean paired difference: " + "; ".join(summary) + ".", ""]


def curve_table(doc: Doc) -> list[str]:
    """report.md's curves as numbers: each run's mean metric and training loss at its evaluation points."""
    doc = Validation.of(doc)
    runs = doc.runs
    curves = {n: (mean_curve(r, "point", "metric"), mean_curve(r, "point", "train_loss")[1])
              for n, r in runs.items()}
    longest = max(curves.values(), key=lambda c: len(c[0][0]))
    xs = longest[0][0]
    if len(xs) < 2 or any(x is None for x in xs):
        return []
    n = doc.dataset_size or 1
    lines = [f"Curves: {doc.metric} (and training loss since the previous point) at the same sample "
             f"positions in every run, mean over {doc.seeds} seed(s):", "",
             "| samples | epoch | " + " | ".join(_md(k) for k in runs) + " |", "|---|---|" + "---|" * len(runs)]
    for i, x in enumerate(xs):
        cells = []
        for (cx, cy), loss in curves.values():
            ok = i < len(cy)
            cells.append(f"{fmt(cy[i] if ok else None, '.4f')} ({fmt(loss[i] if ok else None, '.4g')})")
        lines.append(f"| {x:,.0f} | {x / n:.3g} | " + " | ".join(cells) + " |")
    return lines + [""]


def temperature_table(doc: Doc, points: int = 10) -> list[str]:
    """report.md's table of the realised temperature of every run at ``points`` places of training."""
    temp = Validation.of(doc).temperature
    series = (temp.series if temp is not None else None) or {}
    if not series or not all(series.values()):
        return []
    total = max(pts[-1][0] for pts in series.values()) or 1
    lines = [f"Realised noise temperature against samples (relative to {temp.relative_to}; {temp.model}):", "",
             "| samples | " + " | ".join(series) + " |", "|---|" + "---|" * len(series)]
    for k in range(points):
        at = total * k // (points - 1)
        # the update in progress at that sample: the last one that started at or before it
        cells = [fmt(next((g for x, g in reversed(pts) if x <= at), None), ".3g") for pts in series.values()]
        lines.append(f"| {at:,} | " + " | ".join(cells) + " |")
    return lines + [""]


@dataclass(frozen=True)
class NoiseRow:
    """A noise-trace point as the tables show it: where (``sample``), the run's batch there, B_simple (None
    for an open interval, whose point estimate says nothing: it may be negative), its 90% interval in words
    and B/B_simple (the batch against the critical batch)."""

    sample: int
    batch_size: int
    b_simple: Optional[float]
    interval: str
    ratio: str


def noise_rows(doc: Doc, points: int = 8) -> dict[str, list[NoiseRow]]:
    """Each run's (first seed's) noise trace at up to ``points`` evenly spread places, with the batch it
    trained at there and B/B_simple: where the run sits against the critical batch."""
    rows = {}
    for name, run in Validation.of(doc).runs.items():
        trace = [p for p in (run.seeds[0].noise_trace if run.seeds else ()) if p.get("b_simple") is not None]
        if not trace:
            continue
        picks = sorted({round(i * (len(trace) - 1) / max(points - 1, 1)) for i in range(min(points, len(trace)))})
        rows[name] = [NoiseRow(p["sample"], p["batch_size"], p["b_simple"] if p["ci_kind"] == "bounded" else None,
                               describe_ci(p), _ratio_text(p)) for p in (trace[i] for i in picks)]
    return rows


def _ratio_text(point: dict) -> str:
    """B/B_simple at a trace point: its value, "≤ B/lo" under a lower bound, "n/a" without one."""
    lo = (point.get("ci90") or [None])[0]
    if point.get("ci_kind") == "bounded" and finite(point["b_simple"]) and point["b_simple"] > 0:
        return format(point["batch_size"] / point["b_simple"], ".2g")
    if point.get("ci_kind") == "lower-bound" and finite(lo) and lo > 0:
        return "≤ " + format(point["batch_size"] / lo, ".2g")
    return "n/a"


def describe_ci(point: dict) -> str:
    """A trace point's 90% interval, honest about open ones ("≥ lo", "unbounded")."""
    lo, hi = point.get("ci90") or (None, None)
    kind = point.get("ci_kind")
    if kind == "bounded" and finite(lo) and finite(hi):
        return f"{lo:,.0f}–{hi:,.0f}"
    if kind == "lower-bound" and finite(lo):
        return f"≥ {lo:,.0f}"
    return "unbounded"


def noise_table(doc: Doc) -> list[str]:
    """report.md's table of B_simple through training (NoiseMonitor), against the batch each run used."""
    doc = Validation.of(doc)
    rows = noise_rows(doc)
    if not rows:
        return []
    n = doc.dataset_size or 0
    lines = ["Gradient noise scale through training (NoiseMonitor, first seed): B_simple with its 90% interval "
             "against the batch the run trained at; B/B_simple well below 1 leaves room to grow, well above 1 "
             "buys parallelism, not progress (McCandlish et al.).", "",
             "| run | epoch | batch | B_simple | 90% CI | B/B_simple |", "|---|---|---|---|---|---|"]
    for name, pts in rows.items():
        for p in pts:
            lines.append(f"| {_md(name)} | {p.sample / n if n else 0:.2f} | {p.batch_size:,} | "
                         f"{fmt(p.b_simple, ',.0f')} | {p.interval} | {p.ratio} |")
    return lines + [""]


def plot_noise(doc: Doc, out: Path) -> list[str]:
    """noise.png: each run's batch size and its measured B_simple (90% interval) against samples (needs matplotlib)."""
    doc = Validation.of(doc)
    rows = {name: run.seeds[0].noise_trace for name, run in doc.runs.items() if run.seeds}
    if not any(rows.values()):
        return []
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = doc.dataset_size or 1
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, run) in enumerate(doc.runs.items()):
        color = f"C{i}"
        steps = run.seeds[0].steps if run.seeds else ()
        if steps:
            ax.step([r["samples"] / n for r in steps], [r["batch_size"] for r in steps], where="post", color=color,
                    label=f"{name}: batch")
        pts = [p for p in rows.get(name, []) if p.get("ci_kind") == "bounded"]
        if pts:
            xs = [p["sample"] / n for p in pts]
            ys = [p["b_simple"] for p in pts]
            yerr = [[y - p["ci90"][0] for y, p in zip(ys, pts)], [p["ci90"][1] - y for y, p in zip(ys, pts)]]
            ax.errorbar(xs, ys, yerr=yerr, fmt="o", ms=3, color=color, alpha=0.7, capsize=2,
                        label=f"{name}: B_simple (90% CI)")
        bounds = [p for p in rows.get(name, []) if p.get("ci_kind") == "lower-bound" and finite(p["ci90"][0])]
        if bounds:  # an open interval: only its lower bound is known
            ax.plot([p["sample"] / n for p in bounds], [p["ci90"][0] for p in bounds], "^", ms=4, color=color,
                    alpha=0.5, label=f"{name}: B_simple ≥ (open interval)")
    ax.set_yscale("log")
    ax.set_xlabel("epochs (samples / N)")
    ax.set_ylabel("examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(plot_text(f"{doc.target}: batch size against the measured noise scale"))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(Path(out) / "noise.png", buf.getvalue())
    return ["noise.png"]


def write_outputs(doc: dict, out: Path) -> list[str]:
    """results.json and report.md, then curves_*.png and noise.png (with matplotlib) in ``out``, each atomically.

    ``doc``: the results document (``Validation.to_dict()``); its ``plots`` list is set to the plots
    written. The results come first: the plots are optional, so a plot that fails (matplotlib
    refusing a title, a full disk) costs only the plots. Returns the warnings to show (one line
    each); once the plots are written, results.json and report.md are written again to list them.
    :meth:`Validation.write` holds the folder (the rules of ``--out``) while this writes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = []
    write_json(out / "results.json", doc)
    write_atomic(out / "report.md", report_markdown(doc))
    plots: list[str] = []
    try:
        plots = plot_curves(doc, out) + plot_noise(doc, out)
    except Exception as exc:  # noqa: BLE001 -- anything matplotlib or the disk raises: the results are safe
        why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        return [f"no plots: {why[:200]}; the results are in {out / 'results.json'} and {out / 'report.md'}"]
    if plots:
        doc["plots"] = plots
        write_json(out / "results.json", doc)
        write_atomic(out / "report.md", report_markdown(doc))
    return []


def plot_text(text: Any, limit: int = 120) -> str:
    """A user string in a plot's title: matplotlib reads ``$...$`` as math, so ``$`` is escaped; at most
    ``limit`` characters (a 100,000-character name would take matplotlib minutes to lay out)."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")
