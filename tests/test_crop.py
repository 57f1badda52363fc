"""Golden parity of the SiamFC crop (shared/golden/crop, produced by the official LoRAT code)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from lorat_scale.boxes import cell_mask, rasterize_xyxy
from lorat_scale import crop as C

CASES = ["lasot_airplane-1_f0", "otb_Crossing_f0", "vot_bag_f0", "vot_bag_f0_border"]
TOL = 1e-4  # parameters and boxes (README tolerances)


@lru_cache(maxsize=None)
def _frame(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module", params=CASES)
def case(request, golden: Path, shared_data: Path):
    meta = json.loads((golden / "crop" / "meta.json").read_text())["cases"][request.param]
    g = load_file(str(golden / "crop" / f"{request.param}.safetensors"))
    frame = _frame(str(shared_data / meta["frame_file"]))
    return g, frame


def test_frame_decode_matches_reference_size(case):
    g, frame = case
    assert frame.shape[1::-1] == tuple(g["frame_size_wh"])


def test_template(case):
    g, frame = case
    box = g["frame_box_xyxy"]
    mean = C.image_mean(frame)
    np.testing.assert_allclose(mean, g["template_image_mean"], atol=1e-3, rtol=0)
    req = C.siamfc_params(box, 2.0, 112)
    np.testing.assert_allclose(req, g["template_params_requested"], atol=TOL, rtol=0)
    dst, src = C.crop_regions(g["frame_size_wh"], req, 112)
    assert dst == tuple(g["template_dst_region_xyxy"])
    assert src == tuple(g["template_src_region_xyxy"])
    crop, params = C.crop_image(frame, req, 112, mean)
    assert crop.dtype == torch.float32 and crop.shape == (3, 112, 112)
    assert params.dtype == np.float64 and params.shape == (2, 2)
    np.testing.assert_allclose(params, g["template_params"], atol=TOL, rtol=0)
    assert np.array_equal(params, params.astype(np.float32)), "adjusted params must be float32 values"
    np.testing.assert_allclose(crop.numpy(), g["template_crop"], atol=1e-3, rtol=0)
    cbox = C.map_boxes(params, box)
    np.testing.assert_allclose(cbox, g["template_crop_box_xyxy"], atol=TOL, rtol=0)
    cells = rasterize_xyxy(cbox / 14)
    cells = tuple(int(np.clip(v, 0, 8)) for v in cells)
    assert cells == tuple(g["template_mask_cells_xyxy"])
    assert np.array_equal(cell_mask(cbox, 14, (8, 8)), g["template_mask"])


def test_search(case):
    g, frame = case
    center = C.enlarge_to_min_size(g["frame_box_xyxy"], 10)
    np.testing.assert_allclose(center, g["search_center_box_xyxy"], atol=TOL, rtol=0)
    req = C.siamfc_params(center, 4.0, 224)
    np.testing.assert_allclose(req, g["search_params_requested"], atol=TOL, rtol=0)
    crop, params = C.crop_image(frame, req, 224, g["template_image_mean"])
    assert C.crop_regions(g["frame_size_wh"], req, 224) == (
        tuple(g["search_dst_region_xyxy"]),
        tuple(g["search_src_region_xyxy"]),
    )
    np.testing.assert_allclose(params, g["search_params"], atol=TOL, rtol=0)
    np.testing.assert_allclose(crop.numpy(), g["search_crop"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(C.map_boxes(params, g["frame_box_xyxy"]), g["search_crop_box_xyxy"], atol=TOL, rtol=0)


def test_inverse_mapping(case):
    g, _ = case
    inv = C.invert_params(g["search_params"])
    np.testing.assert_allclose(inv, g["inverse_params"], atol=TOL, rtol=0)
    back = C.map_boxes(inv, g["crop_test_boxes_xyxy"])
    np.testing.assert_allclose(back, g["crop_test_boxes_to_frame_xyxy"], atol=TOL, rtol=0)
    clipped = C.clip_boxes(back, g["frame_size_wh"])
    np.testing.assert_allclose(clipped, g["crop_test_boxes_to_frame_clipped_xyxy"], atol=TOL, rtol=0)


def test_378_params(case):
    g, frame = case
    box = g["frame_box_xyxy"]
    for name, b, f, size in [
        ("template196", box, 2.0, 196),
        ("search378", C.enlarge_to_min_size(box, 10), 5.0, 378),
    ]:
        req = C.siamfc_params(b, f, size)
        np.testing.assert_allclose(req, g[f"{name}_params_requested"], atol=TOL, rtol=0)
        _, params = C.crop_image(frame, req, size, g["template_image_mean"])
        np.testing.assert_allclose(params, g[f"{name}_params"], atol=TOL, rtol=0)


def test_jitter_and_rectangular_output():
    box = np.array([10.0, 20.0, 50.0, 40.0])
    base = C.siamfc_params(box, 4.0, 224)
    jit = C.siamfc_params(box, 4.0, 224, scale_jitter=(0.5, 2.0), shift=(3.0, -4.0))
    np.testing.assert_allclose(jit[0], base[0] * [0.5, 2.0])
    # the box centre lands at the crop centre plus the shift
    cx, cy = C.map_boxes(jit, box).reshape(2, 2).mean(0)
    np.testing.assert_allclose([cx, cy], [115.0, 108.0])
    frame = np.zeros((60, 80, 3), np.uint8)
    crop, params = C.crop_image(frame, C.siamfc_params(box, 2.0, (64, 32)), (64, 32), (1, 2, 3))
    assert crop.shape == (3, 32, 64) and np.isfinite(params).all()


def test_crop_outside_frame_is_all_padding():
    frame = np.full((50, 50, 3), 200, np.uint8)
    params = np.array([[1.0, 1.0], [500.0, 500.0]])  # frame maps far outside the crop
    crop, adj = C.crop_image(frame, params, 32, (1.0, 2.0, 3.0))
    assert torch.equal(crop, torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1).expand(3, 32, 32))
    np.testing.assert_allclose(adj, params)


@pytest.mark.parametrize("bad", [[1, 2, np.nan, 4], [5, 5, 5, 10], [5, 5, 10, 4], [1, 2, 3]])
def test_bad_boxes_raise(bad):
    with pytest.raises(ValueError, match="box"):
        C.siamfc_params(bad, 2.0, 112)


def test_bad_frame_raises():
    with pytest.raises(ValueError, match="uint8"):
        C.crop_image(np.zeros((10, 10, 3), np.float32), np.eye(2), 8, (0, 0, 0))


def test_enlarge_to_min_size_keeps_centre():
    out = C.enlarge_to_min_size([10, 10, 12, 30], 10)
    np.testing.assert_allclose(out, [6, 10, 16, 30])


def test_strided_frame_views_give_the_same_crop():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    rgb_view, rgb = bgr[..., ::-1], np.ascontiguousarray(bgr[..., ::-1])
    params = C.siamfc_params([20, 15, 50, 40], 4.0, 64)
    a, pa = C.crop_image(rgb_view, params, 64)
    b, pb = C.crop_image(rgb, params, 64)
    assert torch.equal(a, b) and np.array_equal(pa, pb)
    np.testing.assert_allclose(C.image_mean(rgb_view), rgb.reshape(-1, 3).mean(0), atol=1e-3)
