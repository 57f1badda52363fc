"""Bad data is caught and named, never trained on (issue 16; issue 13 "damaged data found before training").

Every test damages a copy of the sample data made in tmp_path: garbage in the middle of a JPEG's
entropy-coded data, frames of another size, a missing middle frame, an unreadable first frame,
non-UTF-8 bytes, a truncated or incomplete COCO JSON, an unknown source name.
"""
from __future__ import annotations

import io
import os
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _data_trees import custom_tree, got10k_tree, lasot_tree, real_xywh
from lorat_scale.cli import main as cli
from lorat_scale.config import DataConfig
from lorat_scale.data.check import check_dataset
from lorat_scale.data.decode import decode_image, decode_image_pil
from lorat_scale.data.pairs import PairSamplingError, make_pair
from lorat_scale.data.readers import (AnnotationError, DatasetError, FrameError, ReadReport, get_reader, parse_source,
                                      read_dataset)
from lorat_scale.data.sequence import BadImageError

FRAME = "lasot/airplane/airplane-1/img/00000050.jpg"
# Whole-frame decoding: damage anywhere in a frame is found (region decoding, the default, sees only the rows its
# crops read: tests/test_region_decode.py).
RAISE = DataConfig(on_bad_sample="raise", seed=1, region_decode=False)
SKIP = DataConfig(on_bad_sample="skip", seed=1, region_decode=False)


def corrupt_jpeg(data: bytes, n: int = 200) -> bytes:
    """``n`` garbage bytes (no 0xFF, so no marker) in the middle of the entropy-coded data of a baseline JPEG."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")  # scan data follows the SOS header
    mid = (start + len(data) - 2) // 2
    garbage = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8).tobytes()
    return data[:mid] + garbage + data[mid + n:]


def jpeg_of(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def replace(path: Path, data: bytes) -> None:
    """Write ``data`` over a tree's frame (the trees hold symlinks to the shared frames: never write through them)."""
    path.unlink()
    path.write_bytes(data)


# ----------------------------------------------------------------------------------------------
# Corrupt JPEG data
# ----------------------------------------------------------------------------------------------
def test_corrupt_jpeg_is_never_decoded_leniently(shared_data):
    good = (shared_data / FRAME).read_bytes()
    bad = corrupt_jpeg(good)
    # Pillow decodes it without complaint (about a third of the pixels wrong): the lenient path that must not be taken.
    assert (decode_image_pil(bad) != decode_image_pil(good)).any(axis=-1).mean() > 0.05
    with pytest.raises(OSError, match="corrupt JPEG data"):
        decode_image(bad)
    # CMYK JPEGs (converted by Pillow) are checked by the same strict decode first.
    cmyk = io.BytesIO()
    Image.open(io.BytesIO(good)).convert("CMYK").save(cmyk, "JPEG")
    assert np.array_equal(decode_image(cmyk.getvalue()), decode_image_pil(cmyk.getvalue()))
    with pytest.raises(OSError, match="corrupt JPEG data"):
        decode_image(corrupt_jpeg(cmyk.getvalue()))
    # PNG (Pillow only): a damaged chunk is refused too.
    png = io.BytesIO()
    Image.open(io.BytesIO(good)).resize((64, 36)).save(png, "PNG", compress_level=0)
    png = bytearray(png.getvalue())
    png[png.index(b"IDAT") + 300] ^= 0x40
    with pytest.raises(OSError, match="PNG"):
        decode_image(bytes(png))


def test_corrupt_frame_is_skipped_or_raised_in_training_and_found_by_check_data(tmp_path, shared_data, capsys):
    root = custom_tree(tmp_path, shared_data, n_seqs=2, n=2, sep=",")
    bad_path = root / "seq0/2.jpg"
    replace(bad_path, corrupt_jpeg(bad_path.read_bytes()))
    bad, good = read_dataset("custom", root)  # the header is fine: the reader cannot see it
    # Every pair of seq0 needs 2.jpg (2 frames): "raise" stops naming the file, "skip" counts it and moves on.
    with pytest.raises(BadImageError, match=rf"{bad_path}: cannot decode image \(corrupt JPEG data"):
        make_pair([bad], RAISE, np.random.default_rng(0), 112, 224)
    s = make_pair([bad, good], SKIP, np.random.default_rng(0), 112, 224, seq_index=0)
    assert s["key"].startswith("custom/seq1/") and s["counters"]["bad_frames"] >= 1
    with pytest.raises(PairSamplingError, match=rf"last error: {bad_path}: cannot decode"):
        make_pair([bad], SKIP, np.random.default_rng(0), 112, 224)
    # check-data --decode decodes whole frames, as training does with data.region_decode=false.
    assert cli(["check-data", "--format", "custom", "--root", str(root), "--decode", "--num-workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"{bad_path}: cannot decode image (corrupt JPEG data" in out and "corrupt frames 1" in out
    assert cli(["check-data", "--format", "custom", "--root", str(root)]) == 0  # without --decode: headers only


# ----------------------------------------------------------------------------------------------
# Frames that do not match their boxes
# ----------------------------------------------------------------------------------------------
def test_frame_of_another_size_is_never_paired_with_its_box(tmp_path, shared_data):
    root = custom_tree(tmp_path, shared_data, n_seqs=1, n=6, sep=",")
    small, tiny = root / "seq0/3.jpg", root / "seq0/5.jpg"
    replace(small, jpeg_of(Image.open(small).resize((320, 180))))
    replace(tiny, jpeg_of(Image.new("RGB", (1, 1))))
    (seq,) = read_dataset("custom", root)
    assert seq.frame_size == (640, 360)
    with pytest.raises(BadImageError, match=rf"{small}: frame is 320x180, expected 640x360 .*custom/seq0") as e:
        seq.load_frame(2)
    assert e.value.kind == "size"
    with pytest.raises(BadImageError, match=rf"{tiny}: frame is 1x1, expected 640x360"):
        seq.load_frame(4)
    # Training: raised by option, or skipped and counted; a pair never contains frame 3 or 5.
    with pytest.raises(BadImageError, match="expected 640x360"):
        for k in range(50):
            make_pair([seq], RAISE, np.random.default_rng(k), 112, 224)
    bad_frames = 0
    for k in range(30):
        s = make_pair([seq], SKIP, np.random.default_rng(k), 112, 224)
        assert not {2, 4} & {int(v) for v in s["key"].split("/")[-2:]}
        bad_frames += s["counters"]["bad_frames"]
    assert bad_frames > 0
    res = check_dataset("custom", root, decode=True, workers=1)
    assert res.size_mismatch == 2 and res.corrupt_frames == 0
    assert sum(f"{p}: frame is" in m for p in (small, tiny) for m in res.problems) == 2


def test_missing_middle_frame_does_not_shift_later_boxes(tmp_path, shared_data):
    root = custom_tree(tmp_path, shared_data, n_seqs=1, n=8, sep=",")
    (root / "seq0/4.jpg").unlink()
    xywh = real_xywh(shared_data, 8)  # seq0's boxes: the real rows, 0-based
    xywh[:, :2] -= 1
    with pytest.raises(FrameError, match=rf"{root}/seq0/4.jpg: missing frame 4 of custom/seq0 .*line 4 of"):
        read_dataset("custom", root)
    rep = ReadReport()
    (seq,) = read_dataset("custom", root, on_error="skip", report=rep, clean=False)
    assert len(seq) == 8 and seq.frames[3] == str(root / "seq0/4.jpg") and not seq.valid[3]
    for i in (4, 7):  # 5.jpg and 8.jpg keep lines 5 and 8
        assert seq.frames[i].endswith(f"seq0/{i + 1}.jpg")
        np.testing.assert_array_equal(seq.boxes[i], [*xywh[i, :2], *(xywh[i, :2] + xywh[i, 2:])])
    (p,) = rep.records
    assert (p.kind, p.path, p.sequence) == ("missing_frame", str(root / "seq0/4.jpg"), "custom/seq0")
    # check-data names it once (not again as a missing file).
    res = check_dataset("custom", root)
    assert res.missing_frames == 1 and len(res.problems) == 1 and "seq0/4.jpg: missing frame 4" in res.problems[0]
    # GOT-10k: zero-padded numbers from 1; a missing middle frame keeps its place the same way.
    got = got10k_tree(tmp_path, shared_data)
    sdir = got / "train/GOT-10k_Train_000001"
    (sdir / "00000005.jpg").unlink()
    rep = ReadReport()
    seq = read_dataset("got10k", got, "train", on_error="skip", report=rep, clean=False)[0]
    assert len(seq) == 8 and seq.frames[4] == str(sdir / "00000005.jpg") and not seq.valid[4] and seq.valid[5]
    np.testing.assert_array_equal(seq.boxes[5, :2], real_xywh(shared_data, 8)[5, :2])
    assert [r.kind for r in rep.records] == ["missing_frame"]


# ----------------------------------------------------------------------------------------------
# An unreadable first frame, a folder without images
# ----------------------------------------------------------------------------------------------
def test_bad_first_frame_is_reported_not_a_traceback(tmp_path, shared_data, capsys):
    root = lasot_tree(tmp_path, shared_data)
    first = root / "airplane/airplane-2/img/00000001.jpg"
    replace(first, b"this is not an image\n")
    with pytest.raises(FrameError, match=rf"{first}: frame 1 of lasot/airplane-2 is not a readable image") as e:
        read_dataset("lasot", root, "train")
    assert (e.value.problem.kind, e.value.problem.path) == ("bad_frame", str(first))
    rep = ReadReport()
    (seq,) = read_dataset("lasot", root, "train", on_error="skip", report=rep)
    # The size comes from the next frame; frame 1 is trimmed away (invalid), nothing else is lost.
    assert seq.frame_size == (640, 360) and len(seq) == 11 and seq.frames[0].endswith("00000002.jpg")
    assert [(r.kind, r.path) for r in rep.records] == [("bad_frame", str(first))]
    # Every frame unreadable: the sequence is dropped with a reason, the reader goes on.
    for f in (root / "airplane/airplane-1/img").iterdir():
        replace(f, b"")
    rep = ReadReport()
    seqs = read_dataset("lasot", root, "all", on_error="skip", report=rep)
    assert [s.name for s in seqs] == ["airplane-2"]
    assert [r.kind for r in rep.records] == ["bad_frame"] * 10  # 8 frames of airplane-1, its summary, airplane-2's
    assert "none of the first 8 frames of lasot/airplane-1 is a readable image" in rep.problems[8]
    # check-data: each file named, exit 1, no traceback.
    assert cli(["check-data", "--format", "lasot", "--root", str(root), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert f"{first}: frame 1 of lasot/airplane-2 is not a readable image" in out and "corrupt frames 1" in out


def test_folder_without_images_is_a_structured_problem(tmp_path, shared_data):
    root = custom_tree(tmp_path, shared_data, n_seqs=2, n=4, sep=",")
    for f in (root / "seq1").glob("*.jpg"):
        f.unlink()
    with pytest.raises(FrameError, match=rf"{root}/seq1: no image files, expected the frames of custom/seq1"):
        read_dataset("custom", root)
    rep = ReadReport()
    assert [s.name for s in read_dataset("custom", root, on_error="skip", report=rep)] == ["seq0"]
    assert [(r.kind, r.path, r.sequence) for r in rep.records] == [("no_frames", str(root / "seq1"), "custom/seq1")]


def test_training_skips_or_raises_reader_problems(tmp_path, shared_data, monkeypatch, capsys):
    from lorat_scale.train import loop as train  # the training loop's data functions

    monkeypatch.setenv("LORAT_CACHE", str(tmp_path / "cache"))
    root = custom_tree(tmp_path, shared_data, n_seqs=2, n=4, sep=",")
    first = root / "seq0/1.jpg"
    replace(first, b"GIF89a broken")
    with pytest.raises(FrameError, match=rf"{first}: frame 1 of custom/seq0 is not a readable image"):
        train.load_sources([f"custom={root}"], "raise")
    for _ in range(2):  # the second read comes from the annotation cache: the problem is still named
        (a, b), = train.load_sources([f"custom={root}"], "skip")
        assert len(a) == 3 and a.frames[0].endswith("seq0/2.jpg") and len(b) == 4  # the bad frame 1 is left out
        err = capsys.readouterr().err
        assert f"data source custom={root}: 1 problem(s)" in err and f"{first}: frame 1 of custom/seq0" in err
        assert len(list((tmp_path / "cache").glob("custom-train-*.npz"))) == 1
    from lorat_scale.config import ConfigError

    with pytest.raises(ConfigError, match=r"^config key 'data.train_sources': data source 'lasott=/data/LaSOT': "
                                          r"unknown dataset format 'lasott'; expected one of lasot, got10k, "):
        train.load_sources(["lasott=/data/LaSOT"], "raise")


# ----------------------------------------------------------------------------------------------
# Errors that name no file
# ----------------------------------------------------------------------------------------------
def test_non_utf8_flags_file_names_file_and_line(tmp_path, shared_data):
    root = lasot_tree(tmp_path, shared_data)
    occ = root / "airplane/airplane-2/full_occlusion.txt"
    occ.write_bytes(b"0,0,0,1,1,0,\xff0,0,0,0,0,0")  # a stray byte in the 7th flag
    with pytest.raises(AnnotationError, match=rf"^{occ}:1: byte 0xff is not UTF-8 text, expected 0/1 flags"):
        read_dataset("lasot", root, "train")
    rep = ReadReport()
    (seq,) = read_dataset("lasot", root, "train", on_error="skip", report=rep)
    assert not seq.valid[6] and seq.valid[5] and seq.valid[7]  # the unreadable flag leaves its frame out
    assert [r.line for r in rep.records] == [1, 1] and "flag #7" in rep.problems[1]
    gt = root / "airplane/airplane-2/groundtruth.txt"
    gt.write_bytes(gt.read_bytes().replace(b"\n", b"\n\xe9", 1))  # line 2 starts with a Latin-1 byte
    with pytest.raises(AnnotationError, match=rf"^{gt}:2: byte 0xe9 is not UTF-8 text"):
        read_dataset("lasot", root, "train")


def test_broken_coco_json_names_file_line_and_key(tmp_path, shared_data, capsys):
    src = json.loads((shared_data / "det/coco128/annotations/instances_train2017.json").read_text())
    ann = tmp_path / "annotations/instances_train2017.json"
    ann.parent.mkdir()
    text = json.dumps(src, indent=1)
    ann.write_text(text[: len(text) // 2])  # a truncated download
    with pytest.raises(AnnotationError, match=rf"^{ann}:\d+: not valid JSON \(.*truncated file\?\), expected a COCO"):
        read_dataset("coco", tmp_path)
    assert cli(["check-data", "--format", "coco", "--root", str(tmp_path)]) == 1
    assert re.search(rf"{ann}:\d+: not valid JSON", capsys.readouterr().out)
    del src["images"][0]["width"]  # the 8 objects of image 1 cannot be placed
    ann.write_text(json.dumps(src))
    with pytest.raises(AnnotationError, match=re.escape(f"{ann}: images[0] (id 1, 000000000009.jpg): no 'width', "
                                                        "expected the image's file name and its width and height")):
        read_dataset("coco", tmp_path)
    rep = ReadReport()
    seqs = read_dataset("coco", tmp_path, on_error="skip", report=rep)
    assert len(seqs) == 929 - 8 and not any(s.extra["image_id"][0] == 1 for s in seqs) and len(rep.records) == 1
    ann.write_text(json.dumps({"images": []}))
    with pytest.raises(AnnotationError, match=rf"{ann}: key 'annotations' is missing or not a list"):
        read_dataset("coco", tmp_path)


def test_unknown_source_name_lists_the_formats(tmp_path):
    formats = "lasot, got10k, trackingnet, coco, custom, otb, vot, uav123, nfs, tnl2k"
    with pytest.raises(ValueError, match=rf"^data source 'lasott=/d': unknown dataset format 'lasott'; "
                                         rf"expected one of {formats}$"):
        parse_source("lasott=/d")
    with pytest.raises(ValueError, match="must look like format\\[:split\\]=root"):
        parse_source("/data/LaSOT")
    assert parse_source("got10k:vot_train=/d") == ("got10k", "vot_train", "/d")
    assert parse_source("lasot=/d") == ("lasot", "train", "/d")
    from lorat_scale.data.cache import cached_read

    with pytest.raises(ValueError, match=f"unknown dataset format 'lasott'; expected one of {formats}"):
        cached_read("lasott", tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown dataset format 'x'"):
        get_reader("x")
    assert issubclass(FrameError, DatasetError) and issubclass(AnnotationError, ValueError)


def test_check_data_offers_every_reader(shared_data, capsys):
    assert cli(["check-data", "--format", "otb", "--root", str(shared_data / "otb"), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "sequences 1  frames 120  valid frames 120" in out and out.rstrip().endswith("OK")
    assert cli(["check-data", "--format", "vot", "--root", str(shared_data / "vot")]) == 0
    assert "sequences 2  frames 301" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli(["check-data", "--format", "lasott", "--root", str(shared_data)])
    err = capsys.readouterr().err
    assert "invalid choice: 'lasott'" in err and all(f"'{f}'" in err for f in ("lasot", "otb", "vot", "tnl2k"))


def test_frame_numbering_rules(tmp_path, shared_data):
    # Every 5th frame of a video (0005.jpg, 0010.jpg, ...), 0015.jpg missing: the step is found, the gap kept.
    d = tmp_path / "custom/every5"
    src = sorted((shared_data / "lasot/airplane/airplane-1/img").glob("*.jpg"))[:6]
    for k, f in enumerate(src):
        if k != 2:
            (d / f"{5 * (k + 1):04d}.jpg").parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, d / f"{5 * (k + 1):04d}.jpg")
    (d / "groundtruth.txt").write_text("".join(f"{10 + k},20,30,40\n" for k in range(6)))
    rep = ReadReport()
    (seq,) = read_dataset("custom", tmp_path / "custom", on_error="skip", report=rep, clean=False)
    assert [Path(f).name for f in seq.frames] == [f"{5 * k:04d}.jpg" for k in range(1, 7)]
    assert seq.valid.tolist() == [True, True, False, True, True, True] and seq.boxes[5, 0] == 15
    assert "in steps of 5" in rep.problems[0] and rep.records[0].path == str(d / "0015.jpg")
    # A stray file with a far number does not make a million missing frames: the folder is refused, named.
    os.symlink(src[0], d / "999999.jpg")
    rep = ReadReport()
    assert read_dataset("custom", tmp_path / "custom", on_error="skip", report=rep) == []
    assert rep.records[0].kind == "frame_count" and f"{d}: files numbered 5..999999" in rep.problems[0]
