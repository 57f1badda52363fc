"""``lorat-scale evaluate``: scoring existing results, missing results, server-only submission zips."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from lorat_scale.cli import main
from lorat_scale.data.readers import otb
from lorat_scale.evaluation.results import result_file, write_sequence_result


def test_evaluate_no_run_scores_and_reports(tmp_path, shared_data, capsys):
    root = shared_data / "otb"
    seq = otb.read(root)[0]
    args = ["evaluate", "--benchmark", "otb", "--root", str(root), "--results", str(tmp_path),
            "--tracker-name", "t", "--no-run", "--repeat", "2"]
    write_sequence_result(result_file(tmp_path, "t", 0, seq.name), seq.boxes)
    assert main(args) == 0
    assert "1 sequence runs have no result yet" in capsys.readouterr().out  # run_002 missing
    write_sequence_result(result_file(tmp_path, "t", 1, seq.name), seq.boxes)
    assert main(args + ["--convention", "pytracking", "--iou", "pixel"]) == 0
    out = capsys.readouterr().out
    assert "AUC 95.24" in out  # GT vs GT: 20/21
    assert "validity=pytracking" in out and "iou=pixel" in out
    assert (tmp_path / "t" / "report_otb" / "success.png").is_file()


def test_got10k_test_writes_submission_zip(tmp_path, shared_data, capsys):
    frames = sorted((shared_data / "otb" / "Crossing" / "img").glob("*.jpg"))[:5]
    root = tmp_path / "got10k"
    for name in ("GOT-10k_Test_000001", "GOT-10k_Test_000002"):
        d = root / "test" / name
        d.mkdir(parents=True)
        for i, f in enumerate(frames):
            os.symlink(f, d / f"{i + 1:08d}.jpg")
        (d / "groundtruth.txt").write_text("205,151,17,50\n")  # test split: first frame only
    (root / "test" / "list.txt").write_text("GOT-10k_Test_000001\nGOT-10k_Test_000002\n")
    res = tmp_path / "res"
    for r in range(3):
        for name in ("GOT-10k_Test_000001", "GOT-10k_Test_000002"):
            write_sequence_result(result_file(res, "t", r, name), np.tile([205.5, 151, 222, 201], (5, 1)),
                                  times=np.full(5, 0.01))
    assert main(["evaluate", "--benchmark", "got10k_test", "--root", str(root), "--results", str(res),
                 "--tracker-name", "t", "--no-run", "--repeat", "3"]) == 0
    assert "upload" in capsys.readouterr().out
    with zipfile.ZipFile(res / "t" / "t_got10k_test.zip") as zf:
        names = set(zf.namelist())
        assert len(names) == 2 * 4 and "GOT-10k_Test_000002/GOT-10k_Test_000002_003.txt" in names
        assert zf.read("GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt").decode().splitlines()[0] == "205,151,17,50"
