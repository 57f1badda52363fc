"""OPE metrics: the published mmtracking fixture, hand-computed cases, the official LaSOT GT."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lorat_scale.boxes import xywh_to_xyxy
from lorat_scale.evaluation.metrics import (CONVENTIONS, Convention, MetricsError, average_runs,
                                            evaluate_sequence, get_convention, iou_xyxy, summarize,
                                            valid_frames)
from lorat_scale.evaluation.results import read_boxes_txt

FULL = 20 / 21  # IoU 1 is not > 1.0, so a perfect tracker scores 20/21 in the reference definition


def test_mmtracking_fixture_reproduces_published_values(shared_data):
    root = shared_data / "annotations" / "mmtracking_ope_fixture"
    expected = json.loads((root / "EXPECTED.json").read_text())["expected"]
    seqs = []
    for v in ("video-1", "video-2"):
        gt = xywh_to_xyxy(read_boxes_txt(root / v / "gt_for_eval.txt"))
        pred = read_boxes_txt(root / v / "track_results.txt")  # already x1,y1,x2,y2
        seqs.append(evaluate_sequence(pred, gt, name=v, convention="mmtracking"))
    s = summarize(seqs, "mmtracking")
    assert round(100 * s.auc, 3) == expected["success"] == 67.524
    assert 100 * s.prec == pytest.approx(expected["precision"], abs=1e-9)
    assert 100 * s.norm_prec == pytest.approx(expected["norm_precision"], abs=1e-9)
    assert "first frame=as predicted" in str(s) and "iou=continuous" in str(s)
    # The pytracking/STARK first-frame rule (prediction 0 := GT) changes video-2, so the preset matters.
    s2 = summarize([evaluate_sequence(read_boxes_txt(root / v / "track_results.txt"),
                                      xywh_to_xyxy(read_boxes_txt(root / v / "gt_for_eval.txt")))
                    for v in ("video-1", "video-2")])
    assert round(100 * s2.auc, 3) != 67.524
    # Pixel (+1) IoU on the same boxes: every box one pixel larger -> slightly higher success.
    s3 = summarize([evaluate_sequence(read_boxes_txt(root / v / "track_results.txt"),
                                      xywh_to_xyxy(read_boxes_txt(root / v / "gt_for_eval.txt")),
                                      convention=get_convention("mmtracking", iou="pixel"))
                    for v in ("video-1", "video-2")])
    assert s3.auc > s.auc and s3.prec == s.prec


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
@pytest.mark.parametrize("iou", ["continuous", "pixel"])
def test_perfect_predictions(name, iou):
    gt = np.array([[10, 20, 50, 60], [12, 22, 52, 62], [14, 24, 54, 64.5]], dtype=float)
    m = evaluate_sequence(gt, gt, convention=get_convention(name, iou=iou))
    assert m.auc == pytest.approx(FULL, abs=1e-12)
    assert m.success[-1] == 0.0 and m.success[:-1].min() == 1.0
    assert m.prec == 1.0 and m.norm_prec == 1.0
    assert m.ao == 1.0 and m.sr50 == 1.0 and m.sr75 == 1.0
    assert len(m.got_ious) == 2  # GOT-10k skips the first frame


def test_shifted_box_exact_precision_and_success():
    gt = np.tile([[100.0, 100.0, 140.0, 140.0]], (5, 1))  # 40 x 40
    pred = gt + [12.0, 16.0, 12.0, 16.0]  # centre error exactly 20 px (3-4-5)
    m = evaluate_sequence(pred, gt)  # frame 0 is replaced by the GT (init box)
    assert m.precision[19] == pytest.approx(1 / 5) and m.precision[20] == 1.0
    iou = (28 * 24) / (2 * 1600 - 28 * 24)  # 0.2658...
    assert iou_xyxy(pred[1:2], gt[1:2])[0] == pytest.approx(iou)
    n_hit = int(np.sum(np.linspace(0, 1, 21) < iou))  # thresholds 0 .. 0.25 -> 6
    assert n_hit == 6
    expected_auc = (1 / 5) * FULL + (4 / 5) * n_hit / 21
    assert m.auc == pytest.approx(expected_auc, abs=1e-12)
    assert m.norm_prec == pytest.approx(1 / 5)  # normalized error 0.5 > 0.2
    assert m.ao == pytest.approx(iou) and m.sr50 == 0.0
    m2 = evaluate_sequence(pred, gt, convention="mmtracking")  # no first-frame replacement
    assert m2.precision[20] == 1.0 and m2.precision[19] == 0.0


def test_pixel_iou_convention():
    a, b = np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 1, 3, 3]])
    assert iou_xyxy(a, b)[0] == pytest.approx(1 / 7)
    assert iou_xyxy(a, b, offset=1)[0] == pytest.approx(4 / 14)
    assert iou_xyxy(a, np.array([[2.0, 2, 4, 4]]))[0] == 0.0  # touching: no overlap (continuous)
    assert iou_xyxy(a, np.array([[2.0, 2, 4, 4]]), offset=1)[0] == pytest.approx(1 / 17)  # shares pixel (2,2)


def test_validity_conventions_differ_on_border_boxes():
    gt = np.array([[5, 5, 25, 25], [0, 5, 20, 25], [5, 5, 25, 25], [5, 0, 25, 20]], dtype=float)
    st = evaluate_sequence(gt, gt, convention="stark")
    py = evaluate_sequence(gt, gt, convention="pytracking")
    assert st.auc == pytest.approx(FULL)
    assert py.auc == pytest.approx(FULL * 2 / 4)  # x == 0 or y == 0: invalid -> IoU -1
    assert py.prec == pytest.approx(2 / 4)  # centre error +inf on invalid frames
    assert py.norm_prec == 1.0  # ...but normalized error -1: the reference counts them as hits
    assert py.num_valid == 2 and st.num_valid == 4
    pe = evaluate_sequence(gt, gt, convention=Convention(validity="pytracking", exclude_invalid=True))
    assert pe.auc == pytest.approx(FULL)


def test_absent_frames_lasot_vs_others_and_uav():
    gt = np.array([[5, 5, 25, 25]] * 4, dtype=float)
    gt[2] = np.nan  # unannotated
    vis = np.array([1, 1, 0, 1], bool)
    pred = np.nan_to_num(gt, nan=7.0)  # a tracker still outputs a box on the absent frame
    for ds, prec, nprec in (("lasot", 3 / 4, 3 / 4), ("got10k", 3 / 4, 1.0), ("uav123", 1.0, 1.0)):
        m = evaluate_sequence(pred, gt, vis, dataset=ds)
        assert m.auc == pytest.approx(FULL * 3 / 4), ds
        assert (m.prec, m.norm_prec) == pytest.approx((prec, nprec)), ds
        assert len(m.got_ious) == 2  # frame 0 skipped, absent frame dropped


def test_degenerate_and_bad_predictions():
    gt = np.array([[5, 5, 25, 25]] * 4, dtype=float)
    pred = gt.copy()
    pred[2] = [30, 30, 30, 40]  # zero width -> previous prediction is used
    pred[3] = [30, 30, 30, 30]  # chained
    m = evaluate_sequence(pred, gt)
    assert m.auc == pytest.approx(FULL)
    bad = gt.copy()
    bad[1] = [10, 10, 5, 20]
    with pytest.raises(MetricsError, match="frame 1: invalid prediction"):
        evaluate_sequence(bad, gt, name="seqA")
    with pytest.raises(MetricsError, match="seqA: 3 predicted boxes but 4"):
        evaluate_sequence(gt[:3], gt, name="seqA")


def test_got10k_clipping_and_frame_weighting():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    pred = np.array([[0, 0, 10, 10], [-10, 0, 10, 10]], float)  # 20 wide, half outside the image
    m_noclip = evaluate_sequence(pred, gt)
    assert m_noclip.ao == pytest.approx(0.5)
    # Toolkit bound: x -> 0, w = min(20, W - 0) = 20 on a 100 px image: shifted, not cut -> IoU 0.5
    assert evaluate_sequence(pred, gt, frame_size=(100, 100)).ao == pytest.approx(0.5)
    # On a 10 px image w is clipped to 10 -> IoU 1
    assert evaluate_sequence(pred, gt, frame_size=(10, 10)).ao == pytest.approx(1.0)
    long = evaluate_sequence(np.tile(gt[:1], (5, 1)), np.tile(gt[:1], (5, 1)))  # 4 counted IoUs of 1
    s = summarize([m_noclip, long])
    assert s.ao == pytest.approx((0.5 + 4) / 5)  # frame-weighted, not (0.5 + 1) / 2
    avg = average_runs([m_noclip, long])
    assert avg.auc == pytest.approx((m_noclip.auc + long.auc) / 2)


@pytest.fixture(scope="module")
def lasot_gt(shared_data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official LaSOT test GT: name -> (x,y,w,h boxes, absent flags), parsed once for two tests."""
    root = shared_data / "annotations" / "lasot_test"
    names = (root / "testing_set.txt").read_text().split()
    return {n: (read_boxes_txt(root / "boxes" / f"{n}.txt"),
                read_boxes_txt(root / "absent" / f"{n}.txt", ncols=1).reshape(-1).astype(bool)) for n in names}


def test_lasot_official_annotations_parse(lasot_gt):
    assert len(lasot_gt) == 280
    assert sum(len(b) for b, _ in lasot_gt.values()) == 685_360
    assert all(len(b) == len(a) for b, a in lasot_gt.values())
    assert lasot_gt["airplane-1"][0][0].tolist() == [367, 101, 41, 16]


def test_lasot_gt_against_itself_gives_the_maximum(lasot_gt):
    seqs_st, seqs_py, fr_valid_st, fr_valid_py, visible, lost_0based = [], [], [], [], 0, 0
    for n, (xywh, absent) in lasot_gt.items():
        gt = xywh_to_xyxy(xywh)
        # Two GT rows have negative sizes (lion-5 line 553, tiger-6 line 118); a tracker cannot
        # output those, so the "prediction" is the GT with sizes clipped at 0 (then carried forward).
        pred = xywh_to_xyxy(np.concatenate([xywh[:, :2], np.clip(xywh[:, 2:], 0, None)], axis=1))
        for conv, out, frac in (("stark", seqs_st, fr_valid_st), ("pytracking", seqs_py, fr_valid_py)):
            m = evaluate_sequence(pred, gt, ~absent, name=n, dataset="lasot", convention=conv)
            out.append(m)
            frac.append(m.num_valid / m.num_frames)
            # GT vs GT: the success curve is the valid fraction at t < 1 and 0 at t = 1.
            assert m.auc == pytest.approx(FULL * m.num_valid / m.num_frames, abs=1e-12), n
        visible += int((~absent).sum())
        # The pytracking rule (x, y > 0) depends on the origin: shifted to 0-based, border boxes
        # at x or y = 1 become invalid. So metrics must see the benchmark's own coordinates.
        lost_0based += seqs_py[-1].num_valid - int(valid_frames(gt - 1, ~absent, "pytracking").sum())
    st, py = summarize(seqs_st, "stark"), summarize(seqs_py, "pytracking")
    assert st.auc == pytest.approx(FULL * np.mean(fr_valid_st), abs=1e-12)
    assert py.auc == pytest.approx(FULL * np.mean(fr_valid_py), abs=1e-12)
    # In LaSOT's 1-based file coordinates no visible box has x or y <= 0: both rules agree.
    assert py.auc == st.auc < FULL
    assert sum(m.num_valid for m in seqs_st) == visible - 3  # 3 visible frames with w or h <= 0
    assert lost_0based == 27_578
    assert st.prec == pytest.approx(np.mean(fr_valid_st))  # absent frames are misses on LaSOT
    n_got = sum(len(m.got_ious) for m in seqs_st)  # frame 0 skipped, visible frames only
    assert st.ao * n_got == pytest.approx(n_got - 3)  # the 3 degenerate GT boxes give IoU 0
