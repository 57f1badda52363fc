"""COCO detection reader: every non-crowd object is a one-frame track (``is_image=True``).

Layout: ``<root>/annotations/instances_<split>.json`` and images in ``<root>/<split>/`` or
``<root>/images/<split>/``. ``bbox`` is x,y,w,h, 0-based continuous. Image sizes come from the
JSON (no file is opened). Objects whose box is empty after clipping to the image are dropped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import OnError, ReadReport
from ._common import clean as clean_sequence


def annotation_file(root: Path, split: str) -> Path:
    """``annotations/instances_<split>.json``."""
    return root / "annotations" / f"instances_{split}.json"


def image_dir(root: Path, split: str) -> Path:
    """The image folder of a split (``<split>/`` or ``images/<split>/``)."""
    for d in (root / split, root / "images" / split):
        if d.is_dir():
            return d
    return root / split


def read(root: str | os.PathLike, split: str = "train2017", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = True) -> list[Sequence]:
    """Read COCO ``split`` into one Sequence per non-crowd object."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    ann_path = annotation_file(root, split)
    with open(ann_path) as f:
        data = json.load(f)
    images = {im["id"]: im for im in data["images"]}
    idir = image_dir(root, split)
    out = []
    for k, a in enumerate(data["annotations"]):
        where = f"{ann_path}: annotations[{k}] (id {a.get('id')})"
        if a.get("iscrowd", 0):
            continue  # crowd regions are not single objects (spec 4.1)
        im = images.get(a.get("image_id"))
        if im is None:
            report.add(f"{where}: image_id {a.get('image_id')} is not in 'images'", on_error)
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            report.add(f"{where}: bbox {bbox!r}, expected [x, y, w, h] numbers", on_error)
            continue
        x, y, w, h = (float(v) for v in bbox)
        box = np.array([[x, y, x + w, y + h]])
        if not np.isfinite(box).all():
            report.add(f"{where}: bbox {bbox!r} is not finite, expected finite [x, y, w, h]", on_error)
            continue
        stem = Path(im["file_name"]).stem
        seq = Sequence(name=f"{stem}_{a['id']}", dataset="coco", frames=[str(idir / im["file_name"])], boxes=box,
                       valid=np.array([True]), frame_size=(int(im["width"]), int(im["height"])), is_image=True,
                       annotation=f"{ann_path}#annotations[{k}]")
        seq.extra["image_id"] = np.array([im["id"]])
        if clean:
            seq = clean_sequence(seq, report)
        if seq is not None:
            out.append(seq)
    return out

