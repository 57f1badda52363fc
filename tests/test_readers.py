"""Dataset readers, cleaning, annotation cache and check-data, on real frames and small trees."""
from __future__ import annotations

import os
import time

from pathlib import Path

import numpy as np
import pytest

from _data_trees import custom_tree, got10k_tree, lasot_tree, real_xywh, trackingnet_tree
from lorat_scale.data.cache import cached_read
from lorat_scale.data.check import check_dataset
from lorat_scale.data.readers import READERS, AnnotationError, FrameError, ReadReport, read_dataset
from lorat_scale.data.readers._common import clean
from lorat_scale.data.sequence import Sequence, SequenceError

LASOT_TEST_SET = "annotations/lasot_test/testing_set.txt"


def test_lasot_real_sequence(shared_data):
    seqs = read_dataset("lasot", shared_data / "lasot", "test", testing_set=shared_data / LASOT_TEST_SET)
    assert [s.name for s in seqs] == ["airplane-1"]
    s = seqs[0]
    assert len(s) == 300 and s.frame_size == (640, 360) and s.dataset == "lasot" and not s.is_image
    # groundtruth line 1 is "367,101,41,16" (1-based): x,y drop by 1, w,h unchanged.
    np.testing.assert_array_equal(s.boxes[0], [366, 100, 407, 116])
    xywh = real_xywh(shared_data, 300)
    np.testing.assert_array_equal(s.boxes[:, 2:] - s.boxes[:, :2], xywh[:, 2:])
    assert s.valid.all()
    assert s.frames[299].endswith("airplane-1/img/00000300.jpg") and os.path.isfile(s.frames[299])
    s.validate()
    assert read_dataset("lasot", shared_data / "lasot", "train", testing_set=shared_data / LASOT_TEST_SET) == []


def test_lasot_train_split_is_1120_of_1400(tmp_path, shared_data):
    # The real testing_set.txt (280 names, 4 per class) over a full-size tree of empty sequences.
    test_names = (shared_data / LASOT_TEST_SET).read_text().split()
    classes = sorted({n.rsplit("-", 1)[0] for n in test_names})
    assert len(test_names) == 280 and len(classes) == 70
    root = tmp_path / "LaSOT"
    for c in classes:
        for k in range(1, 21):
            d = root / c / f"{c}-{k}"
            d.mkdir(parents=True)
            (d / "groundtruth.txt").write_text("10,10,5,5\n")
    from lorat_scale.data.readers import lasot
    train = lasot.split_sequences(root, "train", testing_set=shared_data / LASOT_TEST_SET)
    test = lasot.split_sequences(root, "test", testing_set=shared_data / LASOT_TEST_SET)
    assert len(train) == 1120 and len(test) == 280
    assert not {s.name for s in train} & set(test_names)
    assert len(lasot.split_sequences(root, "all")) == 1400  # what split "all" (LaSOT_ext) reads


def test_lasot_flags_and_trim(tmp_path, shared_data):
    root = lasot_tree(tmp_path, shared_data)
    (s,) = read_dataset("lasot", root, "train")  # testing_set.txt found in the root
    ext = read_dataset("lasot", root, "all", dataset="lasot_ext")  # LaSOT_ext: same layout, no split
    assert [(e.dataset, e.name) for e in ext] == [("lasot_ext", "airplane-1"), ("lasot_ext", "airplane-2")]
    assert s.name == "airplane-2"
    assert s.valid.tolist() == [True] * 3 + [False] * 2 + [True] * 7  # full_occlusion at frames 4, 5
    # occlude the head: those frames are trimmed and the frame paths follow
    (root / "airplane/airplane-2/full_occlusion.txt").write_text(",".join(["1", "1"] + ["0"] * 10))
    rep = ReadReport()
    (s,) = read_dataset("lasot", root, "train", report=rep)
    assert len(s) == 10 and s.frames[0].endswith("00000003.jpg") and rep.trimmed_frames == 2
    assert s.boxes[0].tolist() == (real_xywh(shared_data, 1, 22)[0, :2] - 1).tolist() + \
        (real_xywh(shared_data, 1, 22)[0, :2] - 1 + real_xywh(shared_data, 1, 22)[0, 2:]).tolist()


def test_malformed_line_names_file_and_line(tmp_path, shared_data):
    root = lasot_tree(tmp_path, shared_data)
    gt = root / "airplane/airplane-2/groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[6] = "12,abc,4,4"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{gt}:7: cannot read '12,abc,4,4' as numbers, expected 4"):
        read_dataset("lasot", root, "train")
    rep = ReadReport()
    (s,) = read_dataset("lasot", root, "train", on_error="skip", report=rep)
    assert len(rep.problems) == 1 and f"{gt}:7:" in rep.problems[0]
    assert not s.valid[6] and s.valid[5] and np.isnan(s.boxes[6]).all()
    lines[6] = "1,2,3"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{gt}:7: found 3 values .* expected 4"):
        read_dataset("lasot", root, "train")


def test_nan_box_on_visible_frame(tmp_path, shared_data):
    root = custom_tree(tmp_path, shared_data, n_seqs=1)
    gt = root / "seq0/groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[2] = "10\tinf\t5\t5"
    gt.write_text("\n".join(lines) + "\n")
    # custom: a non-finite box means "unannotated" only for NaN rows; inf on a frame is invalid too
    (s,) = read_dataset("custom", root)
    assert not s.valid[2] and s.valid.sum() == 9
    # LaSOT: NaN on a frame its flags call visible is an error naming the line
    root2 = lasot_tree(tmp_path, shared_data)
    gt2 = root2 / "airplane/airplane-2/groundtruth.txt"
    l2 = gt2.read_text().splitlines()
    l2[8] = "nan,nan,nan,nan"
    gt2.write_text("\n".join(l2) + "\n")
    rep = ReadReport()
    (s2,) = read_dataset("lasot", root2, "train", on_error="skip", report=rep)
    assert not s2.valid[8] and any(f"{gt2}:9:" in p and "not finite" in p for p in rep.problems)


def test_got10k_splits_absence_and_test(tmp_path, shared_data):
    root = got10k_tree(tmp_path, shared_data)
    train = read_dataset("got10k", root, "train")
    assert [s.name for s in train] == [f"GOT-10k_Train_{i:06d}" for i in range(1, 5)]
    s1 = train[1]  # absent at frames 0 and 7: trimmed to frames 1..6
    assert len(s1) == 6 and s1.frames[0].endswith("00000002.jpg") and s1.valid.all()
    xywh = real_xywh(shared_data, 8, 10)
    np.testing.assert_array_equal(s1.boxes[0], [*xywh[1, :2], *(xywh[1, :2] + xywh[1, 2:])])  # 0-based: no shift
    assert s1.extra["cover"].tolist() == [8] * 6 and s1.frame_size == (640, 360)
    vt = read_dataset("got10k", root, "vot_train", split_file=root / "vot_train.txt")
    assert [s.name for s in vt] == ["GOT-10k_Train_000004", "GOT-10k_Train_000002"]
    (test,) = read_dataset("got10k", root, "test")
    assert len(test) == 8 and test.valid.tolist() == [True] + [False] * 7 and np.isnan(test.boxes[1:]).all()
    (val,) = read_dataset("got10k", root, "val")
    assert len(val) == 8 and val.valid.all()
    (root / "bad.txt").write_text("0\n9\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: index 9 outside .*train/list.txt \(4 lines"):
        read_dataset("got10k", root, "vot_train", split_file=root / "bad.txt")


def test_got10k_vot_split_files_ship_in_the_package(tmp_path, shared_data):
    from lorat_scale.data.readers import got10k

    idx = {}
    for split, n in (("vot_train", 7086), ("vot_val", 1249)):
        shipped = got10k._subset_file(tmp_path, split, None)  # no file in the root: the package's copy
        assert shipped.parent == got10k.SPLITS_DIR and str(shipped).startswith(str(Path(got10k.__file__).parent))
        assert shipped.read_bytes() == (shared_data / "splits" / shipped.name).read_bytes()
        idx[split] = [int(t) for t in shipped.read_text().split()]
        assert len(idx[split]) == n == len(set(idx[split])) and min(idx[split]) >= 0
    assert not set(idx["vot_train"]) & set(idx["vot_val"])
    (tmp_path / got10k.SUBSETS["vot_train"]).write_text("0\n")  # a copy in the dataset root wins
    assert got10k._subset_file(tmp_path, "vot_train", None) == tmp_path / got10k.SUBSETS["vot_train"]


def test_trackingnet_chunks_and_test(tmp_path, shared_data):
    root = trackingnet_tree(tmp_path, shared_data)
    train = read_dataset("trackingnet", root, "train")
    assert [s.name for s in train] == ["aaa_1", "bbb_2", "ccc_3"]
    s = train[0]
    assert len(s) == 12 and s.frames[10].endswith("frames/aaa_1/10.jpg")  # numeric, not "10" < "2"
    xywh = real_xywh(shared_data, 12)
    np.testing.assert_array_equal(s.boxes[11], [*xywh[11, :2], *(xywh[11, :2] + xywh[11, 2:])])
    assert [x.name for x in read_dataset("trackingnet", root, "TRAIN_1")] == ["ccc_3"]
    (t,) = read_dataset("trackingnet", root, "test")
    assert len(t) == 12 and t.valid.sum() == 1
    anno = root / "TRAIN_0/anno/bbb_2.txt"
    anno.write_text(anno.read_text() + "1,2,3,4\n")  # 13 boxes for 12 frames: frame 12.jpg is missing
    with pytest.raises(FrameError, match=r"bbb_2/12.jpg: missing frame 13 of trackingnet/bbb_2 .*line 13 of .*bbb_2"):
        read_dataset("trackingnet", root, "train")


def test_coco_objects_crowd_and_clip(shared_data, tmp_path):
    seqs = read_dataset("coco", shared_data / "det/coco128")
    assert len(seqs) == 929  # coco128 has no crowd boxes
    s = seqs[0]
    assert s.is_image and len(s) == 1 and s.frame_size == (640, 480)
    np.testing.assert_allclose(s.boxes[0], [1.08, 187.69008, 612.66976, 473.53008])
    assert s.frames[0].endswith("images/train2017/000000000009.jpg") and os.path.isfile(s.frames[0])
    for q in seqs:
        w, h = q.frame_size
        assert 0 <= q.boxes[0, 0] < q.boxes[0, 2] <= w and 0 <= q.boxes[0, 1] < q.boxes[0, 3] <= h
    # a crowd box, an out-of-image box and an empty box
    import json
    d = json.loads((shared_data / "det/coco128/annotations/instances_train2017.json").read_text())
    d["annotations"] = d["annotations"][:3]
    d["annotations"][0]["iscrowd"] = 1
    d["annotations"][1]["bbox"] = [-10.0, -5.0, 50.0, 5000.0]
    d["annotations"][2]["bbox"] = [10.0, 10.0, 0.0, 4.0]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_train2017.json").write_text(json.dumps(d))
    rep = ReadReport()
    (only,) = READERS["coco"](tmp_path, "train2017", report=rep)
    w, h = only.frame_size
    np.testing.assert_array_equal(only.boxes[0], [0, 0, 40, h])
    assert rep.clipped_boxes == 1 and rep.emptied_boxes == 1 and len(rep.dropped) == 1


def test_custom_format_separators_and_absent(tmp_path, shared_data):
    root = custom_tree(tmp_path, shared_data, n_seqs=2, n=10, sep="\t")
    (root / "seq1/groundtruth.txt").write_text(
        (root / "seq1/groundtruth.txt").read_text().replace("\t", " ", 5).replace("\t", ", ", 3))
    (root / "seq1/absent.txt").write_text("\n".join(["0"] * 4 + ["1"] + ["0"] * 5))
    a, b = read_dataset("custom", root)
    xywh = real_xywh(shared_data, 10, 7)
    np.testing.assert_array_equal(b.boxes[:, :2], xywh[:, :2] - 1)
    assert b.valid.tolist() == [True] * 4 + [False] + [True] * 5
    assert a.frames[9].endswith("seq0/10.jpg") and a.frames[1].endswith("seq0/2.jpg")  # natural order
    (root / "train.txt").write_text("seq1\n")
    assert [s.name for s in read_dataset("custom", root, "train")] == ["seq1"]


def test_cleaning_rules():
    rep = ReadReport()
    s = Sequence("x", "custom", [f"{i}.jpg" for i in range(5)],
                 boxes=[[np.nan] * 4, [-5, 10, 30, 20], [10, 10, 10, 30], [90, 90, 120, 130], [np.nan] * 4],
                 valid=[False, True, True, True, False], frame_size=(100, 100))
    out = clean(s, rep)
    assert out.frames == ["1.jpg", "2.jpg", "3.jpg"]
    np.testing.assert_array_equal(out.boxes, [[0, 10, 30, 20], [10, 10, 10, 30], [90, 90, 100, 100]])
    assert out.valid.tolist() == [True, False, True]  # zero-width box -> invalid
    assert rep.clipped_boxes == 2 and rep.emptied_boxes == 1 and rep.trimmed_frames == 2
    gone = Sequence("y", "custom", ["a.jpg"], boxes=[[200, 200, 300, 300]], valid=[True], frame_size=(100, 100))
    assert clean(gone, rep) is None and rep.dropped == ["custom/y"]


def test_sequence_validate():
    s = Sequence("x", "custom", ["a", "b"], boxes=[[0, 0, 5, 5], [np.nan] * 4], valid=[True, True])
    with pytest.raises(SequenceError, match="custom/x: frame 1 is marked valid but its box is"):
        s.validate()
    s.valid[1] = False
    s.validate()
    with pytest.raises(SequenceError, match="shape"):
        Sequence("x", "custom", ["a"], boxes=[[0, 0, 5, 5], [0, 0, 5, 5]], valid=[True]).validate()


def test_cache_hit_and_invalidation(tmp_path, shared_data):
    root = got10k_tree(tmp_path, shared_data)
    cache = tmp_path / "cache"
    a = cached_read("got10k", root, "train", cache_dir=cache)
    (pkl,) = cache.glob("got10k-train-*.npz")
    stamp = pkl.stat().st_mtime_ns
    b = cached_read("got10k", root, "train", cache_dir=cache)
    assert pkl.stat().st_mtime_ns == stamp  # hit: not rewritten
    assert [s.name for s in b] == [s.name for s in a]
    np.testing.assert_array_equal(b[0].boxes, a[0].boxes)
    gt = root / "train/GOT-10k_Train_000001/groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[0] = "1,2,30,40"
    gt.write_text("\n".join(lines) + "\n")
    os.utime(gt, ns=(time.time_ns(), time.time_ns() + 10**9))  # mtime moves even on coarse clocks
    c = cached_read("got10k", root, "train", cache_dir=cache)
    np.testing.assert_array_equal(c[0].boxes[0], [1, 2, 31, 42])  # re-read after the edit
    assert pkl.stat().st_mtime_ns != stamp


class _Planted:
    """Unpickling this creates ``marker``: what a crafted cache file would do with code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_annotation_cache_never_unpickles(tmp_path, shared_data, caplog):
    import io
    import pickle

    root = got10k_tree(tmp_path, shared_data)
    cache, marker = tmp_path / "cache", tmp_path / "code_ran"
    ref = cached_read("got10k", root, "train", cache_dir=cache)
    (path,) = cache.iterdir()
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([_Planted(str(marker))], dtype=object))  # a pickle inside an .npz member
    for planted in (pickle.dumps((_Planted(str(marker)), [])), buf.getvalue()):
        path.write_bytes(planted)
        caplog.clear()
        with caplog.at_level("WARNING"):
            got = cached_read("got10k", root, "train", cache_dir=cache)
        assert not marker.exists()
        assert f"ignoring annotation cache {path}" in caplog.text and "pickle" in caplog.text
        assert [s.name for s in got] == [s.name for s in ref] and all(
            np.array_equal(a.boxes, b.boxes) and a.frames == b.frames for a, b in zip(got, ref))
    assert path.read_bytes()[:2] == b"PK"  # rebuilt as a plain .npz


def test_check_data_reports_every_problem(tmp_path, shared_data, capsys):
    from lorat_scale.cli import main

    root = custom_tree(tmp_path, shared_data, n_seqs=2, n=6, sep=",")
    os.remove(root / "seq0/3.jpg")
    (root / "seq0/3.jpg").write_bytes((shared_data / "lasot/airplane/airplane-1/img/00000003.jpg").read_bytes()[:3000])
    os.remove(root / "seq1/6.jpg")  # now 5 frames for 6 boxes
    gt = root / "seq0/groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[1] = "oops"
    lines[4] = "600,300,100,100"  # reaches outside 640x360
    gt.write_text("\n".join(lines) + "\n")
    res = check_dataset("custom", root, decode=True)
    # seq1: which of its frames is missing cannot be told (first or last?), so it is not used.
    assert res.sequences == 1 and res.annotation_problems == 2  # bad line + 6 boxes for 5 frames
    assert res.corrupt_frames == 1 and res.out_of_image_boxes == 1
    text = "\n".join(res.problems)
    assert f"{gt}:2: cannot read 'oops'" in text and f"{gt}:5: box xyxy" in text
    assert "seq0/3.jpg: cannot decode" in text and "seq1/groundtruth.txt:6: 6 boxes for 5 frames" in text
    assert main(["check-data", "--format", "custom", "--root", str(root)]) == 1  # no --decode: JPEG not checked
    out = capsys.readouterr().out
    assert "cannot decode" not in out and "sequences 1" in out and "3 problems" in out
    ok = custom_tree(tmp_path / "ok", shared_data, n_seqs=1, n=3)
    assert main(["check-data", "--format", "custom", "--root", str(ok), "--decode"]) == 0
    assert "OK" in capsys.readouterr().out
