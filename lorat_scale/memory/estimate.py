"""The dry run: one LoRAT training step on fake CUDA tensors in a fake world of any size.

``dry_run(cfg, world_size, ds)`` runs the project's real training step (``train.step.train_step``:
device transfer, the all-reduced positives normaliser, forward under CUDA autocast, loss,
backward, clipping, the project's optimizer) twice, so that the optimizer state exists, on the
real model built on the meta device with every tensor a fake CUDA tensor, as rank 0 of a process
group of ``world_size`` ranks whose backend covers CUDA only (as NCCL; ``memory/fake.py``). With
more than one rank the model goes through ``DistributedDataParallel`` and its gradient buckets
are all-reduced through that group. A CPU tensor in any collective, or any CPU/CUDA mix in an
op, fails the run with a message naming the tensor. The second step is measured:

* peak device memory, traced with PyTorch's ``MemTracker`` and split into frozen weights,
  trainable weights, gradients, optimizer state, activations and temporaries, plus the terms
  fake tensors cannot see, each modelled and printed (below);
* FLOPs per step (``FlopCounterMode``: matmuls, convolutions, attention; forward and backward);
* bytes all-reduced, reduce-scattered and all-gathered per step.
Every rank of DDP holds the same tensors, so rank 0's figures are every rank's.

DeepSpeed (``ds``): the loop's DeepSpeed code paths run (the config fill and the run checks,
the step's DeepSpeed branch with its per-micro-batch check and the engine's gradient norm), but
DeepSpeed's engine is not: a stand-in (``ZeroStandIn``) does what ZeRO-2/3 do to memory and
communication on fake tensors: the module cast to the 16-bit precision, gradients reduce-scattered
into this rank's fp32 partition (in ``reduce_bucket_size`` buckets), fp32 master weights and AdamW
moments for 1/world of the trainable parameters (in CPU memory with ``offload_optimizer``),
updated 16-bit parameters all-gathered. ZeRO-3's partitioned parameters are modelled: the weights
term counts 1/world of each parameter above ``stage3_param_persistence_threshold`` plus a gathered
working set, and every such parameter is all-gathered in forward and again in backward. Not covered:
DeepSpeed's own kernels, bucketing order and prefetching, its checkpoint files, and the real values
of anything (fake tensors hold none: the step runs its finite path).

What fake tensors cannot see is modelled explicitly and printed one line per term:
  * bitsandbytes int8/nf4 layers cannot hold fake weights (their Parameter subclasses refuse a
    FakeTensor), so each quantized base linear is replaced by a stand-in that stores exactly the
    bnb formats (int8: int8 weight + fp32 scale per row; nf4: packed 4-bit + uint8 absmax per
    64-block + fp32 absmax per 256 absmax, bnb's default double quantization) and allocates the
    temporaries bnb's CUDA path allocates (nf4: a dequantized weight in forward and backward;
    int8: fp16 input copy, int8 input, int32 product, fp16 output, dequantized weight in backward).
  * the flash-attention backward workspace (fp32 dq accumulator + softmax_d, rows rounded to 128),
    which the attention kernel's shape function does not allocate; logsumexp is traced;
  * cuBLAS/cuBLASLt workspace, allocator rounding (512 B per block: applied to every traced
    tensor), allocator fragmentation (heuristic), CUDA context (not in max_memory_allocated).
The loss is ``dense_loss``, equal in value to ``train.loss.lorat_loss`` (tested), whose
``nonzero()`` has a data-dependent shape that fake tensors cannot trace; its memory is a few
(B, H, W) maps.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import Config, load_config
from ..recipes.memory_saving import SETS
from .fake import FAKE_NCCL

GiB = 2**30
MiB = 2**20
BLOCK = 512  # CUDA caching allocator: every block is a multiple of 512 B
CUBLAS_WORKSPACE = 32 * MiB + 1 * MiB  # cuBLAS :4096:8 (Hopper default) + cuBLASLt 1 MiB
CUDA_CONTEXT = 512 * MiB  # CUDA 12/13 context with lazy module loading (typical; not measured here)
FRAGMENTATION = 0.05  # reserved/allocated overhead of the default caching allocator (heuristic)
NF4_BLOCK, NF4_BLOCK2 = 64, 256  # bnb Linear4bit defaults: 64-weight blocks, double-quantized absmax
ADAM8_BLOCK, ADAM8_MIN = 256, 4096  # bnb 8-bit optimizers: 256-value blocks; smaller params stay fp32

def round_block(nbytes: int) -> int:
    """Bytes the CUDA caching allocator hands out for a request of ``nbytes``."""
    return math.ceil(nbytes / BLOCK) * BLOCK


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def resolve_config(variant: str, batch: int, overrides: list[str] | None = None, memory_saving: str = "none") -> Config:
    """The training config for ``variant`` with a memory-saving set (``recipes/memory_saving.py``), then overrides."""
    if memory_saving not in SETS:
        raise ValueError(f"--memory-saving {memory_saving!r}: expected one of {list(SETS)}")
    # One micro-batch per step unless the overrides say otherwise (memory does not depend on accumulation).
    return load_config(variant, [*SETS[memory_saving], f"train.micro_batch={batch}",
                                 f"train.global_batch={batch}", *(overrides or [])])


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
        if optimizer == "adamw":  # exp_avg + exp_avg_sq in the param dtype (its step counters live on the CPU)
            total += 2 * round_block(n * dtype_size)
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

    def __init__(self, base: nn.Linear, storage: str, compute_dtype: torch.dtype, device: str = "cuda") -> None:
        super().__init__()
        out_f, in_f = base.weight.shape
        self.storage, self.shape, self.compute_dtype = storage, (out_f, in_f), compute_dtype
        n = out_f * in_f
        frozen = dict(requires_grad=False)
        with torch.device(device):  # fake CUDA storage, like the rest of the traced model
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
    """Replace every parameter and buffer by an empty CUDA tensor (call inside ``fake.fake_cuda()``)."""
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
                fake = torch.empty(p.shape, dtype=p.dtype, device="cuda")
                module._parameters[name] = nn.Parameter(fake, requires_grad=p.requires_grad)
            elif p is not None and not isinstance(p, torch._subclasses.FakeTensor):
                module._parameters[name] = nn.Parameter(torch.empty_like(p), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device="cuda")


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------
def dense_loss(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
               num_positives: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
    """``train.loss.lorat_loss`` computed densely: the same values, without data-dependent shapes.

    ``lorat_loss`` gathers the positive cells with ``nonzero``, whose output shape fake tensors
    cannot know; here every cell is computed and masked. Memory: a few (B,H,W) maps (< 1 MiB at
    batch 16), negligible next to the backbone. tests/test_memory.py checks the value equality.
    """
    from ..boxes import aligned_giou, aligned_iou
    from ..train.loss import EPS

    score, boxes = outputs["score_map"].float(), outputs["boxes"].float()
    pos = batch["positive_map"].to(torch.float32)
    gt = batch["target_box"].float()[:, None, None, :].expand_as(boxes)
    with torch.no_grad():
        target = aligned_iou(boxes.detach(), gt, eps=EPS) * pos
    n = pos.sum().clamp(min=1.0) if num_positives is None else torch.as_tensor(num_positives, device=score.device)
    bce = F.binary_cross_entropy_with_logits(score, target, reduction="sum") / n
    giou = ((1.0 - aligned_giou(boxes, gt, eps=EPS)) * pos).sum() / n
    return {"loss": bce + giou, "loss_bce": bce, "loss_giou": giou, "num_positives": n}


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
      B-224, minutes for g); only the global peak per device is kept here, plus the phase in which
      the CUDA device reached it (CPU tensors, such as AdamW's step counters or offloaded
      optimizer state, are tracked under "cpu" and are not device memory).
    The accounting of storages and their categories is MemTracker's own.
    """
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _MemRefType

    class _Tracker(MemTracker):
        peak_phase = "forward"

        def __init__(self) -> None:
            super().__init__()
            self.phase_peaks: dict[str, dict] = {}  # phase -> the CUDA snapshot at that phase's own peak

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            # prim.device (a metadata query, allocates nothing) is ~70% of all dispatches on fake
            # tensors: answering it directly halves the trace time.
            if func is torch.ops.prim.device.default:
                return func(*args, **(kwargs or {}))
            return super().__torch_dispatch__(func, types, args, kwargs)

        def _update_peak_stats(self, peak_state: Any) -> None:
            for dev, snap in self._curr_mem_snap.items():
                if dev.type == "cuda":
                    phase = "optimizer step" if self._in_opt else ("backward" if self._mod_tracker.is_bw else "forward")
                    if self.phase_peaks.get(phase, {}).get(_TOTAL_KEY, -1) < snap[_TOTAL_KEY]:
                        self.phase_peaks[phase] = dict(snap)
                if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                    self._peak_mem[dev] = snap[_TOTAL_KEY]
                    self._peak_mem_snap[dev] = dict(snap)
                    if dev.type == "cuda":
                        self.peak_phase = phase

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


def _make_optimizer(model: nn.Module, cfg: Config, fake_mode: Any = None) -> torch.optim.Optimizer:
    """The training optimizer exactly as the loop builds it (train.optim.build_optimizer)."""
    from ..train.optim import build_optimizer

    if cfg.train.optimizer == "adamw8bit" and fake_mode is not None:
        # bnb builds its quantization maps with .tolist(), which fake tensors cannot answer: build
        # the optimizer outside the fake mode, then make its two 256-entry maps fake.
        with torch._subclasses.fake_tensor.unset_fake_temporarily():
            opt = build_optimizer(model, cfg.train)
        opt.name2qmap = {k: fake_mode.from_tensor(v).to("cuda") for k, v in opt.name2qmap.items()}
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


def _modelled_terms(cfg: Config, batch: int, allocated: int, zero3_gathered: int = 0) -> list[ModelledTerm]:
    """The terms fake tensors cannot see, one per kernel/allocator effect."""
    terms = []
    if zero3_gathered:
        terms.append(ModelledTerm("ZeRO-3 gathered", zero3_gathered, "one block's parameters all-gathered for its "
                                  "forward/backward + the next block prefetched (stage3_prefetch_bucket_size)"))
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


# ---------------------------------------------------------------------------------------------
# DeepSpeed ZeRO on fake tensors
# ---------------------------------------------------------------------------------------------
class ZeroStandIn(nn.Module):
    """DeepSpeed's ZeRO-2/3 engine as the training step sees it, doing to memory and traffic what ZeRO does.

    ``forward``; ``backward(loss)`` (gradients of the 16-bit module go, as each becomes ready, into a
    reduce bucket of ``reduce_bucket_size`` elements that is reduce-scattered into this rank's fp32
    gradient partition); ``step()`` (the global norm all-reduced, clipping, AdamW on this rank's fp32
    master partition, the updated 16-bit partition all-gathered in ``allgather_bucket_size``
    buckets); ``get_global_grad_norm()``. ZeRO-3 also all-gathers each parameter above
    ``stage3_param_persistence_threshold`` before a module's forward and again before its backward.
    """

    def __init__(self, module: nn.Module, cfg: Config, ds: dict, world: int, accumulation: int) -> None:
        super().__init__()
        zero = ds.get("zero_optimization", {})
        self.zero, self.stage, self.world, self.accumulation = zero, int(zero.get("stage", 0)), world, accumulation
        self.dtype = ds_dtype(ds)  # the module was cast to it before it became fake (see _trace)
        self.module = module
        self.params = [p for p in module.parameters() if p.requires_grad]
        numel = sum(p.numel() for p in self.params)
        self.part = math.ceil(numel / world)  # DeepSpeed pads the flat buffer into equal partitions
        self.host = "cpu" if zero.get("offload_optimizer", {}).get("device") == "cpu" else "cuda"
        self.bucket = torch.empty(min(int(zero.get("reduce_bucket_size", 5e8)), numel), dtype=self.dtype, device="cuda")
        self.gather_bucket = int(zero.get("allgather_bucket_size", 5e8))
        self.grad_partition = torch.zeros(self.part, dtype=torch.float32, device=self.host)
        self.master = nn.Parameter(torch.zeros(self.part, dtype=torch.float32, device=self.host))
        t = cfg.train
        self.optimizer = torch.optim.AdamW([self.master], lr=t.lr, betas=t.betas, weight_decay=t.weight_decay,
                                           foreach=True)
        self.grad_clip, self.filled, self.micro, self._norm = t.grad_clip, 0, 0, None
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._grad_ready)
        self.persistence = int(zero.get("stage3_param_persistence_threshold", 1e5))
        if self.stage == 3:
            for m in module.modules():
                if any(p.numel() > self.persistence for p in m.parameters(recurse=False)):
                    m.register_forward_pre_hook(lambda mod, args: self._gather(mod))
                    m.register_full_backward_pre_hook(lambda mod, grad: self._gather(mod))

    def extra_bytes(self) -> tuple[int, int]:
        """(gradient, master-weight) bytes this stand-in keeps on the device besides the module."""
        on_device = self.host == "cuda"
        grads = round_block(self.bucket.nbytes) + (round_block(self.grad_partition.nbytes) if on_device else 0)
        return grads, round_block(self.master.nbytes) if on_device else 0

    def forward(self, *args: Any) -> Any:
        """The wrapped module's forward."""
        return self.module(*args)

    def gathered_working_set(self) -> int:
        """ZeRO-3: bytes of gathered parameters alive at once: one block's, plus the prefetch bucket."""
        blocks = getattr(self.module, "blocks", [self.module])
        block = max(sum(round_block(p.numel() * p.element_size()) for p in b.parameters()
                        if p.numel() > self.persistence) for b in blocks)
        prefetch = int(self.zero.get("stage3_prefetch_bucket_size", 5e7)) * torch.finfo(self.dtype).bits // 8
        live = int(self.zero.get("stage3_max_live_parameters", 1e9)) * torch.finfo(self.dtype).bits // 8
        return min(block + min(prefetch, block), live)

    def _gather(self, module: nn.Module) -> None:
        for p in module.parameters(recurse=False):
            if p.numel() > self.persistence:
                shard = p.new_empty(math.ceil(p.numel() / self.world)).reshape(-1)
                _all_gather(p.new_empty(shard.numel() * self.world), shard)

    def _grad_ready(self, p: nn.Parameter) -> None:
        flat = p.grad.reshape(-1)
        if flat.numel() > self.bucket.numel():  # larger than a bucket: reduced on its own
            self._reduce(flat)
        else:
            if self.filled + flat.numel() > self.bucket.numel():
                self._reduce_bucket()
            self.bucket[self.filled:self.filled + flat.numel()].copy_(flat)
            self.filled += flat.numel()
        p.grad = None  # DeepSpeed frees each gradient once it is in the bucket

    def _reduce_bucket(self) -> None:
        if self.filled:
            self._reduce(self.bucket[:self.filled])
            self.filled = 0

    def _reduce(self, flat: torch.Tensor) -> None:
        """Reduce-scatter ``flat`` (padded to a multiple of the world) into this rank's fp32 partition."""
        out = math.ceil(flat.numel() / self.world)
        padded = flat if out * self.world == flat.numel() else flat.new_empty(out * self.world)
        shard = flat.new_empty(out)
        (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(shard, padded)
        self.grad_partition[:out].add_(shard.to(self.grad_partition.device, torch.float32))

    def backward(self, loss: torch.Tensor) -> None:
        """Backward (loss divided by the accumulation steps, as DeepSpeed does); steps on the last micro-batch."""
        (loss / self.accumulation).backward()
        self._reduce_bucket()
        self.micro += 1
        if self.micro % self.accumulation == 0:
            self.step()

    def step(self) -> None:
        """Norm, clip, AdamW on the fp32 partition, all-gather of the updated 16-bit parameters."""
        sq = self.grad_partition.to("cuda").pow(2).sum()
        dist.all_reduce(sq)
        self._norm = sq.sqrt()
        coef = (self.grad_clip / (self._norm + 1e-6)).clamp(max=1.0).to(self.host)
        self.master.grad = self.grad_partition * coef
        self.optimizer.step()
        self.master.grad = None
        self.grad_partition.zero_()
        part16 = self.master.to("cuda", self.dtype)
        for start in range(0, self.part, max(self.gather_bucket // self.world, 1)):
            shard = part16[start:start + max(self.gather_bucket // self.world, 1)]
            _all_gather(shard.new_empty(shard.numel() * self.world), shard)

    def get_global_grad_norm(self) -> torch.Tensor | None:
        """The last step's global gradient norm (before clipping)."""
        return self._norm


def _all_gather(output: torch.Tensor, shard: torch.Tensor) -> None:
    """All-gather ``shard`` of every rank into ``output`` (the non-deprecated name where torch has it)."""
    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(output, shard)


def ds_dtype(ds: dict) -> torch.dtype:
    """The dtype DeepSpeed casts the whole module to (frozen weights included): bf16, fp16 or fp32."""
    return (torch.bfloat16 if ds.get("bf16", {}).get("enabled") is True else
            torch.float16 if ds.get("fp16", {}).get("enabled") is True else torch.float32)


class ZeroRunner:
    """The step's runner under DeepSpeed: backward through the engine, no autocast, reduce over the world."""

    def __init__(self, engine: ZeroStandIn) -> None:
        self.engine, self.device = engine, torch.device("cuda")

    num_processes = property(lambda self: self.engine.world)

    def autocast(self) -> contextlib.AbstractContextManager:
        """None: DeepSpeed runs the 16-bit module itself."""
        return contextlib.nullcontext()

    def accumulate(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Nothing to do: DeepSpeed accumulates into its partitions."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """The engine's backward (it steps on the last micro-batch)."""
        self.engine.backward(loss)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Sum over the world."""
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.engine.world if reduction == "mean" else tensor


# ---------------------------------------------------------------------------------------------
# The dry run
# ---------------------------------------------------------------------------------------------
TERMS = ("frozen_weights", "trainable_weights", "gradients", "optimizer_state", "activations", "temporaries",
         "gradients_total")
COUNTS = ("flops", "all_reduce", "reduce_scatter", "all_gather", "zero3_gathered")  # extrapolated like the terms


@dataclasses.dataclass
class DryRun:
    """What one training step does on each rank: memory, FLOPs, communication (bytes)."""

    memory: MemoryEstimate
    world_size: int
    accumulation: int
    flops: int  # matmul/conv/attention FLOPs of forward + backward, one step, one rank
    all_reduce: int  # bytes all-reduced per step by one rank
    reduce_scatter: int
    all_gather: int
    engine: str  # "single process", "DDP" or "DeepSpeed ZeRO-N" (stand-in)
    seconds: float

    def report(self) -> str:
        """The memory breakdown, then one line each for memory, FLOPs and communication per rank."""
        w, m = self.world_size, self.memory
        ranks = "rank 0" if w == 1 else f"every rank 0..{w - 1} (identical)"
        lines = [m.report(), "",
                 f"dry run: {m.variant}, micro-batch {m.batch} x accumulation {self.accumulation} x world {w}, "
                 f"{self.engine}, fake CUDA tensors, process group '{FAKE_NCCL}' (CUDA only), {self.seconds:.1f} s",
                 f"per rank memory: {ranks}: peak {m.peak / GiB:.2f} GiB "
                 f"(max_memory_allocated {m.allocated / GiB:.2f} GiB)",
                 f"per rank FLOPs per step: {self.flops / 1e12:.3f} TFLOP "
                 "(forward + backward: matmul, conv, attention)",
                 f"per rank communication per step: all-reduce {format_bytes(self.all_reduce)}, "
                 f"reduce-scatter {format_bytes(self.reduce_scatter)}, all-gather {format_bytes(self.all_gather)}"]
        return "\n".join(lines)


def format_bytes(n: int) -> str:
    """Bytes in the largest unit that keeps a figure above 1 (B, KiB, MiB, GiB)."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _trace(cfg: Config, world: int, ds: dict | None, accumulation: int) -> tuple[dict[str, int], str, str]:
    """Two real training steps on fake CUDA in a fake world; terms and counts of the second; phase; engine."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..train.distributed import DDP_KWARGS
    from ..train.step import LocalRunner, train_step
    from .fake import ddp_wrap, fake_cuda, fake_world

    model = _build_meta(cfg)
    if ds is not None:
        model.to(ds_dtype(ds))  # DeepSpeed casts the whole module, frozen weights included
    with fake_world(world) as check, fake_cuda() as mode, check:
        _fakeify_(model, cfg.model.frozen_dtype)
        if ds is not None:
            engine = ZeroStandIn(model, cfg, ds, world, accumulation)
            wrapped, runner, optimizer = engine, ZeroRunner(engine), engine.optimizer
            offload = ", optimizer offloaded to CPU" if engine.host == "cpu" else ""
            name = f"DeepSpeed ZeRO-{engine.stage} (stand-in{offload})"
        else:
            optimizer = _make_optimizer(model, cfg, mode)
            runner = LocalRunner("cuda", cfg.train.precision, accumulation)
            optimizer = runner.prepare_optimizer(optimizer)
            wrapped = ddp_wrap(model, **DDP_KWARGS) if world > 1 else model
            name = "DDP" if world > 1 else "single process"
        trainable = [p for p in model.parameters() if p.requires_grad]
        batches = [make_batch(cfg, cfg.train.micro_batch) for _ in range(accumulation)]

        def step() -> None:
            train_step(wrapped, optimizer, batches, runner, trainable=trainable, grad_clip=cfg.train.grad_clip,
                       deepspeed=ds is not None, loss_fn=dense_loss, host_sync=False)

        # Step 1 creates the optimizer state and is where the FLOPs are counted (FlopCounterMode's
        # module hooks keep checkpointed blocks' recomputed activations alive: not in the measured step).
        flops = FlopCounterMode(display=False)
        with flops:
            step()
        check.traffic.reset()
        tracker = _frozen_safe_tracker()
        grads = [0]  # the most gradient bytes alive at once (all of them, after backward, on one device)

        def count_gradients(p: nn.Parameter) -> None:  # noqa: ARG001 - a post-accumulate-grad hook
            snap = next((v for d, v in tracker.get_tracker_snapshot().items() if d.type == "cuda"), {})
            grads[0] = max(grads[0], int(sum(v for k, v in snap.items() if getattr(k, "value", k) == "Gradient")))

        with _cuda_block_rounding(), warnings.catch_warnings():
            # MemTracker warns about optimizer-state entries that hold no tensor (None): nothing to count.
            warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass")
            extra = [engine.bucket, engine.grad_partition] if ds is not None else []
            tracker.track_external(model, getattr(optimizer, "optimizer", optimizer), *extra)
            hooks = [p.register_post_accumulate_grad_hook(count_gradients) for p in trainable] if world == 1 else []
            with tracker:
                step()  # the steady state: memory and traffic are measured here
            for h in hooks:
                h.remove()
        trainable_bytes = sum(round_block(p.numel() * p.element_size()) for p in trainable)
        adjust = _term_adjustments(model, trainable, trainable_bytes, world, engine if ds is not None else None, extra)
        phases = {}
        for phase, snap in tracker.phase_peaks.items():  # the terms at each phase's own peak
            get = {getattr(k, "value", k): int(v) for k, v in snap.items()}.get
            terms = {
                "frozen_weights": get("Parameter", 0) + get("Buffer", 0) - trainable_bytes,
                "trainable_weights": trainable_bytes,
                "gradients": get("Gradient", 0),
                "optimizer_state": get("Optstate", 0),
                "activations": get("Activation", 0) + get("Other", 0),  # "Other" = the batch
                "temporaries": get("Temp", 0),
                # World 1: measured (every gradient exists after backward); DDP's buckets hold them all.
                "gradients_total": grads[0] if world == 1 else trainable_bytes,
            }
            phases[phase] = adjust(terms)
        t = check.traffic
        counts = {"flops": int(flops.get_total_flops()), "all_reduce": t.all_reduce,
                  "reduce_scatter": t.reduce_scatter, "all_gather": t.all_gather,
                  "zero3_gathered": engine.gathered_working_set() if ds is not None and engine.stage == 3 else 0}
    return phases, counts, name


def _term_adjustments(model: nn.Module, trainable: list[nn.Parameter], trainable_bytes: int, world: int,
                      engine: ZeroStandIn | None, extra: list[torch.Tensor]) -> Any:
    """What MemTracker's categories miss for DDP and the ZeRO stand-in, as a function on the terms."""

    def adjust(terms: dict[str, int]) -> dict[str, int]:
        if engine is not None:
            bucket_bytes, master_bytes = engine.extra_bytes()
            terms["frozen_weights"] -= master_bytes  # the master partition is a parameter of the stand-in
            terms["trainable_weights"] += master_bytes
            terms["gradients"] += bucket_bytes
            terms["activations"] -= sum(round_block(t.nbytes) for t in extra if t.device.type == "cuda")
            terms["gradients_total"] = bucket_bytes
            if engine.stage == 3:  # partitioned: 1/world of each parameter above the persistence threshold
                for key, params in (("frozen_weights", [p for p in model.parameters() if not p.requires_grad]),
                                    ("trainable_weights", trainable)):
                    big = sum(round_block(p.numel() * p.element_size()) for p in params
                              if p.numel() > engine.persistence)
                    terms[key] -= big - math.ceil(big / world)
        elif world > 1:
            # gradient_as_bucket_view: DDP's buckets hold every gradient, allocated once and kept.
            terms["gradients"] = trainable_bytes
        return terms

    return adjust


def default_probes(cfg: Config) -> tuple[int, int] | None:
    """Probe depths for ``dry_run``: extrapolate deep models (L, g), trace shallow ones fully."""
    return (2, 4) if cfg.model.depth > 12 else None


def dry_run(cfg: Config, world_size: int = 1, ds: dict | None = None,
            probe_depths: tuple[int, int] | None = None) -> DryRun:
    """Run two training steps of ``cfg`` on fake CUDA as rank 0 of ``world_size`` ranks; measure the second.

    ``cfg.train.micro_batch`` is the per-rank micro-batch and ``cfg.train.global_batch`` must be a
    multiple of micro-batch x world size (its quotient is the accumulation). ``ds``: a DeepSpeed
    config (filled and checked as the loop does). ``probe_depths=(d0, d1)``: trace the model with
    d0 and d1 blocks instead of all of them and extrapolate linearly to the full depth: the blocks
    are identical, so the memory at the peak of each phase (forward, backward, optimizer step),
    the FLOPs and the bytes communicated are affine in the depth; each phase is extrapolated on
    its own and the largest is the peak. ~10x faster for ViT-g.
    """
    from ..train.distributed import accumulation_steps, check_run, fill_ds_config

    t0 = time.perf_counter()
    check_run(cfg, ds, "cuda")
    accumulation = accumulation_steps(cfg.train.global_batch, cfg.train.micro_batch, world_size)
    if ds is not None:
        ds = fill_ds_config(ds, cfg.train, world_size)
    depth = cfg.model.depth
    if probe_depths and max(probe_depths) < depth:
        d0, d1 = probe_depths
        probes = []
        for d in (d0, d1):
            c = copy.deepcopy(cfg)
            c.model.depth = d
            probes.append(_trace(c, world_size, ds, accumulation))
        (ph0, c0, engine), (ph1, c1, _) = probes
        lerp = lambda a, b: a + (b - a) * (depth - d0) // (d1 - d0)  # noqa: E731
        phases = {ph: {k: lerp(ph0[ph][k], ph1[ph][k]) for k in TERMS} for ph in ph0 if ph in ph1}
        counts = {k: lerp(c0[k], c1[k]) for k in COUNTS}
        note = f" (extrapolated from depths {d0} and {d1})"
    else:
        phases, counts, engine = _trace(cfg, world_size, ds, accumulation)
        note = ""
    # The peak is the largest of the phases' peaks (each affine in the depth: extrapolated separately).
    phase = max(phases, key=lambda ph: sum(phases[ph][k] for k in TERMS[:6]))
    values = {**phases[phase], **counts}
    m, t = cfg.model, cfg.train
    options = {
        "grad_checkpointing": m.grad_checkpointing, "frozen_dtype": m.frozen_dtype,
        "trainable_dtype": m.trainable_dtype, "precision": t.precision, "optimizer": t.optimizer,
        "attn_backend": m.attn_backend, "batch_subset_drop_path": m.batch_subset_drop_path and m.drop_path > 0.1,
    }
    seconds = time.perf_counter() - t0
    memory = MemoryEstimate(
        variant=cfg.variant, batch=t.micro_batch, options=options, **{k: values[k] for k in TERMS},
        modelled=_modelled_terms(cfg, t.micro_batch, sum(values[k] for k in TERMS[:6]), values["zero3_gathered"]),
        loss="dense_loss (= train.loss.lorat_loss, whose nonzero() fake tensors cannot trace)",
        seconds=seconds, peak_phase=phase + note)
    return DryRun(memory=memory, world_size=world_size, accumulation=accumulation, flops=values["flops"],
                  all_reduce=values["all_reduce"], reduce_scatter=values["reduce_scatter"],
                  all_gather=values["all_gather"], engine=engine, seconds=seconds)


def estimate(cfg: Config, probe_depths: tuple[int, int] | None = None) -> MemoryEstimate:
    """Predicted peak GPU memory of one training step of ``cfg`` on one GPU (the dry run's memory part)."""
    one = copy.deepcopy(cfg)
    one.train.global_batch = one.train.micro_batch  # one micro-batch per step
    return dry_run(one, 1, None, probe_depths).memory
