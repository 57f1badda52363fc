"""How the tracker runs the merged model: PyTorch or ONNX Runtime, behind one call.

Every backend takes the same normalized crops ``(z, x, z_feat_mask)`` and returns the same float32
``score_map`` (B,H,W) logits and ``boxes`` (B,H,W,4), so cropping, post-processing and the state
update are the tracker's one code path whatever runs the network.

* ``torch``: eager, or ``torch.compile``d; ``fp32``, or ``bf16``/``fp16`` autocast.
* ``onnxruntime``: the merged model exported once to ONNX (cached, keyed on weights, config, graph
  code and tool versions: ``lorat_scale.export.onnx.cached_export``) and run by an ONNX Runtime
  session with all graph optimisations (constant folding, LayerNorm/GELU/MatMul+Add fusions, NCHWc
  layouts); ``fp32``, or ``int8`` (dynamic quantization of the linear layers,
  ``lorat_scale.export.quantize``) on CPUs. ``device="cuda"`` uses the CUDA provider (fp32) when
  the ``onnxruntime-gpu`` build is installed.
"""
from __future__ import annotations

import contextlib
from typing import Protocol

import numpy as np
import torch

from ..config import Config, ConfigError
from ..models import LoRAT

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnxruntime": ("fp32", "int8")}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["BACKENDS", "PRECISIONS", "ModelRunner", "TorchRunner", "OnnxRuntimeRunner", "check_backend"]


class ModelRunner(Protocol):
    """(z, x, z_feat_mask) -> {"score_map": (B,H,W) float32, "boxes": (B,H,W,4) float32}."""

    def __call__(self, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]: ...


def check_backend(backend: str, precision: str, device: torch.device) -> None:
    """ConfigError naming the setting when ``backend``/``precision``/``device`` do not go together."""
    if backend not in BACKENDS:
        raise ConfigError(f"track.backend {backend!r} must be one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS[backend]:
        hint = {"int8": " (int8 runs on backend onnxruntime)",
                "bf16": " (bf16/fp16 autocast runs on backend torch)",
                "fp16": " (bf16/fp16 autocast runs on backend torch)"}.get(precision, "")
        raise ConfigError(f"track.precision {precision!r} is not available on backend {backend!r}: "
                          f"choose one of {', '.join(PRECISIONS[backend])}{hint}")
    if backend == "onnxruntime" and device.type == "cuda" and precision == "int8":
        raise ConfigError("track.precision 'int8' is a CPU deployment option; on CUDA use fp32 "
                          "(onnxruntime) or bf16/fp16 (torch)")


class TorchRunner:
    """The merged model in PyTorch, optionally compiled, under autocast for bf16/fp16."""

    def __init__(self, model: LoRAT, device: torch.device, precision: str = "fp32", compile: bool = False) -> None:
        """Move ``model`` to ``device``; ``compile`` wraps it in ``torch.compile`` (compiled on the first call)."""
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self._forward = torch.compile(self.model) if compile else self.model

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward; outputs in float32 whatever the autocast dtype."""
        ctx = (torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision]) if self.precision in _AUTOCAST
               else contextlib.nullcontext())
        with ctx:
            out = self._forward(z, x, mask)
        return {"score_map": out["score_map"].float(), "boxes": out["boxes"].float()}


class OnnxRuntimeRunner:
    """The merged model exported to ONNX (cached) and run by an ONNX Runtime session."""

    def __init__(self, model: LoRAT, device: torch.device, precision: str = "fp32", threads: int = 0,
                 cache_dir: str = "", config: Config | None = None, int8_mode: str = "dynamic",
                 calibration: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> None:
        """Export (or reuse) the model, quantize it for ``precision="int8"``, open the session.

        ``threads``: ONNX Runtime's intra-op threads (0 = ``torch.get_num_threads()``, so one
        setting governs both libraries in a process). ``int8_mode``/``calibration``: see
        ``lorat_scale.export.quantize`` (the tracker uses dynamic; static is the benchmark's comparison).
        """
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("track.backend 'onnxruntime' needs onnxruntime: pip install 'lorat_scale[export]'") from e
        from ..export.onnx import OUTPUT_NAMES, cached_export

        self.device = device
        self.precision = precision
        self.path = cached_export(model, config, cache_dir or None)
        if precision == "int8":
            from ..export.quantize import cached_int8

            self.path = cached_int8(self.path, int8_mode, calibration)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"track.backend 'onnxruntime' on {device}: this onnxruntime has no CUDA provider "
                    f"(providers: {ort.get_available_providers()}); pip install onnxruntime-gpu"
                )
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        self._outputs = OUTPUT_NAMES

    def __call__(self, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward on host arrays (the crops are built on the CPU; zero-copy views both ways)."""
        feeds = {"template": _host(z), "search": _host(x), "template_mask": _host(mask)}
        score_map, boxes = self.session.run(self._outputs, feeds)
        return {"score_map": torch.from_numpy(score_map), "boxes": torch.from_numpy(boxes)}


def _host(t: torch.Tensor):
    """Contiguous numpy view (a copy only if the tensor is elsewhere or strided)."""
    return t.detach().to("cpu").contiguous().numpy()
