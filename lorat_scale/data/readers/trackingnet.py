"""TrackingNet reader.

Layout: ``<root>/TRAIN_0 .. TRAIN_11`` and ``<root>/TEST``, each with ``frames/<seq>/<i>.jpg``
(i from 0, not zero-padded) and ``anno/<seq>.txt`` (x,y,w,h per line, 0-based: no shift). TEST
annotates only the first frame. Splits: "train" (every TRAIN_* chunk present, or ``chunks``),
"test", or one chunk name such as "TRAIN_3".
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import (OnError, ReadReport, check_finite, clean, fit_length, numbered_frames, parse_rows, set_frame_size,
                      xywh_rows_to_xyxy)


def chunks_for(root: Path, split: str) -> list[str]:
    """Chunk folder names of a split."""
    if split == "train":
        found = [d for d in os.listdir(root) if re.fullmatch(r"TRAIN_\d+", d) and (root / d).is_dir()]
        return sorted(found, key=lambda d: int(d.split("_")[1]))
    if split == "test":
        return ["TEST"]
    if re.fullmatch(r"TRAIN_\d+|TEST", split):
        return [split]
    raise ValueError(f"TrackingNet split {split!r}: expected 'train', 'test' or a chunk like 'TRAIN_0'")


def read_sequence(chunk_dir: Path, name: str, on_error: OnError, report: ReadReport, do_clean: bool = True,
                  trim: bool = True) -> Sequence | None:
    """One TrackingNet sequence -> cleaned Sequence (None if no valid frame)."""
    anno = chunk_dir / "anno" / f"{name}.txt"
    fdir = chunk_dir / "frames" / name
    rows = parse_rows(anno, 4, on_error, report)
    # Line i of the annotation belongs to frame i-1.jpg (numbered from 0, not zero-padded); a missing
    # file keeps its place.
    found = numbered_frames(fdir, len(rows), anno, f"trackingnet/{name}", on_error, report, base=0)
    if found is None:
        return None
    frames, present = found
    rows = fit_length(rows, len(frames), np.nan)
    seq = Sequence(name=name, dataset="trackingnet", frames=frames, boxes=xywh_rows_to_xyxy(rows),
                   valid=np.isfinite(rows).all(axis=1) & present, annotation=str(anno))
    check_finite(seq, anno, on_error, report)
    if not set_frame_size(seq, on_error, report, present):
        return None
    return clean(seq, report, trim=trim) if do_clean else seq


def read(root: str | os.PathLike, split: str = "train", chunks: list[str] | None = None, on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = True) -> list[Sequence]:
    """Read TrackingNet chunks of ``split``."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    out = []
    for chunk in chunks or chunks_for(root, split):
        cdir = root / chunk
        if not (cdir / "anno").is_dir():
            raise FileNotFoundError(f"TrackingNet chunk {cdir}: no anno/ folder (expected anno/<seq>.txt)")
        for f in sorted(os.listdir(cdir / "anno")):
            if f.endswith(".txt"):
                s = read_sequence(cdir, f[:-4], on_error, report, do_clean=clean, trim=chunk != "TEST")
                if s is not None:
                    out.append(s)
    return out
