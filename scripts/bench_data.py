"""Training-data throughput on the path training runs: raw folders vs. shards read by range (local and HTTP).

    .venv/bin/python scripts/bench_data.py [--data ../shared/data] [--pairs 240] [--decoders]

Every figure is measured in this run, on the training loop's own data path: ``build_dataset`` (the function
lorat_scale/train/loop.py calls) with ``format=root`` entries (raw folders) or ``shards=FOLDER`` entries (shards
written here with ``make_shards``, read by byte range), then ``dataset.epoch_loader(...)`` batches (micro-batch 8,
collate included) in this process (``num_workers=0``). Times are this process's CPU time (``time.process_time``), the
best of ``--repeats`` passes, so pairs/s are per core even on a shared machine; the load average is printed.

Cases: the sample frames (LaSOT airplane-1 640x360, OTB Crossing 360x240, COCO128 <=640x480; equal weights as in
LoRAT), 1280x720 frames (VOT ball1, small target) and 1280x720 frames with a large target (a region of LaSOT
airplane-1 upscaled 4x, synthetic; see ``raw_entries``), each at 224 and 378; the streaming fallback
(``shard_access=stream``) on the sample frames; beside the default (region decoding, exact) the whole-frame decode
(``region_decode=false``, the earlier default), ``fast_jpeg`` and the reduced-size decode option, each non-exact
option with its largest pixel difference on the same pairs; the decode options on single 1280x720 frames (ms/frame,
speed-up, largest pixel difference); ``--profile``: where the time of a pair goes (cProfile, per stage); shards
through HTTP range requests from a server on 127.0.0.1 (a separate process: its CPU is not counted); bytes read from
storage per pair vs. the bytes of the distinct frames the pair decodes; a real DataLoader with ``--num-workers``
processes (wall time) against the demand of a B-224 training step on an H100.

``--official DIR`` (a checkout of LitingLin/LoRAT with its requirements: PyTurboJPEG + libturbojpeg, tabulate,
exifread) also times the official training-pair transform (trackit, run.yaml's options) on the very pairs our
sampler draws, in the same run: the side-by-side ratio. The pipelines of one case are timed in turn (round-robin
passes, best of ``--repeats`` each), so that they meet the same load and their ratios hold on a shared machine.
The last line is ``pairs/s/core 224 train-path: N`` (shards by range, sample frames).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale import paths
from lorat_scale.config import load_config
from lorat_scale.data.augment import IMAGENET_STD
from lorat_scale.data.decode import decode_image, decode_image_pil
from lorat_scale.data.readers import read_dataset
from lorat_scale.data.shards import make_shards
from lorat_scale.data.storage import READ_STATS
from lorat_scale.train.loop import build_dataset

MICRO = 8  # micro-batch of the timed loaders


def raw_entries(data: Path, tmp: Path) -> dict[str, list[str]]:
    """``format[:split]=root`` entries of the frame sets: the sample frames; VOT ball1 (1280x720, a small
    target: crops enlarge it, so reduced decoding never applies); and "720p-large", synthetic: a 320x180
    region of LaSOT airplane-1's first 120 frames upscaled 4x to 1280x720 (bilinear, JPEG quality 90, boxes x4),
    a large target whose crops shrink the frame about 2x, where reduced decoding applies."""
    vot720 = tmp / "vot720"
    vot720.mkdir(exist_ok=True)
    if not (vot720 / "vot15_ball1").exists():
        os.symlink(data / "vot" / "vot15_ball1", vot720 / "vot15_ball1")
    big = tmp / "large720" / "airplane-1-x2"
    if not big.is_dir():
        big.mkdir(parents=True)
        src = data / "lasot" / "airplane" / "airplane-1"
        rows = (src / "groundtruth.txt").read_text().splitlines()[:120]
        x0, y0 = 190, 50  # a 320x180 region around the airplane's path, upscaled 4x
        for i in range(120):
            img = cv2.imread(str(src / "img" / f"{i + 1:08d}.jpg"))[y0:y0 + 180, x0:x0 + 320]
            cv2.imwrite(str(big / f"{i + 1:08d}.jpg"), cv2.resize(img, (1280, 720), interpolation=cv2.INTER_LINEAR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
        xywh = np.array([[float(v) for v in r.split(",")] for r in rows])
        xywh[:, :2] -= (1 + x0, 1 + y0)  # LaSOT is 1-based; the custom format is 0-based
        (big / "groundtruth.txt").write_text("\n".join(",".join(f"{v * 4:g}" for v in r) for r in xywh) + "\n")
    return {"sample": [f"lasot:all={data / 'lasot'}", f"otb={data / 'otb'}", f"coco:train2017={data / 'det/coco128'}"],
            "720p": [f"vot={vot720}"], "720p-large": [f"custom={tmp / 'large720'}"]}


def write_shards(entries: list[str], out: Path, margin: int) -> tuple[list[str], float, int]:
    """Shards of every entry (make_shards, as the make-shards command); (folders, seconds, bytes)."""
    folders, t0, nbytes = [], time.perf_counter(), 0
    for k, e in enumerate(entries):
        fmt, root = e.split("=", 1)
        fmt, _, split = fmt.partition(":")
        seqs = read_dataset(fmt, root, split or None)
        m = make_shards(seqs, out / f"src{k}_m{margin}", {"format": fmt}, margin=margin, num_workers=1,
                        progress=False)
        folders.append(str(out / f"src{k}_m{margin}"))
        nbytes += m["totals"]["bytes"]
    return folders, time.perf_counter() - t0, nbytes


def train_path_passes(entries: list[str], res: int, pairs: int, info: dict, **data_overrides) -> Iterator[float]:
    """Timed passes (CPU seconds each) through build_dataset + epoch_loader (num_workers=0); ``info`` gets the pairs
    per pass ``n``, the IO counters of the first pass and the dataset ``ds``. Set up and warmed up at the first pass."""
    cfg = load_config(f"S-{res}", [f"data.pairs_per_epoch={pairs}", "data.seed=0",
                                   *[f"data.{k}={v}" for k, v in data_overrides.items()]])
    ds = build_dataset(entries, cfg.data, cfg.model, MICRO, 0, 1, pairs)
    steps = range(pairs // MICRO)
    for _ in ds.epoch_loader(9, range(min(3, len(steps))), MICRO, MICRO, 0):  # warm-up: imports, allocator, caches
        pass
    counters = defaultdict(int)
    info.update(n=len(steps) * MICRO, counters=counters, ds=ds)
    for r in itertools.count():
        req0 = READ_STATS["requests"]
        t0 = time.process_time()
        for b in ds.epoch_loader(r, steps, MICRO, MICRO, 0):
            if r == 0:
                for k, v in b["counters"].items():
                    counters[k] += v
        dt = time.process_time() - t0
        if r == 0:
            counters["requests"] = READ_STATS["requests"] - req0
        yield dt


def interleaved(passes: dict[str, Iterator[float]], repeats: int) -> dict[str, float]:
    """Best CPU seconds of each pipeline, its passes run in turn (round-robin), so that every pipeline meets the
    same load of a shared machine and the ratios within one call hold."""
    best = {k: float("inf") for k in passes}
    for _ in range(repeats):
        for k, it in passes.items():
            best[k] = min(best[k], next(it))
    return best


def time_train_path(entries: list[str], res: int, pairs: int, repeats: int, **data_overrides) -> dict:
    """pairs/s/core through build_dataset + epoch_loader (num_workers=0), and the IO counters of the samples."""
    info: dict = {}
    best = interleaved({"x": train_path_passes(entries, res, pairs, info, **data_overrides)}, repeats)["x"]
    return {"pps": info["n"] / best, **info}


def distinct_frame_bytes(ds, pairs: int) -> float:
    """Mean encoded bytes of the distinct frames each pair of epoch 0 decodes (1 frame if template == search)."""
    total = 0
    for b in ds.epoch_loader(0, range(pairs // MICRO), MICRO, MICRO, 0):
        for d, seq_key, t, s in zip(b["source"].tolist(), b["sequence"], b["template_frame"].tolist(),
                                    b["search_frame"].tolist()):
            seq = next(q for q in ds.sources[d] if q.key == seq_key)
            total += sum(len(seq.read_bytes(f - seq.offset)) for f in {t, s})
    return total / pairs


def option_difference(entries: list[str], res: int, pairs: int, **option) -> tuple[float, float, bool, float]:
    """(largest, mean) |pixel difference| in 0..255 units between the default (exact) crops and those with a
    non-exact decode ``option`` (e.g. reduced_decode=true) on the same pairs, whether the search labels (box, positive
    cells) are identical, and the share of template-mask cells that differ (a reduced-decode template crop is
    pixel-aligned on the reduced image, so its mask follows that alignment)."""
    out = []
    for opts in ({}, option):
        cfg = load_config(f"S-{res}", [f"data.pairs_per_epoch={pairs}", *[f"data.{k}={v}" for k, v in opts.items()]])
        ds = build_dataset(entries, cfg.data, cfg.model, MICRO, 0, 1, pairs)
        out.append(list(ds.epoch_loader(0, range(pairs // MICRO), MICRO, MICRO, 0)))
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    worst, mean, same, zdiff = 0.0, [], True, []
    for a, b in zip(*out):
        for k in ("z", "x"):
            d = ((a[k] - b[k]).abs() * std)
            worst = max(worst, float(d.max()))
            mean.append(float(d.mean()))
        same &= all(torch.equal(a[k], b[k]) for k in ("target_box", "positive_map"))
        zdiff.append(float((a["z_feat_mask"] != b["z_feat_mask"]).float().mean()))
    return worst, float(np.mean(mean)), same, float(np.mean(zdiff))


def decode_options_720p(data: Path, n: int = 24, repeats: int = 3) -> None:
    """ms per 1280x720 frame (VOT ball1, its own boxes) of each decode option, its speed-up over the exact whole
    decode and its largest pixel difference to the exact decode of the same pixels. The region is the search crop's
    (search area factor 4, no jitter: what a 224 search crop of this small target reads)."""
    from lorat_scale import crop
    from lorat_scale.data.decode import decode_image_reduced, decode_region, region_decoding

    seq = next(q for q in read_dataset("vot", data / "vot") if "ball1" in q.key)
    idx = np.linspace(0, len(seq) - 1, n).astype(int)
    blobs = [seq.read_bytes(int(i)) for i in idx]
    boxes = []
    for i in idx:
        params = crop.siamfc_params(seq.boxes[i], 4.0, 224)
        _, src = crop.crop_regions((1280, 720), params, 224)
        boxes.append(src)
    exact = [decode_image(b) for b in blobs]
    options = {
        "exact whole frame (decode_image)": (lambda b, box: decode_image(b), lambda e, box: e),
        "fast_jpeg whole frame": (lambda b, box: decode_image(b, fast=True), lambda e, box: e),
        "region of the search crop (exact)": (decode_region, lambda e, box: e[box[1]:box[3], box[0]:box[2]]),
        "reduced 1/2": (lambda b, box: decode_image_reduced(b, 0.5)[0], None),
        "reduced 1/2 + fast_jpeg": (lambda b, box: decode_image_reduced(b, 0.5, fast=True)[0], None),
        "reduced 1/4": (lambda b, box: decode_image_reduced(b, 0.25)[0], None),
    }
    print(f"decode options on {n} VOT ball1 frames (1280x720, {np.mean([len(b) for b in blobs]) / 1e3:.0f} kB each; "
          f"region decoding: {region_decoding() or 'on'}; mean search-crop region "
          f"{np.mean([b[2] - b[0] for b in boxes]):.0f}x{np.mean([b[3] - b[1] for b in boxes]):.0f} px):")
    base = None
    for name, (fn, ref) in options.items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            got = [fn(b, box) for b, box in zip(blobs, boxes)]
            best = min(best, time.process_time() - t0)
        ms = best / n * 1e3
        base = base or ms
        diff = ("largest pixel difference " + str(max(int(np.abs(g.astype(int) - ref(e, box)).max())
                                                      for g, e, box in zip(got, exact, boxes)))
                if ref else "other size: the crop-level difference is below")
        print(f"  {name:36s} {ms:6.2f} ms/frame  {base / ms:5.2f}x  {diff}")


STAGES = {  # stage -> functions whose cumulative time it is (file suffix, function name)
    "read bytes": [("sequence.py", "read_bytes")],
    "decode": [("decode.py", "decode_image"), ("decode.py", "decode_region"), ("decode.py", "decode_image_reduced")],
    "crop + resize": [("crop.py", "crop_image")],
    "flip/jitter/3-aug/normalise": [("augment.py", "augment_pair")],
    "labels": [("boxes.py", "cell_mask")],
    "collate": [("pairs.py", "collate")],
}


def profile_stages(entries: list[str], res: int, pairs: int) -> str:
    """Where a pair's time goes on the train path (shards, num_workers=0): ms per pair per stage under cProfile
    (which inflates the Python-heavy parts); "other" is sampling, crop parameters, seeding and Python glue."""
    import cProfile
    import pstats

    cfg = load_config(f"S-{res}", [f"data.pairs_per_epoch={pairs}"])
    ds = build_dataset(entries, cfg.data, cfg.model, MICRO, 0, 1, pairs)
    for _ in ds.epoch_loader(9, range(3), MICRO, MICRO, 0):
        pass
    prof = cProfile.Profile(time.process_time)
    t0 = time.process_time()
    prof.enable()
    for _ in ds.epoch_loader(0, range(pairs // MICRO), MICRO, MICRO, 0):
        pass
    prof.disable()
    total = time.process_time() - t0
    st = pstats.Stats(prof).stats  # (file, line, name) -> (calls, primitive calls, own, cumulative, callers)
    n = pairs // MICRO * MICRO
    parts = {}
    for stage, fns in STAGES.items():
        parts[stage] = sum(v[3] for k, v in st.items() if (Path(k[0]).name, k[2]) in fns)
    parts["other"] = total - sum(parts.values())
    return f"{total / n * 1e3:.2f} ms/pair: " + ", ".join(
        f"{k} {v / n * 1e3:.2f} ({v / total:.0%})" for k, v in parts.items())


def serve(folder: str, url_file: str) -> None:
    """A plain HTTP/1.1 file server with Range support on 127.0.0.1 (run as its own process)."""
    import re
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            p = Path(folder) / self.path.lstrip("/")
            if not p.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
            with open(p, "rb") as f:
                if m:
                    a, z = int(m[1]), int(m[2])
                    f.seek(a)
                    body = f.read(z - a + 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {a}-{a + len(body) - 1}/{p.stat().st_size}")
                else:
                    body = f.read()
                    self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    Path(url_file).write_text(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.serve_forever()


def official_transform(lorat_dir: Path, res: int):
    """The official LoRAT training-pair transform (trackit), built from a checkout of LitingLin/LoRAT with the
    transform options of its ``config/LoRAT/run.yaml`` (called, not copied; needs its requirements)."""
    sys.path.insert(0, str(lorat_dir))
    from trackit.data.methods.siamese_tracker_train.transform.default.builder import \
        build_siamese_tracker_training_data_processing_components
    from trackit.data.methods.siamese_tracker_train.transform.default.plugin.builder import \
        PluginRegistrationHelper

    tz, tx, factor = {224: (112, 224, 4.0), 378: (196, 378, 5.0)}[res]
    transform = {
        "type": "default",
        "SiamFC_cropping": {"template": {"area_factor": 2.0},
                            "search_region": {"area_factor": factor, "scale_jitter": 0.25, "translation_jitter": 3,
                                              "min_object_size": 10}},
        "augmentation": [
            {"type": "horizontal_flip", "target": ["template", "search_region"], "probability": 0.5, "joint": False},
            {"type": "color_jitter", "target": ["template", "search_region"], "brightness": 0.4, "contrast": 0.4,
             "saturation": 0.4, "joint": False},
            {"type": "DeiT_3_aug", "target": ["template", "search_region"], "joint": True}],
        "plugin": [{"type": "box_with_score_map_label_generation"},
                   {"type": "template_foreground_indicating_mask_generation"}]}
    common = {"template_size": (tz, tz), "search_region_size": (tx, tx), "template_feat_size": (tz // 14, tz // 14),
              "response_map_size": (tx // 14, tx // 14), "interpolation_mode": "bilinear",
              "interpolation_align_corners": False, "normalization": "imagenet"}
    for lst in (PluginRegistrationHelper.extra_transforms, PluginRegistrationHelper.extra_data_collators,
                PluginRegistrationHelper.extra_data_pipelines_on_main_process):
        lst.clear()  # trackit keeps registered plugins in class-level lists: one build per process otherwise
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the whole transform config
        proc, *_ = build_siamese_tracker_training_data_processing_components(transform, {"common": common}, None,
                                                                              torch.float32)
    return proc


def official_passes(lorat_dir: Path, entries: list[str], res: int, pairs: int, info: dict) -> Iterator[float]:
    """Timed passes (CPU seconds) of the official transform on the pairs our sampler draws (same frames, same boxes);
    frames read and decoded by trackit (file read + TurboJPEG), a failed search crop re-drawn as its sampler does.
    ``info["n"]``: pairs per pass."""
    proc = official_transform(lorat_dir, res)  # puts the checkout on sys.path
    from trackit.data.methods.siamese_tracker_train._types import SiameseTrainingPair, SOTFrameInfo
    from trackit.miscellanies.image.io import read_image_with_auto_retry

    cfg = load_config(f"S-{res}", [f"data.pairs_per_epoch={pairs}"])
    ds = build_dataset(entries, cfg.data, cfg.model, MICRO, 0, 1, pairs)
    plan = []
    for b in ds.epoch_loader(0, range(pairs // MICRO), MICRO, MICRO, 0):
        for d, key, t, s in zip(b["source"].tolist(), b["sequence"], b["template_frame"].tolist(),
                                b["search_frame"].tolist()):
            seq = next(q for q in ds.sources[d] if q.key == key)
            plan.append((seq, t - seq.offset, s - seq.offset))

    def frame(seq, i):
        return SOTFrameInfo(image=lambda p=seq.frames[i]: read_image_with_auto_retry(p), object_bbox=seq.boxes[i],
                            object_exists=True, dataset=None, sequence=None, track=None, frame=None)

    info["n"] = len(plan)
    for r in itertools.count():
        rng = np.random.default_rng(r)
        t0 = time.process_time()
        for seq, t, s in plan:
            while proc(SiameseTrainingPair(True, frame(seq, t), frame(seq, s)), rng) is None:
                pass
        yield time.process_time() - t0


def loader_vs_demand(entries: list[str], workers: int, pairs: int) -> float:
    """Wall-clock pairs/s of a real DataLoader with ``workers`` processes on the train path (224, sample frames)."""
    cfg = load_config("S-224", [f"data.pairs_per_epoch={pairs}"])
    ds = build_dataset(entries, cfg.data, cfg.model, MICRO, 0, 1, pairs)
    it = iter(ds.epoch_loader(0, range(pairs // MICRO), MICRO, MICRO, workers))
    next(it)  # workers started and warm
    t0 = time.perf_counter()
    n = sum(len(b["key"]) for b in it)
    return n / (time.perf_counter() - t0)


def compare_decoders(entries: list[str], n: int = 60) -> None:
    """ms per frame and byte-identity with Pillow for each available JPEG decoder."""
    from torchvision.io import ImageReadMode, decode_jpeg

    rng = np.random.default_rng(0)
    blobs = []
    sources = [read_dataset(e.split("=")[0].split(":")[0], e.split("=", 1)[1],
                            (e.split("=")[0].split(":") + [None])[1]) for e in entries]
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
    p.add_argument("--pairs", type=int, default=240, help="pairs timed per case (a multiple of 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per case; the best counts")
    p.add_argument("--num-workers", dest="workers", type=int, default=2,
                   help="DataLoader processes of the loader-vs-demand line")
    p.add_argument("--decoders", action="store_true", help="also compare JPEG decoders")
    p.add_argument("--profile", action="store_true", help="also profile a pair's stages (cProfile)")
    p.add_argument("--cases", default="sample,720p,720p-large",
                   help="frame sets to time (comma-separated); the HTTP and loader-vs-demand lines need 'sample'")
    p.add_argument("--official", type=Path, default=None,
                   help="a checkout of the official LoRAT code (github LitingLin/LoRAT, with its requirements): "
                        "also time its training-pair transform on the same pairs, side by side")
    p.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)  # internal: run the HTTP test server
    args = p.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if not args.data.is_dir():
        sys.exit(f"sample data not found at {args.data} (pass --data or set LORAT_SHARED)")
    pairs = args.pairs // MICRO * MICRO
    if pairs < 128:
        sys.exit("--pairs must be at least 128 (one training step of the S preset's global batch)")
    tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
    root = Path(tmp.name)
    os.environ.setdefault("LORAT_CACHE", str(root / "cache"))  # annotation cache of this run only
    entries = raw_entries(args.data.resolve(), root)
    cases = args.cases.split(",")
    if not set(cases) <= set(entries):
        sys.exit(f"--cases: unknown {sorted(set(cases) - set(entries))}; known: {', '.join(entries)}")
    entries = {k: v for k, v in entries.items() if k in cases}
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores (shared "
          f"machine: absolute figures vary, ratios within this run hold); {pairs} pairs per case, micro-batch "
          f"{MICRO}, best of {args.repeats}, 1 thread, CPU time of this process")
    if args.decoders:
        print("JPEG decoders (random sample frames):")
        compare_decoders(entries["sample"])

    shards, shard_stream = {}, {}
    for name, ents in entries.items():
        shards[name], dt, nb = write_shards(ents, root / name, margin=0)
        print(f"[{name}] shards written (margin 0, random access) in {dt:.2f} s: {nb / 2**20:.1f} MiB")
    if "sample" in cases:
        shard_stream["sample"], _, _ = write_shards(entries["sample"], root / "sample", margin=100)

    res_table: dict[tuple, float] = {}
    for name in cases:
        for res in (224, 378):
            # Every pipeline of this case, timed in turn (interleaved), so that the ratios hold under shared load.
            shard_entries = [f"shards={f}" for f in shards[name]]
            setups = {"raw": (entries[name], {}), "shards": (shard_entries, {}),
                      "whole-frame": (shard_entries, {"region_decode": "false"}),
                      # fast_jpeg applies to whole and reduced decodes (region decodes stay exact): on whole frames.
                      "fast_jpeg": (shard_entries, {"region_decode": "false", "fast_jpeg": "true"})}
            if name == "sample":
                setups["stream"] = ([f"shards={f}" for f in shard_stream[name]],
                                    {"shard_access": "stream", "num_workers": 1})
            else:
                setups["reduced"] = (shard_entries, {"reduced_decode": "true"})
                setups["reduced+fast"] = (shard_entries, {"reduced_decode": "true", "fast_jpeg": "true"})
            info = {k: {} for k in [*setups, "official"]}
            passes = {k: train_path_passes(ents, res, pairs, info[k], **o) for k, (ents, o) in setups.items()}
            if args.official:
                passes["official"] = official_passes(args.official, entries[name], res, pairs, info["official"])
            best = interleaved(passes, args.repeats)
            pps = {k: info[k]["n"] / v for k, v in best.items()}
            for k, v in pps.items():
                res_table[(name, res, k)] = v
            sh, c = pps["shards"], info["shards"]["counters"]
            line = (f"[{name} {res}] raw folders {pps['raw']:7.1f} pairs/s/core | shards by range {sh:7.1f} "
                    f"pairs/s/core ({sh / pps['raw']:.2f}x raw)")
            line += (f"\n    exact: region decode (default) {sh:7.1f} = {sh / pps['whole-frame']:.2f}x whole-frame "
                     f"decode {pps['whole-frame']:7.1f}; not exact: whole frames with fast_jpeg "
                     f"{pps['fast_jpeg']:7.1f} "
                     f"({pps['fast_jpeg'] / pps['whole-frame']:.2f}x whole-frame exact, {pps['fast_jpeg'] / sh:.2f}x "
                     "default)")
            if name == "sample":
                line += f" | stream fallback {pps['stream']:7.1f}"
            for k in ("reduced", "reduced+fast"):
                if k in pps:
                    cr = info[k]["counters"]
                    line += (f" | {k} decode {pps[k]:7.1f} ({pps[k] / sh:.2f}x default, "
                             f"{cr.get('reduced_frames', 0) / max(cr['frames_read'], 1):.0%} of frames decoded "
                             "reduced)")
            if args.official:
                off = pps["official"]
                line += (f"\n    official LoRAT transform {off:7.1f}: default {sh / off:.2f}x official"
                         + "".join(f", {k} {pps[k] / off:.2f}x" for k in
                                   ("whole-frame", "fast_jpeg", "reduced", "reduced+fast") if k in pps))
            print(line)
            if res == 224:
                n = info["shards"]["n"]
                distinct = distinct_frame_bytes(info["shards"]["ds"], pairs)
                per_pair = c["bytes_read"] / n
                print(f"  bytes read from storage per pair {per_pair / 1e3:.1f} kB in {c['requests'] / n:.2f} "
                      f"reads ({c['frames_read'] / n:.2f} frames, {c['resampled']} re-drawn pairs, "
                      f"{c['bad_frames']} bad frames); distinct frames decoded {distinct / 1e3:.1f} kB per pair: "
                      f"ratio {per_pair / distinct:.3f}")
    for name in cases:
        for label, opts in (("whole frames + fast_jpeg", {"region_decode": "false", "fast_jpeg": "true"}),
                            ("reduced decode", {"reduced_decode": "true"}),
                            ("reduced + fast_jpeg", {"reduced_decode": "true", "fast_jpeg": "true"})):
            if name == "sample" and "reduced" in label:
                continue
            worst, mean, same, zdiff = option_difference([f"shards={f}" for f in shards[name]], 224, pairs, **opts)
            print(f"[{name} 224] {label} vs exact on the same pairs: largest pixel difference {worst:.1f} (0-255 "
                  f"scale), mean {mean:.2f}; search labels identical: {same}; template-mask cells differing "
                  f"{zdiff:.2%}")
    decode_options_720p(args.data)
    if args.profile:
        for name in [c for c in cases if c != "720p-large"]:
            for res in (224, 378):
                print(f"[{name} {res}] profile (cProfile, shards, default options): "
                      + profile_stages([f"shards={f}" for f in shards[name]], res, pairs))

    if "sample" in cases:  # HTTP range reads and the loader against the GPU's demand
        # HTTP range reads from a local server (own process)
        url_file = root / "url"
        srv = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(url_file)])
        try:
            while not url_file.exists() or not url_file.read_text():
                time.sleep(0.05)
            base = url_file.read_text()
            urls = [f"shards={base}/sample/{Path(f).name}" for f in shards["sample"]]
            http = time_train_path(urls, 224, pairs, args.repeats)
            c = http["counters"]
            distinct = distinct_frame_bytes(http["ds"], pairs)
            print(f"[sample 224] shards over HTTP range requests ({base}): {http['pps']:7.1f} pairs/s/core (client "
                  f"CPU); {c['bytes_read'] / http['n'] / 1e3:.1f} kB read per pair in {c['requests'] / http['n']:.2f} "
                  f"requests; ratio to distinct frames {c['bytes_read'] / http['n'] / distinct:.3f}")
            res_table[("sample", 224, "http")] = http["pps"]
        finally:
            srv.kill()
            srv.wait()

        # The loader against the training step's demand.
        from lorat_scale.models.profile import count

        macs, macs_l = count("B-224").macs, count("L-224").macs
        # A frozen backbone with LoRA: the backward pass computes activation gradients (~1 forward of FLOPs) and
        # only the small LoRA/head weight gradients, so a step is ~2 forwards = 4 * MACs FLOPs per pair. H100 SXM:
        # 989 TFLOP/s dense bf16; ViT-B at 320 tokens and 16 pairs per GPU reaches roughly 30-50% of it (MFU).
        # Common 8-GPU H100 nodes have 96-112 physical cores (AWS p5: 96, Azure ND H100 v5: 96, GCP a3-highgpu:
        # 104, DGX H100: 112): 12-14 per GPU, of which ~1-2 run the training process itself, leaving ~11 loader workers.
        peak, workers_per_gpu = 989e12, 11
        per_core = res_table[("sample", 224, "shards")]
        wall = loader_vs_demand([f"shards={f}" for f in shards["sample"]], args.workers, pairs)
        print(f"loader with {args.workers} workers (DataLoader, wall time, this {os.cpu_count()}-core machine): "
              f"{wall:.1f} pairs/s = {wall / args.workers:.1f} per worker")
        # Cross-check from the paper: L-224 trains 170 x 131072 pairs in 10.8 GPU-hours; B-224 has fewer MACs per pair.
        paper_l = 170 * 131072 / (10.8 * 3600)
        estimates = [(f"{mfu:.0%} MFU of an H100", mfu * peak / (4 * macs)) for mfu in (0.3, 0.4, 0.5)]
        estimates.append(("the paper's L-224 rate scaled by MACs", paper_l * macs_l / macs))
        print(f"B-224 step demand per GPU ({macs / 1e9:.1f} GMACs/pair forward, ~2 forwards per step = "
              f"{4 * macs / 1e9:.0f} GFLOP/pair; the paper: L-224 {paper_l:.0f} pairs/s/GPU from 10.8 GPU-h), "
              f"per loader worker at {workers_per_gpu} workers per GPU, against {per_core:.0f} pairs/s/core measured "
              "here (sample frames, 224):")
        for what, demand in estimates:
            need = demand / workers_per_gpu
            print(f"  {what:38s} {demand:6.0f} pairs/s/GPU = {need:5.0f} per worker -> "
                  + ("met" if per_core >= need else f"NOT met (needs {math.ceil(demand / per_core)} loader cores/GPU)"))
    tmp.cleanup()
    print()
    for name in cases:
        for res in (224, 378):
            extra = ", ".join(f"{k} {v:.1f}" for (n, r, k), v in res_table.items() if n == name and r == res)
            print(f"pairs/s/core {name} {res}: {extra}")
    if not args.official:
        print("(official pipeline not run: pass --official LORAT_CHECKOUT; the issue's figure, from another machine: "
              "68 pairs/s/core at the sample frames)")
    if "sample" in cases:
        print(f"pairs/s/core 224 train-path: {res_table[('sample', 224, 'shards')]:.1f}")


if __name__ == "__main__":
    main()
