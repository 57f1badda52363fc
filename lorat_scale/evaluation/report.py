"""Comparison reports over several trackers: Markdown/CSV tables and OPE plots (PNG).

Plots follow the papers' style: success plot (overlap threshold 0..1), precision plot (0..50 px)
and normalized precision plot (0..0.5), legend ``name [score]`` sorted best first, where the score
is the AUC (AO on GOT-10k), the value at 20 px or at 0.2 (or what the convention's toolkit calls
its score). Each tracker keeps one colour and line style in every plot. Every table row names
the convention that produced its numbers; the conventions are spelled out under the table and
printed into every plot.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..outputs import atomic_path, write_atomic
from .metrics import Summary

METRICS = ("AUC", "P", "P_norm", "OP50", "OP75", "AO", "SR0.5", "SR0.75")
_LINESTYLES = ("-", "--", "-.", ":")


def _columns(summaries: list[Summary]) -> list[str]:
    present = {k for s in summaries for k in s.scores}
    return [m for m in METRICS if m in present]


def _rows(summaries: list[Summary]) -> list[dict[str, str]]:
    cols = _columns(summaries)
    out = []
    for s in sorted(summaries, key=lambda s: (s.convention.name, -s.auc)):
        row = {"Tracker": s.tracker, "Benchmark": s.benchmark, "Sequences": str(len(s.sequences)),
               "Runs": str(len(s.runs) or 1)}
        for c in cols:
            v = s.scores.get(c)
            row[c] = f"{v:.2f}" if v is not None and np.isfinite(v) else "-"
        row["FPS"] = f"{s.fps:.1f}" if s.fps else "-"
        row["Convention"] = s.convention.name
        out.append(row)
    return out


def _legend(summaries: list[Summary]) -> list[str]:
    seen, lines = set(), []
    for s in summaries:
        if s.convention.name not in seen:
            seen.add(s.convention.name)
            lines.append(f"- `{s.convention.name}`: {s.convention.toolkit} ({s.convention.source})")
    return lines


def markdown_table(summaries: list[Summary]) -> str:
    """Markdown table (by convention, best first), the conventions and notes underneath."""
    rows = _rows(summaries)
    if not rows:
        return "(no results)\n"
    cols = list(rows[0])
    text = ["| " + " | ".join(cols) + " |",
            "|" + "|".join("---" if c in ("Tracker", "Benchmark", "Convention") else "---:" for c in cols) + "|"]
    text += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    text += ["", "Scores in %; each row's numbers are computed as the toolkit of its convention computes them:"]
    text += _legend(summaries)
    notes = [f"- {s.tracker} ({s.convention.name}): {n}" for s in summaries for n in s.notes]
    if notes:
        text += ["", "Notes:"] + notes
    return "\n".join(text) + "\n"


def csv_table(summaries: list[Summary]) -> str:
    """CSV text of the same table (one row per tracker and convention)."""
    buf = io.StringIO()
    rows = _rows(summaries)
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def line_styles(summaries: list[Summary]) -> dict[str, tuple[str, str]]:
    """tracker -> (colour, line style), fixed for every plot: ranked once by the success score."""
    order: list[str] = []
    for s in sorted(summaries, key=lambda s: -s.auc):
        if s.tracker not in order:
            order.append(s.tracker)
    return {t: (f"C{k % 10}", _LINESTYLES[(k // 10) % len(_LINESTYLES)]) for k, t in enumerate(order)}


_PLOTS = {
    "success": ("Success plot", "Overlap threshold", "Success rate [%]", (0, 1), "lower left"),
    "precision": ("Precision plot", "Location error threshold [pixels]", "Precision [%]", (0, 50), "lower right"),
    "norm_precision": ("Normalized precision plot", "Normalized location error threshold",
                       "Normalized precision [%]", (0, 0.5), "lower right"),
}


def plot_curves(summaries: list[Summary], out_dir: str | Path, suffix: str = "",
                styles: dict[str, tuple[str, str]] | None = None) -> list[Path]:
    """success.png, precision.png, norm_precision.png (those the conventions define) in ``out_dir``."""
    # The object-oriented API with an Agg canvas: no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    styles = styles or line_styles(summaries)
    bench = ", ".join(dict.fromkeys(s.benchmark for s in summaries))
    conv = "; ".join(dict.fromkeys(str(s.convention) for s in summaries))
    paths = []
    for key, (title, xl, yl, xlim, loc) in _PLOTS.items():
        have = [s for s in summaries if key in s.curves]
        if not have:
            continue
        fig = Figure(figsize=(6, 5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for k, s in enumerate(sorted(have, key=lambda s: -s.curves[key].score)):
            c = s.curves[key]
            colour, style = styles[s.tracker]
            ax.plot(c.x, c.y, linestyle=style, color=colour, linewidth=2 if k == 0 else 1.5,
                    label=f"{s.tracker} [{c.score:.1f}]")
        ax.set(title=f"{title} on {bench}", xlabel=xl, ylabel=yl, xlim=xlim, ylim=(0, 102))  # 100 stays visible
        ax.grid(True, linestyle=":", alpha=0.6)
        ax.legend(loc=loc, fontsize=8, framealpha=0.9)
        fig.text(0.01, 0.005, conv, fontsize=5.5, color="0.35", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        p = out_dir / f"{key}{suffix}.png"
        with atomic_path(p) as tmp:
            fig.savefig(tmp)
        paths.append(p)
    return paths


def write_report(summaries: list[Summary], out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """report.md, report.csv and the plots (one set per convention) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, cs = out_dir / "report.md", out_dir / "report.csv"
    write_atomic(md, (f"# {title}\n\n" if title else "") + markdown_table(summaries))
    write_atomic(cs, csv_table(summaries))
    files: dict[str, Path] = {"markdown": md, "csv": cs}
    convs = list(dict.fromkeys(s.convention.name for s in summaries))
    styles = line_styles(summaries)  # one style per tracker in every plot of the report
    for c in convs:
        suffix = f"_{c}" if len(convs) > 1 else ""
        for p in plot_curves([s for s in summaries if s.convention.name == c], out_dir, suffix, styles):
            files[p.stem] = p
    return files
