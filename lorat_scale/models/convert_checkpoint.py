"""Convert a trainable-only checkpoint between our format and the official LoRAT format, checked as loading does.

It builds the model on the meta device to check keys and shapes, so it lives beside the builder, not in
``weights.py`` (which the builder imports).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import save_file

from ..config import ModelConfig
from ..outputs import atomic_path, check_outputs
from .builder import build_model
from .weights import (ARCHITECTURE_KEYS, FORMAT, CheckpointMismatchError, _check, check_finite, check_model_config,
                      is_official, official_to_ours, ours_to_official, read_metadata, read_state_dict,
                      recorded_model_config)


def convert_checkpoint(src: str | Path, dst: str | Path, to: str, cfg: ModelConfig | None = None,
                       variant: str = "") -> None:
    """Convert a trainable checkpoint between ``ours`` and ``official`` key formats, checked as loading does.

    ``cfg``: the model the checkpoint belongs to (default: the configuration recorded in one of our files;
    official files record none, so they need it). Refused, naming the keys: non-finite tensors, a recorded
    configuration that differs from ``cfg``, missing, unexpected or mis-shaped keys. Nothing is written then.
    """
    check_outputs({"dst": dst}, {"src": src})
    if to not in ("ours", "official"):
        raise ValueError(f"to={to!r}: expected 'ours' or 'official'")
    state = read_state_dict(src)
    meta = read_metadata(src) if not is_official(state) else {}
    check_finite(state, str(src))
    recorded = recorded_model_config(meta) if meta.get("format") == FORMAT else {}
    if cfg is None:
        if "model_config" not in meta:
            raise CheckpointMismatchError(
                f"{src}: records no model configuration, so its keys and shapes cannot be checked: pass the variant "
                "it was trained for (lorat-scale convert-checkpoint --variant L-224, plus --set model.KEY=VALUE for "
                "a non-preset model)")
        cfg = ModelConfig(**{k: v for k, v in recorded.items() if k in ModelConfig.__dataclass_fields__})
    elif recorded:
        check_model_config(recorded, cfg, str(src))
    ours = official_to_ours(state) if is_official(state) else state
    model = build_model(dataclasses.replace(cfg, backbone_weights="", frozen_dtype="fp32"), device="meta")
    _check({n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}, ours, str(src),
           note=f"checked against model.{', model.'.join(f'{k}={getattr(cfg, k)}' for k in ARCHITECTURE_KEYS)}")
    if to == "official":
        out, out_meta = ours_to_official(ours, swiglu=cfg.ffn == "swiglu"), None
    else:
        out = ours
        out_meta = {"format": FORMAT, "variant": variant or meta.get("variant", ""), "lora_r": str(cfg.lora_r),
                    "lora_alpha": str(cfg.lora_alpha), "use_rslora": str(cfg.use_rslora), "ffn": cfg.ffn,
                    "model_config": json.dumps(dataclasses.asdict(cfg), sort_keys=True)}
        if is_official(state):
            out_meta["converted_from"] = "official LoRAT"
    with atomic_path(dst) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp), metadata=out_meta)
