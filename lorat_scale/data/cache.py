"""On-disk cache of parsed annotations, keyed by reader + arguments + a fingerprint of the source.

The fingerprint covers the size and mtime of every annotation-like file (.txt/.label/.json/.ini)
under the root, plus the mtime of every folder (adding or removing frames changes it), without
descending into the big frame folders (``img/``, ``frames/``) whose own mtime is enough. Files
passed as reader arguments (split lists) are fingerprinted too. Any change re-reads the dataset.

The cache file is an ``.npz`` read with ``allow_pickle=False``: JSON (names, frame paths, the
reader's problems) and plain numeric/string arrays, nothing that can carry code. A cache folder
may be shared or copied from elsewhere, and unpickling a planted file would run its code; a file
that does not load this way (damaged, planted, old) is named in a warning and rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import atomic_open
from .readers import DEFAULT_SPLIT, Problem, ReadReport, get_reader
from .sequence import Sequence

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when Sequence, a reader's output or this file format changes meaning
ANNOTATION_SUFFIXES = (".txt", ".label", ".json", ".ini")
FRAME_DIRS = {"img", "imgs", "frames", "images", "train2017", "val2017"}


def default_cache_dir() -> Path:
    """``$LORAT_CACHE`` or ``~/.cache/lorat_scale``."""
    return Path(os.environ.get("LORAT_CACHE", Path.home() / ".cache" / "lorat_scale"))


def fingerprint(root: str | os.PathLike, extra_files: list[str] = ()) -> str:
    """sha256 over (path, size, mtime_ns) of annotation files and folders under ``root``."""
    h = hashlib.sha256()
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        h.update(f"D {rel} {os.stat(dirpath).st_mtime_ns}\n".encode())
        # Frame folders: their mtime (listed above when entered) changes when files are added or
        # removed; listing millions of frames would make the fingerprint as slow as the parse.
        for d in [d for d in dirnames if d in FRAME_DIRS]:
            h.update(f"D {rel}/{d} {os.stat(os.path.join(dirpath, d)).st_mtime_ns}\n".encode())
        dirnames[:] = [d for d in dirnames if d not in FRAME_DIRS]
        for f in sorted(filenames):
            if f.endswith(ANNOTATION_SUFFIXES):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"F {rel}/{f} {st.st_size} {st.st_mtime_ns}\n".encode())
    for f in extra_files:
        st = os.stat(f)
        h.update(f"X {os.path.abspath(f)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_key(fmt: str, root: str, split: str, kwargs: dict[str, Any]) -> str:
    """Stable hash of what was asked (not of the data)."""
    desc = json.dumps([CACHE_VERSION, fmt, os.path.abspath(root), split, sorted((k, str(v)) for k, v in kwargs.items())])
    return hashlib.sha256(desc.encode()).hexdigest()[:20]


def cache_path(fmt: str, root: str | os.PathLike, split: str | None = None, cache_dir: str | os.PathLike | None = None,
               **kwargs: Any) -> Path:
    """The cache file ``cached_read`` uses for these arguments."""
    split = split or DEFAULT_SPLIT[fmt]
    kwargs.pop("report", None)
    d = Path(cache_dir) if cache_dir else default_cache_dir()
    return d / f"{fmt}-{split}-{_cache_key(fmt, str(root), split, kwargs)}.npz"


def cached_read(fmt: str, root: str | os.PathLike, split: str | None = None, cache_dir: str | os.PathLike | None = None,
                **kwargs: Any) -> list[Sequence]:
    """``READERS[fmt](root, split, **kwargs)``, from the cache when the source is unchanged.

    A ``report`` argument receives the reader's problems and counts, from the cache too.
    """
    reader = get_reader(fmt)
    split = split or DEFAULT_SPLIT[fmt]
    root = str(root)
    report = kwargs.pop("report", None)
    extra = [str(v) for v in kwargs.values() if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]
    fp = fingerprint(root, extra)
    path = cache_path(fmt, root, split, cache_dir, **kwargs)
    if path.is_file():
        try:
            found = load_cache(path, fp)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            log.warning("ignoring annotation cache %s (%s: %s); reading the dataset again", path, type(e).__name__, e)
            found = None
        if found is not None:
            seqs, rep = found
            _merge(report, rep)
            return seqs
    rep = ReadReport()
    seqs = reader(root, split, report=rep, **kwargs)
    with atomic_open(path, "wb") as f:  # concurrent readers never see half a file
        save_cache(f, fp, seqs, rep)
    _merge(report, rep)
    return seqs


def _merge(into: ReadReport | None, rep: ReadReport) -> None:
    """Add ``rep``'s problems and counts to the caller's report."""
    if into is None:
        return
    into.records += rep.records
    into.dropped += rep.dropped
    into.clipped_boxes += rep.clipped_boxes
    into.emptied_boxes += rep.emptied_boxes
    into.trimmed_frames += rep.trimmed_frames


# ------------------------------------------------------------------------------------------
# The file format: meta JSON + concatenated arrays (np.savez; loaded with allow_pickle=False)
# ------------------------------------------------------------------------------------------
def save_cache(f: io.BufferedIOBase, fp: str, seqs: list[Sequence], rep: ReadReport) -> None:
    """Write sequences and the read report to an open binary file."""
    arrays: dict[str, list[np.ndarray]] = {"boxes": [], "valid": [], "frame_sizes": []}
    metas = []
    for s in seqs:
        if s.frame_bytes:
            raise ValueError(f"{s.key}: sequences with in-memory frames (shards) are not cached")
        # Frame paths of one folder are stored as the folder and one string of names: compact, and
        # fast to load (string concatenation; os.path.join per frame took 3 s per million frames).
        prefix = s.frames[0].rpartition(os.sep)[0] + os.sep if s.frames else ""
        names = [p[len(prefix):] for p in s.frames]
        same = all(p.startswith(prefix) for p in s.frames) and not any(os.sep in n or "\n" in n for n in names)
        m = {"name": s.name, "dataset": s.dataset, "n": len(s), "is_image": s.is_image, "annotation": s.annotation,
             "frame_size": list(s.frame_size) if s.frame_size else None, "weight": s.weight, "offset": s.offset,
             "core": list(s.core) if s.core else None, "frame_sizes": s.frame_sizes is not None, "extra": {},
             **({"prefix": prefix, "names": "\n".join(names)} if same else {"frames": list(s.frames)})}
        arrays["boxes"].append(s.boxes)
        arrays["valid"].append(s.valid)
        if s.frame_sizes is not None:
            arrays["frame_sizes"].append(np.asarray(s.frame_sizes, dtype=np.int64).reshape(-1, 2))
        for k, v in s.extra.items():
            v = np.asarray(v)
            if v.dtype.kind == "O":
                raise TypeError(f"{s.key}: extra[{k!r}] is an object array; cache only numbers and strings")
            m["extra"][k] = [len(v), v.dtype.str]
            arrays.setdefault(f"extra.{k}", []).append(v)
        metas.append(m)
    meta = {"cache_version": CACHE_VERSION, "fingerprint": fp, "sequences": metas,
            "problems": [dataclasses.asdict(p) for p in rep.records], "dropped": rep.dropped,
            "counts": [rep.clipped_boxes, rep.emptied_boxes, rep.trimmed_frames]}
    out = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    empty = {"boxes": np.zeros((0, 4)), "valid": np.zeros(0, dtype=bool), "frame_sizes": np.zeros((0, 2), np.int64)}
    for k, e in empty.items():
        vs = arrays.pop(k)
        out[k] = np.concatenate(vs) if vs else e
    for k, vs in arrays.items():
        out[k] = np.concatenate([v.reshape(-1) for v in vs])
    np.savez(f, allow_pickle=False, **out)


def load_cache(path: str | os.PathLike, fp: str | None = None) -> tuple[list[Sequence], ReadReport] | None:
    """Sequences and read report of a cache file; None if its fingerprint is not ``fp`` (stale)."""
    with np.load(path, allow_pickle=False) as z:  # refuses pickled data: a planted file cannot run code
        meta = json.loads(z["meta"].tobytes())
        if meta.get("cache_version") != CACHE_VERSION or (fp is not None and meta.get("fingerprint") != fp):
            return None
        boxes, valid, sizes = z["boxes"], z["valid"], z["frame_sizes"]
        extras = {k[len("extra."):]: z[k] for k in z.files if k.startswith("extra.")}
    seqs, at, at_size = [], 0, 0
    at_extra = dict.fromkeys(extras, 0)
    for m in meta["sequences"]:
        n = m["n"]
        frames = ([m["prefix"] + name for name in m["names"].split("\n")] if "names" in m else m["frames"]) if n else []
        s = Sequence(name=m["name"], dataset=m["dataset"], frames=frames, boxes=boxes[at:at + n],
                     valid=valid[at:at + n], frame_size=tuple(m["frame_size"]) if m["frame_size"] else None,
                     is_image=m["is_image"], core=tuple(m["core"]) if m["core"] else None, offset=m["offset"],
                     annotation=m["annotation"], weight=m["weight"])
        if m["frame_sizes"]:
            s.frame_sizes = sizes[at_size:at_size + n]
            at_size += n
        for k, (length, _dtype) in m["extra"].items():
            s.extra[k] = extras[k][at_extra[k]:at_extra[k] + length]
            at_extra[k] += length
        if len(s.frames) != n:
            raise ValueError(f"sequence {s.key}: {len(s.frames)} frame paths for {n} boxes")
        seqs.append(s)
        at += n
    if at != len(boxes):
        raise ValueError(f"{len(boxes)} boxes stored, the sequences hold {at}")
    rep = ReadReport(records=[Problem(**p) for p in meta["problems"]], dropped=list(meta["dropped"]))
    rep.clipped_boxes, rep.emptied_boxes, rep.trimmed_frames = meta["counts"]
    return seqs, rep
