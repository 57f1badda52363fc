"""ONNX export of the merged LoRAT inference model, checked against PyTorch with onnxruntime.

Graph: ``template`` (B,3,Tz,Tz) float32 normalized, ``search`` (B,3,Tx,Tx) float32 normalized,
``template_mask`` (B,Tz/14,Tz/14) int64  ->  ``score_map`` (B,H,W) logits, ``boxes`` (B,H,W,4)
normalized xyxy in the search crop. Cropping, normalization and post-processing stay outside the
graph (lorat_scale.crop, lorat_scale.tracking.postprocess); the crop/post-processing settings
are stored in the model's metadata_props.

Exporter: the TorchScript exporter (``dynamo=False``) is the default. On this model it exports in
well under a second, needs no onnxscript, and gives the same numbers as the torch.export-based
exporter (max |diff| vs PyTorch ~1e-7 for both). The model has no data-dependent control flow, so
tracing is exact. torch 2.14's default dynamo exporter works too (``exporter="dynamo"``, dynamic
batch via ``torch.export.Dim``) but takes 10-20 s even for a tiny model; switch to it when torch
drops the TorchScript path (it is deprecated).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .. import paths
from ..config import Config
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..models import LoRAT
from ..outputs import atomic_path

INPUT_NAMES = ["template", "search", "template_mask"]
OUTPUT_NAMES = ["score_map", "boxes"]

__all__ = ["build_export_model", "export_onnx", "verify_onnx", "export_and_verify", "example_inputs",
           "cached_export", "model_fingerprint"]


def build_export_model(
    variant: str = "S-224", checkpoint: str = "", backbone: str = "", overrides: list[str] | None = None
) -> tuple[LoRAT, Config]:
    """Merged fp32 model and its config from a checkpoint + backbone (without a checkpoint: untrained head)."""
    from ..models import merge_for_inference
    from ..models.builder import load_model

    model, cfg = load_model(checkpoint or None, variant=variant, backbone=backbone, overrides=overrides)
    if not checkpoint:
        warnings.warn("no checkpoint: exporting an untrained head (pass --checkpoint)", stacklevel=2)
    return merge_for_inference(model, inplace=True), cfg


class _TupleOutputs(nn.Module):
    """ONNX graphs return tensors, not dicts: (score_map, boxes)."""

    def __init__(self, model: LoRAT) -> None:
        super().__init__()
        self.model = model

    def forward(self, template: torch.Tensor, search: torch.Tensor,
                template_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(template, search, template_mask)
        return out["score_map"], out["boxes"]


def example_inputs(model: LoRAT, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (template, search, template_mask) of the model's sizes, with a non-trivial mask."""
    c = model.cfg
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 3, c.template_size, c.template_size, generator=g)
    x = torch.randn(batch, 3, c.search_size, c.search_size, generator=g)
    gz = c.template_size // c.patch_size
    mask = torch.zeros(batch, gz, gz, dtype=torch.int64)
    mask[:, gz // 4 : 3 * gz // 4, gz // 4 : 3 * gz // 4] = 1  # object in the centre, like a real template
    return z, x, mask


def export_onnx(
    model: LoRAT,
    path: str | Path,
    config: Config | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    exporter: Literal["torchscript", "dynamo"] = "torchscript",
) -> Path:
    """Write the (merged, eval-mode, fp32) ``model`` to ``path``; returns the path."""
    if any("lora_" in n for n, _ in model.named_parameters()):
        raise ValueError("export the merged model: pass merge_for_inference(model), not the LoRA training model")
    if model.compute_dtype != torch.float32:
        raise ValueError(f"export needs fp32 weights; the model stores {model.compute_dtype} (model.frozen_dtype)")
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    # Exported beside a temporary name and renamed when complete (with its external-data files, if any).
    with atomic_path(path) as tmp:
        _export(model, tmp, opset, dynamic_batch, exporter)
        _add_metadata(tmp, model, config)
    return Path(path)


def _export(model: LoRAT, path: Path, opset: int, dynamic_batch: bool, exporter: str) -> None:
    """torch.onnx.export of the wrapped model to ``path``."""
    wrapped = _TupleOutputs(model.eval().cpu()).eval()
    args = example_inputs(model, batch=2)
    if exporter == "torchscript":
        axes = {n: {0: "batch"} for n in INPUT_NAMES + OUTPUT_NAMES} if dynamic_batch else None
        with warnings.catch_warnings(), torch.no_grad():
            # Known and harmless here: the tracer notes Python-side shape checks and the q/k/v unpack
            # (always 3), and torch announces the TorchScript exporter's deprecation.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapped, args, str(path), dynamo=False, input_names=INPUT_NAMES,
                              output_names=OUTPUT_NAMES, dynamic_axes=axes, opset_version=opset)
    else:
        shapes = None
        if dynamic_batch:
            b = torch.export.Dim("batch", min=1, max=4096)
            shapes = {n: {0: b} for n in INPUT_NAMES}
        with torch.no_grad():
            torch.onnx.export(wrapped, args, str(path), dynamo=True, input_names=INPUT_NAMES,
                              output_names=OUTPUT_NAMES, dynamic_shapes=shapes, opset_version=max(opset, 18),
                              verbose=False)


def _add_metadata(path: Path, model: LoRAT, config: Config | None) -> None:
    """Record what a deployment needs around the graph (sizes, crop factors, window penalty)."""
    import onnx

    c = model.cfg
    meta = {
        "producer": "lorat_scale",
        "template_size": c.template_size,
        "search_size": c.search_size,
        "patch_size": c.patch_size,
        "normalize_mean": ",".join(map(str, IMAGENET_MEAN)),
        "normalize_std": ",".join(map(str, IMAGENET_STD)),
        "score_map": "logits (apply sigmoid)",
        "boxes": "normalized xyxy in the search crop",
    }
    if config is not None:
        t = config.track
        meta.update(variant=config.variant, window_penalty=t.window_penalty, search_area_factor=t.search_area_factor,
                    template_area_factor=t.template_area_factor, min_box_size=t.min_box_size)
    m = onnx.load(str(path), load_external_data=False)  # > 2 GB models keep their weights in side files
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=str(v))
    onnx.save(m, str(path))


def verify_onnx(model: LoRAT, path: str | Path, batches: tuple[int, ...] = (1, 3)) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| of score_map and boxes over random inputs of several batch sizes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    model = model.eval().cpu()
    worst = {"score_map": 0.0, "boxes": 0.0}
    for i, b in enumerate(batches):
        z, x, mask = example_inputs(model, batch=b, seed=i + 1)
        got = sess.run(OUTPUT_NAMES, {"template": z.numpy(), "search": x.numpy(), "template_mask": mask.numpy()})
        with torch.no_grad():
            ref = model(z, x, mask)
        for name, arr in zip(OUTPUT_NAMES, got):
            if arr.shape != tuple(ref[name].shape):
                raise AssertionError(f"{name}: onnx shape {arr.shape} vs torch {tuple(ref[name].shape)} at batch {b}")
            worst[name] = max(worst[name], float(np.abs(arr - ref[name].numpy()).max()))
    return worst


def export_and_verify(model: LoRAT, path: str | Path, config: Config | None = None,
                      **kwargs: Any) -> dict[str, float]:
    """Export, verify with onnxruntime, and return timings and max differences."""
    t0 = time.perf_counter()
    export_onnx(model, path, config, **kwargs)
    t1 = time.perf_counter()
    diffs = verify_onnx(model, path, batches=(1, 3) if kwargs.get("dynamic_batch", True) else (2,))
    import onnx

    imports = onnx.load(str(path), load_external_data=False).opset_import
    opset = max(o.version for o in imports if o.domain in ("", "ai.onnx"))
    return {"export_s": t1 - t0, "verify_s": time.perf_counter() - t1, "opset": opset,
            **{f"max_abs_diff_{k}": v for k, v in diffs.items()}}


# Modules whose code decides the exported graph: a change to any of them must miss the cache.
_GRAPH_MODULES = ("lorat_scale.models.lorat", "lorat_scale.models.layers", "lorat_scale.export.onnx")


def model_fingerprint(model: LoRAT, **settings: object) -> str:
    """sha256 over what produces the graph: weights, model config, graph code, tool versions, ``settings``."""
    import importlib
    import sys

    import onnx

    h = hashlib.sha256()
    cfg = dataclasses.asdict(model.cfg)
    cfg.pop("backbone_weights", None)  # where the weights came from does not matter: they are hashed below
    code = {m: hashlib.sha256(Path(importlib.import_module(m).__file__).read_bytes()).hexdigest()
            for m in _GRAPH_MODULES}
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "python": sys.version.split()[0]}
    h.update(json.dumps({"config": cfg, "code": code, "versions": versions, "settings": settings},
                        sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def cached_export(model: LoRAT, config: Config | None = None, cache_dir: str | Path | None = None,
                  opset: int = 17, tol: float = 1e-3) -> Path:
    """The merged fp32 ``model`` as ONNX, exported once and then reused (keyed on ``model_fingerprint``).

    Entries are folders ``<cache_dir>/<key>/`` (default ``$LORAT_CACHE/onnx``) holding ``model.onnx``
    (weights of > 2 GB models in side files) and ``info.json`` (what produced it, the check below).
    A fresh export is checked against PyTorch on random inputs at batch 1 and 2 and refused if
    outputs differ by more than ``tol``. Written to a temporary folder and renamed: concurrent
    trackers (evaluation workers) never see a half-written entry.
    """
    root = Path(cache_dir) if cache_dir else paths.cache_dir() / "onnx"
    key = model_fingerprint(model, opset=opset, exporter="torchscript", dynamic_batch=True)[:32]
    entry = root / key
    if (entry / "model.onnx").is_file():
        return entry / "model.onnx"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        export_onnx(model, tmp / "model.onnx", config, opset=opset)
        export_s = time.perf_counter() - t0
        diffs = verify_onnx(model, tmp / "model.onnx", batches=(1, 2))
        if max(diffs.values()) > tol:
            raise RuntimeError(
                f"the ONNX export of this model differs from PyTorch by {diffs} (more than {tol:g}); "
                f"track with backend='torch' and report this model configuration: {model.cfg}"
            )
        info = {"key": key, "variant": getattr(config, "variant", None), "model": dataclasses.asdict(model.cfg),
                "torch": torch.__version__, "opset": opset, "exporter": "torchscript", "export_s": round(export_s, 2),
                "max_abs_diff_vs_torch": diffs, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process finished the same export first: use its entry
            if not (entry / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry / "model.onnx"
