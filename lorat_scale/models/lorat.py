"""The LoRAT tracker (Lin et al., "Tracking Meets LoRA", ECCV 2024) on a DINOv2 ViT backbone.

    template z (B,3,Tz,Tz) --patch_embed--> + pos[top-left] + type[mask] --+
                                                                           +-> [z ; x] -> blocks -> norm
    search   x (B,3,Tx,Tx) --patch_embed--> + pos           + type[2]   --+        |
                                                  search tokens only -> MLP head -> score_map, boxes

The DINOv2 37x37 position table is resized once (bicubic, fp32, no antialias) to the search grid
and frozen; the template uses its top-left sub-window. No class/register tokens.
"""
from __future__ import annotations

import copy
from functools import partial

import torch
from timm.layers import Mlp, PatchEmbed, SwiGLUPacked, resample_abs_pos_embed, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from . import lora
from .layers import Attention, Block, BoxHead


def ffn_hidden(cfg: ModelConfig) -> int:
    """FFN hidden width: 4C for GELU, DINOv2's rounded 2/3 rule for SwiGLU (4096 for ViT-g)."""
    if cfg.ffn_hidden:
        return cfg.ffn_hidden
    if cfg.ffn == "swiglu":
        return (int(4 * cfg.embed_dim * 2 / 3) + 7) // 8 * 8
    return 4 * cfg.embed_dim


class LoRAT(nn.Module):
    """One-stream ViT tracker: joint attention over template and search tokens, MLP box head."""

    def __init__(self, cfg: ModelConfig, fused_qkv: bool = False) -> None:
        super().__init__()
        c, p = cfg.embed_dim, cfg.patch_size
        self.cfg = cfg
        self.z_grid = cfg.template_size // p
        self.x_grid = cfg.search_size // p
        # strict_img_size=False: the same patch embedding serves 112/196 and 224/378 inputs.
        self.patch_embed = PatchEmbed(
            img_size=cfg.pretrain_grid * p, patch_size=p, in_chans=3, embed_dim=c, strict_img_size=False
        )
        # The resized pretrained table (frozen); filled by weights.load_backbone_.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.x_grid**2, c), requires_grad=False)
        # Rows: 0 template background, 1 template foreground, 2 search.
        self.token_type_embed = nn.Parameter(torch.empty(3, c))
        hidden = ffn_hidden(cfg)
        if cfg.ffn == "swiglu":
            make_mlp = partial(SwiGLUPacked, in_features=c, hidden_features=2 * hidden)
        else:
            make_mlp = partial(Mlp, in_features=c, hidden_features=hidden, act_layer=nn.GELU)
        self.blocks = nn.ModuleList(
            Block(
                c,
                Attention(c, cfg.num_heads, fused=fused_qkv, backend=cfg.attn_backend),
                make_mlp(),
                layerscale=cfg.layerscale,
                drop_path=cfg.drop_path,
                batch_subset_drop_path=cfg.batch_subset_drop_path,
            )
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.head = BoxHead(c)
        self.grad_checkpointing = cfg.grad_checkpointing

    def init_trainable_(self) -> None:
        """LoRAT's init of the type table and head: trunc_normal(0.02) weights, zero biases."""
        trunc_normal_(self.token_type_embed, std=0.02)
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def set_pos_embed_from_pretrained_(self, pos_embed: torch.Tensor, num_prefix_tokens: int = 1) -> None:
        """Resize a pretrained (1, prefix + G*G, C) table to the search grid (bicubic, fp32, no antialias)."""
        table = resample_abs_pos_embed(
            pos_embed.float(),
            new_size=[self.x_grid, self.x_grid],
            num_prefix_tokens=num_prefix_tokens,
            interpolation="bicubic",
            antialias=False,
            align_corners=False,
        )[:, num_prefix_tokens:]
        self.pos_embed.data = table.to(self.pos_embed.dtype).to(self.pos_embed.device)

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype the frozen backbone runs in (the storage dtype of its norms and patch embed)."""
        return self.patch_embed.proj.weight.dtype

    def embed(self, z: torch.Tensor, x: torch.Tensor, z_feat_mask: torch.Tensor) -> torch.Tensor:
        """Token sequence [template ; search] with position and token-type embeddings."""
        dt = self.compute_dtype
        c = self.pos_embed.shape[-1]
        type_embed = self.token_type_embed.to(dt)
        pos = self.pos_embed.to(dt)
        pos_z = pos.reshape(1, self.x_grid, self.x_grid, c)[:, : self.z_grid, : self.z_grid].reshape(1, -1, c)
        zt = self.patch_embed(z.to(dt)) + pos_z + type_embed[z_feat_mask.flatten(1).long()]
        xt = self.patch_embed(x.to(dt)) + pos + type_embed[2]
        return torch.cat([zt, xt], dim=1)

    def forward(self, z: torch.Tensor, x: torch.Tensor, z_feat_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """z (B,3,Tz,Tz), x (B,3,Tx,Tx), mask (B,Tz/p,Tz/p) -> score_map (B,H,W) logits, boxes (B,H,W,4)."""
        t = self.embed(z, x, z_feat_mask)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                # Non-reentrant: works with frozen inputs and keeps the RNG (drop-path) identical.
                t = checkpoint(blk, t, use_reentrant=False, preserve_rng_state=True)
            else:
                t = blk(t)
        t = self.norm(t)
        search = t[:, self.z_grid**2 :]
        head_dtype = self.head.cls_mlp.layers[0].weight.dtype
        return self.head(search.to(head_dtype), (self.x_grid, self.x_grid))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute blocks in backward instead of storing their activations."""
        self.grad_checkpointing = enable

    def set_attn_backend(self, backend: str) -> None:
        """Switch every block's attention backend ("sdpa", "xformers" or "math")."""
        for blk in self.blocks:
            blk.attn.backend = backend

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trainable tensors (LoRA, token-type table, head): what checkpoints hold."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}


def merge_for_inference(model: LoRAT, inplace: bool = False) -> LoRAT:
    """Plain ViT for inference: LoRA merged into the weights and q/k/v fused into one qkv.

    Its outputs equal the unmerged model's (up to float rounding). With int8/nf4 storage the
    merged q/k/v stay separate (their quantized weights cannot be concatenated).
    """
    m = model if inplace else copy.deepcopy(model)
    lora.merge_lora_(m)
    for blk in m.blocks:
        if all(type(getattr(blk.attn, n)) is nn.Linear for n in ("q", "k", "v")):
            blk.attn.fuse_qkv_()
    m.requires_grad_(False)
    return m.eval()
