"""One-pass-evaluation (OPE) metrics: success AUC, precision, normalized precision, GOT-10k AO/SR.

Re-implemented from the published definitions (OTB/pytracking/STARK analysis code, the GOT-10k
toolkit); no code was copied. Boxes are **xyxy** (N, 4) in one coordinate frame for prediction and
ground truth; NaN ground truth marks an unannotated frame. Every number is tied to a
``Convention``, which ``Summary.__str__`` prints with the result.

Conventions (differences found in the definitions):

* ``validity`` -- which ground-truth frames count:
  - ``"stark"`` (STARK, OSTrack and LoRAT's default ``stark_behavior=True``): a frame is valid when
    the GT width and height are both > 0 (and the target is visible, where visibility is given).
  - ``"pytracking"`` (what LoRAT's ``stark_behavior=False`` calls the pytracking behaviour, and the
    OTB MATLAB toolkit's ``sum(rect_anno > 0, 2) == 4``): x, y, w and h must *all* be > 0, so a GT
    box touching the left or top image border (x == 0 or y == 0 in the benchmark's own coordinates)
    is invalid. Hence metrics must see the toolkit's coordinates: LaSOT is 1-based, and shifting it
    to 0-based would drop 27,578 visible border frames of the test set under this rule. (Note: the
    two pytracking versions of ``extract_results.py`` that could be read use w, h > 0 like STARK; an
    older one divided by the valid frames except on LaSOT/UAV -- ``exclude_invalid=True``.)
  Both then treat an invalid frame the same way: IoU = -1 (a miss at every threshold, even 0),
  centre error = +inf (a miss), normalized centre error = -1 (a *hit*: a quirk of the reference
  definition), except on UAV where the centre error is -1 (a hit), and on LaSOT/VastTrack where an
  absent (invisible) target gets +inf for both centre errors. The denominator is all frames
  (``exclude_invalid=False``, the default of both), so GT-vs-GT AUC is 20/21 x the valid fraction.
* ``iou`` -- ``"continuous"``: area = (x2-x1)(y2-y1); ``"pixel"`` (OTB-era / mmcv ``offset=1``):
  corners are inclusive pixel indices, area = (x2-x1+1)(y2-y1+1), and the intersection gets +1 too.
  For xyxy with x2 = x+w the pixel rule treats every box as one pixel larger per side-pair.
* ``first_frame_gt`` -- pytracking/STARK overwrite the first prediction with the GT (the init box);
  mmtracking does not.

Common to all: predictions with NaN or negative size raise; a zero-size prediction is replaced by
the previous frame's prediction (where the GT is annotated); success counts IoU > t for
t in linspace(0, 1, 21) (strict); precision counts centre error <= 20 px; normalized precision
counts error / GT size <= 0.20.

GOT-10k AO/SR follow the GOT-10k toolkit: the first frame is skipped, only visible annotated frames
count, boxes are clipped to the image when its size is known (x, y clipped to [0, W]; w clipped to
[0, W - x]: a box hanging over the left edge is shifted, not cut, as the toolkit does), and the
overall AO/SR are frame-weighted over all sequences (IoUs concatenated), not a mean of means.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # 0, 0.05, ..., 1.0
PIXEL_THRESHOLDS = np.arange(51, dtype=np.float64)  # 0..50 px
NORM_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0  # 0..0.5
PRECISION_INDEX = 20  # 20 px / 0.20

# Datasets whose absent frames are misses for both centre errors (LaSOT/VastTrack rule).
_ABSENT_IS_MISS = ("lasot", "vasttrack")


class MetricsError(ValueError):
    """Predictions or ground truth cannot be evaluated; the message names the sequence and frame."""


@dataclass(frozen=True)
class Convention:
    """How frames are validated and IoU is computed; see the module docstring."""

    validity: str = "stark"  # "stark" | "pytracking"
    iou: str = "continuous"  # "continuous" | "pixel"
    first_frame_gt: bool = True
    exclude_invalid: bool = False  # divide by valid frames instead of all frames

    def __post_init__(self) -> None:
        if self.validity not in ("stark", "pytracking"):
            raise ValueError(f"validity must be 'stark' or 'pytracking', not {self.validity!r}")
        if self.iou not in ("continuous", "pixel"):
            raise ValueError(f"iou must be 'continuous' or 'pixel', not {self.iou!r}")

    @property
    def offset(self) -> float:
        """+1 for the pixel (inclusive-corner) IoU convention, else 0."""
        return 1.0 if self.iou == "pixel" else 0.0

    def __str__(self) -> str:
        valid = "w,h>0" if self.validity == "stark" else "x,y,w,h>0"
        return (f"validity={self.validity} ({valid}), iou={self.iou}"
                f"{' (+1 px)' if self.iou == 'pixel' else ''}, "
                f"first frame={'GT' if self.first_frame_gt else 'as predicted'}, "
                f"denominator={'valid frames' if self.exclude_invalid else 'all frames'}")


CONVENTIONS: dict[str, Convention] = {
    "stark": Convention(),  # STARK / OSTrack / LoRAT default
    "pytracking": Convention(validity="pytracking"),
    "mmtracking": Convention(first_frame_gt=False),  # mmtracking's eval_sot_ope
}


def get_convention(c: str | Convention, iou: str | None = None) -> Convention:
    """A preset name (``CONVENTIONS``) or a Convention, optionally with ``iou`` overridden."""
    if isinstance(c, str):
        if c not in CONVENTIONS:
            raise ValueError(f"unknown convention {c!r}; choose from {sorted(CONVENTIONS)}")
        c = CONVENTIONS[c]
    return replace(c, iou=iou) if iou else c


def iou_xyxy(a: np.ndarray, b: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """IoU of matching rows of two (N, 4) xyxy arrays; ``offset=1`` for inclusive pixel corners."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    wh = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]) + offset, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0] + offset) * (a[:, 3] - a[:, 1] + offset)
    area_b = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a + area_b - inter)


def valid_frames(gt: np.ndarray, visible: np.ndarray | None, convention: str | Convention) -> np.ndarray:
    """(N,) bool: GT frames that count under ``convention`` (NaN rows are never valid)."""
    conv = get_convention(convention)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        valid = (gt[:, 2:] - gt[:, :2] > 0).all(axis=1)
        if conv.validity == "pytracking":
            valid &= (gt[:, :2] > 0).all(axis=1)
    if visible is not None:
        valid &= np.asarray(visible, dtype=bool).reshape(-1)
    return valid


def _clip_like_got10k(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """GOT-10k toolkit bound: clip x,y into the image, then w,h to what is left (xyxy in/out)."""
    w_img, h_img = size
    x = np.clip(box[:, 0], 0, w_img)
    y = np.clip(box[:, 1], 0, h_img)
    w = np.clip(box[:, 2] - box[:, 0], 0, w_img - x)
    h = np.clip(box[:, 3] - box[:, 1], 0, h_img - y)
    return np.stack([x, y, x + w, y + h], axis=1)


@dataclass
class SequenceMetrics:
    """OPE curves and GOT-10k IoUs of one sequence (one run, or the mean of repeated runs)."""

    name: str
    success: np.ndarray  # (21,) fraction of frames with IoU > t
    precision: np.ndarray  # (51,) fraction with centre error <= t px
    norm_precision: np.ndarray  # (51,) fraction with normalized centre error <= t
    got_ious: np.ndarray  # IoUs of the frames GOT-10k counts (frame 0 skipped, visible only)
    num_frames: int
    num_valid: int
    fps: float | None = None

    @property
    def auc(self) -> float:
        """Success AUC: mean of the success curve over the 21 thresholds."""
        return float(np.mean(self.success))

    @property
    def prec(self) -> float:
        """Precision at 20 px."""
        return float(self.precision[PRECISION_INDEX])

    @property
    def norm_prec(self) -> float:
        """Normalized precision at 0.20."""
        return float(self.norm_precision[PRECISION_INDEX])

    @property
    def ao(self) -> float:
        """GOT-10k average overlap of this sequence (NaN if no frame counts)."""
        return float(np.mean(self.got_ious)) if self.got_ious.size else float("nan")

    @property
    def sr50(self) -> float:
        """GOT-10k success rate at IoU 0.5."""
        return float(np.mean(self.got_ious > 0.5)) if self.got_ious.size else float("nan")

    @property
    def sr75(self) -> float:
        """GOT-10k success rate at IoU 0.75."""
        return float(np.mean(self.got_ious > 0.75)) if self.got_ious.size else float("nan")


def evaluate_sequence(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None = None, *,
                      name: str = "", dataset: str = "", convention: str | Convention = "stark",
                      frame_size: tuple[int, int] | None = None,
                      times: np.ndarray | None = None) -> SequenceMetrics:
    """OPE metrics of one sequence; ``pred``/``gt`` (N, 4) xyxy, ``visible`` (N,) bool or None."""
    conv = get_convention(convention)
    where = f"sequence {name or '?'}"
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    n = gt.shape[0]
    if pred.shape[0] != n:
        raise MetricsError(f"{where}: {pred.shape[0]} predicted boxes but {n} ground-truth frames")
    if n == 0:
        raise MetricsError(f"{where}: no frames")
    pwh = pred[:, 2:] - pred[:, :2]
    bad = np.isnan(pred).any(axis=1) | (pwh < 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricsError(f"{where}: frame {i}: invalid prediction {pred[i].tolist()} (NaN or negative size)")
    gt_annotated = ~np.isnan(gt).any(axis=1)
    # Reference rule: a zero-size prediction repeats the previous one (chains over runs of them).
    for i in np.flatnonzero((pwh == 0).any(axis=1) & gt_annotated):
        if i > 0:
            pred[i] = pred[i - 1]
    if conv.first_frame_gt:
        pred[0] = gt[0]

    gwh = gt[:, 2:] - gt[:, :2]
    vis = np.ones(n, dtype=bool) if visible is None else np.asarray(visible, dtype=bool).reshape(-1)
    if vis.shape[0] != n:
        raise MetricsError(f"{where}: {vis.shape[0]} visibility flags but {n} frames")
    valid = valid_frames(gt, vis, conv)

    off = conv.offset
    ious = iou_xyxy(pred, gt, off)
    ious[~valid] = -1.0
    if np.isnan(ious).any():
        i = int(np.flatnonzero(np.isnan(ious))[0])
        raise MetricsError(f"{where}: frame {i}: IoU is NaN (pred {pred[i].tolist()}, gt {gt[i].tolist()})")

    pc = (pred[:, :2] + pred[:, 2:]) / 2
    gc = (gt[:, :2] + gt[:, 2:]) / 2
    size = gwh + off
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(((pc - gc) ** 2).sum(axis=1))
        err_norm = np.sqrt((((pc - gc) / size) ** 2).sum(axis=1))
    err[~valid] = -1.0 if dataset.lower().startswith("uav") else np.inf
    err_norm[~valid] = -1.0
    if dataset.lower() in _ABSENT_IS_MISS:
        err[~vis] = np.inf
        err_norm[~vis] = np.inf

    denom = int(valid.sum()) if conv.exclude_invalid else n
    if denom == 0:
        raise MetricsError(f"{where}: no valid ground-truth frame")
    # Counts via sorted values (same as comparing every frame with every threshold, but O(N log N)).
    success = (n - np.searchsorted(np.sort(ious), IOU_THRESHOLDS, side="right")) / denom
    precision = np.searchsorted(np.sort(err), PIXEL_THRESHOLDS, side="right") / denom
    norm_precision = np.searchsorted(np.sort(err_norm), NORM_THRESHOLDS, side="right") / denom

    got_mask = vis & gt_annotated
    got_mask[0] = False
    p, g = pred[got_mask], gt[got_mask]
    if frame_size is not None:
        p, g = _clip_like_got10k(p, frame_size), _clip_like_got10k(g, frame_size)
    got_ious = np.nan_to_num(iou_xyxy(p, g), nan=0.0)
    fps = None
    if times is not None and len(times):
        t = float(np.mean(times))
        fps = 1.0 / t if t > 0 else None
    return SequenceMetrics(name, success, precision, norm_precision, got_ious, n, int(valid.sum()), fps)


def average_runs(runs: list[SequenceMetrics]) -> SequenceMetrics:
    """Mean of repeated runs of one sequence (curves averaged, GOT-10k IoUs pooled as the toolkit)."""
    if not runs:
        raise MetricsError("average_runs: no runs")
    fps = [r.fps for r in runs if r.fps]
    return SequenceMetrics(runs[0].name, np.mean([r.success for r in runs], axis=0),
                           np.mean([r.precision for r in runs], axis=0),
                           np.mean([r.norm_precision for r in runs], axis=0),
                           np.concatenate([r.got_ious for r in runs]), runs[0].num_frames,
                           runs[0].num_valid, float(np.mean(fps)) if fps else None)


@dataclass
class Summary:
    """Metrics over a benchmark: mean of per-sequence curves (OPE), frame-weighted GOT-10k AO/SR."""

    sequences: list[SequenceMetrics]
    convention: Convention
    tracker: str = ""
    dataset: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def success_curve(self) -> np.ndarray:
        """(21,) mean success curve over sequences."""
        return np.mean([s.success for s in self.sequences], axis=0)

    @property
    def precision_curve(self) -> np.ndarray:
        """(51,) mean precision curve."""
        return np.mean([s.precision for s in self.sequences], axis=0)

    @property
    def norm_precision_curve(self) -> np.ndarray:
        """(51,) mean normalized precision curve."""
        return np.mean([s.norm_precision for s in self.sequences], axis=0)

    @property
    def auc(self) -> float:
        """Success AUC (mean over sequences of the per-sequence AUC)."""
        return float(np.mean(self.success_curve))

    @property
    def prec(self) -> float:
        """Precision at 20 px."""
        return float(self.precision_curve[PRECISION_INDEX])

    @property
    def norm_prec(self) -> float:
        """Normalized precision at 0.20."""
        return float(self.norm_precision_curve[PRECISION_INDEX])

    def _got(self) -> np.ndarray:
        return np.concatenate([s.got_ious for s in self.sequences]) if self.sequences else np.zeros(0)

    @property
    def ao(self) -> float:
        """GOT-10k AO over all counted frames of all sequences."""
        g = self._got()
        return float(g.mean()) if g.size else float("nan")

    @property
    def sr50(self) -> float:
        """GOT-10k SR at 0.5."""
        g = self._got()
        return float((g > 0.5).mean()) if g.size else float("nan")

    @property
    def sr75(self) -> float:
        """GOT-10k SR at 0.75."""
        g = self._got()
        return float((g > 0.75).mean()) if g.size else float("nan")

    @property
    def fps(self) -> float | None:
        """Mean of the per-sequence FPS, where timings were recorded."""
        f = [s.fps for s in self.sequences if s.fps]
        return float(np.mean(f)) if f else None

    def as_dict(self) -> dict[str, float]:
        """Headline numbers in percent (FPS as is)."""
        d = {"AUC": 100 * self.auc, "P": 100 * self.prec, "P_norm": 100 * self.norm_prec,
             "AO": 100 * self.ao, "SR0.5": 100 * self.sr50, "SR0.75": 100 * self.sr75}
        if self.fps is not None:
            d["FPS"] = self.fps
        return d

    def __str__(self) -> str:
        head = f"{self.tracker or 'tracker'} on {self.dataset or 'dataset'} ({len(self.sequences)} sequences)"
        nums = ", ".join(f"{k} {v:.2f}" for k, v in self.as_dict().items())
        return f"{head}: {nums}\n  convention: {self.convention}"


def summarize(sequences: list[SequenceMetrics], convention: str | Convention = "stark",
              tracker: str = "", dataset: str = "") -> Summary:
    """Overall metrics of per-sequence results (all evaluated under ``convention``)."""
    if not sequences:
        raise MetricsError(f"{tracker or 'tracker'} on {dataset or 'dataset'}: no sequences to summarize")
    return Summary(list(sequences), get_convention(convention), tracker, dataset)
