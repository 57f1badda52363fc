"""The reduced-size decode option: DCT-scaled JPEG decoding where the crop shrinks the frame; default stays exact."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from lorat_scale.config import DataConfig
from lorat_scale.data.augment import IMAGENET_STD
from lorat_scale.data.decode import decode_image, decode_image_reduced, image_size
from lorat_scale.data.pairs import PairDataset
from lorat_scale.data.readers import read_dataset


def test_factor_choice_and_exact_fallback(shared_data):
    data = (shared_data / "vot/vot15_ball1/imgs/00000001.jpg").read_bytes()
    assert image_size(data) == (1280, 720)
    full = decode_image(data)
    for scale, factor in ((0.1, 0.125), (0.2, 0.25), (0.26, 0.5), (0.5, 0.5), (0.51, 1.0), (1.7, 1.0)):
        img, f = decode_image_reduced(data, scale)
        assert f == factor and img.shape == (int(720 * f), int(1280 * f), 3), (scale, f, img.shape)
        if f == 1.0:
            assert np.array_equal(img, full)  # no reduction possible: the exact decode
    half, _ = decode_image_reduced(data, 0.5)
    ref = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - ref).mean() < 3.0  # the DCT downscale is an area-like average


def test_pairs_with_reduced_decode(tmp_path, shared_data):
    """A large 1280x720 target (a LaSOT region upscaled 4x): frames decode at 1/2, the search labels stay the
    same, the pixels differ a little; with the option off nothing changes."""
    src = shared_data / "lasot/airplane/airplane-1"
    d = tmp_path / "big" / "airplane"
    d.mkdir(parents=True)
    rows = (src / "groundtruth.txt").read_text().splitlines()[:6]
    for i in range(6):
        img = cv2.imread(str(src / "img" / f"{i + 1:08d}.jpg"))[50:230, 190:510]
        cv2.imwrite(str(d / f"{i + 1:08d}.jpg"), cv2.resize(img, (1280, 720)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    xywh = np.array([[float(v) for v in r.split(",")] for r in rows])
    xywh[:, :2] -= (191, 51)
    (d / "groundtruth.txt").write_text("\n".join(",".join(f"{v * 4:g}" for v in r) for r in xywh) + "\n")
    seqs = read_dataset("custom", tmp_path / "big")
    cfg = DataConfig(pairs_per_epoch=12, max_frame_gap=5, seed=4)
    exact = PairDataset([seqs], cfg, 112, 224)
    small = PairDataset([seqs], dataclasses.replace(cfg, reduced_decode=True), 112, 224)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    reduced = 0
    for i in range(12):
        a, b = exact[i], small[i]
        assert (a["template_frame"], a["search_frame"]) == (b["template_frame"], b["search_frame"])
        assert torch.equal(a["target_box"], b["target_box"]) and torch.equal(a["positive_map"], b["positive_map"])
        assert float(((a["x"] - b["x"]).abs() * std).mean()) < 2.0
        reduced += b["counters"]["reduced_frames"]
        assert "reduced_frames" not in a["counters"]
    assert reduced >= 12  # most frames decoded at 1/2


def test_fast_jpeg_is_close_but_not_exact_and_reaches_the_pairs(shared_data):
    """data.fast_jpeg: libjpeg-turbo's fast IDCT/upsampling for whole and reduced decodes; a few levels off the exact
    decode; region decodes (exact) are not affected; the pair sampler passes the option through."""
    data = (shared_data / "vot/vot15_ball1/imgs/00000001.jpg").read_bytes()
    exact, fast = decode_image(data), decode_image(data, fast=True)
    diff = np.abs(exact.astype(int) - fast)
    assert fast.shape == exact.shape and 0 < diff.max() <= 64 and diff.mean() < 2.0
    half, f = decode_image_reduced(data, 0.5, fast=True)
    assert f == 0.5 and not np.array_equal(half, decode_image_reduced(data, 0.5)[0])
    seqs = read_dataset("vot", shared_data / "vot")
    cfg = DataConfig(pairs_per_epoch=8, seed=2, region_decode=False)
    a = PairDataset([seqs], cfg, 112, 224)[0]
    b = PairDataset([seqs], dataclasses.replace(cfg, fast_jpeg=True), 112, 224)[0]
    assert torch.equal(a["target_box"], b["target_box"]) and not torch.equal(a["x"], b["x"])
