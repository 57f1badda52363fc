"""Parsing, checks and cleaning shared by all readers (lorat_spec.md section 4.1).

Number lines are split with ``[,\\s]+`` because the benchmarks mix commas, spaces and tabs.

Problems are reported in one structured way, which ``check-data``, ``make_shards`` and training act
on. Every reader takes ``on_error``:

* ``"raise"`` (the default): the first problem raises a ``DatasetError`` (``AnnotationError`` for
  annotation files, ``FrameError`` for frame files) whose ``.problem`` is the ``Problem`` below;
* ``"skip"``: each problem is appended to ``report.records`` (a ``ReadReport``) and the bad line or
  frame is left out (marked invalid; a sequence is dropped only when nothing of it can be trusted).

A ``Problem`` has ``kind`` (one of ``PROBLEM_KINDS``), ``path`` (the file at fault: annotation file,
frame or folder), ``line`` (1-based, 0 = the whole file) and ``message``: one line
``<path>[:<line>]: what is wrong, what was expected``. Readers never let a library exception out
for bad data (``UnicodeDecodeError``, ``JSONDecodeError``, ``KeyError``, ``PIL.UnidentifiedImageError``).
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
_NUMBERS = re.compile(r"\d+")

# kind -> what it means. The frame kinds raise FrameError, the others AnnotationError.
PROBLEM_KINDS = {
    "annotation": "an annotation file is malformed (line, value, key, encoding, JSON) or missing",
    "frame_count": "the number of boxes does not match the number of frames",
    "missing_frame": "a frame that an annotation line belongs to is not on disk",
    "bad_frame": "a frame file is not a readable image",
    "no_frames": "a sequence folder holds no image file",
}
FRAME_KINDS = ("missing_frame", "bad_frame", "no_frames")


@dataclass(frozen=True)
class Problem:
    """One problem found while reading a dataset; ``message`` is the one line to show."""

    kind: str  # a key of PROBLEM_KINDS
    path: str  # the file (or folder) at fault
    message: str  # "<path>[:<line>]: what is wrong, what was expected"
    line: int = 0  # 1-based line in ``path``; 0 = not about one line
    sequence: str = ""  # "<dataset>/<name>" when known

    def __str__(self) -> str:
        return self.message


class DatasetError(ValueError):
    """Bad data met by a reader; ``problem`` holds the structured ``Problem``, the message its one line."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


class AnnotationError(DatasetError):
    """An annotation file is malformed; the message names the file, the 1-based line or key and what was expected."""


class FrameError(DatasetError):
    """A frame file is missing or unreadable, or a sequence folder has none; the message names the path."""


@dataclass
class ReadReport:
    """Problems met while reading a dataset (filled when on_error="skip"), and cleaning counts."""

    records: list[Problem] = field(default_factory=list)  # every problem, in the order met
    dropped: list[str] = field(default_factory=list)  # sequences with no valid frame after cleaning
    clipped_boxes: int = 0  # valid boxes that reached outside the image and were clipped
    emptied_boxes: int = 0  # boxes that became empty (after clipping) and were marked invalid
    trimmed_frames: int = 0  # invalid head/tail frames removed

    @property
    def problems(self) -> list[str]:
        """The one-line message of every problem."""
        return [p.message for p in self.records]

    def add(self, msg: str, on_error: OnError, kind: str = "annotation", path: str | os.PathLike = "",
            line: int = 0, sequence: str = "") -> None:
        """Raise the problem as a ``DatasetError`` or record it, as the caller asked."""
        p = Problem(kind, str(path), msg, line, sequence)
        if on_error == "raise":
            raise (FrameError if kind in FRAME_KINDS else AnnotationError)(p)
        self.records.append(p)


def read_text(path: Path, on_error: OnError, report: ReadReport, what: str) -> str:
    """A text file's content; a missing file or bytes that are not UTF-8 are problems naming the file and line.

    A UTF-8 byte-order mark is accepted. With on_error="skip", undecodable bytes become U+FFFD, so
    the lines holding them fail to parse and are left out by the caller; a missing file reads as "".
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        report.add(f"{path}: cannot read ({e.strerror or e}), expected {what}", on_error, path=path)
        return ""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        report.add(f"{path}:{line}: byte 0x{data[e.start]:02x} is not UTF-8 text, expected {what}", on_error,
                   path=path, line=line)
        return data.decode("utf-8-sig", errors="replace")


def parse_rows(path: Path, ncols: int, on_error: OnError, report: ReadReport,
               what: str = "x,y,w,h", allow_empty_rows: bool = False, bad: list[int] | None = None) -> np.ndarray:
    """Read a text file of ``ncols`` numbers per line into (N, ncols) float64; bad lines become NaN rows.

    The 0-based indices of lines already reported as malformed are appended to ``bad``.

    Blank lines at the end are ignored; a blank line in the middle is an unannotated frame if
    ``allow_empty_rows`` (some tools write them), otherwise an error.
    """
    lines = read_text(path, on_error, report, f"lines of {ncols} numbers ({what})").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.full((len(lines), ncols), np.nan)
    for i, line in enumerate(lines):
        s = line.strip()
        if not s:
            if not allow_empty_rows:
                report.add(f"{path}:{i + 1}: empty line, expected {ncols} numbers ({what})", on_error,
                           path=path, line=i + 1)
                if bad is not None:
                    bad.append(i)
            continue
        parts = _SPLIT.split(s)
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            report.add(f"{path}:{i + 1}: cannot read {s!r} as numbers, expected {ncols} numbers ({what})",
                       on_error, path=path, line=i + 1)
            if bad is not None:
                bad.append(i)
            continue
        if len(vals) != ncols:
            report.add(f"{path}:{i + 1}: found {len(vals)} values in {s!r}, expected {ncols} ({what})", on_error,
                       path=path, line=i + 1)
            if bad is not None:
                bad.append(i)
            continue
        out[i] = vals
    return out


def parse_flags(path: Path, on_error: OnError, report: ReadReport) -> np.ndarray:
    """Read 0/1 flags separated by commas, whitespace or newlines into a bool array.

    A token that is not 0 or 1 is reported and read as 1: every flag file marks frames that must
    not be used (occluded, out of view, absent), so an unreadable flag leaves its frame out.
    """
    text = read_text(path, on_error, report, "0/1 flags separated by commas, spaces or newlines").strip()
    if not text:
        return np.zeros(0, dtype=bool)
    toks = _SPLIT.split(text)
    out = np.zeros(len(toks), dtype=bool)
    for j, t in enumerate(toks):
        if t not in ("0", "1"):
            line = text.count("\n", 0, _nth_token_offset(text, j)) + 1
            report.add(f"{path}:{line}: flag #{j + 1} is {t!r}, expected 0 or 1", on_error, path=path, line=line)
            out[j] = True
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


def set_frame_size(seq: Sequence, on_error: OnError, report: ReadReport, present: np.ndarray | None = None,
                   tries: int = 8) -> bool:
    """Set ``seq.frame_size`` from the header of its first readable frame (one header per sequence).

    A frame whose header cannot be read (not an image, empty, unreadable) is a "bad_frame" problem
    naming its path, and is marked invalid; the next frame is tried. Frames where ``present`` is
    False (already reported missing) are passed over. Returns False, after reporting, when none of
    the first ``tries`` frames is readable: the caller drops the sequence.
    """
    from PIL import Image, UnidentifiedImageError

    tried = 0
    for i in range(len(seq)):
        if present is not None and not present[i]:
            continue
        try:
            seq.frame_size = image_size(seq.frames[i])
            return True
        except FileNotFoundError:
            report.add(f"{seq.frames[i]}: missing frame {i + 1} of {seq.key}", on_error, kind="missing_frame",
                       path=seq.frames[i], sequence=seq.key)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL on a bad header
            why = "no known image format" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
            report.add(f"{seq.frames[i]}: frame {i + 1} of {seq.key} is not a readable image ({why}), expected a "
                       "JPEG/PNG/BMP/WebP file", on_error, kind="bad_frame", path=seq.frames[i], sequence=seq.key)
        seq.valid[i] = False
        tried += 1
        if tried >= tries:
            break
    folder = str(Path(seq.frames[0]).parent) if seq.frames else seq.annotation
    report.add(f"{folder}: none of the first {tried} frames of {seq.key} is a readable image, expected image files; "
               "the sequence is not used", on_error, kind="bad_frame", path=folder, sequence=seq.key)
    return False


def frame_number(path: str) -> int | None:
    """The last digit run of a file name's stem (``00000042.jpg`` -> 42), or None."""
    m = _NUMBERS.findall(os.path.splitext(os.path.basename(path))[0])
    return int(m[-1]) if m else None


def _renumber(path: str, number: int) -> str:
    """``path`` with the last digit run of its name set to ``number``, zero-padded like it (a missing frame's name)."""
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    m = list(_NUMBERS.finditer(stem))[-1]
    run = m.group()
    digits = str(number).zfill(len(run)) if len(run) > 1 and run[0] == "0" else str(number)
    return os.path.join(folder, stem[:m.start()] + digits + stem[m.end():] + ext)


def numbered_frames(folder: Path, n_boxes: int, ann_path: Path, key: str, on_error: OnError, report: ReadReport,
                    base: int | None = None) -> tuple[list[str], np.ndarray] | None:
    """The image files of ``folder`` matched to annotation lines by the number in their names.

    Returns (frames, present), or None (reported) when the sequence must be dropped. Line k+1 of
    the annotation belongs to the file numbered ``base + k`` (``base``: the format's first frame
    number; None = the lowest number found, and numbers may step by a constant: every 5th frame
    of a video). A number missing in between is a missing frame: it
    keeps its place (a path named like its neighbours, ``present`` False) and is reported, so that
    every later box stays on its own frame. More boxes than frames: with a known ``base`` the
    missing frames are at the end (reported each); otherwise (no base, or names without numbers,
    taken in name order) nobody can tell which frame is missing, so the sequence is dropped with
    a "frame_count" problem. Fewer boxes than frames is allowed (the rest is unannotated).
    """
    files = list_images(folder, sort=False)  # placed by number below (name order only without numbers)
    if not files:
        report.add(f"{folder}: no image files, expected the frames of {key} ({', '.join(IMAGE_EXTS)})", on_error,
                   kind="no_frames", path=folder, sequence=key)
        return None
    nums = [frame_number(f) for f in files]
    if None in nums or len(set(nums)) != len(nums):
        # No numbering to check against: name order.
        files.sort(key=lambda f: natural_key(os.path.basename(f)))
        if n_boxes > len(files):
            report.add(f"{ann_path}:{len(files) + 1}: {n_boxes} boxes for {len(files)} frames in {folder}, expected at "
                       "most one box per frame (the frame names carry no number, so the missing frame cannot be "
                       "told); the sequence is not used", on_error, kind="frame_count", path=ann_path,
                       line=len(files) + 1, sequence=key)
            return None
        return files, np.ones(len(files), dtype=bool)
    first = min(nums) if base is None else min(base, min(nums))
    # Custom frames may be every k-th frame of a video (0005.jpg, 0010.jpg, ...): the step is the
    # gcd of the gaps. Formats with a known base number every frame.
    step = int(np.gcd.reduce(np.diff(sorted(nums)))) if base is None and len(nums) > 1 else 1
    last = max(nums)
    span = (last - first) // step + 1
    n = max(span, n_boxes if base is not None else 0)
    numbering = f"files numbered {first}..{last}" + (f" in steps of {step}" if step > 1 else "")
    if span - len(files) > len(files):  # more holes than files: not a frame numbering (a stray file?)
        report.add(f"{folder}: {numbering} but only {len(files)} present, expected one file per frame number; the "
                   "sequence is not used", on_error, kind="frame_count", path=folder, sequence=key)
        return None
    if base is None and n_boxes > n:
        report.add(f"{ann_path}:{n + 1}: {n_boxes} boxes for {n} frames in {folder} ({numbering}), expected at most "
                   "one box per frame (a first or last frame missing, or extra lines?); the sequence is not used",
                   on_error, kind="frame_count", path=ann_path, line=n + 1, sequence=key)
        return None
    frames: list[str | None] = [None] * n
    for f, k in zip(files, nums):
        frames[(k - first) // step] = f
    present = np.array([f is not None for f in frames], dtype=bool)
    if not present.all():
        idx = np.flatnonzero(present)
        for i in np.flatnonzero(~present):
            near = frames[idx[np.searchsorted(idx, i) - 1] if i > idx[0] else idx[0]]
            frames[i] = _renumber(near, first + int(i) * step)
            line = f"line {i + 1} of {ann_path} belongs to it" if i < n_boxes else "no annotation line"
            report.add(f"{frames[i]}: missing frame {i + 1} of {key} ({numbering}; {line})", on_error,
                       kind="missing_frame", path=frames[i], sequence=key)
    return frames, present


def check_finite(seq: Sequence, ann_path: Path, on_error: OnError, report: ReadReport) -> None:
    """NaN/inf boxes on frames marked valid: raise, or mark the frames invalid and count them."""
    bad = seq.valid & ~np.isfinite(seq.boxes).all(axis=1)
    for i in np.flatnonzero(bad):
        report.add(f"{ann_path}:{i + 1}: box {seq.boxes[i].tolist()} of a visible frame is not finite, "
                   "expected finite x,y,w,h", on_error, path=ann_path, line=int(i) + 1, sequence=seq.key)
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


def list_images(folder: Path, sort: bool = True) -> list[str]:
    """Image files in ``folder`` (absolute paths), in natural name order (``sort``) or as listed."""
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    if sort:
        names.sort(key=natural_key)
    return [str(Path(folder) / n) for n in names]


def fit_length(arr: np.ndarray, n: int, fill: float | bool) -> np.ndarray:
    """Pad (with ``fill``) or cut the first axis of ``arr`` to ``n`` rows."""
    if len(arr) >= n:
        return arr[:n]
    pad = np.full((n - len(arr),) + arr.shape[1:], fill, dtype=arr.dtype)
    return np.concatenate([arr, pad])

