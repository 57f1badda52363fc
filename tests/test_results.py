"""Result files (pytracking txt) and GOT-10k / TrackingNet submission zips."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from lorat_scale.evaluation.results import (ResultFileError, list_runs, read_boxes_txt, read_sequence_result,
                                            result_file, write_got10k_zip, write_sequence_result,
                                            write_trackingnet_zip)

BOXES = np.array([[10.2, 20.7, 30.5, 40.0], [11.0, 21.0, 31.0, 41.0]])  # xyxy


def test_txt_roundtrip_offset_and_layout(tmp_path):
    p = result_file(tmp_path, "lorat_b224", 0, "airplane-1")
    assert p == tmp_path / "lorat_b224" / "run_001" / "airplane-1.txt"
    write_sequence_result(p, BOXES, times=[0.5, 0.01], coord_offset=1.0)
    assert p.read_text().splitlines()[0] == "11.2000,21.7000,20.3000,19.3000"  # x,y,w,h in 1-based coords
    assert (p.parent / "airplane-1_time.txt").read_text().split() == ["0.500000", "0.010000"]
    boxes, times = read_sequence_result(p, num_frames=2, coord_offset=1.0)
    assert boxes == pytest.approx(BOXES) and times.tolist() == [0.5, 0.01]
    assert list_runs(tmp_path, "lorat_b224") == ["run_001"]
    assert not list(p.parent.glob(".*tmp"))  # atomic write left no temporary file


def test_bad_result_files_name_file_and_line(tmp_path):
    p = tmp_path / "seq.txt"
    p.write_text("1,2,3,4\n1\t2\t3\t4\n5 6 7\n")
    with pytest.raises(ResultFileError, match=r"seq.txt:3: expected 4 numbers, got 3"):
        read_boxes_txt(p)
    p.write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(ResultFileError, match=r"seq.txt:2: not a number"):
        read_boxes_txt(p)
    p.write_text("1,2,3,4\n1 2 3 4\n")  # mixed separators are fine
    assert read_boxes_txt(p).tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]
    with pytest.raises(ResultFileError, match=r"seq.txt: 2 box lines but the sequence has 3 frames"):
        read_sequence_result(p, num_frames=3)
    with pytest.raises(ResultFileError, match="result file not found"):
        read_sequence_result(tmp_path / "missing.txt")


def test_got10k_zip(tmp_path):
    runs = [{"GOT-10k_Test_000001": (BOXES, np.array([0.1, 0.02]))},
            {"GOT-10k_Test_000001": (BOXES + 1, None)}]
    z = write_got10k_zip(tmp_path / "got.zip", runs)
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
        assert names == ["GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt",
                         "GOT-10k_Test_000001/GOT-10k_Test_000001_002.txt",
                         "GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt"]
        r1 = zf.read(names[0]).decode().splitlines()
        # [10.2, 20.7, 30.5, 40.0] touches pixels 10..30 x 20..39 -> integer x,y,w,h 10,20,21,20
        assert r1 == ["10,20,21,20", "11,21,20,20"]
        assert zf.read(names[1]).decode().splitlines()[0] == "11,21,21,20"
        assert [float(v) for v in zf.read(names[2]).decode().split()] == [0.1, 0.02]


def test_trackingnet_zip(tmp_path):
    z = write_trackingnet_zip(tmp_path / "tn.zip", {"-0Q9iFyL4j0_0": BOXES, "0-6LB4FqxoE_0": BOXES[:1]})
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["-0Q9iFyL4j0_0.txt", "0-6LB4FqxoE_0.txt"]
        assert zf.read("-0Q9iFyL4j0_0.txt").decode().splitlines() == ["10.20,20.70,20.30,19.30",
                                                                     "11.00,21.00,20.00,20.00"]
