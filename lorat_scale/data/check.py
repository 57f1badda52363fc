"""``lorat-scale check-data``: validate a dataset root and print counts and every problem.

Checks: malformed annotation lines (file:line) and files (encoding, JSON, keys), NaN/inf boxes on
visible frames, box and frame counts, missing frame files, frames whose header cannot be read,
boxes outside the image, and, with ``decode=True``, every frame decoded exactly as training
decodes it (strict: a corrupt or truncated JPEG is found) with its size compared to the size its
sequence's boxes are measured on. Bad data is reported, one line naming its file, never raised.
"""
from __future__ import annotations

import copy
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .readers import DEFAULT_SPLIT, DatasetError, ReadReport, get_reader
from .readers._common import clean
from .sequence import BadImageError, Sequence

_FRAME_KINDS = {"missing_frame": "missing_frames", "bad_frame": "corrupt_frames", "no_frames": "missing_frames"}


@dataclass
class CheckResult:
    """Counts and problems of one dataset check."""

    sequences: int = 0
    frames: int = 0
    valid_frames: int = 0
    missing_frames: int = 0  # frame files (or whole frame folders) that are not there
    corrupt_frames: int = 0  # frames that are not a complete, valid image (header, or the full decode)
    size_mismatch: int = 0  # decoded frames of another size than their sequence's
    out_of_image_boxes: int = 0
    annotation_problems: int = 0  # malformed annotation files and lines, box/frame count mismatches
    dropped_after_cleaning: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _decode_problem(seq: Sequence, i: int) -> BadImageError | None:
    """None if frame ``i`` decodes as training decodes it (strict, size checked), else the error."""
    try:
        seq.load_frame(i)
        return None
    except BadImageError as e:
        return e


def check_sequence(seq: Sequence, res: CheckResult, decode: bool = False, reported: set[str] = frozenset(),
                   pool: ThreadPoolExecutor | None = None) -> None:
    """Check one uncleaned sequence's frames and boxes, adding to ``res``.

    ``reported``: frame paths the reader already reported (not reported twice); ``pool`` decodes
    frames in parallel (simplejpeg and Pillow release the GIL while decoding).
    """
    res.sequences += 1
    res.frames += len(seq)
    res.valid_frames += int(seq.valid.sum())
    exists = np.array([os.path.isfile(f) for f in seq.frames], dtype=bool)
    for i in np.flatnonzero(~exists):
        if seq.frames[i] in reported:
            continue
        res.missing_frames += 1
        res.problems.append(f"{seq.frames[i]}: missing frame {i + 1} of {seq.key} ({len(seq)} boxes in "
                            f"{seq.annotation or 'its annotation'})")
    if decode:
        todo = [int(i) for i in np.flatnonzero(exists) if seq.frames[i] not in reported]
        def problem(i: int) -> BadImageError | None:
            return _decode_problem(seq, i)

        for e in (pool.map(problem, todo) if pool else map(problem, todo)):
            if e is None:
                continue
            if e.kind == "size":
                res.size_mismatch += 1
            elif e.kind == "missing":  # there a moment ago, or unreadable (permissions)
                res.missing_frames += 1
            else:
                res.corrupt_frames += 1
            res.problems.append(str(e))
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


def check_dataset(fmt: str, root: str, split: str | None = None, decode: bool = False, workers: int | None = None,
                  progress: bool = False, **reader_kw: Any) -> CheckResult:
    """Read ``root`` with reader ``fmt`` (uncleaned, skipping bad data) and check everything.

    Bad data is reported in the result, never raised; a ValueError/OSError only for a wrong split
    name or an unreadable root.
    """
    from tqdm import tqdm

    reader = get_reader(fmt)
    res = CheckResult()
    report = ReadReport()
    try:
        seqs = reader(root, split or DEFAULT_SPLIT[fmt], on_error="skip", report=report, clean=False, **reader_kw)
    except (DatasetError, FileNotFoundError, NotADirectoryError) as e:
        # Nothing readable (a JSON that does not parse, no split list, no root): the one problem.
        res.annotation_problems += 1
        res.problems.append(str(e))
        return res
    for p in report.records:
        kind = _FRAME_KINDS.get(p.kind)
        if kind is None:
            res.annotation_problems += 1
        else:
            setattr(res, kind, getattr(res, kind) + 1)
    res.problems += report.problems
    reported = {p.path for p in report.records if p.kind in _FRAME_KINDS}
    dropped = ReadReport()
    workers = workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers) if decode and workers > 1 else None
    bar = tqdm(total=sum(len(s) for s in seqs), unit="frame", disable=not progress,
               desc=f"check {fmt} {'(decoding)' if decode else ''}".strip())
    try:
        for s in seqs:
            check_sequence(s, res, decode=decode, reported=reported, pool=pool)
            clean(copy.deepcopy(s), dropped, trim=True)
            bar.update(len(s))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
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
