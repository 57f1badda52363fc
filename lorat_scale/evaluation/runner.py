"""Run a tracker over a benchmark (resumable, parallel, repeated), then score the result files.

The tracker is anything with ``init(frame, box_xyxy)`` and ``track(frame) -> (box_xyxy, score)``
(``lorat_scale.tracking.tracker.Tracker`` is one). Work is split twice:

* across processes of a ``torchrun``/SLURM job: rank ``r`` of ``world_size`` takes every
  ``world_size``-th (run, sequence) task (static, no communication needed);
* inside a process: ``num_workers`` > 1 starts a process pool that pulls tasks one at a time
  (dynamic: long sequences do not hold others back); each worker builds its own tracker from
  ``tracker_factory`` (a picklable callable, e.g. ``LoRATFactory``).

A task whose ``<seq>.txt`` already exists is skipped, so an interrupted run resumes where it
stopped (result files are written atomically). ``repeat`` runs go to ``run_001``, ``run_002``...
and are averaged per sequence before the overall metrics.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..data.sequence import Sequence
from .metrics import Convention, SequenceMetrics, Summary, average_runs, evaluate_sequence, get_convention
from .results import list_runs, read_sequence_result, result_file, run_name, write_sequence_result

# Coordinates of each benchmark's toolkit relative to ours (readers make LaSOT 0-based; its toolkit
# and published result files are 1-based). Result files and metrics use the toolkit's frame, which
# matters for the pytracking validity rule (x, y > 0).
TOOLKIT_OFFSET: dict[str, float] = {"lasot": 1.0, "lasot_ext": 1.0}


class SOTTracker(Protocol):
    """The minimal single-object tracker interface the runner needs."""

    def init(self, frame: np.ndarray, box_xyxy: np.ndarray) -> None:
        """Start tracking the object in ``box_xyxy`` of ``frame``."""

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Box (xyxy) and confidence in the next frame."""


@dataclass
class LoRATFactory:
    """Picklable recipe for ``Tracker.from_checkpoint`` (one tracker per worker process)."""

    checkpoint: str
    variant: str | None = None
    backbone: str = ""
    device: str | None = None
    overrides: list[str] = field(default_factory=list)

    def __call__(self) -> SOTTracker:
        """Build the tracker (plain ``cuda`` -> ``cuda:<pool worker or LOCAL_RANK % gpus>``)."""
        from ..tracking.tracker import Tracker

        device = self.device
        if device == "cuda":
            import torch

            n = torch.cuda.device_count()
            ident = mp.current_process()._identity  # (k,) inside a pool worker, () in the main process
            if ident and n > 1:
                device = f"cuda:{(ident[0] - 1) % n}"
            elif "LOCAL_RANK" in os.environ and n > 1:  # torchrun: one GPU per rank
                device = f"cuda:{int(os.environ['LOCAL_RANK']) % n}"
        return Tracker.from_checkpoint(self.checkpoint, variant=self.variant, backbone=self.backbone,
                                       overrides=self.overrides, device=device)


def run_sequence(tracker: SOTTracker, seq: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """OPE on one sequence: init on frame 0 with its GT box -> (N, 4) xyxy boxes, (N,) seconds."""
    n = len(seq)
    if n == 0:
        raise ValueError(f"sequence {seq.key}: no frames")
    init = np.asarray(seq.boxes[0], dtype=np.float64)
    if not np.isfinite(init).all() or init[2] <= init[0] or init[3] <= init[1]:
        raise ValueError(f"sequence {seq.key}: frame 0 has no usable box to initialise on ({init.tolist()})")
    boxes = np.zeros((n, 4))
    times = np.zeros(n)
    frame = seq.load_frame(0)
    t0 = time.perf_counter()
    tracker.init(frame, init.copy())
    times[0] = time.perf_counter() - t0
    boxes[0] = init
    for i in range(1, n):
        frame = seq.load_frame(i)  # decoding is not timed, as in the reference toolkits
        t0 = time.perf_counter()
        box, _score = tracker.track(frame)
        times[i] = time.perf_counter() - t0
        boxes[i] = np.asarray(box, dtype=np.float64).reshape(4)
    return boxes, times


# Per-process state of pool workers (set by _worker_init).
_WORKER: dict[str, Any] = {}


def _worker_init(factory: Callable[[], SOTTracker]) -> None:
    _WORKER["tracker"] = factory()


def _run_task(task: tuple[Sequence, str, float]) -> str:
    seq, path, offset = task
    try:
        boxes, times = run_sequence(_WORKER["tracker"], seq)
    except Exception as e:  # name the sequence: a pool worker's traceback alone does not
        raise RuntimeError(f"tracking {seq.key} (-> {path}) failed: {type(e).__name__}: {e}") from e
    write_sequence_result(path, boxes, times, coord_offset=offset)
    return path


def pending_tasks(sequences: list[Sequence], out_dir: str | Path, tracker_name: str, repeat: int = 1,
                  rank: int = 0, world_size: int = 1) -> list[tuple[Sequence, str]]:
    """(sequence, result path) of this rank's share that has no result file yet."""
    tasks = [(seq, str(result_file(out_dir, tracker_name, r, seq.name))) for r in range(repeat) for seq in sequences]
    return [t for t in tasks[rank::world_size] if not os.path.exists(t[1])]


def run_benchmark(tracker_factory: Callable[[], SOTTracker], sequences: list[Sequence], out_dir: str | Path,
                  tracker_name: str, repeat: int = 1, num_workers: int = 1, rank: int | None = None,
                  world_size: int | None = None, log: Callable[[str], None] | None = print) -> list[str]:
    """Track every pending (run, sequence) of this rank; returns the result files written."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    tasks = pending_tasks(sequences, out_dir, tracker_name, repeat, rank, world_size)
    total = len(sequences) * repeat
    if log:
        log(f"[rank {rank}/{world_size}] {len(tasks)} of {total} sequence runs to do "
            f"(others done or on other ranks) -> {Path(out_dir) / tracker_name}")
    jobs = [(seq, path, TOOLKIT_OFFSET.get(seq.dataset, 0.0)) for seq, path in tasks]
    done: list[str] = []
    if not jobs:
        return done  # everything finished: do not load a model for nothing
    if num_workers <= 1:
        _worker_init(tracker_factory)
        for k, job in enumerate(jobs):
            done.append(_run_task(job))
            if log:
                log(f"  [{k + 1}/{len(jobs)}] {job[0].name}")
        return done
    # spawn: safe with CUDA and threads in the parent (fork is not).
    with mp.get_context("spawn").Pool(num_workers, _worker_init, (tracker_factory,)) as pool:
        for k, path in enumerate(pool.imap_unordered(_run_task, jobs, chunksize=1)):
            done.append(path)
            if log:
                log(f"  [{k + 1}/{len(jobs)}] {Path(path).stem}")
    return done


def _visible(seq: Sequence) -> np.ndarray:
    """Frames where the target counts as present: GOT-10k toolkit rule cover > 0, else a reader's
    ``extra["visible"]``, else ``valid`` (annotated, visible, non-empty box)."""
    if "cover" in seq.extra:
        with np.errstate(invalid="ignore"):
            return np.asarray(seq.extra["cover"]) > 0
    return np.asarray(seq.extra.get("visible", seq.valid), dtype=bool)


def evaluate_results(sequences: list[Sequence], out_dir: str | Path, tracker_name: str,
                     convention: str | Convention = "stark", runs: list[str] | None = None,
                     dataset: str = "") -> Summary:
    """Score every run folder of a tracker (averaging runs per sequence) -> Summary."""
    conv = get_convention(convention)
    tdir = Path(out_dir) / tracker_name
    if runs is None:
        runs = list_runs(out_dir, tracker_name)
    if not runs:
        raise FileNotFoundError(f"no run folders under {tdir} (expected {tdir}/{run_name(0)}/<seq>.txt)")
    per_seq: list[SequenceMetrics] = []
    for seq in sequences:
        off = TOOLKIT_OFFSET.get(seq.dataset, 0.0)
        gt = seq.boxes + off  # the toolkit's coordinates, as the result files are
        visible = _visible(seq)
        ms = []
        for r in runs:
            pred, times = read_sequence_result(tdir / r / f"{seq.name}.txt", num_frames=len(seq))
            ms.append(evaluate_sequence(pred, gt, visible, name=seq.name, dataset=seq.dataset, convention=conv,
                                        frame_size=seq.frame_size, times=times[1:] if times is not None else None))
        per_seq.append(average_runs(ms))
    s = Summary(per_seq, conv, tracker_name, dataset or (sequences[0].dataset if sequences else ""))
    s.extra["runs"] = runs
    return s


# ------------------------------------------------------------------------------------ benchmarks
# name -> (reader module in lorat_scale.data.readers, its read() arguments). Readers are called with
# clean=False: evaluation uses the ground truth as published (no clipping, no trimming).
BENCHMARKS: dict[str, tuple[str, dict[str, Any]]] = {
    "lasot": ("lasot", {"split": "test"}),
    "lasot_ext": ("lasot", {"split": "all", "dataset": "lasot_ext"}),
    "got10k_val": ("got10k", {"split": "val"}),
    "got10k_test": ("got10k", {"split": "test"}),
    "trackingnet": ("trackingnet", {"split": "test"}),
    "otb": ("otb", {}),
    "uav123": ("uav123", {}),
    "nfs": ("nfs", {}),
    "tnl2k": ("tnl2k", {}),
    "vot": ("vot", {}),
    "custom": ("custom", {"split": "test"}),
}
SERVER_ONLY = {"got10k_test": "got10k", "trackingnet": "trackingnet"}  # GT withheld: submission zip only


def load_benchmark(name: str, root: str | Path, sequences: str | list[str] = "") -> list[Sequence]:
    """Sequences of a benchmark (optionally only the named ones), ground truth unmodified."""
    import importlib

    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    module, kwargs = BENCHMARKS[name]
    reader = importlib.import_module(f"lorat_scale.data.readers.{module}")
    seqs = reader.read(root, clean=False, **kwargs)
    wanted = [s for s in (sequences.split(",") if isinstance(sequences, str) else sequences) if s]
    if wanted:
        by_name = {s.name: s for s in seqs}
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise ValueError(f"{name} at {root}: no sequence(s) {missing[:5]}")
        seqs = [by_name[w] for w in wanted]
    if not seqs:
        raise ValueError(f"{name} at {root}: no sequences found")
    return seqs


def write_submission(benchmark: str, sequences: list[Sequence], out_dir: str | Path, tracker_name: str) -> Path:
    """GOT-10k / TrackingNet submission zip from the result files of every run."""
    from .results import write_got10k_zip, write_trackingnet_zip

    tdir = Path(out_dir) / tracker_name
    runs = list_runs(out_dir, tracker_name)
    loaded = [{s.name: read_sequence_result(tdir / r / f"{s.name}.txt", num_frames=len(s)) for s in sequences}
              for r in runs]
    if SERVER_ONLY[benchmark] == "got10k":
        return write_got10k_zip(tdir / f"{tracker_name}_got10k_test.zip", loaded)
    return write_trackingnet_zip(tdir / f"{tracker_name}_trackingnet.zip", {k: b for k, (b, _) in loaded[0].items()})


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``lorat-scale evaluate`` / ``scripts/evaluate.py``."""
    from .metrics import CONVENTIONS

    p.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    p.add_argument("--root", required=True, help="benchmark root folder")
    p.add_argument("--checkpoint", default="", help="trainable-only checkpoint (ours or official)")
    p.add_argument("--variant", default=None, help="e.g. B-224 (default: from the checkpoint)")
    p.add_argument("--backbone", default="", help="frozen DINOv2 weights (default: from the config)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (plain 'cuda' spreads workers over GPUs)")
    p.add_argument("--override", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--tracker-name", default="", help="results sub-folder (default: checkpoint file stem)")
    p.add_argument("--results", default="results", help="results root: <results>/<tracker>/run_00k/<seq>.txt")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per sequence, averaged (LoRAT: 3 for LaSOT_ext and GOT-10k)")
    p.add_argument("--num-workers", type=int, default=1, help="tracker processes in this process (pool)")
    p.add_argument("--sequences", default="", help="comma-separated subset of sequence names")
    p.add_argument("--convention", default="stark", choices=sorted(CONVENTIONS))
    p.add_argument("--iou", default=None, choices=["continuous", "pixel"], help="override the IoU convention")
    p.add_argument("--no-run", action="store_true", help="only score existing result files")


def evaluate_main(args: argparse.Namespace) -> int:
    """Run (resumably) and score one tracker on one benchmark; print metrics, write the report."""
    from .metrics import get_convention
    from .report import write_report

    seqs = load_benchmark(args.benchmark, args.root, args.sequences)
    name = args.tracker_name or (Path(args.checkpoint).stem if args.checkpoint else "")
    if not name:
        raise SystemExit("give --tracker-name (or --checkpoint, whose file name is the default)")
    if not args.no_run:
        if not args.checkpoint:
            raise SystemExit("--checkpoint is needed to run the tracker (or pass --no-run to only score results)")
        factory = LoRATFactory(args.checkpoint, args.variant, args.backbone, args.device, list(args.override))
        run_benchmark(factory, seqs, args.results, name, repeat=args.repeat, num_workers=args.num_workers)
    missing = pending_tasks(seqs, args.results, name, args.repeat)
    if missing:
        print(f"{len(missing)} sequence runs have no result yet (other ranks still running?); "
              f"score later with --no-run")
        return 0
    if args.benchmark in SERVER_ONLY:
        z = write_submission(args.benchmark, seqs, args.results, name)
        print(f"ground truth is withheld for {args.benchmark}: upload {z} to the evaluation server")
        return 0
    summary = evaluate_results(seqs, args.results, name, get_convention(args.convention, iou=args.iou),
                               dataset=args.benchmark)
    print(summary)
    files = write_report([summary], Path(args.results) / name / f"report_{args.benchmark}", title=args.benchmark)
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
