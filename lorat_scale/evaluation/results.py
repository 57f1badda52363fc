"""Result files in pytracking's layout, the record of what produced them, submission zips.

Layout (pytracking's ``Tracker.results_dir`` and ``_save_tracker_output``, so its analysis scripts
read ours unchanged)::

    <results>/<tracker>/<param>_<run:03d>/<seq>.txt        x,y,w,h per frame, tab-separated
    <results>/<tracker>/<param>_<run:03d>/<seq>_time.txt   seconds per frame
    <results>/<tracker>/<param>_<run:03d>/lorat_run.json   what produced them (see ``RunRecord``)

``<param>`` is pytracking's parameter name (ours: the variant and a short hash of the model,
e.g. ``S-224-1f2e3d4c``); a folder named ``<param>`` without a run number (pytracking's
``run_id=None``) is read too. Boxes are in the benchmark's own coordinates (LaSOT 1-based, as
its toolkits). Files are written to a temporary name and renamed, so a ``<seq>.txt`` that exists
is complete: the runner uses that to resume.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..boxes import xyxy_to_xywh
from ..outputs import atomic_path, write_atomic

_SEP = re.compile(r"[,\s]+")
RECORD = "lorat_run.json"


class ResultFileError(ValueError):
    """A result or annotation file is malformed; the message names the file and line."""


def read_boxes_txt(path: str | Path, ncols: int = 4) -> np.ndarray:
    """Parse a txt of ``ncols`` numbers per line (``,``/tab/space separated) -> (N, ncols) float64.

    ``nan`` is a number here (several toolkits write it for a lost target); whether a NaN box is
    acceptable is the metric convention's decision, which then names this file and line.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultFileError(f"{path}: cannot read as text ({e})") from e
    # Fast path: numpy's C parser with "," or whitespace as the delimiter. Anything it rejects
    # (mixed separators, wrong column count, garbage) goes to the line-by-line parser below,
    # which names the file and line of the problem.
    if text.strip():
        try:
            arr = np.loadtxt(io.StringIO(text), delimiter="," if "," in text else None, dtype=np.float64, ndmin=2)
        except ValueError:
            arr = None
        if arr is not None and arr.shape[1] == ncols:
            return arr
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        parts = _SEP.split(s)
        if len(parts) != ncols:
            raise ResultFileError(f"{path}:{lineno}: expected {ncols} numbers, got {len(parts)}: {s!r}")
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise ResultFileError(f"{path}:{lineno}: not a number in {s!r}, expected {ncols} numbers") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, ncols)


def format_boxes(boxes_xywh: np.ndarray, fmt: str = "%.4f", delimiter: str = "\t") -> str:
    """(N, 4) x,y,w,h -> one line per box."""
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4), fmt=fmt, delimiter=delimiter)
    return buf.getvalue()


# ------------------------------------------------------------------------------ layout
def run_name(param: str, run: int | None) -> str:
    """pytracking's run folder: ``<param>_<run:03d>``, or ``<param>`` for run None."""
    return param if run is None else f"{param}_{run:03d}"


def result_file(root: str | Path, tracker: str, param: str, run: int | None, seq: str) -> Path:
    """``<root>/<tracker>/<param>_<run:03d>/<seq>.txt``."""
    return Path(root) / tracker / run_name(param, run) / f"{seq}.txt"


def list_runs(root: str | Path, tracker: str, param: str) -> list[str]:
    """Run folders of ``tracker``/``param`` holding result files (``<param>`` or ``<param>_NNN``), sorted."""
    d = Path(root) / tracker
    if not d.is_dir():
        return []
    pat = re.compile(re.escape(param) + r"(_\d{3})?")
    return sorted(p.name for p in d.iterdir()
                  if p.is_dir() and pat.fullmatch(p.name) and next(p.glob("*.txt"), None) is not None)


def list_results(root: str | Path) -> list[tuple[str, str]]:
    """(tracker, param) of every run folder under a results root, sorted."""
    root = Path(root)
    out = set()
    if root.is_dir():
        for t in root.iterdir():
            if t.is_dir():
                for r in t.iterdir():
                    if r.is_dir() and next(r.glob("*.txt"), None) is not None:
                        out.add((t.name, re.sub(r"_\d{3}$", "", r.name)))
    return sorted(out)


def write_sequence_result(path: str | Path, boxes_xyxy: np.ndarray, times: np.ndarray | None = None,
                          coord_offset: float = 0.0) -> None:
    """Write ``<seq>.txt`` (x,y,w,h + ``coord_offset``) and, if given, ``<seq>_time.txt`` (that first)."""
    path = Path(path)
    b = xyxy_to_xywh(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4))
    b[:, :2] += coord_offset
    if times is not None:
        buf = io.StringIO()
        np.savetxt(buf, np.asarray(times, dtype=np.float64).reshape(-1), fmt="%.6f")
        write_atomic(path.with_name(path.stem + "_time.txt"), buf.getvalue())
    write_atomic(path, format_boxes(b))  # last: its presence marks the sequence as done


def read_sequence_result(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``<seq>.txt`` -> (x,y,w,h boxes as written, per-frame seconds or None)."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"{path}: result file not found")
    xywh = read_boxes_txt(path)
    times = None
    tpath = path.with_name(path.stem + "_time.txt")
    if tpath.is_file():
        times = read_boxes_txt(tpath, ncols=1).reshape(-1)
        if len(times) != len(xywh):
            raise ResultFileError(f"{tpath}: {len(times)} times but {len(xywh)} boxes in {path.name}")
    return xywh, times


# ------------------------------------------------------------------------------ what produced them
def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (streamed: backbones are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class RunRecord:
    """What produced a run folder's results; ``key`` hashes everything but the paths."""

    identity: dict[str, Any]  # content hashes, variant, resolved model and tracking settings
    paths: dict[str, str] = field(default_factory=dict)  # for the reader of error messages only

    @property
    def key(self) -> str:
        """sha256 of the canonical JSON of ``identity``."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        """One line for messages: key prefix and where it came from."""
        where = ", ".join(f"{k} {v}" for k, v in self.paths.items())
        return f"key {self.key[:12]} ({where or 'no paths recorded'})"

    def to_json(self) -> str:
        return json.dumps({"key": self.key, **asdict(self)}, indent=2, sort_keys=True) + "\n"


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The ``lorat_run.json`` of a run folder, or None if it has none."""
    p = Path(run_dir) / RECORD
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
        rec = RunRecord(d["identity"], d.get("paths", {}))
    except (ValueError, KeyError, TypeError) as e:
        raise ResultFileError(f"{p}: not a run record ({e}); expected JSON with 'identity'") from None
    if d.get("key") != rec.key:
        raise ResultFileError(f"{p}: its key {d.get('key')!r} does not match its identity (edited by hand?)")
    return rec


def claim_run_folder(run_dir: str | Path, record: RunRecord) -> None:
    """Record ``record`` in a run folder, or refuse if the folder holds results of something else."""
    run_dir = Path(run_dir)
    old = read_record(run_dir)
    if old is not None:
        if old.key != record.key:
            raise ResultFileError(
                f"{run_dir} holds results of another model or setting ({old.describe()}); this run is "
                f"{record.describe()}. Results of different models are never mixed: pass another --param "
                "or --tracker-name, or delete that folder")
        return
    if run_dir.is_dir() and next(run_dir.glob("*.txt"), None) is not None:
        raise ResultFileError(f"{run_dir} holds result files but no {RECORD}, so what produced them is unknown; "
                              "pass another --param or --tracker-name, or delete that folder")
    write_atomic(run_dir / RECORD, record.to_json())


# ------------------------------------------------------------------------------ submission zips
def _rasterized_xywh(boxes_xywh: np.ndarray) -> np.ndarray:
    """Integer x,y,w,h of the pixels each box touches (LoRAT's rasterization, ``boxes.rasterize_xyxy``)."""
    from ..boxes import rasterize_xyxy, xywh_to_xyxy

    r = np.array([rasterize_xyxy(b) for b in xywh_to_xyxy(np.asarray(boxes_xywh).reshape(-1, 4))], dtype=np.float64)
    return xyxy_to_xywh(r.reshape(-1, 4))


def write_got10k_zip(zip_path: str | Path, runs: list[dict[str, tuple[np.ndarray, np.ndarray | None]]],
                     rasterize: bool = True) -> Path:
    """GOT-10k test submission: ``<seq>/<seq>_00k.txt`` per run (x,y,w,h) + ``<seq>/<seq>_time.txt``.

    ``runs[k][seq] = (boxes_xywh, times)``; the time file is that of the first run.
    """
    zip_path = Path(zip_path)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, run in enumerate(runs):
            for seq, (boxes, times) in sorted(run.items()):
                xywh = _rasterized_xywh(boxes) if rasterize else np.asarray(boxes)
                zf.writestr(f"{seq}/{seq}_{k + 1:03d}.txt", format_boxes(xywh, "%d" if rasterize else "%.4f", ","))
                if k == 0:
                    t = np.zeros(len(xywh)) if times is None else np.asarray(times, dtype=np.float64)
                    buf = io.StringIO()
                    np.savetxt(buf, t.reshape(-1), fmt="%.8f")
                    zf.writestr(f"{seq}/{seq}_time.txt", buf.getvalue())
    return zip_path


def write_trackingnet_zip(zip_path: str | Path, run: dict[str, np.ndarray], rasterize: bool = True) -> Path:
    """TrackingNet test submission: ``<seq>.txt`` (x,y,w,h) at the zip root."""
    zip_path = Path(zip_path)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for seq, boxes in sorted(run.items()):
            xywh = _rasterized_xywh(boxes) if rasterize else np.asarray(boxes)
            zf.writestr(f"{seq}.txt", format_boxes(xywh, "%d" if rasterize else "%.2f", ","))
    return zip_path
