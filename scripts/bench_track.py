#!/usr/bin/env python
"""Tracking speed: model-only and end-to-end (crop + model + post-processing) FPS.

    python scripts/bench_track.py --variant S-224                 # CPU (+ GPU fp16/bf16 if CUDA)
    python scripts/bench_track.py --variant L-224 --batch 32 --iters 50 --no-cpu

Model-only follows the LoRAT paper's protocol (merged model, warm-up then timed forwards; CUDA
events on GPU). End-to-end is ``BatchTracker.track`` on real decoded frames (crops from uint8
frames, host->device copy, forward, post-processing, state update), frame decoding excluded.
FPS = frames (targets x steps) per second, from the median step time (robust on a shared CPU;
the GPU model-only rows use the mean over CUDA events). Weights are random: speed does not depend on them.
The LAST line is ``end-to-end/model-only fps ratio: R`` at batch 1 on the first device measured
(CPU fp32 unless --no-cpu).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale import paths  # noqa: E402
from lorat_scale.config import VARIANTS, get_preset  # noqa: E402
from lorat_scale.export.onnx import example_inputs  # noqa: E402
from lorat_scale.models import build_model  # noqa: E402
from lorat_scale.tracking.tracker import BatchTracker  # noqa: E402

_DT = {"bf16": torch.bfloat16, "fp16": torch.float16}


def load_frames(n: int = 20) -> tuple[list[np.ndarray], np.ndarray, str]:
    """Real frames + first box (LaSOT airplane-1, 640x360); synthetic noise frames if absent."""
    seq = paths.shared_data() / "lasot" / "airplane" / "airplane-1"
    if (seq / "img").is_dir():
        from PIL import Image

        frames = [np.asarray(Image.open(seq / "img" / f"{i:08d}.jpg").convert("RGB")) for i in range(1, n + 1)]
        x, y, w, h = (float(v) for v in (seq / "groundtruth.txt").read_text().split("\n")[0].split(","))
        return frames, np.array([x - 1, y - 1, x - 1 + w, y - 1 + h]), f"LaSOT airplane-1 frames 1-{n} (640x360)"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(n)]
    return frames, np.array([300.0, 150.0, 340.0, 190.0]), f"{n} random 640x360 frames (shared data not found)"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(tracker: BatchTracker, batch: int, warmup: int, iters: int) -> float:
    """Model-only FPS: forward of the merged model on fixed normalized inputs."""
    z, x, mask = (t.to(tracker.device) for t in example_inputs(tracker.model, batch=batch))
    with torch.no_grad():
        for _ in range(warmup):
            tracker._run_model(z, x, mask)
        sync(tracker.device)
        if tracker.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                tracker._run_model(z, x, mask)
            end.record()
            torch.cuda.synchronize(tracker.device)
            seconds = start.elapsed_time(end) / 1e3
        else:
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                tracker._run_model(z, x, mask)
                times.append(time.perf_counter() - t0)
            # Median per iteration: robust to other processes on a shared CPU.
            seconds = float(np.median(times)) * iters
    return batch * iters / seconds


def bench_end_to_end(tracker: BatchTracker, frames: list[np.ndarray], box: np.ndarray, batch: int,
                     warmup: int, iters: int) -> float:
    """End-to-end FPS: BatchTracker.track over ``batch`` targets on real frames."""
    for k in range(batch):
        tracker.init(k, frames[0], box)
    steps = warmup + iters
    frame_at = [frames[1 + i % (len(frames) - 1)] for i in range(steps)]
    for i in range(warmup):
        tracker.track({k: frame_at[i] for k in range(batch)})
    sync(tracker.device)
    times = []
    for i in range(warmup, steps):
        t0 = time.perf_counter()
        tracker.track({k: frame_at[i] for k in range(batch)})  # boxes come back to the host: synchronizes
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times)) * iters  # median step time, as for the model-only CPU rows
    for k in range(batch):
        tracker.remove(k)
    return batch * iters / seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="S-224", choices=VARIANTS)
    p.add_argument("--batch", type=int, default=8, help="batched measurement size (batch 1 is always measured)")
    p.add_argument("--warmup", type=int, default=0, help="warm-up iterations (default: 2 CPU, 10 GPU)")
    p.add_argument("--iters", type=int, default=0, help="timed iterations (default: 6 CPU, 100 GPU)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    p.add_argument("--cpu-precisions", default="fp32", help="comma list of fp32,bf16 for the CPU rows")
    p.add_argument("--gpu-precisions", default="fp16,bf16", help="comma list of fp32,fp16,bf16 for the GPU rows")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    p.add_argument("--compile", action="store_true", help="torch.compile the merged model")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error("--batch must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = get_preset(args.variant)
    frames, box, frames_desc = load_frames()
    runs: list[tuple[str, str]] = []
    if not args.no_cpu:
        runs += [("cpu", pr) for pr in args.cpu_precisions.split(",") if pr]
    if torch.cuda.is_available():
        runs += [("cuda", pr) for pr in args.gpu_precisions.split(",") if pr]
    if not runs:
        p.error("nothing to measure: --no-cpu and no CUDA device")

    print(f"variant {args.variant}: template {cfg.model.template_size}, search {cfg.model.search_size}, "
          f"ViT dim {cfg.model.embed_dim} depth {cfg.model.depth}; merged model, random weights")
    print(f"torch {torch.__version__}, python {platform.python_version()}, CPU threads {torch.get_num_threads()} "
          f"of {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"end-to-end frames: {frames_desc}; compile={args.compile}")
    model = build_model(cfg.model)  # random backbone and head: speed only
    rows, ratio = [], None
    header = f"{'device':6} {'precision':9} {'batch':>5} {'warmup':>6} {'iters':>5} {'model fps':>10} {'e2e fps':>9} {'e2e/model':>9}"
    for dev, prec in runs:
        tracker = BatchTracker(model, cfg, device=dev, precision=prec, compile=args.compile)
        warmup = args.warmup or (2 if dev == "cpu" else 10)
        iters = args.iters or (6 if dev == "cpu" else 100)
        for batch in sorted({1, args.batch}):
            it = max(2, iters // batch) if dev == "cpu" else iters  # keep CPU runs short at large batches
            m_fps = bench_model(tracker, batch, warmup, it)
            e_fps = bench_end_to_end(tracker, frames, box, batch, warmup, it)
            rows.append(f"{dev:6} {prec:9} {batch:5d} {warmup:6d} {it:5d} {m_fps:10.2f} {e_fps:9.2f} {e_fps / m_fps:9.3f}")
            if ratio is None and batch == 1:
                ratio = (e_fps / m_fps, f"{dev} {prec} batch 1")
            print(rows[-1] if len(rows) > 1 else header + "\n" + rows[-1], flush=True)
        model = tracker.model  # merged in place on the first run; reuse it
    assert ratio is not None
    print(f"(ratio below: {args.variant}, {ratio[1]})")
    print(f"end-to-end/model-only fps ratio: {ratio[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
