"""Reports: table order and contents, CSV, PNG plots with one style per tracker, ``lorat-scale report``."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from lorat_scale.boxes import xyxy_to_xywh
from lorat_scale.cli import main
from lorat_scale.data.readers import otb
from lorat_scale.evaluation.metrics import Summary, get_convention, score_sequence, summarize
from lorat_scale.evaluation.report import line_styles, plot_curves
from lorat_scale.evaluation.results import result_file, write_sequence_result

SHIFTS = {"good": 1.0, "fair": 4.0, "poor": 9.0}


@pytest.fixture()
def results(tmp_path, shared_data):
    seq = otb.read(shared_data / "otb")[0]
    for name, dx in SHIFTS.items():
        write_sequence_result(result_file(tmp_path, name, "S-224", 0, seq.name), seq.boxes + [dx, 0, dx, 0],
                              times=np.full(len(seq), 0.01))
    return tmp_path, seq


def test_report_command_table_csv_and_plots(results, shared_data, capsys):
    root, seq = results
    out = root / "rep"
    rc = main(["report", "--benchmark", "otb", "--root", str(shared_data / "otb"), "--results", str(root),
               "--out", str(out), "--convention", "pytracking,otb"])
    assert rc == 0
    md = (out / "report.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| ")]
    header, rows = rows[0], rows[1:]
    assert header[:4] == ["Tracker", "Benchmark", "Sequences", "Runs"] and header[-1] == "Convention"
    assert [r[0] for r in rows] == ["good/S-224", "fair/S-224", "poor/S-224"] * 2  # per convention, best first
    assert [r[-1] for r in rows] == ["otb"] * 3 + ["pytracking"] * 3 and rows[0][1] == "OTB-100"
    assert "`pytracking`: pytracking analysis (visionml/pytracking@7eb9e74" in md
    assert "`otb`: OTB MATLAB toolkit" in md and "OP50" in header
    assert rows[0][header.index("OP50")] == "-"  # the OTB toolkit has no OP50: not invented
    out_text = capsys.readouterr().out
    assert "pytracking" in out_text and "wrote" in out_text
    table = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    fair = next(r for r in table if r["Tracker"] == "fair/S-224" and r["Convention"] == "pytracking")
    gt = xyxy_to_xywh(seq.boxes)
    want = summarize("pytracking", [[score_sequence("pytracking", gt + [4, 0, 0, 0], gt, benchmark="otb")]])
    assert float(fair["AUC"]) == pytest.approx(want.scores["AUC"], abs=0.005)
    assert float(fair["P"]) == pytest.approx(100.0) and float(fair["FPS"]) == pytest.approx(100.0)
    for conv in ("pytracking", "otb"):  # one set of plots per convention
        for png in ("success", "precision"):
            data = (out / f"{png}_{conv}.png").read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert (out / "norm_precision_pytracking.png").is_file() and not (out / "norm_precision_otb.png").exists()


def _summary(name: str, auc: float, prec: float) -> Summary:
    conv = get_convention("stark")
    x = np.linspace(0, 1, 21)
    return Summary(conv, name, "OTB-100", ["a"], {"AUC": auc, "P": prec},
                   {"success": _curve(x, auc), "precision": _curve(np.arange(51.0), prec)})


def _curve(x, score):
    from lorat_scale.evaluation.metrics import Curve

    return Curve(x, np.full(len(x), score), score)


def test_one_style_per_tracker_in_every_plot(tmp_path, monkeypatch):
    """Styles are fixed by the success ranking once; the precision plot's own ranking cannot reuse them."""
    # 12 trackers whose precision ranking is the reverse of their AUC ranking
    summaries = [_summary(f"t{k:02d}", 60 - k, 40 + k) for k in range(12)]
    styles = line_styles(summaries)
    assert len(set(styles.values())) == 12  # colour cycle repeats after 10: the line style differs
    assert styles["t00"] == ("C0", "-") and styles["t10"] == ("C0", "--")
    drawn: dict = {}
    from matplotlib.axes import Axes

    real_plot = Axes.plot

    def spy(self, x, y, *args, **kw):
        drawn.setdefault(self, []).append((kw["label"].split(" ")[0], kw["color"], kw["linestyle"]))
        return real_plot(self, x, y, *args, **kw)

    monkeypatch.setattr(Axes, "plot", spy)
    plot_curves(summaries, tmp_path)
    per_plot = [{name: (c, s) for name, c, s in lines} for lines in drawn.values()]
    assert len(per_plot) == 2 and all(p == styles for p in per_plot)
    assert sorted(ax.get_title() for ax in drawn) == ["Precision plot on OTB-100", "Success plot on OTB-100"]
