"""Typed configuration: presets, dotted overrides and clear errors."""
from __future__ import annotations

import json
import math
import typing

import pytest
from annotated_types import Ge, Gt, Interval, Le, Lt, Predicate

from lorat_scale.cli import main as cli_main
from lorat_scale.config import (VARIANTS, ConfigError, _split, apply_overrides, config_fields, config_from_dict,
                                describe_range, get_preset, load_config, read_config, validate)


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


# ------------------------------------------------------------------------------------------
# Value ranges: declared at each field, checked for every source of a configuration
# ------------------------------------------------------------------------------------------
def _numeric_fields():
    """(key, element index or None, element type with its ranges) of every int/float field and list/tuple item."""
    out = []
    for key, value, hint in config_fields(get_preset("S-224")):
        base, meta = _split(hint)
        origin, args = typing.get_origin(base), typing.get_args(base)
        if origin in (list, tuple):
            for i, a in enumerate(args if origin is tuple else args[:1]):
                if _split(a)[0] in (int, float):
                    out.append((key, i, a))
        elif base in (int, float) and base is not bool:
            out.append((key, None, hint))
    return out


def _outside(hint) -> list:
    """Values just outside every bound the field declares, plus NaN and +-inf for floats."""
    base, meta = _split(hint)
    bad = [math.nan, math.inf, -math.inf] if base is float else []
    for m in meta:
        for b in (list(m) if isinstance(m, Interval) else [m]):
            if isinstance(b, Gt):
                bad += [b.gt, b.gt - 1]
            elif isinstance(b, Ge):
                bad.append(b.ge - 1)
            elif isinstance(b, Lt):
                bad.append(b.lt)
            elif isinstance(b, Le):
                bad.append(b.le + 1)
    return [base(v) if math.isfinite(v) else v for v in bad]


def test_every_numeric_field_declares_a_range():
    fields = _numeric_fields()
    assert len(fields) >= 58  # every int and float of model, data, train and track, list items included
    undeclared = [k for k, _, hint in fields if not [m for m in _split(hint)[1] if not isinstance(m, Predicate)]]
    assert undeclared == [], f"numeric config fields without a declared range: {undeclared}"


def test_every_numeric_field_refuses_values_outside_its_range():
    """Each value outside a field's range (NaN and inf too) is refused from the command line and from
    JSON, naming the key, the value and the range."""
    checked = 0
    for key, index, hint in _numeric_fields():
        rng = describe_range(hint)
        for bad in _outside(hint):
            name = key if index is None else f"{key}[{index}]"
            expected = f"config key {name!r} must be {rng}; got {bad!r}"
            # a dotted override
            cfg = get_preset("S-224")
            if index is None:
                override = f"{key}={bad}"
            elif key == "train.betas":
                betas = [bad if i == index else v for i, v in enumerate(cfg.train.betas)]
                override = f"{key}={betas[0]},{betas[1]}"
            else:  # data.weights: one weight for one source
                override = f"{key}=[{bad}]"
            with pytest.raises(ConfigError) as e:
                apply_overrides(cfg, ["data.train_sources=[lasot=/d/LaSOT]", override])
            assert str(e.value) == expected, (override, str(e.value))
            # a run's config.json / checkpoint metadata: the same check, naming the source
            d = get_preset("S-224").to_dict()
            section, field = key.split(".")
            d["data"]["train_sources"] = ["lasot=/d/LaSOT"]
            value = d[section][field]
            if index is None:
                d[section][field] = bad
            else:
                value = list(value) or [1.0]
                value[index] = bad
                d[section][field] = value
            with pytest.raises(ConfigError) as e:
                config_from_dict(d, "runs/x/config.json")
            assert str(e.value) == f"runs/x/config.json: {expected}"
            checked += 1
    assert checked > 150


@pytest.mark.parametrize("override, message", [
    # the values issue 15 found accepted (each started a run with rc 0)
    ("train.warmup_epochs=-1", "config key 'train.warmup_epochs' must be a finite number >= 0; got -1.0"),
    ("train.weight_decay=-0.1", "config key 'train.weight_decay' must be a finite number >= 0; got -0.1"),
    ("train.grad_clip=-1", "config key 'train.grad_clip' must be a finite number >= 0; got -1.0"),
    ("train.min_lr=1e-3", "config key 'train.min_lr' must be <= the peak lr (0.0001: train.lr with "
                          "train.lr_scaling); got 0.001"),
    ("train.lr=inf", "config key 'train.lr' must be a finite number > 0; got inf"),
    ("data.max_frame_gap=0", "config key 'data.max_frame_gap' must be >= 1; got 0"),
    ("data.scale_jitter=-0.25", "config key 'data.scale_jitter' must be a finite number >= 0; got -0.25"),
    ("model.lora_r=0", "config key 'model.lora_r' must be >= 1; got 0"),
    ("train.keep_checkpoints=-1", "config key 'train.keep_checkpoints' must be >= 0; got -1"),
    ("train.save_every=-5", "config key 'train.save_every' must be >= 0; got -5"),
    ("train.output_dir=", "config key 'train.output_dir' must be a non-empty path; got ''"),
    ("train.output_dir=  ", "config key 'train.output_dir' must be a non-empty path; got '  '"),
    # issue 16: a bare AssertionError from timm before
    ("train.epochs=0", "config key 'train.epochs' must be >= 1; got 0"),
    # list and tuple items, strings with a meaning
    ("train.betas=0.9,1.0", "config key 'train.betas[1]' must be a finite number in [0, 1); got 1.0"),
    ("train.betas=0.9", "config key 'train.betas' must hold 2 comma-separated values; got '0.9'"),
    ("track.device=gpu", "config key 'track.device' must be \"auto\" or a torch device such as cpu, cuda, cuda:1; "
                         "got 'gpu'"),
    # rules between fields
    ("model.template_size=252", "config key 'model.template_size' must be <= model.search_size (224); got 252"),
    ("train.global_batch=100", "config key 'train.global_batch' must be a multiple of train.micro_batch (16); "
                               "got 100"),
    ("train.warmup_lr=1", "config key 'train.warmup_lr' must be <= the peak lr"),
    ("data.pairs_per_epoch=64", "config key 'data.pairs_per_epoch' must be >= train.global_batch (128)"),
    ("data.weights=[1,2]", "config key 'data.weights' must be empty (equal weights) or one weight per entry of "
                           "data.train_sources (0); got [1.0, 2.0]"),
])
def test_out_of_range_values_are_named(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("S-224", [override])
    assert message in str(e.value)


def test_every_preset_is_in_range():
    for v in VARIANTS:
        validate(get_preset(v))
    # linear lr scaling: the rules compare with the scaled peak
    load_config("S-224", ["train.lr_scaling=linear", "train.global_batch=1024", "train.micro_batch=16"])
    with pytest.raises(ConfigError, match="must be <= the peak lr"):
        load_config("S-224", ["train.lr_scaling=linear", "train.global_batch=1", "train.micro_batch=1"])


def test_training_stops_on_epochs_0_with_one_line(tmp_path):
    """Issue 16: ``train.epochs=0`` was a bare AssertionError from timm's scheduler."""
    from lorat_scale.train.loop import main as train

    with pytest.raises(SystemExit) as e:
        train(["--variant", "S-224", "train.epochs=0", f"train.output_dir={tmp_path / 'run'}"])
    assert str(e.value) == "error: config key 'train.epochs' must be >= 1; got 0"
    assert not (tmp_path / "run").exists()


def test_run_config_json_round_trips_and_is_checked(tmp_path, capsys):
    cfg = load_config("L-378", ["train.lr=5e-5", "train.betas=0.9,0.95", "data.weights=[2]",
                                "data.train_sources=[lasot=/d/LaSOT]"])
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert read_config(p) == cfg  # the tuple comes back a tuple
    for edit, message in [
        (lambda d: d["train"].update(lr=-1), f"{p}: config key 'train.lr' must be a finite number > 0; got -1"),
        (lambda d: d["train"].update(epochs="10"), f"{p}: config key 'train.epochs' must be of type int; got '10'"),
        (lambda d: d["model"].update(lora_rank=8), f"{p}: unknown config key 'model.lora_rank'"),
        (lambda d: d.update(variant="H-224"), f"{p}: config key 'variant' must be one of S-224"),
        (lambda d: d["train"].update(optimizer="sgd"), f"{p}: config key 'train.optimizer': 'sgd' is not one of"),
    ]:
        d = json.loads(cfg.to_json())
        edit(d)
        p.write_text(json.dumps(d))
        with pytest.raises(ConfigError) as e:
            read_config(p)
        assert str(e.value).startswith(message), str(e.value)
    p.write_text('{"train": {"lr": 1e-4,\n "epochs": }}')
    with pytest.raises(ConfigError, match=rf"^{p}:2: not valid JSON"):
        read_config(p)
    # the command line: print a saved configuration with overrides, checked the same way
    p.write_text(cfg.to_json())
    assert cli_main(["config", "--from", str(p), "train.epochs=3"]) == 0
    assert "train.epochs = 3 " in capsys.readouterr().out
    d = json.loads(cfg.to_json())
    d["data"]["max_frame_gap"] = 0
    p.write_text(json.dumps(d))
    assert cli_main(["config", "--from", str(p)]) == 2
    assert capsys.readouterr().err == f"error: {p}: config key 'data.max_frame_gap' must be >= 1; got 0\n"


def test_checkpoint_metadata_is_checked(tmp_path):
    import torch
    from safetensors.torch import save_file

    from lorat_scale.models.weights import FORMAT
    from lorat_scale.tracking.tracker import resolve_config

    for meta, message in [({"lora_r": "0"}, "config key 'model.lora_r' must be >= 1; got 0"),
                          ({"lora_alpha": "nan"}, "config key 'model.lora_alpha' must be a finite number > 0; got nan"),
                          ({"lora_r": "sixty-four"}, "metadata lora_r='sixty-four' is not an integer")]:
        ckpt = tmp_path / "model.safetensors"
        save_file({"x": torch.zeros(1)}, str(ckpt), metadata={"format": FORMAT, **meta})
        with pytest.raises(ConfigError) as e:
            resolve_config(ckpt, backbone="backbone.pth")
        assert str(e.value) == f"checkpoint {ckpt}: {message}"


def test_cli_config_prints_every_key_with_its_range(capsys):
    assert cli_main(["config", "--variant", "g-378", "train.lr=5e-5"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" = ")[0]: line for line in out.splitlines() if " = " in line}
    assert set(lines) == {k for k, _, _ in config_fields(get_preset("g-378"))}
    assert lines["train.lr"].split("#")[1].strip() == "a finite number > 0" and "5e-05" in lines["train.lr"]
    assert lines["model.depth"].endswith("# >= 1") and "= 40" in lines["model.depth"]
    assert "#   train.min_lr must be <= the peak lr" in out
    assert cli_main(["config", "train.lr=-1"]) == 2
    assert capsys.readouterr().err == "error: config key 'train.lr' must be a finite number > 0; got -1.0\n"
