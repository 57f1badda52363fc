"""Result files: pytracking per-sequence txt, GOT-10k and TrackingNet submission zips.

Layout (pytracking): ``<root>/<tracker>/<run>/<seq>.txt`` with one ``x,y,w,h`` line per frame and
optional ``<seq>_time.txt`` (seconds per frame). Boxes in memory are xyxy continuous (see
``lorat_scale.boxes``); ``coord_offset`` shifts them on the way to/from the file for benchmarks
whose toolkit uses other coordinates (e.g. +1 for a 1-based toolkit when the reader made boxes
0-based). Files are written to a temporary name and renamed, so a finished ``<seq>.txt`` is always
complete: the runner uses its existence to resume.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..boxes import xywh_to_xyxy, xyxy_to_xywh

_SEP = re.compile(r"[,\s]+")


class ResultFileError(ValueError):
    """A result or annotation file is malformed; the message names the file and line."""


def read_boxes_txt(path: str | Path, ncols: int = 4, allow_nan: bool = True) -> np.ndarray:
    """Parse a txt of ``ncols`` numbers per line (``,``/tab/space separated) -> (N, ncols) float64."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ResultFileError(f"{path}: cannot read ({e})") from e
    # Fast path: numpy's C parser, with "," or whitespace as the delimiter. Anything it rejects
    # (mixed separators, wrong column count, garbage) goes to the line-by-line parser below,
    # which names the file and line of the problem.
    if text.strip():
        try:
            arr = np.loadtxt(io.StringIO(text), delimiter="," if "," in text else None,
                             dtype=np.float64, ndmin=2)
        except ValueError:
            arr = None
        if arr is not None and arr.shape[1] == ncols and (allow_nan or not np.isnan(arr).any()):
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
            vals = [float(p) for p in parts]
        except ValueError:
            raise ResultFileError(f"{path}:{lineno}: not a number in {s!r}") from None
        if not allow_nan and any(v != v for v in vals):
            raise ResultFileError(f"{path}:{lineno}: NaN in {s!r}")
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, ncols)


def _atomic_write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


def format_boxes(boxes_xywh: np.ndarray, fmt: str = "%.4f") -> str:
    """(N, 4) x,y,w,h -> comma-separated lines."""
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4), fmt=fmt, delimiter=",")
    return buf.getvalue()


def result_file(root: str | Path, tracker: str, run: str | int, seq: str) -> Path:
    """``<root>/<tracker>/<run>/<seq>.txt`` (an int run becomes ``run_001``...)."""
    return Path(root) / tracker / run_name(run) / f"{seq}.txt"


def run_name(run: str | int) -> str:
    """Folder name of a run: ints are 0-based repeat indices -> ``run_001``."""
    return f"run_{run + 1:03d}" if isinstance(run, int) else run


def write_sequence_result(path: str | Path, boxes_xyxy: np.ndarray, times: np.ndarray | None = None,
                          coord_offset: float = 0.0) -> None:
    """Write ``<seq>.txt`` (x,y,w,h) and, if given, ``<seq>_time.txt`` (time file first)."""
    path = Path(path)
    b = xyxy_to_xywh(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4))
    b[:, :2] += coord_offset
    if times is not None:
        buf = io.StringIO()
        np.savetxt(buf, np.asarray(times, dtype=np.float64).reshape(-1), fmt="%.6f")
        _atomic_write(path.with_name(path.stem + "_time.txt"), buf.getvalue())
    _atomic_write(path, format_boxes(b))  # last: its presence marks the sequence as done


def read_sequence_result(path: str | Path, num_frames: int | None = None,
                         coord_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``<seq>.txt`` -> (xyxy boxes, per-frame times or None); checks the frame count."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"{path}: result file not found")
    xywh = read_boxes_txt(path)
    if num_frames is not None and len(xywh) != num_frames:
        raise ResultFileError(f"{path}: {len(xywh)} box lines but the sequence has {num_frames} frames"
                              f" (line {min(len(xywh), num_frames) + 1} is where they part)")
    xywh[:, :2] -= coord_offset
    times = None
    tpath = path.with_name(path.stem + "_time.txt")
    if tpath.is_file():
        times = read_boxes_txt(tpath, ncols=1).reshape(-1)
        if len(times) != len(xywh):
            raise ResultFileError(f"{tpath}: {len(times)} times but {len(xywh)} boxes in {path.name}")
    return xywh_to_xyxy(xywh), times


def list_runs(root: str | Path, tracker: str) -> list[str]:
    """Run folders of a tracker (sub-folders holding result txt files), sorted."""
    d = Path(root) / tracker
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and next(p.glob("*.txt"), None) is not None)


def list_trackers(root: str | Path) -> list[str]:
    """Tracker folders under a results root (those with at least one run folder), sorted."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and list_runs(root, p.name)) if root.is_dir() else []


def _rasterized_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Integer x,y,w,h of the pixels each box touches (LoRAT's rasterization, ``boxes.rasterize_xyxy``)."""
    from ..boxes import rasterize_xyxy  # the one rasterization rule of the project (imports torch)

    r = np.array([rasterize_xyxy(b) for b in np.asarray(boxes_xyxy).reshape(-1, 4)], dtype=np.float64)
    return xyxy_to_xywh(r.reshape(-1, 4))


def write_got10k_zip(zip_path: str | Path, runs: list[dict[str, tuple[np.ndarray, np.ndarray | None]]],
                     rasterize: bool = True) -> Path:
    """GOT-10k test submission: ``<seq>/<seq>_00k.txt`` per run (integer x,y,w,h) + ``<seq>_time.txt``.

    ``runs[k][seq] = (boxes_xyxy, times)``; the time file is that of the first run. Rasterized boxes
    are integer pixel boxes, which is what the GOT-10k evaluation server was given by LoRAT.
    """
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, run in enumerate(runs):
            for seq, (boxes, times) in sorted(run.items()):
                xywh = _rasterized_xywh(boxes) if rasterize else xyxy_to_xywh(boxes)
                zf.writestr(f"{seq}/{seq}_{k + 1:03d}.txt", format_boxes(xywh, "%d" if rasterize else "%.4f"))
                if k == 0:
                    t = np.zeros(len(xywh)) if times is None else np.asarray(times, dtype=np.float64)
                    buf = io.StringIO()
                    np.savetxt(buf, t.reshape(-1), fmt="%.8f")
                    zf.writestr(f"{seq}/{seq}_time.txt", buf.getvalue())
    return zip_path


def write_trackingnet_zip(zip_path: str | Path, run: dict[str, np.ndarray], rasterize: bool = False) -> Path:
    """TrackingNet test submission: ``<seq>.txt`` (x,y,w,h, 2 decimals) at the zip root."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for seq, boxes in sorted(run.items()):
            xywh = _rasterized_xywh(boxes) if rasterize else xyxy_to_xywh(boxes)
            zf.writestr(f"{seq}.txt", format_boxes(xywh, "%d" if rasterize else "%.2f"))
    return zip_path
