"""Comparison reports over several trackers: Markdown/CSV tables and OPE plots (PNG).

Plots follow the papers' style: success plot (overlap threshold 0..1), precision plot (0..50 px)
and normalized precision plot (0..0.5), legend ``name [score]`` sorted best first, where the score
is the AUC (success), the value at 20 px (precision) or at 0.2 (normalized precision). The
metric convention is written under every table and into every plot.
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from .metrics import IOU_THRESHOLDS, NORM_THRESHOLDS, PIXEL_THRESHOLDS, CONVENTIONS, Summary, get_convention

COLUMNS = ("AUC", "P_norm", "P", "AO", "SR0.5", "SR0.75", "FPS")


def _rows(summaries: list[Summary]) -> list[dict[str, str]]:
    out = []
    for s in sorted(summaries, key=lambda s: -s.auc):
        d = s.as_dict()
        row = {"Tracker": s.tracker, "Dataset": s.dataset, "Sequences": str(len(s.sequences)),
               "Runs": str(len(s.extra.get("runs", [])) or 1)}
        for c in COLUMNS:
            row[c] = f"{d[c]:.1f}" if c in d and np.isfinite(d[c]) else "-"
        out.append(row)
    return out


def _conventions(summaries: list[Summary]) -> str:
    conv = sorted({str(s.convention) for s in summaries})
    return "; ".join(conv)


def markdown_table(summaries: list[Summary]) -> str:
    """Markdown table, best AUC first, with the metric convention underneath."""
    rows = _rows(summaries)
    if not rows:
        return "(no results)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c in ("Tracker", "Dataset") else "---:"
                                                          for c in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    lines.append("")
    lines.append(f"All scores in %. Convention: {_conventions(summaries)}.")
    return "\n".join(lines) + "\n"


def csv_table(summaries: list[Summary]) -> str:
    """CSV text of the same table (one row per tracker, convention in its own column)."""
    buf = io.StringIO()
    rows = _rows(summaries)
    conv = {s.tracker: str(s.convention) for s in summaries}
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) + ["Convention"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "Convention": conv[r["Tracker"]]})
    return buf.getvalue()


def plot_curves(summaries: list[Summary], out_dir: str | Path, title: str = "") -> list[Path]:
    """success.png, precision.png, norm_precision.png in ``out_dir``."""
    # The object-oriented API with an Agg canvas: no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = title or (summaries[0].dataset if summaries else "")
    specs = [
        ("success.png", f"Success plots of OPE on {name}", "Overlap threshold", "Success rate",
         IOU_THRESHOLDS, lambda s: s.success_curve, lambda s: s.auc, (0, 1)),
        ("precision.png", f"Precision plots of OPE on {name}", "Location error threshold (px)", "Precision",
         PIXEL_THRESHOLDS, lambda s: s.precision_curve, lambda s: s.prec, (0, 50)),
        ("norm_precision.png", f"Normalized precision plots of OPE on {name}", "Normalized location error threshold",
         "Normalized precision", NORM_THRESHOLDS, lambda s: s.norm_precision_curve, lambda s: s.norm_prec,
         (0, 0.5)),
    ]
    # One colour per tracker in all three plots (by AUC rank), so lines can be followed across them.
    palette = [f"C{k % 10}" for k in range(len(summaries))]
    colour = {id(s): palette[k] for k, s in enumerate(sorted(summaries, key=lambda s: -s.auc))}
    paths = []
    for fname, ttl, xl, yl, x, curve, score, xlim in specs:
        fig = Figure(figsize=(6, 5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ranked = sorted(summaries, key=lambda s: (-score(s), -s.auc))  # ties broken by AUC
        for k, s in enumerate(ranked):
            style = "-" if k < 10 else "--"  # the colour cycle repeats after 10 lines
            ax.plot(x, curve(s), style, color=colour[id(s)], linewidth=2 if k == 0 else 1.5,
                    label=f"{s.tracker} [{100 * score(s):.1f}]")
        ax.set(title=ttl, xlabel=xl, ylabel=yl, xlim=xlim, ylim=(0, 1.02))  # 1.0 stays visible
        ax.grid(True, linestyle=":", alpha=0.6)
        ax.legend(loc="lower left" if fname == "success.png" else "lower right", fontsize=8, framealpha=0.9)
        conv = _conventions(summaries)
        fig.text(0.01, 0.005, conv, fontsize=5.5, color="0.35", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        p = out_dir / fname
        fig.savefig(p)
        paths.append(p)
    return paths


def write_report(summaries: list[Summary], out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """report.md, report.csv and the three plots in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, cs = out_dir / "report.md", out_dir / "report.csv"
    md.write_text((f"# {title}\n\n" if title else "") + markdown_table(summaries))
    cs.write_text(csv_table(summaries))
    plots = plot_curves(summaries, out_dir, title)
    return {"markdown": md, "csv": cs, **{p.stem: p for p in plots}}


# ------------------------------------------------------------------------------------ command line
def add_report_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``lorat-scale report`` / ``scripts/report.py``."""
    p.add_argument("--benchmark", required=True, help="benchmark name (see --help of evaluate), e.g. lasot")
    p.add_argument("--root", required=True, help="benchmark root folder (ground truth)")
    p.add_argument("--results", required=True, help="results folder holding <tracker>/<run>/<seq>.txt")
    p.add_argument("--trackers", default="", help="comma-separated tracker folders (default: all)")
    p.add_argument("--convention", default="stark", choices=sorted(CONVENTIONS))
    p.add_argument("--iou", default=None, choices=["continuous", "pixel"], help="override the IoU convention")
    p.add_argument("--out", default="", help="report folder (default: <results>/report_<benchmark>)")
    p.add_argument("--sequences", default="", help="comma-separated subset of sequence names")


def report_main(args: argparse.Namespace) -> int:
    """Score the given trackers' result folders and write the report."""
    from .results import list_trackers
    from .runner import evaluate_results, load_benchmark

    seqs = load_benchmark(args.benchmark, args.root, args.sequences)
    results = Path(args.results)
    names = [t for t in args.trackers.split(",") if t] or list_trackers(results)
    if not names:
        raise SystemExit(f"no tracker result folders under {results} (expected <tracker>/<run>/<seq>.txt)")
    conv = get_convention(args.convention, iou=args.iou)
    summaries = [evaluate_results(seqs, results, t, conv, dataset=args.benchmark) for t in names]
    out = Path(args.out) if args.out else results / f"report_{args.benchmark}"
    files = write_report(summaries, out, title=args.benchmark)
    print(markdown_table(summaries))
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
