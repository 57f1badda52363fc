"""ONNX export of the merged model: onnxruntime matches PyTorch (tiny model, dynamic batch)."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx
import torch

from lorat_scale.cli import main
from lorat_scale.config import get_preset
from lorat_scale.export.onnx import export_and_verify
from lorat_scale.models import build_model, merge_for_inference

TINY = ["model.embed_dim=48", "model.depth=2", "model.num_heads=2", "model.lora_r=4", "model.lora_alpha=8"]


def _tiny():
    cfg = get_preset("S-224")
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads, m.lora_r, m.lora_alpha = 48, 2, 2, 4, 8.0
    model = build_model(m)
    with torch.no_grad():  # non-zero LoRA so that the merge is exercised
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return merge_for_inference(model, inplace=True), cfg


def test_onnx_matches_pytorch(tmp_path):
    model, cfg = _tiny()
    res = export_and_verify(model, tmp_path / "tiny.onnx", cfg)  # checks batch 1 and 3 (dynamic batch)
    assert res["max_abs_diff_score_map"] < 1e-4 and res["max_abs_diff_boxes"] < 1e-4, res
    g = onnx.load(str(tmp_path / "tiny.onnx"))
    assert [i.name for i in g.graph.input] == ["template", "search", "template_mask"]
    assert [o.name for o in g.graph.output] == ["score_map", "boxes"]
    meta = {p.key: p.value for p in g.metadata_props}
    assert meta["search_size"] == "224" and meta["window_penalty"] == "0.45"


def test_refuses_unmerged_model(tmp_path):
    cfg = get_preset("S-224")
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads, m.lora_r = 48, 1, 2, 4
    from lorat_scale.export.onnx import export_onnx

    with pytest.raises(ValueError, match="merge"):
        export_onnx(build_model(m), tmp_path / "x.onnx")


def test_cli_export_onnx(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    with pytest.warns(UserWarning, match="untrained"):
        rc = main(["export-onnx", "--out", str(out), *TINY])
    assert rc == 0 and out.is_file()
    assert "onnxruntime vs PyTorch" in capsys.readouterr().out
