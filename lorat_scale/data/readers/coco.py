"""COCO detection reader: every non-crowd object is a one-frame track (``is_image=True``).

Layout: ``<root>/annotations/instances_<split>.json`` and images in ``<root>/<split>/`` or
``<root>/images/<split>/``. ``bbox`` is x,y,w,h, 0-based continuous. Image sizes come from the
JSON (no file is opened; the size is checked when the image is decoded). Objects whose box is
empty after clipping to the image are dropped. A JSON that does not parse, or lacks the
``images``/``annotations`` lists, always raises ``AnnotationError`` (nothing of it can be used); a
bad image entry (no ``width``, ...) or annotation is a problem by ``on_error``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..sequence import Sequence
from ._common import AnnotationError, OnError, Problem, ReadReport, read_text
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


def _load_json(ann_path: Path) -> dict:
    """The annotation JSON, with ``images`` and ``annotations`` lists; AnnotationError naming file, line and key."""
    what = "a COCO instances JSON with 'images' and 'annotations' lists"
    text = read_text(ann_path, "raise", ReadReport(), what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(Problem("annotation", str(ann_path), f"{ann_path}:{e.lineno}: not valid JSON ({e.msg}, "
                                      f"column {e.colno}; truncated file?), expected {what}", e.lineno)) from None
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise AnnotationError(Problem("annotation", str(ann_path), f"{ann_path}: key '{key}' is missing or not a "
                                          f"list, expected {what}"))
    return data


def _images(data: dict, ann_path: Path, on_error: OnError, report: ReadReport) -> dict:
    """image id -> image entry, for entries with an id, a file name and a positive integer width and height."""
    images = {}
    for j, im in enumerate(data["images"]):
        where = f"{ann_path}: images[{j}]"
        if not isinstance(im, dict) or "id" not in im:
            report.add(f"{where}: no 'id', expected an image entry with id, file_name, width and height", on_error,
                       path=ann_path)
            continue
        where += f" (id {im['id']}{', ' + str(im['file_name']) if 'file_name' in im else ''})"
        bad = [k for k in ("file_name", "width", "height") if k not in im]
        if bad:
            report.add(f"{where}: no {' or '.join(repr(k) for k in bad)}, expected the image's file name and its "
                       "width and height in pixels", on_error, path=ann_path)
            continue
        if not all(isinstance(im[k], (int, float)) and im[k] > 0 and float(im[k]).is_integer()
                   for k in ("width", "height")):
            report.add(f"{where}: width {im['width']!r} and height {im['height']!r}, expected positive integers "
                       "(pixels)", on_error, path=ann_path)
            continue
        images[im["id"]] = im
    return images


def read(root: str | os.PathLike, split: str = "train2017", on_error: OnError = "raise",
         report: ReadReport | None = None, clean: bool = True) -> list[Sequence]:
    """Read COCO ``split`` into one Sequence per non-crowd object."""
    root = Path(root)
    report = report if report is not None else ReadReport()
    ann_path = annotation_file(root, split)
    data = _load_json(ann_path)
    images = _images(data, ann_path, on_error, report)
    known = {im.get("id") for im in data["images"] if isinstance(im, dict)}  # reported above if unusable
    idir = image_dir(root, split)
    out = []
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            report.add(f"{ann_path}: annotations[{k}] is {type(a).__name__}, expected an object", on_error,
                       path=ann_path)
            continue
        where = f"{ann_path}: annotations[{k}] (id {a.get('id')})"
        if a.get("iscrowd", 0):
            continue  # crowd regions are not single objects (spec 4.1)
        im = images.get(a.get("image_id"))
        if im is None:
            if a.get("image_id") not in known:
                report.add(f"{where}: image_id {a.get('image_id')} is not in 'images'", on_error, path=ann_path)
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            report.add(f"{where}: bbox {bbox!r}, expected [x, y, w, h] numbers", on_error, path=ann_path)
            continue
        x, y, w, h = (float(v) for v in bbox)
        box = np.array([[x, y, x + w, y + h]])
        if not np.isfinite(box).all():
            report.add(f"{where}: bbox {bbox!r} is not finite, expected finite [x, y, w, h]", on_error, path=ann_path)
            continue
        stem = Path(im["file_name"]).stem
        seq = Sequence(name=f"{stem}_{a.get('id', k)}", dataset="coco", frames=[str(idir / im["file_name"])],
                       boxes=box, valid=np.array([True]), frame_size=(int(im["width"]), int(im["height"])),
                       is_image=True, annotation=f"{ann_path}#annotations[{k}]")
        seq.extra["image_id"] = np.array([im["id"]])
        if clean:
            seq = clean_sequence(seq, report)
        if seq is not None:
            out.append(seq)
    return out
