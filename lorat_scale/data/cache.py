"""On-disk cache of parsed annotations, keyed by reader + arguments + a fingerprint of the source.

The fingerprint covers the size and mtime of every annotation-like file (.txt/.label/.json/.ini)
under the root, plus the mtime of every folder (adding or removing frames changes it), without
descending into the big frame folders (``img/``, ``frames/``) whose own mtime is enough. Files
passed as reader arguments (split lists) are fingerprinted too. Any change re-reads the dataset.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

from .readers import DEFAULT_SPLIT, READERS
from .sequence import Sequence

CACHE_VERSION = 1  # bump when Sequence or a reader's output changes meaning
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


def cached_read(fmt: str, root: str | os.PathLike, split: str | None = None, cache_dir: str | os.PathLike | None = None,
                **kwargs: Any) -> list[Sequence]:
    """``READERS[fmt](root, split, **kwargs)``, from the cache when the source is unchanged."""
    split = split or DEFAULT_SPLIT[fmt]
    root = str(root)
    if kwargs.get("report") is not None:
        # A report wants the problems of this read: a cache hit would hide them.
        return READERS[fmt](root, split, **kwargs)
    extra = [str(v) for v in kwargs.values() if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]
    fp = fingerprint(root, extra)
    d = Path(cache_dir) if cache_dir else default_cache_dir()
    path = d / f"{fmt}-{split}-{_cache_key(fmt, root, split, kwargs)}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as f:
                stored_fp, seqs = pickle.load(f)
            if stored_fp == fp:
                return seqs
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError):
            pass  # a damaged or outdated cache file is rebuilt below
    seqs = READERS[fmt](root, split, **kwargs)
    d.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump((fp, seqs), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)  # atomic: concurrent readers never see half a file
    return seqs
