"""LoRAT post-processing: score map + box map -> one box per sample in frame pixels (batched).

Steps, as the official tracker takes them (tests/test_postprocess.py checks them):
sigmoid -> Hann-window blend -> argmax -> unpenalized confidence -> box x search size ->
inverse of the *adjusted* crop parameters (float64) -> clip to the frame.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..crop import invert_params, map_boxes

__all__ = ["hann_window", "postprocess", "crop_to_frame"]


@lru_cache(maxsize=16)
def _hann_cpu(h: int, w: int) -> torch.Tensor:
    """Cached float32 (h, w) window on the CPU."""
    # periodic=False: symmetric window whose first and last values are exactly 0 (as the reference).
    return torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))


def hann_window(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 (h, w) outer product of two symmetric (periodic=False) Hann windows."""
    return _hann_cpu(int(h), int(w)).to(device)


def crop_to_frame(
    boxes_crop: np.ndarray | torch.Tensor,
    params: np.ndarray | torch.Tensor,
    frame_size_wh: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4) crop-pixel boxes -> (unclipped, clipped) float64 frame boxes via inverted (B, 2, 2) params."""
    b = _f64(boxes_crop).reshape(-1, 4)
    p = _f64(params).reshape(-1, 2, 2)
    if p.shape[0] != b.shape[0]:
        raise ValueError(f"{b.shape[0]} boxes but {p.shape[0]} crop parameter sets")
    # The crop module's own inverse, in float64 like the reference pipeline's parameter cache.
    unclipped = map_boxes(invert_params(p), b)
    if frame_size_wh is None:
        return unclipped, unclipped.copy()
    wh = _f64(frame_size_wh).reshape(-1, 2)
    hi = np.concatenate([wh, wh], axis=1)
    clipped = np.minimum(np.maximum(unclipped, 0.0), hi)
    return unclipped, clipped


def _f64(a: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any array/tensor -> float64 numpy on the CPU."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def postprocess(
    score_map: torch.Tensor,
    boxes: torch.Tensor,
    search_params: np.ndarray | torch.Tensor,
    frame_size_wh: np.ndarray | torch.Tensor,
    window_penalty: float = 0.45,
    search_size: int | tuple[int, int] | None = None,
    patch_size: int = 14,
) -> dict[str, torch.Tensor | np.ndarray]:
    """Pick one box per sample.

    score_map: (B, H, W) logits; boxes: (B, H, W, 4) normalized xyxy in the search crop;
    search_params: (B, 2, 2) adjusted crop parameters; frame_size_wh: (B, 2).
    ``search_size`` defaults to ``H * patch_size`` (224 for a 16x16 map).

    Returns torch tensors on the input device (``score``, ``penalized_score``, ``best_index``,
    ``best_row_col``, ``confidence``, ``box_crop_px_xyxy``) and float64 numpy frame boxes
    (``box_frame_xyxy_unclipped``, ``box_frame_xyxy``).
    """
    if score_map.ndim != 3 or boxes.ndim != 4 or boxes.shape[:3] != score_map.shape or boxes.shape[3] != 4:
        raise ValueError(
            f"expected score_map (B,H,W) and boxes (B,H,W,4), got {tuple(score_map.shape)} and {tuple(boxes.shape)}"
        )
    if not 0.0 <= window_penalty <= 1.0:
        raise ValueError(f"window_penalty must be in [0, 1], got {window_penalty}")
    bsz, h, w = score_map.shape
    if search_size is None:
        search_size = (w * patch_size, h * patch_size)
    sw, sh = (search_size, search_size) if isinstance(search_size, int) else search_size

    # Post-processing always runs in float32, whatever precision the model ran in.
    score = torch.sigmoid(score_map.float())
    if window_penalty > 0:
        win = hann_window(h, w, score.device)
        penalized = score * (1.0 - window_penalty) + win * window_penalty
    else:
        penalized = score
    best = penalized.flatten(1).argmax(dim=1)  # (B,) first maximum on ties, like torch.argmax
    rows = torch.arange(bsz, device=score.device)
    confidence = score.flatten(1)[rows, best]  # the unpenalized score is what gets reported
    box_norm = boxes.float().flatten(1, 2)[rows, best]  # (B, 4)
    scale = torch.tensor([sw, sh, sw, sh], dtype=torch.float32, device=score.device)
    box_crop = box_norm * scale  # float32, as the reference multiplies before leaving torch
    unclipped, clipped = crop_to_frame(box_crop, search_params, frame_size_wh)
    return {
        "score": score,
        "penalized_score": penalized,
        "best_index": best,
        "best_row_col": torch.stack([best // w, best % w], dim=1),
        "confidence": confidence,
        "box_crop_px_xyxy": box_crop,
        "box_frame_xyxy_unclipped": unclipped,
        "box_frame_xyxy": clipped,
    }
