"""Recipes as code: typed configs, their run examples, and the paper recipe's data layout read for real."""
from __future__ import annotations

import importlib
import os
import re
import shlex

import pytest

from _data_trees import got10k_tree, lasot_tree, trackingnet_tree
from lorat_scale import recipes
from lorat_scale.config import Config, ConfigError
from lorat_scale.recipes import got10k, memory_saving, paper, quickstart
from lorat_scale.train.loop import load_sources, parse_args, resolve_config


def test_paper_recipe_is_the_papers_per_variant():
    for variant, drop_path in (("B-224", 0.0), ("L-378", 0.1), ("g-378", 0.4)):
        cfg = paper.get_config(variant, "/datasets")
        assert isinstance(cfg, Config) and cfg.variant == variant and cfg.model.drop_path == drop_path
        assert cfg.data.train_sources == ["lasot:train=/datasets/LaSOT", "got10k:vot_train=/datasets/GOT-10k",
                                          "trackingnet:train=/datasets/TrackingNet", "coco:train2017=/datasets/COCO"]
        assert cfg.data.weights == [] and cfg.data.pairs_per_epoch == 131072  # equal shares of 131,072 pairs
        t = cfg.train
        assert (t.epochs, t.global_batch, t.lr, t.weight_decay, t.warmup_epochs, t.min_lr, t.grad_clip) == \
            (170, 128, 1e-4, 0.1, 2.0, 1e-6, 1.0)
        assert (t.precision, t.compile) == ("fp16", True)
        # GOT-10k val: loss every epoch (1,024 steps), tracked every 10 epochs; a checkpoint every 10 epochs, 5 kept.
        assert cfg.data.val_sources == ["got10k:val=/datasets/GOT-10k"] and t.val_every == 1024
        assert cfg.data.track_sources == ["got10k_val=/datasets/GOT-10k"] and t.track_every_epochs == 10
        assert (t.save_every, t.keep_checkpoints) == (10240, 5)
    assert paper.get_config("L-224").model.backbone_weights == "timm:vit_large_patch14_dinov2.lvd142m"


def test_got10k_protocol_trains_on_the_full_train_split_for_100_epochs():
    cfg = got10k.get_config("L-224", "/datasets")
    assert cfg.data.train_sources == ["got10k:train=/datasets/GOT-10k"] and cfg.train.epochs == 100
    assert cfg.data.track_sources == ["got10k_val=/datasets/GOT-10k"]
    assert "--benchmark got10k_test" in got10k.__doc__  # its own evaluation: the server's test set


def test_memory_saving_recipe_is_the_paper_with_the_estimators_sets():
    cfg = memory_saving.get_config("g-378", "/datasets", "max")
    assert cfg.model.grad_checkpointing and cfg.model.frozen_dtype == "nf4" and cfg.train.optimizer == "adamw8bit"
    assert cfg.train.precision == "bf16"
    assert cfg.data.train_sources == paper.get_config("g-378", "/datasets").data.train_sources
    with pytest.raises(ConfigError, match="memory-saving set 'tiny': expected one of none, max"):
        memory_saving.get_config(level="tiny")


def test_quickstart_recipe_trains_s224_on_the_sample_data(shared_data):
    cfg = quickstart.get_config(data_root=str(shared_data))
    assert cfg.variant == "S-224" and cfg.train.precision in ("bf16", "fp32")
    assert all(str(shared_data) in s for s in cfg.data.train_sources)
    with pytest.raises(ConfigError, match="ViT-S"):
        quickstart.get_config(variant="B-224")


def run_examples(module) -> list[list[str]]:
    """The ``lorat-scale train`` command lines of a recipe module's docstring (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", module.__doc__)
    commands = re.finditer(r"(?:lorat-scale train|-m lorat_scale\.train) (.*)", text)
    return [shlex.split(m.group(1), comments=True) for m in commands]


def test_every_recipes_run_examples_parse_and_resolve():
    for name in recipes.NAMES:
        module = importlib.import_module(f"lorat_scale.recipes.{name}")
        examples = run_examples(module)
        assert examples, f"recipes/{name}.py has no run example in its docstring"
        for argv in examples:
            cfg = resolve_config(parse_args(argv))  # unknown keys or bad values would raise ConfigError
            assert isinstance(cfg, Config) and cfg.data.train_sources, (name, argv)


def test_recipe_command_line(capsys):
    args = parse_args(["--recipe", "paper", "--variant", "L-378", "--data-root", "/d", "train.epochs=3"])
    cfg = resolve_config(args)
    assert cfg.variant == "L-378" and cfg.train.epochs == 3 and cfg.data.train_sources[0] == "lasot:train=/d/LaSOT"
    assert resolve_config(parse_args(["--variant", "B-224"])).data.train_sources == []  # no recipe: the bare preset
    with pytest.raises(ConfigError, match="unknown recipe 'papr'; expected one of paper, got10k, quickstart"):
        resolve_config(parse_args(["--recipe", "papr"]))
    with pytest.raises(SystemExit):
        parse_args(["--data-root", "/d"])
    assert "--data-root belongs to a recipe" in capsys.readouterr().err


def test_paper_recipe_layout_reads_with_the_real_readers(tmp_path, shared_data):
    """Trees in the layout the paper recipe documents: every source reads; vot_train is a subset of train."""
    root = tmp_path / "datasets"
    root.mkdir()
    os.rename(lasot_tree(tmp_path, shared_data), root / "LaSOT")
    os.rename(got10k_tree(tmp_path, shared_data), root / "GOT-10k")
    os.rename(trackingnet_tree(tmp_path, shared_data), root / "TrackingNet")
    os.symlink(shared_data / "det" / "coco128", root / "COCO")
    # A 4-sequence GOT-10k: the shipped vot_train list (indices up to 9,334) cannot apply; a list in the root wins.
    (root / "GOT-10k" / "got10k_vot_train_split.txt").write_text("3\n1\n")
    cfg = paper.get_config("S-224", str(root))
    lasot, got, tn, coco = load_sources(cfg.data.train_sources, "raise", verbose=False, dc=cfg.data)
    assert [s.name for s in lasot] == ["airplane-2"]  # airplane-1 is in testing_set.txt
    assert [s.name for s in got] == ["GOT-10k_Train_000004", "GOT-10k_Train_000002"]
    assert len(tn) == 3 and len(coco) > 100
    (val,) = load_sources(cfg.data.val_sources, "raise", verbose=False, dc=cfg.data)
    assert [s.name for s in val] == ["GOT-10k_Val_000001"]
