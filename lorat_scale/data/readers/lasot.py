"""LaSOT and LaSOT_ext reader.

Layout: ``<root>/<class>/<class>-<n>/img/%08d.jpg`` with ``groundtruth.txt`` (x,y,w,h per line,
1-based: x and y are reduced by 1 as the official loader does), ``full_occlusion.txt`` and
``out_of_view.txt`` (comma-separated 0/1 flags). A frame is valid when neither flag is set.
Splits: "train" = every sequence not listed in ``testing_set.txt`` (1,120 in full LaSOT),
"test" = those listed, "all" = every sequence found (LaSOT_ext: use "all" and dataset="lasot_ext").
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import (OnError, ReadReport, check_finite, clean, fit_length, numbered_frames, parse_flags, parse_rows,
                      read_text, set_frame_size, xywh_rows_to_xyxy)


def find_testing_set(root: Path) -> Path | None:
    """``testing_set.txt`` in the root (LaSOT toolkit layout) or its parent, if present."""
    for p in (root / "testing_set.txt", root.parent / "testing_set.txt"):
        if p.is_file():
            return p
    return None


def list_sequences(root: Path) -> list[Path]:
    """Every ``<class>/<class>-<n>`` folder that holds a groundtruth.txt, sorted."""
    out = []
    for cls in sorted(os.listdir(root)):
        cdir = root / cls
        if not cdir.is_dir():
            continue
        for name in sorted(os.listdir(cdir)):
            if name.startswith(cls + "-") and (cdir / name / "groundtruth.txt").is_file():
                out.append(cdir / name)
    return out


def split_sequences(root: Path, split: str, testing_set: str | os.PathLike | None = None) -> list[Path]:
    """The sequence folders of ``split``: "train" = all but those in testing_set.txt, "test" = those, "all"."""
    seqs = list_sequences(root)
    if split in ("train", "test"):
        ts = Path(testing_set) if testing_set else find_testing_set(root)
        if ts is None:
            raise FileNotFoundError(f"LaSOT split {split!r} needs testing_set.txt: none in {root} or its parent; "
                                    "pass testing_set=PATH")
        test_names = set(read_text(ts, "raise", ReadReport(), "sequence names").split())
        return [s for s in seqs if (s.name in test_names) == (split == "test")]
    if split != "all":
        raise ValueError(f"LaSOT split {split!r}: expected 'train', 'test' or 'all'")
    return seqs


def read_sequence(sdir: Path, dataset: str, on_error: OnError, report: ReadReport,
                  do_clean: bool = True, trim: bool = True) -> Sequence | None:
    """One LaSOT sequence folder -> cleaned Sequence (None if it has no valid frame)."""
    gt_path = sdir / "groundtruth.txt"
    bad: list[int] = []
    rows = parse_rows(gt_path, 4, on_error, report, bad=bad)
    n = len(rows)
    # Visibility comes from the flags; a NaN box on a visible frame is then reported (check_finite).
    valid = np.ones(n, dtype=bool)
    valid[bad] = False  # malformed lines were reported already
    for flag_name in ("full_occlusion.txt", "out_of_view.txt"):
        fp = sdir / flag_name
        if not fp.is_file():
            continue  # LaSOT_ext and some mirrors lack them: visibility then comes from the boxes
        flags = parse_flags(fp, on_error, report)
        if len(flags) != n:
            report.add(f"{fp}:1: {len(flags)} flags, expected one per line of {gt_path} ({n})", on_error,
                       path=fp, line=1, sequence=f"{dataset}/{sdir.name}")
            flags = np.resize(flags, n) if len(flags) else np.zeros(n, dtype=bool)
        valid &= ~flags
    boxes = xywh_rows_to_xyxy(rows)
    boxes -= 1.0  # LaSOT x,y are 1-based: x and y drop by 1 and w,h keep, so both corners move
    # Line i of groundtruth.txt belongs to img/%08d.jpg numbered i (from 1); a missing file keeps its place.
    found = numbered_frames(sdir / "img", n, gt_path, f"{dataset}/{sdir.name}", on_error, report, base=1)
    if found is None:
        return None
    frames, present = found
    m = len(frames)  # frames past the last line (a short groundtruth.txt) are unannotated
    seq = Sequence(name=sdir.name, dataset=dataset, frames=frames, boxes=fit_length(boxes, m, np.nan),
                   valid=fit_length(valid, m, False) & present, frame_size=None, annotation=str(gt_path))
    check_finite(seq, gt_path, on_error, report)
    if not set_frame_size(seq, on_error, report, present):  # one header per sequence: LaSOT videos keep their size
        return None
    return clean(seq, report, trim=trim) if do_clean else seq


def read(root: str | os.PathLike, split: str = "train", testing_set: str | os.PathLike | None = None,
         dataset: str = "lasot", on_error: OnError = "raise", report: ReadReport | None = None,
         clean: bool = True) -> list[Sequence]:
    """Read a LaSOT (or LaSOT_ext) root for ``split`` in {"train", "test", "all"}."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    out = []
    for sdir in split_sequences(root, split, testing_set):
        s = read_sequence(sdir, dataset, on_error, report, do_clean=clean, trim=split != "test")
        if s is not None:
            out.append(s)
    return out
