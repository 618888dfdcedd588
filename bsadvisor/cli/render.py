"""Rich rendering of plans and validations (presentation only; no math here beyond formatting).

Every table is a :class:`FitTable`: at render time it gives each column at least its
longest word (a number is one word), so at 80 columns or in a pipe a number is never
cut to ``0.04…``; when even that does not fit, each row is printed as ``name value``
lines instead. Every string here is rendered as plain text (``Text``), never parsed as
rich markup, so a target name or path holding ``[/x]`` prints as typed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import groupby
from typing import Optional, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

import bsadvisor
from bsadvisor.runtime.report import (difference_text, fmt, mean_curve, noise_rows, sparkline,
                                      status_word, verdict_text)

PHASE_LABELS = {"warmup": " warmup", "hybrid": " hybrid"}


def _fmt_lr(a: float, b: float, peak: float = 0.0) -> str:
    """One value, or where it goes inside a stage (``a→b``, three digits: a range, not a setting), and the
    ``peak`` inside the stage where it exceeds both ends (a restart the ends would hide)."""
    text = f"{a:.4g}" if math.isclose(a, b, rel_tol=1e-9) else f"{a:.3g}→{b:.3g}"
    return text + (f" (max {peak:.3g})" if peak > max(a, b) * (1 + 1e-6) else "")


def _words_width(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=1)


def _lines_width(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


@dataclass
class FitTable:
    """A table that never truncates a cell: columns get at least their longest word.

    ``columns``: (header, justify) pairs; ``rows``: lists of strings; ``footer``: an
    optional last row (totals) drawn under a rule. When the console is too narrow for
    even the longest word of every column, each row is one line of "header value" fields.
    """

    title: str
    columns: Sequence[tuple[str, str]]
    rows: list[list[str]]
    footer: Optional[list[str]] = None
    caption: list[str] = field(default_factory=list)  # printed under the table either way

    def _table(self, widths: list[int]) -> Table:
        t = Table(box=box.SIMPLE,
                  show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), show_footer=self.footer is not None,
                  header_style="bold")
        for (header, justify), w, foot in zip(self.columns, widths, self.footer or [""] * len(widths)):
            t.add_column(Text(header), justify=justify, width=w, footer=Text(foot), overflow="fold")
        for row in self.rows:
            t.add_row(*(Text(c) for c in row))
        return t

    def widths(self, available: int, console: Console, options: ConsoleOptions) -> Optional[list[int]]:
        """Column widths that fit ``available`` cells with every word whole, or None."""
        cells = [[h] + [r[i] for r in self.rows] + ([self.footer[i]] if self.footer else [])
                 for i, (h, _) in enumerate(self.columns)]
        low = [max(_words_width(c) for c in col) for col in cells]
        body = [max(max((_lines_width(c) for c in col[1:]), default=0), lo) for col, lo in zip(cells, low)]
        full = [max(_lines_width(col[0]), b) for col, b in zip(cells, body)]
        probe = self._table([1] * len(low))
        overhead = Table.__rich_measure__(probe, console, options.update_width(10**6)).maximum - len(low)
        slack = available - overhead - sum(low)
        if slack < 0:
            return None
        widths = list(low)
        for goal in (body, full):  # unwrap the cells first, then the headers
            while slack > 0:  # widen the columns that still wrap, one cell each in turn
                short = [i for i, w in enumerate(widths) if w < goal[i]][:slack]
                if not short:
                    break
                for i in short:
                    widths[i] += 1
                slack -= len(short)
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self.widths(options.max_width, console, options)
        # the title on its own line, wrapped at the console's width: as the table's title, rich wraps it at the
        # table's width, and a narrow table (the curves' sparklines) broke a short title over two lines
        yield Text(self.title, style="bold")
        if widths is not None:
            yield self._table(widths)
        else:  # one line per row (wrapped at spaces, never inside a figure): a pipe of 80 columns stays short
            headers = [h for h, _ in self.columns]
            for row in self.rows + ([self.footer] if self.footer else []):
                head = row[0] if row is self.footer else f"{headers[0]} {row[0]}"
                fields = [f"{h} {c}" for h, c in zip(headers[1:], row[1:]) if c]
                yield Text.assemble((head, "bold"), *(["  ", " · ".join(fields)] if fields else []))
        for line in self.caption:
            yield Text(line, style="dim")


def fmt_count(x: float) -> str:
    """A sample or token count, short: 950, 12.5k, 4.48M, 1.2G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:g}"


def plan_rows(plan: bsadvisor.Plan) -> list[dict]:
    """One row per batch stage (consecutive stages with the same batch and phase).

    Where a stage starts and ends is in epochs for a plan whose stages are whole epochs
    (the paper's), in samples otherwise. The LR is shown at the stage's first and last
    update: inside a stage it follows the original schedule × the stage's factor.
    """
    b0 = plan.options.batch_size
    aligned = plan.epoch_aligned
    rows = []
    pairs = zip(plan.stages, plan.updates_per_stage())
    for (batch, phase), group in groupby(pairs, key=lambda p: (p[0].batch_size, p[0].phase)):
        group = list(group)
        segs = [s for s, _ in group]
        first, last = segs[0], segs[-1]
        lr_end = plan.lr_at(last, max(last.start_sample, last.end_sample - batch))
        where = (plan.epoch_of(first.start_sample), plan.epoch_of(last.end_sample)) if aligned else (
            first.start_sample, last.end_sample)
        rows.append({
            "start": where[0], "end": where[1], "batch": batch, "phase": phase,
            "lr": (first.lr, lr_end), "lr_max": max(plan.max_lr(s) for s in segs), "lr_scale": first.lr_scale if len({s.lr_scale for s in segs}) == 1 else None,
            "momentum": first.momentum, "momenta": {s.momentum for s in segs},
            "temperature": (first.temperature, last.temperature * (lr_end / last.lr if last.lr else 1.0)),
            "updates": sum(count for _, count in group),
            "noise": math.sqrt(b0 / batch),
            "predicted_seconds": sum(s.extra.get("predicted_seconds") or 0.0 for s in segs)
            if any("predicted_seconds" in s.extra for s in segs) else None,
            "efficiency": first.extra.get("efficiency"),
        })
    return rows


def plan_table(plan: bsadvisor.Plan, title: str = "Recommended plan") -> FitTable:
    """Stages of ``plan``: one row per batch stage, a legend of every column under it.

    Momentum gets a column only when it changes between stages (otherwise one line says
    its value); the LR factor only when a stage's LR follows the original schedule;
    efficiency and predicted time only when the plan was made with a probe.
    """
    rows = plan_rows(plan)
    aligned = plan.epoch_aligned
    has_time = any(r["predicted_seconds"] is not None for r in rows)
    has_eff = any(r["efficiency"] is not None for r in rows)
    has_scale = any(r["lr_scale"] is not None and r["lr_scale"] != 1.0 for r in rows)
    momenta = set().union(*(r["momenta"] for r in rows))
    has_mom = len(momenta) > 1
    cols = [("stage", "left"), ("epochs" if aligned else "samples", "left"), ("batch", "right"), ("LR", "right")]
    footer = ["total", "", "", ""]
    if has_scale:
        cols.append(("× orig", "right"))
        footer.append("")
    if has_mom:
        cols.append(("mom.", "right"))
        footer.append("")
    cols += [("g/g0", "right"), ("updates", "right")]
    footer += ["", f"{plan.updates:,}"]
    if not has_eff:  # with a probe, the efficiency column tells the noise story instead
        cols.append(("noise std", "right"))
        footer.append("")
    if has_eff:
        cols.append(("eff.", "right"))
        footer.append("")
    if has_time:
        cols.append(("time", "right"))
        footer.append(fmt_seconds(sum(r["predicted_seconds"] or 0 for r in rows)))
    body = []
    for i, r in enumerate(rows):
        span = f"{r['start']}–{r['end']}" if aligned else f"{fmt_count(r['start'])}–{fmt_count(r['end'])}"
        cells = [f"{i}{PHASE_LABELS.get(r['phase'], '')}", span, f"{r['batch']:,}", _fmt_lr(*r["lr"], peak=r["lr_max"])]
        if has_scale:
            cells.append("" if r["lr_scale"] is None else f"{r['lr_scale']:.3g}")
        if has_mom:
            cells.append(" ".join(f"{m:g}" for m in sorted(r["momenta"])))
        cells += [_fmt_lr(*r["temperature"]), f"{r['updates']:,}"]
        if not has_eff:
            cells.append(f"{r['noise']:.3f}")
        if has_eff:
            cells.append("" if r["efficiency"] is None else f"{r['efficiency']:.2f}")
        if has_time:
            cells.append(fmt_seconds(r["predicted_seconds"]))
        body.append(cells)
    return FitTable(title, cols, body, footer, caption=_legend(plan, body, momenta, has_mom, has_scale, has_eff,
                                                              has_time))


def _legend(plan: bsadvisor.Plan, body: list[list[str]], momenta: set, has_mom: bool, has_scale: bool, has_eff: bool,
            has_time: bool) -> list[str]:
    """The lines under the plan table that say what each column means."""
    legend = [f"momentum {next(iter(momenta)):g} in every stage" if not has_mom else "mom.: momentum"]
    if any("→" in c[3] for c in body):
        legend[-1] += "; LR a→b: the LR moves from a to b inside the stage (first and last update)"
    if any("(max " in c[3] for c in body):
        legend.append("LR (max x): the LR rises inside the stage to x, above both ends (the original rises there)")
    if not plan.epoch_aligned:
        seq = f"; × {plan.seq_len:,} tokens a sample" if plan.seq_len else ""
        legend.append(f"samples: examples consumed (k = 10³, M = 10⁶){seq}")
    if has_scale:
        legend.append("× orig: the stage's LR is the original schedule's LR at the same sample × this factor")
    legend.append("g/g0: noise temperature relative to the original's peak" + (
        "" if has_eff else "; noise std: gradient-noise std relative to the first stage, √(B0/B)"))
    if has_eff:
        legend.append("eff.: efficiency, the share of each example's value the stage keeps, "
                      "1/(1 + B/B_noise) (McCandlish et al. 2018, eq. 2.12): near 1 while B ≪ B_noise, "
                      "0.5 at B = B_noise; B_noise in the middle of the stage, the probe's B_simple at the stage's "
                      "temperature or --noise-trace (docs/concepts.md §12)")
    if has_time:
        legend.append("time: predicted from the probe's measured throughput")
    return legend


def time_range(pred: dict, prefix: str = "") -> str:
    """``12.3 s (11.0 s–14.1 s)``: the median prediction and the range of the probe's repeated timings."""
    mid, low, high = (pred.get(f"{prefix}predicted_seconds{s}") for s in ("", "_low", "_high"))
    if low is None or high is None or abs(high - low) < 0.005 * mid:
        return fmt_seconds(mid)
    return f"{fmt_seconds(mid)} ({fmt_seconds(low)}–{fmt_seconds(high)})"


def fmt_seconds(s) -> str:
    if s is None:
        return ""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def plan_summary(plan: bsadvisor.Plan) -> Group:
    """The whole report: table, totals versus the original, warnings, notes."""
    base, new = plan.baseline_updates, plan.updates
    ratio = base / new if new else float("nan")
    total = plan.total_samples
    length = f"{total:,} samples" + (f" = {total * plan.seq_len:,} tokens" if plan.seq_len else "")
    if plan.dataset_size:
        length += f" ({plan.epochs:g} epoch{'' if plan.epochs == 1 else 's'} of {plan.dataset_size:,})"
    lines = [plan_table(plan),
             Text.assemble(("updates", "bold"), f": original {base:,} → plan {new:,}  (",
                           (f"{ratio:.2f}× fewer", "bold green"), ")"),
             Text(f"length: {length}, the same for both", style="dim")]
    pred = (plan.probe or {}).get("predicted")
    if pred:
        lines.append(Text(f"predicted time: plan {time_range(pred)}, original {time_range(pred, 'baseline_')} "
                          "(median of the probe's timings; in brackets, fastest–slowest)", style="dim"))
    cap = plan.cap
    if cap:
        lines.append(Text(f"cap: batch {cap.get('batch_size'):,} (limited by {cap.get('limited_by')})", style="dim"))
    for w in plan.warnings:
        lines.append(Text("warning: " + w, style="yellow"))
    for n in plan.notes:
        lines.append(Text("note: " + n, style="dim"))
    return Group(*lines)


# -- a validation: the runs, their curves, the noise scale through training, the verdict ------------------
def print_results(doc: bsadvisor.Validation, console: Console) -> None:
    """A table of the runs, their curves as sparklines (no matplotlib needed), the noise scale through
    training (with the noise monitor), then the verdict.

    Every number is shown whole at 80 columns and in a pipe (FitTable: each row as a line when the
    table does not fit). User strings (the target's name) are never read as rich markup.
    ``doc``: a Validation (or its results document).
    """
    doc = bsadvisor.Validation.of(doc)
    console.print(runs_table(doc))
    console.print(curves_table(doc, console.width))
    noise = noise_table(doc)
    if noise is not None:
        console.print(noise)
    print_verdict(doc, console)


def _num(x) -> str:
    """A number whole and short: 4 decimals from 0.001 to 100, else 4 significant digits; n/a when missing."""
    if isinstance(x, (int, float)) and (abs(x) >= 100 or 0 < abs(x) < 0.001):
        return fmt(x, ".4g")
    return fmt(x, ".4f")


def runs_table(doc: bsadvisor.Validation) -> FitTable:
    """Each run's metric (mean ± sd over seeds), final training loss, updates and mean wall time."""
    first = next(iter(doc.runs.values())).summary
    title = (f"{doc.target}: {doc.epochs:.4g} epoch{'' if doc.epochs == 1 else 's'}, {doc.seeds} seed(s), "
             f"{first.examples:,} examples per run")
    legend = ("metric: " + ("metric_fn on eval_dataset" if doc.metric == "metric" else doc.metric)
              + ", mean ± sd over seeds; loss: final training loss; n/a: not finite")
    rows = []
    for name, r in doc.runs.items():
        s = r.summary
        metric = f"{_num(s.metric_mean)} ± {_num(s.metric_sd)}" if s.metric_mean is not None else "n/a"
        rows.append([name, metric, _num(s.final_train_loss_mean), f"{s.updates:,}", fmt(s.wall_s_mean, ",.1f")])
    cols = [("run", "left"), ("metric", "right"), ("loss", "right"), ("updates", "right"), ("wall s", "right")]
    return FitTable(title, cols, rows, caption=[legend])


def curves_table(doc: bsadvisor.Validation, width: int) -> FitTable:
    """Sparklines of each run's metric and training loss on shared scales, two of them beside the names
    within ``width`` columns."""
    curves = {name: (mean_curve(r, "epoch", "metric"), mean_curve(r, "epoch", "train_loss")[1])
              for name, r in doc.runs.items()}
    metrics = [y for (_, ys), _ in curves.values() for y in ys if y is not None]
    losses = [y for _, ys in curves.values() for y in ys if y is not None]
    points = max(len(xs) for (xs, _), _ in curves.values())
    name_w = max(len(n) for n in doc.runs)
    spark_w = max(8, min(24, (width - name_w - 10) // 2))
    lo_m, hi_m = (min(metrics), max(metrics)) if metrics else (None, None)
    lo_l, hi_l = (min(losses), max(losses)) if losses else (None, None)
    rows = [[name, sparkline(ys, lo_m, hi_m, spark_w), sparkline(loss, lo_l, hi_l, spark_w)]
            for name, ((_, ys), loss) in curves.items()]
    return FitTable(f"curves: {points} point(s) over {doc.epochs:.4g} epoch(s), same samples in every run",
                    [("run", "left"), ("metric", "left"), ("training loss", "left")], rows)


def noise_table(doc: bsadvisor.Validation) -> Optional[FitTable]:
    """The terminal's picture of noise.png: each run's batch against its measured B_simple, a few points each
    (None without the noise monitor)."""
    found = noise_rows(doc, points=5)
    if not found:
        return None
    n = doc.dataset_size or 0
    rows = [[name, f"{p.sample / n if n else 0:.2f}", f"{p.batch_size:,}", fmt(p.b_simple, ",.0f"), p.interval, p.ratio]
            for name, pts in found.items() for p in pts]
    cols = [("run", "left"), ("epoch", "right"), ("batch", "right"), ("B_simple", "right"), ("90% CI", "right"),
            ("B/B_simple", "right")]
    return FitTable("noise scale through training (first seed)", cols, rows,
                    caption=["B/B_simple ≪ 1: room to grow; ≫ 1: parallelism, not progress"])


VERDICT_STYLES = {"ACCEPTED": "bold green", "REJECTED": "bold red", "INCONCLUSIVE": "bold yellow",
                  "INDICATIVE": "bold yellow"}


def print_verdict(doc: bsadvisor.Validation, console: Console) -> None:
    """ACCEPTED, REJECTED or INCONCLUSIVE, the paired difference and its interval, the variants, the savings."""
    doc = bsadvisor.Validation.of(doc)
    v = doc.verdict
    for name, w in v.variants.items():
        console.print(Text(f"{name}: {status_word(w).lower()}, " + (w.reason or difference_text(w, at=v))
                           + " (a variant: it does not decide the exit code)"))
    word = status_word(v)
    line = Text.assemble((word, VERDICT_STYLES[word]), ": " + verdict_text(doc))
    extra = []  # the ratios compare finished runs; a diverged run stopped early
    if not v.reason and v.update_ratio:
        extra.append(ratio_text(v.update_ratio, "fewer updates", "more updates"))
    if v.wall_ratio and not v.reason:
        extra.append(ratio_text(v.wall_ratio, "less training time", "more training time"))
    if extra:
        line.append("; " + ", ".join(extra))
    console.print(line)


def ratio_text(ratio: float, fewer: str, more: str) -> str:
    """``3.00× fewer updates`` for original/plan = 3; ``1.16× more training time`` for 0.86 (the plan slower)."""
    return f"{ratio:.2f}× {fewer}" if ratio >= 1 else f"{1 / ratio:.2f}× {more}"
