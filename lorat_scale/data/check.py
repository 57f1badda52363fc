"""``lorat-scale check-data``: validate a dataset root and print counts and every problem.

Checks: malformed annotation lines (file:line), NaN/inf boxes on visible frames, missing frame
files, boxes outside the image, frames whose size differs from the sequence's, and, with
``decode=True``, frames that cannot be fully decoded (corrupt or truncated JPEGs).
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .readers import DEFAULT_SPLIT, READERS, ReadReport
from .readers._common import clean
from .sequence import Sequence


@dataclass
class CheckResult:
    """Counts and problems of one dataset check."""

    sequences: int = 0
    frames: int = 0
    valid_frames: int = 0
    missing_frames: int = 0
    corrupt_frames: int = 0
    size_mismatch: int = 0
    out_of_image_boxes: int = 0
    annotation_problems: int = 0
    dropped_after_cleaning: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _decode_error(path: str) -> str | None:
    """None if the image decodes fully, else the error text."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # full decode: truncated/corrupt JPEG data raises here
            return None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        return f"{type(e).__name__}: {e}"


def check_sequence(seq: Sequence, res: CheckResult, decode: bool = False) -> None:
    """Check one uncleaned sequence's frames and boxes, adding to ``res``."""
    from PIL import Image

    res.sequences += 1
    res.frames += len(seq)
    res.valid_frames += int(seq.valid.sum())
    exists = np.array([os.path.isfile(f) for f in seq.frames], dtype=bool)
    for i in np.flatnonzero(~exists):
        res.missing_frames += 1
        res.problems.append(f"{seq.frames[i]}: missing frame {i + 1} of {seq.key} ({len(seq)} boxes in "
                            f"{seq.annotation or 'its annotation'})")
    if decode:
        for i in np.flatnonzero(exists):
            err = _decode_error(seq.frames[i])
            if err is not None:
                res.corrupt_frames += 1
                res.problems.append(f"{seq.frames[i]}: cannot decode ({err})")
                continue
            with Image.open(seq.frames[i]) as im:
                if seq.frame_size is not None and im.size != tuple(seq.frame_size):
                    res.size_mismatch += 1
                    res.problems.append(f"{seq.frames[i]}: size {im.size[0]}x{im.size[1]}, expected "
                                        f"{seq.frame_size[0]}x{seq.frame_size[1]} like the first frame of {seq.key}")
    for i in np.flatnonzero(seq.valid):
        wh = seq.size_of(i)
        b = seq.boxes[i]
        # Tolerance: COCO's float boxes overshoot the border by ~1e-6 px; that is not a problem.
        tol = 1e-3
        if wh is not None and np.isfinite(b).all() and (min(b[0], b[1]) < -tol or b[2] > wh[0] + tol
                                                       or b[3] > wh[1] + tol):
            res.out_of_image_boxes += 1
            where = f"{seq.annotation}:{i + 1}" if seq.annotation and not seq.is_image else (seq.annotation or seq.key)
            res.problems.append(f"{where}: box xyxy {np.round(b, 2).tolist()} reaches outside the "
                                f"{wh[0]}x{wh[1]} image (clipped when training)")


def check_dataset(fmt: str, root: str, split: str | None = None, decode: bool = False,
                  **reader_kw: Any) -> CheckResult:
    """Read ``root`` with reader ``fmt`` (uncleaned, skipping bad lines) and check everything."""
    res = CheckResult()
    report = ReadReport()
    seqs = READERS[fmt](root, split or DEFAULT_SPLIT[fmt], on_error="skip", report=report, clean=False,
                        **reader_kw)
    res.annotation_problems = len(report.problems)
    res.problems += report.problems
    dropped = ReadReport()
    for s in seqs:
        check_sequence(s, res, decode=decode)
        clean(copy.deepcopy(s), dropped, trim=True)
    res.dropped_after_cleaning = len(dropped.dropped)
    return res


def print_result(res: CheckResult, out: TextIO | None = None) -> None:
    """Human-readable report: every problem, then the counts."""
    out = out or sys.stdout  # looked up at call time (tests and callers may redirect stdout)
    for p in res.problems:
        print(p, file=out)
    print(f"sequences {res.sequences}  frames {res.frames}  valid frames {res.valid_frames}", file=out)
    print(f"annotation problems {res.annotation_problems}  missing frames {res.missing_frames}  "
          f"corrupt frames {res.corrupt_frames}  size mismatches {res.size_mismatch}  "
          f"out-of-image boxes {res.out_of_image_boxes}  dropped by cleaning (no valid frame) "
          f"{res.dropped_after_cleaning}", file=out)
    print("OK" if res.ok else f"{len(res.problems)} problems", file=out)
