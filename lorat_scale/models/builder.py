"""Building a LoRAT model: the network, its backbone weights, frozen storage, LoRA, and trained checkpoints.

One module for assembly (as timm's ``_builder``): ``lorat.py`` defines the network, ``weights.py``
reads and converts weight files, ``lora.py`` injects adapters; only this module uses all three.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config, ModelConfig, apply_overrides, config_from_dict, validate
from . import lora, weights
from .lorat import LoRAT
from .weights import load_trainable, model_config_from_meta, read_metadata


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


def resolve_config(
    checkpoint: str | Path | None,
    variant: str | None = None,
    backbone: str = "",
    config: Config | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """The configuration ``load_model`` builds for these arguments, without building the model.

    The variant comes from ``config``, else ``variant``, else the checkpoint metadata, else S-224.
    Backbone: ``backbone`` or ``config.model.backbone_weights``; required with a checkpoint
    (checkpoints hold no frozen weights).
    """
    meta: dict[str, str] = {}
    if checkpoint:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        try:
            meta = read_metadata(checkpoint)
        except Exception:  # noqa: BLE001 - torch .pth checkpoints carry no safetensors header
            meta = {}
    if config is None:  # the preset with the checkpoint's recorded LoRA fields, checked like any config
        source = f"checkpoint {checkpoint}" if checkpoint else "config"
        config = config_from_dict({"variant": variant or meta.get("variant") or "S-224",
                                   "model": model_config_from_meta(meta, source)}, source)
    apply_overrides(config, overrides or [])
    validate(config)
    if backbone:
        config.model.backbone_weights = str(backbone)
    if checkpoint and not config.model.backbone_weights:
        raise ValueError(
            "a backbone is needed: trainable-only checkpoints hold no frozen DINOv2 weights "
            "(pass backbone=PATH or set model.backbone_weights)"
        )
    return config


def load_model(
    checkpoint: str | Path | None,
    variant: str | None = None,
    backbone: str = "",
    config: Config | None = None,
    overrides: list[str] | None = None,
) -> tuple[LoRAT, Config]:
    """(un-merged model, config) from a trainable checkpoint (ours or official) + backbone weights.

    The configuration is ``resolve_config``'s. Without a checkpoint the head is untrained.
    """
    config = resolve_config(checkpoint, variant=variant, backbone=backbone, config=config, overrides=overrides)
    model = build_model(config.model)
    if checkpoint:
        load_trainable(model, checkpoint)
    return model, config
