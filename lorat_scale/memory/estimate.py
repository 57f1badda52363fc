"""Predicted peak GPU memory of one LoRAT training step, traced on the CPU with fake tensors.

How: the real model is built on the meta device (seconds even for ViT-g), its parameters are
replaced by ``FakeTensor``s (shapes and dtypes, no storage), and one full training step
(forward under autocast, loss, backward, grad clipping, optimizer step, zero_grad) runs under
``FakeTensorMode`` with PyTorch's ``MemTracker`` counting every live storage. The peak snapshot
gives frozen weights, trainable weights, gradients, optimizer state, activations and
temporaries. The step mirrors ``scripts/train.py``: autocast around forward and loss when
``train.precision`` is bf16/fp16 (accelerate's mixed precision), ``clip_grad_norm_``, the optimizer
of ``train.optim.build_optimizer`` (torch AdamW traced with foreach, its CUDA default),
``zero_grad(set_to_none=True)``; the optimizer state exists already (a steady-state step), and the
LayerNorms follow CUDA's autocast policy (fp32), which CPU autocast does not.

What fake tensors cannot see is modelled explicitly and printed one line per term:
  * bitsandbytes int8/nf4 layers cannot hold fake weights (their Parameter subclasses refuse a
    FakeTensor), so each quantized base linear is replaced by a stand-in that stores exactly the
    bnb formats (int8: int8 weight + fp32 scale per row; nf4: packed 4-bit + uint8 absmax per
    64-block + fp32 absmax per 256 absmax, bnb's default double quantization) and allocates the
    temporaries bnb's CUDA path allocates (nf4: a dequantized weight in forward and backward;
    int8: fp16 input copy, int8 input, int32 product, fp16 output, dequantized weight in backward).
  * the flash-attention backward workspace (fp32 dq accumulator + softmax_d, rows rounded to 128),
    which the CPU kernel traced here does not allocate; logsumexp is traced (same shape on CPU);
  * cuBLAS/cuBLASLt workspace, allocator rounding (512 B per block: applied to every traced
    tensor), allocator fragmentation (heuristic), CUDA context (not in max_memory_allocated).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, load_config

GiB = 2**30
MiB = 2**20
BLOCK = 512  # CUDA caching allocator: every block is a multiple of 512 B
CUBLAS_WORKSPACE = 32 * MiB + 1 * MiB  # cuBLAS :4096:8 (Hopper default) + cuBLASLt 1 MiB
CUDA_CONTEXT = 512 * MiB  # CUDA 12/13 context with lazy module loading (typical; not measured here)
FRAGMENTATION = 0.05  # reserved/allocated overhead of the default caching allocator (heuristic)
NF4_BLOCK, NF4_BLOCK2 = 64, 256  # bnb Linear4bit defaults: 64-weight blocks, double-quantized absmax
ADAM8_BLOCK, ADAM8_MIN = 256, 4096  # bnb 8-bit optimizers: 256-value blocks; smaller params stay fp32

# Options for ``--memory-saving``; each entry is a dotted override, applied before the user's own.
MEMORY_SAVING: dict[str, list[str]] = {
    "none": [],
    # The most saving: meets the goals (g-378 <= 12 GB, g-224 <= 8 GB at batch 16) with the most
    # headroom; the goals alone need checkpointing + bf16 frozen weights (docs/MEMORY.md).
    "max": [
        "model.grad_checkpointing=true",
        "model.frozen_dtype=nf4",
        "model.trainable_dtype=fp32",
        "model.batch_subset_drop_path=true",
        "model.attn_backend=sdpa",
        "train.precision=bf16",
        "train.optimizer=adamw8bit",
    ],
}


def round_block(nbytes: int) -> int:
    """Bytes the CUDA caching allocator hands out for a request of ``nbytes``."""
    return math.ceil(nbytes / BLOCK) * BLOCK


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def resolve_config(variant: str, batch: int, overrides: list[str] | None = None, memory_saving: str = "none") -> Config:
    """The training config for ``variant`` with the memory-saving preset, then ``overrides``."""
    if memory_saving not in MEMORY_SAVING:
        raise ValueError(f"--memory-saving {memory_saving!r}: expected one of {list(MEMORY_SAVING)}")
    return load_config(variant, [*MEMORY_SAVING[memory_saving], f"train.micro_batch={batch}", *(overrides or [])])


def _autocast_dtype(cfg: Config) -> torch.dtype | None:
    """Autocast dtype of the training step (None for fp32)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.precision]


# ---------------------------------------------------------------------------------------------
# Exact parts from parameter counts (also what the tests check the trace against)
# ---------------------------------------------------------------------------------------------
def quantized_linear_bytes(out_f: int, in_f: int, storage: str) -> int:
    """Device bytes of one frozen bnb linear weight (without bias) in ``storage`` (int8/nf4)."""
    n = out_f * in_f
    if storage == "int8":  # int8 weight + fp32 absmax per output row (SCB)
        return round_block(n) + round_block(4 * out_f)
    if storage == "nf4":  # packed 4-bit + uint8 absmax per 64 + fp32 absmax per 256 absmax + codes
        blocks = math.ceil(n / NF4_BLOCK)
        return (round_block((n + 1) // 2) + round_block(blocks) + round_block(4 * math.ceil(blocks / NF4_BLOCK2))
                + round_block(4 * 16) + round_block(4 * 256) + round_block(4))
    raise ValueError(f"not a quantized storage: {storage!r}")


def optimizer_state_bytes(numels: list[int], optimizer: str, dtype_size: int = 4) -> int:
    """Optimizer state bytes for trainable tensors of ``numels`` elements (first step included)."""
    total = 0
    for n in numels:
        if optimizer == "adamw":  # exp_avg + exp_avg_sq in the param dtype, plus a scalar step
            total += 2 * round_block(n * dtype_size) + round_block(4)
        elif optimizer == "adamw8bit":
            if n < ADAM8_MIN:  # bnb keeps small tensors in 32-bit state
                total += 2 * round_block(4 * n)
            else:  # two uint8 states + two fp32 absmax per 256-value block
                blocks = math.ceil(n / ADAM8_BLOCK)
                total += 2 * round_block(n) + 2 * round_block(4 * blocks)
        else:
            raise ValueError(f"train.optimizer={optimizer!r}")
    if optimizer == "adamw8bit":
        total += 2 * round_block(4 * 256)  # the signed and unsigned dynamic quantization maps
    return total


@dataclasses.dataclass
class ExactTerms:
    """Parts of the peak that follow from parameter counts alone (bytes, allocator-rounded)."""

    frozen_weights: int
    trainable_weights: int
    gradients: int
    optimizer_state: int
    trainable_params: int
    frozen_params: int


def exact_terms(cfg: Config) -> ExactTerms:
    """Frozen/trainable weights, gradients and optimizer state of ``cfg`` by arithmetic on counts."""
    from ..models.lora import LORA_TARGETS

    model = _build_meta(cfg)
    storage = cfg.model.frozen_dtype
    pattern = re.compile(LORA_TARGETS + r"\.base_layer\.weight")
    frozen = trainable = n_frozen = 0
    numels = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            trainable += round_block(p.numel() * p.element_size())
            numels.append(p.numel())
        else:
            n_frozen += p.numel()
            if storage in ("int8", "nf4") and pattern.fullmatch(name):
                frozen += quantized_linear_bytes(p.shape[0], p.shape[1], storage)
            else:
                frozen += round_block(p.numel() * p.element_size())
    size = 2 if cfg.model.trainable_dtype == "bf16" else 4
    return ExactTerms(
        frozen_weights=frozen,
        trainable_weights=trainable,
        gradients=trainable,  # one gradient per trainable tensor, same dtype
        optimizer_state=optimizer_state_bytes(numels, cfg.train.optimizer, size),
        trainable_params=sum(numels),
        frozen_params=n_frozen,
    )


# ---------------------------------------------------------------------------------------------
# Model on fake tensors
# ---------------------------------------------------------------------------------------------
def _build_meta(cfg: Config) -> nn.Module:
    """The training model on the meta device; int8/nf4 frozen weights built as bf16 (see module doc)."""
    from ..models.builder import build_model

    mcfg = copy.deepcopy(cfg.model)
    if mcfg.frozen_dtype in ("int8", "nf4"):
        mcfg.frozen_dtype = "bf16"  # what lora.quantize_frozen_ keeps non-linear frozen tensors in
    mcfg.backbone_weights = ""
    model = build_model(mcfg, device="meta")
    return model.train()


class _NF4Matmul(torch.autograd.Function):
    """bnb MatMul4Bit on CUDA for large M: dequantize to the input dtype, F.linear; same in backward."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
        w = a.new_empty(shape)  # dequantize_4bit output, freed after the matmul
        ctx.shape = shape
        return F.linear(a, w, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        w = grad.new_empty(ctx.shape)  # dequantized again for grad_A
        return grad @ w, None, None, None


class _Int8Matmul(torch.autograd.Function):
    """bnb MatMul8bitLt (threshold 0, frozen weight): the allocations of its CUDA forward and backward."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, cb: torch.Tensor, bias: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
        a2 = a.reshape(-1, a.shape[-1])
        a16 = a2.to(torch.float16)  # "inputs will be cast to float16 during quantization"
        ca = torch.empty_like(a16, dtype=torch.int8)  # int8_vectorwise_quant
        sca = a16.new_empty(a16.shape[0], dtype=torch.float32)
        del a16
        out32 = ca.new_empty((ca.shape[0], shape[0]), dtype=torch.int32)  # int8_linear_matmul
        del ca, sca
        out16 = torch.empty_like(out32, dtype=torch.float16)  # int8_mm_dequant (fp16 only)
        del out32
        out = out16.to(a.dtype)
        del out16
        out = out + bias.to(a.dtype)
        ctx.save_for_backward(a)  # bnb keeps A in ctx.tensors
        ctx.shape = shape
        return out.reshape(*a.shape[:-1], shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (a,) = ctx.saved_tensors
        cb = grad.new_empty(ctx.shape, dtype=a.dtype)  # CB.to(dtype_A, copy=True).mul_(SCB)
        return (grad.to(a.dtype) @ cb).reshape(a.shape), None, None, None


class QuantizedLinearStandIn(nn.Module):
    """A frozen bnb Linear8bitLt/Linear4bit(nf4) with exactly bnb's storage, for fake-tensor tracing."""

    def __init__(self, base: nn.Linear, storage: str, compute_dtype: torch.dtype) -> None:
        super().__init__()
        out_f, in_f = base.weight.shape
        self.storage, self.shape, self.compute_dtype = storage, (out_f, in_f), compute_dtype
        n = out_f * in_f
        frozen = dict(requires_grad=False)
        if storage == "int8":
            self.weight = nn.Parameter(torch.empty(out_f, in_f, dtype=torch.int8), **frozen)
            self.scb = nn.Parameter(torch.empty(out_f, dtype=torch.float32), **frozen)
        else:
            blocks = math.ceil(n / NF4_BLOCK)
            self.weight = nn.Parameter(torch.empty((n + 1) // 2, 1, dtype=torch.uint8), **frozen)
            self.absmax = nn.Parameter(torch.empty(blocks, dtype=torch.uint8), **frozen)
            self.absmax2 = nn.Parameter(torch.empty(math.ceil(blocks / NF4_BLOCK2), dtype=torch.float32), **frozen)
            self.code = nn.Parameter(torch.empty(16, dtype=torch.float32), **frozen)
            self.code2 = nn.Parameter(torch.empty(256, dtype=torch.float32), **frozen)
            self.offset = nn.Parameter(torch.empty((), dtype=torch.float32), **frozen)
        self.bias = nn.Parameter(torch.empty(out_f, dtype=compute_dtype), **frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same output shape and dtype as the bnb layer, with its allocations."""
        if self.storage == "nf4":  # Linear4bit: to compute dtype, matmul_4bit, back to the input dtype
            out = _NF4Matmul.apply(x.to(self.compute_dtype), self.weight, self.bias.to(self.compute_dtype), self.shape)
            return out.to(x.dtype)
        # Linear8bitLt: bias cast to the input dtype; MatMul8bitLt returns the input dtype.
        return _Int8Matmul.apply(x, self.weight, self.bias.to(x.dtype), self.shape)


def _fakeify_(model: nn.Module, storage: str) -> None:
    """Replace every parameter and buffer by an empty CPU tensor (call under FakeTensorMode)."""
    from ..models.lora import LORA_TARGETS, lora_layers

    if storage in ("int8", "nf4"):
        pattern = re.compile(LORA_TARGETS)
        names = {id(m): n for n, m in model.named_modules()}
        for layer in lora_layers(model):
            if pattern.fullmatch(names[id(layer)]):
                layer.base_layer = QuantizedLinearStandIn(layer.base_layer, storage, torch.bfloat16)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.device.type == "meta":
                fake = torch.empty(p.shape, dtype=p.dtype, device="cpu")
                module._parameters[name] = nn.Parameter(fake, requires_grad=p.requires_grad)
            elif p is not None and not isinstance(p, torch._subclasses.FakeTensor):
                module._parameters[name] = nn.Parameter(torch.empty_like(p), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device="cpu")


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------
def dense_loss(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``train.loss.lorat_loss`` computed densely: the same value, without data-dependent shapes.

    ``lorat_loss`` gathers the positive cells with ``nonzero``, whose output shape fake tensors
    cannot know; here every cell is computed and masked. Memory: a few (B,H,W) maps (< 1 MiB at
    batch 16), negligible next to the backbone. tests/test_memory.py checks the value equality.
    """
    from ..boxes import aligned_giou, aligned_iou

    eps = 1e-6  # train.loss.EPS
    score, boxes = outputs["score_map"].float(), outputs["boxes"].float()
    pos = batch["positive_map"].to(torch.float32)
    gt = batch["target_box"].float()[:, None, None, :].expand_as(boxes)
    with torch.no_grad():
        target = aligned_iou(boxes.detach(), gt, eps=eps) * pos
    n = pos.sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(score, target, reduction="sum")
    giou = ((1.0 - aligned_giou(boxes, gt, eps=eps)) * pos).sum()
    return (bce + giou) / n


def _loss_fn(cfg: Config) -> tuple[Any, str]:
    """The project's loss when fake tensors can trace it, else its dense equivalent."""
    from torch._subclasses.fake_tensor import DynamicOutputShapeException, FakeTensorMode

    try:
        from ..train.loss import lorat_loss
    except ImportError:
        return dense_loss, "dense_loss (lorat_scale/train/loss.py not found)"

    def project(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lorat_loss(outputs, batch)["loss"]

    try:  # a tiny probe: does the project loss run on fake tensors?
        with FakeTensorMode():
            probe = {"score_map": torch.zeros(1, 2, 2, requires_grad=True), "boxes": torch.zeros(1, 2, 2, 4)}
            project(probe, {"target_box": torch.zeros(1, 4), "positive_map": torch.ones(1, 2, 2, dtype=torch.bool)})
    except DynamicOutputShapeException:
        return dense_loss, "dense_loss (= train.loss.lorat_loss, whose nonzero() fake tensors cannot trace)"
    return project, "train.loss.lorat_loss"


# ---------------------------------------------------------------------------------------------
# The traced training step
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cuda_block_rounding() -> Iterator[None]:
    """Make MemTracker round every storage to 512 B as the CUDA allocator does.

    Why our own: MemTracker rounds only storages on a CUDA device, and our fake tensors must live
    on the CPU (the autograd engine needs a real CUDA context to run backward on CUDA fake tensors).
    """
    from torch.distributed._tools import mem_tracker

    info = mem_tracker._WeakRefInfo
    original = info._calculate_mem_consumed
    rounded = lambda self: round_block(self.size * self.element_size)  # noqa: E731
    info._calculate_mem_consumed = rounded  # type: ignore[method-assign]
    try:
        yield
    finally:
        info._calculate_mem_consumed = original  # type: ignore[method-assign]


def _frozen_safe_tracker() -> Any:
    """MemTracker with two changes (why: torch 2.14's MemTracker cannot do the job as is).

    * It registers a gradient hook on every parameter of a module, which raises for parameters
      that do not require grad (our whole frozen backbone): here only trainable ones get hooks.
    * After every op it refreshes the peak of every module seen so far (ops x modules: ~30 s for
      B-224, minutes for g); only the global peak is kept here, plus the phase it occurred in.
    The accounting of storages and their categories is MemTracker's own.
    """
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _MemRefType

    class _Tracker(MemTracker):
        peak_phase = "forward"

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            # prim.device (a metadata query, allocates nothing) is ~70% of all dispatches on fake
            # tensors: answering it directly halves the trace time.
            if func is torch.ops.prim.device.default:
                return func(*args, **(kwargs or {}))
            return super().__torch_dispatch__(func, types, args, kwargs)

        def _update_peak_stats(self, peak_state: Any) -> None:
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                    self._peak_mem[dev] = snap[_TOTAL_KEY]
                    self._peak_mem_snap[dev] = dict(snap)
                    self.peak_phase = "optimizer step" if self._in_opt else (
                        "backward" if self._mod_tracker.is_bw else "forward")

        def _track_module_params_and_buffers(self, module: nn.Module,
                                             install_grad_hooks: bool = True) -> tuple[int, int]:
            sizes = super()._track_module_params_and_buffers(module, install_grad_hooks=False)

            def hook(grad: torch.Tensor) -> None:
                self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

            if install_grad_hooks:
                for p in module.parameters():
                    if p.requires_grad and self._param_to_grad_hook_handles.get(p, None) is None:
                        self._param_to_grad_hook_handles[p] = (
                            p.register_hook(hook),
                            p.register_post_accumulate_grad_hook(lambda q: hook(q.grad)),
                        )
            return sizes

    return _Tracker()


class CudaAutocastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm as CUDA autocast runs it: in fp32, with an fp32 output (for CPU traces).

    Why: CUDA autocast puts layer_norm on its fp32 list (the next linears cast the fp32 output
    back to 16 bit, one copy each); CPU autocast keeps it in bf16. Matmul-like ops (linear, mm,
    bmm, SDPA) are lower precision under both, and the loss is fp32 anyway, so the norms are the
    one policy difference that changes memory. A module (not a TorchFunctionMode) so that
    checkpoint recomputation in backward sees it too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 layer norm under autocast, the plain one otherwise."""
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                w = None if self.weight is None else self.weight.float()
                b = None if self.bias is None else self.bias.float()
                return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return super().forward(x)


def _emulate_cuda_autocast_(model: nn.Module) -> None:
    """Make every LayerNorm of a traced model follow CUDA's autocast policy."""
    for m in model.modules():
        if type(m) is nn.LayerNorm:
            m.__class__ = CudaAutocastLayerNorm


def _make_optimizer(model: nn.Module, cfg: Config, fake_mode: Any = None) -> torch.optim.Optimizer:
    """The training optimizer exactly as scripts/train.py builds it (train.optim.build_optimizer)."""
    from ..train.optim import build_optimizer

    if cfg.train.optimizer == "adamw8bit" and fake_mode is not None:
        # bnb builds its quantization maps with .tolist(), which fake tensors cannot answer: build
        # the optimizer outside the fake mode, then make its two 256-entry maps fake.
        with torch._subclasses.fake_tensor.unset_fake_temporarily():
            opt = build_optimizer(model, cfg.train)
        opt.name2qmap = {k: fake_mode.from_tensor(v) for k, v in opt.name2qmap.items()}
        return opt
    opt = build_optimizer(model, cfg.train)
    if isinstance(opt, torch.optim.AdamW) and fake_mode is not None:
        # On CUDA AdamW defaults to its foreach implementation (on CPU tensors to the for-loop):
        # trace the one the GPU runs, with its step temporaries.
        for group in opt.param_groups:
            group["foreach"] = True
    return opt


@dataclasses.dataclass
class ModelledTerm:
    """A memory term fake tensors cannot see, added to the traced peak."""

    name: str
    bytes: int
    note: str
    in_allocated: bool = True  # counted by torch.cuda.max_memory_allocated


@dataclasses.dataclass
class MemoryEstimate:
    """Predicted peak GPU memory of one training step and its breakdown (bytes)."""

    variant: str
    batch: int
    options: dict[str, Any]
    frozen_weights: int
    trainable_weights: int
    gradients: int
    optimizer_state: int
    activations: int  # forward activations (incl. recomputation) and the batch
    temporaries: int  # backward temporaries (activation grads, kernel outputs)
    modelled: list[ModelledTerm]
    loss: str
    seconds: float
    peak_phase: str = "forward"  # where the traced peak occurred: forward, backward or optimizer step
    gradients_total: int = 0  # all gradients (after backward); ``gradients`` is the part alive at the peak

    @property
    def traced(self) -> int:
        """Sum of the traced terms at the peak."""
        return (self.frozen_weights + self.trainable_weights + self.gradients + self.optimizer_state
                + self.activations + self.temporaries)

    @property
    def allocated(self) -> int:
        """Prediction of torch.cuda.max_memory_allocated."""
        return self.traced + sum(t.bytes for t in self.modelled if t.in_allocated)

    @property
    def peak(self) -> int:
        """Predicted device memory in use at the peak (allocated + fragmentation + CUDA context)."""
        return self.traced + sum(t.bytes for t in self.modelled)

    def report(self) -> str:
        """Human-readable breakdown; the last line is ``estimated peak: N GiB``."""
        opts = " ".join(f"{k}={v}" for k, v in self.options.items())
        rows = [
            f"{self.variant} batch {self.batch}: one training step traced with fake tensors in {self.seconds:.1f} s",
            f"options: {opts}",
            f"loss: {self.loss}",
            f"traced at the peak, reached in the {self.peak_phase} (FakeTensorMode + MemTracker, 512 B rounding):",
        ]
        for label, v in (("frozen weights", self.frozen_weights), ("trainable weights", self.trainable_weights),
                         ("gradients", self.gradients), ("optimizer state", self.optimizer_state),
                         ("activations", self.activations), ("temporaries", self.temporaries)):
            rows.append(f"  {label:<20}{v / GiB:9.3f} GiB")
        rows.append(f"  {'= traced':<20}{self.traced / GiB:9.3f} GiB")
        rows.append("modelled (invisible to fake tensors):")
        for t in self.modelled:
            rows.append(f"  + {t.name:<18}{t.bytes / GiB:9.3f} GiB  {t.note}")
        rows.append(f"predicted max_memory_allocated: {self.allocated / GiB:.2f} GiB")
        rows.append(f"estimated peak: {self.peak / GiB:.2f} GiB")
        return "\n".join(rows)


def _flash_bwd_workspace(cfg: Config, batch: int) -> int:
    """FA2 backward's fp32 dq accumulator and softmax_d for one attention call (rows rounded to 128)."""
    m = cfg.model
    n = (m.template_size // m.patch_size) ** 2 + (m.search_size // m.patch_size) ** 2
    n_r = math.ceil(n / 128) * 128
    d = m.embed_dim // m.num_heads
    d_r = math.ceil(d / 32) * 32
    rows = batch
    if m.batch_subset_drop_path and m.drop_path > 0.1:  # the branch runs on the kept subset only
        rows = max(int(batch * (1 - m.drop_path)), 1)
    return round_block(4 * rows * n_r * m.num_heads * d_r) + round_block(4 * rows * m.num_heads * n_r)


def _modelled_terms(cfg: Config, batch: int, allocated: int) -> list[ModelledTerm]:
    """The terms fake tensors cannot see, one per kernel/allocator effect."""
    terms = []
    if cfg.model.attn_backend == "sdpa" and cfg.train.precision in ("bf16", "fp16"):
        terms.append(ModelledTerm("flash-attn bwd", _flash_bwd_workspace(cfg, batch),
                                  "FA2 fp32 dq accumulator + softmax_d of one attention backward "
                                  "(logsumexp is traced)"))
    elif cfg.model.attn_backend in ("sdpa", "xformers"):
        terms.append(ModelledTerm("attn bwd", 0, "fp32 memory-efficient attention: no extra workspace (lse traced)"))
    if cfg.model.frozen_dtype in ("int8", "nf4"):
        terms.append(ModelledTerm("bnb buffers", 0, f"{cfg.model.frozen_dtype} storage and dequantization buffers "
                                  "traced through exact stand-ins (QuantizedLinearStandIn)"))
    terms.append(ModelledTerm("cuBLAS workspace", CUBLAS_WORKSPACE, "cuBLAS :4096:8 (32 MiB) + cuBLASLt (1 MiB)"))
    allocated += sum(t.bytes for t in terms)
    terms.append(ModelledTerm("fragmentation", int(FRAGMENTATION * allocated),
                              f"{FRAGMENTATION:.0%} of allocated, caching-allocator 2 MiB segments (heuristic)",
                              in_allocated=False))
    terms.append(ModelledTerm("CUDA context", CUDA_CONTEXT, "driver + kernels, not in max_memory_allocated",
                              in_allocated=False))
    return terms


def make_batch(cfg: Config, batch: int) -> dict[str, torch.Tensor]:
    """A training batch of the right shapes and dtypes (values irrelevant: fake or random)."""
    m = cfg.model
    gz, gx = m.template_size // m.patch_size, m.search_size // m.patch_size
    return {
        "z": torch.randn(batch, 3, m.template_size, m.template_size),
        "x": torch.randn(batch, 3, m.search_size, m.search_size),
        "z_feat_mask": torch.randint(0, 2, (batch, gz, gz)),
        "target_box": torch.tensor([[0.3, 0.3, 0.6, 0.7]]).expand(batch, 4).contiguous(),
        "positive_map": torch.zeros(batch, gx, gx, dtype=torch.bool).index_fill_(
            1, torch.arange(gx // 3, gx // 2), True),
    }


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, cfg: Config,
               loss_fn: Any, after_backward: Any = None) -> torch.Tensor:
    """One optimisation step as the training loop runs it: autocast forward+loss, backward, clip, step."""
    dtype = _autocast_dtype(cfg)
    # The device type of the autocast follows the tensors (CPU when traced, CUDA when benchmarked).
    device = batch["x"].device.type
    ctx = torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        out = model(batch["z"], batch["x"], batch["z_feat_mask"])
        loss = loss_fn(out, batch)
    del out
    loss.backward()
    if after_backward is not None:
        after_backward()
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _init_optimizer_state_(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Create the optimizer state as after the first step, so the traced step is a steady-state one.

    In steady state the state lives through forward and backward; in the very first step it does
    not exist yet. A step on zero gradients creates it without a forward/backward.
    """
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


TERMS = ("frozen_weights", "trainable_weights", "gradients", "optimizer_state", "activations", "temporaries",
         "gradients_total")


def trace_step(cfg: Config) -> tuple[dict[str, int], str, str]:
    """Trace one steady-state training step on fake tensors: (bytes per term at the peak, phase, loss).

    The terms also hold ``gradients_total``: all gradients, after backward (the peak may come
    before every gradient exists).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = _build_meta(cfg)
    loss_fn, loss_name = _loss_fn(cfg)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        _fakeify_(model, cfg.model.frozen_dtype)
        _emulate_cuda_autocast_(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = _make_optimizer(model, cfg, mode)
        _init_optimizer_state_(optimizer, trainable)
        batch = make_batch(cfg, cfg.train.micro_batch)
        tracker = _frozen_safe_tracker()
        with _cuda_block_rounding():
            tracker.track_external(model, optimizer, *batch.values())
            grads: list[int] = []

            def all_gradients() -> None:  # every gradient exists between backward and step
                grads.append(sum(int(s.get("Gradient", 0)) for s in tracker.get_tracker_snapshot().values()))

            with tracker:
                train_step(model, batch, optimizer, cfg, loss_fn, after_backward=all_gradients)
        snap = next(iter(tracker.get_tracker_snapshot("peak").values()))
    trainable_bytes = sum(round_block(p.numel() * p.element_size()) for p in trainable)
    terms = {
        "frozen_weights": snap.get("Parameter", 0) + snap.get("Buffer", 0) - trainable_bytes,
        "trainable_weights": trainable_bytes,
        "gradients": snap.get("Gradient", 0),
        "optimizer_state": snap.get("Optstate", 0),
        "activations": snap.get("Activation", 0) + snap.get("Other", 0),  # "Other" = the batch
        "temporaries": snap.get("Temp", 0),
        "gradients_total": grads[0],
    }
    return {k: int(v) for k, v in terms.items()}, tracker.peak_phase, loss_name


def default_probes(cfg: Config) -> tuple[int, int] | None:
    """Probe depths for ``estimate``: extrapolate deep models (L, g), trace shallow ones fully."""
    return (2, 4) if cfg.model.depth > 12 else None


def estimate(cfg: Config, probe_depths: tuple[int, int] | None = None) -> MemoryEstimate:
    """Trace one training step of ``cfg`` (batch = train.micro_batch) and predict its GPU peak.

    ``probe_depths=(d0, d1)``: trace the model with d0 and d1 blocks instead of all of them and
    extrapolate linearly to the full depth. The peak total is exact because the blocks are
    identical and every term at the peak is affine in the depth (stored activations, weights,
    gradients and optimizer state per block; one block's recomputation); the two probes must peak
    in the same phase, else the full model is traced. Where two moments of the step tie for the
    peak (tiny models at small batch) the split between gradients/activations/temporaries can
    differ from a full trace; the total does not. ~5x faster for ViT-g.
    """
    t0 = time.perf_counter()
    depth = cfg.model.depth
    note = ""
    if probe_depths and max(probe_depths) < depth:
        d0, d1 = probe_depths
        probes = []
        for d in (d0, d1):
            c = copy.deepcopy(cfg)
            c.model.depth = d
            probes.append(trace_step(c))
        (t_0, ph0, loss_name), (t_1, ph1, _) = probes
        if ph0 == ph1:
            terms = {k: t_0[k] + (t_1[k] - t_0[k]) * (depth - d0) // (d1 - d0) for k in TERMS}
            phase = ph0
            note = f" (extrapolated from depths {d0} and {d1})"
    if not note:
        terms, phase, loss_name = trace_step(cfg)
    m, t = cfg.model, cfg.train
    options = {
        "grad_checkpointing": m.grad_checkpointing, "frozen_dtype": m.frozen_dtype,
        "trainable_dtype": m.trainable_dtype, "precision": t.precision, "optimizer": t.optimizer,
        "attn_backend": m.attn_backend, "batch_subset_drop_path": m.batch_subset_drop_path and m.drop_path > 0.1,
    }
    return MemoryEstimate(
        variant=cfg.variant, batch=t.micro_batch, options=options, **terms,
        modelled=_modelled_terms(cfg, t.micro_batch, sum(terms[k] for k in TERMS[:6])), loss=loss_name,
        seconds=time.perf_counter() - t0, peak_phase=phase + note,
    )
