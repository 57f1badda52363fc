"""AdamW groups and the LoRAT lr schedule: exact values at the key steps of the paper's recipe."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lorat_scale.config import TrainConfig
from lorat_scale.train.optim import build_optimizer, build_scheduler, param_groups, peak_lr, steps_per_epoch


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.token_type_embed = nn.Parameter(torch.randn(3, 8))  # 2-D but "embed": no decay
        self.lin = nn.Linear(8, 8)  # weight decayed, bias not
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.lin(x + self.token_type_embed[0]))


def test_param_groups_and_state_only_for_trainable():
    m = Toy()
    decay, no_decay = param_groups(m, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(m.lin.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(m.token_type_embed), id(m.lin.bias)}
    opt = build_optimizer(m, TrainConfig())
    m(torch.randn(2, 8)).sum().backward()
    opt.step()
    assert set(opt.state) == {m.lin.weight, m.lin.bias, m.token_type_embed}
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.param_groups[0]["lr"] == 1e-4


def test_weight_decay_groups_follow_the_reference_rule():
    """No decay: squeezed ndim <= 1 (the (1, C) score-head weight too), norm layers, "embed"; the rest decays."""
    from lorat_scale.config import ModelConfig
    from lorat_scale.models import build_model

    model = build_model(ModelConfig(embed_dim=32, depth=1, num_heads=2, lora_r=4, lora_alpha=4, template_size=28,
                                    search_size=56, pretrain_grid=6))
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in param_groups(model, 0.1))
    assert model.get_parameter("head.cls_mlp.layers.2.weight").shape == (1, 32)
    assert "head.cls_mlp.layers.2.weight" in no_decay  # the official code leaves it undecayed
    assert {"token_type_embed", "head.cls_mlp.layers.0.bias", "head.reg_mlp.layers.2.bias"} <= no_decay
    assert {"head.cls_mlp.layers.0.weight", "head.reg_mlp.layers.2.weight",
            "blocks.0.attn.q.lora_A.default.weight", "blocks.0.mlp.fc2.lora_B.default.weight"} <= decay
    assert decay | no_decay == {n for n, p in model.named_parameters() if p.requires_grad}
    # A trainable norm layer (2-D affine-free shapes aside) is never decayed.
    toy = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups(toy, 0.1)
    assert [id(p) for p in decay["params"]] == [id(toy[0].weight)]


def test_adamw8bit_option():
    pytest.importorskip("bitsandbytes")
    m = Toy()
    opt = build_optimizer(m, TrainConfig(optimizer="adamw8bit"))
    assert type(opt).__name__ == "AdamW8bit"
    before = m.lin.weight.detach().clone()
    m(torch.randn(2, 8)).sum().backward()
    opt.step()
    assert not torch.equal(before, m.lin.weight)


def test_lr_scaling_rule():
    assert peak_lr(TrainConfig(global_batch=32)) == 1e-4  # paper: no scaling by default
    assert peak_lr(TrainConfig(global_batch=32, lr_scaling="linear")) == pytest.approx(2.5e-5, rel=1e-12)
    assert peak_lr(TrainConfig(global_batch=256, lr_scaling="linear")) == pytest.approx(2e-4, rel=1e-12)
    assert steps_per_epoch(131072, 128) == 1024


def test_paper_schedule_key_values():
    cfg = TrainConfig()  # 170 epochs, warm-up 2 epochs from 1e-7, peak 1e-4, floor 1e-6
    spe = steps_per_epoch(131072, cfg.global_batch)
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=peak_lr(cfg))
    sched = build_scheduler(opt, cfg, spe)

    def lr_at(t):
        sched.step_update(t)
        return opt.param_groups[0]["lr"]

    assert opt.param_groups[0]["lr"] == pytest.approx(1e-7, rel=1e-12)  # set at construction (t = 0)
    assert lr_at(0) == pytest.approx(1e-7, rel=1e-12)
    assert lr_at(1024) == pytest.approx(5.005e-5, rel=1e-12)  # half-way through the warm-up
    assert lr_at(2047) == pytest.approx(1e-7 + 2047 * (1e-4 - 1e-7) / 2048, rel=1e-12)
    assert lr_at(2048) == pytest.approx(1e-4, rel=1e-12)  # peak right after the warm-up
    assert lr_at(2048 + 87040) == pytest.approx(5.05e-5, rel=1e-12)  # cosine mid-point: T = 170 epochs
    last = lr_at(170 * 1024 - 1)  # the last step of the run (174,079)
    assert last == pytest.approx(1e-6 + 0.5 * 99e-6 * (1 + math.cos(math.pi * 172031 / 174080)), rel=1e-12)
    assert 1.03e-6 < last < 1.04e-6  # ends above the floor, as in the reference
    # Monotone: rising in the warm-up, falling after.
    lrs = [lr_at(t) for t in range(0, 174080, 512)]
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5])) and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_schedule_small_run_and_resume_state():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, lr=1e-3, min_lr=1e-5, warmup_lr=0.0)
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=peak_lr(cfg))
    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    sched.step_update(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4, rel=1e-12)
    sched.step_update(30)  # 20 steps into a 40-step cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-12)
    # A fresh scheduler on a fresh optimizer gives the same lr at the same step (resume).
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=peak_lr(cfg))
    s2 = build_scheduler(opt2, cfg, steps_per_epoch=10)
    s2.load_state_dict(sched.state_dict())
    s2.step_update(30)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
