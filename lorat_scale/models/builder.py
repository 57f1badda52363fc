"""Building a LoRAT training model: the network, its backbone weights, frozen storage and LoRA.

One module for assembly (as timm's ``_builder``): ``lorat.py`` defines the network, ``weights.py``
reads and converts weight files, ``lora.py`` injects adapters; only this module uses all three.
"""
from __future__ import annotations

import torch

from ..config import ModelConfig
from . import lora, weights
from .lorat import LoRAT


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu", backbone_state: dict | None = None) -> LoRAT:
    """Build a LoRAT training model: backbone weights loaded, frozen, stored, LoRA injected.

    ``device="meta"`` builds shapes only (no memory; parameter/MAC counting, memory estimates).
    Build on the device that trains (``device="cuda"``): int8/nf4 frozen weights are then quantized
    once, straight onto that device (see ``lora.quantize_frozen_``). Backbone weights come from
    ``backbone_state`` or ``cfg.backbone_weights`` (see weights.py); with neither, the backbone keeps
    its random init (tests, shape checks).
    """
    # Everything random (a backbone without weights, the trainable init) draws from a fixed seed on
    # the CPU, whatever the target device: every rank, every rerun and every device type builds the
    # identical model.
    target = torch.device(device)
    on_meta = target.type == "meta"
    # The caller's RNG states are restored afterwards: the CPU's and, when building on a GPU, that
    # GPU's (peft's own inits draw there; the training's per-rank seeds must not be overwritten).
    gpus = [target.index if target.index is not None else torch.cuda.current_device()] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(cfg.init_seed)
        with torch.device("meta" if on_meta else "cpu"):
            model = LoRAT(cfg)
        if backbone_state is None and cfg.backbone_weights and not on_meta:
            backbone_state = weights.read_backbone(cfg.backbone_weights)
        if backbone_state is not None:
            weights.load_backbone_(model, backbone_state)
        lora.freeze_backbone_(model)
        model.init_trainable_()
        # int8/nf4: quantized from the CPU weights straight onto the target device, once.
        lora.quantize_frozen_(model, cfg.frozen_dtype, device)
        model.to(device)
        lora.add_lora_(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_init, cfg.use_rslora)
    # peft creates adapters in the base weight's dtype; trainable tensors follow the config instead.
    lora.set_lora_dtype_(model, lora.FROZEN_DTYPES[cfg.trainable_dtype])
    return model
