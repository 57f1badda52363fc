"""Golden parity of the post-processing (shared/golden/postprocess, official LoRAT code)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lorat_scale.tracking.postprocess import crop_to_frame, hann_window, postprocess


@pytest.mark.parametrize("case,penalty", [("window_0.45", 0.45), ("window_0", 0.0)])
def test_postprocess_matches_golden(golden: Path, case: str, penalty: float):
    g = load_file(str(golden / "postprocess" / f"{case}.safetensors"))
    out = postprocess(g["score_map"], g["boxes"], g["search_crop_params"], g["frame_size_wh"], penalty)
    torch.testing.assert_close(out["score"], g["score_sigmoid"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["penalized_score"], g["penalized_score"], atol=1e-6, rtol=0)
    assert torch.equal(out["best_index"], g["best_index_flat"])
    assert torch.equal(out["best_row_col"], g["best_row_col"])
    torch.testing.assert_close(out["confidence"], g["confidence"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["box_crop_px_xyxy"], g["box_crop_px_xyxy"], atol=1e-4, rtol=0)
    unclipped = g["box_frame_xyxy_unclipped"].numpy()
    np.testing.assert_allclose(out["box_frame_xyxy_unclipped"], unclipped, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["box_frame_xyxy"], g["box_frame_xyxy"].numpy(), atol=1e-4, rtol=0)


def test_hann_window_matches_golden(golden: Path):
    g = load_file(str(golden / "postprocess" / "window_0.45.safetensors"))
    torch.testing.assert_close(hann_window(16, 16), g["hann_window"], atol=1e-6, rtol=0)
    win = hann_window(27, 27)
    assert win[0].abs().max() == 0 and win[:, -1].abs().max() == 0 and win[13, 13] == 1


def test_batched_equals_single(golden: Path):
    g = load_file(str(golden / "postprocess" / "window_0.45.safetensors"))
    full = postprocess(g["score_map"], g["boxes"], g["search_crop_params"], g["frame_size_wh"])
    for i in range(2):
        one = postprocess(g["score_map"][i : i + 1], g["boxes"][i : i + 1], g["search_crop_params"][i : i + 1],
                          g["frame_size_wh"][i : i + 1])
        np.testing.assert_array_equal(one["box_frame_xyxy"][0], full["box_frame_xyxy"][i])


def test_crop_to_frame_inverts_and_clips():
    params = np.array([[[2.0, 4.0], [10.0, -20.0]]])
    unclipped, clipped = crop_to_frame(np.array([[10.0, -20.0, 30.0, 20.0]]), params, np.array([[5, 100]]))
    np.testing.assert_array_equal(unclipped, [[0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_array_equal(clipped, [[0.0, 0.0, 5.0, 10.0]])


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="score_map"):
        postprocess(torch.zeros(1, 16, 16), torch.zeros(1, 16, 15, 4), np.eye(2)[None], np.array([[10, 10]]))


def test_crop_to_frame_is_the_crop_modules_inverse():
    from lorat_scale.crop import invert_params, map_boxes

    rng = np.random.default_rng(0)
    params = np.stack([rng.uniform(0.5, 3, (5, 2)), rng.uniform(-200, 200, (5, 2))], axis=1)  # (5, 2, 2)
    boxes = rng.uniform(0, 224, (5, 4))
    unclipped, _ = crop_to_frame(boxes, params)
    for i in range(5):  # batched == one at a time, bit for bit, and it undoes the forward mapping
        np.testing.assert_array_equal(unclipped[i], map_boxes(invert_params(params[i]), boxes[i]))
        np.testing.assert_allclose(map_boxes(params[i], unclipped[i]), boxes[i], atol=1e-9)
