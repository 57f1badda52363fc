"""Shards: webdataset tar files of sequence windows, their manifest, and record decoding.

One shard **record** (a webdataset sample) is one window of one sequence:

* ``core`` = up to ``core`` (default 400) consecutive frames that may serve as the template frame, plus
  ``margin`` context frames before and after (``margin >= max_frame_gap``), so every search frame
  the exact LoRAT rule can pick (any valid frame within +-gap of the template) is in the record.
  A sequence no longer than ``core + 2*margin`` is one record (no duplicated frames).
* Only valid frames' bytes are stored (invalid frames can never be sampled); they are the
  **original** JPEG/PNG bytes (no re-encoding: decoding stays byte-identical to the source).
* ``<key>.json`` holds boxes (xyxy, null where unannotated), valid flags, frame sizes, the core
  range, the window's offset in the sequence and ``weight`` = core valid frames / sequence valid
  frames. Picking a sequence uniformly then a record with probability ``weight`` then a template
  uniformly in the core reproduces "template uniform among the sequence's valid frames".
* COCO: one record per image, holding the image once and every object's box (``objects``); the
  stream turns it into one one-frame Sequence per object.

Tar member names: ``<key>.<i:06d>.<ext>`` for frame i of the window and ``<key>.json``.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .sequence import Sequence

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BadSampleError(ValueError):
    """A shard record is unusable; the message names the shard URL and the record key.

    ``kind`` is "image" (corrupt/truncated frame bytes), "box" (NaN or out-of-image box) or
    "record" (missing members, bad JSON): the stream counts them separately.
    """

    def __init__(self, msg: str, kind: str = "record"):
        super().__init__(msg)
        self.kind = kind


@dataclass(frozen=True)
class Window:
    """Frames [lo, hi) of a sequence stored in one record; [core_lo, core_hi) may be templates."""

    lo: int
    hi: int
    core_lo: int
    core_hi: int


def plan_windows(seq: Sequence, core: int = 400, margin: int = 100) -> list[Window]:
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


def encode_window(seq: Sequence, w: Window, k: int) -> tuple[dict[str, Any], list[str]]:
    """The record of window ``w`` (number ``k``) of ``seq``; returns (record, missing frame files).

    Frames that cannot be read are marked invalid in the record and reported, so one missing
    file does not lose the sequence.
    """
    key = safe_key(f"{seq.dataset}-{seq.name}-w{k:04d}")
    valid = seq.valid[w.lo:w.hi].copy()
    rec: dict[str, Any] = {"__key__": key}
    missing = []
    for i in np.flatnonzero(valid):
        src = seq.frames[w.lo + i]
        ext = os.path.splitext(src)[1].lstrip(".").lower() or "jpg"
        try:
            with open(src, "rb") as f:
                rec[f"{i:06d}.{ext}"] = f.read()
        except OSError:
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
        "files": [f"{i:06d}.{os.path.splitext(seq.frames[w.lo + i])[1].lstrip('.').lower() or 'jpg'}"
                  if valid[i] else None for i in range(w.hi - w.lo)],
    }
    rec["json"] = json.dumps(meta).encode()
    return rec, missing


def encode_image(objs: list[Sequence]) -> tuple[dict[str, Any], list[str]]:
    """One COCO-style record: the image once plus every object's box (all share ``frames[0]``)."""
    first = objs[0]
    src = first.frames[0]
    ext = os.path.splitext(src)[1].lstrip(".").lower() or "jpg"
    key = safe_key(f"{first.dataset}-{Path(src).stem}")
    try:
        with open(src, "rb") as f:
            data = f.read()
    except OSError:
        return {}, [src]
    meta = {"format_version": FORMAT_VERSION, "dataset": first.dataset, "is_image": True,
            "frame_size": list(first.frame_size) if first.frame_size else None, "file": f"000000.{ext}",
            "objects": [{"name": s.name, "box": s.boxes[0].tolist()} for s in objs]}
    return {"__key__": key, f"000000.{ext}": data, "json": json.dumps(meta).encode()}, []


def group_images(seqs: list[Sequence]) -> list[list[Sequence]]:
    """Group one-frame objects by image file (COCO: one record per image)."""
    groups: dict[str, list[Sequence]] = {}
    for s in seqs:
        groups.setdefault(s.frames[0], []).append(s)
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


def decode_record(sample: dict[str, Any], check_images: bool = True) -> list[Sequence]:
    """A webdataset sample (dict of raw bytes) -> Sequences (one, or one per COCO object).

    Raises BadSampleError naming shard and key when the JSON is missing or malformed, a valid
    frame's bytes are missing or not an image, or a valid frame's box is not finite/inside.
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
        return [_decode_window(sample, meta, where, check_images)]
    except (KeyError, TypeError, IndexError) as e:
        raise BadSampleError(f"{where}: malformed metadata ({type(e).__name__}: {e})") from e


def _frame_bytes(sample: dict[str, Any], names: list[str], where: str, check: bool) -> dict[str, bytes]:
    """The named members of a record, checked."""
    out = {}
    for n in names:
        data = sample.get(n)
        if data is None:
            raise BadSampleError(f"{where}: frame {n} missing (truncated shard?)")
        if check:
            _check_image_bytes(data, f"{where}/{n}")
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


def _decode_window(sample: dict, meta: dict, where: str, check: bool) -> Sequence:
    """A video window record -> Sequence with in-memory frames."""
    files = meta["files"]
    n = len(files)
    valid = np.asarray(meta["valid"], dtype=bool)
    if len(valid) != n or len(meta["boxes"]) != n:
        raise BadSampleError(f"{where}: {n} files but {len(valid)} valid flags and {len(meta['boxes'])} boxes")
    names = [files[i] or f"{i:06d}.absent" for i in range(n)]  # keys of unstored frames are never read
    fb = _frame_bytes(sample, [names[i] for i in np.flatnonzero(valid)], where, check)
    sizes = np.asarray(meta["frame_sizes"], dtype=np.int64) if meta.get("frame_sizes") else None
    seq = Sequence(name=meta["name"], dataset=meta["dataset"], frames=names, boxes=_boxes(meta["boxes"], where),
                   valid=valid, frame_size=tuple(meta["frame_size"]) if meta.get("frame_size") else None,
                   is_image=bool(meta["is_image"]), frame_bytes=fb, frame_sizes=sizes,
                   core=(int(meta["core"][0]), int(meta["core"][1])), offset=int(meta["offset"]),
                   weight=float(meta["weight"]))
    _validate_boxes(seq, where)
    return seq


def _decode_image(sample: dict, meta: dict, where: str, check: bool) -> list[Sequence]:
    """A COCO image record -> one Sequence per object, sharing the image bytes."""
    fb = _frame_bytes(sample, [meta["file"]], where, check)
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
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Load a manifest (a shard folder or the manifest file) and check its format version."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    m = json.loads(path.read_text())
    if m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {m.get('format_version')}, expected {FORMAT_VERSION}")
    return m


def shard_urls(manifest_path: str | os.PathLike, base: str | None = None) -> list[str]:
    """URLs of the finished shards of a manifest, relative to ``base`` (default: the manifest's folder)."""
    m = read_manifest(manifest_path)
    p = Path(manifest_path)
    base = base if base is not None else str(p if p.is_dir() else p.parent)
    return [f"{base.rstrip('/')}/{s['name']}" for s in m["shards"] if s.get("done")]


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
def plan_records(seqs: list[Sequence], core: int = 400, margin: int = 100,
                 seed: int = 0) -> list[tuple[str, Any]]:
    """All records of a dataset as ("win", (seq, window, k)) or ("img", [objects]), in a seeded random order.

    The order is shuffled once here so that windows of one sequence land in different shards
    and a small stream shuffle buffer suffices.
    """
    items: list[tuple[str, Any]] = []
    if seqs and all(s.is_image for s in seqs):
        items = [("img", g) for g in group_images(seqs)]
    else:
        for s in seqs:
            items += [("win", (s, w, k)) for k, w in enumerate(plan_windows(s, core, margin))]
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def item_key(item: tuple[str, Any]) -> str:
    """Stable identity of a planned record (for the resume plan hash)."""
    kind, x = item
    if kind == "img":
        return f"img:{x[0].frames[0]}:{len(x)}"
    s, w, k = x
    return f"win:{s.key}:{w.lo}:{w.hi}:{w.core_lo}:{w.core_hi}"


def item_bytes(item: tuple[str, Any]) -> int:
    """Approximate stored bytes of a planned record (frame file sizes)."""
    kind, x = item
    paths = [x[0].frames[0]] if kind == "img" else [x[0].frames[x[1].lo + i]
                                                     for i in np.flatnonzero(x[0].valid[x[1].lo:x[1].hi])]
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_size
        except OSError:
            pass  # reported when the shard is written
    return total


def write_shard(path: str, items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Write one shard (via ``<path>.partial`` then rename) with webdataset's TarWriter; return its stats."""
    import webdataset as wds

    tmp = path + ".partial"
    missing: list[str] = []
    records = frames = items_out = 0
    names = set()
    # TarWriter (not ShardWriter): shard contents are planned up front so that a resumed run
    # rewrites exactly the unfinished shards; ShardWriter only rolls over sequentially.
    with open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0.0)  # mtime 0: byte-identical reruns
        for kind, x in items:
            rec, miss = encode_image(x) if kind == "img" else encode_window(*x)
            missing += miss
            if not rec:
                continue
            writer.write(rec)
            records += 1
            items_out += len(x) if kind == "img" else 1  # sequences the stream yields for this record
            frames += sum(1 for k in rec if not k.startswith("_") and k != "json")
            names.add(x[0].key if kind == "win" else x[0].frames[0])
        writer.close()
    os.replace(tmp, path)
    return {"records": records, "items": items_out, "frames": frames, "sequences": len(names), "bytes": os.path.getsize(path),
            "sha256": file_sha256(path), "missing_frames": missing[:20], "num_missing": len(missing)}


def make_shards(seqs: list[Sequence], out: str | os.PathLike, source: dict[str, Any], core: int = 400,
                margin: int = 100, shard_bytes: int = 1 << 30, min_shards: int = 1, workers: int = 1,
                seed: int = 0, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write ``seqs`` as shards into ``out`` with a manifest; resumes an interrupted run.

    ``source`` describes the input (format, root, split, fingerprint) and is stored in the manifest.
    A shard recorded as done whose file still has the recorded size is kept; every other shard
    (never started, or left as ``.partial`` by a crash) is (re)written.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import webdataset  # noqa: F401 - imported once here (it loads torch: seconds) so forked workers inherit it
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = plan_records(seqs, core, margin, seed)
    if not items:
        raise ValueError(f"no records to write into {out}: the source has no sequence with a valid frame")
    groups = split_evenly(items, [item_bytes(it) for it in items], shard_bytes, min_shards)
    plan_hash = hashlib.sha256("\n".join("|".join(item_key(i) for i in g) for g in groups).encode()).hexdigest()
    mpath = out / MANIFEST
    old = None
    if mpath.is_file() and not overwrite:
        old = json.loads(mpath.read_text())
        if old.get("plan_hash") != plan_hash or old.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{mpath}: was written for a different source or settings (plan hash differs); "
                             "use a new --out folder or --overwrite")
    manifest = old or {
        "format_version": FORMAT_VERSION, "source": source, "core": core, "margin": margin, "seed": seed,
        "plan_hash": plan_hash, "num_shards": len(groups),
        "shards": [{"name": f"shard-{i:06d}.tar", "done": False} for i in range(len(groups))],
    }
    todo = []
    for i, g in enumerate(groups):
        s = manifest["shards"][i]
        p = out / s["name"]
        if s.get("done") and p.is_file() and p.stat().st_size == s.get("bytes"):
            continue
        s["done"] = False
        todo.append(i)
    write_manifest(mpath, manifest)
    bar = tqdm(total=len(groups), initial=len(groups) - len(todo), unit="shard", disable=not progress,
               desc=f"shards -> {out}")
    if workers <= 1:
        results = ((i, write_shard(str(out / manifest["shards"][i]["name"]), groups[i])) for i in todo)
        for i, st in results:
            _finish(manifest, mpath, i, st, bar)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futs = {pool.submit(write_shard, str(out / manifest["shards"][i]["name"]), groups[i]): i for i in todo}
            for fut in as_completed(futs):
                _finish(manifest, mpath, futs[fut], fut.result(), bar)
    bar.close()
    done = [s for s in manifest["shards"] if s.get("done")]
    manifest["totals"] = {k: sum(s[k] for s in done) for k in ("records", "items", "frames", "bytes", "num_missing")}
    # A sequence split into windows spans several shards: count distinct sequences of the plan.
    manifest["totals"]["sequences"] = len({x[0].key if k == "win" else x[0].frames[0] for k, x in items})
    manifest["totals"]["shards"] = len(done)
    write_manifest(mpath, manifest)
    return manifest


def _finish(manifest: dict, mpath: Path, i: int, stats: dict, bar: Any) -> None:
    """Record a finished shard in the manifest right away (this is what makes the run resumable)."""
    manifest["shards"][i].update(stats, done=True)
    write_manifest(mpath, manifest)
    bar.update(1)
