"""SiamFC crop: the ONE crop implementation, shared by training (data/pairs.py) and tracking (tracking/), golden-exact.

Crop parameters are a float64 numpy (2, 2) array ``[[sx, sy], [tx, ty]]``: ``x_crop = sx*x + tx``.
``siamfc_params`` gives the *requested* (ideal) parameters; ``crop_image`` rasterizes the visible
part of the frame to whole pixels, resizes it with ``F.interpolate`` (bilinear, align_corners=False,
no antialias) and returns the *adjusted* (pixel-aligned, per-axis, float32-valued) parameters,
which every later box mapping must use (tests/test_crop.py checks them against the official crops).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence as _Seq

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lorat_scale.boxes import rasterize_xyxy

__all__ = [
    "siamfc_params",
    "crop_regions",
    "adjusted_params",
    "crop_image",
    "map_boxes",
    "invert_params",
    "image_mean",
    "enlarge_to_min_size",
    "clip_boxes",
    "check_box",
]


def _size_wh(out_size: int | _Seq[int]) -> tuple[int, int]:
    """``112`` or ``(w, h)`` -> ``(w, h)``."""
    if isinstance(out_size, (int, np.integer)):
        return int(out_size), int(out_size)
    ow, oh = out_size
    return int(ow), int(oh)


def _box4(box_xyxy: np.ndarray | _Seq[float], what: str) -> tuple[float, float, float, float]:
    """The box as 4 Python floats (fast path for the per-pair hot loop); ValueError if malformed."""
    try:
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box_xyxy).reshape(-1))
    except (ValueError, TypeError):
        raise ValueError(f"{what} must have 4 values (x1, y1, x2, y2), got {np.shape(box_xyxy)}") from None
    if not all(map(math.isfinite, (x1, y1, x2, y2))):
        raise ValueError(f"{what} {[x1, y1, x2, y2]} is not finite")
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{what} {[x1, y1, x2, y2]} is empty (need x2 > x1 and y2 > y1)")
    return x1, y1, x2, y2


def check_box(box_xyxy: np.ndarray | _Seq[float], what: str = "box") -> np.ndarray:
    """The box as float64 (4,); ValueError if it is not finite or has no area."""
    return np.array(_box4(box_xyxy, what), dtype=np.float64)


def siamfc_params(
    box_xyxy: np.ndarray | _Seq[float],
    area_factor: float,
    out_size: int | _Seq[int],
    scale_jitter: _Seq[float] = (1.0, 1.0),
    shift: _Seq[float] = (0.0, 0.0),
) -> np.ndarray:
    """Requested SiamFC parameters: context area f, box centre -> crop centre (+ jitter)."""
    x1, y1, x2, y2 = _box4(box_xyxy, "box")
    w, h = x2 - x1, y2 - y1
    ow, oh = _size_wh(out_size)
    p = (area_factor - 1.0) * (w + h) / 2.0
    s = math.sqrt(ow * oh / ((w + p) * (h + p)))
    # scale_jitter multiplies the scale per axis (the training sampler passes 1/exp(N*sigma));
    # shift moves the object inside the crop, in output pixels.
    sx, sy = s * float(scale_jitter[0]), s * float(scale_jitter[1])
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    tx = ow / 2.0 - cx * sx + float(shift[0])
    ty = oh / 2.0 - cy * sy + float(shift[1])
    return np.array([[sx, sy], [tx, ty]], dtype=np.float64)


def map_boxes(params: np.ndarray, boxes: np.ndarray | _Seq[float]) -> np.ndarray:
    """Map (..., 4) xyxy boxes corner by corner with (2, 2) ``params``, or (B, 2, 2) for (B, 4) boxes (float64)."""
    params = np.asarray(params, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    s = np.concatenate([params[..., 0, :], params[..., 0, :]], axis=-1)
    t = np.concatenate([params[..., 1, :], params[..., 1, :]], axis=-1)
    return boxes * s + t


def invert_params(params: np.ndarray) -> np.ndarray:
    """Inverse mapping ``[[1/sx, 1/sy], [-tx/sx, -ty/sy]]`` of (..., 2, 2) params in float64 (as the reference)."""
    params = np.asarray(params, dtype=np.float64)
    s, t = params[..., 0, :], params[..., 1, :]
    return np.stack([1.0 / s, -t / s], axis=-2)


def clip_boxes(boxes: np.ndarray, size_wh: _Seq[float]) -> np.ndarray:
    """Clip (..., 4) xyxy boxes to [0, W] x [0, H]."""
    w, h = float(size_wh[0]), float(size_wh[1])
    return np.clip(np.asarray(boxes, dtype=np.float64), 0.0, [w, h, w, h])


def enlarge_to_min_size(box_xyxy: np.ndarray | _Seq[float], min_size: float | _Seq[float]) -> np.ndarray:
    """Raise the box's w and h to at least ``min_size`` around its centre (tracker's 10 px rule)."""
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    if not np.isfinite(box).all():
        raise ValueError(f"box {box.tolist()} is not finite")
    mw, mh = (float(min_size), float(min_size)) if np.isscalar(min_size) else map(float, min_size)
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    w, h = max(box[2] - box[0], mw), max(box[3] - box[1], mh)
    return np.array([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], dtype=np.float64)


def crop_regions(
    frame_size_wh: _Seq[int], params_requested: np.ndarray, out_size: int | _Seq[int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Integer end-exclusive xyxy (dst in crop pixels, src in frame pixels) of the visible frame part."""
    fw, fh = int(frame_size_wh[0]), int(frame_size_wh[1])
    ow, oh = _size_wh(out_size)
    try:
        (sx, sy), (tx, ty) = ((float(a), float(b)) for a, b in np.asarray(params_requested, dtype=np.float64))
    except (ValueError, TypeError):
        raise ValueError(f"crop params must be a (2, 2) array, got shape {np.shape(params_requested)}") from None
    if not (all(map(math.isfinite, (sx, sy, tx, ty))) and sx > 0 and sy > 0):
        raise ValueError(f"crop params must be finite with positive scales, got {[[sx, sy], [tx, ty]]}")
    # Python floats, not numpy: the same IEEE float64 operations as map_boxes/invert_params, ~10x
    # faster on four numbers (this runs for every jitter retry).
    # 1. frame rectangle -> crop, clipped to the crop, rasterized.
    dst = rasterize_xyxy((min(max(tx, 0.0), ow), min(max(ty, 0.0), oh),
                          min(max(sx * fw + tx, 0.0), ow), min(max(sy * fh + ty, 0.0), oh)))
    # 2. that integer rectangle -> frame with the inverse requested params, rasterized, clipped.
    isx, isy, itx, ity = 1.0 / sx, 1.0 / sy, -tx / sx, -ty / sy
    sx1, sy1, sx2, sy2 = rasterize_xyxy(
        (dst[0] * isx + itx, dst[1] * isy + ity, dst[2] * isx + itx, dst[3] * isy + ity)
    )
    src = (min(max(sx1, 0), fw), min(max(sy1, 0), fh), min(max(sx2, 0), fw), min(max(sy2, 0), fh))
    return dst, src


def _adjusted_params(dst: tuple[int, int, int, int], src: tuple[int, int, int, int]) -> np.ndarray:
    """s' = dst_size/src_size, t' = dst_x1 - src_x1*s', computed in float32 like the reference."""
    f32 = np.float32
    sx = f32(dst[2] - dst[0]) / f32(src[2] - src[0])
    sy = f32(dst[3] - dst[1]) / f32(src[3] - src[1])
    tx = f32(dst[0]) - f32(src[0]) * sx
    ty = f32(dst[1]) - f32(src[1]) * sy
    return np.array([[sx, sy], [tx, ty]], dtype=np.float64)


def adjusted_params(
    frame_size_wh: _Seq[int], params_requested: np.ndarray, out_size: int | _Seq[int]
) -> np.ndarray:
    """The adjusted params ``crop_image`` would return, without touching pixels (for jitter retries)."""
    dst, src = crop_regions(frame_size_wh, params_requested, out_size)
    if dst[2] <= dst[0] or dst[3] <= dst[1] or src[2] <= src[0] or src[3] <= src[1]:
        return np.asarray(params_requested, dtype=np.float32).astype(np.float64)
    return _adjusted_params(dst, src)


def _pad_colour(frame: np.ndarray, pad_rgb: np.ndarray | _Seq[float] | None) -> torch.Tensor:
    """(3, 1, 1) float32 padding colour."""
    rgb = image_mean(frame) if pad_rgb is None else np.asarray(pad_rgb, dtype=np.float32).reshape(3)
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).view(3, 1, 1)


def crop_image(
    frame: np.ndarray,
    params_requested: np.ndarray,
    out_size: int | _Seq[int],
    pad_rgb: np.ndarray | _Seq[float] | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Crop ``frame`` (uint8 HWC RGB) -> (float32 CHW 0..255 crop, adjusted float64 (2, 2) params).

    ``pad_rgb`` fills the area outside the frame; None = this frame's ``image_mean``, computed only
    when the crop needs padding (the tracker passes the template frame's mean instead).
    ``region`` (W, H, x0, y0): ``frame`` is only the part of a W x H frame whose top-left pixel is (x0, y0)
    (a region decode, decode.decode_region); it must hold every pixel the crop reads. The crop is the
    same as from the whole frame, bit for bit.
    """
    if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
        raise ValueError(
            f"frame must be a uint8 HxWx3 numpy array, got {type(frame).__name__} "
            f"{getattr(frame, 'dtype', '')} {getattr(frame, 'shape', '')}"
        )
    ow, oh = _size_wh(out_size)
    fw, fh, ox, oy = (frame.shape[1], frame.shape[0], 0, 0) if region is None else region
    dst, src = crop_regions((fw, fh), params_requested, (ow, oh))
    dw, dh = dst[2] - dst[0], dst[3] - dst[1]
    sw, sh = src[2] - src[0], src[3] - src[1]
    if region is not None and (src[0] < ox or src[1] < oy or src[2] > ox + frame.shape[1]
                               or src[3] > oy + frame.shape[0] or (pad_rgb is None and dst != (0, 0, ow, oh))):
        raise ValueError(f"crop reads frame pixels {src} (padding {dst != (0, 0, ow, oh)}), outside the "
                         f"{frame.shape[1]}x{frame.shape[0]} region at ({ox}, {oy}) it was given")
    if dw <= 0 or dh <= 0 or sw <= 0 or sh <= 0:
        # Nothing of the frame is visible: all padding; the requested params are the best mapping.
        crop = torch.empty((3, oh, ow), dtype=torch.float32)
        crop[:] = _pad_colour(frame, pad_rgb)
        return crop, np.asarray(params_requested, dtype=np.float32).astype(np.float64)

    # Slice the uint8 source rectangle first (a view), so only those pixels are converted to float.
    with warnings.catch_warnings():
        # Decoded frames are often read-only numpy views; the tensor is only read, never written.
        warnings.simplefilter("ignore", UserWarning)
        view = frame[src[1] - oy : src[3] - oy, src[0] - ox : src[2] - ox]  # (sh, sw, 3), no copy
        if min(view.strides) < 0:  # e.g. a BGR->RGB [..., ::-1] view: torch cannot wrap those
            view = np.ascontiguousarray(view)
        pixels = torch.from_numpy(view)
    # permute gives a channels-last NCHW view; F.interpolate's channels-last kernel reads it as is.
    pixels = pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    if (dw, dh) == (sw, sh):
        resized = pixels  # same size: bilinear with align_corners=False is the identity
    else:
        resized = F.interpolate(pixels, size=(dh, dw), mode="bilinear", align_corners=False, antialias=False)
    if dst == (0, 0, ow, oh):
        crop = resized[0].contiguous()
    else:
        crop = torch.empty((3, oh, ow), dtype=torch.float32)
        crop[:] = _pad_colour(frame, pad_rgb)
        crop[:, dst[1] : dst[3], dst[0] : dst[2]] = resized[0]
    return crop, _adjusted_params(dst, src)


def image_mean(frame: np.ndarray) -> np.ndarray:
    """float32 (3,) per-channel mean of a uint8 HWC frame (the padding colour)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3, got shape {frame.shape}")
    # OpenCV sums in float64 with SIMD: ~100x faster than numpy's uint8 reduction over an axis and
    # more accurate than a float32 sum (the golden means agree to 2e-5).
    return np.asarray(cv2.mean(np.ascontiguousarray(frame))[:3], dtype=np.float32)
