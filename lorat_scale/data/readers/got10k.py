"""GOT-10k reader.

Layout: ``<root>/{train,val,test}/list.txt`` naming sequence folders; each folder holds
``%08d.jpg`` frames, ``groundtruth.txt`` (x,y,w,h per line, 0-based continuous: no shift),
``absence.label`` (1 = object absent -> invalid) and ``cover.label`` (visible fraction 0..8, kept in
``Sequence.extra["cover"]``). The test split annotates the first frame only (the other boxes are NaN).
Splits: "train", "val", "test", and "vot_train" / "vot_val": the lines of ``train/list.txt`` whose
0-based indices are listed in the split file (pytracking's lists, shipped in ``readers/splits/``: LoRAT
trains on vot_train, 7,086 sequences; vot_val holds 1,249).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import (AnnotationError, OnError, Problem, ReadReport, check_finite, clean, fit_length, numbered_frames,
                      parse_flags, parse_rows, read_text, set_frame_size, xywh_rows_to_xyxy)

SUBSETS = {"vot_train": "got10k_vot_train_split.txt", "vot_val": "got10k_vot_val_split.txt"}
SPLITS_DIR = Path(__file__).resolve().parent / "splits"  # package data (setup.cfg [options.package_data])


def _subset_file(root: Path, split: str, split_file: str | os.PathLike | None) -> Path:
    """The index list of a vot_* subset: ``split_file``, else one in the root, else the copy shipped in the package."""
    if split_file:
        return Path(split_file)
    if (root / SUBSETS[split]).is_file():
        return root / SUBSETS[split]
    return SPLITS_DIR / SUBSETS[split]


def sequence_names(root: Path, split: str, split_file: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """(folder, sequence names) of a split."""
    folder = "train" if split in SUBSETS else split
    if folder not in ("train", "val", "test"):
        raise ValueError(f"GOT-10k split {split!r}: expected train, val, test, vot_train or vot_val")
    list_path = root / folder / "list.txt"
    names = read_text(list_path, "raise", ReadReport(), "sequence folder names").split()
    if split in SUBSETS:
        sf = _subset_file(root, split, split_file)
        picked = []
        for ln, tok in enumerate(read_text(sf, "raise", ReadReport(), "0-based indices").split("\n"), 1):
            if not tok.strip():
                continue
            try:
                k = int(tok)
            except ValueError:
                raise AnnotationError(Problem("annotation", str(sf), f"{sf}:{ln}: {tok!r} is not an integer index "
                                              f"into {list_path}", ln)) from None
            if not 0 <= k < len(names):
                raise AnnotationError(Problem("annotation", str(sf), f"{sf}:{ln}: index {k} outside {list_path} "
                                              f"({len(names)} lines, 0-based)", ln))
            picked.append(names[k])
        names = picked
    return folder, names


def read_sequence(sdir: Path, on_error: OnError, report: ReadReport, do_clean: bool = True,
                  trim: bool = True) -> Sequence | None:
    """One GOT-10k sequence folder -> cleaned Sequence (None if no valid frame)."""
    gt_path = sdir / "groundtruth.txt"
    key = f"got10k/{sdir.name}"
    bad: list[int] = []
    rows = parse_rows(gt_path, 4, on_error, report, bad=bad)
    # Line i of groundtruth.txt belongs to %08d.jpg numbered i (from 1); a missing file keeps its place.
    found = numbered_frames(sdir, len(rows), gt_path, key, on_error, report, base=1)
    if found is None:
        return None
    frames, present = found
    n = len(frames)
    # Frames with a box line are annotated; visibility then comes from absence.label, and a NaN
    # box on a frame it calls present is reported. Frames past the last line (test) are unannotated.
    valid = fit_length(np.ones(len(rows), dtype=bool), n, False) & present
    valid[[b for b in bad if b < n]] = False
    rows = fit_length(rows, n, np.nan)
    extra = {}
    ab = sdir / "absence.label"
    if ab.is_file():
        absent = parse_flags(ab, on_error, report)
        valid &= ~fit_length(absent, n, False)
    cv = sdir / "cover.label"
    if cv.is_file():
        cover = parse_rows(cv, 1, on_error, report, what="cover level 0..8")[:, 0]
        extra["cover"] = fit_length(cover, n, np.nan)
    seq = Sequence(name=sdir.name, dataset="got10k", frames=frames, boxes=xywh_rows_to_xyxy(rows), valid=valid,
                   extra=extra, annotation=str(gt_path))
    check_finite(seq, gt_path, on_error, report)
    if not set_frame_size(seq, on_error, report, present):
        return None
    return clean(seq, report, trim=trim) if do_clean else seq


def read(root: str | os.PathLike, split: str = "train", split_file: str | os.PathLike | None = None,
         on_error: OnError = "raise", report: ReadReport | None = None, clean: bool = True) -> list[Sequence]:
    """Read a GOT-10k root for ``split`` (train, val, test, vot_train, vot_val)."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    folder, names = sequence_names(root, split, split_file)
    out = []
    for name in names:
        s = read_sequence(root / folder / name, on_error, report, do_clean=clean, trim=folder != "test")
        if s is not None:
            out.append(s)
    return out
