"""LoRAT's full training recipe (Lin et al., ECCV 2024) for any variant.

    lorat-scale train --recipe paper --variant L-224 --data-root /datasets \\
        model.backbone_weights=/weights/dinov2_vitl14_pretrain.pth train.output_dir=runs/L-224
    accelerate launch --multi_gpu --num_processes 8 -m lorat_scale.train --recipe paper --variant L-224 \\
        --data-root /datasets train.output_dir=runs/L-224
    lorat-scale evaluate --benchmark lasot --root /datasets/LaSOT --checkpoint runs/L-224/model.safetensors

Data under ``data_root`` (equal 25 % shares of 131,072 pairs per epoch, pairs within +-100 frames):

    LaSOT/        the 1,120 training sequences (all but those in testing_set.txt)
    GOT-10k/      train/ restricted to vot_train: 7,086 sequences (the split file ships in the package)
    TrackingNet/  TRAIN_0 .. TRAIN_11
    COCO/         annotations/instances_train2017.json + train2017/

Optimisation (the variant preset's defaults are the paper's): 170 epochs of 1,024 steps at global
batch 128, AdamW lr 1e-4, weight decay 0.1, 2-epoch warm-up then cosine to 1e-6, clip 1.0, fp16
autocast with loss scaling, torch.compile. Checks as the reference: validation loss on GOT-10k val
every epoch, GOT-10k val tracked every 10 epochs and at the end (AO, SR0.5, SR0.75), a checkpoint
every 10 epochs (5 kept). The backbone defaults to the Meta DINOv2 weights through timm's hub
(``timm:vit_<size>_patch14_dinov2.lvd142m``); pass a local ``dinov2_vit*14_pretrain.pth`` offline.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config, get_preset

TIMM_DINOV2 = {"S": "small", "B": "base", "L": "large", "g": "giant"}


def get_config(variant: str = "B-224", data_root: str = "/data") -> Config:
    """The paper's recipe for ``variant`` with its four datasets under ``data_root``."""
    cfg = get_preset(variant)
    root = Path(data_root)
    cfg.model.backbone_weights = f"timm:vit_{TIMM_DINOV2[variant.split('-')[0]]}_patch14_dinov2.lvd142m"
    cfg.data.train_sources = [f"lasot:train={root / 'LaSOT'}", f"got10k:vot_train={root / 'GOT-10k'}",
                              f"trackingnet:train={root / 'TrackingNet'}", f"coco:train2017={root / 'COCO'}"]
    cfg.data.val_sources = [f"got10k:val={root / 'GOT-10k'}"]
    cfg.data.track_sources = [f"got10k_val={root / 'GOT-10k'}"]
    t = cfg.train
    t.epochs = 170
    t.precision = "fp16"  # the paper's fp16 autocast + GradScaler (bf16 works too on Ampere and later)
    t.compile = True
    epoch = cfg.data.pairs_per_epoch // t.global_batch  # 1,024 optimizer steps
    t.val_every = epoch
    t.save_every = 10 * epoch
    t.keep_checkpoints = 5
    t.track_every_epochs = 10.0
    t.output_dir = f"runs/{variant}"
    return cfg
