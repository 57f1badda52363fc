"""The memory estimator: exact terms against arithmetic, option directions, speed, and the loss of
short CPU runs with nf4 frozen weights / 8-bit AdamW against the bf16 / AdamW baseline."""
from __future__ import annotations

import functools
import math
import time

import pytest
import torch

from lorat_scale.config import load_config
from lorat_scale.recipes import memory_saving
from lorat_scale.memory.estimate import (
    ADAM8_BLOCK,
    ADAM8_MIN,
    BLOCK,
    dense_loss,
    estimate,
    exact_terms,
    make_batch,
    quantized_linear_bytes,
    resolve_config,
    round_block,
)

SMALL = ["model.depth=2"]  # S-224 with 2 blocks: a full trace in about a second


def small(*overrides: str, batch: int = 4):
    """S-224 (2 blocks) at ``batch`` with ``overrides``."""
    return resolve_config("S-224", batch, [*SMALL, *overrides])


def trainable_numels(cfg) -> list[int]:
    from lorat_scale.memory.estimate import _build_meta

    return [p.numel() for p in _build_meta(cfg).parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------------------
# Exact parts
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [
    [], ["model.frozen_dtype=bf16", "train.optimizer=adamw8bit"], ["model.frozen_dtype=int8"],
    ["model.frozen_dtype=nf4", "model.grad_checkpointing=true"],
])
def test_traced_exact_terms_match_parameter_arithmetic(opts):
    cfg = small(*opts)
    e = estimate(cfg)
    x = exact_terms(cfg)
    assert e.frozen_weights == x.frozen_weights
    assert e.trainable_weights == x.trainable_weights
    assert e.gradients_total == x.gradients  # every gradient, after backward
    assert 0 <= e.gradients <= e.gradients_total  # the part alive at the peak
    assert e.peak_phase.startswith(("forward", "backward"))  # so the whole optimizer state is there
    assert e.optimizer_state == x.optimizer_state


def test_byte_arithmetic_per_storage_and_optimizer():
    cfg = small()
    numels = trainable_numels(cfg)
    n, slack = sum(numels), BLOCK * 3 * len(numels)  # allocator rounding: < 512 B per tensor
    # fp32 trainable weights and gradients: 4 B per parameter; AdamW fp32: 8 B per parameter.
    x = exact_terms(cfg)
    assert x.trainable_params == n
    assert 4 * n <= x.trainable_weights < 4 * n + slack
    assert 8 * n <= x.optimizer_state < 8 * n + slack
    # adamw8bit: 2 B per parameter + two fp32 absmax per 256-block; tensors < 4096 stay 32-bit.
    x8 = exact_terms(small("train.optimizer=adamw8bit"))
    want = sum(2 * k + 8 * math.ceil(k / ADAM8_BLOCK) if k >= ADAM8_MIN else 8 * k for k in numels)
    assert want <= x8.optimizer_state < want + slack + 2 * 1024
    # Frozen weights: fp32 4 B/param; bf16 2 B; int8 halves bf16 (plus one fp32 scale per row);
    # nf4 about a quarter of bf16.
    xs = {d: exact_terms(small(f"model.frozen_dtype={d}")) for d in ("fp32", "bf16", "int8", "nf4")}
    nf = xs["fp32"].frozen_params
    assert 4 * nf <= xs["fp32"].frozen_weights < 4 * nf + 512 * 1024
    assert 2 * nf <= xs["bf16"].frozen_weights < 2 * nf + 512 * 1024
    assert xs["nf4"].frozen_weights < xs["int8"].frozen_weights < 0.6 * xs["bf16"].frozen_weights
    # Per quantized linear (a ViT-g fc1): int8 = 1 B/param + 4 B/row, nf4 = 0.5 B + 1/64 B + 4/(64*256) B.
    n = 8192 * 1536
    assert quantized_linear_bytes(8192, 1536, "int8") == round_block(n) + round_block(4 * 8192)
    assert quantized_linear_bytes(8192, 1536, "int8") / (2 * n) == pytest.approx(0.5 + 2 / 1536, abs=1e-4)
    assert quantized_linear_bytes(8192, 1536, "nf4") / n == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256), abs=1e-3)


def test_estimate_responds_to_options_in_the_right_direction():
    deep = ("model.depth=6", "model.frozen_dtype=bf16")
    base = estimate(small(*deep, batch=16))
    ckpt = estimate(small(*deep, "model.grad_checkpointing=true", batch=16))
    assert ckpt.activations + ckpt.temporaries < 0.5 * (base.activations + base.temporaries)
    assert ckpt.peak < base.peak
    assert estimate(small(*deep, batch=32)).activations > 1.8 * base.activations
    bf16 = estimate(small("model.frozen_dtype=bf16"))
    assert estimate(small()).frozen_weights > 1.9 * bf16.frozen_weights
    int8 = estimate(small("model.frozen_dtype=int8"))
    assert int8.frozen_weights < 0.6 * bf16.frozen_weights
    assert estimate(small("model.frozen_dtype=nf4")).frozen_weights < int8.frozen_weights
    adam8 = estimate(small("model.frozen_dtype=bf16", "train.optimizer=adamw8bit"))
    assert adam8.optimizer_state < 0.3 * bf16.optimizer_state


def test_depth_extrapolation_equals_the_full_trace():
    cfg = small("model.depth=6", "model.frozen_dtype=nf4", "model.grad_checkpointing=true", batch=16)
    full, fast = estimate(cfg), estimate(cfg, probe_depths=(2, 4))
    for term in ("frozen_weights", "trainable_weights", "gradients", "optimizer_state", "activations", "temporaries"):
        assert abs(getattr(full, term) - getattr(fast, term)) <= 4 * BLOCK, term


def test_small_variant_is_fast_and_report_ends_with_the_peak():
    estimate(small())  # imports and caches warm
    # CPU time of this process: the 2 cores are shared, wall time says little about our code.
    t0 = time.process_time()
    e = estimate(resolve_config("S-224", 16, memory_saving="max"), probe_depths=(2, 4))
    assert time.process_time() - t0 < 10
    last = e.report().splitlines()[-1]
    assert last.startswith("estimated peak: ") and last.endswith(" GiB")
    assert float(last.split()[2]) == pytest.approx(e.peak / 2**30, abs=0.01)


def test_memory_saving_max_meets_the_goals_for_g():
    for variant, goal in (("g-378", 12e9), ("g-224", 8e9)):
        e = estimate(resolve_config(variant, 16, memory_saving="max"), probe_depths=(2, 4))
        assert e.peak <= goal, (variant, e.report())
    assert "model.grad_checkpointing=true" in memory_saving.SETS["max"]
    from lorat_scale.cli import main

    with pytest.raises(SystemExit):  # the CLI's choices are the presets
        main(["estimate-memory", "--memory-saving", "nope"])
    assert set(memory_saving.SETS) == {"none", "max"}


def test_dense_loss_equals_the_project_loss():
    from lorat_scale.train.loss import lorat_loss

    g = torch.Generator().manual_seed(0)
    lo, size = torch.rand(3, 5, 5, 2, generator=g) * 0.5, torch.rand(3, 5, 5, 2, generator=g) * 0.5 + 0.05
    out = {"score_map": torch.randn(3, 5, 5, generator=g),
           "boxes": torch.cat([lo, lo + size], -1)}
    batch = {"target_box": torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.3, 0.3, 0.4, 0.5], [0.0, 0.0, 1.0, 1.0]]),
             "positive_map": torch.rand(3, 5, 5, generator=g) > 0.6}
    dense, ref = dense_loss(out, batch), lorat_loss(out, batch)
    for k in ("loss", "loss_bce", "loss_giou", "num_positives"):
        assert dense[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k


def test_cli_last_line(capsys):
    from lorat_scale.cli import main

    args = ["estimate-memory", "--variant", "S-224", "--batch", "2", "--memory-saving", "max", "model.depth=2"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("estimated peak: ")


# ----------------------------------------------------------------------------------------------
# Numerics of the memory options: short CPU runs on a fixed synthetic batch
# ----------------------------------------------------------------------------------------------
TINY = ["model.embed_dim=128", "model.depth=1", "model.num_heads=4", "model.lora_r=32", "model.lora_alpha=32",
        "model.template_size=28", "model.search_size=56", "model.pretrain_grid=4", "train.lr=2e-3",
        "train.precision=bf16"]


@functools.lru_cache(maxsize=None)  # the bf16 baseline serves both option tests
def run_losses(*overrides: str, steps: int = 10) -> tuple[float, ...]:
    """Losses of ``steps`` optimizer steps of a tiny model on one fixed batch (real tensors, CPU)."""
    pytest.importorskip("bitsandbytes")
    from lorat_scale.models import build_model
    from lorat_scale.train.optim import build_optimizer
    from lorat_scale.train.step import LocalRunner, train_step

    cfg = load_config("S-224", [*TINY, *overrides])
    model = build_model(cfg.model).train()
    runner = LocalRunner("cpu", cfg.train.precision)
    opt = runner.prepare_optimizer(build_optimizer(model, cfg.train))
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    batch = make_batch(cfg, 4)
    clip = cfg.train.grad_clip
    return tuple(train_step(model, opt, [batch], runner, trainable=trainable, grad_clip=clip).row()["loss"]
                 for _ in range(steps))


@pytest.mark.parametrize("option,baseline", [
    (["model.frozen_dtype=nf4"], ["model.frozen_dtype=bf16"]),
    (["model.frozen_dtype=bf16", "train.optimizer=adamw8bit"], ["model.frozen_dtype=bf16"]),
])
def test_memory_option_keeps_training_loss_close_to_baseline(option, baseline):
    ref, got = run_losses(*baseline), run_losses(*option)
    assert ref[-1] < 0.6 * ref[0] and got[-1] < 0.6 * got[0]  # both train
    assert got[0] == pytest.approx(ref[0], rel=0.01)  # the quantized forward is close
    for a, b in zip(ref[-2:], got[-2:]):  # and so is where ten steps lead
        assert b == pytest.approx(a, rel=0.1)
