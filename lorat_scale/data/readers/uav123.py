"""UAV123 (and UAV20L) reader.

Layout (the official download): ``<root>/data_seq/UAV123/<video>/%06d.jpg`` and
``<root>/anno/<subset>/<name>.txt`` (``x,y,w,h`` per line, ``NaN,NaN,NaN,NaN`` where the target is
out of view: such frames are invalid). Boxes are taken as-is. Several UAV123 sequences are
segments of one long video: ``<video>_<k>`` uses frames ``start..end`` of ``data_seq/UAV123/<video>``;
the ranges below are the benchmark's own sequence configuration (they have gaps, so they cannot be
inferred from the annotation lengths). ``UAV20L`` annotations cover whole videos.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import OnError, ReadReport, clean, list_images, parse_rows, set_frame_size, xywh_rows_to_xyxy

# "<video>_<k>" -> (first, last) frame number in data_seq/UAV123/<video> (1-based, inclusive).
SEGMENTS: dict[str, tuple[int, int]] = {
    "bird1_1": (1, 253), "bird1_2": (775, 1477), "bird1_3": (1573, 2437),
    "car1_1": (1, 751), "car1_2": (751, 1627), "car1_3": (1627, 2629),
    "car16_1": (1, 415), "car16_2": (415, 1993),
    "car6_1": (1, 487), "car6_2": (487, 1807), "car6_3": (1807, 2953), "car6_4": (2953, 3925),
    "car6_5": (3925, 4861),
    "car8_1": (1, 1357), "car8_2": (1357, 2575),
    "group1_1": (1, 1333), "group1_2": (1333, 2515), "group1_3": (2515, 3925), "group1_4": (3925, 4873),
    "group2_1": (1, 907), "group2_2": (907, 1771), "group2_3": (1771, 2683),
    "group3_1": (1, 1567), "group3_2": (1567, 2827), "group3_3": (2827, 4369), "group3_4": (4369, 5527),
    "person12_1": (1, 601), "person12_2": (601, 1621),
    "person14_1": (1, 847), "person14_2": (847, 1813), "person14_3": (1813, 2923),
    "person17_1": (1, 1501), "person17_2": (1501, 2347),
    "person19_1": (1, 1243), "person19_2": (1243, 2791), "person19_3": (2791, 4357),
    "person2_1": (1, 1189), "person2_2": (1189, 2623),
    "person4_1": (1, 1501), "person4_2": (1501, 2743),
    "person5_1": (1, 877), "person5_2": (877, 2101),
    "person7_1": (1, 1249), "person7_2": (1249, 2065),
    "person8_1": (1, 1075), "person8_2": (1075, 1525),
    "truck4_1": (1, 577), "truck4_2": (577, 1261),
    "uav1_1": (1, 1555), "uav1_2": (1555, 2377), "uav1_3": (2473, 3469),
}
_NUM = re.compile(r"(\d+)")


def _frame_number(path: str) -> int:
    m = _NUM.findall(Path(path).stem)
    return int(m[-1]) if m else -1


def read_sequence(root: Path, gt_path: Path, on_error: OnError, report: ReadReport, dataset: str = "uav123",
                  do_clean: bool = False) -> Sequence | None:
    """One annotation file -> Sequence (segments take their frame range from ``SEGMENTS``)."""
    name = gt_path.stem
    data = root / "data_seq" / "UAV123"
    if (data / name).is_dir():
        frames = list_images(data / name)
    elif name in SEGMENTS:
        a, z = SEGMENTS[name]
        video = name.rsplit("_", 1)[0]
        frames = [f for f in list_images(data / video) if a <= _frame_number(f) <= z]
    else:
        report.add(f"{gt_path}: no folder {data / name} and {name!r} is not a known UAV123 segment", on_error,
                   path=gt_path, sequence=f"{dataset}/{name}")
        return None
    if not frames:
        report.add(f"{gt_path}: no frames found for {name} under {data}", on_error, kind="no_frames", path=gt_path,
                   sequence=f"{dataset}/{name}")
        return None
    rows = parse_rows(gt_path, 4, on_error, report, what="x,y,w,h or NaN,NaN,NaN,NaN")
    if len(rows) != len(frames):
        report.add(f"{gt_path}:{min(len(rows), len(frames)) + 1}: {len(rows)} box lines but {len(frames)} frames",
                   on_error, kind="frame_count", path=gt_path, line=min(len(rows), len(frames)) + 1,
                   sequence=f"{dataset}/{name}")
        n = min(len(rows), len(frames))
        frames, rows = frames[:n], rows[:n]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(rows).all(axis=1) & (rows[:, 2] > 0) & (rows[:, 3] > 0)
    seq = Sequence(name=name, dataset=dataset, frames=frames, boxes=xywh_rows_to_xyxy(rows), valid=valid,
                   annotation=str(gt_path))
    if not set_frame_size(seq, on_error, report):
        return None
    return clean(seq, report, trim=False) if do_clean else seq


def read(root: str | os.PathLike, split: str = "UAV123", dataset: str = "uav123", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = False) -> list[Sequence]:
    """Read ``anno/<split>/*.txt`` (split "UAV123" or "UAV20L") with their frames."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    anno = root / "anno" / split
    if not anno.is_dir():
        raise FileNotFoundError(f"UAV123: no annotation folder {anno} (expected <root>/anno/{split}/*.txt)")
    out = []
    for gt in sorted(anno.glob("*.txt")):
        s = read_sequence(root, gt, on_error, report, dataset, do_clean=clean)
        if s is not None:
            out.append(s)
    return out
