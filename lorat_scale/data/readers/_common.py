"""Parsing and cleaning shared by all readers (lorat_spec.md section 4.1).

Number lines are split with ``[,\\s]+`` because the benchmarks mix commas, spaces and tabs.
Errors name the file, the 1-based line and what was expected. Readers take
``on_error="raise"|"skip"``: with "skip" the bad frame becomes invalid and the problem is counted
in a ``ReadReport`` (the ``check-data`` command prints them all).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..sequence import Sequence

OnError = Literal["raise", "skip"]
_SPLIT = re.compile(r"[,\s]+")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file, the 1-based line and what was expected."""


@dataclass
class ReadReport:
    """Problems met while reading a dataset (filled when on_error="skip")."""

    problems: list[str] = field(default_factory=list)  # one human-readable line each
    dropped: list[str] = field(default_factory=list)  # sequences with no valid frame after cleaning
    clipped_boxes: int = 0  # valid boxes that reached outside the image and were clipped
    emptied_boxes: int = 0  # boxes that became empty (after clipping) and were marked invalid
    trimmed_frames: int = 0  # invalid head/tail frames removed

    def add(self, msg: str, on_error: OnError) -> None:
        """Raise ``AnnotationError(msg)`` or record it, as the caller asked."""
        if on_error == "raise":
            raise AnnotationError(msg)
        self.problems.append(msg)


def parse_rows(path: Path, ncols: int, on_error: OnError, report: ReadReport,
               what: str = "x,y,w,h", allow_empty_rows: bool = False, bad: list[int] | None = None) -> np.ndarray:
    """Read a text file of ``ncols`` numbers per line into (N, ncols) float64; bad lines become NaN rows.

    The 0-based indices of lines already reported as malformed are appended to ``bad``.

    Blank lines at the end are ignored; a blank line in the middle is an unannotated frame if
    ``allow_empty_rows`` (some tools write them), otherwise an error.
    """
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as e:
        report.add(f"{path}: not a text file ({e})", on_error)
        return np.zeros((0, ncols))
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.full((len(lines), ncols), np.nan)
    for i, line in enumerate(lines):
        s = line.strip()
        if not s:
            if not allow_empty_rows:
                report.add(f"{path}:{i + 1}: empty line, expected {ncols} numbers ({what})", on_error)
                if bad is not None:
                    bad.append(i)
            continue
        parts = _SPLIT.split(s)
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            report.add(f"{path}:{i + 1}: cannot read {s!r} as numbers, expected {ncols} numbers ({what})",
                       on_error)
            if bad is not None:
                bad.append(i)
            continue
        if len(vals) != ncols:
            report.add(f"{path}:{i + 1}: found {len(vals)} values in {s!r}, expected {ncols} ({what})", on_error)
            if bad is not None:
                bad.append(i)
            continue
        out[i] = vals
    return out


def parse_flags(path: Path, on_error: OnError, report: ReadReport) -> np.ndarray:
    """Read 0/1 flags separated by commas, whitespace or newlines into a bool array."""
    text = Path(path).read_text().strip()
    if not text:
        return np.zeros(0, dtype=bool)
    toks = _SPLIT.split(text)
    out = np.zeros(len(toks), dtype=bool)
    for j, t in enumerate(toks):
        if t not in ("0", "1"):
            line = text.count("\n", 0, _nth_token_offset(text, j)) + 1
            report.add(f"{path}:{line}: flag #{j + 1} is {t!r}, expected 0 or 1", on_error)
            continue
        out[j] = t == "1"
    return out


def _nth_token_offset(text: str, j: int) -> int:
    """Character offset of the j-th token (only computed on the error path)."""
    m = None
    for k, m in enumerate(re.finditer(r"[^,\s]+", text)):
        if k == j:
            break
    return m.start() if m else 0


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(W, H) from the image header; PIL reads the header only, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def xywh_rows_to_xyxy(rows: np.ndarray) -> np.ndarray:
    """(N, 4) x,y,w,h -> x1,y1,x2,y2 (continuous: x2 = x + w)."""
    out = rows.copy()
    out[:, 2:] = rows[:, :2] + rows[:, 2:]
    return out


def check_finite(seq: Sequence, ann_path: Path, on_error: OnError, report: ReadReport) -> None:
    """NaN/inf boxes on frames marked valid: raise, or mark the frames invalid and count them."""
    bad = seq.valid & ~np.isfinite(seq.boxes).all(axis=1)
    for i in np.flatnonzero(bad):
        report.add(f"{ann_path}:{i + 1}: box {seq.boxes[i].tolist()} of a visible frame is not finite, "
                   "expected finite x,y,w,h", on_error)
    seq.valid &= ~bad


def clean(seq: Sequence, report: ReadReport, trim: bool = True) -> Sequence | None:
    """Spec 4.1 cleaning: clip boxes to the image, empty ones invalid, trim invalid ends; None if nothing valid.

    Needs ``seq.frame_size`` or ``seq.frame_sizes``; without either, boxes are only checked for
    emptiness. Trimming removes invalid frames at the head and the tail only: frame distances
    between the remaining frames (the +-max_frame_gap rule) are unchanged.
    """
    b = seq.boxes
    if seq.frame_sizes is not None:
        wh = np.asarray(seq.frame_sizes, dtype=np.float64)
    elif seq.frame_size is not None:
        wh = np.broadcast_to(np.asarray(seq.frame_size, dtype=np.float64), (len(b), 2))
    else:
        wh = None
    if wh is not None and len(b):
        fin = np.isfinite(b).all(axis=1)
        clipped = b.copy()
        clipped[:, 0::2] = np.clip(b[:, 0::2], 0.0, wh[:, :1])
        clipped[:, 1::2] = np.clip(b[:, 1::2], 0.0, wh[:, 1:])
        changed = fin & seq.valid & (clipped != b).any(axis=1)
        report.clipped_boxes += int(changed.sum())
        seq.boxes = np.where(fin[:, None], clipped, b)
    b = seq.boxes
    with np.errstate(invalid="ignore"):
        empty = ~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))  # NaN compares False -> empty
    report.emptied_boxes += int((seq.valid & empty).sum())
    seq.valid = seq.valid & ~empty
    idx = np.flatnonzero(seq.valid)
    if len(idx) == 0:
        report.dropped.append(seq.key)
        return None
    if trim and (idx[0] > 0 or idx[-1] < len(seq) - 1):
        a, z = int(idx[0]), int(idx[-1]) + 1
        report.trimmed_frames += len(seq) - (z - a)
        seq.frames = seq.frames[a:z]
        seq.boxes = seq.boxes[a:z]
        seq.valid = seq.valid[a:z]
        if seq.frame_sizes is not None:
            seq.frame_sizes = seq.frame_sizes[a:z]
        for k, v in list(seq.extra.items()):
            seq.extra[k] = v[a:z]
    return seq


def natural_key(name: str) -> list:
    """Sort key comparing digit runs as numbers ("2.jpg" < "10.jpg")."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[str]:
    """Image files in ``folder`` (absolute paths), in natural name order."""
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)]
    except FileNotFoundError:
        return []
    names.sort(key=natural_key)
    return [str(Path(folder) / n) for n in names]


def fit_length(arr: np.ndarray, n: int, fill: float | bool) -> np.ndarray:
    """Pad (with ``fill``) or cut the first axis of ``arr`` to ``n`` rows."""
    if len(arr) >= n:
        return arr[:n]
    pad = np.full((n - len(arr),) + arr.shape[1:], fill, dtype=arr.dtype)
    return np.concatenate([arr, pad])

