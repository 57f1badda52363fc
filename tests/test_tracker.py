"""Tracker: golden parity of the 30-frame OTB Crossing run (official LoRAT loop), batching, errors."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorat_scale.config import get_preset
from lorat_scale.models import build_model
from lorat_scale.tracking.tracker import BatchTracker, Tracker


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small forwards run 3x faster on a shared, busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _golden_config():
    """The tiny model/S-gelu of the golden files: S-224 with depth 2."""
    cfg = get_preset("S-224")
    cfg.model.depth = 2
    return cfg


@lru_cache(maxsize=None)
def _frames(root: str, pattern: str, n: int) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(Image.open(Path(root) / pattern.format(i)).convert("RGB")) for i in range(1, n + 1))


@pytest.fixture(scope="module")
def golden_tracker(golden: Path) -> Tracker:
    d = golden / "model" / "S-gelu"
    return Tracker.from_checkpoint(d / "lorat_checkpoint.safetensors", config=_golden_config(),
                                   backbone=str(d / "backbone.safetensors"), device="cpu")


def test_otb_crossing_30_matches_golden(golden: Path, shared_data: Path, golden_tracker: Tracker):
    g = load_file(str(golden / "tracking" / "otb_Crossing_30.safetensors"))
    frames = _frames(str(shared_data / "otb" / "Crossing" / "img"), "{:04d}.jpg", 30)
    t = golden_tracker
    t.init(Image.fromarray(frames[0]), g["gt_boxes_xyxy"][0].numpy())  # PIL input works too
    np.testing.assert_allclose(t.state.template_params, g["template_params"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(t.state.pad_rgb, g["template_image_mean"].numpy(), atol=1e-3, rtol=0)
    assert torch.equal(t.state.mask.cpu(), g["z_feat_mask"])
    for i in range(1, 30):
        box, score = t.track(frames[i])
        np.testing.assert_allclose(box, g["pred_boxes_xyxy"][i].numpy(), atol=1e-3, rtol=0, err_msg=f"frame {i}")
        assert abs(score - g["pred_confidence"][i].item()) < 1e-5
        params = g["search_crop_params"][i - 1].numpy()
        np.testing.assert_allclose(t.last["search_params"][0], params, atol=1e-4, rtol=0)
        torch.testing.assert_close(t.last["score_map"][0], g["score_maps"][i - 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(t.last["boxes"][0], g["box_maps"][i - 1], atol=1e-5, rtol=0)


def test_batched_equals_per_sequence(golden: Path, shared_data: Path, golden_tracker: Tracker):
    otb = _frames(str(shared_data / "otb" / "Crossing" / "img"), "{:04d}.jpg", 5)
    las = _frames(str(shared_data / "lasot" / "airplane" / "airplane-1" / "img"), "{:08d}.jpg", 3)
    inits = {"otb": (otb, [205.0, 151.0, 222.0, 201.0]), "lasot": (las, [366.0, 96.0, 400.0, 128.0]),
             "otb2": (otb, [150.0, 100.0, 200.0, 160.0])}  # two targets in one video, lengths differ
    single = {}
    for key, (frames, box) in inits.items():
        golden_tracker.init(frames[0], box)
        single[key] = [golden_tracker.track(f) for f in frames[1:]]
    bt = BatchTracker(golden_tracker.model, golden_tracker.config, device="cpu")  # already merged
    for key, (frames, box) in inits.items():
        bt.init(key, frames[0], box)
    for i in range(1, 5):
        step = bt.track({k: fr[i] for k, (fr, _) in inits.items() if i < len(fr)})
        assert set(step) == {k for k, (fr, _) in inits.items() if i < len(fr)}
        for k, (box, score) in step.items():
            np.testing.assert_allclose(box, single[k][i - 1][0], atol=1e-3, rtol=0, err_msg=f"{k} frame {i}")
            assert abs(score - single[k][i - 1][1]) < 1e-5


def _tiny_tracker() -> Tracker:
    cfg = get_preset("S-224")
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads, m.lora_r = 48, 1, 2, 4
    return Tracker(build_model(m), cfg, device="cpu")


def test_errors_are_clear():
    t = _tiny_tracker()
    frame = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(RuntimeError, match="init"):
        t.track(frame)
    with pytest.raises(ValueError, match="outside"):
        t.init(frame, [100, 10, 120, 30])
    with pytest.raises(ValueError, match="empty"):
        t.init(frame, [10, 10, 10, 30])
    with pytest.raises(ValueError, match="uint8"):
        t.init(frame.astype(np.float32), [10, 10, 20, 30])
    with pytest.raises(TypeError, match="PIL"):
        t.init([[0]], [10, 10, 20, 30])
    t.init(frame, [10, 10, 10, 20], box_format="xywh")
    box, score = t.track(frame)
    assert box.shape == (4,) and 0 <= score <= 1
    assert (box >= 0).all() and box[2] <= 80 and box[3] <= 60


def test_batched_ope_equals_one_sequence_at_a_time(golden: Path, shared_data: Path, golden_tracker: Tracker):
    """run_sequences_batched (2 slots for 3 sequences of different lengths) == run_sequence on each."""
    from lorat_scale.evaluation.benchmarks import load_sequences
    from lorat_scale.evaluation.runner import run_sequence, run_sequences_batched

    seqs = [*load_sequences("otb", shared_data / "otb", "Crossing"), *load_sequences("vot", shared_data / "vot", "bag"),
            *load_sequences("lasot", shared_data / "lasot", "airplane-1")]
    for s, n in zip(seqs, (6, 3, 5)):
        s.frames, s.boxes, s.valid = s.frames[:n], s.boxes[:n], s.valid[:n]
    bt = BatchTracker(golden_tracker.model, golden_tracker.config, device="cpu")
    batched = run_sequences_batched(bt, seqs, batch=2)
    assert [len(b) for b in batched] == [6, 3, 5] and not bt.targets  # finished targets are removed
    for seq, boxes in zip(seqs, batched):
        alone, _ = run_sequence(golden_tracker, seq)
        np.testing.assert_allclose(boxes, alone, atol=1e-3, rtol=0, err_msg=seq.name)
    seqs[1].boxes[0] = np.nan
    with pytest.raises(ValueError, match="vot/bag: frame 0 has no usable box"):
        run_sequences_batched(bt, seqs, batch=2)
