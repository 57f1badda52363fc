"""Annotated frames and GIFs: predicted and ground-truth boxes drawn on the frames of a sequence.

    write_tracking_gif(seq, {"trained": boxes, "untrained head": other}, "airplane-1.gif")

Boxes are xyxy in the frame's pixels (the readers' convention). Frames are drawn with OpenCV and
written with Pillow (a GIF shows in any browser and in Markdown reports, where a video may not).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..data.sequence import Sequence
from ..outputs import atomic_path

# RGB colours: ground truth white, then one colour per tracker in order.
GT_COLOUR = (255, 255, 255)
COLOURS = ((0, 230, 0), (255, 60, 60), (60, 140, 255), (255, 200, 0), (200, 0, 255))


def draw_box(frame: np.ndarray, box_xyxy: np.ndarray, colour: tuple[int, int, int], thickness: int = 2) -> None:
    """Draw one xyxy box on an HxWx3 uint8 image in place (skipped if not finite)."""
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
    if np.isfinite(box).all():
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness)


def draw_label(frame: np.ndarray, text: str, row: int, colour: tuple[int, int, int] = (255, 255, 0),
               scale: float = 0.5) -> None:
    """Text on a black band in the top-left corner, line ``row`` (legible on any background), in place."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = 6 + (row + 1) * (th + base + 6)
    cv2.rectangle(frame, (4, y - th - 4), (12 + tw, y + base), (0, 0, 0), -1)
    cv2.putText(frame, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def write_tracking_gif(seq: Sequence, boxes: dict[str, np.ndarray], path: str | Path, every: int = 2,
                       width: int = 480, fps: float = 12.0) -> Path:
    """GIF of ``seq`` with its ground truth (white) and each tracker's (N, 4) xyxy boxes, every ``every``-th frame.

    Frames are scaled to ``width`` pixels; a legend names the trackers in their colours.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    images = []
    for i in range(0, len(seq), every):
        frame = np.ascontiguousarray(seq.load_frame(i))  # RGB; drawn on a copy of the decoded frame
        s = width / frame.shape[1]
        frame = cv2.resize(frame, (width, int(round(frame.shape[0] * s))), interpolation=cv2.INTER_AREA)
        if seq.valid[i]:
            draw_box(frame, seq.boxes[i] * s, GT_COLOUR, 1)
        for k, b in enumerate(boxes.values()):
            draw_box(frame, np.asarray(b[i]) * s, COLOURS[k % len(COLOURS)])
        draw_label(frame, f"{seq.name} #{i + 1}   ground truth: white", 0, GT_COLOUR)
        for k, name in enumerate(boxes):
            draw_label(frame, name, k + 1, COLOURS[k % len(COLOURS)])
        images.append(Image.fromarray(frame))
    with atomic_path(path) as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, optimize=False)
    return path
