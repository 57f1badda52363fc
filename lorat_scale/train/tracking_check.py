"""The periodic tracking check during training: the current weights track benchmark sequences.

The paper tracks GOT-10k val every 10 epochs and at the end of training, beside the validation
loss: a loss says little about whether the tracker follows its object, AUC and AO do. Any
benchmark of ``lorat-scale evaluate`` works here (``data.track_sources``), every
``train.track_every_epochs`` epochs and after the last step.

Each rank tracks every world-th sequence (one-pass evaluation from the first frame's ground truth,
``train.track_batch`` sequences per forward) with the training model itself in eval mode, LoRA
un-merged (merging would need a second copy of the model), and writes pytracking-layout result
files; rank 0 scores them with the benchmark's convention, the same code as ``lorat-scale
evaluate``. The files stay in the run directory, one folder per check, so that

    lorat-scale report --benchmark got10k_val --root /data/GOT-10k --results runs/L-224/tracking/got10k_val

draws every check's success and precision curves in one plot.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data.sequence import Sequence
from ..evaluation.benchmarks import Benchmark, GroundTruth, get_benchmark, load_ground_truth, load_sequences
from ..evaluation.results import result_file, write_sequence_result
from ..evaluation.runner import evaluate_results, run_sequences_batched, toolkit_offset

TRACKER = "lorat"  # results: <output_dir>/tracking/<benchmark>/lorat/step_XXXXXXXX_000/<sequence>.txt


@dataclass
class TrackSet:
    """One benchmark's sequences for the check: frames to track and the ground truth to score."""

    benchmark: Benchmark
    sequences: list[Sequence]
    ground_truth: list[GroundTruth]
    truncated: bool  # frames were cut to train.track_max_frames (scored against the same frames)


def parse_track_source(entry: str) -> tuple[str, list[str], str]:
    """``benchmark[:seq+seq]=root`` -> (benchmark, sequence names or [] for all, root)."""
    head, sep, root = entry.partition("=")
    name, _, seqs = head.partition(":")
    if not sep or not name or not root:
        raise ConfigError(f"data.track_sources entry {entry!r} must look like benchmark[:seq+seq]=root, "
                          "e.g. got10k_val=/data/GOT-10k or lasot:airplane-1+bird-2=/data/LaSOT")
    return name, [s for s in seqs.split("+") if s], root


def load_track_sets(entries: list[str], max_sequences: int = 0, max_frames: int = 0) -> list[TrackSet]:
    """The check's sequences and ground truth of each ``data.track_sources`` entry."""
    sets = []
    for entry in entries:
        name, names, root = parse_track_source(entry)
        try:
            b = get_benchmark(name)
        except ValueError as e:
            raise ConfigError(f"data.track_sources entry {entry!r}: {e}") from None
        if b.server:
            raise ConfigError(f"data.track_sources entry {entry!r}: {b.display} withholds its ground truth "
                              f"(scored by its server); check on a split with annotations, e.g. got10k_val")
        try:
            seqs = load_sequences(b.name, root, names)
            if max_sequences:
                seqs = seqs[:max_sequences]
            gts = load_ground_truth(b.name, root, [s.name for s in seqs])
        except (OSError, ValueError) as e:  # readers' errors name the file; say which entry led there
            raise ConfigError(f"data.track_sources entry {entry!r}: {e}") from None
        if max_frames:
            seqs = [dataclasses.replace(s, frames=s.frames[:max_frames], boxes=s.boxes[:max_frames],
                                        valid=s.valid[:max_frames]) for s in seqs]
        sets.append(TrackSet(b, seqs, gts, truncated=bool(max_frames)))
    return sets


@torch.no_grad()
def run_tracking_check(model: torch.nn.Module, cfg: Config, sets: list[TrackSet], out_dir: Path, step: int,
                       rank: int, world: int, device: torch.device,
                       barrier: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Track this rank's share of every set with ``model`` (the plain LoRAT module); rank 0 returns the scores.

    Scores are ``track/<benchmark>/<metric>`` in percent (AUC, P, P_norm, ... or AO, SR0.5, SR0.75);
    other ranks return {}. ``barrier`` waits for every rank's result files before scoring.
    """
    from ..tracking.tracker import BatchTracker  # the tracking stack is needed only when the check runs

    was_training = model.training
    # The training precision's autocast, as the reference tracks under the fp16 autocast it trains in.
    tracker = BatchTracker(model, cfg, device=device, precision=cfg.train.precision, merge=False,
                           compile=False)  # sets eval mode
    param = f"step_{step:08d}"
    try:
        for ts in sets:
            mine = ts.sequences[rank::world]
            for seq, boxes in zip(mine, run_sequences_batched(tracker, mine, cfg.train.track_batch)):
                path = result_file(out_dir / ts.benchmark.name, TRACKER, param, 0, seq.name)
                write_sequence_result(path, boxes, coord_offset=toolkit_offset(seq))
    finally:
        model.train(was_training)
    barrier()
    if rank != 0:
        return {}
    scores = {}
    for ts in sets:
        b = ts.benchmark
        s = evaluate_results(ts.ground_truth, out_dir / b.name, TRACKER, param, b.default_convention, b.name,
                             length="truncate" if ts.truncated else "error")
        scores |= {f"track/{b.name}/{k}": v for k, v in s.scores.items()}
    return scores
