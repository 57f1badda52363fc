"""Result files (pytracking's layout), run records, submission zips."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from lorat_scale.evaluation.results import (RECORD, ResultFileError, RunRecord, claim_run_folder, list_results,
                                            list_runs, read_boxes_txt, read_record, read_sequence_result,
                                            result_file, write_got10k_zip, write_sequence_result,
                                            write_trackingnet_zip)

BOXES = np.array([[10.2, 20.7, 30.5, 40.0], [11.0, 21.0, 31.0, 41.0]])  # xyxy


def test_pytracking_layout_roundtrip_and_offset(tmp_path):
    p = result_file(tmp_path, "lorat", "S-224", 0, "airplane-1")
    # pytracking: '{}/{}/{}_{:03d}'.format(results_path, name, parameter_name, run_id) + '/<seq>.txt'
    assert p == tmp_path / "lorat" / "S-224_000" / "airplane-1.txt"
    assert result_file(tmp_path, "lorat", "S-224", None, "x") == tmp_path / "lorat" / "S-224" / "x.txt"
    write_sequence_result(p, BOXES, times=[0.5, 0.01], coord_offset=1.0)
    assert p.read_text().splitlines()[0] == "11.2000\t21.7000\t20.3000\t19.3000"  # x,y,w,h, 1-based, tabs
    # pytracking's load_text tries np.loadtxt(delimiter='\t') first: it reads ours unchanged
    assert np.loadtxt(p, delimiter="\t").tolist() == [[11.2, 21.7, 20.3, 19.3], [12.0, 22.0, 20.0, 20.0]]
    assert (p.parent / "airplane-1_time.txt").read_text().split() == ["0.500000", "0.010000"]
    boxes, times = read_sequence_result(p)
    assert boxes.tolist() == [[11.2, 21.7, 20.3, 19.3], [12.0, 22.0, 20.0, 20.0]] and times.tolist() == [0.5, 0.01]
    assert not list(p.parent.glob(".*tmp"))  # atomic write left no temporary file
    (tmp_path / "lorat" / "S-2240_000").mkdir()  # another parameter name, not a run of S-224
    write_sequence_result(tmp_path / "lorat" / "S-224" / "a.txt", BOXES)  # pytracking's run_id=None folder
    assert list_runs(tmp_path, "lorat", "S-224") == ["S-224", "S-224_000"]
    assert list_results(tmp_path) == [("lorat", "S-224")]


def test_bad_result_files_name_file_and_line(tmp_path):
    p = tmp_path / "seq.txt"
    p.write_text("1,2,3,4\n1\t2\t3\t4\n5 6 7\n")
    with pytest.raises(ResultFileError, match=r"seq.txt:3: expected 4 numbers, got 3"):
        read_boxes_txt(p)
    p.write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(ResultFileError, match=r"seq.txt:2: not a number in '1,2,x,4', expected 4 numbers"):
        read_boxes_txt(p)
    p.write_text("1,2,3,4\n1 2 3 4\nnan,nan,nan,nan\n")  # mixed separators; NaN is the convention's call
    assert np.isnan(read_boxes_txt(p)[2]).all()
    p.write_bytes(b"1,2,3,4\n\xff\xfe\n")
    with pytest.raises(ResultFileError, match=r"seq.txt: cannot read as text"):
        read_boxes_txt(p)
    with pytest.raises(ResultFileError, match="result file not found"):
        read_sequence_result(tmp_path / "missing.txt")


def test_run_records_refuse_to_mix(tmp_path):
    a = RunRecord({"checkpoint": {"sha256": "aa"}, "variant": "S-224"}, {"checkpoint": "runA/model.safetensors"})
    b = RunRecord({"checkpoint": {"sha256": "bb"}, "variant": "S-224"}, {"checkpoint": "runB/model.safetensors"})
    run = tmp_path / "lorat" / "S-224_000"
    claim_run_folder(run, a)
    assert read_record(run).key == a.key != b.key
    claim_run_folder(run, a)  # the same model again: fine (resume)
    with pytest.raises(ResultFileError, match=r"holds results of another model .*runA/model.safetensors.*"
                                              r"runB/model.safetensors"):
        claim_run_folder(run, b)
    other = tmp_path / "lorat" / "S-224_001"
    write_sequence_result(other / "x.txt", BOXES)
    with pytest.raises(ResultFileError, match=f"holds result files but no {RECORD}"):
        claim_run_folder(other, a)
    (run / RECORD).write_text((run / RECORD).read_text().replace('"aa"', '"ab"'))
    with pytest.raises(ResultFileError, match="does not match its identity"):
        read_record(run)


def test_got10k_zip(tmp_path):
    xywh = np.concatenate([BOXES[:, :2], BOXES[:, 2:] - BOXES[:, :2]], axis=1)
    runs = [{"GOT-10k_Test_000001": (xywh, np.array([0.1, 0.02]))},
            {"GOT-10k_Test_000001": (xywh + [1, 1, 0, 0], None)}]
    z = write_got10k_zip(tmp_path / "got.zip", runs)
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
        assert names == ["GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt",
                         "GOT-10k_Test_000001/GOT-10k_Test_000001_002.txt",
                         "GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt"]
        # [10.2, 20.7, 30.5, 40.0] touches pixels 10..30 x 20..39 -> integer x,y,w,h 10,20,21,20
        assert zf.read(names[0]).decode().splitlines() == ["10,20,21,20", "11,21,20,20"]
        assert zf.read(names[1]).decode().splitlines()[0] == "11,21,21,20"
        assert [float(v) for v in zf.read(names[2]).decode().split()] == [0.1, 0.02]


def test_trackingnet_zip_is_rasterized(tmp_path):
    xywh = np.concatenate([BOXES[:, :2], BOXES[:, 2:] - BOXES[:, :2]], axis=1)
    z = write_trackingnet_zip(tmp_path / "tn.zip", {"-0Q9iFyL4j0_0": xywh, "0-6LB4FqxoE_0": xywh[:1]})
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["-0Q9iFyL4j0_0.txt", "0-6LB4FqxoE_0.txt"]
        assert zf.read("-0Q9iFyL4j0_0.txt").decode().splitlines() == ["10,20,21,20", "11,21,20,20"]
