"""Memory-saving sets: the paper's recipe with options that cut GPU memory, by level.

    lorat-scale train --recipe memory_saving --variant g-378 --data-root /datasets     # level "max"
    lorat-scale estimate-memory --variant g-378 --batch 16 --memory-saving max         # what it needs
    lorat-scale dry-run --variant g-378 --batch 16 --world-size 64 --memory-saving max

``SETS`` holds each level as dotted overrides; the memory estimate and the dry run apply the same
sets (``--memory-saving``). "max" meets the goals (g-378 <= 12 GB and g-224 <= 8 GB per GPU at
batch 16) with the most headroom; the goals alone need checkpointing and bf16 frozen weights
(docs/MEMORY.md). nf4 frozen weights and 8-bit AdamW states change the numerics slightly.
"""
from __future__ import annotations

from ..config import Config, ConfigError, apply_overrides
from . import paper

SETS: dict[str, list[str]] = {
    "none": [],
    "max": [
        "model.grad_checkpointing=true",
        "model.frozen_dtype=nf4",
        "model.trainable_dtype=fp32",
        "model.batch_subset_drop_path=true",
        "model.attn_backend=sdpa",
        "train.precision=bf16",
        "train.optimizer=adamw8bit",
    ],
}


def apply(cfg: Config, level: str) -> Config:
    """``cfg`` with the memory-saving set ``level`` applied (in place)."""
    if level not in SETS:
        raise ConfigError(f"memory-saving set {level!r}: expected one of {', '.join(SETS)}")
    return apply_overrides(cfg, SETS[level])


def get_config(variant: str = "g-378", data_root: str = "/data", level: str = "max") -> Config:
    """The paper's recipe for ``variant`` with the memory-saving set ``level``."""
    return apply(paper.get_config(variant, data_root), level)
