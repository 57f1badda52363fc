"""Parameter and compute counts of LoRAT variants, from models built on the meta device (no memory)."""
from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import VARIANTS, get_preset
from .builder import build_model
from .lorat import merge_for_inference


@dataclasses.dataclass
class ModelStats:
    """Counts for one variant."""

    variant: str
    total_params: int  # training graph: frozen backbone + unmerged LoRA + head + type table
    trainable_params: int  # LoRA + head + type table
    merged_params: int  # inference model after merging LoRA
    macs: int  # multiply-accumulates of one merged forward at batch 1


def count(variant: str) -> ModelStats:
    """Parameters of the training model and MACs of the merged model for ``variant``."""
    cfg = get_preset(variant).model
    # Explicit-softmax attention: FlopCounterMode counts its matmuls (2*N^2*C per block) exactly.
    cfg.attn_backend = "math"
    model = build_model(cfg, device="meta")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    merged = merge_for_inference(model, inplace=True)
    n_merged = sum(p.numel() for p in merged.parameters())
    z = torch.empty(1, 3, cfg.template_size, cfg.template_size, device="meta")
    x = torch.empty(1, 3, cfg.search_size, cfg.search_size, device="meta")
    mask = torch.zeros(1, cfg.template_size // cfg.patch_size, cfg.template_size // cfg.patch_size,
                       dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        merged(z, x, mask)
    return ModelStats(variant, total, trainable, n_merged, counter.get_total_flops() // 2)


def table(variants: list[str] | None = None) -> str:
    """Markdown table of parameters and MACs for the given (default: all) variants."""
    rows = ["| variant | total params | trainable | merged (inference) | MACs (batch 1) |", "|---|---|---|---|---|"]
    for v in variants or VARIANTS:
        s = count(v)
        rows.append(
            f"| {v} | {s.total_params / 1e6:.1f} M | {s.trainable_params / 1e6:.2f} M | "
            f"{s.merged_params / 1e6:.1f} M | {s.macs / 1e9:.1f} G |"
        )
    return "\n".join(rows)
