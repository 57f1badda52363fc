"""Run a tracker over a benchmark (resumable, parallel, repeated), then score the result files.

The tracker is anything with ``init(frame, box_xyxy)`` and ``track(frame) -> (box_xyxy, score)``
(``lorat_scale.tracking.Tracker`` is one). Work is split twice:

* across processes of a ``torchrun``/SLURM job: rank ``r`` of ``world_size`` takes every
  ``world_size``-th (run, sequence) task (static, no communication needed);
* inside a process: ``num_workers`` > 1 starts a process pool that pulls tasks one at a time
  (dynamic: long sequences do not hold others back); each worker builds its own tracker from
  ``tracker_factory`` (a picklable callable, e.g. ``LoRATFactory``).

Results land in pytracking's layout (``results.py``). Each run folder records what produced it
(``lorat_run.json``: content hashes of checkpoint and backbone, variant, model and tracking
settings); a folder holding results of anything else is refused, never mixed or reused. A task
whose ``<seq>.txt`` exists was finished by the same model and is skipped (resume); the model
is still loaded, so a missing or broken checkpoint is always an error.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..data.sequence import Sequence
from .benchmarks import BENCHMARKS, GroundTruth, get_benchmark
from .metrics import Convention, SequenceScore, Summary, get_convention, score_sequence, summarize
from .results import (RunRecord, ResultFileError, claim_run_folder, file_digest, list_runs, read_record,
                      read_sequence_result, result_file, run_name, write_got10k_zip, write_sequence_result,
                      write_trackingnet_zip)

LENGTH_POLICIES = ("error", "truncate", "pad")


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

    def record(self) -> RunRecord:
        """What this factory's tracker is: content hashes, variant, resolved model and tracking settings."""
        from ..tracking.tracker import resolve_config

        if not self.checkpoint:
            raise ValueError("a checkpoint is needed to run the tracker")
        ckpt = Path(self.checkpoint)
        cfg = resolve_config(ckpt, variant=self.variant, backbone=self.backbone, overrides=self.overrides)
        bb = cfg.model.backbone_weights
        bb_id = {"sha256": file_digest(bb)} if bb and Path(bb).is_file() else {"name": bb}
        model = {k: v for k, v in asdict(cfg.model).items() if k != "backbone_weights"}
        # Settings that cannot change a box are not part of the identity (backend and precision are).
        unused = ("device", "compile", "ort_threads", "onnx_cache")
        track = {k: v for k, v in asdict(cfg.track).items() if k not in unused}
        identity = {"checkpoint": {"sha256": file_digest(ckpt)}, "backbone": bb_id, "variant": cfg.variant,
                    "model": model, "track": track}
        return RunRecord(identity, {"checkpoint": str(ckpt.resolve()), "backbone": str(bb)})


def default_param(record: RunRecord) -> str:
    """pytracking parameter name of a model: ``<variant>-<first 8 hex digits of its key>``."""
    return f"{record.identity.get('variant', 'model')}-{record.key[:8]}"


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


def run_sequences_batched(tracker: Any, sequences: list[Sequence], batch: int = 32) -> list[np.ndarray]:
    """OPE on many sequences at once with a ``BatchTracker``: up to ``batch`` advance in one forward.

    Each sequence is initialised on frame 0 with its ground truth, exactly as ``run_sequence``; a
    finished sequence's slot goes to the next one. Returns the (N, 4) xyxy boxes of each sequence.
    """
    for seq in sequences:
        init = np.asarray(seq.boxes[0], dtype=np.float64) if len(seq) else np.full(4, np.nan)
        if not np.isfinite(init).all() or init[2] <= init[0] or init[3] <= init[1]:
            raise ValueError(f"sequence {seq.key}: frame 0 has no usable box to initialise on ({init.tolist()})")
    boxes = [np.zeros((len(seq), 4)) for seq in sequences]
    waiting = list(range(len(sequences)))[::-1]  # popped from the end: in order
    active: dict[int, int] = {}  # sequence index -> its next frame
    while waiting or active:
        while waiting and len(active) < batch:
            i = waiting.pop()
            seq = sequences[i]
            boxes[i][0] = seq.boxes[0]
            tracker.init(i, seq.load_frame(0), boxes[i][0].copy())
            if len(seq) > 1:
                active[i] = 1
            else:
                tracker.remove(i)
        for i, (box, _score) in tracker.track({i: sequences[i].load_frame(f) for i, f in active.items()}).items():
            boxes[i][active[i]] = box
            active[i] += 1
            if active[i] == len(sequences[i]):
                del active[i]
                tracker.remove(i)
    return boxes


def toolkit_offset(seq: Sequence) -> float:
    """Readers' 0-based boxes + this = the benchmark's coordinates its result files use."""
    return BENCHMARKS[seq.dataset].toolkit_offset if seq.dataset in BENCHMARKS else 0.0


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


def pending_tasks(sequences: list[Sequence], out_dir: str | Path, tracker_name: str, param: str, repeat: int = 1,
                  rank: int = 0, world_size: int = 1) -> list[tuple[Sequence, str]]:
    """(sequence, result path) of this rank's share that has no result file yet."""
    tasks = [(seq, str(result_file(out_dir, tracker_name, param, r, seq.name))) for r in range(repeat)
             for seq in sequences]
    return [t for t in tasks[rank::world_size] if not os.path.exists(t[1])]


def run_benchmark(tracker_factory: Callable[[], SOTTracker], sequences: list[Sequence], out_dir: str | Path,
                  tracker_name: str, param: str = "default", repeat: int = 1, num_workers: int = 1,
                  rank: int | None = None, world_size: int | None = None, record: RunRecord | None = None,
                  log: Callable[[str], None] | None = print) -> list[str]:
    """Track every pending (run, sequence) of this rank; returns the result files written.

    ``record`` (default: ``tracker_factory.record()`` if it has one) is checked against every run
    folder first: results of another model under the same name are refused, never mixed.
    """
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if record is None and hasattr(tracker_factory, "record"):
        record = tracker_factory.record()
    if record is not None:
        for r in range(repeat):
            claim_run_folder(Path(out_dir) / tracker_name / run_name(param, r), record)
    tasks = pending_tasks(sequences, out_dir, tracker_name, param, repeat, rank, world_size)
    total = len(sequences) * repeat
    if log:
        log(f"[rank {rank}/{world_size}] {len(tasks)} of {total} sequence runs to do "
            f"(others done or on other ranks) -> {Path(out_dir) / tracker_name / param}_NNN")
    jobs = [(seq, path, toolkit_offset(seq)) for seq, path in tasks]
    done: list[str] = []
    if num_workers <= 1 or not jobs:
        _worker_init(tracker_factory)  # loaded even with nothing to do: a broken model is never hidden
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


# ------------------------------------------------------------------------------ scoring
class ResultLengthError(ResultFileError):
    """Result files whose frame count differs from the ground truth (the message lists every one)."""


def _fit(gt: GroundTruth, m: int, policy: str) -> tuple[GroundTruth, int]:
    """Ground truth cut to ``m`` frames (truncate) or the number of empty boxes to pad with."""
    if m >= len(gt) or policy == "pad":
        return gt, max(len(gt) - m, 0)
    cut = GroundTruth(gt.name, gt.boxes[:m], gt.source, None if gt.visible is None else gt.visible[:m],
                      None if gt.cover is None else gt.cover[:m], gt.resolution)
    return cut, 0


def evaluate_results(gts: list[GroundTruth], out_dir: str | Path, tracker_name: str, param: str,
                     convention: str | Convention, benchmark: str, runs: list[str] | None = None,
                     length: str = "error") -> Summary:
    """Score every run folder of ``tracker_name``/``param`` (runs averaged per sequence) -> Summary.

    ``length``: what to do with a result file shorter than the ground truth (one frame short is
    common in published results): "error" lists every such file; "truncate" cuts the ground
    truth to the result (got10k-toolkit's ExperimentOTB/LaSOT); "pad" adds empty boxes, i.e.
    misses (pytracking). Longer files are cut to the ground truth, as pytracking and the LaSOT
    toolkit do, with a note.
    """
    if length not in LENGTH_POLICIES:
        raise ValueError(f"length must be one of {LENGTH_POLICIES}, not {length!r}")
    conv = get_convention(convention)
    tdir = Path(out_dir) / tracker_name
    runs = runs if runs is not None else list_runs(out_dir, tracker_name, param)
    if not runs:
        raise FileNotFoundError(f"no run folders {tdir / param}_NNN holding result files "
                                f"(expected {tdir / run_name(param, 0)}/<sequence>.txt)")
    records = {r: read_record(tdir / r) for r in runs}
    keys = {rec.key for rec in records.values() if rec is not None}
    if len(keys) > 1:
        lines = [f"  {tdir / r}: {rec.describe() if rec else 'no record'}" for r, rec in records.items()]
        raise ResultFileError(f"the runs of {tracker_name}/{param} were produced by different models or "
                              "settings and are not averaged:\n" + "\n".join(lines))
    loaded: list[list[tuple[np.ndarray, np.ndarray | None, Path]]] = []
    short, long_ = [], []
    for gt in gts:
        row = []
        for r in runs:
            path = tdir / r / f"{gt.name}.txt"
            boxes, times = read_sequence_result(path)
            if len(boxes) < len(gt):
                short.append(f"  {path}: {len(boxes)} boxes for the {len(gt)} frames of {gt.source} "
                             f"({len(gt) - len(boxes)} short)")
            elif len(boxes) > len(gt):
                long_.append(str(path))
                boxes = boxes[: len(gt)]
                times = None if times is None else times[: len(gt)]
            row.append((boxes, times, path))
        loaded.append(row)
    if short and length == "error":
        raise ResultLengthError(
            f"{len(short)} result file(s) have fewer boxes than the ground truth has frames:\n" + "\n".join(short)
            + "\nscore them with --length-mismatch truncate (cut the ground truth to the result, as got10k-toolkit "
            "does) or --length-mismatch pad (the missing frames count as misses, as pytracking does)")
    per_seq: list[list[SequenceScore]] = []
    for gt, row in zip(gts, loaded):
        scores = []
        for boxes, times, path in row:
            g, pad = _fit(gt, len(boxes), length)
            scores.append(score_sequence(conv, boxes, g.boxes, visible=g.visible, cover=g.cover,
                                         resolution=g.resolution, benchmark=benchmark, name=gt.name, pad=pad,
                                         times=times, pred_source=str(path), gt_source=gt.source))
        per_seq.append(scores)
    display = get_benchmark(benchmark).display if benchmark in BENCHMARKS else benchmark
    s = summarize(conv, per_seq, tracker=f"{tracker_name}/{param}", benchmark=benchmark, run_names=runs,
                  display=display)
    if long_:
        s.notes.append(f"{len(long_)} result file(s) longer than the ground truth were cut to it "
                       f"(as pytracking and the LaSOT toolkit do), e.g. {long_[0]}")
    if short:
        how = "the ground truth cut to the result" if length == "truncate" else "empty boxes added (misses)"
        s.notes.append(f"{len(short)} result file(s) shorter than the ground truth scored with {how}")
    rec = next((v for v in records.values() if v is not None), None)
    if rec is not None:
        s.notes.append(f"model: {rec.describe()}")
    return s


def write_submission(benchmark: str, gts: list[GroundTruth], out_dir: str | Path, tracker_name: str,
                     param: str) -> Path:
    """GOT-10k / TrackingNet submission zip from the result files of every run (boxes rasterized)."""
    b = get_benchmark(benchmark)
    tdir = Path(out_dir) / tracker_name
    runs = list_runs(out_dir, tracker_name, param)
    if not runs:
        raise FileNotFoundError(f"no run folders {tdir / param}_NNN to submit")
    loaded = [{g.name: read_sequence_result(tdir / r / f"{g.name}.txt") for g in gts} for r in runs]
    if b.server == "got10k":
        return write_got10k_zip(tdir / f"{param}_got10k_test.zip", loaded, rasterize=b.rasterize)
    return write_trackingnet_zip(tdir / f"{param}_trackingnet.zip", {k: v for k, (v, _) in loaded[0].items()},
                                 rasterize=b.rasterize)
