"""The LoRAT criterion against the official implementation's numbers (shared/golden/loss)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lorat_scale.boxes import cell_mask
from lorat_scale.config import ModelConfig
from lorat_scale.models import build_model
from lorat_scale.models.weights import load_trainable, official_to_ours
from lorat_scale.train.loss import lorat_loss, positives_normalizer

CASES = ["S-gelu", "g-swiglu"]
# The golden model cases (shapes of backbone.safetensors; see tests/test_model.py).
MODEL_CASES = {
    "S-gelu": dict(embed_dim=384, depth=2, num_heads=6, lora_r=64, lora_alpha=64),
    "g-swiglu": dict(embed_dim=128, depth=2, num_heads=4, ffn="swiglu", lora_r=16, lora_alpha=32),
}


def golden_batch(golden, case):
    """(loss inputs, loss outputs, batch dict) of a golden loss case."""
    d = golden / "loss" / case
    inp, out = load_file(d / "loss_inputs.safetensors"), load_file(d / "loss_outputs.safetensors")
    batch = {"target_box": inp["gt_boxes_norm_xyxy"], "positive_map": out["positive_mask"].bool()}
    return inp, out, batch


@pytest.mark.parametrize("case", CASES)
def test_positive_map_from_cell_mask(golden, case):
    inp, out, _ = golden_batch(golden, case)
    for b in range(2):
        mask = cell_mask(inp["gt_boxes_crop_px_xyxy"][b].numpy(), 14, (16, 16))
        assert (torch.from_numpy(mask) == out["positive_mask"][b]).all()
    assert int(out["positive_mask"].sum()) == 49


@pytest.mark.parametrize("case", CASES)
def test_loss_matches_golden(golden, case):
    inp, out, batch = golden_batch(golden, case)
    score = inp["score_map"].clone().requires_grad_(True)
    boxes = inp["boxes"].clone().requires_grad_(True)
    res = lorat_loss({"score_map": score, "boxes": boxes}, batch)
    res["loss"].backward()
    for k in ("loss_bce", "loss_giou"):
        assert abs(res[k].item() - out[k].item()) <= 1e-5, k
    assert abs(res["loss"].item() - out["loss_total"].item()) <= 1e-5
    assert res["num_positives"].item() == out["num_positive_samples"].item() == 49
    torch.testing.assert_close(res["iou_target"], out["cls_target_iou_map"], atol=1e-6, rtol=0)
    torch.testing.assert_close(res["bce_map"], out["bce_elementwise"], atol=1e-6, rtol=0)
    torch.testing.assert_close(res["giou_loss"], out["giou_loss_per_positive"], atol=1e-6, rtol=0)
    torch.testing.assert_close(score.grad, out["grad_score_map"], atol=1e-7, rtol=0)
    torch.testing.assert_close(boxes.grad, out["grad_boxes"], atol=1e-7, rtol=0)
    # The IoU target carries no gradient: zero the GIoU path and the box gradient must vanish.
    boxes.grad = None
    res = lorat_loss({"score_map": score, "boxes": boxes}, batch)
    res["loss_bce"].backward()
    assert boxes.grad is None or float(boxes.grad.abs().max()) == 0.0


def test_normalizer_rules():
    pos = torch.zeros(2, 4, 4, dtype=torch.bool)
    assert positives_normalizer([pos]).item() == 1.0  # clamped to >= 1
    a, b = pos.clone(), pos.clone()
    a[0, :2, :2] = True  # 4 positives
    b[1, :, :3] = True  # 12 positives
    assert positives_normalizer([a, b]).item() == 8.0  # mean per micro-batch
    # Splitting a batch into micro-batches with the step normaliser gives the same summed loss.
    g = torch.Generator().manual_seed(0)
    score = torch.randn(4, 4, 4, generator=g)
    boxes = torch.rand(4, 4, 4, 4, generator=g).sort(-1).values[..., [0, 1, 2, 3]]
    boxes = torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], -1)
    batch = {"target_box": torch.tensor([[0.1, 0.1, 0.6, 0.7]] * 4), "positive_map": torch.cat([a, b])}
    whole = lorat_loss({"score_map": score, "boxes": boxes}, batch)["loss"]
    n = positives_normalizer([a, b])
    halves = [
        lorat_loss({"score_map": score[s], "boxes": boxes[s]},
                   {k: v[s] for k, v in batch.items()}, num_positives=n)["loss"]
        for s in (slice(0, 2), slice(2, 4))
    ]
    assert abs(whole.item() - sum(h.item() for h in halves) / 2) < 1e-6


@pytest.mark.parametrize("case", CASES)
def test_param_grads_match_golden(golden, case):
    """Golden model (backbone + checkpoint) in train mode -> loss -> d loss / d trainable params."""
    md = golden / "model" / case
    cfg = ModelConfig(**MODEL_CASES[case], backbone_weights=str(md / "backbone.safetensors"))
    model = build_model(cfg).train()
    load_trainable(model, md / "lorat_checkpoint.safetensors")
    inp = load_file(md / "inputs.safetensors")
    _, out, batch = golden_batch(golden, case)
    o = model(inp["z"], inp["x"], inp["z_feat_mask"])
    res = lorat_loss(o, batch)
    assert abs(res["loss"].item() - out["loss_total"].item()) <= 1e-4
    res["loss"].backward()
    stored = load_file(golden / "loss" / case / "param_grads.safetensors")
    want = official_to_ours({k[len("grad."):]: v for k, v in stored.items()})
    params = dict(model.named_parameters())
    assert len(want) == (37 if case == "g-swiglu" else 9)
    for name, g in want.items():
        got = params[name].grad
        assert got is not None, name
        tol = 1e-4 * float(g.abs().max())
        torch.testing.assert_close(got, g, atol=tol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
    # Frozen parameters get no gradient.
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
