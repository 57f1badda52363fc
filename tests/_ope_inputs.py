"""Deterministic tracker outputs on real ground truth, for comparing metric conventions.

The predictions follow the ground truth with bounded, reproducible noise (moves, scale changes,
a lost phase every 350 frames) on a quarter-pixel grid, so they print exactly in result files.
The random numbers come from integer hashing (splitmix64) of the frame index: the same on every
machine and numpy version. ``dirty=True`` adds the boxes only some toolkits accept: NaN rows,
zero and negative sizes, boxes at the image origin.

The toolkits' own numbers in ``test_conventions.py`` were computed from exactly these inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lorat_scale.evaluation.benchmarks import GroundTruth, load_ground_truth


def uniform(seed: int, n: int, k: int) -> np.ndarray:
    """(n, k) floats in [0, 1) from splitmix64 of (seed, index): platform independent."""
    z = (np.arange(n * k, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x100000001B3)) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(n, k)


def predictions(gt: np.ndarray, seed: int, dirty: bool = False) -> np.ndarray:
    """A plausible tracker output (x,y,w,h) for ground truth ``gt`` (x,y,w,h, NaN/empty where absent)."""
    gt = np.asarray(gt, dtype=np.float64)
    n = len(gt)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
    ok[0] = True
    src = np.maximum.accumulate(np.where(ok, np.arange(n), 0))  # the last annotated box where absent
    base = np.nan_to_num(gt[src], nan=1.0)
    u = uniform(seed, n, 4)
    w, h = base[:, 2], base[:, 3]
    pred = np.stack([base[:, 0] + (u[:, 0] - 0.5) * 0.6 * w, base[:, 1] + (u[:, 1] - 0.5) * 0.6 * h,
                     w * (0.7 + 0.6 * u[:, 2]), h * (0.7 + 0.6 * u[:, 3])], axis=1)
    lost = (np.arange(n) // 50) % 7 == 6  # frames 300-349, 650-699, ...: far off the target
    pred[lost, 0] += 3 * w[lost]
    pred = np.round(pred * 4) / 4  # quarter pixels: exact in binary and in a "%.4f" result file
    pred[:, 2:] = np.maximum(pred[:, 2:], 0.25)
    if dirty:
        i = np.arange(n)
        pred[i % 37 == 5] = np.nan
        pred[i % 41 == 7, 2] = 0.0
        pred[i % 43 == 9, 3] = -4.0
        pred[i % 47 == 11, :2] = 0.0
        pred[i % 53 == 13, 0] = np.nan  # NaN in x alone (the OTB toolkit does not count it invalid)
    return pred


def real_sets(shared_data: Path) -> dict[str, tuple[str, list[GroundTruth]]]:
    """name -> (benchmark, ground truth) of the real annotations in ../shared/data."""
    ann = shared_data / "annotations"
    lasot = load_ground_truth("lasot", ann / "lasot_test")  # 280 sequences with absent flags
    # The same boxes moved to 0-based coordinates, as a 0-based benchmark (GOT-10k) writes them:
    # 27,578 visible boxes then touch x = 0 or y = 0, where the validity rules of the toolkits differ.
    shifted = [GroundTruth(g.name, g.boxes - [1, 1, 0, 0], g.source, visible=g.visible) for g in lasot]
    return {
        "lasot_test": ("lasot", lasot),
        "lasot_test_0based": ("lasot", shifted),
        "otb": ("otb", load_ground_truth("otb", shared_data / "otb")),
        "vot": ("vot", load_ground_truth("vot", shared_data / "vot")),
        "lasot_sample": ("lasot", load_ground_truth("lasot", shared_data / "lasot", "airplane-1")),
    }
