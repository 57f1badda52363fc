"""Tracker backends: ONNX Runtime fp32 gives the PyTorch boxes; int8; the export cache; clear errors."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from lorat_scale.config import ConfigError, get_preset  # noqa: E402
from lorat_scale.evaluation.runner import LoRATFactory  # noqa: E402
from lorat_scale.models import build_model  # noqa: E402
from lorat_scale.tracking.tracker import BatchTracker, Tracker  # noqa: E402

CROSSING_INIT = [205.0, 151.0, 222.0, 201.0]  # OTB Crossing frame 1, xyxy (its x,y,w,h taken as is)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """One intra-op thread (torch and, through it, ONNX Runtime): small forwards on a busy 2-core machine."""


@lru_cache(maxsize=None)
def _crossing(root: str) -> tuple[np.ndarray, ...]:
    """All 120 frames of OTB Crossing (360x240)."""
    return tuple(np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(root).glob("*.jpg")))


def _golden_tracker(golden: Path, cache: Path, **kwargs) -> Tracker:
    """The golden tiny S model (official weights layout, depth 2) with its ONNX cache in ``cache``."""
    cfg = get_preset("S-224")
    cfg.model.depth = 2
    cfg.track.onnx_cache = str(cache)
    d = golden / "model" / "S-gelu"
    return Tracker.from_checkpoint(d / "lorat_checkpoint.safetensors", config=cfg,
                                   backbone=str(d / "backbone.safetensors"), device="cpu", **kwargs)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


def test_onnxruntime_fp32_boxes_equal_torch_over_otb_crossing(golden, shared_data, onnx_cache):
    frames = _crossing(str(shared_data / "otb" / "Crossing" / "img"))
    assert len(frames) == 120
    runs = {}
    for backend in ("torch", "onnxruntime"):
        t = _golden_tracker(golden, onnx_cache, backend=backend)
        assert t.backend == backend
        t.init(frames[0], CROSSING_INIT)
        runs[backend] = np.stack([t.track(f)[0] for f in frames[1:]])
    diff = np.abs(runs["onnxruntime"] - runs["torch"])
    assert diff.max() < 1e-3, f"worst frame {diff.max(1).argmax() + 1}: {diff.max():.2e} px"
    assert np.ptp(runs["torch"][:, 0]) > 5  # the boxes move: the comparison is not between constant boxes


def test_onnxruntime_batched_equals_single(golden, shared_data, onnx_cache):
    frames = _crossing(str(shared_data / "otb" / "Crossing" / "img"))[:4]
    t = _golden_tracker(golden, onnx_cache, backend="onnxruntime")
    inits = {"a": CROSSING_INIT, "b": [150.0, 100.0, 200.0, 160.0], "c": [20.0, 30.0, 60.0, 90.0]}
    single = {}
    for k, box in inits.items():
        t.init(frames[0], box)
        single[k] = [t.track(f) for f in frames[1:]]
    bt = BatchTracker(t.model, t.config, device="cpu", backend="onnxruntime")  # dynamic batch of 3
    for k, box in inits.items():
        bt.init(k, frames[0], box)
    for i in range(1, 4):
        for k, (box, score) in bt.track({k: frames[i] for k in inits}).items():
            np.testing.assert_allclose(box, single[k][i - 1][0], atol=1e-3, rtol=0, err_msg=f"{k} frame {i}")
            assert abs(score - single[k][i - 1][1]) < 1e-5


def test_export_is_cached_and_keyed_on_the_weights(golden, shared_data, onnx_cache, monkeypatch):
    from lorat_scale.export import onnx as export_mod

    t = _golden_tracker(golden, onnx_cache, backend="onnxruntime")  # exported by an earlier test or now
    entry = t._runner.path.parent
    assert entry.parent == onnx_cache  # <track.onnx_cache>/<key>/model.onnx
    info = (entry / "info.json").read_text()
    assert '"depth": 2' in info and "max_abs_diff_vs_torch" in info
    assert not [p for p in entry.parent.iterdir() if p.name.endswith(".tmp")]

    def no_export(*a, **k):
        raise AssertionError("exported again although the same model is cached")

    monkeypatch.setattr(export_mod, "export_onnx", no_export)
    again = _golden_tracker(golden, onnx_cache, backend="onnxruntime")
    assert again._runner.path == t._runner.path
    # Other weights (one head bias changed) -> another key -> a new export.
    other = _golden_tracker(golden, onnx_cache, backend="torch").model
    with torch.no_grad():
        other.head.cls_mlp.layers[-1].bias += 0.5
    with pytest.raises(AssertionError, match="exported again"):
        Tracker(other, t.config, device="cpu", backend="onnxruntime", merge=False)


def test_int8_quantizes_the_linear_layers_and_stays_close(golden, shared_data, onnx_cache):
    frames = _crossing(str(shared_data / "otb" / "Crossing" / "img"))[:2]
    out = {}
    for precision in ("fp32", "int8"):
        t = _golden_tracker(golden, onnx_cache, backend="onnxruntime", precision=precision)
        t.init(frames[0], CROSSING_INIT)
        t.track(frames[1])
        out[precision] = t.last
        ops = [n.op_type for n in onnx.load(str(t._runner.path)).graph.node]
        if precision == "int8":
            # 2 blocks x (qkv, proj, fc1, fc2) + 2 x 3 head linears = 14 quantized matmuls
            assert ops.count("MatMulInteger") == 14 and "DynamicQuantizeLinear" in ops
            assert t._runner.path.parent.name.startswith("int8-dynamic-")
        else:
            assert "MatMulInteger" not in ops
    # Same crop (the first step starts from the init box), so the difference is quantization alone.
    np.testing.assert_array_equal(out["fp32"]["search_params"], out["int8"]["search_params"])
    score_diff = (out["fp32"]["score_map"] - out["int8"]["score_map"]).abs().max().item()
    box_diff = (out["fp32"]["boxes"] - out["int8"]["boxes"]).abs().max().item()
    assert 0 < score_diff < 0.3 and 0 < box_diff < 0.01, (score_diff, box_diff)


def test_backend_and_precision_errors_name_the_setting(tmp_path):
    cfg = get_preset("S-224")
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads, m.lora_r = 48, 1, 2, 4
    cfg.track.onnx_cache = str(tmp_path)
    with pytest.raises(ConfigError, match="'int8' is not available on backend 'torch'.*onnxruntime"):
        Tracker(build_model(m), cfg, device="cpu", precision="int8")
    with pytest.raises(ConfigError, match="'bf16' is not available on backend 'onnxruntime'"):
        Tracker(build_model(m), cfg, device="cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="track.compile applies to backend 'torch'"):
        Tracker(build_model(m), cfg, device="cpu", backend="onnxruntime", compile=True)
    with pytest.raises(ConfigError, match="track.backend 'tensorrt' must be one of torch, onnxruntime"):
        Tracker(build_model(m), cfg, device="cpu", backend="tensorrt")
    assert not list(tmp_path.iterdir())  # refused before anything was exported


def test_evaluation_factory_builds_the_onnxruntime_tracker(golden, onnx_cache):
    d = golden / "model" / "S-gelu"
    factory = LoRATFactory(str(d / "lorat_checkpoint.safetensors"), "S-224", str(d / "backbone.safetensors"), "cpu",
                           ["model.depth=2", "track.backend=onnxruntime", f"track.onnx_cache={onnx_cache}"])
    t = factory()
    assert t.backend == "onnxruntime" and t._runner.path.is_relative_to(onnx_cache)


def test_static_int8_is_qdq_calibrated_on_given_crops(golden, shared_data, onnx_cache, tmp_path):
    from lorat_scale.export.quantize import quantize_int8

    frames = _crossing(str(shared_data / "otb" / "Crossing" / "img"))[:4]
    t = _golden_tracker(golden, onnx_cache, backend="onnxruntime")
    calib = []
    for f in frames[1:]:
        t.init(frames[0], CROSSING_INIT)
        t.track(f)
        calib.append((t.state.z[None].numpy(), t.last["search_input"].numpy(), t.state.mask[None].numpy()))
    with pytest.raises(ValueError, match="calibration inputs"):
        quantize_int8(t._runner.path, tmp_path / "none.onnx", "static", calibration=[])
    out = quantize_int8(t._runner.path, tmp_path / "static.onnx", "static", calibration=calib)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("DequantizeLinear") >= 14 and "MatMulInteger" not in ops  # QDQ, not dynamic
