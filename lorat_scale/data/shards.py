"""Shards: plain tar files of sequence frames, an index of member offsets, the manifest, and record decoding.

**Layout** (format 2). A source (one dataset split) is a folder::

    manifest.json               what was written from what, per-shard counts and sha256, the layout
    index.npz                   every sequence's boxes, validity, sizes and, per frame, (shard, offset, size, crc32)
    shard-000000.tar ...        standard tar files (webdataset naming: ``<key>.json``, ``<key>.<i:06d>.jpg``)
    shard-000000.idx.npz ...    member offsets of each shard (merged into index.npz)

* A **record** (one webdataset sample) is a run of frames of one sequence: ``core`` (default 400) consecutive
  frames plus ``margin`` context frames on each side (default 0). Only valid frames are stored, as their
  **original** JPEG/PNG bytes (never re-encoded: decoding stays bit-identical to the source files). ``<key>.json``
  holds the record's boxes (xyxy, null where unannotated), valid flags, frame sizes, core range, offset in the
  sequence and ``weight`` (core valid frames / sequence valid frames). COCO: one record per image holding the
  image once and every object's box.
* **Random access** (the training path, ``ShardStore``): ``index.npz`` lists every sequence of the source in
  the reader's order with its annotations, and for every stored frame the shard, byte offset, size and crc32 of
  its tar member. The pair sampler then reads exactly the two frames a pair uses: one ``pread`` each on local
  and parallel file systems, one HTTP range request each on ``http(s)://`` URLs. The sequences it builds are
  the raw reader's sequences (same order, boxes, validity), so ``PairDataset`` draws the same pairs from
  shards as from the dataset folders.
* **Streaming** (the fallback for storage without random access, ``stream.py``/``stream_pairs.py``): records are
  read whole, in shard order; exact LoRAT sampling then needs every search frame of a template in its record,
  i.e. ``margin >= data.max_frame_gap`` (write with ``--margin 100``; margins duplicate frames: 1.5x storage at
  core 400). The stream refuses shards whose margin is smaller.

webdataset's ``wids`` reads such tars by index, but it first copies or downloads each whole shard into a local
cache (``wids_dl``) and builds its index by scanning every member header; a 64-node job wants two members of
a 1 GB shard on a parallel file system or object store, so the index is written here, when the shards are,
and read with ``storage.RangeReader``. The tars stay standard: ``tar``, webdataset and wids read them.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tarfile
import zlib
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import atomic_open, atomic_path, write_atomic
from .sequence import BadImageError, Sequence
from .storage import RangeReader, RetryPolicy, StorageError, is_url, join_url

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
INDEX = "index.npz"


class BadSampleError(ValueError):
    """A shard record is unusable; the message names the shard URL and the record key.

    ``kind`` is "image" (corrupt/truncated frame bytes), "box" (NaN or out-of-image box) or
    "record" (missing members, bad JSON): the stream counts them separately.
    """

    def __init__(self, msg: str, kind: str = "record"):
        super().__init__(msg)
        self.kind = kind


class ShardLayoutError(ValueError):
    """A shard folder cannot serve the configured reading or sampling; the message says what to change."""


@dataclass(frozen=True)
class Window:
    """Frames [lo, hi) of a sequence stored in one record; [core_lo, core_hi) may be templates."""

    lo: int
    hi: int
    core_lo: int
    core_hi: int


def plan_windows(seq: Sequence, core: int = 400, margin: int = 0) -> list[Window]:
    """Split a sequence into windows whose cores tile it; windows without a valid core frame are dropped."""
    n = len(seq)
    if seq.is_image or n <= core + 2 * margin:
        return [Window(0, n, 0, n)] if seq.valid.any() else []
    out = []
    for c0 in range(0, n, core):
        c1 = min(c0 + core, n)
        if seq.valid[c0:c1].any():
            out.append(Window(max(0, c0 - margin), min(n, c1 + margin), c0, c1))
    return out


def safe_key(name: str) -> str:
    """A webdataset key: no '.' (it starts the extension) and no '/'."""
    return re.sub(r"[./\\\s]", "_", name)


def _box_list(boxes: np.ndarray) -> list[list[float] | None]:
    """JSON boxes: rows with a non-finite value become null (JSON has no NaN)."""
    return [b.tolist() if np.isfinite(b).all() else None for b in boxes]


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lstrip(".").lower() or "jpg"


def _read_frame_file(path: str) -> bytes:
    """A frame file's bytes; OSError if missing, unreadable or empty."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise OSError(f"{path}: empty file")
    return data


def encode_window(seq: Sequence, w: Window, k: int) -> tuple[dict[str, Any], list[str]]:
    """The record of window ``w`` (number ``k``) of ``seq``; returns (record, missing frame files).

    Frames that cannot be read, or whose bytes are not a whole image (header, end marker), are marked
    invalid in the record and reported: one bad file costs that frame only, never the sequence.
    """
    key = safe_key(f"{seq.dataset}-{seq.name}-w{k:04d}")
    valid = seq.valid[w.lo:w.hi].copy()
    rec: dict[str, Any] = {"__key__": key}
    missing = []
    for i in np.flatnonzero(valid):
        src = seq.frames[w.lo + i]
        try:
            data = _read_frame_file(src)
            _check_image_bytes(data, src)  # header and end marker: garbage or truncated files are not stored
            rec[f"{i:06d}.{_ext(src)}"] = data
        except (OSError, BadSampleError):
            missing.append(src)
            valid[i] = False
    sizes = None
    if seq.frame_sizes is not None:
        sizes = np.asarray(seq.frame_sizes[w.lo:w.hi]).tolist()
    seq_valid = int(seq.valid.sum())
    meta = {
        "format_version": FORMAT_VERSION, "dataset": seq.dataset, "name": seq.name, "is_image": seq.is_image,
        "offset": w.lo, "core": [w.core_lo - w.lo, w.core_hi - w.lo], "seq_len": len(seq), "seq_valid": seq_valid,
        "weight": float(valid[w.core_lo - w.lo:w.core_hi - w.lo].sum()) / max(seq_valid, 1),
        "boxes": _box_list(seq.boxes[w.lo:w.hi]), "valid": valid.astype(int).tolist(),
        "frame_size": list(seq.frame_size) if seq.frame_size else None, "frame_sizes": sizes,
        "files": [f"{i:06d}.{_ext(seq.frames[w.lo + i])}" if valid[i] else None for i in range(w.hi - w.lo)],
    }
    rec["json"] = json.dumps(meta).encode()
    return rec, missing


def encode_image(objs: list[Sequence]) -> tuple[dict[str, Any], list[str]]:
    """One COCO-style record: the image once plus every object's box (all share ``frames[0]``)."""
    first = objs[0]
    src = first.frames[0]
    key = safe_key(f"{first.dataset}-{Path(src).stem}")
    try:
        data = _read_frame_file(src)
        _check_image_bytes(data, src)
    except (OSError, BadSampleError):
        return {}, [src]
    meta = {"format_version": FORMAT_VERSION, "dataset": first.dataset, "is_image": True,
            "frame_size": list(first.frame_size) if first.frame_size else None, "file": f"000000.{_ext(src)}",
            "objects": [{"name": s.name, "box": s.boxes[0].tolist()} for s in objs]}
    return {"__key__": key, f"000000.{_ext(src)}": data, "json": json.dumps(meta).encode()}, []


def group_images(seqs: list[Sequence]) -> list[list[int]]:
    """Positions of one-frame objects grouped by image file (COCO: one record per image)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(s.frames[0], []).append(i)
    return list(groups.values())


# ------------------------------------------------------------------------------------------
# Decoding (used by the stream)
# ------------------------------------------------------------------------------------------
def _check_image_bytes(data: bytes, where: str) -> None:
    """Cheap integrity check without decoding pixels: header parses and JPEG/PNG end marker present."""
    from PIL import Image

    if data[:2] == b"\xff\xd8":
        # A truncated JPEG lacks its EOI marker (some encoders pad after it, so look near the end).
        if b"\xff\xd9" not in data[-64:]:
            raise BadSampleError(f"{where}: JPEG has no end marker (truncated or corrupt)", "image")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-16:]:
            raise BadSampleError(f"{where}: PNG has no IEND chunk (truncated)", "image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.size  # noqa: B018 - parsing the header is the check
    except Exception as e:  # PIL raises many types on garbage; all mean "not an image"
        raise BadSampleError(f"{where}: not a readable image ({type(e).__name__}: {e})", "image") from e


def decode_record(sample: dict[str, Any], check_images: bool = True,
                  problems: list[str] | None = None) -> list[Sequence]:
    """A webdataset sample (dict of raw bytes) -> Sequences (one, or one per COCO object).

    Raises BadSampleError naming shard and key when the JSON is missing or malformed, or a valid
    frame's box is not finite/inside. A valid frame whose bytes are missing or not an image costs that
    frame only when ``problems`` is a list (it is marked invalid and described there); the record is
    refused when no valid frame is left, or with ``problems=None`` at the first bad frame.
    """
    url, key = sample.get("__url__", "?"), sample.get("__key__", "?")
    where = f"{url}: record {key}"
    if "json" not in sample:
        raise BadSampleError(f"{where}: no .json member (truncated shard?); members: {sorted(sample)[:5]}")
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as e:
        raise BadSampleError(f"{where}: .json is not valid JSON ({e})") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise BadSampleError(f"{where}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    try:
        if meta.get("objects") is not None:
            return _decode_image(sample, meta, where, check_images)
        return [_decode_window(sample, meta, where, check_images, problems)]
    except (KeyError, TypeError, IndexError) as e:
        raise BadSampleError(f"{where}: malformed metadata ({type(e).__name__}: {e})") from e


def _frame_bytes(sample: dict[str, Any], names: list[str], where: str, check: bool,
                 problems: list[str] | None) -> dict[str, bytes]:
    """The named members of a record that are present and (if ``check``) look like images.

    A missing or damaged member is left out and described in ``problems`` (the caller drops that frame
    only); with ``problems=None`` it raises ``BadSampleError`` instead.
    """
    out = {}
    for n in names:
        data = sample.get(n)
        try:
            if data is None:
                raise BadSampleError(f"{where}/{n}: frame missing from the record (truncated shard?)", "image")
            if check:
                _check_image_bytes(data, f"{where}/{n}")
        except BadSampleError as e:
            if problems is None:
                raise
            problems.append(str(e))
            continue
        out[n] = data
    return out


def _boxes(rows: list, where: str) -> np.ndarray:
    """JSON rows (null = unannotated) -> (N, 4) float64."""
    out = np.full((len(rows), 4), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            if len(r) != 4:
                raise BadSampleError(f"{where}: box {i} is {r!r}, expected 4 numbers", "box")
            out[i] = r
    return out


def _validate_boxes(seq: Sequence, where: str) -> None:
    """Valid boxes must be finite, non-empty and inside the frame (they were clipped when written)."""
    from .sequence import SequenceError

    try:
        seq.validate()
    except SequenceError as e:
        raise BadSampleError(f"{where}: {e}", "box") from e
    if seq.frame_size is not None or seq.frame_sizes is not None:
        for i in np.flatnonzero(seq.valid):
            w, h = seq.size_of(i)
            b = seq.boxes[i]
            if b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
                raise BadSampleError(f"{where}: box {b.tolist()} of frame {i} leaves the {w}x{h} image", "box")


def _decode_window(sample: dict, meta: dict, where: str, check: bool, problems: list[str] | None) -> Sequence:
    """A video window record -> Sequence with in-memory frames."""
    files = meta["files"]
    n = len(files)
    valid = np.asarray(meta["valid"], dtype=bool)
    if len(valid) != n or len(meta["boxes"]) != n:
        raise BadSampleError(f"{where}: {n} files but {len(valid)} valid flags and {len(meta['boxes'])} boxes")
    names = [files[i] or f"{i:06d}.absent" for i in range(n)]  # keys of unstored frames are never read
    fb = _frame_bytes(sample, [names[i] for i in np.flatnonzero(valid)], where, check, problems)
    valid &= np.array([nm in fb for nm in names], dtype=bool)  # a bad frame is lost, not the record
    c0, c1 = int(meta["core"][0]), int(meta["core"][1])
    if not valid[c0:c1].any():
        raise BadSampleError(f"{where}: no usable frame left in the record (every core frame missing or bad)", "image")
    sizes = np.asarray(meta["frame_sizes"], dtype=np.int64) if meta.get("frame_sizes") else None
    seq = Sequence(name=meta["name"], dataset=meta["dataset"], frames=names, boxes=_boxes(meta["boxes"], where),
                   valid=valid, frame_size=tuple(meta["frame_size"]) if meta.get("frame_size") else None,
                   is_image=bool(meta["is_image"]), frame_bytes=fb, frame_sizes=sizes,
                   core=(c0, c1), offset=int(meta["offset"]),
                   weight=float(meta["weight"]))
    _validate_boxes(seq, where)
    return seq


def _decode_image(sample: dict, meta: dict, where: str, check: bool) -> list[Sequence]:
    """A COCO image record -> one Sequence per object, sharing the image bytes."""
    fb = _frame_bytes(sample, [meta["file"]], where, check, None)  # the image is the record
    size = tuple(meta["frame_size"]) if meta.get("frame_size") else None
    out = []
    for o in meta["objects"]:
        seq = Sequence(name=o["name"], dataset=meta["dataset"], frames=[meta["file"]], boxes=_boxes([o["box"]], where),
                       valid=np.array([True]), frame_size=size, is_image=True, frame_bytes=fb)
        _validate_boxes(seq, where)
        out.append(seq)
    return out


# ------------------------------------------------------------------------------------------
# Manifest
# ------------------------------------------------------------------------------------------
def write_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (a crash never leaves half a JSON)."""
    write_atomic(path, json.dumps(manifest, indent=1))


def _manifest_location(path: str | os.PathLike) -> str:
    """The manifest file of a shard folder, manifest path or folder URL."""
    p = str(path)
    if p.endswith(".json"):
        return p
    if is_url(p) or not Path(p).is_file():
        return join_url(p, MANIFEST)
    return p


def read_manifest(path: str | os.PathLike, reader: RangeReader | None = None) -> dict[str, Any]:
    """Load a manifest (a shard folder, the manifest file, or a folder URL) and check its format version."""
    loc = _manifest_location(path)
    try:
        text = (reader or RangeReader()).read_all(loc)
        m = json.loads(text)
    except FileNotFoundError:
        raise ShardLayoutError(f"{loc}: no shard manifest here (write shards with `lorat-scale make-shards`)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardLayoutError(f"{loc}: the manifest is not valid JSON ({e})") from None
    if m.get("format_version") != FORMAT_VERSION:
        raise ShardLayoutError(f"{loc}: shard format {m.get('format_version')}, this lorat_scale reads format "
                               f"{FORMAT_VERSION} (plain tars + member index); rewrite them with `lorat-scale make-shards`")
    return m


def shard_urls(manifest_path: str | os.PathLike, base: str | None = None) -> list[str]:
    """URLs of the finished shards of a manifest, relative to ``base`` (default: the manifest's folder)."""
    m = read_manifest(manifest_path)
    loc = _manifest_location(manifest_path)
    base = base if base is not None else loc.rsplit("/", 1)[0]
    return [join_url(base, s["name"]) for s in m["shards"] if s.get("done")]


def shard_counts(manifest_path: str | os.PathLike) -> dict[str, int]:
    """Shard file name -> number of items (Sequences) the stream yields from it, for finished shards."""
    return {s["name"]: s["items"] for s in read_manifest(manifest_path)["shards"] if s.get("done")}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_evenly(items: list[Any], sizes: list[int], target_bytes: int, min_shards: int = 1) -> list[list[Any]]:
    """Group items (in order) into shards of about ``target_bytes``, at least ``min_shards`` when possible."""
    total = sum(sizes)
    n = max(min_shards, math.ceil(total / max(target_bytes, 1)))
    n = min(n, len(items)) or 1
    per = total / n
    groups: list[list[Any]] = [[]]
    acc = 0.0
    for it, sz in zip(items, sizes):
        if groups[-1] and acc + sz / 2 > per * len(groups) and len(groups) < n:
            groups.append([])
        groups[-1].append(it)
        acc += sz
    return groups


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
def parse_readers(text: str | int) -> int:
    """Reader count from ``"64x8x4"`` (nodes x GPUs per node x loader workers per GPU) or a plain number."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if not parts or min(parts) < 1:
        raise ValueError(f"readers {text!r}: expected NODESxGPUSxWORKERS such as 64x8x4, or a positive number")
    return math.prod(parts)


# A planned record: ("win", (sequence, window, k), [position]) or ("img", [objects], [positions]); positions
# index the source's sequence list (the reader's order), which the index keeps.
Item = tuple[str, Any, list[int]]


def plan_records(seqs: list[Sequence], core: int = 400, margin: int = 0, seed: int = 0) -> list[Item]:
    """All records of a dataset in a seeded random order (windows of one sequence land in different shards)."""
    items: list[Item] = []
    if seqs and all(s.is_image for s in seqs):
        items = [("img", [seqs[i] for i in g], g) for g in group_images(seqs)]
    else:
        for p, s in enumerate(seqs):
            items += [("win", (s, w, k), [p]) for k, w in enumerate(plan_windows(s, core, margin))]
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def item_key(item: Item) -> str:
    """Stable identity of a planned record (for the resume plan hash)."""
    kind, x, _ = item
    if kind == "img":
        return f"img:{x[0].frames[0]}:{len(x)}"
    s, w, k = x
    return f"win:{s.key}:{w.lo}:{w.hi}:{w.core_lo}:{w.core_hi}"


def item_bytes(item: Item) -> int:
    """Approximate stored bytes of a planned record (frame file sizes)."""
    kind, x, _ = item
    paths = [x[0].frames[0]] if kind == "img" else [x[0].frames[x[1].lo + i]
                                                     for i in np.flatnonzero(x[0].valid[x[1].lo:x[1].hi])]
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_size
        except OSError:
            pass  # reported when the shard is written
    return total


def sidecar_name(shard_name: str) -> str:
    """File name of a shard's member-offset index: ``shard-000000.tar`` -> ``shard-000000.idx.npz``."""
    return shard_name[: -len(".tar")] + ".idx.npz" if shard_name.endswith(".tar") else shard_name + ".idx.npz"


def write_shard(path: str, items: list[Item]) -> dict[str, Any]:
    """Write one shard (to a temporary file, then renamed) and its member-offset sidecar; return its stats."""
    with atomic_path(path) as tmp:
        return _write_shard_file(str(tmp), path, items)


def _write_shard_file(tmp: str, path: str, items: list[Item]) -> dict[str, Any]:
    """The shard's tar at ``tmp`` (renamed to ``path`` by the caller) and its sidecar beside ``path``."""
    import webdataset as wds

    missing: list[str] = []
    records = frames = items_out = 0
    names = set()
    rows: list[tuple[int, int, str, int]] = []  # (sequence position, frame, member name, crc32) of core frames
    # TarWriter (not ShardWriter): shard contents are planned up front so that a resumed run
    # rewrites exactly the unfinished shards; ShardWriter only rolls over sequentially.
    with open(tmp, "wb") as raw:
        hw = _HashingWriter(raw)
        writer = wds.TarWriter(hw, encoder=False, mtime=0.0)  # mtime 0: byte-identical reruns
        for kind, x, pos in items:
            rec, miss = encode_image(x) if kind == "img" else encode_window(*x)
            missing += miss
            if not rec:
                continue
            writer.write(rec)
            records += 1
            items_out += len(x) if kind == "img" else 1  # sequences the stream yields for this record
            members = [k for k in rec if not k.startswith("_") and k != "json"]
            frames += len(members)
            names.add(x[0].key if kind == "win" else x[0].frames[0])
            for m in members:
                crc = zlib.crc32(rec[m])
                if kind == "img":
                    rows += [(p, 0, f"{rec['__key__']}.{m}", crc) for p in pos]
                else:
                    j = int(m.split(".")[0])
                    w = x[1]
                    if w.core_lo <= w.lo + j < w.core_hi:  # a margin frame is indexed from the record whose core has it
                        rows.append((pos[0], w.lo + j, f"{rec['__key__']}.{m}", crc))
        writer.close()
    # Member offsets from the finished tar (tarfile parses the headers webdataset wrote).
    with tarfile.open(tmp) as t:
        where = {m.name: (m.offset_data, m.size) for m in t.getmembers() if m.isfile()}
    side = {"seq": np.array([r[0] for r in rows], np.int64), "frame": np.array([r[1] for r in rows], np.int64),
            "offset": np.array([where[r[2]][0] for r in rows], np.int64),
            "nbytes": np.array([where[r[2]][1] for r in rows], np.int64),
            "crc32": np.array([r[3] for r in rows], np.uint32)}
    side_path = os.path.join(os.path.dirname(path), sidecar_name(os.path.basename(path)))
    with atomic_open(side_path, "wb") as f:
        np.savez(f, **side)
    # Verify the write: the file read back must hash as the bytes handed to it (a disk or NFS fault would not).
    sha = file_sha256(tmp)
    if sha != hw.sha.hexdigest():
        raise OSError(f"{tmp}: the bytes read back differ from those written (disk or file system fault); rerun")
    return {"records": records, "items": items_out, "frames": frames, "sequences": len(names),
            "bytes": os.path.getsize(tmp), "sha256": sha, "missing_frames": missing[:20],
            "num_missing": len(missing)}


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (to verify the shard once it is on disk)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:  # the ``with`` block closes the real file
        self.f.flush()


def _usable(seqs: list[Sequence]) -> tuple[list[Sequence], list[str]]:
    """Sequences with at least one frame and one valid frame, and a line for each one left out."""
    keep, dropped = [], []
    for s in seqs:
        if len(s) == 0:
            dropped.append(f"{s.key}: no frames (empty folder?)")
        elif not s.valid.any():
            dropped.append(f"{s.key}: no valid frame")
        else:
            keep.append(s)
    return keep, dropped


def make_shards(seqs: list[Sequence], out: str | os.PathLike, source: dict[str, Any], core: int = 400,
                margin: int = 0, shard_bytes: int = 1 << 30, readers: int | str = 1, num_workers: int = 1,
                seed: int = 0, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write ``seqs`` as shards + member index into ``out`` with a manifest; resumes an interrupted run.

    ``source`` describes the input (format, root, split, fingerprint) and is stored in the manifest.
    ``readers`` (``"64x8x4"`` or a number): the most readers that will stream these shards; at least that many
    shards are written (as many as there are records, if fewer). A shard recorded as done is kept only if
    its file still has the recorded size and sha256 and its sidecar index exists; every other shard (never
    started, left unfinished by a crash, or damaged since) is (re)written, byte-identically.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import webdataset  # noqa: F401 - imported once here (it loads torch: seconds) so forked workers inherit it
    from tqdm import tqdm

    out = Path(out)
    n_readers = parse_readers(readers)
    if core < 1 or margin < 0:
        raise ValueError(f"core={core} must be >= 1 and margin={margin} >= 0")
    seqs, dropped = _usable(seqs)
    if not seqs:
        raise ValueError(f"nothing to write into {out}: no sequence has a valid frame"
                         + (f" ({len(dropped)} left out, e.g. {dropped[0]})" if dropped else ""))
    out.mkdir(parents=True, exist_ok=True)
    items = plan_records(seqs, core, margin, seed)
    sizes = [item_bytes(it) for it in items]
    groups = split_evenly(items, sizes, shard_bytes, n_readers)
    group_bytes = []
    acc = 0
    for g in groups:  # planned bytes per shard, for the progress bar (split_evenly keeps the order)
        group_bytes.append(sum(sizes[acc:acc + len(g)]))
        acc += len(g)
    plan_hash = hashlib.sha256("\n".join("|".join(item_key(i) for i in g) for g in groups).encode()).hexdigest()
    mpath = out / MANIFEST
    old = None
    if mpath.is_file() and not overwrite:
        old = json.loads(mpath.read_text())
        if old.get("plan_hash") != plan_hash or old.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{mpath}: was written for a different source or settings (plan hash differs); "
                             "use a new --out folder or --overwrite")
    manifest = old or {
        "format_version": FORMAT_VERSION, "source": source,
        "layout": {"core": core, "margin": margin, "readers": n_readers,
                   # sequences cut into several records: only these need margins when streamed
                   "split_sequences": sum(1 for s in seqs if not s.is_image and len(s) > core + 2 * margin)},
        "seed": seed, "plan_hash": plan_hash, "num_shards": len(groups),
        "shards": [{"name": f"shard-{i:06d}.tar", "done": False} for i in range(len(groups))],
    }
    manifest["dropped"] = dropped
    manifest.pop("index", None)  # rewritten below from the shards that are done
    todo = []
    for i in range(len(groups)):
        s = manifest["shards"][i]
        p = out / s["name"]
        # Sizes alone would keep a shard whose bytes were damaged since: the sha256 decides.
        if (s.get("done") and p.is_file() and p.stat().st_size == s.get("bytes")
                and (out / sidecar_name(s["name"])).is_file() and file_sha256(p) == s.get("sha256")):
            continue
        s["done"] = False
        todo.append(i)
    write_manifest(mpath, manifest)
    bar = tqdm(total=sum(group_bytes), initial=sum(group_bytes) - sum(group_bytes[i] for i in todo), unit="B",
               unit_scale=True, disable=not progress, desc=f"shards -> {out}")
    if num_workers <= 1:
        for i in todo:
            _finish(manifest, mpath, i, write_shard(str(out / manifest["shards"][i]["name"]), groups[i]), bar,
                    group_bytes[i])
    else:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            futs = {pool.submit(write_shard, str(out / manifest["shards"][i]["name"]), groups[i]): i for i in todo}
            for fut in as_completed(futs):
                i = futs[fut]
                _finish(manifest, mpath, i, fut.result(), bar, group_bytes[i])
    bar.close()
    done = [s for s in manifest["shards"] if s.get("done")]
    manifest["totals"] = {k: sum(s[k] for s in done) for k in ("records", "items", "frames", "bytes", "num_missing")}
    # A sequence split into windows spans several shards: count distinct sequences of the plan.
    manifest["totals"]["sequences"] = len(seqs)
    manifest["totals"]["shards"] = len(done)
    manifest["index"] = write_index(out, seqs, manifest)
    write_manifest(mpath, manifest)
    return manifest


def _finish(manifest: dict, mpath: Path, i: int, stats: dict, bar: Any, nbytes: int) -> None:
    """Record a finished shard in the manifest right away (this is what makes the run resumable)."""
    manifest["shards"][i].update(stats, done=True)
    write_manifest(mpath, manifest)
    bar.update(nbytes)


def _blob(strings: list[str]) -> np.ndarray:
    """Strings as one uint8 array (newline-joined): compact, and loadable without pickle."""
    return np.frombuffer("\n".join(strings).encode(), dtype=np.uint8)


def _unblob(a: np.ndarray) -> list[str]:
    return a.tobytes().decode().split("\n")


def write_index(out: Path, seqs: list[Sequence], manifest: dict[str, Any]) -> dict[str, Any]:
    """Merge the shard sidecars into ``index.npz`` (every sequence, reader order); return its manifest entry.

    A frame that could not be read when the shards were written is not stored: it becomes invalid here.
    Sequences left with no valid frame are not indexed (named in ``manifest["dropped"]``).
    """
    lens = np.array([len(s) for s in seqs], np.int64)
    start = np.concatenate([[0], np.cumsum(lens)])
    n = int(start[-1])
    shard = np.full(n, -1, np.int32)
    offset = np.zeros(n, np.int64)
    nbytes = np.zeros(n, np.int64)
    crc = np.zeros(n, np.uint32)
    if any(not s.get("done") for s in manifest["shards"]):
        raise ValueError(f"{out}: unfinished shards; the index is written once every shard is done")
    for i, s in enumerate(manifest["shards"]):
        with np.load(out / sidecar_name(s["name"])) as side:
            g = start[side["seq"]] + side["frame"]
            shard[g], offset[g], nbytes[g], crc[g] = i, side["offset"], side["nbytes"], side["crc32"]
    valid = np.concatenate([s.valid for s in seqs]) & (shard >= 0)
    per_seq = np.add.reduceat(valid, start[:-1]) if n else np.zeros(0, np.int64)
    keep = np.flatnonzero(per_seq > 0)
    for p in np.flatnonzero(per_seq == 0):
        manifest["dropped"].append(f"{seqs[p].key}: none of its valid frames could be read")
    frame_wh = np.zeros((n, 2), np.int32)
    for p, s in enumerate(seqs):
        if s.frame_sizes is not None:
            frame_wh[start[p]:start[p + 1]] = np.asarray(s.frame_sizes)
    sel = np.concatenate([np.arange(start[p], start[p + 1]) for p in keep]) if len(keep) else np.zeros(0, np.int64)
    kept = [seqs[p] for p in keep]
    arrays = {
        "seq_start": np.concatenate([[0], np.cumsum(lens[keep])]),
        "seq_name": _blob([s.name for s in kept]), "seq_dataset": _blob([s.dataset for s in kept]),
        "seq_is_image": np.array([s.is_image for s in kept], bool),
        "seq_size": np.array([list(s.frame_size) if s.frame_size else [0, 0] for s in kept], np.int32).reshape(-1, 2),
        "seq_per_frame_size": np.array([s.frame_sizes is not None for s in kept], bool),
        "boxes": np.concatenate([s.boxes for s in seqs])[sel] if n else np.zeros((0, 4)),
        "valid": valid[sel], "frame_wh": frame_wh[sel],
        "shard": shard[sel], "offset": offset[sel], "nbytes": nbytes[sel], "crc32": crc[sel],
    }
    with atomic_open(out / INDEX, "wb") as f:
        np.savez(f, **arrays)
    return {"file": INDEX, "sha256": file_sha256(out / INDEX), "sequences": len(kept), "frames": int(len(sel)),
            "valid_frames": int(valid[sel].sum()), "stored_frames": int((shard[sel] >= 0).sum())}


# ------------------------------------------------------------------------------------------
# Random-access reading
# ------------------------------------------------------------------------------------------
class IndexedFrames(Seq):
    """Frame names of an indexed shard sequence, made on demand (millions of frames: no list of strings)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [f"frame {j}" for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"frame {i % self.n}"


class ShardStore:
    """Reads the frames of indexed shard sequences: one range read per frame, crc32-checked (``Sequence.store``)."""

    def __init__(self, urls: list[str], policy: RetryPolicy | None = None, verify: bool = True) -> None:
        self.urls, self.verify = list(urls), verify
        self.reader = RangeReader(policy)

    def read_frame(self, seq: Sequence, i: int) -> bytes:
        """Encoded bytes of frame ``i`` of ``seq``; BadImageError (data damage) or StorageError (unreachable)."""
        e = seq.extra
        sh = int(e["shard"][i])
        if sh < 0:
            raise BadImageError(f"{seq.key} frame {i}: not in the shards (unreadable when they were written)")
        off, n = int(e["offset"][i]), int(e["nbytes"][i])
        data = self.reader.read(self.urls[sh], off, n)
        if self.verify and zlib.crc32(data) != int(e["crc32"][i]):
            raise BadImageError(f"{self.urls[sh]}: bytes {off}-{off + n - 1} ({seq.key} frame {i}): crc32 mismatch, "
                                "the shard is damaged")
        return data


def _split_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
    """``MANIFEST[::BASE_URL]`` -> (manifest location, shard base or None)."""
    path, sep, base = str(spec).partition("::")
    return path, (base if sep else None)


def load_shards(spec: str | os.PathLike, policy: RetryPolicy | None = None, verify_frames: bool = True,
                max_frame_gap: int | None = None) -> list[Sequence]:
    """The sequences of a shard source for random-access sampling, in the reader's order.

    ``spec``: a shard folder, its manifest, a folder URL (``http://host/shards/lasot``), or ``MANIFEST::BASE``
    (manifest here, shards at ``BASE``). Refuses unfinished shards, an index that does not match the manifest
    (checksum or counts) and an older format, naming the file and what to do.
    """
    where, base = _split_spec(spec)
    reader = RangeReader(policy)
    m = read_manifest(where, reader)
    loc = _manifest_location(where)
    folder = loc.rsplit("/", 1)[0] if "/" in loc else "."
    undone = [s["name"] for s in m["shards"] if not s.get("done")]
    if undone or "index" not in m:
        raise ShardLayoutError(f"{loc}: {len(undone)} of {len(m['shards'])} shards unfinished (e.g. {undone[:1]}) or "
                               "no index: rerun the same make-shards command to complete them")
    raw = reader.read_all(join_url(folder, m["index"]["file"]))
    if hashlib.sha256(raw).hexdigest() != m["index"]["sha256"]:
        raise ShardLayoutError(f"{join_url(folder, m['index']['file'])}: sha256 differs from the manifest's "
                               "index.sha256 (damaged or from another write): rerun make-shards")
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    _check_counts(m, a, loc)
    urls = [join_url(base if base is not None else folder, s["name"]) for s in m["shards"]]
    store = ShardStore(urls, policy, verify_frames)
    names, datasets = _unblob(a["seq_name"]), _unblob(a["seq_dataset"])
    start = a["seq_start"]
    out = []
    for p in range(len(start) - 1):
        sl = slice(int(start[p]), int(start[p + 1]))
        w, h = (int(v) for v in a["seq_size"][p])
        out.append(Sequence(
            name=names[p], dataset=datasets[p], frames=IndexedFrames(sl.stop - sl.start), boxes=a["boxes"][sl],
            valid=a["valid"][sl], frame_size=(w, h) if w > 0 else None, is_image=bool(a["seq_is_image"][p]),
            frame_sizes=a["frame_wh"][sl] if a["seq_per_frame_size"][p] else None,
            extra={"shard": a["shard"][sl], "offset": a["offset"][sl], "nbytes": a["nbytes"][sl],
                   "crc32": a["crc32"][sl]},
            annotation=loc, store=store))
    return out


def _check_counts(m: dict[str, Any], a: dict[str, np.ndarray], loc: str) -> None:
    """Refuse a manifest whose counts disagree with the index it names (hand-edited or mixed-up folders)."""
    idx = m["index"]
    n_seq = len(a["seq_start"]) - 1
    stored = a["shard"] >= 0
    got = {"index.sequences": n_seq, "index.frames": int(len(a["valid"])),
           "index.valid_frames": int(a["valid"].sum()), "index.stored_frames": int(stored.sum())}
    # Frames stored per shard (a COCO image shared by several objects counts once).
    keys = np.unique(a["shard"][stored].astype(np.int64) << 40 | a["offset"][stored])
    per_shard = np.bincount(keys >> 40, minlength=len(m["shards"])) if len(keys) else np.zeros(len(m["shards"]), int)
    bad = [f"{k}: manifest says {idx.get(k.split('.')[1])}, the index holds {v}" for k, v in got.items()
           if idx.get(k.split(".")[1]) != v]
    bad += [f"shards[{i}].frames ({s['name']}): manifest says {s.get('frames')}, the index holds {int(per_shard[i])}"
            for i, s in enumerate(m["shards"]) if s.get("frames") != int(per_shard[i])]
    if m.get("totals", {}).get("frames") != sum(s.get("frames", 0) for s in m["shards"]):
        bad.append(f"totals.frames: {m.get('totals', {}).get('frames')} is not the sum over the shards")
    if bad:
        raise ShardLayoutError(f"{loc}: the manifest does not match its index ({'; '.join(bad[:4])}): the folder was "
                               "edited or mixed with another write; rerun make-shards (or --overwrite)")


def verify_shards(spec: str | os.PathLike, progress: bool = True) -> list[str]:
    """Check a shard source end to end: manifest, index, every shard's size and sha256; returns the problems."""
    from tqdm import tqdm

    where, base = _split_spec(spec)
    reader = RangeReader()
    try:
        load_shards(spec)  # manifest, index checksum and counts
        m = read_manifest(where, reader)
    except (ShardLayoutError, StorageError) as e:
        return [str(e)]
    loc = _manifest_location(where)
    folder = base if base is not None else (loc.rsplit("/", 1)[0] if "/" in loc else ".")
    problems = []
    for s in tqdm(m["shards"], unit="shard", disable=not progress, desc=f"sha256 {folder}"):
        url = join_url(folder, s["name"])
        if not is_url(url):  # local: hash in blocks (shards are ~1 GB)
            if not Path(url).is_file():
                problems.append(f"{url}: missing shard file")
            elif Path(url).stat().st_size != s["bytes"]:
                problems.append(f"{url}: {Path(url).stat().st_size} bytes, the manifest says {s['bytes']} (truncated "
                                "or replaced)")
            elif file_sha256(url) != s["sha256"]:
                problems.append(f"{url}: sha256 differs from the manifest (bytes changed since writing)")
            continue
        try:
            data = reader.read_all(url)
        except FileNotFoundError:
            problems.append(f"{url}: missing shard file")
            continue
        except StorageError as e:
            problems.append(str(e))
            continue
        if len(data) != s["bytes"]:
            problems.append(f"{url}: {len(data)} bytes, the manifest says {s['bytes']} (truncated or replaced)")
        elif hashlib.sha256(data).hexdigest() != s["sha256"]:
            problems.append(f"{url}: sha256 differs from the manifest (bytes changed since writing)")
    return problems
