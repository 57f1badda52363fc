"""The one annotation type shared by readers, shards, the stream and the pair sampler.

Boxes are xyxy, continuous, 0-based float64 (see ``lorat_scale.boxes``); a frame is usable for
training only where ``valid`` is True. ``frames`` holds absolute image paths for readers, or keys
into ``frame_bytes`` (in-memory JPEG bytes) for sequences decoded from shards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decode import decode_image


class SequenceError(ValueError):
    """A sequence's annotation is inconsistent; the message names the dataset and sequence."""


@dataclass
class Sequence:
    """One tracked object over frames (or one object in a still image when ``is_image``)."""

    name: str  # unique within its dataset, e.g. "airplane-1"
    dataset: str  # "lasot", "got10k", "trackingnet", "coco", "custom", "otb", ...
    frames: list[str]  # absolute image paths (or shard keys), one per frame
    boxes: np.ndarray  # (N, 4) float64 xyxy, 0-based continuous; NaN where unannotated
    valid: np.ndarray  # (N,) bool: annotated, visible, non-empty box
    frame_size: tuple[int, int] | None = None  # (W, H) if the same for all frames and known
    is_image: bool = False  # still image (COCO): template and search are the same frame
    # In-memory encoded frames (from a shard): frames[i] is a key into this dict. Empty for
    # readers (frames are then file paths). Kept out of repr/compare: it can be megabytes.
    frame_bytes: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    # Per-frame (W, H) when sizes differ between frames (COCO images, some TrackingNet videos).
    frame_sizes: np.ndarray | None = field(default=None, repr=False, compare=False)
    # Per-frame attributes a reader keeps beside validity (e.g. GOT-10k "cover": (N,) int).
    extra: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    # Shard windows (see shards.py): frames [core[0], core[1]) may be template frames; the other
    # frames are context for search frames within +-max_frame_gap. None = every frame.
    core: tuple[int, int] | None = None
    offset: int = 0  # index of frames[0] in the full source sequence (after trimming)
    annotation: str = field(default="", repr=False, compare=False)  # source annotation file (for messages)
    weight: float = 1.0  # share of the source sequence's valid frames in ``core`` (1 = whole sequence)
    # Indexed shards (shards.ShardStore): frames are read by byte range through this store; the per-frame
    # locations live in ``extra`` (shard, offset, nbytes, crc32). None for files and in-memory frames.
    store: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.valid = np.asarray(self.valid, dtype=bool).reshape(-1)

    def __repr__(self) -> str:
        """Short form: the frame list and arrays can hold thousands of entries."""
        return (f"Sequence({self.key!r}, {len(self.frames)} frames, {int(self.valid.sum())} valid, "
                f"size={self.frame_size}, is_image={self.is_image})")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def key(self) -> str:
        """``<dataset>/<name>``: unique across datasets."""
        return f"{self.dataset}/{self.name}"

    def validate(self) -> None:
        """Raise SequenceError if shapes disagree or a valid frame has a NaN/inf/empty box."""
        n = len(self.frames)
        where = f"sequence {self.key}"
        if self.boxes.shape != (n, 4):
            raise SequenceError(f"{where}: boxes have shape {self.boxes.shape}, expected ({n}, 4)")
        if self.valid.shape != (n,):
            raise SequenceError(f"{where}: valid has shape {self.valid.shape}, expected ({n},)")
        vb = self.boxes[self.valid]
        bad = ~np.isfinite(vb).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(self.valid)[np.flatnonzero(bad)[0]])
            raise SequenceError(f"{where}: frame {i} is marked valid but its box is {self.boxes[i].tolist()}"
                                " (expected finite numbers)")
        empty = (vb[:, 2] <= vb[:, 0]) | (vb[:, 3] <= vb[:, 1])
        if empty.any():
            i = int(np.flatnonzero(self.valid)[np.flatnonzero(empty)[0]])
            raise SequenceError(f"{where}: frame {i} is marked valid but its box {self.boxes[i].tolist()}"
                                " is empty (expected x2 > x1 and y2 > y1)")
        if self.frame_bytes:
            # Shards store only the frames that can be sampled (valid ones).
            missing = [self.frames[i] for i in np.flatnonzero(self.valid) if self.frames[i] not in self.frame_bytes]
            if missing:
                raise SequenceError(f"{where}: valid frames {missing[:3]} have no image bytes")

    def valid_indices(self) -> np.ndarray:
        """Indices of the frames usable for training."""
        return np.flatnonzero(self.valid)

    def template_indices(self) -> np.ndarray:
        """Valid frames that may be the template (the ``core`` of a shard window, else all valid)."""
        idx = np.flatnonzero(self.valid)
        if self.core is not None:
            idx = idx[(idx >= self.core[0]) & (idx < self.core[1])]
        return idx

    def size_of(self, i: int) -> tuple[int, int] | None:
        """(W, H) of frame ``i`` if known."""
        if self.frame_sizes is not None:
            w, h = self.frame_sizes[i]
            return int(w), int(h)
        return self.frame_size

    def read_bytes(self, i: int) -> bytes:
        """Encoded bytes of frame ``i`` (from memory for shard sequences, else from disk)."""
        if self.store is not None:
            return self.store.read_frame(self, i)
        f = self.frames[i]
        if self.frame_bytes:
            return self.frame_bytes[f]
        with open(f, "rb") as fh:
            return fh.read()

    def frame_name(self, i: int) -> str:
        """Where frame ``i`` comes from, for messages: its file path, or ``dataset/name/key`` in a shard."""
        return f"{self.key}/{self.frames[i]}" if self.frame_bytes or self.store is not None else self.frames[i]

    def load_frame(self, i: int, data: bytes | None = None) -> np.ndarray:
        """Decode frame ``i`` to uint8 HWC RGB, strictly, and check its size against the sequence's.

        Raises ``BadImageError`` naming the file (or shard key) when it cannot be read
        (``kind="missing"``), is not a complete, valid image (``kind="corrupt"``), or differs in
        size from what its box was measured on (``kind="size"``): such a frame is never trained on.
        """
        try:
            data = self.read_bytes(i) if data is None else data  # ``data``: its bytes, already read by the caller
        except OSError as e:
            raise BadImageError(f"{self.frame_name(i)}: cannot read frame ({e.strerror or e})", "missing") from e
        try:
            frame = decode_image(data)
        except OSError as e:  # corrupt or truncated data, not an image
            raise BadImageError(f"{self.frame_name(i)}: cannot decode image ({e})", "corrupt") from e
        want = self.size_of(i)
        if want is not None and (frame.shape[1], frame.shape[0]) != tuple(want):
            raise BadImageError(f"{self.frame_name(i)}: frame is {frame.shape[1]}x{frame.shape[0]}, expected "
                                f"{want[0]}x{want[1]} (the size {self.key}'s boxes are measured on)", "size")
        return frame


class BadImageError(OSError):
    """A frame cannot be used; the message names the file or shard key.

    ``kind`` is "missing" (the file cannot be read), "corrupt" (not a complete, valid image) or
    "size" (its size differs from the sequence's).
    """

    def __init__(self, msg: str, kind: str = "corrupt"):
        super().__init__(msg)
        self.kind = kind
