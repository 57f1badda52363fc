"""Benchmark runner with a test-double tracker (GT + a known shift): resume, ranks, workers, repeats."""
from __future__ import annotations

import os

import numpy as np
import pytest

from lorat_scale.boxes import xyxy_to_xywh
from lorat_scale.data.readers import otb
from lorat_scale.data.sequence import Sequence
from lorat_scale.evaluation.benchmarks import GroundTruth
from lorat_scale.evaluation.results import ResultFileError, RunRecord, read_sequence_result
from lorat_scale.evaluation.runner import evaluate_results, pending_tasks, run_benchmark

N = 12  # frames per test sequence (decoding real frames is the slow part)
IOU_THRESHOLDS = np.linspace(0, 1, 21)


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


def _gts(seqs: list[Sequence]) -> list[GroundTruth]:
    return [GroundTruth(s.name, xyxy_to_xywh(s.boxes), s.name) for s in seqs]


def _expected_auc(seq: Sequence, dx: float) -> float:
    """Hand formula: frame 0 is the GT (IoU 1 -> 20 of 21 thresholds); others IoU = (w - dx) / (w + dx)."""
    w = seq.boxes[:, 2] - seq.boxes[:, 0]
    iou = (w - dx) / (w + dx)
    hits = [(IOU_THRESHOLDS < v).sum() for v in iou[1:]]
    return (20 + sum(hits)) / (21 * len(seq))


def test_run_resume_and_metrics(tmp_path, seqs):
    f = Factory(seqs, dx=2.0)
    written = run_benchmark(f, seqs, tmp_path, "shift2", "p", log=None)
    assert len(written) == 3 and f.built == 1
    boxes, times = read_sequence_result(tmp_path / "shift2" / "p_000" / "A.txt")
    assert boxes[0].tolist() == xyxy_to_xywh(seqs[0].boxes[0]).tolist()  # frame 0 = the init box
    assert boxes[1] == pytest.approx(xyxy_to_xywh(seqs[0].boxes[1] + [2, 0, 2, 0]))
    assert times is not None and len(times) == N
    # Resume: nothing left to run, but the tracker is still built (a broken model is never hidden);
    # remove one result and only that one runs again.
    assert run_benchmark(f, seqs, tmp_path, "shift2", "p", log=None) == [] and f.built == 2
    (tmp_path / "shift2" / "p_000" / "B.txt").unlink()
    assert [p.rsplit("/", 1)[1] for p in run_benchmark(f, seqs, tmp_path, "shift2", "p", log=None)] == ["B.txt"]
    s = evaluate_results(_gts(seqs), tmp_path, "shift2", "p", "stark", "otb")
    assert s.scores["P"] == 100.0 and s.scores["P_norm"] == 100.0  # 2 px shift; 2 / w < 0.2 for these boxes
    assert s.scores["AUC"] == pytest.approx(100 * np.mean([_expected_auc(q, 2.0) for q in seqs]), abs=1e-4)
    assert "by convention stark (STARK analysis" in str(s) and "shift2/p" in str(s) and "OTB-100" in str(s)


def test_ranks_split_the_work_and_repeats_average(tmp_path, seqs):
    t0 = pending_tasks(seqs, tmp_path, "t", "p", repeat=2, rank=0, world_size=2)
    t1 = pending_tasks(seqs, tmp_path, "t", "p", repeat=2, rank=1, world_size=2)
    p0, p1 = {p for _, p in t0}, {p for _, p in t1}
    assert len(p0) == len(p1) == 3 and not p0 & p1 and len(p0 | p1) == 6
    f = Factory(seqs, dx=3.0, jitter=1.5)
    run_benchmark(f, seqs, tmp_path, "t", "p", repeat=2, rank=0, world_size=2, log=None)
    with pytest.raises(ResultFileError, match="p_001/A.txt: result file not found"):  # rank 1's share
        evaluate_results(_gts(seqs), tmp_path, "t", "p", "mmtracking", "otb")
    run_benchmark(f, seqs, tmp_path, "t", "p", repeat=2, rank=1, world_size=2, log=None)
    both = evaluate_results(_gts(seqs), tmp_path, "t", "p", "mmtracking", "otb")
    r1 = evaluate_results(_gts(seqs), tmp_path, "t", "p", "mmtracking", "otb", runs=["p_000"])
    r2 = evaluate_results(_gts(seqs), tmp_path, "t", "p", "mmtracking", "otb", runs=["p_001"])
    assert r1.scores["AUC"] != r2.scores["AUC"]  # the jitter differs between runs
    assert both.scores["AUC"] == pytest.approx((r1.scores["AUC"] + r2.scores["AUC"]) / 2, abs=1e-12)
    assert both.runs == ["p_000", "p_001"]


class Recorded(Factory):
    """A factory that says what model it is (as LoRATFactory does with content hashes)."""

    def __init__(self, seqs, dx, name):
        super().__init__(seqs, dx)
        self.name = name

    def record(self):
        return RunRecord({"model": self.name}, {"checkpoint": f"{self.name}/model.safetensors"})


def test_results_of_another_model_are_refused_not_mixed(tmp_path, seqs):
    run_benchmark(Recorded(seqs[:1], 1.0, "runA"), seqs[:1], tmp_path, "t", "p", log=None)
    b = Recorded(seqs[:2], 5.0, "runB")
    with pytest.raises(ResultFileError, match=r"p_000 holds results of another model.*runA.*runB"):
        run_benchmark(b, seqs[:2], tmp_path, "t", "p", log=None)
    assert b.built == 0 and not (tmp_path / "t" / "p_000" / "B.txt").exists()
    # Runs of one name produced by different models are not averaged either
    run_benchmark(b, seqs[:1], tmp_path, "t", "q", log=None)
    (tmp_path / "t" / "q_000").rename(tmp_path / "t" / "p_001")
    with pytest.raises(ResultFileError, match="produced by different models or settings and are not averaged"):
        evaluate_results(_gts(seqs[:1]), tmp_path, "t", "p", "stark", "otb")


class Broken(Factory):
    def __call__(self):
        t = super().__call__()
        t.track = lambda frame: (_ for _ in ()).throw(ValueError("model exploded"))
        return t


def test_tracker_error_names_the_sequence(tmp_path, seqs):
    with pytest.raises(RuntimeError, match=r"tracking otb/A .* failed: ValueError: model exploded"):
        run_benchmark(Broken(seqs[:1], dx=0.0), seqs[:1], tmp_path, "broken", "p", log=None)
    assert not (tmp_path / "broken" / "p_000" / "A.txt").exists()


def test_process_pool_workers(tmp_path, seqs):
    f = Factory(seqs, dx=2.0)
    written = run_benchmark(f, seqs, tmp_path, "pool", "p", num_workers=2, log=None)
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["A.txt", "B.txt", "C.txt"]
    s = evaluate_results(_gts(seqs), tmp_path, "pool", "p", "got10k", "otb")
    assert s.scores["AUC"] == pytest.approx(100 * np.mean([_expected_auc(q, 2.0) for q in seqs]), abs=1e-9)


def test_lasot_results_are_in_the_toolkit_coordinates(tmp_path, shared_data):
    """The LaSOT reader makes boxes 0-based; result files must be 1-based like the official toolkit."""
    from lorat_scale.evaluation.benchmarks import load_ground_truth, load_sequences

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
    seqs = load_sequences("lasot", tmp_path / "lasot")
    assert seqs[0].boxes[0].tolist() == [366, 100, 407, 116]  # 0-based inside lorat_scale
    run_benchmark(Factory(seqs, dx=0.0), seqs, tmp_path / "res", "gt", "p", log=None)
    written = (tmp_path / "res" / "gt" / "p_000" / "airplane-1.txt").read_text().splitlines()
    assert [[float(v) for v in ln.split()] for ln in written] == [[float(v) for v in ln.split(",")]
                                                                   for ln in gt_lines]
    gts = load_ground_truth("lasot", tmp_path / "lasot")
    s = evaluate_results(gts, tmp_path / "res", "gt", "p", "pytracking", "lasot")
    assert s.scores["AUC"] == pytest.approx(100 * 20 / 21, abs=1e-4)
