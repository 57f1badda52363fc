"""The LoRAT training criterion, as the official code computes it: IoU-aware BCE on all cells + GIoU on positives.

    target[b,i,j] = IoU(pred box at (i,j), gt box)  at positive cells (no grad),  0 elsewhere
    bce  = sum over all cells of BCE-with-logits(score_map, target)            / N
    giou = sum over positive cells of 1 - GIoU(pred box, gt box)  (eps 1e-6)   / N
    loss = bce + giou

Normalisation N. The reference takes the local number of positives, all-reduces it as a *mean*
across ranks and clamps it to >= 1. With W ranks and DDP's gradient averaging (1/W) this gives
    grad = (1/W) sum_r grad(S_r / mean_r P_r) = grad(sum_r S_r) / sum_r P_r,
i.e. exactly a global sum over the global number of positives. With gradient accumulation over A
micro-batches, accelerate (and DeepSpeed) also scale each micro-loss by 1/A, so the same identity
holds when N is the mean number of positives per micro-batch over *all* ranks and micro-batches
of the optimizer step: ``positives_normalizer`` computes exactly that (the positive maps come from
the data, so the count is known before any forward). Then the gradient, and the logged loss, do
not depend on how the global batch is split over ranks and accumulation steps; for A = 1 it is
the reference's rule. tests/test_loss.py checks it against the official implementation's tensors.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..boxes import aligned_giou, aligned_iou

EPS = 1e-6  # IoU-target union clamp and GIoU eps, as in the reference


def positives_normalizer(positive_maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean number of positives per micro-batch over every rank and micro-batch, clamped to >= 1.

    ``positive_maps`` holds this rank's (B,H,W) maps of one optimizer step (one per micro-batch).
    """
    count = torch.stack([m.sum() for m in positive_maps]).sum().double() / len(positive_maps)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # One tiny collective per step; a float64 sum keeps the count exact.
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0).float()


def lorat_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    num_positives: torch.Tensor | float | None = None,
) -> dict[str, torch.Tensor]:
    """LoRAT loss of model ``outputs`` {score_map, boxes} against ``batch`` {target_box, positive_map}.

    ``num_positives``: the normaliser N; default = this micro-batch's positives, mean over ranks
    (the reference). Returns loss (scalar, with grad), loss_bce, loss_giou, num_positives and the
    per-element tensors iou_target (B,H,W), bce_map (B,H,W), giou_loss (P,) for inspection.
    """
    # The criterion runs in fp32 whatever the autocast dtype of the model (as the reference does).
    score_map = outputs["score_map"].float()
    boxes = outputs["boxes"].float()
    gt = batch["target_box"].to(boxes.device, torch.float32)
    pos = batch["positive_map"].to(boxes.device).bool()
    if num_positives is None:
        num_positives = positives_normalizer([pos])
    n = torch.as_tensor(num_positives, dtype=torch.float32, device=boxes.device)

    b_idx, i_idx, j_idx = pos.nonzero(as_tuple=True)  # row-major: sample, then r*W+c
    pred = boxes[b_idx, i_idx, j_idx]  # (P, 4)
    gt_pos = gt[b_idx]
    with torch.no_grad():
        iou = aligned_iou(pred.detach(), gt_pos, eps=EPS)
    target = torch.zeros_like(score_map)
    target[b_idx, i_idx, j_idx] = iou
    bce_map = F.binary_cross_entropy_with_logits(score_map, target, reduction="none")
    giou_loss = 1.0 - aligned_giou(pred, gt_pos, eps=EPS)
    loss_bce = bce_map.sum() / n
    loss_giou = giou_loss.sum() / n
    return {
        "loss": loss_bce + loss_giou,
        "loss_bce": loss_bce,
        "loss_giou": loss_giou,
        "num_positives": n,
        "iou_target": target,
        "bce_map": bce_map,
        "giou_loss": giou_loss,
    }
