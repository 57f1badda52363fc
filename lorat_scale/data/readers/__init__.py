"""Dataset readers: one small module per format, each ``read(root, split, ...) -> list[Sequence]``.

Every reader takes ``on_error="raise"|"skip"`` and an optional ``ReadReport`` that collects the
problems met (bad lines, NaN boxes, dropped sequences) when skipping.
"""
from __future__ import annotations

from typing import Callable

from ..sequence import Sequence
from . import coco, custom, got10k, lasot, nfs, otb, tnl2k, trackingnet, uav123, vot
from ._common import AnnotationError, ReadReport

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


def read_dataset(fmt: str, root: str, split: str | None = None, **kwargs) -> list[Sequence]:
    """Read ``root`` with the reader named ``fmt`` (see ``READERS``)."""
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(READERS)}")
    return READERS[fmt](root, split or DEFAULT_SPLIT[fmt], **kwargs)


__all__ = ["READERS", "DEFAULT_SPLIT", "read_dataset", "AnnotationError", "ReadReport"]
