"""The dry run: the real training step on fake CUDA tensors as one rank of a fake world of any size.

Small variants (S-224 with one or two blocks) keep each run to seconds; every variant's table is
scripts/dry_run_table.py. The checks are exact where the quantity is: bytes all-reduced by DDP,
reduce-scattered and all-gathered by ZeRO, per-rank memory that does not depend on the world size.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lorat_scale.config import ConfigError
from lorat_scale.memory.estimate import dry_run, resolve_config
from lorat_scale.recipes.memory_saving import SETS

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model.depth=2"]


def config(world: int, *overrides: str, batch: int = 4, memory_saving: str = "none"):
    """S-224 with two blocks, one micro-batch per rank and step."""
    return resolve_config("S-224", batch, [*SMALL, f"train.global_batch={batch * world}", *overrides], memory_saving)


def trainable_numel(cfg) -> int:
    from lorat_scale.memory.estimate import _build_meta

    return sum(p.numel() for p in _build_meta(cfg).parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def runs():
    """The dry run at world sizes 1, 8 and 512, without and with every memory-saving option."""
    return {(w, opts): dry_run(config(w, memory_saving=opts), w) for opts in ("none", "max") for w in (1, 8, 512)}


@pytest.mark.parametrize("opts", ["none", "max"])
def test_ddp_traffic_is_every_gradient_once_and_memory_does_not_depend_on_the_world(runs, opts):
    one, eight, big = runs[(1, opts)], runs[(8, opts)], runs[(512, opts)]
    assert (one.engine, eight.engine, big.engine) == ("single process", "DDP", "DDP")
    assert one.all_reduce == one.reduce_scatter == one.all_gather == 0  # one process: no collective at all
    n = trainable_numel(config(1, memory_saving=opts))
    # DDP all-reduces each fp32 gradient once; the step adds the positives count (float64) and the
    # [loss, bce, giou, non-finite, stop requests] totals (5 x fp32).
    for run in (eight, big):
        assert run.all_reduce == 4 * n + 8 + 20
        assert run.reduce_scatter == run.all_gather == 0
    # Every DDP rank holds the same tensors whatever the world size; the gradient buckets live all the time.
    assert eight.memory.peak == big.memory.peak and eight.memory.gradients == eight.memory.trainable_weights
    assert one.flops == eight.flops == big.flops > 0  # the same work per rank
    assert eight.memory.peak >= one.memory.peak
    for line in ("per rank memory: every rank 0..511 (identical): peak", "per rank FLOPs per step:",
                 "per rank communication per step: all-reduce"):
        assert line in big.report()


def test_memory_options_change_what_they_should(runs):
    none, saving = runs[(8, "none")], runs[(8, "max")]
    assert "model.grad_checkpointing=true" in SETS["max"]
    # Two small blocks: trainable weights and gradients weigh more here than in any real variant.
    assert saving.memory.traced < 0.8 * none.memory.traced
    assert saving.memory.activations < 0.5 * none.memory.activations  # checkpointing
    assert saving.memory.frozen_weights < 0.2 * none.memory.frozen_weights  # nf4 instead of fp32
    assert saving.memory.optimizer_state < 0.3 * none.memory.optimizer_state  # 8-bit AdamW
    assert saving.flops > 1.2 * none.flops  # checkpointing recomputes each block's forward in backward


def test_a_cpu_tensor_in_a_collective_fails_the_dry_run_naming_it(monkeypatch):
    """The review's defect: the positives count all-reduced from the host batch (before the move)."""
    from lorat_scale.memory.fake import CollectiveOnCPUError
    from lorat_scale.train import step

    real = step.positives_normalizer
    monkeypatch.setattr(step, "positives_normalizer", lambda maps: real([m.cpu() for m in maps]))
    with pytest.raises(CollectiveOnCPUError) as e:
        dry_run(config(8), 8)
    msg = str(e.value)
    assert msg.startswith("allreduce_ on a CPU tensor (float64 [], device cpu) sent from ")
    assert "train/loss.py" in msg and "in positives_normalizer: dist.all_reduce(count" in msg
    assert "No backend type associated with device type cpu" in msg


def test_the_fake_world_refuses_cpu_tensors_as_nccl_does():
    import torch.distributed as dist

    from lorat_scale.memory.fake import fake_world

    with fake_world(512):
        assert dist.get_world_size() == 512 and dist.get_backend() == "fake_nccl"
        with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
            dist.all_reduce(torch.zeros(3))
    assert not dist.is_initialized()


def test_a_cpu_cuda_mix_in_the_step_fails_the_dry_run(monkeypatch):
    from lorat_scale.train import step

    real = step.to_device
    monkeypatch.setattr(step, "to_device", lambda b, d: {**real(b, d), "x": b["x"]})  # the search crops stay behind
    with pytest.raises(RuntimeError, match="cuda:0.*cpu"):
        dry_run(config(1), 1)


@pytest.mark.parametrize("name", ["zero2", "zero3", "zero2_offload"])
def test_deepspeed_zero_stand_in(name):
    ds = json.loads((ROOT / "ds_configs" / f"{name}.json").read_text())
    world, cfg = 8, config(8)
    run = dry_run(cfg, world, ds)
    stage = ds["zero_optimization"]["stage"]
    assert run.engine.startswith(f"DeepSpeed ZeRO-{stage} (stand-in")
    n = trainable_numel(cfg)
    part = math.ceil(n / world)
    # bf16 gradients reduce-scattered once (padded to the world), the updated bf16 partition gathered once.
    assert 2 * n <= run.reduce_scatter < 2 * n + 2 * world * 64
    if stage == 2:
        assert 2 * part * world <= run.all_gather < 2 * part * world + 2 * world * 64
    else:  # plus every parameter above the persistence threshold, in forward and again in backward
        assert run.all_gather > 2 * part * world + 2 * 2 * 1_000_000
        assert any(t.name == "ZeRO-3 gathered" for t in run.memory.modelled)
    if name == "zero2_offload":
        assert run.memory.optimizer_state == 0  # fp32 master and moments live in CPU memory
    else:
        assert run.memory.optimizer_state == 2 * 4 * part + (0 if part % 128 == 0 else 512 * 2 - (8 * part) % 1024)


def test_zero3_with_quantized_frozen_weights_is_refused():
    ds = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    with pytest.raises(ConfigError, match="model.frozen_dtype=nf4 with ZeRO-3"):
        dry_run(config(8, "model.frozen_dtype=nf4"), 8, ds)


def test_cli_prints_memory_flops_and_traffic_per_rank(capsys):
    from lorat_scale.cli import main

    assert main(["dry-run", "--variant", "S-224", "--batch", "2", "--world-size", "8", "model.depth=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("per rank memory: every rank 0..7 (identical): peak ")
    assert out[-2].startswith("per rank FLOPs per step: ") and out[-1].startswith("per rank communication per step: ")
    assert main(["dry-run", "--variant", "S-224", "--world-size", "8", "train.global_batch=12"]) == 2
    assert "train.global_batch" in capsys.readouterr().err
