"""int8 versions of the exported model for CPU deployment (ONNX Runtime quantization), cached.

Only the linear layers (ONNX ``MatMul`` with a constant weight: q/k/v, proj, fc1, fc2 and the head)
are quantized: weights int8 per output channel, activations uint8. Softmax, LayerNorm, GELU and the
attention products stay fp32.

* ``dynamic`` (the tracker's int8): activation ranges are measured on each input at run time
  (``DynamicQuantizeLinear`` + ``MatMulInteger``). No calibration data.
* ``static``: activation ranges calibrated once on sample inputs (QDQ format), given as a list of
  ``(template, search, template_mask)`` arrays, e.g. tracker crops of sample frames.

Measured on S-224 with the sample backbone (docs/DEPLOY.md, ``scripts/bench_track.py``): dynamic
per-channel is both faster and closer to fp32 than static QDQ on ONNX Runtime's CPU provider, so
the tracker uses dynamic; static is kept for the benchmark's comparison and for runtimes that need
QDQ graphs.

On x86 CPUs without VNNI (AVX2 only) the u8 x s8 dot product can saturate; weights are then
quantized to 7 bits (``reduce_range``), as ONNX Runtime recommends for those CPUs.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .onnx import INPUT_NAMES

__all__ = ["quantize_int8", "cached_int8", "cpu_has_vnni"]

MODES = ("dynamic", "static")


def cpu_has_vnni() -> bool:
    """Whether this CPU has an int8 dot-product instruction ONNX Runtime uses (AVX512-VNNI, AVX-VNNI, ARM dot)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume a recent CPU
        return True
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", " asimddp"))


def quantize_int8(src: str | Path, dst: str | Path, mode: str = "dynamic",
                  calibration: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
                  reduce_range: bool | None = None) -> Path:
    """Write an int8 version of the fp32 ONNX model ``src`` to ``dst`` (linear layers only)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if mode not in MODES:
        raise ValueError(f"int8 mode must be one of {MODES}, got {mode!r}")
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # > 2 GB models (ViT-g) keep their weights in side files next to model.onnx; so must the output.
    large = sum(f.stat().st_size for f in Path(src).parent.iterdir() if f.is_file()) > 1_900_000_000
    common = dict(op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range,
                  weight_type=QuantType.QInt8, use_external_data_format=large,
                  # The TorchScript export leaves some intermediate types to shape inference, which
                  # ONNX Runtime's quantizer does not run: every such tensor here is float32.
                  extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    if mode == "dynamic":
        quantize_dynamic(str(src), str(dst), **common)
        return dst
    items = list(calibration or [])
    if not items:
        raise ValueError("static int8 needs calibration inputs: (template, search, template_mask) arrays")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            nxt = next(self._it, None)
            return None if nxt is None else dict(zip(INPUT_NAMES, nxt))

    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    **common)
    return dst


def cached_int8(fp32_path: str | Path, mode: str = "dynamic",
                calibration: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> Path:
    """int8 model next to the cached fp32 export (``<key>/int8-<mode>-<...>/model.onnx``), made once."""
    import hashlib

    import onnxruntime

    fp32_path = Path(fp32_path)
    reduce_range = not cpu_has_vnni()
    h = hashlib.sha256(f"{mode}|{onnxruntime.__version__}|rr={reduce_range}".encode())
    for arrays in calibration or []:  # static: the calibration data is part of what produced it
        for a in arrays:
            h.update(np.ascontiguousarray(a))
    entry = fp32_path.parent / f"int8-{mode}-{h.hexdigest()[:16]}"
    if (entry / "model.onnx").is_file():
        return entry / "model.onnx"
    tmp = fp32_path.parent / f".{entry.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        quantize_int8(fp32_path, tmp / "model.onnx", mode, calibration, reduce_range)
        info = {"mode": mode, "reduce_range": reduce_range, "onnxruntime": onnxruntime.__version__,
                "calibration_inputs": len(calibration or []), "quantize_s": round(time.perf_counter() - t0, 2),
                "source": str(fp32_path), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process made the same entry first
            if not (entry / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry / "model.onnx"
