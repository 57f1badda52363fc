"""LoRA for LoRAT through peft: injection, LoRAT's initialisation, frozen-weight storage, merging.

Adapters go on q, k, v (separate linears), the attention projection and both FFN linears of every
block (for ViT-g the packed SwiGLU ``fc1`` = DINOv2 ``w12`` and ``fc2`` = ``w3``), nothing else.
"""
from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from timm.layers import trunc_normal_
from torch import nn

# Full-name regex: a suffix list would also catch patch_embed.proj (a Conv2d) and the head.
LORA_TARGETS = r"blocks\.\d+\.(attn\.(q|k|v|proj)|mlp\.(fc1|fc2))"
# Modules that stay trainable besides the adapters.
TRAINABLE_PREFIXES = ("token_type_embed", "head.")

FROZEN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def freeze_backbone_(model: nn.Module) -> None:
    """requires_grad=False on everything except the token-type table and the head."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TRAINABLE_PREFIXES))


# bitsandbytes releases whose Int8Params.to() re-quantizes weights that are int8 already when they
# move from the CPU to a GPU (every weight scaled by 127/SCB): refused for int8 storage.
BNB_INT8_MOVE_BUG = ((0, 46), (0, 47))


def check_bitsandbytes(version: str, storage: str) -> None:
    """Refuse a bitsandbytes release known to corrupt ``storage`` weights; the message names the fix."""
    major_minor = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if storage == "int8" and major_minor in BNB_INT8_MOVE_BUG:
        raise RuntimeError(
            f"model.frozen_dtype=int8 with bitsandbytes {version}: this release re-quantizes int8 weights when "
            "they move from the CPU to a GPU (every weight scaled by 127/SCB). "
            "Install another release: pip install 'bitsandbytes>=0.48'"
        )


def quantize_frozen_(model: nn.Module, storage: str, device: str | torch.device | None = None) -> None:
    """Store frozen weights in bf16/fp16, or the block linears in int8/nf4 through bitsandbytes.

    int8/nf4 keep the non-linear frozen tensors (norms, LayerScale, patch embed, position table)
    in bf16. Must run before LoRA injection so that peft picks its bnb-aware LoRA layers. The
    quantized layers are built from a CPU copy of each weight and moved to ``device`` (default:
    where the weight is): bitsandbytes quantizes on that move, so the weights are quantized once,
    on the device that trains, and never moved again as int8.
    """
    if storage == "fp32":
        return
    half = FROZEN_DTYPES.get(storage, torch.bfloat16)
    for name, p in model.named_parameters():
        if not name.startswith(TRAINABLE_PREFIXES):
            p.data = p.data.to(half)
    if storage in ("bf16", "fp16"):
        return
    if storage not in ("int8", "nf4"):
        raise ValueError(f"model.frozen_dtype={storage!r}: expected fp32, bf16, fp16, int8 or nf4")
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise RuntimeError(f"model.frozen_dtype={storage} needs bitsandbytes: pip install 'lorat_scale[bnb]'") from e
    import re

    check_bitsandbytes(bnb.__version__, storage)

    pattern = re.compile(LORA_TARGETS)
    for name, module in list(model.named_modules()):
        if not (pattern.fullmatch(name) and type(module) is nn.Linear):
            continue
        target = module.weight.device if device is None else torch.device(device)
        w = module.weight.data.float().cpu()
        if storage == "int8":
            q = bnb.nn.Linear8bitLt(module.in_features, module.out_features, has_fp16_weights=False)
            q.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        else:
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, compute_dtype=half, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
        q.bias = nn.Parameter(module.bias.data.to(half), requires_grad=False)
        q = q.to(target)  # bitsandbytes quantizes on this move (from the CPU)
        parent, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent), attr, q)
    # peft dispatches to its bnb-aware LoRA layers (which can merge) only when it sees these flags.
    model.is_loaded_in_8bit = storage == "int8"
    model.is_loaded_in_4bit = storage == "nf4"


def add_lora_(model: nn.Module, r: int, alpha: float, dropout: float, init: str, rslora: bool) -> None:
    """Inject peft LoRA adapters into the block linears and initialise them as LoRAT does."""
    if r <= 0:
        return
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=LORA_TARGETS,
        use_rslora=rslora,
        init_lora_weights={"peft": True, "gaussian": "gaussian", "trunc_normal": True}[init],
    )
    inject_adapter_in_model(config, model)
    # peft marks only the adapters trainable; LoRAT also trains the type table and the head.
    for name, p in model.named_parameters():
        if name.startswith(TRAINABLE_PREFIXES):
            p.requires_grad_(True)
    if init == "trunc_normal":
        # LoRAT's "bert" init (trunc_normal std 0.02 on both A and B) is not among peft's choices.
        # Drawn on the CPU and copied: the same numbers whatever device the adapters live on.
        for layer in lora_layers(model):
            for factor in (layer.lora_A["default"], layer.lora_B["default"]):
                w = factor.weight
                if w.device.type == "meta":
                    continue
                with torch.no_grad():
                    w.copy_(trunc_normal_(torch.empty(w.shape, dtype=w.dtype), std=0.02))


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    """Every peft LoRA layer in the model."""
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def set_lora_dtype_(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the trainable parameters (adapters, type table, head) to ``dtype``."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)


def merge_lora_(model: nn.Module) -> None:
    """Merge every adapter into its base weight in place and drop the adapter modules."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, attr = name.rsplit(".", 1)
            base = module.get_base_layer()
            base.requires_grad_(False)
            setattr(model.get_submodule(parent), attr, base)
