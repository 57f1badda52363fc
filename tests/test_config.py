"""Typed configuration: presets, dotted overrides and clear errors."""
from __future__ import annotations

import json

import pytest

from lorat_scale.config import VARIANTS, ConfigError, apply_overrides, get_preset, load_config


def test_presets_cover_every_variant():
    assert VARIANTS == ["S-224", "S-378", "B-224", "B-378", "L-224", "L-378", "g-224", "g-378"]
    g = get_preset("g-378")
    assert (g.model.embed_dim, g.model.depth, g.model.num_heads, g.model.ffn) == (1536, 40, 24, "swiglu")
    assert (g.model.template_size, g.model.search_size) == (196, 378)
    assert g.data.search_area_factor == g.track.search_area_factor == 5.0
    assert g.model.drop_path == 0.4 and get_preset("L-224").model.drop_path == 0.1
    b = get_preset("B-224")
    assert (b.model.embed_dim, b.model.template_size, b.data.search_area_factor) == (768, 112, 4.0)
    assert b.model.lora_r == 64 and b.model.lora_alpha == 64.0


def test_dotted_overrides_parse_types():
    cfg = load_config("L-224", ["train.lr=5e-5", "model.grad_checkpointing=true", "model.frozen_dtype=int8",
                                "train.betas=0.9,0.95", "data.weights=1,2,1,1", "train.max_steps=12",
                                "data.train_sources=[lasot=/d/l,got10k=/d/g,trackingnet=/d/t,coco=/d/c]"])
    assert cfg.train.lr == 5e-5 and cfg.model.grad_checkpointing is True
    assert cfg.model.frozen_dtype == "int8" and cfg.train.betas == (0.9, 0.95)
    assert cfg.data.weights == [1.0, 2.0, 1.0, 1.0] and cfg.train.max_steps == 12
    assert json.loads(cfg.to_json())["train"]["lr"] == 5e-5


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr': train has no field 'lrr'"),
        ("optim.lr=1", "unknown config key 'optim.lr': config has no field 'optim'"),
        ("train.lr=fast", "config key 'train.lr': cannot read 'fast' as float"),
        ("model.frozen_dtype=int4", "config key 'model.frozen_dtype': 'int4' is not one of"),
        ("model.grad_checkpointing=maybe", "config key 'model.grad_checkpointing': cannot read 'maybe' as bool"),
        ("model=1", "config key 'model' is a section"),
        ("train.lr", "must look like section.key=value"),
        ("model.num_heads=5", "config key 'model.embed_dim' must be divisible by model.num_heads"),
        ("model.drop_path=1.5", "config key 'model.drop_path' must be a finite number in [0, 1); got 1.5"),
        ("model.search_size=225", "config key 'model.search_size' must be a multiple of model.patch_size"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("S-224", [override])
    assert message in str(e.value)


def test_unknown_key_lists_valid_fields():
    with pytest.raises(ConfigError, match="fields: .*lora_alpha.*lora_r"):
        apply_overrides(get_preset("S-224"), ["model.lora_rank=8"])


def test_unknown_variant():
    with pytest.raises(ConfigError, match="unknown variant 'H-224'; expected one of S-224"):
        get_preset("H-224")
