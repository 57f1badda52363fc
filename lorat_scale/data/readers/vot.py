"""VOT short-term reader (VOT2015-2019 style box/polygon ground truth).

Layout: ``<root>/<seq>/groundtruth.txt`` with frames in ``<seq>/color/``, ``<seq>/imgs/`` or
``<seq>/`` itself (``%08d.jpg``); ``<root>/list.txt`` (optional) names the sequences. A line is a
4-value rectangle ``x,y,w,h`` or a polygon ``x1,y1,...,xk,yk`` (usually 8 values, rotated boxes).
**Polygons become axis-aligned boxes by the min/max of their corners** (the enclosing box, not the
area-preserving rule). Lines ``nan``/empty mark unannotated frames (invalid). Mask lines (VOT2020+,
starting with ``m``) are not supported and raise a clear error.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import clean as clean_sequence  # read()'s ``clean`` flag shadows the name
from ._common import OnError, ReadReport, list_images, read_text, set_frame_size

_SPLIT = re.compile(r"[,\s]+")


def polygon_to_xyxy(values: list[float]) -> np.ndarray:
    """4 values (x,y,w,h) or an even number >= 6 of polygon coordinates -> xyxy (min/max of corners)."""
    if len(values) == 4:
        x, y, w, h = values
        return np.array([x, y, x + w, y + h], dtype=np.float64)
    if len(values) < 6 or len(values) % 2:
        raise ValueError(f"{len(values)} values (expected 4 for x,y,w,h or an even number >= 6 for a polygon)")
    pts = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def parse_groundtruth(path: Path, on_error: OnError, report: ReadReport) -> np.ndarray:
    """VOT groundtruth.txt -> (N, 4) xyxy; NaN rows for unannotated or bad lines."""
    lines = read_text(path, on_error, report, "x,y,w,h or polygon lines").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.full((len(lines), 4), np.nan)
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.lower() == "nan":
            continue
        if s.startswith("m"):
            report.add(f"{path}:{i + 1}: segmentation mask annotation (VOT2020+) is not supported; "
                       "expected x,y,w,h or polygon coordinates", on_error, path=path, line=i + 1)
            continue
        try:
            out[i] = polygon_to_xyxy([float(v) for v in _SPLIT.split(s)])
        except ValueError as e:
            report.add(f"{path}:{i + 1}: cannot read {s!r}: {e}", on_error, path=path, line=i + 1)
    return out


def frames_of(sdir: Path) -> list[str]:
    """Frame files of a VOT sequence folder (``color/``, ``imgs/`` or the folder itself)."""
    for sub in ("color", "imgs", "img"):
        if (sdir / sub).is_dir():
            return list_images(sdir / sub)
    return list_images(sdir)


def read(root: str | os.PathLike, split: str = "test", dataset: str = "vot", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = False) -> list[Sequence]:
    """Read the sequences of a VOT root (``list.txt`` if present, else every folder with a groundtruth.txt)."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    lst = root / "list.txt"
    names = read_text(lst, "raise", report, "sequence names").split() if lst.is_file() else sorted(
        d for d in os.listdir(root) if (root / d / "groundtruth.txt").is_file())
    out = []
    for name in names:
        sdir = root / name
        gt = sdir / "groundtruth.txt"
        boxes = parse_groundtruth(gt, on_error, report)
        frames = frames_of(sdir)
        if len(boxes) != len(frames):
            report.add(f"{gt}:{min(len(boxes), len(frames)) + 1}: {len(boxes)} annotation lines but "
                       f"{len(frames)} frames in {sdir}", on_error, kind="frame_count", path=gt,
                       line=min(len(boxes), len(frames)) + 1, sequence=f"{dataset}/{name}")
            n = min(len(boxes), len(frames))
            frames, boxes = frames[:n], boxes[:n]
        if not frames:
            continue
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        seq = Sequence(name=name, dataset=dataset, frames=frames, boxes=boxes, valid=valid,
                       annotation=str(gt))
        if not set_frame_size(seq, on_error, report):
            continue
        s = clean_sequence(seq, report, trim=False) if clean else seq
        if s is not None:
            out.append(s)
    return out
