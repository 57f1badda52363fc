"""Region (ROI) decoding: only the rows and columns a crop reads, bit-identical to the full decode; the pairs with
it on equal the pairs with it off; damage inside the region is an error naming the file."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from lorat_scale.config import DataConfig
from lorat_scale import crop
from lorat_scale.data import decode
from lorat_scale.data import pairs as P
from lorat_scale.data.decode import decode_image, decode_region, region_decoding
from lorat_scale.data.pairs import PairDataset
from lorat_scale.data.readers import read_dataset
from lorat_scale.data.sequence import BadImageError

from _data_trees import custom_tree
from test_bad_data import corrupt_jpeg


def random_boxes(rng: np.random.Generator, w: int, h: int, n: int) -> list[tuple[int, int, int, int]]:
    """``n`` random non-empty integer boxes inside a w x h image, plus the edge cases (whole image, corners, iMCU
    boundaries, one pixel)."""
    boxes = [(0, 0, w, h), (0, 0, 16, 16), (16, 16, 32, 33), (w - 1, h - 1, w, h), (w - 17, 5, w, h), (1, 0, 2, h)]
    while len(boxes) < n:
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        if x1 > x0 and y1 > y0:
            boxes.append((int(x0), int(y0), int(x1), int(y1)))
    return boxes


def test_the_decoder_loads_here():
    # CI builds the extension (a C compiler is there) and Pillow's wheel bundles libjpeg-turbo: region decoding
    # must be on, or every other test here would only test the fallback.
    assert region_decoding() is None


def test_region_equals_the_full_decode(shared_data):
    """Every sample frame set (LaSOT, OTB, VOT 720p, COCO) and re-encoded variants (4:4:4, 4:2:2, progressive,
    gray, odd sizes): each region equals the full decode's pixels exactly."""
    rng = np.random.default_rng(0)
    paths = [shared_data / "vot/vot15_ball1/imgs/00000001.jpg", shared_data / "otb/Crossing/img/0001.jpg",
             shared_data / "lasot/airplane/airplane-1/img/00000001.jpg",
             *sorted((shared_data / "det/coco128").rglob("*.jpg"))[:6]]
    blobs = [p.read_bytes() for p in paths]
    im = Image.open(io.BytesIO(blobs[2])).convert("RGB").crop((3, 5, 3 + 333, 5 + 201))  # odd size: partial iMCUs
    for kw in (dict(subsampling=0), dict(subsampling=1), dict(progressive=True), dict(progressive=True, subsampling=0)):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90, **kw)
        blobs.append(buf.getvalue())
    buf = io.BytesIO()
    im.convert("L").save(buf, "JPEG", quality=85)
    blobs.append(buf.getvalue())
    for data in blobs:
        full = decode_image(data)
        h, w = full.shape[:2]
        for box in random_boxes(rng, w, h, 25):
            x0, y0, x1, y1 = box
            got = decode_region(data, box)
            assert got.dtype == np.uint8 and got.flags.c_contiguous
            assert np.array_equal(got, full[y0:y1, x0:x1]), (len(data), (w, h), box)


def test_non_jpeg_and_unavailable_decoder_fall_back_to_the_full_decode(shared_data, monkeypatch):
    data = (shared_data / "otb/Crossing/img/0001.jpg").read_bytes()
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, "PNG")
    assert np.array_equal(decode_region(png.getvalue(), (5, 6, 50, 40)), decode_image(data)[6:40, 5:50])
    monkeypatch.setattr(decode, "_region_decoder", lambda: (None, "no compiler"))
    assert decode.region_decoding() == "no compiler"
    assert np.array_equal(decode_region(data, (5, 6, 50, 40)), decode_image(data)[6:40, 5:50])


def test_damage_inside_the_region_is_an_error(shared_data):
    data = (shared_data / "vot/vot15_ball1/imgs/00000001.jpg").read_bytes()
    bad = corrupt_jpeg(data)  # garbage in the middle of the entropy-coded data: about half-way down the frame
    with pytest.raises(OSError, match="corrupt JPEG data"):
        decode_region(bad, (100, 600, 300, 720))  # down to the last row: read on to the end marker, as in full
    decode_region(bad, (100, 600, 300, 719))  # libjpeg notices this damage only at the end marker: not seen
    with pytest.raises(OSError, match="corrupt JPEG data"):
        decode_region(data[:len(data) // 2], (0, 500, 64, 600))  # truncated above the region
    with pytest.raises(OSError, match="corrupt JPEG data"):
        decode_region(b"\xff\xd8\xff\xe0" + bytes(100), (0, 0, 1, 1))
    # Rows above the damage are exact: that is what region decoding trades (check-data --decode finds the frame).
    assert np.array_equal(decode_region(bad, (0, 0, 1280, 16)), decode_image(data)[:16])


def test_crop_from_a_region_equals_the_crop_from_the_frame(shared_data):
    frame = decode_image((shared_data / "vot/vot15_ball1/imgs/00000001.jpg").read_bytes())
    rng = np.random.default_rng(1)
    for _ in range(30):
        cx, cy, side = rng.uniform(100, 1180), rng.uniform(100, 620), rng.uniform(10, 150)
        params = crop.siamfc_params([cx - side / 2, cy - side / 3, cx + side / 2, cy + side / 3], 4.0, 224,
                                    scale_jitter=np.exp(rng.normal(0, 0.25, 2)), shift=rng.uniform(-30, 30, 2))
        dst, (x0, y0, x1, y1) = crop.crop_regions((1280, 720), params, 224)
        want, want_p = crop.crop_image(frame, params, 224)
        if dst != (0, 0, 224, 224):
            with pytest.raises(ValueError, match="outside the .* region"):  # padding needs the whole frame's mean
                crop.crop_image(frame[y0:y1, x0:x1], params, 224, region=(1280, 720, x0, y0))
            continue
        got, got_p = crop.crop_image(frame[y0:y1, x0:x1], params, 224, region=(1280, 720, x0, y0))
        assert torch.equal(got, want) and np.array_equal(got_p, want_p)
        with pytest.raises(ValueError, match="outside the .* region"):
            crop.crop_image(frame[y0 + 1:y1, x0:x1], params, 224, region=(1280, 720, x0, y0 + 1))


@pytest.mark.parametrize("entries", [("lasot", "lasot", "all"), ("vot", "vot", None),
                                     ("coco", "det/coco128", "train2017")])
def test_pairs_are_identical_with_and_without_region_decoding(shared_data, entries):
    fmt, sub, split = entries
    seqs = read_dataset(fmt, shared_data / sub, split)
    cfg = DataConfig(pairs_per_epoch=24, seed=3)
    on, off = PairDataset([seqs], cfg, 112, 224), PairDataset([seqs], dataclasses.replace(cfg, region_decode=False),
                                                                   112, 224)
    before = dict(P.DECODE_COUNTS)
    got = [on[i] for i in range(24)]
    region = P.DECODE_COUNTS["region"] - before["region"]
    for a, i in zip(got, range(24)):
        b = off[i]
        assert a["key"] == b["key"]
        for k in ("z", "x", "z_feat_mask", "target_box", "positive_map"):
            assert torch.equal(a[k], b[k]), (a["key"], k)
    assert region >= 8  # many frames were decoded as regions (the rest needed padding)


def test_a_damaged_region_names_the_file_in_training(tmp_path, shared_data):
    """A crop that reads damaged rows fails as the whole-frame decode does: BadImageError naming the file."""
    root = custom_tree(tmp_path, shared_data, n_seqs=1, n=2, sep=",")
    for f in root.glob("seq0/*.jpg"):
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data[:len(data) // 3])  # truncated: only the top third of each frame decodes
    seqs = read_dataset("custom", root)
    cfg = DataConfig(pairs_per_epoch=4, seed=1, on_bad_sample="raise")
    with pytest.raises(BadImageError, match=r"seq0/\d\.jpg: cannot decode image \(corrupt JPEG data"):
        P.make_pair(seqs, cfg, np.random.default_rng(0), 112, 224)
