"""TNL2K reader (test set: 700 sequences).

Layout: ``<root>/<seq>/imgs/*.jpg|png`` (frames in natural name order), ``<seq>/groundtruth.txt``
(``x,y,w,h`` per line, taken as-is) and ``<seq>/language.txt`` (the sentence, kept in
``Sequence.extra["language"]``). Frames whose box is missing, NaN or has w or h <= 0 are invalid.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import OnError, ReadReport, clean, list_images, parse_rows, set_frame_size, xywh_rows_to_xyxy


def read_sequence(sdir: Path, on_error: OnError, report: ReadReport, dataset: str = "tnl2k",
                  do_clean: bool = False) -> Sequence | None:
    """One TNL2K sequence folder -> Sequence."""
    gt = sdir / "groundtruth.txt"
    frames = list_images(sdir / "imgs")
    if not frames:
        report.add(f"{sdir / 'imgs'}: no image files (expected TNL2K frames in imgs/)", on_error, kind="no_frames",
                   path=sdir / "imgs", sequence=f"{dataset}/{sdir.name}")
        return None
    rows = parse_rows(gt, 4, on_error, report)
    if len(rows) != len(frames):
        report.add(f"{gt}:{min(len(rows), len(frames)) + 1}: {len(rows)} box lines but {len(frames)} frames "
                   f"in {sdir / 'imgs'}", on_error, kind="frame_count", path=gt, line=min(len(rows), len(frames)) + 1,
                   sequence=f"{dataset}/{sdir.name}")
        n = min(len(rows), len(frames))
        frames, rows = frames[:n], rows[:n]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(rows).all(axis=1) & (rows[:, 2] > 0) & (rows[:, 3] > 0)
    seq = Sequence(name=sdir.name, dataset=dataset, frames=frames, boxes=xywh_rows_to_xyxy(rows), valid=valid,
                   annotation=str(gt))
    if not set_frame_size(seq, on_error, report):
        return None
    lang = sdir / "language.txt"
    if lang.is_file():
        seq.extra["language"] = np.array([lang.read_text(errors="replace").strip()])
    return clean(seq, report, trim=False) if do_clean else seq


def read(root: str | os.PathLike, split: str = "test", dataset: str = "tnl2k", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = False) -> list[Sequence]:
    """Read every TNL2K sequence folder (one holding groundtruth.txt) of ``root``."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    out = []
    for d in sorted(os.listdir(root)):
        if (root / d / "groundtruth.txt").is_file():
            s = read_sequence(root / d, on_error, report, dataset, do_clean=clean)
            if s is not None:
                out.append(s)
    return out
