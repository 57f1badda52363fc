"""The "custom" format: the simplest layout for your own videos.

::

    <root>/
      <sequence name>/              one folder per sequence (any name without "/" or ".")
        *.jpg | *.png | ...         the frames, either directly here or in an ``img/`` subfolder;
                                    line k of groundtruth.txt belongs to the k-th frame counted
                                    from the lowest number in the file names (1.jpg, 000001.jpg,
                                    frame_0001.png...; numbers may step by a constant, e.g. every
                                    5th frame), so a missing frame is reported and does not shift
                                    later boxes; names without numbers go in name order
        groundtruth.txt             one box per frame: x,y,w,h, 0-based continuous pixels
                                    (x2 = x + w); values separated by commas, spaces or tabs;
                                    fewer lines than frames = the remaining frames are unannotated;
                                    a line "nan,nan,nan,nan" or an empty line = this frame unannotated
        absent.txt (optional)       one 0/1 per frame (1 = object not visible), separated by
                                    commas, spaces or newlines
      <split>.txt (optional)        sequence folder names of a split, one per line; without it,
                                    every folder holding a groundtruth.txt is in every split
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import (OnError, ReadReport, clean, fit_length, numbered_frames, parse_flags, parse_rows, read_text,
                      set_frame_size, xywh_rows_to_xyxy)


def sequence_dirs(root: Path, split: str) -> list[Path]:
    """Sequence folders of ``split`` (from ``<root>/<split>.txt`` if present)."""
    lst = root / f"{split}.txt"
    if lst.is_file():
        return [root / n for n in read_text(lst, "raise", ReadReport(), "sequence folder names").split()]
    return sorted((root / d for d in os.listdir(root) if (root / d / "groundtruth.txt").is_file()),
                  key=lambda p: p.name)


def read_sequence(sdir: Path, on_error: OnError, report: ReadReport, dataset: str = "custom",
                  do_clean: bool = True, trim: bool = True) -> Sequence | None:
    """One custom sequence folder -> cleaned Sequence (None if no valid frame)."""
    gt_path = sdir / "groundtruth.txt"
    key = f"{dataset}/{sdir.name}"
    rows = parse_rows(gt_path, 4, on_error, report, allow_empty_rows=True)
    # Numbered frame names place each frame on its line: a missing frame does not shift later boxes.
    found = numbered_frames(sdir / "img" if (sdir / "img").is_dir() else sdir, len(rows), gt_path, key, on_error,
                            report)
    if found is None:
        return None
    frames, present = found
    n = len(frames)
    rows = fit_length(rows, n, np.nan)
    valid = np.isfinite(rows).all(axis=1) & present
    ab = sdir / "absent.txt"
    if ab.is_file():
        flags = parse_flags(ab, on_error, report)
        if len(flags) != n:
            report.add(f"{ab}:1: {len(flags)} flags for {n} frames, expected one per frame", on_error, path=ab,
                       line=1, sequence=key)
        valid &= ~fit_length(flags, n, False)
    seq = Sequence(name=sdir.name, dataset=dataset, frames=frames, boxes=xywh_rows_to_xyxy(rows), valid=valid,
                   annotation=str(gt_path))
    if not set_frame_size(seq, on_error, report, present):
        return None
    return clean(seq, report, trim=trim) if do_clean else seq


def read(root: str | os.PathLike, split: str = "train", dataset: str = "custom", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = True) -> list[Sequence]:
    """Read every sequence folder of a custom-format root."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    out = []
    for sdir in sequence_dirs(root, split):
        s = read_sequence(sdir, on_error, report, dataset=dataset, do_clean=clean, trim=split != "test")
        if s is not None:
            out.append(s)
    return out
