"""Box conventions and box maths shared by data, model targets, loss and tracking.

Internal convention everywhere in lorat_scale: **xyxy, continuous pixel coordinates, 0-based**;
pixel column i covers [i, i+1). An x,y,w,h box becomes (x, y, x+w, y+h).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: result/report tools use this module without it
    import torch


def xywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    """(..., 4) x,y,w,h -> x1,y1,x2,y2 (no -1: continuous coordinates)."""
    box = np.asarray(box, dtype=np.float64)
    return np.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], axis=-1)


def xyxy_to_xywh(box: np.ndarray) -> np.ndarray:
    """(..., 4) x1,y1,x2,y2 -> x,y,w,h."""
    box = np.asarray(box, dtype=np.float64)
    return np.concatenate([box[..., :2], box[..., 2:] - box[..., :2]], axis=-1)


def rasterize_xyxy(box: np.ndarray | list[float]) -> tuple[int, int, int, int]:
    """Continuous box -> integer end-exclusive box touching every pixel the box overlaps.

    floor(x1), floor(y1); x2, y2 become floor(v + 1 - 1e-4) (LoRAT's end-exclusive ceiling).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    return (math.floor(x1), math.floor(y1), math.floor(x2 + 1 - 1e-4), math.floor(y2 + 1 - 1e-4))


def cell_mask(box_xyxy: np.ndarray | list[float], stride: float, grid_hw: tuple[int, int]) -> np.ndarray:
    """int64 (H, W) map, 1 where a grid cell of size ``stride`` is touched by the box, else 0.

    Used for the template foreground mask (box in template-crop pixels, stride 14) and for the
    positive cells of the training target (box in search-crop pixels).
    """
    h, w = grid_hw
    x1, y1, x2, y2 = rasterize_xyxy([float(v) / stride for v in box_xyxy])
    x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
    y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
    mask = np.zeros((h, w), dtype=np.int64)
    mask[y1:y2, x1:x2] = 1
    return mask


def _inter_union(a: "torch.Tensor", b: "torch.Tensor", eps: float) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Intersection and union (clamped to ``eps``) areas of matching rows of (..., 4) xyxy tensors."""
    import torch

    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(-1)
    return inter, (area_a + area_b - inter).clamp(min=eps)


def aligned_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of matching rows of two (..., 4) xyxy tensors; union clamped to ``eps``."""
    inter, union = _inter_union(a, b, eps)
    return inter / union


def aligned_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalized IoU of matching rows (mmdet formulation: union and hull clamped to ``eps``)."""
    import torch

    inter, union = _inter_union(a, b, eps)
    hull_lt = torch.minimum(a[..., :2], b[..., :2])
    hull_rb = torch.maximum(a[..., 2:], b[..., 2:])
    hull = (hull_rb - hull_lt).clamp(min=0).prod(-1).clamp(min=eps)
    return inter / union - (hull - union) / hull
