"""OTB-2015 (OTB-100) reader.

Layout: ``<root>/<Seq>/img/%04d.jpg`` (``Board``: %05d, ``KiteSurf``: png; any name/extension is
accepted, frames are matched by the number in the file name) and ``<Seq>/groundtruth_rect.txt``
with ``x y w h`` per line, separated by commas, tabs or spaces. Boxes are taken **as-is** (no -1),
as the OTB toolkit and pytracking do, so they evaluate in the benchmark's own coordinates.

Documented special cases of the benchmark (OTB site / toolkit sequence configuration):

* frame ranges: the GT file covers only frames ``start..end`` of ``img/``: David 300-770,
  BlurCar1 247-988, BlurCar3 3-359, BlurCar4 18-397, Football1 1-74, Freeman3 1-460,
  Freeman4 1-283, Diving 1-215;
* Tiger1: the first 5 frames are omitted ("initOmit"): tracking starts at frame 6 with GT line 6;
* two targets in one video: Jogging and Skating2 have ``groundtruth_rect.1.txt`` and
  ``groundtruth_rect.2.txt`` -> sequences ``Jogging-1``/``Jogging-2``, ``Skating2-1``/``Skating2-2``
  sharing the frames; Human4's ``groundtruth_rect.1.txt`` is empty, so it is one sequence
  (``Human4``) annotated by ``groundtruth_rect.2.txt``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import OnError, ReadReport, clean, list_images, parse_rows, set_frame_size, xywh_rows_to_xyxy

# name -> (first frame number, last frame number) of the annotated range (1-based, inclusive).
FRAME_RANGES: dict[str, tuple[int, int]] = {
    "David": (300, 770), "BlurCar1": (247, 988), "BlurCar3": (3, 359), "BlurCar4": (18, 397),
    "Football1": (1, 74), "Freeman3": (1, 460), "Freeman4": (1, 283), "Diving": (1, 215),
}
INIT_OMIT: dict[str, int] = {"Tiger1": 5}  # leading frames (and GT lines) the benchmark skips
_NUM = re.compile(r"(\d+)")


def _frame_number(path: str) -> int:
    m = _NUM.findall(Path(path).stem)
    return int(m[-1]) if m else -1


def annotation_files(sdir: Path) -> list[tuple[str, Path]]:
    """(sequence name, GT file) for each non-empty ``groundtruth_rect*.txt`` of a video folder."""
    # Undecodable bytes are reported when the file is parsed; here only emptiness matters.
    files = sorted(p for p in sdir.glob("groundtruth_rect*.txt") if p.read_bytes().strip())
    if len(files) <= 1:
        return [(sdir.name, f) for f in files]
    out = []
    for f in files:  # groundtruth_rect.<k>.txt -> "<Seq>-<k>"
        k = f.name[len("groundtruth_rect"):-len(".txt")].strip(".")
        out.append((f"{sdir.name}-{k}" if k else sdir.name, f))
    return out


def read_sequence(sdir: Path, name: str, gt_path: Path, on_error: OnError, report: ReadReport,
                  dataset: str = "otb", do_clean: bool = False, trim: bool = False) -> Sequence | None:
    """One OTB target -> Sequence (boxes as-is, valid where w, h > 0)."""
    frames = list_images(sdir / "img")
    if not frames:
        report.add(f"{sdir / 'img'}: no image files (expected OTB frames img/%04d.jpg)", on_error, kind="no_frames",
                   path=sdir / "img", sequence=f"{dataset}/{name}")
        return None
    video = sdir.name
    if video in FRAME_RANGES:
        a, z = FRAME_RANGES[video]
        frames = [f for f in frames if a <= _frame_number(f) <= z]
    rows = parse_rows(gt_path, 4, on_error, report, what="x,y,w,h")
    omit = INIT_OMIT.get(video, 0)
    frames, rows = frames[omit:], rows[omit:]
    if len(rows) != len(frames):
        report.add(f"{gt_path}:{min(len(rows), len(frames)) + 1 + omit}: {len(rows) + omit} box lines but "
                   f"{len(frames) + omit} frames in {sdir / 'img'} (after the benchmark's frame range)", on_error,
                   kind="frame_count", path=gt_path, line=min(len(rows), len(frames)) + 1 + omit,
                   sequence=f"{dataset}/{name}")
        n = min(len(rows), len(frames))
        frames, rows = frames[:n], rows[:n]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(rows).all(axis=1) & (rows[:, 2] > 0) & (rows[:, 3] > 0)
    seq = Sequence(name=name, dataset=dataset, frames=frames, boxes=xywh_rows_to_xyxy(rows), valid=valid,
                   annotation=str(gt_path))
    if frames and not set_frame_size(seq, on_error, report):
        return None
    return clean(seq, report, trim=trim) if do_clean else seq


def read(root: str | os.PathLike, split: str = "test", dataset: str = "otb", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = False) -> list[Sequence]:
    """Read every OTB video folder of ``root`` (OTB is test-only; ``clean`` defaults to False)."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    out = []
    for d in sorted(os.listdir(root)):
        sdir = root / d
        if not (sdir / "img").is_dir():
            continue
        for name, gt in annotation_files(sdir):
            s = read_sequence(sdir, name, gt, on_error, report, dataset, do_clean=clean, trim=False)
            if s is not None:
                out.append(s)
    return out
