"""Pair sampling and the training transform: determinism, sampling rules, jitter, labels, decoding."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lorat_scale.boxes import cell_mask
from lorat_scale.config import DataConfig
from lorat_scale import crop
from lorat_scale.data.decode import decode_image, decode_image_pil
from lorat_scale.data.pairs import (
    PairDataset,
    PairSamplingError,
    jitter_search_params,
    load_frame,
    make_pair,
    sample_frames,
)
from lorat_scale.data.sequence import Sequence

W, H = 160, 120


def _seq(name: str, n: int = 12, box_wh=(30.0, 24.0), is_image: bool = False, valid=None, seed: int = 0) -> Sequence:
    """In-memory sequence of textured JPEG frames with a moving box (frames are shard-style keys)."""
    rng = np.random.default_rng(seed)
    frames, data, boxes = [], {}, []
    for i in range(n):
        img = cv2.resize(rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8), (W, H))
        ok, enc = cv2.imencode(".jpg", img)
        assert ok
        key = f"{i:04d}.jpg"
        frames.append(key)
        data[key] = enc.tobytes()
        x, y = 40.0 + 2 * i, 30.0 + i
        boxes.append([x, y, x + box_wh[0], y + box_wh[1]])
    v = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    return Sequence(name, "synth", frames, np.array(boxes), v, (W, H), is_image=is_image, frame_bytes=data)


@pytest.fixture(scope="module")
def sources():
    return [[_seq("a", seed=1), _seq("b", seed=2)], [_seq("img", n=1, is_image=True, seed=3)]]


CFG = DataConfig(pairs_per_epoch=32, seed=5)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a
    )


def test_sample_contract(sources):
    s = PairDataset(sources, CFG)[0]
    assert s["z"].shape == (3, 112, 112) and s["z"].dtype == torch.float32
    assert s["x"].shape == (3, 224, 224) and s["x"].dtype == torch.float32
    assert s["z_feat_mask"].shape == (8, 8) and s["z_feat_mask"].dtype == torch.int64
    assert s["positive_map"].shape == (16, 16) and s["positive_map"].dtype == torch.bool
    assert s["target_box"].shape == (4,) and s["target_box"].dtype == torch.float32
    assert ((s["target_box"] >= 0) & (s["target_box"] <= 1)).all()
    assert s["key"].startswith("synth/")
    assert s["counters"]["resampled"] == 0 and s["counters"]["bad_frames"] == 0
    t, x = s["template_frame"], s["search_frame"]
    assert s["counters"]["frames_read"] == 1 + (t != x) and s["key"] == f"{s['sequence']}/{t}/{x}"
    assert s["source"] == int(PairDataset(sources, CFG)._plan_ds[0]) and s["position"] == 0
    assert -3 < float(s["x"].min()) and float(s["x"].max()) < 3  # normalized


def test_deterministic_in_seed_epoch_index(sources):
    ds = PairDataset(sources, CFG)
    a, b = ds[3], PairDataset(sources, CFG)[3]
    assert _equal(a, b)
    assert _equal(a, ds[3])
    assert not torch.equal(a["x"], ds[4]["x"])
    other = PairDataset(sources, dataclasses.replace(CFG, seed=6))[3]
    assert not torch.equal(a["x"], other["x"])


def test_same_sample_whatever_the_thread_count(sources):
    ds = PairDataset(sources, CFG)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = ds[2]
        torch.set_num_threads(1)
        b = ds[2]  # as in a DataLoader worker
    finally:
        torch.set_num_threads(n)
    assert _equal(a, b) and torch.get_num_threads() == n


def test_resume_sees_same_samples(sources):
    ds = PairDataset(sources, CFG)
    ds.set_epoch(2)
    want = [ds[i] for i in (7, 8)]
    resumed = PairDataset(sources, CFG, epoch=2)  # a new process resuming mid-epoch 2
    assert all(_equal(w, resumed[i]) for w, i in zip(want, (7, 8)))
    ds.set_epoch(3)
    assert not torch.equal(ds[7]["x"], want[0]["x"])


def test_epoch_plan_mixes_and_draws_without_replacement():
    src = [[_seq(f"s{i}", n=2, seed=i) for i in range(3)], [_seq("t0", n=2), _seq("t1", n=2, seed=9)]]
    ds = PairDataset(src, dataclasses.replace(CFG, pairs_per_epoch=12))
    assert np.bincount(ds._plan_ds).tolist() == [6, 6]  # equal weights by default
    # 6 draws over 3 sequences: two full shuffled passes, each sequence exactly twice
    assert np.bincount(ds._plan_seq[ds._plan_ds == 0], minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(ds._plan_seq[ds._plan_ds == 1], minlength=2).tolist() == [3, 3]
    weighted = PairDataset(src, dataclasses.replace(CFG, pairs_per_epoch=12, weights=[3.0, 1.0]))
    assert np.bincount(weighted._plan_ds).tolist() == [9, 3]
    with pytest.raises(ValueError, match="weights"):
        PairDataset(src, dataclasses.replace(CFG, weights=[1.0]))


def test_frame_sampling_rules():
    valid = np.ones(300, bool)
    valid[::7] = False
    seq = Sequence("long", "synth", [str(i) for i in range(300)], np.tile([0, 0, 5, 5.0], (300, 1)), valid)
    for s in range(300):
        t, x = sample_frames(seq, np.random.default_rng(s), 100)
        assert valid[t] and valid[x] and t != x and abs(t - x) <= 100
    lone = Sequence("lone", "synth", ["0", "1", "2"], np.tile([0, 0, 5, 5.0], (3, 1)), [False, True, False])
    assert sample_frames(lone, np.random.default_rng(0), 100) == (1, 1)  # fallback: the same frame
    gap = Sequence("gap", "synth", [str(i) for i in range(10)], np.tile([0, 0, 5, 5.0], (10, 1)),
                   [True] + [False] * 8 + [True])
    assert sample_frames(gap, np.random.default_rng(0), 5) == (0, 0) or sample_frames(
        gap, np.random.default_rng(0), 5) == (9, 9)  # nothing within the gap
    img = Sequence("img", "synth", ["0", "1"], np.tile([0, 0, 5, 5.0], (2, 1)), [True, True], is_image=True)
    assert all(len(set(sample_frames(img, np.random.default_rng(s), 100))) == 1 for s in range(20))
    window = Sequence("win", "synth", [str(i) for i in range(40)], np.tile([0, 0, 5, 5.0], (40, 1)), np.ones(40, bool),
                      core=(10, 20))  # a shard window: templates from the core, search frames also from margins
    pairs_ = [sample_frames(window, np.random.default_rng(s), 8) for s in range(200)]
    assert all(10 <= t < 20 and 0 < abs(t - x) <= 8 for t, x in pairs_)
    assert min(x for _, x in pairs_) < 10 and max(x for _, x in pairs_) >= 20
    none = Sequence("none", "synth", ["0"], np.full((1, 4), np.nan), [False])
    assert sample_frames(none, np.random.default_rng(0), 100) is None


def test_still_images_use_the_same_frame(sources):
    ds = PairDataset(sources, CFG)
    keys = [ds[int(i)]["key"] for i in np.flatnonzero(ds._plan_ds == 1)[:3]]
    assert keys and all(k.split("/")[-1] == k.split("/")[-2] for k in keys)


def test_jitter_respects_min_object_size():
    box = np.array([40.0, 30.0, 70.0, 54.0])
    cfg = dataclasses.replace(CFG, translate_jitter=3.0)
    for s in range(50):
        j = jitter_search_params(box, (W, H), cfg, 224, 4.0, np.random.default_rng(s))
        if j is None:
            continue
        c = np.clip(crop.map_boxes(j.params, box), 0, 224)
        assert c[2] - c[0] >= 10 and c[3] - c[1] >= 10
        np.testing.assert_allclose(j.box_crop, crop.map_boxes(j.params, box))
    impossible = dataclasses.replace(CFG, min_object_size=500.0)
    assert jitter_search_params(box, (W, H), impossible, 224, 4.0, np.random.default_rng(0)) is None


def test_jitter_scale_and_shift_distribution():
    box = np.array([40.0, 30.0, 70.0, 54.0])
    cfg = dataclasses.replace(CFG, min_object_size=0.0)
    base = crop.siamfc_params(box, 4.0, 224)
    logs, shifts = [], []
    for s in range(400):
        j = jitter_search_params(box, (W, H), cfg, 224, 4.0, np.random.default_rng(s))
        logs.append(np.log(j.params_requested[0] / base[0]))
        centre = crop.map_boxes(j.params_requested, box).reshape(2, 2).mean(0)
        shifts.append(centre - 112.0)
    logs, shifts = np.array(logs), np.array(shifts)
    assert np.all(np.abs(logs.std(0) - 0.25) < 0.04)  # log-normal, sigma 0.25 per axis
    assert abs(np.corrcoef(logs.T)[0, 1]) < 0.2  # independent in x and y
    mean_side = 0.5 * (30 * base[0, 0] * np.exp(logs[:, 0]) + 24 * base[0, 0] * np.exp(logs[:, 1]))
    assert np.all(np.abs(shifts) <= 3.0 * mean_side[:, None] + 1e-9)
    assert np.abs(shifts / (3.0 * mean_side[:, None])).max() > 0.9  # uses the whole +-1 range


def test_failed_jitter_resamples_the_pair():
    # "thin" is a 100x1 px box: its search crop always leaves < 10 px of height, so the pair is redrawn.
    thin, ok = _seq("thin", box_wh=(100.0, 1.0)), _seq("ok", seed=4)
    s = make_pair([thin, ok], CFG, np.random.default_rng(0), seq_index=0)
    assert s["key"].startswith("synth/ok/") and s["counters"]["resampled"] >= 1
    with pytest.raises(PairSamplingError, match="synth"):
        make_pair([thin], CFG, np.random.default_rng(0))


def test_labels_match_cell_mask(sources):
    ds = PairDataset(sources, CFG)
    for i in range(4):
        s = ds[i]
        box_px = s["target_box"].double().numpy() * 224
        assert np.array_equal(s["positive_map"].numpy(), cell_mask(box_px, 14, (16, 16)).astype(bool))
        assert s["positive_map"].any() and s["z_feat_mask"].any()


def test_labels_follow_the_model_patch_size(sources):
    from lorat_scale.config import ModelConfig
    from lorat_scale.models import build_model
    from lorat_scale.train.loss import lorat_loss

    ds = PairDataset(sources, CFG, template_size=128, search_size=256, patch_size=16)
    samples = [ds[i] for i in range(2)]
    for s in samples:
        assert s["z_feat_mask"].shape == (8, 8) and s["positive_map"].shape == (16, 16)
        box_px = s["target_box"].double().numpy() * 256
        assert np.array_equal(s["positive_map"].numpy(), cell_mask(box_px, 16, (16, 16)).astype(bool))
    seq = sources[0][0]
    s = make_pair([seq], CFG, np.random.default_rng(1), 128, 256, augment_images=False, patch_size=16)
    t = int(s["key"].split("/")[-2])
    zbox = crop.map_boxes(crop.adjusted_params((W, H), crop.siamfc_params(seq.boxes[t], 2.0, 128), 128), seq.boxes[t])
    assert np.array_equal(s["z_feat_mask"].numpy(), cell_mask(zbox, 16, (8, 8)))
    with pytest.raises(ValueError, match="template_size 120 is not a multiple of patch_size 16"):
        PairDataset(sources, CFG, template_size=120, search_size=256, patch_size=16)
    # A model of that patch size takes the batch, and the loss reads its labels on the model's grid.
    model = build_model(ModelConfig(embed_dim=32, depth=1, num_heads=2, lora_r=4, lora_alpha=8, patch_size=16,
                                    template_size=128, search_size=256, pretrain_grid=4))
    batch = torch.utils.data.default_collate([{k: v for k, v in s.items() if torch.is_tensor(v)} for s in samples])
    out = model(batch["z"], batch["x"], batch["z_feat_mask"])
    assert out["score_map"].shape == (2, 16, 16)
    assert torch.isfinite(lorat_loss(out, batch, None)["loss"])


def test_template_mask_and_crop_without_augmentation(sources):
    seq = sources[0][0]
    s = make_pair([seq], CFG, np.random.default_rng(1), augment_images=False)
    t = int(s["key"].split("/")[-2])
    params = crop.adjusted_params((W, H), crop.siamfc_params(seq.boxes[t], 2.0, 112), 112)
    zbox = crop.map_boxes(params, seq.boxes[t])
    assert np.array_equal(s["z_feat_mask"].numpy(), cell_mask(zbox, 14, (8, 8)))
    frame = load_frame(seq, t)
    zc, _ = crop.crop_image(frame, crop.siamfc_params(seq.boxes[t], 2.0, 112), 112, crop.image_mean(frame))
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(s["z"], (zc / 255 - mean) / std)


def test_flip_moves_target_box(sources):
    never = PairDataset(sources, dataclasses.replace(CFG, flip_prob=0.0))
    always = PairDataset(sources, dataclasses.replace(CFG, flip_prob=1.0))
    for i in range(3):
        a, b = never[i], always[i]
        x1, y1, x2, y2 = a["target_box"].tolist()
        torch.testing.assert_close(b["target_box"], torch.tensor([1 - x2, y1, 1 - x1, y2]), atol=1e-6, rtol=0)
        # colour ops and the 3-augment commute with the mirror, so the images are mirrored too
        torch.testing.assert_close(b["x"], a["x"].flip(-1), atol=1e-4, rtol=0)
        torch.testing.assert_close(b["z"], a["z"].flip(-1), atol=1e-4, rtol=0)


def test_bad_frame_is_skipped_or_raised():
    bad = _seq("bad", n=3)
    bad.frame_bytes = {k: v[: len(v) // 3] for k, v in bad.frame_bytes.items()}  # truncated JPEGs
    good = _seq("good", seed=8)
    s = make_pair([bad, good], CFG, np.random.default_rng(0), seq_index=0)
    assert s["key"].startswith("synth/good/") and s["counters"]["bad_frames"] >= 1
    with pytest.raises(OSError, match="synth/bad"):
        make_pair([bad], dataclasses.replace(CFG, on_bad_sample="raise"), np.random.default_rng(0))


def test_decoder_matches_pil_on_sample_frames(shared_data: Path):
    files = [
        "lasot/airplane/airplane-1/img/00000001.jpg",
        "otb/Crossing/img/0001.jpg",
        "vot/bag/00000001.jpg",
        "vot/vot15_ball1/imgs/00000001.jpg",
        *sorted(str(p.relative_to(shared_data)) for p in (shared_data / "det").rglob("*.jpg"))[:8],
    ]
    for f in files:
        data = (shared_data / f).read_bytes()
        assert np.array_equal(decode_image(data), decode_image_pil(data)), f


def test_real_sequence_pair(shared_data: Path):
    from lorat_scale.boxes import xywh_to_xyxy

    root = shared_data / "otb" / "Crossing"
    gt = np.loadtxt(root / "groundtruth_rect.txt")
    frames = sorted(str(p) for p in (root / "img").glob("*.jpg"))
    seq = Sequence("Crossing", "otb", frames, xywh_to_xyxy(gt), np.ones(len(frames), bool), (360, 240))
    ds = PairDataset([[seq]], dataclasses.replace(CFG, pairs_per_epoch=4), template_size=196, search_size=378)
    s = ds[0]
    assert s["x"].shape == (3, 378, 378) and s["positive_map"].shape == (27, 27) and s["z_feat_mask"].shape == (14, 14)
    t, x = (int(v) for v in s["key"].split("/")[-2:])
    assert t != x and abs(t - x) <= 100


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGB"])
def test_decoder_matches_pil_on_jpeg_variants(mode):
    from io import BytesIO

    from PIL import Image

    img = cv2.resize(np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8), (40, 30))
    buf = BytesIO()
    Image.fromarray(img).convert(mode).save(buf, "JPEG", progressive=mode == "RGB")
    data = buf.getvalue()
    assert np.array_equal(decode_image(data), decode_image_pil(data))


def test_non_jpeg_and_corrupt_bytes():
    img = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", img[..., ::-1])  # OpenCV writes BGR
    assert ok and np.array_equal(decode_image(png.tobytes()), img)
    with pytest.raises(OSError):
        decode_image(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_pluggable_frame_loader(sources):
    calls = []

    def my_loader(seq: Sequence, i: int) -> np.ndarray:
        calls.append((seq.name, i))
        return load_frame(seq, i)

    ref = PairDataset(sources, CFG)[1]
    got = PairDataset(sources, CFG, load_frame=my_loader)[1]
    assert calls and _equal(ref, got)
