"""AdamW parameter groups and the learning-rate schedule of LoRAT (lorat_spec.md 4.4).

Schedule (per optimizer step t, via timm's ``CosineLRScheduler`` with ``warmup_prefix=True``):

    W = warmup_epochs * steps_per_epoch,  T = epochs * steps_per_epoch
    t <  W:  lr = warmup_lr + t * (peak - warmup_lr) / W                          (linear warm-up)
    t >= W:  lr = min_lr + 0.5 * (peak - min_lr) * (1 + cos(pi * (t - W) / T))   (cosine)

As in the reference the cosine length T is the *full* number of epochs counted after the warm-up,
so the last step (t = T - 1) ends slightly above ``min_lr`` (1.03e-6 for the paper's 170 epochs).

Learning rate when the global batch changes: the paper trains at ``lr`` 1e-4 with global batch 128
and does no auto-scaling, so by default ``peak = train.lr`` whatever the batch. With
``train.lr_scaling=linear`` the peak becomes ``lr * global_batch / lr_reference_batch`` (the linear
scaling rule, reference batch 128): e.g. global batch 32 on one GPU -> 2.5e-5. Only the peak scales;
``warmup_lr`` and ``min_lr`` stay as configured. Steps per epoch are ``pairs_per_epoch //
global_batch`` in both cases, so a smaller batch also takes more, smaller steps per epoch.
"""
from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from ..config import TrainConfig


NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups of the *trainable* parameters: decayed, and not.

    The reference's rule: no decay for parameters of norm layers, for parameters with at most one
    dimension *after squeezing* (so the (1, C) weight of the score head's last linear is not
    decayed), and for names containing "embed" (the token-type table).
    """
    norms = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, NORM_LAYERS))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # frozen weights get no optimizer state at all
        exempt = p.squeeze().ndim <= 1 or "embed" in name or name.startswith(norms)
        (no_decay if exempt else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def peak_lr(cfg: TrainConfig) -> float:
    """The peak learning rate: ``cfg.lr``, linearly scaled by the global batch if asked."""
    if cfg.lr_scaling == "linear":
        return cfg.lr * cfg.global_batch / cfg.lr_reference_batch
    return cfg.lr


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (torch) or 8-bit AdamW (bitsandbytes; quantized states change the numerics)."""
    groups = param_groups(model, cfg.weight_decay)
    lr = peak_lr(cfg)
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise RuntimeError("train.optimizer=adamw8bit needs bitsandbytes: pip install 'lorat_scale[bnb]'") from e
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=cfg.betas)
    # Not fused, default eps: the reference's settings.
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> CosineLRScheduler:
    """timm cosine schedule stepped per iteration: call ``step_update(t)`` before optimizer step t."""
    return CosineLRScheduler(
        optimizer,
        t_initial=int(cfg.epochs * steps_per_epoch),
        lr_min=cfg.min_lr,
        warmup_t=int(round(cfg.warmup_epochs * steps_per_epoch)),
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def steps_per_epoch(pairs_per_epoch: int, global_batch: int) -> int:
    """Optimizer steps in one epoch (the last incomplete global batch is dropped)."""
    if pairs_per_epoch < global_batch:
        raise ValueError(f"data.pairs_per_epoch={pairs_per_epoch} < train.global_batch={global_batch}")
    return pairs_per_epoch // global_batch
