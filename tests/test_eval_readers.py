"""Benchmark readers (OTB, UAV123, NfS, TNL2K, VOT) on trees built from the real shared frames."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lorat_scale.data.readers import nfs, otb, tnl2k, uav123, vot
from lorat_scale.data.readers._common import AnnotationError


@pytest.fixture(scope="module")
def crossing(shared_data) -> tuple[list[Path], np.ndarray]:
    """The 120 real OTB Crossing frames and their x,y,w,h GT."""
    d = shared_data / "otb" / "Crossing"
    frames = sorted((d / "img").glob("*.jpg"))
    gt = np.loadtxt(d / "groundtruth_rect.txt")
    assert len(frames) == len(gt) == 120
    return frames, gt


def _link(frames: list[Path], folder: Path, numbers: list[int], fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f, k in zip(frames, numbers):
        os.symlink(f, folder / (fmt % k))


def _write(path: Path, rows: np.ndarray, sep: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sep.join(f"{v:g}" for v in r) + "\n" for r in rows))


def test_otb_real_crossing(shared_data, crossing):
    seqs = otb.read(shared_data / "otb")
    assert [s.name for s in seqs] == ["Crossing"]
    s = seqs[0]
    assert len(s) == 120 and s.frame_size == (360, 240) and s.valid.all()
    assert s.boxes[0].tolist() == [205, 151, 222, 201]  # tab-separated 205 151 17 50, as-is (no -1)
    assert s.frames[0].endswith("img/0001.jpg")


def test_otb_special_cases(tmp_path, crossing):
    frames, gt = crossing
    # Two targets sharing frames.
    _link(frames, tmp_path / "Jogging" / "img", list(range(1, 121)), "%04d.jpg")
    _write(tmp_path / "Jogging" / "groundtruth_rect.1.txt", gt)
    _write(tmp_path / "Jogging" / "groundtruth_rect.2.txt", gt + [1, 1, 0, 0], sep="\t")
    # Human4: .1 is empty, only .2 annotates.
    _link(frames, tmp_path / "Human4" / "img", list(range(1, 121)), "%04d.jpg")
    (tmp_path / "Human4" / "groundtruth_rect.1.txt").write_text("\n")
    _write(tmp_path / "Human4" / "groundtruth_rect.2.txt", gt)
    # David: GT covers frames 300..770 only; here the folder holds 295..414 -> 300..414 (115).
    _link(frames, tmp_path / "David" / "img", list(range(295, 415)), "%04d.jpg")
    _write(tmp_path / "David" / "groundtruth_rect.txt", gt[:115])
    # Tiger1: the first 5 frames and GT lines are omitted.
    _link(frames, tmp_path / "Tiger1" / "img", list(range(1, 121)), "%04d.jpg")
    _write(tmp_path / "Tiger1" / "groundtruth_rect.txt", gt)
    # Board: 5-digit names.
    _link(frames[:10], tmp_path / "Board" / "img", list(range(1, 11)), "%05d.jpg")
    _write(tmp_path / "Board" / "groundtruth_rect.txt", gt[:10])
    seqs = {s.name: s for s in otb.read(tmp_path)}
    assert sorted(seqs) == ["Board", "David", "Human4", "Jogging-1", "Jogging-2", "Tiger1"]
    assert seqs["Jogging-1"].frames == seqs["Jogging-2"].frames
    assert seqs["Jogging-2"].boxes[0].tolist() == [206, 152, 223, 202]
    assert len(seqs["Human4"]) == 120
    assert len(seqs["David"]) == 115 and seqs["David"].frames[0].endswith("0300.jpg")
    assert len(seqs["Tiger1"]) == 115 and seqs["Tiger1"].frames[0].endswith("0006.jpg")
    assert seqs["Tiger1"].boxes[0].tolist() == [gt[5, 0], gt[5, 1], gt[5, 0] + gt[5, 2], gt[5, 1] + gt[5, 3]]
    assert len(seqs["Board"]) == 10
    # A GT file that does not match its frames: error naming the file.
    _write(tmp_path / "Board" / "groundtruth_rect.txt", gt[:9])
    with pytest.raises(AnnotationError, match=r"Board/groundtruth_rect.txt:10: 9 box lines but 10 frames"):
        otb.read(tmp_path)


def test_uav123_segments_and_nan(tmp_path, crossing):
    frames, gt = crossing
    data = tmp_path / "data_seq" / "UAV123"
    # bird1_1 = frames 1..253, bird1_2 = 775..1477 of video bird1: build 1..60 and 775..834.
    _link(frames[:60], data / "bird1", list(range(1, 61)), "%06d.jpg")
    _link(frames[60:], data / "bird1", list(range(775, 835)), "%06d.jpg")
    _write(tmp_path / "anno" / "UAV123" / "bird1_1.txt", gt[:60])
    _write(tmp_path / "anno" / "UAV123" / "bird1_2.txt", gt[60:])
    _link(frames, data / "uav3", list(range(1, 121)), "%06d.jpg")
    text = "".join("NaN,NaN,NaN,NaN\n" if i == 7 else ",".join(f"{v:g}" for v in r) + "\n" for i, r in enumerate(gt))
    (tmp_path / "anno" / "UAV123" / "uav3.txt").write_text(text)
    seqs = {s.name: s for s in uav123.read(tmp_path)}
    assert sorted(seqs) == ["bird1_1", "bird1_2", "uav3"]
    assert len(seqs["bird1_1"]) == 60 and len(seqs["bird1_2"]) == 60
    assert seqs["bird1_2"].frames[0].endswith("000775.jpg")
    assert seqs["bird1_2"].boxes[0].tolist() == [gt[60, 0], gt[60, 1], gt[60, 0] + gt[60, 2], gt[60, 1] + gt[60, 3]]
    u = seqs["uav3"]
    assert len(u) == 120 and not u.valid[7] and u.valid.sum() == 119 and np.isnan(u.boxes[7]).all()
    (tmp_path / "anno" / "UAV123" / "car99_1.txt").write_text("1,2,3,4\n")
    with pytest.raises(AnnotationError, match="car99_1.*not a known UAV123 segment"):
        uav123.read(tmp_path)


def test_nfs_official_and_converted_layouts(tmp_path, crossing):
    frames, gt = crossing
    root = tmp_path / "nfs"
    _link(frames, root / "Crossing" / "30" / "Crossing", list(range(1, 121)), "%05d.jpg")
    xyxy = np.c_[gt[:, :2], gt[:, :2] + gt[:, 2:]]
    lines = [f"1 {a:g} {b:g} {c:g} {d:g} {i + 1} {1 if i == 3 else 0} 0 0 \"person\"\n"
             for i, (a, b, c, d) in enumerate(xyxy)]
    (root / "Crossing" / "30" / "Crossing.txt").write_text("".join(lines))
    # A 30 fps folder with the 240 fps annotation (8 lines per frame, one frame extra).
    _link(frames[:20], root / "bee" / "30" / "bee", list(range(1, 21)), "%05d.jpg")
    lines240 = [f"1 {k} {k} {k + 10} {k + 10} {k + 1} 0 0 0 \"bee\"\n" for k in range(8 * 21)]
    (root / "bee" / "30" / "bee.txt").write_text("".join(lines240))
    seqs = {s.name: s for s in nfs.read(root)}
    c = seqs["Crossing"]
    assert len(c) == 120 and c.boxes[0].tolist() == [205, 151, 222, 201]
    assert not c.valid[3] and c.valid.sum() == 119 and not c.extra["visible"][3]
    b = seqs["bee"]
    assert len(b) == 20 and b.boxes[1].tolist() == [8, 8, 18, 18]  # every 8th line, cut to 20 frames
    conv = tmp_path / "conv"
    _link(frames, conv / "sequences" / "Crossing", list(range(1, 121)), "%05d.jpg")
    _write(conv / "anno" / "nfs_Crossing.txt", gt, sep="\t")
    s = nfs.read(conv)[0]
    assert s.name == "Crossing" and s.boxes[0].tolist() == [205, 151, 222, 201] and len(s) == 120


def test_tnl2k(tmp_path, crossing):
    frames, gt = crossing
    _link(frames, tmp_path / "Crossing_person" / "imgs", list(range(1, 121)), "%05d.jpg")
    g = gt.copy()
    g[10, 2] = 0  # an empty box is invalid
    _write(tmp_path / "Crossing_person" / "groundtruth.txt", g)
    (tmp_path / "Crossing_person" / "language.txt").write_text("the man walking on the left\n")
    s = tnl2k.read(tmp_path)[0]
    assert s.name == "Crossing_person" and len(s) == 120 and s.valid.sum() == 119 and not s.valid[10]
    assert s.extra["language"][0] == "the man walking on the left"
    _write(tmp_path / "Crossing_person" / "groundtruth.txt", g[:-1])
    with pytest.raises(AnnotationError, match="groundtruth.txt:120: 119 box lines but 120 frames"):
        tnl2k.read(tmp_path)


def test_vot_polygons_become_minmax_boxes(shared_data, tmp_path):
    seqs = {s.name: s for s in vot.read(shared_data / "vot")}
    assert sorted(seqs) == ["bag", "vot15_ball1"]
    bag = seqs["bag"]
    assert len(bag) == 196 and bag.frame_size == (480, 360)
    # 334.02,128.36,438.19,188.78,396.39,260.83,292.23,200.41 -> min/max of the corners
    assert bag.boxes[0].tolist() == pytest.approx([292.23, 128.36, 438.19, 260.83])
    ball = seqs["vot15_ball1"]
    assert len(ball) == 105 and ball.boxes[0].tolist() == pytest.approx([492, 417, 539, 463])
    assert vot.polygon_to_xyxy([1, 2, 3, 4]).tolist() == [1, 2, 4, 6]  # 4 values: x,y,w,h
    d = tmp_path / "seq"
    d.mkdir()
    (d / "groundtruth.txt").write_text("m1,2,3\n")
    with pytest.raises(AnnotationError, match=r"seq/groundtruth.txt:1: segmentation mask"):
        vot.read(tmp_path)
