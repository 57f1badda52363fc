"""One-pass evaluation (OPE) metrics, computed exactly as each of the field's toolkits computes them.

Trackers are compared by numbers that equal what their authors' toolkit prints, and the
toolkits disagree in small ways. Each convention below is named after the toolkit it reproduces
and follows that toolkit's code step by step (re-implemented from the published code, nothing
copied); every ``Summary`` prints the convention that produced it.

Inputs are what the toolkits read: predicted and ground-truth boxes as **x,y,w,h in the
benchmark's own coordinates** (LaSOT 1-based, as its files), row i = frame i. Invalid
predictions are handled by each toolkit's own rule, below.

=============  ================================================================================
convention     rules (what differs)
=============  ================================================================================
``otb``        OTB MATLAB toolkit (tracker_benchmark v1.0: calcSeqErrRobust.m, calcRectInt.m,
               genPerfMat.m, perfPlot.m). An invalid prediction (NaN, w or h <= 0) takes the
               previous frame's box (MATLAB's vector ``if``: a NaN in x or y alone does not count
               as invalid); frame 1 = the ground truth. A ground-truth frame is valid when x, y,
               w and h are all > 0; an invalid one gets IoU -1 (a miss) and centre error -1 (a
               hit at every threshold). Success counts IoU > t for t in ``0:0.05:1`` as MATLAB
               builds it (symmetric from both ends: 0.6, 0.65, 0.7, 0.85 and 0.95 differ from
               ``linspace`` in the last bit), precision counts error <= t px; both divided by
               (frames + eps). Sequences whose whole curve is 0 are left out of the mean
               (``aa(sum(aa,2)>eps,:)``). AUC = mean of the 21 points, P = value at 20 px.
``lasot``      LaSOT toolkit (HengLan/LaSOT_Evaluation_Toolkit@95bf38a: calc_seq_err_robust.m,
               calc_rect_int.m, eval_tracker.m, plot_draw_save.m): the OTB rules, plus frames
               flagged absent are removed before scoring but still count in the denominator (so
               they are misses), any NaN in a prediction makes it invalid, and the normalized
               precision divides centres by the ground-truth w, h (P_norm at 0.20).
``pytracking`` pytracking analysis (visionml/pytracking@7eb9e74 extract_results.py,
               plot_results.py): NaN or negative w/h in a prediction stops the evaluation; a
               zero-size prediction takes the previous box; frame 0 = ground truth; a frame is
               valid when x, y, w, h are all > 0 and the target is visible (visibility only on
               LaSOT and LaSOT_ext). Invalid frames: IoU -1, centre error +inf (-1 on UAV123),
               normalized error -1 (a hit); on LaSOT an invisible frame is +inf for both errors.
               Thresholds from ``torch.arange(0, 1.05, 0.05)`` (0.65 and 0.75 sit one bit above
               ``linspace``); curves are float32, averaged over sequences in float32.
``stark``      STARK analysis (researchmm/Stark@162e1d3 lib/test/analysis): pytracking's code
               with valid = w, h > 0 (x, y may be <= 0). LoRAT's default (``stark_behavior``).
``got10k``     got10k-toolkit (PyPI got10k==0.1.3; LaSOT from got-10k/toolkit@956e728):
               frame 0 = ground truth, IoU with eps in the union, clipped to [0, 1], no validity
               rule, all frames count (UAV123 and LaSOT: unannotated NaN rows are dropped).
               Success over ``linspace(0, 1, 21)``, precision at 20 px, SR0.5 = success at 0.5;
               LaSOT's normalized precision is the *mean* of its curve over
               ``linspace(0, 0.5, 51)`` (errors divided by max(1, w), max(1, h)). On GOT-10k:
               frame 0 skipped, boxes clipped to the image (meta_info.ini resolution), frames with
               cover > 0, IoUs of all sequences and runs pooled: AO, SR0.5, SR0.75.
``mmtracking`` mmtracking (open-mmlab/mmtracking@e79491ec eval_sot_ope.py with mmdet 2.x
               bbox_overlaps): no first-frame replacement, IoU in float32 with the union clamped
               to 1e-6, GT valid where x2 > x1 and y2 > y1, centre error -1 (a hit) where the GT
               centre has x or y <= 0; on LaSOT only visible frames count (misses otherwise).
               AUC = mean over all sequences and thresholds of ``np.arange(0, 1.05, 0.05)``.
=============  ================================================================================

Repeated runs (the protocol's 3 runs on LaSOT_ext) are averaged per sequence, curve by curve,
as pytracking's ``merge_results`` does; got10k pools the IoUs of all runs, as its toolkit does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

EPS_MATLAB = float(np.finfo(float).eps)  # MATLAB's eps (2^-52)


class MetricsError(ValueError):
    """Boxes that a toolkit refuses; the message names the file and 1-based line."""


@dataclass(frozen=True)
class Convention:
    """A metric convention: the toolkit it reproduces and the code it was checked against."""

    name: str
    toolkit: str
    source: str

    def __str__(self) -> str:
        return f"{self.name} ({self.toolkit}: {self.source})"


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("otb", "OTB MATLAB toolkit", "tracker_benchmark v1.0 calcSeqErrRobust.m, perfPlot.m"),
    Convention("lasot", "LaSOT MATLAB toolkit", "HengLan/LaSOT_Evaluation_Toolkit@95bf38a utils/*.m"),
    Convention("pytracking", "pytracking analysis", "visionml/pytracking@7eb9e74 pytracking/analysis"),
    Convention("stark", "STARK analysis", "researchmm/Stark@162e1d3 lib/test/analysis"),
    Convention("got10k", "got10k-toolkit", "got10k==0.1.3 experiments/, LaSOT: got-10k/toolkit@956e728"),
    Convention("mmtracking", "mmtracking", "open-mmlab/mmtracking@e79491ec eval_sot_ope.py"),
)}


def get_convention(name: str | Convention) -> Convention:
    """A convention by name (clear error listing the known ones)."""
    if isinstance(name, Convention):
        return name
    if name not in CONVENTIONS:
        raise ValueError(f"unknown convention {name!r}; choose from {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def matlab_colon(a: float, d: float, b: float) -> np.ndarray:
    """``a:d:b`` as MATLAB builds it: from both ends towards the middle (Moler's colonop.m)."""
    n = int(round((b - a) / d))
    tol = 2.0 * EPS_MATLAB * max(abs(a), abs(b))
    if a + n * d - b > tol:
        n -= 1
    last = b if abs(a + n * d - b) <= tol else a + n * d
    v = np.empty(n + 1)
    k = np.arange(n // 2 + 1)
    v[k] = a + k * d
    v[n - k] = last - k * d
    if n % 2 == 0:
        v[n // 2] = (a + last) / 2
    return v


MATLAB_OVERLAP = matlab_colon(0.0, 0.05, 1.0)
PIXELS = np.arange(51, dtype=np.float64)  # 0..50 px
NORM = np.arange(51, dtype=np.float64) / 100  # 0..0.5: k/100 in MATLAB and numpy alike
PRECISION_AT = 20  # index of 20 px / 0.20

# Datasets (our benchmark names) whose visibility flags each toolkit uses.
_VISIBILITY = {"lasot", "lasot_ext", "custom"}


@dataclass
class SequenceScore:
    """One sequence, one run: the curves of a convention (its thresholds, dtype and rules)."""

    name: str
    curves: dict[str, np.ndarray]  # "success", "precision", "norm_precision"; "ious" (GOT-10k)
    num_frames: int
    fps: float | None = None


@dataclass
class Curve:
    """A plotted curve: thresholds, values in percent, and the score its legend shows."""

    x: np.ndarray
    y: np.ndarray
    score: float


@dataclass
class Summary:
    """Metrics of one tracker on one benchmark, in percent, with the convention that produced them."""

    convention: Convention
    tracker: str
    benchmark: str  # display name
    sequences: list[str]
    scores: dict[str, float]  # "AUC", "P", "P_norm", "OP50", "OP75", "AO", "SR0.5", "SR0.75"
    curves: dict[str, Curve]  # "success", "precision", "norm_precision"
    runs: list[str] = field(default_factory=list)
    fps: float | None = None
    notes: list[str] = field(default_factory=list)
    per_sequence: list[list[SequenceScore]] = field(default_factory=list, repr=False)

    @property
    def auc(self) -> float:
        """The success score: AUC, or AO where the convention reports AO only (GOT-10k)."""
        return self.scores.get("AUC", self.scores.get("AO", float("nan")))

    def __str__(self) -> str:
        runs = f", {len(self.runs)} runs" if len(self.runs) > 1 else ""
        nums = ", ".join(f"{k} {v:.2f}" for k, v in self.scores.items())
        fps = f", {self.fps:.1f} FPS" if self.fps else ""
        lines = [f"{self.tracker} on {self.benchmark} ({len(self.sequences)} sequences{runs}): {nums}{fps}",
                 f"  by convention {self.convention}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


# ------------------------------------------------------------------------------ invalid boxes
def _repair_previous(bad: np.ndarray) -> np.ndarray:
    """Index map for "a bad frame takes the previous (repaired) box": bad frames point at the
    last good frame before them. Frame 0 is never replaced (the loops start at frame 2 / 1)."""
    bad = bad.copy()
    bad[:1] = False
    idx = np.where(bad, 0, np.arange(len(bad)))
    return np.maximum.accumulate(idx)


def _pad(pred: np.ndarray, pad: int) -> np.ndarray:
    """Append ``pad`` empty boxes (0,0,0,0): pytracking's rule for a result that is too short."""
    return np.concatenate([pred, np.zeros((pad, 4))]) if pad else pred


def _row(a: np.ndarray) -> str:
    return ",".join(f"{v:g}" for v in a)


# ------------------------------------------------------------------------------ OTB / LaSOT (MATLAB)
def _matlab_rect_int(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """calcRectInt.m: inclusive corners (x + w - 1) and +1 sizes; MATLAB max/min skip NaN (fmax/fmin)."""
    right_a, top_a = a[:, 0] + a[:, 2] - 1, a[:, 1] + a[:, 3] - 1
    right_b, top_b = b[:, 0] + b[:, 2] - 1, b[:, 1] + b[:, 3] - 1
    iw = np.fmax(0, np.fmin(right_a, right_b) - np.fmax(a[:, 0], b[:, 0]) + 1)
    ih = np.fmax(0, np.fmin(top_a, top_b) - np.fmax(a[:, 1], b[:, 1]) + 1)
    inter = iw * ih
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def _matlab_sequence(pred: np.ndarray, gt: np.ndarray, absent: np.ndarray | None, lasot: bool,
                     pad: int) -> dict[str, np.ndarray]:
    """calcSeqErrRobust.m (OTB) / calc_seq_err_robust.m (LaSOT) + the counting of genPerfMat/eval_tracker."""
    with np.errstate(invalid="ignore"):
        bad_size = (pred[:, 2] <= 0) | (pred[:, 3] <= 0)  # NaN compares False, as in MATLAB
        gt_known = ~np.isnan(gt[: len(pred)])
        if lasot:  # (sum(isnan(r)) | r(3)<=0 | r(4)<=0) & ~isnan(r_anno): scalar & vector, `if` needs all
            bad = ((np.isnan(pred).any(axis=1) | bad_size)[:, None] & gt_known).all(axis=1)
        else:  # (isnan(r) | r(3)<=0 | r(4)<=0) & ~isnan(r_anno): element-wise, `if` needs all four
            bad = ((np.isnan(pred) | bad_size[:, None]) & gt_known).all(axis=1)
    rect = _pad(pred[_repair_previous(bad)], pad)
    rect[0] = gt[0]
    n_all = len(gt)
    anno = gt
    if absent is not None:  # LaSOT: absent frames leave the evaluation but not the denominator
        rect, anno = rect[~absent], gt[~absent]
    c_gt = anno[:, :2] + (anno[:, 2:] - 1) / 2
    c = rect[:, :2] + (rect[:, 2:] - 1) / 2
    with np.errstate(invalid="ignore"):
        valid = (anno > 0).all(axis=1)
    cov = -np.ones(len(anno))
    cov[valid] = _matlab_rect_int(rect[valid], anno[valid])
    out = {"success": _counts(cov, MATLAB_OVERLAP, ">") / (n_all + EPS_MATLAB)}
    curves = [("precision", c, c_gt, PIXELS)]
    if lasot:
        with np.errstate(invalid="ignore", divide="ignore"):
            curves.append(("norm_precision", c / anno[:, 2:], c_gt / anno[:, 2:], NORM))
    for key, p, g, thr in curves:
        with np.errstate(invalid="ignore"):
            d = p - g
            err = np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2)
        err[~valid] = -1
        out[key] = _counts(err, thr, "<=") / (n_all + EPS_MATLAB)
    return out


def _counts(values: np.ndarray, thresholds: np.ndarray, op: str) -> np.ndarray:
    """Frames with value > t (or <= t) per threshold; NaN never counts."""
    with np.errstate(invalid="ignore"):
        hit = values[:, None] > thresholds[None, :] if op == ">" else values[:, None] <= thresholds[None, :]
    return hit.sum(axis=0).astype(np.float64)


def _matlab_summary(curves: list[dict[str, np.ndarray]], keys: tuple[str, ...]) -> tuple[dict, dict, list[str]]:
    """perfPlot.m / plot_draw_save.m: drop all-zero sequence curves, mean over sequences, AUC = mean."""
    scores, plots, notes = {}, {}, []
    for key in keys:
        aa = np.stack([c[key] for c in curves])
        keep = aa.sum(axis=1) > EPS_MATLAB
        if not keep.all():
            notes.append(f"{int((~keep).sum())} of {len(aa)} sequences have an all-zero {key} curve and are "
                         "left out of its mean, as the MATLAB toolkit does")
        bb = aa[keep].mean(axis=0) if keep.any() else np.full(aa.shape[1], np.nan)
        if key == "success":
            scores["AUC"] = 100 * float(np.cumsum(bb)[-1] / len(bb))  # mean(bb), summed in order as MATLAB
            plots[key] = Curve(MATLAB_OVERLAP, 100 * bb, scores["AUC"])
        else:
            name = "P" if key == "precision" else "P_norm"
            scores[name] = 100 * float(bb[PRECISION_AT])
            plots[key] = Curve(PIXELS if key == "precision" else NORM, 100 * bb, scores[name])
    return scores, plots, notes


# ------------------------------------------------------------------------------ pytracking / STARK
def _pytracking_sequence(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None, benchmark: str,
                         stark: bool, pad: int, pred_source: str, gt_source: str) -> dict[str, np.ndarray]:
    """extract_results.calc_seq_err_robust + the per-sequence curves of extract_results.

    pytracking computes in torch; the element-wise float64 steps are the same IEEE operations in
    numpy (bit for bit), the thresholds come from torch.arange as there, and the curves are
    float32 (count / frames) as pytracking stores them.
    """
    tool = "STARK" if stark else "pytracking"
    bad = np.isnan(pred).any(axis=1) | (pred[:, 2:] < 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricsError(f"{pred_source}:{i + 1}: box {_row(pred[i])} is not valid for {tool}'s analysis "
                           "(it stops on NaN or a negative width/height): expected x,y,w,h with w, h >= 0")
    uav = benchmark == "uav123"
    nan_gt = np.isnan(gt).any(axis=1)
    if nan_gt.any() and not uav:
        i = int(np.flatnonzero(nan_gt)[0])
        raise MetricsError(f"{gt_source}:{i + 1}: unannotated (NaN) ground truth; {tool}'s analysis accepts "
                           "NaN ground truth on UAV123 only")
    zero = (pred[:, 2:] == 0).any(axis=1) & ~nan_gt[: len(pred)]
    p = _pad(pred[_repair_previous(zero)], pad)  # pytracking pads after the repair: added frames stay empty
    a = gt
    p[0, :] = a[0, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = ((a[:, 2:] > 0.0).sum(1) == 2) if stark else ((a > 0.0).sum(1) == 4)
        tv = None
        if visible is not None and benchmark in _VISIBILITY:
            tv = np.asarray(visible, dtype=bool)
            valid = valid & tv
        pc = p[:, :2] + 0.5 * (p[:, 2:] - 1.0)
        ac = a[:, :2] + 0.5 * (a[:, 2:] - 1.0)
        d, dn = pc - ac, pc / a[:, 2:] - ac / a[:, 2:]
        err = np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2)
        err_norm = np.sqrt(dn[:, 0] ** 2 + dn[:, 1] ** 2)
        tl = np.maximum(p[:, :2], a[:, :2])
        br = np.minimum(p[:, :2] + p[:, 2:] - 1.0, a[:, :2] + a[:, 2:] - 1.0)
        sz = np.maximum(br - tl + 1.0, 0.0)  # torch clamp(0): NaN stays NaN
        inter = sz[:, 0] * sz[:, 1]
        iou = inter / (p[:, 2] * p[:, 3] + a[:, 2] * a[:, 3] - inter)
    err[~valid] = -1.0 if uav else np.inf
    err_norm[~valid] = -1.0
    iou[~valid] = -1.0
    if benchmark == "lasot" and tv is not None:  # pytracking's dataset == 'lasot' rule
        err_norm[~tv] = np.inf
        err[~tv] = np.inf
    if np.isnan(iou).any():
        i = int(np.flatnonzero(np.isnan(iou))[0])
        raise MetricsError(f"{pred_source}:{i + 1}: IoU is NaN against {gt_source}:{i + 1} "
                           f"({tool} stops on 'Nans in calculated overlap')")
    n = np.float32(len(a))
    thr = _pytracking_thresholds()
    return {"success": _counts(iou, thr["success"], ">").astype(np.float32) / n,
            "precision": _counts(err, thr["precision"], "<=").astype(np.float32) / n,
            "norm_precision": _counts(err_norm, thr["norm_precision"], "<=").astype(np.float32) / n}


_TORCH_THRESHOLDS: dict[str, np.ndarray] = {}


def _pytracking_thresholds() -> dict[str, np.ndarray]:
    """extract_results' thresholds, from torch.arange as there (0.65 and 0.75 differ from linspace)."""
    if not _TORCH_THRESHOLDS:
        import torch

        _TORCH_THRESHOLDS.update({
            "success": torch.arange(0.0, 1.0 + 0.05, 0.05, dtype=torch.float64).numpy(),
            "precision": torch.arange(0, 51, dtype=torch.float64).numpy(),
            "norm_precision": (torch.arange(0, 51, dtype=torch.float64) / 100.0).numpy()})
    return _TORCH_THRESHOLDS


def _pytracking_summary(runs: list[list[dict[str, np.ndarray]]]) -> tuple[dict, dict]:
    """plot_results: runs merged per sequence (merge_multiple_runs), then float32 means over sequences."""
    import torch

    thr = _pytracking_thresholds()
    thr_f32 = torch.tensor(thr["success"].tolist())  # eval_data round trip: the thresholds become float32
    scores, plots = {}, {}
    for key in ("success", "precision", "norm_precision"):
        t = torch.tensor(np.stack([np.stack([r[key] for r in seq]) for seq in runs]))  # (S, R, K) float32
        if t.shape[1] > 1:
            t = t.mean(1, keepdim=True)
        curve = t.mean(0) * 100.0  # (1, K), as get_auc_curve / get_prec_curve with one tracker
        if key == "success":
            scores["AUC"] = float(curve.mean(-1)[0])
            scores["OP50"] = float(curve[:, thr_f32 == 0.50][0, 0])
            scores["OP75"] = float(curve[:, thr_f32 == 0.75][0, 0])
            plots[key] = Curve(thr[key], curve[0].double().numpy(), scores["AUC"])
        else:
            name = "P" if key == "precision" else "P_norm"
            scores[name] = float(curve[0, PRECISION_AT])
            plots[key] = Curve(thr[key], curve[0].double().numpy(), scores[name])
    order = ("AUC", "P", "P_norm", "OP50", "OP75")
    return {k: scores[k] for k in order}, plots


# ------------------------------------------------------------------------------ got10k-toolkit
def _got10k_rect_iou(r1: np.ndarray, r2: np.ndarray, bound: tuple[int, int] | None = None) -> np.ndarray:
    """got10k.utils.metrics.rect_iou: optional clipping to the image (x first, then w to what is left)."""
    r1, r2 = r1.copy(), r2.copy()
    if bound is not None:
        for r in (r1, r2):
            r[:, 0] = np.clip(r[:, 0], 0, bound[0])
            r[:, 1] = np.clip(r[:, 1], 0, bound[1])
            r[:, 2] = np.clip(r[:, 2], 0, bound[0] - r[:, 0])
            r[:, 3] = np.clip(r[:, 3], 0, bound[1] - r[:, 1])
    x1 = np.maximum(r1[..., 0], r2[..., 0])
    y1 = np.maximum(r1[..., 1], r2[..., 1])
    x2 = np.minimum(r1[..., 0] + r1[..., 2], r2[..., 0] + r2[..., 2])
    y2 = np.minimum(r1[..., 1] + r1[..., 3], r2[..., 1] + r2[..., 3])
    inter = np.prod(np.stack([np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)], axis=-1), axis=-1)
    union = np.prod(r1[..., 2:], axis=-1) + np.prod(r2[..., 2:], axis=-1) - inter
    return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def _got10k_centre_error(r1: np.ndarray, r2: np.ndarray, normalized: bool = False) -> np.ndarray:
    """got10k center_error / normalized_center_error (centres at x + (w - 1) / 2)."""
    d = (r1[..., :2] + (r1[..., 2:] - 1) / 2) - (r2[..., :2] + (r2[..., 2:] - 1) / 2)
    if normalized:
        d = d / np.maximum(np.array([[1.0, 1.0]]), r2[:, 2:])
    return np.sqrt(np.sum(np.power(d, 2), axis=-1))


def _got10k_sequence(pred: np.ndarray, gt: np.ndarray, cover: np.ndarray | None, resolution, benchmark: str,
                     pad: int) -> dict[str, np.ndarray]:
    """ExperimentOTB/UAV123/LaSOT._calc_metrics + _calc_curves, or ExperimentGOT10k's IoUs."""
    boxes = _pad(pred.copy(), pad)
    with np.errstate(invalid="ignore"):
        if benchmark.startswith("got10k"):
            if resolution is None:
                raise MetricsError("got10k-toolkit clips GOT-10k boxes to the image size: the sequence needs a "
                                   "meta_info.ini with 'resolution: (W, H)' (or its first frame)")
            ious = _got10k_rect_iou(boxes[1:], gt[1:], bound=resolution)
            if cover is not None:
                ious = ious[cover[1:] > 0]
            return {"ious": ious}
        boxes[0] = gt[0]
        if benchmark in ("uav123", "lasot", "lasot_ext"):  # ExperimentUAV123 / ExperimentLaSOT
            keep = ~np.any(np.isnan(gt), axis=1)
            boxes, gt = boxes[keep, :], gt[keep, :]
        ious = np.asarray(_got10k_rect_iou(boxes, gt), float)[:, np.newaxis]
        ce = np.asarray(_got10k_centre_error(boxes, gt), float)[:, np.newaxis]
        out = {"success": np.mean(np.greater(ious, np.linspace(0, 1, 21)[np.newaxis, :]), axis=0),
               "precision": np.mean(np.less_equal(ce, np.arange(0, 51)[np.newaxis, :]), axis=0)}
        if benchmark in ("lasot", "lasot_ext"):
            nce = np.asarray(_got10k_centre_error(boxes, gt, normalized=True), float)[:, np.newaxis]
            out["norm_precision"] = np.mean(np.less_equal(nce, np.linspace(0, 0.5, 51)[np.newaxis, :]), axis=0)
    return out


def _got10k_summary(runs: list[list[dict[str, np.ndarray]]], benchmark: str) -> tuple[dict, dict]:
    if benchmark.startswith("got10k"):  # ExperimentGOT10k.report/_evaluate: IoUs of every run pooled
        ious = np.concatenate([np.concatenate([r["ious"] for r in seq]) for seq in runs])
        thr = np.linspace(0, 1, 101)
        curve = np.mean(np.greater(ious[:, None], thr[None, :]), axis=0)
        scores = {"AO": 100 * float(np.mean(ious)), "SR0.5": 100 * float(np.mean(ious > 0.5)),
                  "SR0.75": 100 * float(np.mean(ious > 0.75))}
        return scores, {"success": Curve(thr, 100 * curve, scores["AO"])}
    scores, plots = {}, {}
    for key, x in (("success", np.linspace(0, 1, 21)), ("precision", np.arange(0, 51)),
                   ("norm_precision", np.linspace(0, 0.5, 51))):
        if key not in runs[0][0]:
            continue
        curve = np.mean(np.stack([np.mean([r[key] for r in seq], axis=0) for seq in runs]), axis=0)
        if key == "success":
            scores["AUC"] = 100 * float(np.mean(curve))
            scores["SR0.5"] = 100 * float(curve[21 // 2])
            plots[key] = Curve(x, 100 * curve, scores["AUC"])
        elif key == "precision":
            scores["P"] = 100 * float(curve[PRECISION_AT])
            plots[key] = Curve(x, 100 * curve, scores["P"])
        else:  # ExperimentLaSOT: normalized_precision_score = np.mean(norm_prec_curve)
            scores["P_norm"] = 100 * float(np.mean(curve))
            plots[key] = Curve(x, 100 * curve, scores["P_norm"])
    order = ("AUC", "P", "P_norm", "SR0.5")
    return {k: scores[k] for k in order if k in scores}, plots


# ------------------------------------------------------------------------------ mmtracking
def _mmdet_iou(b1: np.ndarray, b2: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """mmdet 2.x bbox_overlaps (numpy, float32, no legacy +1) for row-aligned boxes (its diagonal)."""
    b1, b2 = b1.astype(np.float32), b2.astype(np.float32)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    w = np.maximum(np.minimum(b1[:, 2], b2[:, 2]) - np.maximum(b1[:, 0], b2[:, 0]), 0)
    h = np.maximum(np.minimum(b1[:, 3], b2[:, 3]) - np.maximum(b1[:, 1], b2[:, 1]), 0)
    overlap = w * h
    return overlap / np.maximum(area1 + area2 - overlap, eps)


def _mm_success_error(gt_c: np.ndarray, pred_c: np.ndarray, thr: np.ndarray, n: int) -> np.ndarray:
    dist = np.ones(len(gt_c)) * (-1)
    valid = (gt_c[:, 0] > 0) & (gt_c[:, 1] > 0)
    dist[valid] = np.sqrt(np.sum((gt_c[valid] - pred_c[valid]) ** 2, axis=1))
    return np.array([np.sum(dist <= t) / float(n) for t in thr])


def _mmtracking_sequence(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None, benchmark: str,
                         pad: int) -> dict[str, np.ndarray]:
    """eval_sot_ope for one video (boxes as x1,y1,x2,y2 = x,y,x+w,y+h, as mmtracking loads them)."""
    p = _pad(pred, pad)
    p = np.concatenate([p[:, :2], p[:, :2] + p[:, 2:]], axis=1)
    g = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:]], axis=1)
    n = len(p)
    if visible is not None and benchmark in _VISIBILITY:  # only_eval_visible (its LaSOT config)
        with np.errstate(invalid="ignore"):
            keep = np.asarray(visible, dtype=bool) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
        p, g = p[keep], g[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.ones(len(g)) * (-1)
        valid = (g[:, 2] > g[:, 0]) & (g[:, 3] > g[:, 1])
        iou[valid] = _mmdet_iou(g[valid], p[valid])
        iou_th = np.arange(0, 1.05, 0.05)
        success = np.zeros(len(iou_th))
        for i in range(len(iou_th)):
            success[i] = np.sum(iou > iou_th[i]) / float(n)
        g_c = np.array((0.5 * (g[:, 2] + g[:, 0]), 0.5 * (g[:, 3] + g[:, 1]))).T
        p_c = np.array((0.5 * (p[:, 2] + p[:, 0]), 0.5 * (p[:, 3] + p[:, 1]))).T
        px = np.arange(0, 51, 1)
        g_wh = np.array((g[:, 2] - g[:, 0], g[:, 3] - g[:, 1])).T
        return {"success": success,
                "precision": _mm_success_error(g_c, p_c, px, n),
                "norm_precision": _mm_success_error(g_c / (g_wh + 1e-16), p_c / (g_wh + 1e-16), px / 100.0, n)}


def _mmtracking_summary(runs: list[list[dict[str, np.ndarray]]]) -> tuple[dict, dict]:
    per_seq = {k: [np.mean([r[k] for r in seq], axis=0) for seq in runs] for k in runs[0][0]}
    scores = {"AUC": float(np.mean(per_seq["success"]) * 100),
              "P": float(np.mean(per_seq["precision"], axis=0)[PRECISION_AT] * 100),
              "P_norm": float(np.mean(per_seq["norm_precision"], axis=0)[PRECISION_AT] * 100)}
    plots = {"success": Curve(np.arange(0, 1.05, 0.05), 100 * np.mean(per_seq["success"], axis=0), scores["AUC"]),
             "precision": Curve(PIXELS, 100 * np.mean(per_seq["precision"], axis=0), scores["P"]),
             "norm_precision": Curve(NORM, 100 * np.mean(per_seq["norm_precision"], axis=0), scores["P_norm"])}
    return scores, plots


# ------------------------------------------------------------------------------ public API
def score_sequence(convention: str | Convention, pred: np.ndarray, gt: np.ndarray, *,
                   visible: np.ndarray | None = None, cover: np.ndarray | None = None,
                   resolution: tuple[int, int] | None = None, benchmark: str = "", name: str = "",
                   pad: int = 0, times: np.ndarray | None = None, pred_source: str = "prediction",
                   gt_source: str = "ground truth") -> SequenceScore:
    """Curves of one run on one sequence under ``convention``.

    ``pred`` (N - pad, 4) and ``gt`` (N, 4) are x,y,w,h in the benchmark's coordinates; ``pad``
    empty boxes are appended to the prediction (a result file that is too short, padded as
    pytracking does). ``visible`` are the benchmark's flags, used where the toolkit uses them.
    """
    conv = get_convention(convention)
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if len(pred) + pad != len(gt) or len(gt) == 0:
        raise MetricsError(f"{pred_source}: {len(pred)} boxes (+{pad} padded) for {len(gt)} ground-truth frames "
                           f"in {gt_source}")
    if visible is not None and len(visible) != len(gt):
        raise MetricsError(f"{gt_source}: {len(visible)} visibility flags for {len(gt)} frames")
    if conv.name in ("otb", "lasot"):
        absent = None
        if conv.name == "lasot" and visible is not None and benchmark in _VISIBILITY:
            absent = ~np.asarray(visible, dtype=bool)
        curves = _matlab_sequence(pred, gt, absent, lasot=conv.name == "lasot", pad=pad)
    elif conv.name in ("pytracking", "stark"):
        curves = _pytracking_sequence(pred, gt, visible, benchmark, conv.name == "stark", pad, pred_source, gt_source)
    elif conv.name == "got10k":
        if cover is None and visible is not None and benchmark.startswith("got10k"):
            cover = np.asarray(visible, dtype=np.float64)
        curves = _got10k_sequence(pred, gt, cover, resolution, benchmark, pad)
    else:
        curves = _mmtracking_sequence(pred, gt, visible, benchmark, pad)
    fps = None
    if times is not None and len(times) > 1:
        t = float(np.mean(np.asarray(times, dtype=np.float64)[1:]))  # frame 0 is the initialisation
        fps = 1.0 / t if t > 0 else None
    return SequenceScore(name, curves, len(gt), fps)


_SUMMARIES: dict[str, Callable] = {
    "pytracking": _pytracking_summary,
    "stark": _pytracking_summary,
    "mmtracking": _mmtracking_summary,
}


def summarize(convention: str | Convention, runs: list[list[SequenceScore]], *, tracker: str = "",
              benchmark: str = "", run_names: list[str] | None = None, display: str = "") -> Summary:
    """Benchmark metrics from ``runs[s][r]`` (sequence s, run r) as the convention's toolkit aggregates them."""
    conv = get_convention(convention)
    if not runs or not all(runs):
        raise MetricsError(f"{tracker or 'tracker'} on {display or benchmark or 'benchmark'}: no sequences to score")
    curves = [[r.curves for r in seq] for seq in runs]
    notes: list[str] = []
    if conv.name in ("otb", "lasot"):
        keys = ("success", "precision", "norm_precision") if conv.name == "lasot" else ("success", "precision")
        merged = [{k: np.mean([r[k] for r in seq], axis=0) for k in keys} for seq in curves]
        scores, plots, notes = _matlab_summary(merged, keys)
    elif conv.name == "got10k":
        scores, plots = _got10k_summary(curves, benchmark)
    else:
        scores, plots = _SUMMARIES[conv.name](curves)
    fps = [r.fps for seq in runs for r in seq if r.fps]
    return Summary(conv, tracker, display or benchmark, [seq[0].name for seq in runs], scores, plots,
                   runs=list(run_names or []), fps=float(np.mean(fps)) if fps else None, notes=notes,
                   per_sequence=runs)
