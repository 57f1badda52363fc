"""Each convention equals its toolkit's own numbers on real ground truth, exactly (==, not approx).

Inputs: the real annotations in ../shared/data (LaSOT's 280 test sequences with their absent
flags, the same boxes moved to 0-based, OTB Crossing, VOT bag and ball1, LaSOT airplane-1) and the
deterministic predictions of ``_ope_inputs`` (``dirty``: NaN rows, empty and negative sizes, a
NaN x alone, boxes at the origin; ``short``: every result one frame short, padded).

got10k-toolkit is a test dependency and is called here. The other toolkits were run once on
exactly these inputs, and their printed numbers are recorded below at full float precision:

* ``otb``: the OTB toolkit's calcSeqErrRobust.m and calcRectInt.m (tracker_benchmark v1.0), with
  genPerfMat.m's counting and perfPlot.m's mean, run by GNU Octave 7.3. Octave builds
  ``0:0.05:1`` as base + k*step, unlike MATLAB, so the thresholds were built with MATLAB's own
  colon algorithm (Moler's colonop.m); everything else is the toolkit's code.
* ``lasot``: the LaSOT toolkit's calc_seq_err_robust.m and calc_rect_int.m
  (HengLan/LaSOT_Evaluation_Toolkit@95bf38a) with eval_tracker.m's counting and
  plot_draw_save.m's mean, run the same way.
* ``pytracking`` / ``stark``: ``print_results`` of visionml/pytracking@7eb9e74 and
  researchmm/Stark@162e1d3 (its score dict captured), reading result files that lorat_scale
  wrote in the pytracking layout (so that layout is checked too); 3-run rows use
  ``merge_results=True``.
* ``mmtracking``: ``eval_sot_ope`` of open-mmlab/mmtracking@e79491ec with mmdet 2.x
  ``bbox_overlaps``; LaSOT rows with its ``only_eval_visible`` visibility.
* ``got10k`` on LaSOT: ``ExperimentLaSOT.report`` of got-10k/toolkit@956e728 (GitHub only).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from _ope_inputs import predictions, real_sets
from lorat_scale.evaluation.metrics import score_sequence, summarize

# (convention, input set, predictions, runs, the toolkit's numbers in percent)
TOOLKIT_NUMBERS = [
    ("otb", "lasot_test", "clean", 1, {"AUC": 44.72200785062138, "P": 32.72454339642848}),
    ("otb", "lasot_test", "dirty", 1, {"AUC": 44.06716209886708, "P": 31.25397388117264}),
    ("otb", "lasot_test_0based", "clean", 1, {"AUC": 42.79273787809328, "P": 36.44511332474652}),
    ("otb", "otb", "dirty", 1, {"AUC": 50.51587301587299, "P": 94.16666666666667}),
    ("otb", "vot", "dirty", 1, {"AUC": 50.06640751538713, "P": 58.16326530612245}),
    ("lasot", "lasot_test", "clean", 1, {"AUC": 44.234542206371366, "P": 30.607809982952528,
                                         "P_norm": 28.90428468096483}),
    ("lasot", "lasot_test", "dirty", 1, {"AUC": 43.11754335652091, "P": 29.70699910390587,
                                         "P_norm": 28.081810267958907}),
    ("lasot", "lasot_test_0based", "dirty", 1, {"AUC": 41.33214700157558, "P": 33.32805247037942,
                                                "P_norm": 30.9681475647527}),
    ("lasot", "vot", "dirty", 1, {"AUC": 49.80239714933593, "P": 59.1156462585034, "P_norm": 27.721088435374153}),
    ("lasot", "lasot_sample", "dirty", 1, {"AUC": 50.7142857142857, "P": 90.0, "P_norm": 30.333333333333336}),
    ("pytracking", "lasot_test", "clean", 1, {"AUC": 44.23450469970703, "P": 30.607303619384766,
                                              "P_norm": 28.904285430908203, "OP50": 47.224090576171875,
                                              "OP75": 3.4202418327331543}),
    ("pytracking", "lasot_test_0based", "clean", 1, {"AUC": 42.41927719116211, "P": 30.15705108642578,
                                                     "P_norm": 31.765960693359375, "OP50": 45.288299560546875,
                                                     "OP75": 3.281919240951538}),
    ("pytracking", "otb", "clean", 3, {"AUC": 51.99735641479492, "P": 99.72222137451172, "P_norm": 31.388891220092773,
                                       "OP50": 53.888885498046875, "OP75": 3.8888890743255615}),
    ("pytracking", "vot", "clean", 3, {"AUC": 51.659912109375, "P": 63.53741455078125, "P_norm": 30.91836929321289,
                                       "OP50": 52.012474060058594, "OP75": 4.676870822906494}),
    ("pytracking", "vot", "short", 3, {"AUC": 51.30061340332031, "P": 63.13492202758789, "P_norm": 30.674604415893555,
                                       "OP50": 51.609981536865234, "OP75": 4.676870822906494}),
    ("pytracking", "lasot_sample", "clean", 3, {"AUC": 52.33333206176758, "P": 93.22222137451172,
                                                "P_norm": 33.22222137451172, "OP50": 55.888885498046875,
                                                "OP75": 4.777777671813965}),
    ("stark", "lasot_test_0based", "clean", 1, {"AUC": 44.23450469970703, "P": 30.607303619384766,
                                                "P_norm": 28.904298782348633, "OP50": 47.224090576171875,
                                                "OP75": 3.4202418327331543}),
    ("stark", "vot", "short", 1, {"AUC": 50.809844970703125, "P": 61.020408630371094, "P_norm": 28.19727897644043,
                                  "OP50": 52.244903564453125, "OP75": 3.9455783367156982}),
    ("mmtracking", "lasot_test", "clean", 1, {"AUC": 44.21307516169142, "P": 30.57634001216473,
                                              "P_norm": 28.871391726934025}),
    ("mmtracking", "lasot_test", "dirty", 1, {"AUC": 39.3020327971303, "P": 27.63264040842183,
                                              "P_norm": 25.65802348951442}),
    ("mmtracking", "lasot_test_0based", "dirty", 1, {"AUC": 39.30233742765768, "P": 27.632413073694174,
                                                     "P_norm": 25.65802348951442}),
    ("mmtracking", "vot", "dirty", 1, {"AUC": 44.72870100421121, "P": 54.28571428571429,
                                       "P_norm": 24.540816326530614}),
    ("mmtracking", "otb", "clean", 1, {"AUC": 50.793650793650805, "P": 99.16666666666667,
                                       "P_norm": 29.166666666666668}),
    ("got10k", "lasot_test", "clean", 1, {"AUC": 44.729153394305385, "P": 31.25039587489631,
                                          "P_norm": 42.579807043332735, "SR0.5": 47.748068619144625}),
    ("got10k", "lasot_test", "dirty", 1, {"AUC": 39.76380525309279, "P": 28.260157651363578,
                                          "P_norm": 38.212307455437156, "SR0.5": 42.42374887112399}),
    ("got10k", "lasot_sample", "clean", 1, {"AUC": 52.31746031746031, "P": 94.33333333333334,
                                            "P_norm": 49.712418300653596, "SR0.5": 56.333333333333336}),
]


@pytest.fixture(scope="module")
def sets(shared_data):
    return real_sets(shared_data)


def test_the_real_annotations(sets):
    """LaSOT's official test ground truth, read from the toolkit's annotation folder (no frames)."""
    gts = sets["lasot_test"][1]
    assert len(gts) == 280 and sum(len(g) for g in gts) == 685_360
    assert all(len(g.visible) == len(g) for g in gts) and sum(int((~g.visible).sum()) for g in gts) > 0
    assert gts[0].name == "airplane-1" and gts[0].boxes[0].tolist() == [367, 101, 41, 16]
    assert [len(g) for g in sets["vot"][1]] == [196, 105] and len(sets["otb"][1][0]) == 120


@lru_cache(maxsize=None)
def _pred(set_name: str, k: int, seed: int, dirty: bool) -> np.ndarray:
    return predictions(_SETS[set_name][1][k].boxes, seed, dirty)


_SETS: dict = {}


def _ours(sets, conv: str, set_name: str, variant: str, runs: int, benchmark: str | None = None):
    _SETS.update(sets)
    bench, gts = sets[set_name]
    short = variant == "short"
    per_seq = []
    for k, g in enumerate(gts):
        row = []
        for r in range(runs):
            pred = _pred(set_name, k, 1000 * r + k, variant == "dirty")
            if short:
                pred = pred[:-1]
            row.append(score_sequence(conv, pred, g.boxes, visible=g.visible, benchmark=benchmark or bench,
                                      name=g.name, pad=int(short)))
        per_seq.append(row)
    return summarize(conv, per_seq, benchmark=benchmark or bench)


@pytest.mark.parametrize("conv,set_name,variant,runs,theirs", TOOLKIT_NUMBERS,
                         ids=[f"{c}-{s}-{v}-{r}run" for c, s, v, r, _ in TOOLKIT_NUMBERS])
def test_equals_the_toolkits_own_numbers(sets, conv, set_name, variant, runs, theirs):
    s = _ours(sets, conv, set_name, variant, runs)
    assert s.scores == theirs  # exact: same keys, same float values
    assert s.convention.name == conv and conv in str(s)


def test_the_toolkits_disagree_on_the_same_input():
    """The table is not one number several times: on LaSOT moved to 0-based, the validity rules part."""
    auc = {c: t["AUC"] for c, s, v, r, t in TOOLKIT_NUMBERS if (s, v) == ("lasot_test_0based", "clean")}
    assert sorted(auc) == ["otb", "pytracking", "stark"] and len(set(auc.values())) == 3, auc


class _FakeDataset:
    """What got10k's experiments iterate over: (image files, x,y,w,h annotation) per sequence."""

    def __init__(self, gts):
        self.gts, self.seq_names = gts, [g.name for g in gts]

    def __len__(self):
        return len(self.gts)

    def __iter__(self):
        return iter([(None, g.boxes.copy()) for g in self.gts])


@pytest.mark.parametrize("set_name,variant,experiment", [
    ("otb", "dirty", "ExperimentOTB"), ("vot", "clean", "ExperimentOTB"), ("vot", "dirty", "ExperimentOTB"),
    ("lasot_sample", "dirty", "ExperimentOTB"), ("lasot_test", "uav", "ExperimentUAV123"),
])
def test_got10k_toolkit_report_equals_ours(sets, tmp_path, set_name, variant, experiment):
    """got10k-toolkit's own ``report`` (PyPI 0.1.3) on result files in its layout vs the got10k convention.

    ``uav``: LaSOT's absent frames as NaN rows, the way UAV123 annotates out-of-view frames.
    """
    import got10k.experiments as ge

    bench, gts = sets[set_name]
    if variant == "uav":  # 40 of the 280 sequences keep this test short
        gts = [type(g)(g.name, np.where(g.visible[:, None], g.boxes, np.nan), g.source) for g in gts[::7]]
    exp = object.__new__(getattr(ge, experiment))
    exp.dataset = _FakeDataset(gts)
    exp.result_dir, exp.report_dir = str(tmp_path / "results"), str(tmp_path / "reports")
    exp.nbins_iou, exp.nbins_ce = 21, 51
    exp.plot_curves = lambda *a, **k: None  # plots are not numbers
    ours = []
    (tmp_path / "results" / "t").mkdir(parents=True)
    for k, g in enumerate(gts):
        pred = predictions(g.boxes, k, dirty=variant == "dirty")
        np.savetxt(tmp_path / "results" / "t" / f"{g.name}.txt", pred, fmt="%.4f", delimiter=",")
        ours.append([score_sequence("got10k", pred, g.boxes, benchmark="uav123" if variant == "uav" else "otb")])
    perf = exp.report(["t"])["t"]["overall"]
    s = summarize("got10k", ours, benchmark="uav123" if variant == "uav" else "otb")
    assert s.scores == {"AUC": 100 * perf["success_score"], "P": 100 * perf["precision_score"],
                        "SR0.5": 100 * perf["success_rate"]}
