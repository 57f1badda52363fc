"""The LoRAT tracker API: ``Tracker`` (one target) and ``BatchTracker`` (many targets, one forward).

    t = Tracker.from_checkpoint("model.safetensors", backbone="dinov2_vits14_pretrain.pth")
    t.init(frame, box_xyxy)                 # frame: HxWx3 uint8 RGB numpy or a PIL image
    box_xyxy, score = t.track(next_frame)
    # deployment on a CPU: the same crops, post-processing and boxes, the model run by ONNX Runtime
    t = Tracker.from_checkpoint(..., backend="onnxruntime")            # or precision="int8"

Inference follows the official LoRAT evaluation (tests/test_tracker.py checks it frame by frame):
template crop (area factor 2) around the init box padded with the frame's mean colour and its
foreground cell mask, cached and never updated; each frame a SiamFC search crop (area factor 4 or
5) around the previous box (w, h raised to >= 10 px) padded with the *template* frame's mean colour,
the merged model (run by a backend of ``backends.py``), Hann-window post-processing, box mapped back
and clipped. The state is not updated when the new box is degenerate or outside the frame.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..boxes import cell_mask, xywh_to_xyxy
from ..config import Config, ConfigError, get_preset
from ..data.augment import normalize
from ..models import LoRAT, merge_for_inference
from ..models.builder import load_model, resolve_config  # re-exported: part of the tracking API
from .backends import OnnxRuntimeRunner, TorchRunner, check_backend
from .postprocess import postprocess

__all__ = ["Tracker", "BatchTracker", "load_model", "resolve_config", "to_rgb_uint8", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda if available else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_rgb_uint8(frame: Any) -> np.ndarray:
    """A PIL image or HxWx3 uint8 RGB numpy array -> HxWx3 uint8 numpy (clear error otherwise)."""
    if not isinstance(frame, np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a dependency
            Image = None
        if Image is not None and isinstance(frame, Image.Image):
            return np.asarray(frame.convert("RGB"))
        raise TypeError(f"frame must be an HxWx3 uint8 RGB numpy array or a PIL image, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"frame must be HxWx3 uint8 RGB, got dtype {frame.dtype} shape {frame.shape} "
            "(convert grayscale/BGR/float frames first, e.g. cv2.cvtColor(f, cv2.COLOR_BGR2RGB))"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    return frame


@dataclass
class _Target:
    """Per-target state: the cached template and the current box."""

    z: torch.Tensor  # (3, Tz, Tz) normalized, on the model device
    mask: torch.Tensor  # (Gz, Gz) int64 foreground cells, on the model device
    pad_rgb: np.ndarray  # float32 (3,): template-frame mean colour, pads every search crop
    template_params: np.ndarray  # adjusted (2, 2) template crop parameters
    box: np.ndarray  # float64 (4,) xyxy: the search crop is centred on this box


class _TrackerBase:
    """Shared machinery: model set-up, template preparation and the batched tracking step."""

    def __init__(
        self,
        model: LoRAT,
        config: Config | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        compile: bool | None = None,
        merge: bool | None = None,
        backend: str | None = None,
    ) -> None:
        """Wrap a LoRAT model (LoRA merged here if it has adapters); unset arguments come from ``config.track``."""
        cfg = config or get_preset("S-224")
        self.config = cfg
        tc = cfg.track
        self.device = resolve_device(device if device is not None else tc.device)
        self.precision = precision or tc.precision
        self.backend = backend or tc.backend
        compile = tc.compile if compile is None else compile
        check_backend(self.backend, self.precision, self.device)
        if compile and self.backend != "torch":
            raise ConfigError(f"track.compile applies to backend 'torch' (ONNX Runtime optimises the graph itself), "
                              f"not {self.backend!r}")
        if model.cfg.template_size != cfg.model.template_size or model.cfg.search_size != cfg.model.search_size:
            raise ConfigError(
                f"model is {model.cfg.template_size}/{model.cfg.search_size} but the config says "
                f"{cfg.model.template_size}/{cfg.model.search_size}"
            )
        if merge is None:  # an already merged model has no adapters left
            merge = any("lora_" in n for n, _ in model.named_parameters())
        # In place: the training model is not needed for tracking, and a copy would double the memory.
        m = merge_for_inference(model, inplace=True) if merge else model.eval()
        if self.backend == "torch":
            self._runner = TorchRunner(m, self.device, self.precision, compile)
            self._input_device = self.device
        else:
            # ONNX Runtime reads host arrays (and copies them to the GPU itself with the CUDA provider).
            self._runner = OnnxRuntimeRunner(m.cpu(), self.device, self.precision, tc.ort_threads, tc.onnx_cache, cfg)
            self._input_device = torch.device("cpu")
        self.model = m  # the merged PyTorch model (for a backend other than torch: its source, on the CPU)
        mc = model.cfg
        self.template_size, self.search_size, self.patch_size = mc.template_size, mc.search_size, mc.patch_size
        self.last: dict[str, Any] = {}  # details of the last step (crop params, raw maps, ...)

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        variant: str | None = None,
        backbone: str = "",
        config: Config | None = None,
        overrides: list[str] | None = None,
        **kwargs: Any,
    ) -> Tracker:
        """Tracker from a trainable-only checkpoint (ours or official) + the frozen backbone weights.

        The variant comes from ``config``, else ``variant``, else the checkpoint metadata, else S-224.
        Backbone: ``backbone`` or ``config.model.backbone_weights`` (required: checkpoints hold no
        backbone). ``kwargs`` go to the constructor (device, precision, compile, backend).
        """
        if not path:
            raise ValueError("from_checkpoint needs a checkpoint path "
                             "(Tracker(model, config) tracks with an untrained head)")
        model, config = load_model(path, variant=variant, backbone=backbone, config=config, overrides=overrides)
        return cls(model, config, **kwargs)

    @classmethod
    def from_official(cls, path: str | Path, backbone: str, variant: str = "S-224", **kwargs: Any) -> Tracker:
        """Tracker from an official LoRAT checkpoint (``*.bin``/safetensors) + Meta DINOv2 backbone.

        Official checkpoints store no ``lora_alpha``; the variant's configured alpha is used (alpha = r
        for every released model, so this equals the official merge).
        """
        from ..models.weights import is_official, read_state_dict

        if not is_official(read_state_dict(path).keys()):
            raise ValueError(f"{path} does not look like an official LoRAT checkpoint (no '*.lora.A' keys)")
        return cls.from_checkpoint(path, variant=variant, backbone=backbone, **kwargs)

    # ----------------------------------------------------------------------------- internals
    def _normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) 0..255 -> ImageNet-normalized float32 on the model's input device."""
        return normalize(crops.to(self._input_device, non_blocking=True))

    def _new_target(self, frame: Any, box_xyxy: Any) -> _Target:
        """Crop and cache the template of a new target (frame 0)."""
        from ..crop import check_box, crop_image, image_mean, map_boxes, siamfc_params

        frame = to_rgb_uint8(frame)
        box = check_box(box_xyxy, "init box")
        h, w = frame.shape[:2]
        if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h:
            raise ValueError(f"init box {box.tolist()} (xyxy) lies outside the {w}x{h} frame")
        tc = self.config.track
        pad = image_mean(frame)
        req = siamfc_params(box, tc.template_area_factor, self.template_size)
        crop, params = crop_image(frame, req, self.template_size, pad)
        grid = self.template_size // self.patch_size
        mask = cell_mask(map_boxes(params, box), self.patch_size, (grid, grid))
        z = self._normalize(crop[None])[0]
        return _Target(z=z, mask=torch.from_numpy(mask).to(self._input_device), pad_rgb=pad, template_params=params,
                       box=box)

    @torch.no_grad()
    def _step(self, targets: list[_Target], frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One batched tracking step: crops, one forward, post-processing, state update."""
        from ..crop import crop_image, enlarge_to_min_size, siamfc_params

        tc = self.config.track
        crops, params, sizes = [], [], []
        for t, f in zip(targets, frames):
            centre = enlarge_to_min_size(t.box, tc.min_box_size)
            req = siamfc_params(centre, tc.search_area_factor, self.search_size)
            crop, adj = crop_image(f, req, self.search_size, t.pad_rgb)
            crops.append(crop)
            params.append(adj)
            sizes.append((f.shape[1], f.shape[0]))
        x = self._normalize(torch.stack(crops))
        z = torch.stack([t.z for t in targets])
        mask = torch.stack([t.mask for t in targets])
        out = self._run_model(z, x, mask)
        params_arr = np.stack(params)
        sizes_arr = np.asarray(sizes, dtype=np.float64)
        res = postprocess(out["score_map"], out["boxes"], params_arr, sizes_arr, tc.window_penalty,
                          search_size=self.search_size)
        boxes = res["box_frame_xyxy"]
        scores = res["confidence"].to("cpu", torch.float64).numpy()
        for t, b, (fw, fh) in zip(targets, boxes, sizes):
            # The clipped box is the next state unless it is degenerate or outside the frame.
            if b[2] > b[0] and b[3] > b[1] and b[2] > 0 and b[3] > 0 and b[0] < fw and b[1] < fh:
                t.box = b.copy()
        self.last = {"search_params": params_arr, "search_input": x, "score_map": out["score_map"],
                     "boxes": out["boxes"], "postprocess": res}
        return boxes, scores

    def _run_model(self, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward of the merged model by the backend: float32 score_map and boxes."""
        return self._runner(z, x, mask)


class Tracker(_TrackerBase):
    """Single-target tracker: ``init(frame, box)`` then ``track(frame) -> (box_xyxy, score)``."""

    _target: _Target | None = None

    def init(self, frame: Any, box: Any, box_format: str = "xyxy") -> None:
        """Start tracking ``box`` (xyxy continuous pixels, or ``box_format="xywh"``) in ``frame``."""
        self._target = self._new_target(frame, _as_xyxy(box, box_format))

    def track(self, frame: Any) -> tuple[np.ndarray, float]:
        """Predicted float64 xyxy box (clipped to the frame) and its confidence in [0, 1]."""
        if self._target is None:
            raise RuntimeError("call init(frame, box) before track(frame)")
        boxes, scores = self._step([self._target], [to_rgb_uint8(frame)])
        return boxes[0], float(scores[0])

    @property
    def state(self) -> _Target | None:
        """The cached template and current box (None before init)."""
        return self._target


class BatchTracker(_TrackerBase):
    """Many targets (sequences, or several objects in one video) advanced in one forward pass.

        bt.init("seqA", frame_a, box_a); bt.init("seqB", frame_b, box_b)
        out = bt.track({"seqA": next_a, "seqB": next_b})   # {key: (box_xyxy, score)}

    Only the targets named in ``track`` advance, so sequences of different lengths mix freely; pass
    the same frame under several keys to track several objects of one video.
    """

    def __init__(self, *args: Any, max_batch: int = 0, **kwargs: Any) -> None:
        """As ``Tracker``; ``max_batch`` > 0 splits larger steps into chunks of that many targets."""
        super().__init__(*args, **kwargs)
        self.max_batch = max_batch
        self.targets: dict[Hashable, _Target] = {}

    def init(self, key: Hashable, frame: Any, box: Any, box_format: str = "xyxy") -> None:
        """Add (or restart) target ``key`` with its first frame and box."""
        self.targets[key] = self._new_target(frame, _as_xyxy(box, box_format))

    def remove(self, key: Hashable) -> None:
        """Forget a finished target."""
        self.targets.pop(key, None)

    def track(self, frames: Mapping[Hashable, Any]) -> dict[Hashable, tuple[np.ndarray, float]]:
        """Advance the named targets on their new frames; one forward per chunk of ``max_batch``."""
        missing = [k for k in frames if k not in self.targets]
        if missing:
            raise KeyError(f"unknown target(s) {missing}: call init(key, frame, box) first")
        keys = list(frames)
        out: dict[Hashable, tuple[np.ndarray, float]] = {}
        chunk = self.max_batch if self.max_batch > 0 else max(len(keys), 1)
        for i in range(0, len(keys), chunk):
            ks = keys[i : i + chunk]
            boxes, scores = self._step([self.targets[k] for k in ks], [to_rgb_uint8(frames[k]) for k in ks])
            out.update({k: (b, float(s)) for k, b, s in zip(ks, boxes, scores)})
        return out


def _as_xyxy(box: Any, box_format: str) -> np.ndarray:
    """Box in ``box_format`` ("xyxy" or "xywh") -> float64 xyxy."""
    if box_format == "xyxy":
        return np.asarray(box, dtype=np.float64).reshape(-1)
    if box_format == "xywh":
        return xywh_to_xyxy(np.asarray(box, dtype=np.float64).reshape(-1))
    raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
