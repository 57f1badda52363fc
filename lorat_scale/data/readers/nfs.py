"""Need for Speed (NfS), 30 fps version.

Two layouts are accepted:

* the official download: ``<root>/<seq>/30/<seq>/%05d.jpg`` with ``<root>/<seq>/30/<seq>.txt`` in
  the VATIC format ``id xmin ymin xmax ymax frame lost occluded generated "label"``: the corners
  are taken as xyxy as-is; ``lost`` = 1 makes the frame invalid. Where a 30 fps folder comes with
  the 240 fps annotation (about 8x as many lines), every 8th line is used; a length difference of
  one frame is cut off (both as the published NfS loaders do).
* the converted layout used by pytracking: ``<root>/sequences/<seq>/*.jpg`` with
  ``<root>/anno/nfs_<seq>.txt`` (``x y w h``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import clean as clean_sequence  # read()'s ``clean`` flag shadows the name
from ._common import OnError, ReadReport, list_images, parse_rows, read_text, set_frame_size, xywh_rows_to_xyxy

_SPLIT = re.compile(r"\s+")


def parse_vatic(path: Path, on_error: OnError, report: ReadReport) -> tuple[np.ndarray, np.ndarray]:
    """VATIC lines -> (N, 4) xyxy boxes and (N,) lost flags; bad lines become NaN rows."""
    text = read_text(path, on_error, report, "VATIC lines 'id xmin ymin xmax ymax frame lost occluded generated label'")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    boxes = np.full((len(lines), 4), np.nan)
    lost = np.zeros(len(lines), dtype=bool)
    for i, line in enumerate(lines):
        parts = _SPLIT.split(line.strip())
        try:
            boxes[i] = [float(v) for v in parts[1:5]]
            lost[i] = int(parts[6]) == 1
        except (ValueError, IndexError):
            report.add(f"{path}:{i + 1}: expected 'id xmin ymin xmax ymax frame lost occluded generated label',"
                       f" got {line.strip()!r}", on_error, path=path, line=i + 1)
    return boxes, lost


def _fit(frames: list[str], boxes: np.ndarray, lost: np.ndarray, path: Path, on_error: OnError,
         report: ReadReport) -> tuple[list[str], np.ndarray, np.ndarray]:
    if len(boxes) != len(frames) and frames and abs(len(boxes) / len(frames) - 8) < 1:
        boxes, lost = boxes[::8], lost[::8]  # 240 fps annotation for 30 fps frames
    if abs(len(boxes) - len(frames)) == 1:
        n = min(len(boxes), len(frames))
        frames, boxes, lost = frames[:n], boxes[:n], lost[:n]
    if len(boxes) != len(frames):
        report.add(f"{path}:{min(len(boxes), len(frames)) + 1}: {len(boxes)} annotations but {len(frames)} frames",
                   on_error, kind="frame_count", path=path, line=min(len(boxes), len(frames)) + 1)
        n = min(len(boxes), len(frames))
        frames, boxes, lost = frames[:n], boxes[:n], lost[:n]
    return frames, boxes, lost


def read(root: str | os.PathLike, split: str = "test", dataset: str = "nfs", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = False) -> list[Sequence]:
    """Read every NfS sequence (30 fps) of ``root``."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    items = []  # (name, frames, xyxy boxes, lost, annotation path)
    if (root / "anno").is_dir() and (root / "sequences").is_dir():
        for gt in sorted((root / "anno").glob("nfs_*.txt")):
            name = gt.stem[len("nfs_"):]
            rows = parse_rows(gt, 4, on_error, report)
            frames = list_images(root / "sequences" / name)
            items.append((name, frames, xywh_rows_to_xyxy(rows), np.zeros(len(rows), bool), gt))
    else:
        for name in sorted(os.listdir(root)):
            gt = root / name / "30" / f"{name}.txt"
            if not gt.is_file():
                continue
            boxes, lost = parse_vatic(gt, on_error, report)
            items.append((name, list_images(root / name / "30" / name), boxes, lost, gt))
    out = []
    for name, frames, boxes, lost, gt in items:
        if not frames:
            report.add(f"{gt}: no frames found for {name}", on_error, kind="no_frames", path=gt,
                       sequence=f"{dataset}/{name}")
            continue
        frames, boxes, lost = _fit(frames, boxes, lost, gt, on_error, report)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(boxes).all(axis=1) & ~lost & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        seq = Sequence(name=name, dataset=dataset, frames=frames, boxes=boxes, valid=valid,
                       annotation=str(gt))
        if not set_frame_size(seq, on_error, report):
            continue
        seq.extra["visible"] = ~lost
        s = clean_sequence(seq, report, trim=False) if clean else seq
        if s is not None:
            out.append(s)
    return out
