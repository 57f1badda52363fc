"""Small single-purpose layers of the LoRAT network (attention, block, head).

Reused from timm where timm has them (PatchEmbed, Mlp, SwiGLUPacked, LayerScale, DropPath). Our own
attention and block exist because LoRAT needs q/k/v as three separate linears (one LoRA adapter
each), a switchable attention backend, and DINOv2's batch-subset stochastic depth, none of which
timm's ``Attention``/``Block`` provide.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, LayerScale

ATTN_BACKENDS = ("sdpa", "xformers", "math")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Softmax attention of (B, heads, N, d) tensors with the named backend."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if backend == "math":  # explicit softmax: the reference formula, and countable by FlopCounterMode
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        return attn.softmax(dim=-1) @ v
    if backend == "xformers":
        try:
            import xformers.ops as xops
        except ImportError as e:
            raise RuntimeError(
                "model.attn_backend='xformers' needs the xformers package (pip install 'lorat_scale[xformers]')"
            ) from e
        if not q.is_cuda:
            raise RuntimeError(
                "model.attn_backend='xformers' runs only on CUDA tensors (xformers has no CPU kernels); "
                "use model.attn_backend=sdpa on CPU"
            )
        # xformers wants (B, N, heads, d)
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {ATTN_BACKENDS}")


class Attention(nn.Module):
    """Multi-head self-attention with q/k/v either split (training, LoRA on each) or fused (qkv)."""

    def __init__(self, dim: int, num_heads: int, fused: bool = False, backend: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    @property
    def fused(self) -> bool:
        """Whether q/k/v live in one ``qkv`` linear."""
        return hasattr(self, "qkv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        h = self.num_heads
        if self.fused:
            q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (lin(x).reshape(b, n, h, c // h).transpose(1, 2) for lin in (self.q, self.k, self.v))
        out = attention(q, k, v, self.backend)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def fuse_qkv_(self) -> None:
        """Replace q, k, v by one qkv linear holding the same weights (inference form)."""
        if self.fused:
            return
        q, k, v = self.q, self.k, self.v
        for lin in (q, k, v):
            if type(lin) is not nn.Linear:
                raise TypeError(f"cannot fuse q/k/v of type {type(lin).__name__}; merge LoRA first")
        qkv = nn.Linear(q.in_features, 3 * q.out_features, device=q.weight.device, dtype=q.weight.dtype)
        qkv.weight.data = torch.cat([q.weight.data, k.weight.data, v.weight.data], 0)
        qkv.bias.data = torch.cat([q.bias.data, k.bias.data, v.bias.data], 0)
        qkv.requires_grad_(False)
        del self.q, self.k, self.v
        self.qkv = qkv


class Block(nn.Module):
    """Pre-norm ViT block with LayerScale and DINOv2's stochastic depth."""

    def __init__(
        self,
        dim: int,
        attn: Attention,
        mlp: nn.Module,
        layerscale: bool = True,
        drop_path: float = 0.0,
        batch_subset_drop_path: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        # gamma 1.0 (not DINOv2's 1e-5): pretrained weights overwrite it, and a randomly initialised
        # backbone (tests, tiny models) then has blocks that actually transform the tokens.
        self.ls1 = LayerScale(dim, init_values=1.0) if layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = mlp
        self.ls2 = LayerScale(dim, init_values=1.0) if layerscale else nn.Identity()
        self.drop_path = drop_path
        # DINOv2: rates above 0.1 drop whole samples from the branch computation (saves compute and
        # memory); lower rates use ordinary per-sample DropPath.
        self.batch_subset = batch_subset_drop_path and drop_path > 0.1
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 and not self.batch_subset else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 and not self.batch_subset else nn.Identity()

    def _attn_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x)))

    def _ffn_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        if self.training and self.batch_subset:
            x = _batch_subset_residual(x, self._attn_branch, self.drop_path)
            return _batch_subset_residual(x, self._ffn_branch, self.drop_path)
        x = x + self.drop_path1(self._attn_branch(x))
        return x + self.drop_path2(self._ffn_branch(x))


def _batch_subset_residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                           rate: float) -> torch.Tensor:
    """x + branch on a random subset of floor(B(1-rate)) samples, rescaled by B/subset (DINOv2)."""
    b = x.shape[0]
    keep = max(int(b * (1 - rate)), 1)
    idx = torch.randperm(b, device=x.device)[:keep]
    out = branch(x[idx])
    return torch.index_add(x, 0, idx, out.to(x.dtype), alpha=b / keep)


class MlpHead(nn.Module):
    """Three linears of width C with GELU between them, applied per token."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, out_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class BoxHead(nn.Module):
    """LoRAT's anchor-free MLP head: score-map logits and sigmoid l,t,r,b boxes around cell centres."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cls_mlp = MlpHead(dim, 1)
        self.reg_mlp = MlpHead(dim, 4)

    def forward(self, tokens: torch.Tensor, grid_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """(B, H*W, C) search tokens -> score_map (B,H,W) fp32 logits, boxes (B,H,W,4) normalized xyxy."""
        h, w = grid_hw
        b = tokens.shape[0]
        score_map = self.cls_mlp(tokens).float().reshape(b, h, w)
        ltrb = self.reg_mlp(tokens).float().sigmoid().reshape(b, h, w, 4)
        cy = (torch.arange(h, device=tokens.device, dtype=torch.float32) + 0.5) / h
        cx = (torch.arange(w, device=tokens.device, dtype=torch.float32) + 0.5) / w
        cy, cx = cy.view(1, h, 1), cx.view(1, 1, w)
        boxes = torch.stack(
            [cx - ltrb[..., 0], cy - ltrb[..., 1], cx + ltrb[..., 2], cy + ltrb[..., 3]], dim=-1
        )
        return {"score_map": score_map, "boxes": boxes}
