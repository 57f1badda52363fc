"""Training-pair throughput per CPU core: raw dataset folders vs in-memory shards, 224 and 378.

    .venv/bin/python scripts/bench_data.py [--data ../shared/data] [--pairs 300] [--decoders]

Single process, one torch/OpenCV thread; times are this process's CPU time (time.process_time), so the
figures are pairs per second per core even on a shared machine. Sources are the
shared sample data (LaSOT airplane-1, OTB Crossing, COCO128), mixed with equal weights as in LoRAT.
(a) "raw": frames read from the dataset folders on every pair. (b) "shards": the sources written as
lorat_scale shards (lorat_scale.data.shards, into a temporary folder), every record streamed once
with ShardStream (its CPU time is included), pairs sampled from the streamed in-memory sequences.
The last line is ``pairs/s/core 224 shards: N``.
"""
from __future__ import annotations

import argparse
import glob
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from lorat_scale import paths
from lorat_scale.boxes import xywh_to_xyxy
from lorat_scale.config import DataConfig
from lorat_scale.data import augment, crop, pairs
from lorat_scale.data.decode import decode_image, decode_image_pil
from lorat_scale.data.sequence import Sequence

VARIANTS = {224: (112, 224, 4.0), 378: (196, 378, 5.0)}


def read_sources(data: Path) -> list[list[Sequence]]:
    """LaSOT, OTB and COCO sample sequences (one source each)."""
    from lorat_scale.data.readers import coco, lasot

    las = lasot.read(data / "lasot", split="all")
    root = data / "otb" / "Crossing"  # no OTB reader in lorat_scale (not a training set): parse here
    lines = (root / "groundtruth_rect.txt").read_text().splitlines()
    rows = [[float(v) for v in re.split(r"[,\s]+", ln.strip())] for ln in lines if ln.strip()]
    frames = sorted(glob.glob(str(root / "img" / "*.jpg")))
    otb = Sequence("Crossing", "otb", frames, xywh_to_xyxy(np.array(rows)), np.ones(len(frames), bool), (360, 240))
    coc = coco.read(data / "det" / "coco128", split="train2017")
    return [las, [otb], coc]


def counting_loader(counter: dict) -> pairs.FrameLoader:
    """pairs.load_frame that also counts encoded bytes, frames and decode time."""

    def load(seq: Sequence, i: int) -> np.ndarray:
        t0 = time.process_time()
        data = seq.read_bytes(i)
        img = decode_image(data)
        counter["decode"] += time.process_time() - t0
        counter["bytes"] += len(data)
        counter["frames"] += 1
        return img

    return load


def run_pairs(ds: pairs.PairDataset, n: int, repeats: int = 1) -> float:
    """CPU seconds of this process to produce pairs 0..n-1 of ``ds``; the best of ``repeats`` runs.

    CPU time (not wall time) and the best run keep the figure per core on a shared, loaded machine.
    """
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(n):
            ds[i]
        best = min(best, time.process_time() - t0)
    return best


def breakdown(ds: pairs.PairDataset, n: int, counter: dict) -> dict[str, float]:
    """ms per pair spent in decode / crop / augment / labels / other (timers wrapped around the stages)."""
    timed = defaultdict(float)
    orig = {"crop_image": crop.crop_image, "image_mean": crop.image_mean, "augment_pair": augment.augment_pair,
            "cell_mask": pairs.cell_mask}
    stage = {"crop_image": "crop", "image_mean": "crop", "augment_pair": "augment", "cell_mask": "labels"}

    def wrap(name):
        fn = orig[name]

        def w(*a, **k):
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                timed[stage[name]] += time.process_time() - t0

        return w

    crop.crop_image, crop.image_mean = wrap("crop_image"), wrap("image_mean")
    augment.augment_pair, pairs.cell_mask = wrap("augment_pair"), wrap("cell_mask")
    counter["decode"] = 0.0
    try:
        total = run_pairs(ds, n)
    finally:
        crop.crop_image, crop.image_mean = orig["crop_image"], orig["image_mean"]
        augment.augment_pair, pairs.cell_mask = orig["augment_pair"], orig["cell_mask"]
    timed["decode"] = counter["decode"]
    timed["other (sampling, jitter params, I/O)"] = total - sum(timed.values())
    return {k: v / n * 1e3 for k, v in timed.items()}


def write_real_shards(sources: list[list[Sequence]], out: Path) -> list[Path]:
    """Write each source with lorat_scale.data.shards (webdataset tars + manifest); return the manifests."""
    from lorat_scale.data.shards import make_shards

    manifests = []
    for d, src in enumerate(sources):
        make_shards(src, out / f"src{d}", {"format": src[0].dataset}, progress=False)
        manifests.append(out / f"src{d}" / "manifest.json")
    return manifests


def stream_real_shards(manifests: list[Path], cfg: DataConfig) -> tuple[list[list[Sequence]], int]:
    """Stream every record once with lorat_scale.data.stream.ShardStream; (sources, shard bytes read)."""
    from lorat_scale.data.stream import ShardStream

    sources, nbytes = [], 0
    for m in manifests:
        stream = ShardStream.from_manifest(str(m), cfg=cfg, shuffle=False, worker_info=(0, 1, 0, 1))
        sources.append(list(stream))
        nbytes += sum(f.stat().st_size for f in m.parent.glob("*.tar"))
    return sources, nbytes


def compare_decoders(sources: list[list[Sequence]], n: int = 60) -> None:
    """ms per frame and byte-identity with Pillow for each available JPEG decoder."""
    from torchvision.io import ImageReadMode, decode_jpeg

    rng = np.random.default_rng(0)
    blobs = []
    for src in sources:
        for _ in range(n // len(sources)):
            seq = src[rng.integers(len(src))]
            blobs.append(seq.read_bytes(int(rng.integers(len(seq)))))
    cv_flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION  # Pillow ignores EXIF rotation too
    decoders = {
        "pil": decode_image_pil,
        "torchvision.io.decode_jpeg": lambda b: decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8),
                                                            mode=ImageReadMode.RGB).permute(1, 2, 0).numpy(),
        "opencv imdecode": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv_flags),
        "decode_image (chosen)": decode_image,
    }
    import simplejpeg  # a dependency: decode_image's strict JPEG decoder

    decoders["simplejpeg alone"] = lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB")
    ref = [decode_image_pil(b) for b in blobs]
    for name, fn in decoders.items():
        same = sum(np.array_equal(fn(b), r) for b, r in zip(blobs, ref))
        t0 = time.process_time()
        for _ in range(3):
            for b in blobs:
                fn(b)
        dt = (time.process_time() - t0) / (3 * len(blobs)) * 1e3
        print(f"  {name:28s} {dt:6.2f} ms/frame   identical to PIL on {same}/{len(blobs)} frames")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=paths.shared_data())
    p.add_argument("--pairs", type=int, default=300, help="pairs timed per case")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case; the best counts")
    p.add_argument("--decoders", action="store_true", help="also compare JPEG decoders")
    args = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if not args.data.is_dir():
        sys.exit(f"sample data not found at {args.data} (pass --data or set LORAT_SHARED)")

    raw = read_sources(args.data)
    print(f"sources: {', '.join(f'{s[0].dataset} ({len(s)} seq)' for s in raw)}; {args.pairs} pairs per case "
          f"(best of {args.repeats}), 1 thread, CPU time")
    if args.decoders:
        print("JPEG decoders (random sample frames):")
        compare_decoders(raw)

    tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
    t0 = time.perf_counter()
    manifests = write_real_shards(raw, Path(tmp.name))
    print(f"shards written with lorat_scale.data.shards in {time.perf_counter() - t0:.1f} s")

    results = {}
    for res, (tz, tx, factor) in VARIANTS.items():
        cfg = DataConfig(pairs_per_epoch=args.pairs, search_area_factor=factor, seed=0)
        # (a) raw folders
        counter = defaultdict(float)
        ds = pairs.PairDataset(raw, cfg, tz, tx, load_frame=counting_loader(counter))
        run_pairs(ds, min(20, args.pairs))  # warm-up (allocator, first-call costs)
        for k in ("bytes", "frames"):
            counter[k] = 0
        ds.set_epoch(1)
        dt = run_pairs(ds, args.pairs, args.repeats)
        results[(res, "raw")] = args.pairs / dt
        n = args.pairs * args.repeats  # pairs the counter saw
        print(f"\n[{res}] raw folders: {args.pairs / dt:7.1f} pairs/s/core   "
              f"{counter['bytes'] / n / 1e3:.1f} kB read per pair ({counter['frames'] / n:.2f} frames)")
        ds.set_epoch(2)
        parts = breakdown(ds, args.pairs, counter)
        print("  breakdown (ms/pair): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
              + f"; total {sum(parts.values()):.2f}")
        # (b) shards: stream every record once, then sample pairs from the streamed sequences.
        # Best of 3 passes, like the pair timings: the first pass also pays one-off imports.
        t_stream = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            streamed, shard_bytes = stream_real_shards(manifests, cfg)
            t_stream = min(t_stream, time.process_time() - t0)
        counter = defaultdict(float)
        ds = pairs.PairDataset(streamed, cfg, tz, tx, load_frame=counting_loader(counter))
        run_pairs(ds, min(20, args.pairs))
        for k in ("bytes", "frames"):
            counter[k] = 0
        ds.set_epoch(1)
        dt_pairs = run_pairs(ds, args.pairs, args.repeats)
        dt = dt_pairs + t_stream
        results[(res, "shards")] = args.pairs / dt
        print(f"[{res}] shards:      {args.pairs / dt:7.1f} pairs/s/core   "
              f"{counter['bytes'] / n / 1e3:.1f} kB of JPEG decoded per pair; all shards "
              f"({shard_bytes / 1e6:.1f} MB) streamed once = {shard_bytes / args.pairs / 1e3:.0f} kB of shard "
              f"read per pair at this run's length")
        ds.set_epoch(2)
        parts = breakdown(ds, args.pairs, counter)
        parts = {"stream (ShardStream, all records)": t_stream / args.pairs * 1e3, **parts}
        print(f"  pair transform alone {args.pairs / dt_pairs:.1f} pairs/s/core; stream "
              f"{t_stream / (shard_bytes / 1e6) * 1e3:.1f} ms CPU per MB of shard")
        print("  breakdown (ms/pair): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
              + f"; total {sum(parts.values()):.2f}")
    tmp.cleanup()
    print()
    for res in VARIANTS:
        print(f"pairs/s/core {res} raw: {results[(res, 'raw')]:.1f}")
    print(f"pairs/s/core 378 shards: {results[(378, 'shards')]:.1f}")
    print(f"pairs/s/core 224 shards: {results[(224, 'shards')]:.1f}")


if __name__ == "__main__":
    main()
