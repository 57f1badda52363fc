"""Dataset readers: one small module per format, each ``read(root, split, ...) -> list[Sequence]``.

Every reader takes ``on_error="raise"|"skip"`` and an optional ``ReadReport``. Bad data never
escapes as a library exception; it is one structured ``Problem`` (``kind``, ``path``, ``line``,
``message``: one line naming the file, the line or key, and what was expected):

* ``on_error="raise"``: the first problem raises ``DatasetError`` (a ``ValueError``), subclassed as
  ``AnnotationError`` (kinds "annotation", "frame_count") or ``FrameError`` ("missing_frame",
  "bad_frame", "no_frames"); ``err.problem`` is the ``Problem``.
* ``on_error="skip"``: every problem is appended to ``report.records`` (``report.problems`` = their
  messages) and the bad line or frame is left out: the frame is marked invalid (a missing middle
  frame keeps its place, so later boxes stay on their frames), and a sequence is returned as
  None only when nothing of it can be trusted (no image file, no readable frame among its first
  8, or more boxes than frames with no numbering that tells which frame is missing).

Frames are checked for existence and readable headers here; pixels are checked when decoded
(``Sequence.load_frame``: strict decode and size check; ``check-data --decode``).
"""
from __future__ import annotations

from typing import Callable

from ..sequence import Sequence
from . import coco, custom, got10k, lasot, nfs, otb, tnl2k, trackingnet, uav123, vot
from ._common import PROBLEM_KINDS, AnnotationError, DatasetError, FrameError, Problem, ReadReport

# name -> reader function. A plain dict: add a module and a line here for a new format.
READERS: dict[str, Callable[..., list[Sequence]]] = {
    "lasot": lasot.read,
    "got10k": got10k.read,
    "trackingnet": trackingnet.read,
    "coco": coco.read,
    "custom": custom.read,
    # Evaluation benchmarks, readable for training too (e.g. the quickstart's sample sequences).
    "otb": otb.read,
    "vot": vot.read,
    "uav123": uav123.read,
    "nfs": nfs.read,
    "tnl2k": tnl2k.read,
}

# The split each format reads when none is given.
DEFAULT_SPLIT = {"lasot": "train", "got10k": "train", "trackingnet": "train", "coco": "train2017", "custom": "train", "otb": "test",
                 "vot": "test", "uav123": "test", "nfs": "test", "tnl2k": "test"}


def get_reader(fmt: str, where: str = "") -> Callable[..., list[Sequence]]:
    """The reader named ``fmt``; ValueError naming ``where`` (e.g. the source entry) and the valid names if unknown."""
    if fmt not in READERS:
        raise ValueError(f"{where + ': ' if where else ''}unknown dataset format {fmt!r}; expected one of "
                         f"{', '.join(READERS)}")
    return READERS[fmt]


def parse_source(entry: str) -> tuple[str, str, str]:
    """A training source ``format[:split]=root`` -> (format, split, root), the split defaulted; ValueError if bad."""
    fmt, sep, root = entry.partition("=")
    fmt, _, split = fmt.partition(":")
    if not sep or not fmt or not root:
        raise ValueError(f"data source {entry!r} must look like format[:split]=root, e.g. lasot=/data/LaSOT "
                         f"(formats: {', '.join(READERS)})")
    get_reader(fmt, f"data source {entry!r}")
    return fmt, split or DEFAULT_SPLIT[fmt], root


def read_dataset(fmt: str, root: str, split: str | None = None, **kwargs) -> list[Sequence]:
    """Read ``root`` with the reader named ``fmt`` (see ``READERS``)."""
    return get_reader(fmt)(root, split or DEFAULT_SPLIT[fmt], **kwargs)


__all__ = ["READERS", "DEFAULT_SPLIT", "PROBLEM_KINDS", "get_reader", "parse_source", "read_dataset", "AnnotationError",
           "DatasetError", "FrameError", "Problem", "ReadReport"]
