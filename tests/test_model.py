"""The LoRAT model: golden parity with the official implementation, checkpoints, memory hooks."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorat_scale.boxes import cell_mask
from lorat_scale.config import ModelConfig
from lorat_scale.models import build_model, merge_for_inference
from lorat_scale.models.layers import _batch_subset_residual
from lorat_scale.models.convert_checkpoint import convert_checkpoint
from lorat_scale.models.weights import (
    CheckpointMismatchError,
    load_trainable,
    read_metadata,
    read_state_dict,
    save_trainable,
)

CASES = {
    "S-gelu": dict(embed_dim=384, depth=2, num_heads=6, lora_r=64, lora_alpha=64),
    "g-swiglu": dict(embed_dim=128, depth=2, num_heads=4, ffn="swiglu", lora_r=16, lora_alpha=32),
}


def golden_model(golden, case: str, **overrides):
    """The golden case rebuilt from backbone.safetensors + lorat_checkpoint.safetensors."""
    d = golden / "model" / case
    kw = {**CASES[case], "backbone_weights": str(d / "backbone.safetensors"), **overrides}
    cfg = ModelConfig(**kw)
    model = build_model(cfg).eval()
    load_trainable(model, d / "lorat_checkpoint.safetensors")
    return model


def tiny_cfg(**kw) -> ModelConfig:
    """A model small enough for millisecond steps on CPU."""
    base = dict(embed_dim=32, depth=2, num_heads=2, lora_r=4, lora_alpha=8, template_size=28, search_size=56,
                pretrain_grid=6)
    return ModelConfig(**{**base, **kw})


def tiny_inputs(cfg: ModelConfig, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gz = cfg.template_size // cfg.patch_size
    z = torch.randn(b, 3, cfg.template_size, cfg.template_size, generator=g)
    x = torch.randn(b, 3, cfg.search_size, cfg.search_size, generator=g)
    mask = torch.randint(0, 2, (b, gz, gz), generator=g)
    return z, x, mask


# ----------------------------------------------------------------------------------------------
# Golden parity
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_golden_outputs_unmerged_and_merged(golden, case):
    model = golden_model(golden, case)
    d = golden / "model" / case
    inp, out = load_file(d / "inputs.safetensors"), load_file(d / "outputs.safetensors")
    with torch.no_grad():
        o = model(inp["z"], inp["x"], inp["z_feat_mask"])
        merged = merge_for_inference(model)
        om = merged(inp["z"], inp["x"], inp["z_feat_mask"])
    assert o["score_map"].shape == (2, 16, 16) and o["boxes"].shape == (2, 16, 16, 4)
    assert o["score_map"].dtype == torch.float32
    torch.testing.assert_close(o["score_map"], out["score_map"], atol=1e-5, rtol=0)
    torch.testing.assert_close(o["boxes"], out["boxes"], atol=1e-5, rtol=0)
    # We merge with the configured alpha (correct); the reference's file-based merge used scaling 1.0.
    torch.testing.assert_close(om["score_map"], out["merged_inprocess_score_map"], atol=1e-5, rtol=0)
    torch.testing.assert_close(om["boxes"], out["merged_inprocess_boxes"], atol=1e-5, rtol=0)
    if case == "S-gelu":  # alpha == r: both reference merges agree
        torch.testing.assert_close(om["score_map"], out["merged_score_map"], atol=1e-5, rtol=0)
    # The merged model is a plain ViT: fused qkv, no adapter modules left.
    assert all(blk.attn.fused for blk in merged.blocks)
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_golden_intermediates(golden, case):
    model = golden_model(golden, case)
    d = golden / "model" / case
    inp, mid = load_file(d / "inputs.safetensors"), load_file(d / "intermediates.safetensors")
    torch.testing.assert_close(model.pos_embed, mid["pos_embed_interpolated"], atol=1e-6, rtol=0)
    torch.testing.assert_close(model.token_type_embed, mid["token_type_embed"], atol=0, rtol=0)
    with torch.no_grad():
        tokens = model.embed(inp["z"], inp["x"], inp["z_feat_mask"])
        torch.testing.assert_close(tokens[:, :64], mid["z_tokens"], atol=2e-5, rtol=0)
        b0 = model.blocks[0](tokens)
        torch.testing.assert_close(b0, mid["block_out.0"], atol=2e-5, rtol=0)
        t = b0
        for blk in model.blocks[1:]:
            t = blk(t)
        torch.testing.assert_close(model.norm(t)[:, 64:], mid["search_features"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_golden_parameter_counts(golden, case):
    meta = json.loads((golden / "model" / case / "meta.json").read_text())
    text = json.dumps(meta)
    model = golden_model(golden, case)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    merged = sum(p.numel() for p in merge_for_inference(model).parameters())
    expected = {"S-gelu": (1_479_173, 3_875_712, 4_470_149), "g-swiglu": (141_061, 507_872, 574_949)}[case]
    assert (trainable, frozen, merged) == expected
    assert str(trainable) in text.replace(",", "")


def test_golden_foreground_mask_matches_rasterization(golden):
    inp = load_file(golden / "model" / "S-gelu" / "inputs.safetensors")
    for i in range(2):
        mask = cell_mask(inp["template_crop_box_xyxy"][i].double().numpy(), 14, (8, 8))
        assert (torch.from_numpy(mask) == inp["z_feat_mask"][i]).all()


def test_only_lora_type_table_and_head_are_trainable(golden):
    model = golden_model(golden, "S-gelu")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "token_type_embed" in trainable
    assert {n.split(".lora_")[0].split("blocks.0.")[-1] for n in trainable if n.startswith("blocks.0.")} == {
        "attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2"}
    assert all(n.startswith(("blocks.", "head.", "token_type_embed")) for n in trainable)
    assert not any(n.startswith(("patch_embed", "pos_embed", "norm.")) for n in trainable)
    assert not any("base_layer" in n or "norm" in n or "ls1" in n for n in trainable)


# ----------------------------------------------------------------------------------------------
# Foreground mask rasterization at box edges
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box, cells",
    [
        ((14.0, 14.0, 28.0, 28.0), (1, 1, 2, 2)),  # exactly one cell: end-exclusive ceiling
        ((14.0, 14.0, 28.01, 28.0), (1, 1, 3, 2)),  # a hair past the edge touches the next column
        ((13.99, 14.0, 28.0, 28.0), (0, 1, 2, 2)),  # a hair before the edge touches the previous one
        ((14.0, 14.0, 27.9986, 27.9986), (1, 1, 2, 2)),  # within 1e-4 cell of the edge: not touched
        ((-30.0, -5.0, 10.0, 3.0), (0, 0, 1, 1)),  # clipped at the top-left
        ((100.0, 100.0, 200.0, 200.0), (7, 7, 8, 8)),  # clipped at the bottom-right
        ((0.0, 0.0, 112.0, 112.0), (0, 0, 8, 8)),  # whole crop
    ],
)
def test_cell_mask_edges(box, cells):
    mask = cell_mask(box, 14, (8, 8))
    x1, y1, x2, y2 = cells
    expected = torch.zeros(8, 8, dtype=torch.int64)
    expected[y1:y2, x1:x2] = 1
    assert (torch.from_numpy(mask) == expected).all()
    assert mask.dtype.name == "int64"


def test_cell_mask_box_outside_grid_is_empty():
    assert cell_mask((200.0, 10.0, 300.0, 20.0), 14, (8, 8)).sum() == 0


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def test_checkpoint_roundtrip_ours_and_official(golden, tmp_path):
    model = golden_model(golden, "g-swiglu")
    ours = tmp_path / "ours.safetensors"
    save_trainable(model, ours, variant="tiny-g")
    assert set(load_file(ours)) == {n for n, p in model.named_parameters() if p.requires_grad}
    official = tmp_path / "official.safetensors"
    convert_checkpoint(ours, official, to="official")  # the recorded model configuration says SwiGLU: w12/w3
    ref = load_file(golden / "model" / "g-swiglu" / "lorat_checkpoint.safetensors")
    back = load_file(official)
    assert set(back) == set(ref)
    for k in ref:
        assert torch.equal(back[k], ref[k]), k
    ours2 = tmp_path / "ours2.safetensors"
    with pytest.raises(CheckpointMismatchError, match="records no model configuration.*pass the variant"):
        convert_checkpoint(official, ours2, to="ours")  # official files say nothing about their model
    assert not ours2.exists()
    convert_checkpoint(official, ours2, to="ours", cfg=ModelConfig(**CASES["g-swiglu"]))
    fresh = build_model(ModelConfig(**CASES["g-swiglu"], backbone_weights=str(
        golden / "model" / "g-swiglu" / "backbone.safetensors"))).eval()
    load_trainable(fresh, ours2)
    inp = load_file(golden / "model" / "g-swiglu" / "inputs.safetensors")
    with torch.no_grad():
        a = model(inp["z"], inp["x"], inp["z_feat_mask"])["score_map"]
        b = fresh(inp["z"], inp["x"], inp["z_feat_mask"])["score_map"]
    assert torch.equal(a, b)


def test_meta_pth_backbone_loads_safely(golden, tmp_path):
    """A Meta-format .pth (torch.save, w12/w3 names) loads with weights_only and gives the same model."""
    state = load_file(golden / "model" / "g-swiglu" / "backbone.safetensors")
    pth = tmp_path / "dinov2_vitg14_pretrain.pth"
    torch.save(state, pth)
    a = golden_model(golden, "g-swiglu")
    b = golden_model(golden, "g-swiglu", backbone_weights=str(pth))
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    p = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, p)
    with pytest.raises(CheckpointMismatchError, match="weights_only"):
        read_state_dict(p)


def test_mismatched_checkpoint_lists_keys(golden, tmp_path):
    model = golden_model(golden, "S-gelu")
    state = load_file(golden / "model" / "S-gelu" / "lorat_checkpoint.safetensors")
    del state["blocks.1.attn.qkv.v.lora.B"]
    state["head.extra.weight"] = torch.zeros(3)
    state["token_type_embed"] = torch.zeros(3, 128)
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad)
    with pytest.raises(CheckpointMismatchError) as e:
        load_trainable(model, bad)
    msg = str(e.value)
    assert "bad.safetensors does not fit the model" in msg
    assert "missing keys (1)" in msg and "blocks.1.attn.v.lora_B.default.weight" in msg
    assert "unexpected keys (1)" in msg and "head.extra.weight" in msg
    assert "mis-shaped keys (1)" in msg and "token_type_embed: file (3, 128) vs model (3, 384)" in msg
    assert "hold no frozen backbone weights" in msg  # says which absences are expected


def test_backbone_of_wrong_size_is_rejected(golden):
    with pytest.raises(CheckpointMismatchError) as e:
        golden_model(golden, "g-swiglu", embed_dim=256)
    assert "mis-shaped keys" in str(e.value)
    assert "blocks.0.attn.q.weight: file (128, 128) vs model (256, 256)" in str(e.value)


def test_checkpoint_with_other_lora_rank_is_rejected(golden, tmp_path):
    model = golden_model(golden, "S-gelu")
    p = tmp_path / "ck.safetensors"
    save_trainable(model, p)
    other = build_model(ModelConfig(**{**CASES["S-gelu"], "lora_r": 8, "lora_alpha": 8}))
    with pytest.raises(CheckpointMismatchError, match="lora_r=64 but the model config has model.lora_r=8"):
        load_trainable(other, p)


def test_checkpoint_with_other_rslora_setting_is_rejected(tmp_path):
    """use_rslora changes the scaling (alpha/sqrt(r) vs alpha/r): a silent load would train another model."""
    p = tmp_path / "ck.safetensors"
    save_trainable(build_model(tiny_cfg(use_rslora=True)), p)
    rslora = "use_rslora=True but the model config has model.use_rslora=False"
    with pytest.raises(CheckpointMismatchError, match=rslora):
        load_trainable(build_model(tiny_cfg()), p)
    load_trainable(build_model(tiny_cfg(use_rslora=True)), p)  # the same setting loads


def test_nonfinite_checkpoint_is_refused_naming_the_tensors(tmp_path):
    """Issue 13: a checkpoint holding NaN/inf does not load (Tracker, export, resume all use load_trainable)."""
    model = build_model(tiny_cfg())
    good = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    name = sorted(good)[0]
    bad = {**good, name: good[name].clone().index_fill_(0, torch.tensor([0]), float("nan"))}
    bad["token_type_embed"] = good["token_type_embed"].clone().fill_(float("inf"))
    p = tmp_path / "nan.safetensors"
    save_file(bad, p)
    before = {n: t.clone() for n, t in good.items()}
    with pytest.raises(CheckpointMismatchError) as e:
        load_trainable(model, p)
    msg = str(e.value)
    assert "nan.safetensors: non-finite values in 2 tensor(s)" in msg
    assert f"{name} ({good[name].shape[1]} NaN, 0 inf" in msg and "token_type_embed (0 NaN, 96 inf of 96)" in msg
    assert all(torch.equal(before[n], t) for n, t in good.items())  # nothing was copied in
    with pytest.raises(CheckpointMismatchError, match="non-finite values in 2 tensor"):
        convert_checkpoint(p, tmp_path / "out.safetensors", to="official", cfg=tiny_cfg())
    assert not (tmp_path / "out.safetensors").exists()


def test_checkpoint_of_another_variant_is_refused_naming_the_keys(tmp_path):
    """Issue 16: an S-224 checkpoint does not load into S-378 (same trainable shapes, another model)."""
    from lorat_scale.config import get_preset

    s224, s378 = get_preset("S-224").model, get_preset("S-378").model
    small = dict(depth=1, lora_r=2, lora_alpha=2)  # the same shapes as the presets, fewer blocks
    m224 = build_model(ModelConfig(**{**vars(s224), **small}), device="meta")
    m378 = build_model(ModelConfig(**{**vars(s378), **small}), device="meta")
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert shapes(m224) == shapes(m378)  # a key/shape check alone cannot tell them apart
    tiny224 = build_model(tiny_cfg())
    p = tmp_path / "s224.safetensors"
    save_trainable(tiny224, p, variant="S-224")
    assert json.loads(read_metadata(p)["model_config"])["search_size"] == 56  # the resolved model configuration
    with pytest.raises(CheckpointMismatchError) as e:
        load_trainable(build_model(tiny_cfg(template_size=42, search_size=84)), p)
    msg = str(e.value)
    assert "s224.safetensors: trained for another model" in msg
    assert "checkpoint has template_size=28 but the model config has model.template_size=42" in msg
    assert "checkpoint has search_size=56 but the model config has model.search_size=84" in msg
    load_trainable(build_model(tiny_cfg(drop_path=0.1, frozen_dtype="bf16")), p)  # training-only keys may differ


def test_tracker_and_export_refuse_another_variant_and_nonfinite_weights(golden, tmp_path):
    """The Tracker and export-onnx load through load_trainable: an S-224 checkpoint into S-378, a NaN: refused."""
    from lorat_scale.export.onnx import build_export_model
    from lorat_scale.tracking import Tracker

    d = golden / "model" / "S-gelu"
    model = golden_model(golden, "S-gelu")  # S-224 with 2 blocks
    ck = tmp_path / "s224.safetensors"
    save_trainable(model, ck, variant="S-224")
    backbone = str(d / "backbone.safetensors")
    with pytest.raises(CheckpointMismatchError, match="search_size=224 but the model config has model.search_size=378"):
        Tracker.from_checkpoint(ck, variant="S-378", backbone=backbone, overrides=["model.depth=2"], device="cpu")
    template = "template_size=112 but the model config has model.template_size=196"
    with pytest.raises(CheckpointMismatchError, match=template):
        build_export_model("S-378", str(ck), backbone, ["model.depth=2"])
    state = load_file(ck)
    state["token_type_embed"][1, 5] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(state, nan, metadata=read_metadata(ck))
    nonfinite = r"(?s)non-finite values in 1 tensor\(s\).*token_type_embed \(1 NaN"
    with pytest.raises(CheckpointMismatchError, match=nonfinite):
        Tracker.from_checkpoint(nan, variant="S-224", backbone=backbone, overrides=["model.depth=2"], device="cpu")


def test_convert_checkpoint_checks_keys_and_shapes(tmp_path, capsys):
    """Issue 13: convert-checkpoint refuses extra, missing or mis-shaped keys as loading does (nothing written)."""
    from lorat_scale.cli import main
    from lorat_scale.models.weights import ours_to_official

    model = build_model(tiny_cfg())
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    official = ours_to_official(state, swiglu=False)
    missing = sorted(official)[0]
    del official[missing]
    official["head.extra.weight"] = torch.zeros(3)
    official["token_type_embed"] = torch.zeros(3, 7)
    src, dst = tmp_path / "official.safetensors", tmp_path / "ours.safetensors"
    save_file(official, src)
    sets = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.lora_r=4", "model.lora_alpha=8",
            "model.template_size=28", "model.search_size=56", "model.pretrain_grid=6"]
    assert main(["convert-checkpoint", str(src), str(dst), "--to", "ours", "--variant", "S-224", *sets]) == 1
    err = capsys.readouterr().err
    assert "official.safetensors does not fit the model" in err and "missing keys (1)" in err
    assert "unexpected keys (1)" in err and "head.extra.weight" in err
    assert "token_type_embed: file (3, 7) vs model (3, 32)" in err and not dst.exists()
    # Our own file records its model: checked without --variant, and converted both ways.
    ours = tmp_path / "good.safetensors"
    save_trainable(model, ours, variant="S-224")
    assert main(["convert-checkpoint", str(ours), str(tmp_path / "off.safetensors"), "--to", "official"]) == 0
    assert main(["convert-checkpoint", str(ours), str(tmp_path / "x.safetensors"), "--to", "official",
                 "--variant", "S-224"]) == 1  # the preset is another model than the recorded tiny one
    assert "trained for another model: checkpoint has embed_dim=32 but the model config has model.embed_dim=384" \
        in capsys.readouterr().err


def test_corrupt_checkpoint_file(tmp_path):
    p = tmp_path / "broken.safetensors"
    p.write_bytes(b"\x00\x01garbage")
    with pytest.raises(Exception, match="broken.safetensors|header|Error"):
        load_trainable(build_model(tiny_cfg()), p)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_state_dict(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------------------
# Memory hooks
# ----------------------------------------------------------------------------------------------
def _loss_and_grads(model, inputs):
    out = model(*inputs)
    loss = out["score_map"].square().mean() + out["boxes"].mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_grad_checkpointing_gives_identical_gradients_with_drop_path():
    inputs = tiny_inputs(tiny_cfg())
    results = []
    for ckpt in (False, True):
        model = build_model(tiny_cfg(drop_path=0.1, grad_checkpointing=ckpt)).train()
        torch.manual_seed(123)  # same drop-path draws; checkpointing must replay them exactly
        results.append(_loss_and_grads(model, inputs))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l0, l1, atol=1e-6, rtol=0)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        torch.testing.assert_close(g0[k], g1[k], atol=1e-6, rtol=1e-5)
    assert all(not k.startswith(("patch_embed", "norm.")) for k in g0)  # frozen get no grad


def test_attention_backends_agree_and_xformers_is_guarded():
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        a = model(*inputs)["score_map"]
        model.set_attn_backend("math")
        b = model(*inputs)["score_map"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    model.set_attn_backend("xformers")
    with pytest.raises(RuntimeError, match="xformers"):
        model(*inputs)


def test_batch_subset_drop_path_applies_branch_to_a_rescaled_subset():
    x = torch.zeros(10, 3, 4)
    torch.manual_seed(0)
    out = _batch_subset_residual(x, lambda t: torch.ones_like(t), rate=0.4)
    changed = (out != 0).flatten(1).any(1)
    assert changed.sum() == 6  # floor(10 * 0.6)
    assert torch.allclose(out[changed], torch.full_like(out[changed], 10 / 6))


def test_frozen_bf16_storage_and_trainable_dtype():
    cfg = tiny_cfg(frozen_dtype="bf16")
    model = build_model(cfg)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in trainable)
    ref = build_model(tiny_cfg()).eval()
    model.eval()
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        a, b = ref(*inputs)["score_map"], model(*inputs)["score_map"]
    assert a.dtype == b.dtype == torch.float32
    assert (a - b).abs().max() < 0.05 * a.abs().max() + 0.05
    model.train()
    loss, grads = _loss_and_grads(model, inputs)
    assert torch.isfinite(loss) and len(grads) == len(trainable)
    m16 = build_model(tiny_cfg(trainable_dtype="bf16"))
    assert all(p.dtype == torch.bfloat16 for p in m16.parameters() if p.requires_grad)


@pytest.mark.parametrize("storage", ["int8", "nf4"])
def test_quantized_frozen_weights_train_and_merge(storage):
    bnb = pytest.importorskip("bitsandbytes")
    cfg = tiny_cfg(frozen_dtype=storage, embed_dim=64)
    model = build_model(cfg)
    want = bnb.nn.Linear8bitLt if storage == "int8" else bnb.nn.Linear4bit
    base = model.blocks[0].attn.q.base_layer
    assert isinstance(base, want)
    assert type(model.blocks[0].attn.q).__module__.startswith("peft.tuners.lora.bnb")  # bnb-aware LoRA
    inputs = tiny_inputs(cfg)
    model.train()
    loss, grads = _loss_and_grads(model, inputs)
    assert torch.isfinite(loss) and any("lora_A" in k for k in grads)
    model.eval()
    with torch.no_grad():
        before = model(*inputs)
        merged = merge_for_inference(model)
        after = merged(*inputs)
    assert isinstance(merged.blocks[0].attn.q, want)  # merged back into quantized storage
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # Requantizing the merged weight costs a little precision.
    assert (before["boxes"] - after["boxes"]).abs().max() < 0.05


def test_lora_init_options():
    m = build_model(tiny_cfg())
    b = m.blocks[0].attn.q.lora_B["default"].weight
    assert b.abs().max() > 0 and b.std().item() == pytest.approx(0.02, rel=0.5)  # LoRAT: B non-zero
    p = build_model(tiny_cfg(lora_init="peft"))
    assert p.blocks[0].attn.q.lora_B["default"].weight.abs().max() == 0  # peft: B = 0
    r = build_model(tiny_cfg(use_rslora=True, lora_r=4, lora_alpha=8))
    assert r.blocks[0].attn.q.scaling["default"] == pytest.approx(8 / 2)


def test_build_is_deterministic_in_init_seed():
    a, b = build_model(tiny_cfg()), build_model(tiny_cfg())
    c = build_model(tiny_cfg(init_seed=7))
    ka, kb, kc = a.trainable_state_dict(), b.trainable_state_dict(), c.trainable_state_dict()
    assert all(torch.equal(ka[k], kb[k]) for k in ka)
    assert not torch.equal(ka["token_type_embed"], kc["token_type_embed"])


def test_meta_device_counts_match_paper():
    from lorat_scale.models.profile import count

    # The paper's table of parameters and MACs, computed columns
    # (the paper rounds them to 99/13/30, 336/32/103, 1216/80/1161)
    for variant, (total, trainable, macs) in {"B-224": (98.7, 12.99, 29.8), "L-224": (335.7, 32.52, 102.9),
                                              "g-378": (1215.7, 80.23, 1160.4)}.items():
        s = count(variant)
        assert s.total_params / 1e6 == pytest.approx(total, abs=0.05), variant
        assert s.trainable_params / 1e6 == pytest.approx(trainable, abs=0.005), variant
        assert s.macs / 1e9 == pytest.approx(macs, abs=0.05), variant
