"""The GOT-10k one-shot protocol: train on GOT-10k's train split only, score on GOT-10k test.

    lorat-scale train --recipe got10k --variant L-224 --data-root /datasets \\
        model.backbone_weights=/weights/dinov2_vitl14_pretrain.pth
    lorat-scale evaluate --benchmark got10k_test --root /datasets/GOT-10k \\
        --checkpoint runs/L-224-got10k/model.safetensors      # 3 runs, submission zip for the server

GOT-10k's protocol forbids other training data, so this is the paper's recipe (``paper.py``) with
the full GOT-10k train split (9,335 sequences, not the vot_train subset) as the only source and 100
epochs of 131,072 pairs. Its own evaluation: GOT-10k test run 3 times, boxes rasterized into the
zip the evaluation server scores (AO, SR0.5, SR0.75); GOT-10k val is tracked every 10 epochs.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from . import paper


def get_config(variant: str = "B-224", data_root: str = "/data") -> Config:
    """The GOT-10k-only recipe for ``variant`` with GOT-10k under ``data_root``/GOT-10k."""
    cfg = paper.get_config(variant, data_root)
    got10k = Path(data_root) / "GOT-10k"
    cfg.data.train_sources = [f"got10k:train={got10k}"]
    cfg.train.epochs = 100
    cfg.train.output_dir = f"runs/{variant}-got10k"
    return cfg
