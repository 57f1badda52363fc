"""Metric conventions, rule by rule: hand-computed cases for what each toolkit does differently.

The end-to-end equality with each toolkit's own numbers on real ground truth is in
``test_conventions.py``; here every rule that tells the toolkits apart gets a small case that
would fail if the rule were lost.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from lorat_scale.evaluation.metrics import (CONVENTIONS, MATLAB_OVERLAP, MetricsError, matlab_colon, score_sequence,
                                            summarize)
from lorat_scale.evaluation.results import read_boxes_txt

FULL = 20 / 21  # IoU 1 is not > 1.0: a perfect tracker scores 20/21 everywhere


def _score(conv, pred, gt, **kw):
    return summarize(conv, [[score_sequence(conv, pred, gt, **kw)]], benchmark=kw.get("benchmark", ""))


def test_matlab_colon_differs_from_linspace_exactly_where_matlab_rounds_from_the_end():
    assert MATLAB_OVERLAP.tolist() == matlab_colon(0.0, 0.05, 1.0).tolist()
    lin = np.linspace(0, 1, 21)
    differ = [round(float(t), 2) for t, u in zip(MATLAB_OVERLAP, lin) if t != u]
    assert differ == [0.6, 0.65, 0.7, 0.85, 0.95]
    assert MATLAB_OVERLAP[12] == 1 - 8 * 0.05 < lin[12]  # 0.6 vs 0.6000000000000001
    # An IoU that lands between the two: counted above 0.6 by the OTB toolkit, not by linspace.
    gt = np.array([[1.0, 1.0, 1.0, 1.0]] * 2)
    pred = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, float(lin[12]), 1.0]])  # IoU = 0.6000000000000001
    assert score_sequence("otb", pred, gt).curves["success"][12] == 1.0  # 0.6000000000000001 > 0.6
    assert score_sequence("got10k", pred, gt).curves["success"][12] == 0.5  # not > 0.6000000000000001


def test_mmtracking_fixture_reproduces_published_values(shared_data):
    root = shared_data / "annotations" / "mmtracking_ope_fixture"
    expected = json.loads((root / "EXPECTED.json").read_text())["expected"]
    runs = []
    for v in ("video-1", "video-2"):
        xyxy = read_boxes_txt(root / v / "track_results.txt")
        pred = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        runs.append([score_sequence("mmtracking", pred, read_boxes_txt(root / v / "gt_for_eval.txt"), name=v)])
    s = summarize("mmtracking", runs, benchmark="uav123")
    # mmtracking's evaluate() prints float(f"{v:.3f}")
    assert {k: float(f"{v:.3f}") for k, v in s.scores.items()} == {
        "AUC": expected["success"], "P": expected["precision"], "P_norm": expected["norm_precision"]}
    assert "mmtracking" in str(s) and "eval_sot_ope.py" in str(s)
    # The pytracking lineage replaces frame 0 by the ground truth: video-2's first prediction is off.
    st = summarize("stark", [[score_sequence("stark", r[0].pred, r[0].gt)] for r in _fixture(root)])
    assert float(f"{st.scores['AUC']:.3f}") != expected["success"]


def _fixture(root):
    out = []
    for v in ("video-1", "video-2"):
        xyxy = read_boxes_txt(root / v / "track_results.txt")
        rec = type("R", (), {})()
        rec.pred = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        rec.gt = read_boxes_txt(root / v / "gt_for_eval.txt")
        out.append([rec])
    return out


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_perfect_predictions(name):
    gt = np.array([[10, 20, 40, 40], [12, 22, 40, 40], [14, 24, 40, 40.5]], dtype=float)
    s = _score(name, gt, gt, benchmark="otb")
    assert s.scores["AUC"] == pytest.approx(100 * FULL, abs=1e-4)
    assert s.scores["P"] == pytest.approx(100.0)
    assert s.scores.get("P_norm", 100.0) == pytest.approx(100.0)


def test_invalid_prediction_takes_the_previous_box_in_the_matlab_toolkits():
    gt = np.array([[10, 10, 20, 20]] * 5, dtype=float)
    pred = gt.copy()
    pred[1] = [30, 30, 20, 20]  # a miss
    pred[2] = [np.nan] * 4  # invalid -> previous (the miss)
    pred[3] = [10, 10, -1, 20]  # negative width -> previous (still the miss)
    for conv in ("otb", "lasot"):
        succ = score_sequence(conv, pred, gt).curves["success"] * (5 + np.finfo(float).eps)
        assert succ[0] == 2, conv  # frames 0 and 4 hit; 1, 2, 3 all carry the miss
    with pytest.raises(MetricsError, match=r"res\.txt:3: box nan,nan,nan,nan is not valid for pytracking"):
        score_sequence("pytracking", pred, gt, pred_source="res.txt")
    # NaN in x alone: MATLAB's vector `if` needs all four elements true, so the OTB toolkit keeps the
    # box (x = NaN: max/min skip it, the overlap counts the full width), while the LaSOT toolkit's
    # sum(isnan(r)) replaces it.
    pred = gt.copy()
    pred[1] = [np.nan, 10, 20, 20]
    pred[2] = [50, 50, 20, 20]  # a miss, then NaN x again
    pred[3] = [np.nan, 10, 20, 20]
    otb = score_sequence("otb", pred, gt).curves["success"] * (5 + np.finfo(float).eps)
    lasot = score_sequence("lasot", pred, gt).curves["success"] * (5 + np.finfo(float).eps)
    assert otb[0] == 4 and lasot[0] == 3  # OTB: frames 1, 3 overlap fully; LaSOT: frame 3 = the miss


def test_invalid_ground_truth_centre_error_conventions():
    """OTB/LaSOT toolkits: invalid GT -> centre error -1 (a hit); pytracking: +inf (a miss), -1 on UAV."""
    gt = np.array([[10, 10, 20, 20], [0, 10, 20, 20], [10, 10, 20, 20], [10, 0, 20, 20]], dtype=float)
    pred = gt + [100, 100, 0, 0]
    pred[0] = gt[0]
    otb = score_sequence("otb", pred, gt).curves
    assert otb["precision"][0] * (4 + np.finfo(float).eps) == 3  # frame 0 + the two invalid frames
    assert otb["success"][0] * (4 + np.finfo(float).eps) == 1  # invalid frames: IoU -1
    pyt = score_sequence("pytracking", pred, gt, benchmark="otb").curves
    assert pyt["precision"][20] == np.float32(1 / 4) and pyt["norm_precision"][20] == np.float32(3 / 4)
    uav = score_sequence("pytracking", pred, gt, benchmark="uav123").curves
    assert uav["precision"][20] == np.float32(3 / 4)
    stark = score_sequence("stark", pred, gt, benchmark="otb").curves  # x or y = 0 is valid for STARK
    assert stark["precision"][20] == np.float32(1 / 4) and stark["norm_precision"][20] == np.float32(1 / 4)


def test_visibility_flags_only_on_lasot_family():
    """A perfect box on a frame flagged invisible: a miss where the toolkit uses the flags (LaSOT family)."""
    gt = np.array([[10, 10, 20, 20]] * 4, dtype=float)
    vis = np.array([1, 1, 0, 1], bool)
    for conv in ("stark", "pytracking", "mmtracking", "lasot"):
        for bench in ("lasot", "lasot_ext", "got10k_val", "nfs", "otb"):
            auc = _score(conv, gt, gt, visible=vis, benchmark=bench).scores["AUC"]
            want = 3 / 4 if bench.startswith("lasot") else 1.0
            assert auc == pytest.approx(100 * FULL * want, abs=1e-4), (conv, bench)
    # pytracking/STARK: invisible = invalid; on LaSOT (not LaSOT_ext) a miss for both centre errors
    p = {b: _score("stark", gt, gt, visible=vis, benchmark=b).scores for b in ("lasot", "lasot_ext")}
    assert (p["lasot"]["P"], p["lasot"]["P_norm"]) == pytest.approx((75.0, 75.0))
    assert (p["lasot_ext"]["P"], p["lasot_ext"]["P_norm"]) == pytest.approx((75.0, 100.0))
    # got10k-toolkit ignores them outside GOT-10k; on GOT-10k its cover labels decide
    assert _score("got10k", gt, gt, visible=vis, benchmark="lasot").scores["AUC"] == pytest.approx(100 * FULL)
    ao = _score("got10k", gt + [5, 0, 0, 0], gt, visible=vis, resolution=(100, 100), benchmark="got10k_val")
    assert ao.scores["AO"] == pytest.approx(100 * 300 / 500)  # frames 1 and 3 only (IoU 15*20/25*20)


def test_pytracking_errors_name_the_files():
    gt = np.array([[10, 10, 20, 20]] * 3, dtype=float)
    gt[1] = np.nan
    with pytest.raises(MetricsError, match=r"gt\.txt:2: unannotated \(NaN\) ground truth; pytracking"):
        score_sequence("pytracking", np.full((3, 4), 5.0), gt, gt_source="gt.txt")
    s = score_sequence("pytracking", np.full((3, 4), 5.0), gt, benchmark="uav123")  # allowed on UAV123
    assert s.curves["success"].dtype == np.float32


def test_zero_size_prediction_repeats_the_previous_box_chained():
    gt = np.array([[5, 5, 20, 20]] * 4, dtype=float)
    pred = gt.copy()
    pred[2] = [30, 30, 0, 10]
    pred[3] = [30, 30, 0, 0]
    for conv in ("pytracking", "stark", "otb", "lasot"):
        assert _score(conv, pred, gt).scores["AUC"] == pytest.approx(100 * FULL, abs=1e-4), conv
    # got10k and mmtracking take the empty box as it is: two misses
    for conv in ("got10k", "mmtracking"):
        assert _score(conv, pred, gt, benchmark="otb").scores["AUC"] == pytest.approx(100 * FULL / 2), conv


def test_got10k_rules():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    pred = gt.copy()
    pred[1] = [-10, 0, 20, 10]  # 20 wide, half outside the image
    pred[2] = [0, 0, 10, 10]
    cover = np.array([8, 8, 0])  # the last frame is fully occluded: not counted
    big = _score("got10k", pred, gt, cover=cover, resolution=(100, 100), benchmark="got10k_val").scores
    assert big["AO"] == pytest.approx(50.0)  # x clipped to 0, w = min(20, W - 0): shifted, not cut -> IoU 0.5
    small = _score("got10k", pred, gt, cover=cover, resolution=(10, 10), benchmark="got10k_val").scores
    assert small["AO"] == pytest.approx(100.0)  # w clipped to 10 on a 10 px image
    with pytest.raises(MetricsError, match="meta_info.ini"):
        score_sequence("got10k", pred, gt, benchmark="got10k_val")
    # Pooled over frames of all sequences, not a mean of per-sequence means
    long = [score_sequence("got10k", np.tile(gt[:1], (5, 1)), np.tile(gt[:1], (5, 1)), resolution=(100, 100),
                           benchmark="got10k_val")]
    one = [score_sequence("got10k", pred[:2], gt[:2], resolution=(100, 100), benchmark="got10k_val")]
    assert summarize("got10k", [one, long], benchmark="got10k_val").scores["AO"] == pytest.approx(100 * 4.5 / 5)
    # UAV123 / LaSOT: unannotated rows dropped (denominator = annotated frames); others keep them
    gt2 = np.array([[5, 5, 10, 10], [np.nan] * 4, [5, 5, 10, 10]], float)
    pred2 = np.array([[5, 5, 10, 10]] * 3, float)
    assert _score("got10k", pred2, gt2, benchmark="uav123").scores["P"] == pytest.approx(100.0)
    assert _score("got10k", pred2, gt2, benchmark="otb").scores["P"] == pytest.approx(200 / 3)


def test_got10k_lasot_normalized_precision_is_the_mean_of_its_curve():
    gt = np.array([[100, 100, 40, 40]] * 3, float)
    pred = gt + [8, 0, 0, 0]  # normalized error 0.2 on frames 1, 2
    s = _score("got10k", pred, gt, benchmark="lasot").scores
    curve = (np.linspace(0, 0.5, 51) >= 0.2 - 1e-12) * (2 / 3) + 1 / 3
    assert s["P_norm"] == pytest.approx(100 * curve.mean())


def test_sequences_with_an_all_zero_curve_leave_the_matlab_mean():
    gt = np.array([[10, 10, 20, 20]] * 3, dtype=float)
    lost = gt + [200, 200, 0, 0]
    lost[0] = gt[0]
    runs = [[score_sequence("otb", gt, gt)], [score_sequence("otb", lost, gt)]]
    # frame 0 is replaced by the GT, so the lost sequence still has 1/3 at low thresholds: kept
    s = summarize("otb", runs)
    assert s.scores["AUC"] == pytest.approx(100 * (FULL + FULL / 3) / 2, abs=1e-9)
    gt0 = np.array([[0, 0, 20, 20]] + [[10, 10, 20, 20]] * 2, dtype=float)  # frame 0 invalid (x = 0)
    zero = score_sequence("otb", lost, gt0)
    assert not zero.curves["success"].any()
    s2 = summarize("otb", [runs[0], [zero]])
    assert s2.scores["AUC"] == pytest.approx(100 * FULL) and "left out of its mean" in s2.notes[0]


def test_repeated_runs_are_averaged_per_sequence():
    gt = np.array([[10, 10, 20, 20]] * 4, dtype=float)
    shifted = gt + [5, 0, 0, 0]
    for conv in ("stark", "mmtracking", "lasot"):
        one = summarize(conv, [[score_sequence(conv, gt, gt)]]).scores["AUC"]
        two = summarize(conv, [[score_sequence(conv, shifted, gt)]]).scores["AUC"]
        both = summarize(conv, [[score_sequence(conv, gt, gt), score_sequence(conv, shifted, gt)]]).scores["AUC"]
        assert both == pytest.approx((one + two) / 2, abs=1e-4), conv
