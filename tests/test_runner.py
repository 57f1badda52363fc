"""Benchmark runner with a test-double tracker (GT + a known shift): resume, ranks, workers, repeats."""
from __future__ import annotations

import os

import numpy as np
import pytest

from lorat_scale.data.readers import otb
from lorat_scale.data.sequence import Sequence
from lorat_scale.evaluation.metrics import IOU_THRESHOLDS
from lorat_scale.evaluation.results import ResultFileError, read_sequence_result
from lorat_scale.evaluation.runner import evaluate_results, pending_tasks, run_benchmark

N = 12  # frames per test sequence (decoding real frames is the slow part)


class ShiftTracker:
    """Test double: looks the frame up in the GT and answers the GT box shifted right by ``dx`` px."""

    def __init__(self, gt_by_frame: dict[bytes, np.ndarray], dx: float, jitter: float = 0.0):
        self.gt, self.dx, self.jitter, self.inits = gt_by_frame, dx, jitter, 0
        self.rng = np.random.default_rng(0)

    def init(self, frame, box_xyxy):
        self.inits += 1

    def track(self, frame):
        box = self.gt[frame[::8, ::8].tobytes()] + [self.dx, 0, self.dx, 0]
        return box + self.rng.uniform(-self.jitter, self.jitter, 4), 1.0


class Factory:
    """Picklable factory (spawned pool workers rebuild the tracker from it)."""

    def __init__(self, seqs: list[Sequence], dx: float, jitter: float = 0.0):
        self.table = {s.load_frame(i)[::8, ::8].tobytes(): s.boxes[i] for s in seqs for i in range(len(s))}
        self.dx, self.jitter, self.built = dx, jitter, 0

    def __call__(self):
        self.built += 1
        return ShiftTracker(self.table, self.dx, self.jitter)


@pytest.fixture(scope="module")
def seqs(shared_data) -> list[Sequence]:
    c = otb.read(shared_data / "otb")[0]
    out = []
    for k, name in enumerate(["A", "B", "C"]):  # three short sequences cut from the real Crossing video
        sl = slice(10 * k, 10 * k + N)
        out.append(Sequence(name=name, dataset="otb", frames=c.frames[sl], boxes=c.boxes[sl], valid=c.valid[sl],
                            frame_size=c.frame_size))
    return out


def _expected_auc(seq: Sequence, dx: float) -> float:
    """Hand formula: frame 0 is the GT (IoU 1 -> 20 of 21 thresholds); others IoU = (w - dx) / (w + dx)."""
    w = seq.boxes[:, 2] - seq.boxes[:, 0]
    iou = (w - dx) / (w + dx)
    hits = [(IOU_THRESHOLDS < v).sum() for v in iou[1:]]
    return (20 + sum(hits)) / (21 * len(seq))


def test_run_resume_and_metrics(tmp_path, seqs):
    f = Factory(seqs, dx=2.0)
    written = run_benchmark(f, seqs, tmp_path, "shift2", log=None)
    assert len(written) == 3 and f.built == 1
    boxes, times = read_sequence_result(tmp_path / "shift2" / "run_001" / "A.txt", num_frames=N)
    assert boxes[0].tolist() == seqs[0].boxes[0].tolist()  # frame 0 = the init box
    assert boxes[1] == pytest.approx(seqs[0].boxes[1] + [2, 0, 2, 0])
    assert times is not None and len(times) == N
    # Resume: nothing left to do; remove one result and only that one runs again.
    assert run_benchmark(f, seqs, tmp_path, "shift2", log=None) == [] and f.built == 1  # no tracker built
    (tmp_path / "shift2" / "run_001" / "B.txt").unlink()
    assert [p.rsplit("/", 1)[1] for p in run_benchmark(f, seqs, tmp_path, "shift2", log=None)] == ["B.txt"]
    s = evaluate_results(seqs, tmp_path, "shift2", convention="stark")
    assert s.prec == 1.0 and s.norm_prec == 1.0  # 2 px shift; 2 / w < 0.2 for these boxes
    assert s.auc == pytest.approx(np.mean([_expected_auc(q, 2.0) for q in seqs]), abs=1e-12)
    assert "validity=stark" in str(s) and "shift2" in str(s)


def test_ranks_split_the_work_and_repeats_average(tmp_path, seqs):
    t0 = pending_tasks(seqs, tmp_path, "t", repeat=2, rank=0, world_size=2)
    t1 = pending_tasks(seqs, tmp_path, "t", repeat=2, rank=1, world_size=2)
    p0, p1 = {p for _, p in t0}, {p for _, p in t1}
    assert len(p0) == len(p1) == 3 and not p0 & p1 and len(p0 | p1) == 6
    f = Factory(seqs, dx=3.0, jitter=1.5)
    run_benchmark(f, seqs, tmp_path, "t", repeat=2, rank=0, world_size=2, log=None)
    with pytest.raises(ResultFileError, match="run_002/A.txt: result file not found"):  # rank 1's share
        evaluate_results(seqs, tmp_path, "t")
    run_benchmark(f, seqs, tmp_path, "t", repeat=2, rank=1, world_size=2, log=None)
    both = evaluate_results(seqs, tmp_path, "t")
    r1 = evaluate_results(seqs, tmp_path, "t", runs=["run_001"])
    r2 = evaluate_results(seqs, tmp_path, "t", runs=["run_002"])
    assert r1.auc != r2.auc  # the jitter differs between runs
    assert both.auc == pytest.approx((r1.auc + r2.auc) / 2, abs=1e-12)
    assert both.extra["runs"] == ["run_001", "run_002"]


class Broken(Factory):
    def __call__(self):
        t = super().__call__()
        t.track = lambda frame: (_ for _ in ()).throw(ValueError("model exploded"))
        return t


def test_tracker_error_names_the_sequence(tmp_path, seqs):
    with pytest.raises(RuntimeError, match=r"tracking otb/A .* failed: ValueError: model exploded"):
        run_benchmark(Broken(seqs[:1], dx=0.0), seqs[:1], tmp_path, "broken", log=None)
    assert not (tmp_path / "broken" / "run_001" / "A.txt").exists()


def test_process_pool_workers(tmp_path, seqs):
    f = Factory(seqs, dx=2.0)
    written = run_benchmark(f, seqs, tmp_path, "pool", num_workers=2, log=None)
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["A.txt", "B.txt", "C.txt"]
    s = evaluate_results(seqs, tmp_path, "pool")
    assert s.auc == pytest.approx(np.mean([_expected_auc(q, 2.0) for q in seqs]), abs=1e-12)


def test_lasot_results_are_in_the_toolkit_coordinates(tmp_path, shared_data):
    """The LaSOT reader makes boxes 0-based; result files must be 1-based like the official toolkit."""
    from lorat_scale.evaluation.runner import load_benchmark

    src = shared_data / "lasot" / "airplane" / "airplane-1"
    d = tmp_path / "lasot" / "airplane" / "airplane-1"
    (d / "img").mkdir(parents=True)
    for i in range(1, 9):
        os.symlink(src / "img" / f"{i:08d}.jpg", d / "img" / f"{i:08d}.jpg")
    gt_lines = (src / "groundtruth.txt").read_text().splitlines()[:8]
    (d / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    for flag in ("full_occlusion.txt", "out_of_view.txt"):
        (d / flag).write_text(",".join(["0"] * 8))
    (tmp_path / "lasot" / "testing_set.txt").write_text("airplane-1")
    seqs = load_benchmark("lasot", tmp_path / "lasot")
    assert seqs[0].boxes[0].tolist() == [366, 100, 407, 116]  # 0-based inside lorat_scale
    run_benchmark(Factory(seqs, dx=0.0), seqs, tmp_path / "res", "gt", log=None)
    written = (tmp_path / "res" / "gt" / "run_001" / "airplane-1.txt").read_text().splitlines()
    assert [[float(v) for v in ln.split(",")] for ln in written] == [[float(v) for v in ln.split(",")]
                                                                      for ln in gt_lines]
    s = evaluate_results(seqs, tmp_path / "res", "gt", convention="pytracking")
    assert s.auc == pytest.approx(20 / 21)
