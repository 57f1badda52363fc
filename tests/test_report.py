"""Reports: table order and contents, CSV, PNG plots, and the ``lorat-scale report`` command."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from lorat_scale.cli import main
from lorat_scale.data.readers import otb
from lorat_scale.evaluation.metrics import evaluate_sequence
from lorat_scale.evaluation.results import result_file, write_sequence_result

SHIFTS = {"good": 1.0, "fair": 4.0, "poor": 9.0}


@pytest.fixture()
def results(tmp_path, shared_data):
    seq = otb.read(shared_data / "otb")[0]
    for name, dx in SHIFTS.items():
        write_sequence_result(result_file(tmp_path, name, 0, seq.name), seq.boxes + [dx, 0, dx, 0],
                              times=np.full(len(seq), 0.01))
    return tmp_path, seq


def test_report_command_table_csv_and_plots(results, shared_data, capsys):
    root, seq = results
    out = root / "rep"
    rc = main(["report", "--benchmark", "otb", "--root", str(shared_data / "otb"), "--results", str(root),
               "--out", str(out), "--convention", "pytracking"])
    assert rc == 0
    md = (out / "report.md").read_text()
    order = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "Tracker" not in line]
    assert order == ["good", "fair", "poor"]  # best AUC first
    assert "validity=pytracking" in md and "validity=pytracking" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    want = evaluate_sequence(seq.boxes + [4, 0, 4, 0], seq.boxes, convention="pytracking")
    fair = next(r for r in rows if r["Tracker"] == "fair")
    assert float(fair["AUC"]) == pytest.approx(100 * want.auc, abs=0.05)
    assert float(fair["P"]) == pytest.approx(100.0) and float(fair["FPS"]) == pytest.approx(100.0)
    for png in ("success.png", "precision.png", "norm_precision.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
