"""Fake CUDA tensors and a fake world of any size on a CPU-only machine: the plumbing of the dry run.

``fake_cuda()`` enters torch's ``FakeTensorMode``: tensors made on "cuda" are fake CUDA tensors
(shape, dtype, device; no storage), and an op that mixes a CPU and a CUDA tensor raises
``FakeTensorDeviceMismatchError`` as on a GPU. Three things torch does not do by itself without
a GPU are added here, each as narrow as it can be:

* backward: torch's autograd engine asks the CUDA driver about the streams of CUDA tensors, which
  fails without a GPU ("hasPrimaryContext expects a valid device index"). Fake CUDA tensors are
  therefore made without a device override at the C++ level (there they report the meta device,
  which the engine runs on its CPU queue); Python, and FakeTensorMode's device checks, still see
  "cuda". Tensors the engine creates on that meta device are fake CUDA tensors too, and
  ``Tensor.to``/``.cuda``/``.is_cuda``, which decide from the C++ device, answer as on a GPU.
* CUDA autocast: ``torch.autocast("cuda")`` switches itself off without a GPU; here it is allowed
  (and ``torch.cuda.synchronize``, which bitsandbytes' optimizers call, is a no-op),
  and the inputs of the functions that CUDA autocast runs in lower precision (linear, conv, matmul
  family, scaled_dot_product_attention) and in fp32 (layer_norm, group_norm, softmax,
  BCE-with-logits) are cast as autocast's own kernels would (``_cuda_autocast_casts``).
* scaled_dot_product_attention picks the kernel CUDA would (flash attention for 16-bit inputs,
  memory-efficient attention for fp32), so its saved tensors are the GPU's, not the math path's.

``fake_world(world_size)`` starts a process group of that size in this process (rank 0) whose
backend covers CUDA only, as NCCL: a collective on a real CPU tensor fails with NCCL's own message,
and ``CollectiveCheck`` refuses fake CPU tensors (which fake tensor mode would otherwise pass) with
a message naming the tensor and the line that sent it, and counts the bytes of every collective.
"""
from __future__ import annotations

import contextlib
import dataclasses
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

FAKE_NCCL = "fake_nccl"  # the backend name of the fake world (CUDA only)


class CollectiveOnCPUError(RuntimeError):
    """A collective got a CPU tensor: NCCL, the backend of every GPU process group, refuses it."""


# ---------------------------------------------------------------------------------------------
# Fake CUDA
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _fake_cuda_tensors() -> Iterator[None]:
    """FakeTensors on cuda: no C++ device override (the autograd engine sees meta), meta -> cuda."""
    from torch._subclasses.fake_tensor import FakeTensor

    make_subclass = torch.Tensor._make_subclass
    normalize = FakeTensor.__dict__["_normalize_fake_device"]  # a staticmethod

    # The signature must stay make_subclass's own (torch._dynamo checks it when it is imported).
    def _make_subclass(cls: Any, data: torch.Tensor, requires_grad: bool = False, **kwargs: Any) -> Any:
        dev = kwargs.get("device_for_backend_keys")
        fake = isinstance(cls, type) and issubclass(cls, FakeTensor)
        if fake and dev is not None and torch.device(dev).type == "cuda":
            kwargs["dispatch_device"] = False
        return make_subclass(cls, data, requires_grad, **kwargs)

    def _normalize(device: Any) -> torch.device:
        d = normalize.__func__(device)
        return torch.device("cuda", 0) if d.type == "meta" else d

    # Tensor.to/.cuda/.is_cuda decide in C++ from the C++ device (meta here): restore their CUDA
    # meaning for fake CUDA tensors, so that moving a tensor to the device it is on is no copy.
    to = torch.Tensor.to

    def _to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(self, FakeTensor) and self.fake_device.type == "cuda":
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
            if device is not None and device.type == "cuda" and not kwargs.get("copy", False):
                if dtype is None or dtype == self.dtype:
                    return self if memory_format is None else to(self, memory_format=memory_format)
                return to(self, dtype=dtype, non_blocking=non_blocking, memory_format=memory_format or
                          torch.preserve_format)
        return to(self, *args, **kwargs)

    def _cuda(self: torch.Tensor, device: Any = None, non_blocking: bool = False, **kw: Any) -> torch.Tensor:
        return _to(self, device or "cuda", non_blocking=non_blocking)

    with _patched(FakeTensor, _normalize_fake_device=staticmethod(_normalize)), \
            _patched(torch.Tensor, _make_subclass=_make_subclass, to=_to, cuda=_cuda,
                     is_cuda=property(lambda self: self.device.type == "cuda")):
        yield


@contextlib.contextmanager
def _patched(owner: Any, **attrs: Any) -> Iterator[None]:
    """Set attributes of a class or module for the duration; restore (or remove) them after."""
    missing = object()
    saved = {name: owner.__dict__.get(name, missing) if isinstance(owner, type) else getattr(owner, name, missing)
             for name in attrs}
    for name, value in attrs.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


@contextlib.contextmanager
def _cuda_runtime_stubs() -> Iterator[None]:
    """Let ``torch.autocast("cuda", ...)`` switch on although no GPU is present; make a device sync a no-op.

    (bitsandbytes' optimizers synchronize the device after each step; fake tensors have nothing to wait for.)
    """
    import torch.cuda.amp.common as amp_common

    with _patched(amp_common, amp_definitely_not_available=lambda: False), \
            _patched(torch.cuda, is_bf16_supported=lambda *a, **k: True, synchronize=lambda *a, **k: None):
        yield


# What CUDA autocast casts, among the functions a training step calls: (module, name) of each.
_LOWER = [(F, "linear"), (F, "conv1d"), (F, "conv2d"), (F, "conv3d"), (torch, "conv2d"), (torch, "matmul"),
          (torch, "mm"), (torch, "bmm"), (torch, "addmm"), (torch, "baddbmm"), (torch.Tensor, "matmul"),
          (torch.Tensor, "__matmul__"), (torch.Tensor, "mm"), (torch.Tensor, "bmm")]
_FP32 = [(F, "layer_norm"), (F, "group_norm"), (F, "softmax"), (F, "log_softmax"),
         (F, "binary_cross_entropy_with_logits")]
_HALF = (torch.float16, torch.bfloat16, torch.float32)


@contextlib.contextmanager
def _cuda_autocast_casts() -> Iterator[None]:
    """CUDA autocast's casts for fake CUDA tensors (whose C++ device autocast's kernels do not match).

    The functions CUDA autocast runs in lower precision (linear, conv, matmul family,
    scaled_dot_product_attention) and in fp32 (layer_norm, group_norm, softmax, BCE-with-logits) are
    wrapped while the dry run lasts: their floating inputs are cast while
    ``torch.is_autocast_enabled("cuda")``, as autocast's kernels would. Wrapped functions, not a
    TorchFunctionMode, because the autograd engine does not carry function modes into backward, where
    checkpointing recomputes blocks under the autocast state it saved. autocast's weight-cast cache is
    not modelled: the cast weights are saved by the ops for backward anyway. scaled_dot_product_attention
    also goes to the kernel CUDA picks (see the module doc).
    """
    sdpa = F.scaled_dot_product_attention

    def wrap(fn: Any, low: bool) -> Any:
        def cast_then_call(*args: Any, **kwargs: Any) -> Any:
            if torch.is_autocast_enabled("cuda"):
                args, kwargs = _cast((args, kwargs), torch.get_autocast_dtype("cuda") if low else torch.float32)
            return fn(*args, **kwargs)

        return cast_then_call

    def cuda_sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        if torch.is_autocast_enabled("cuda"):
            args, kwargs = _cast((args, kwargs), torch.get_autocast_dtype("cuda"))
        return _cuda_sdpa(sdpa, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        for owner, name in (*_LOWER, *_FP32):
            stack.enter_context(_patched(owner, **{name: wrap(getattr(owner, name), (owner, name) in _LOWER)}))
        stack.enter_context(_patched(F, scaled_dot_product_attention=cuda_sdpa))
        yield


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of ``tree`` (nested tuples, lists, dicts) in ``dtype``."""
    if torch.is_tensor(tree):
        return tree.to(dtype) if tree.dtype in _HALF and tree.dtype != dtype else tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast(t, dtype) for t in tree)
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    return tree


def _cuda_sdpa(sdpa: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Any = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **kw: Any) -> torch.Tensor:
    """SDPA through the kernel CUDA selects: flash attention for fp16/bf16, memory-efficient for fp32."""
    if attn_mask is None and not kw and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
    if not kw:
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, attn_mask, False, dropout_p, is_causal, scale=scale)[0]
    return sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, **kw)


@contextlib.contextmanager
def fake_cuda() -> Iterator[Any]:
    """Fake CUDA tensors with working backward and CUDA autocast; yields the ``FakeTensorMode``."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with _fake_cuda_tensors(), _cuda_runtime_stubs(), _cuda_autocast_casts(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(CUDA is not available|TypedStorage).*")
        with FakeTensorMode(allow_non_fake_inputs=False) as mode:
            yield mode


# ---------------------------------------------------------------------------------------------
# Fake world
# ---------------------------------------------------------------------------------------------
def _create_fake_nccl(common_opts: Any, backend_opts: Any) -> Any:
    from torch._C._distributed_c10d import FakeProcessGroup

    return FakeProcessGroup._create_internal(common_opts.group_rank, common_opts.group_size, backend_opts)


@dataclasses.dataclass
class Traffic:
    """Bytes sent through collectives, per kind, and how many calls."""

    all_reduce: int = 0
    reduce_scatter: int = 0
    all_gather: int = 0
    broadcast: int = 0
    calls: int = 0

    def reset(self) -> None:
        """Zero every counter."""
        self.all_reduce = self.reduce_scatter = self.all_gather = self.broadcast = self.calls = 0


_KIND = {"allreduce": "all_reduce", "reduce_scatter": "reduce_scatter", "allgather": "all_gather",
         "broadcast": "broadcast"}


class CollectiveCheck(TorchDispatchMode):
    """Refuse CPU tensors in collectives (as NCCL does) and count the bytes of each collective."""

    def __init__(self) -> None:
        super().__init__()
        self.traffic = Traffic()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func.namespace == "c10d":
            tensors = [t for a in args[:2] for t in _flat(a) if torch.is_tensor(t)]
            for t in tensors:
                if t.device.type != "cuda":
                    raise CollectiveOnCPUError(_cpu_message(func, t))
            name = func._opname.strip("_")
            kind = next((v for k, v in _KIND.items() if name.startswith(k)), None)
            if kind is not None:
                # The buffer reduced: all-reduce/broadcast its tensors, reduce-scatter its input, all-gather its output.
                counted = args[1] if kind == "reduce_scatter" else args[0]
                nbytes = sum(t.nbytes for t in _flat(counted) if torch.is_tensor(t))
                setattr(self.traffic, kind, getattr(self.traffic, kind) + nbytes)
                self.traffic.calls += 1
        return func(*args, **(kwargs or {}))


def _flat(x: Any) -> list:
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flat(item)]
    return [x]


def _cpu_message(func: Any, t: torch.Tensor) -> str:
    """Which tensor went into which collective, and from which line (the innermost frame of our code)."""
    here = Path(__file__).resolve()
    frames = [f for f in traceback.extract_stack() if Path(f.filename).resolve() != here]
    ours = [f for f in frames if "lorat_scale" in f.filename] or frames
    f = ours[-1]
    where = f"{f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
    return (f"{func._opname} on a CPU tensor ({str(t.dtype).replace('torch.', '')} {list(t.shape)}, device {t.device}) "
            f"sent from {where}. NCCL, the backend of a GPU process group, refuses it (\"No backend type associated "
            f"with device type cpu\"): create or move that tensor on the training device")


@contextlib.contextmanager
def fake_world(world_size: int, rank: int = 0) -> Iterator[CollectiveCheck]:
    """A process group of ``world_size`` ranks in this process, CUDA-only like NCCL; yields the checker.

    The checker (a dispatch mode) must be entered by the caller inside ``fake_cuda()`` so that it
    sees the fake tensors; it is returned unentered.
    """
    from torch._C._distributed_c10d import FakeStore

    if dist.is_initialized():
        raise RuntimeError("a process group is initialised already: the dry run needs a process of its own")
    if not hasattr(dist.Backend, FAKE_NCCL.upper()):
        dist.Backend.register_backend(FAKE_NCCL, _create_fake_nccl, extended_api=True, devices=["cuda"])
    dist.init_process_group(backend=FAKE_NCCL, store=FakeStore(), rank=rank, world_size=world_size)
    try:
        yield CollectiveCheck()
    finally:
        dist.destroy_process_group()


def ddp_wrap(model: torch.nn.Module, **ddp_kwargs: Any) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` on fake CUDA tensors in the fake world.

    Three things of DDP cannot run on tensors without data and are left out or replaced: the check
    that every rank holds the same parameter shapes and the rebuild of the buckets in gradient
    order after the first step (both exchange real index tensors between ranks; one process
    simulates every rank here; a rebuild regroups the same bytes), and the default all-reduce hook,
    whose future carries no tensor under fake tensor mode: an equivalent hook (divide by the world
    size, all-reduce the bucket) takes its place, so the all-reduce of every bucket runs and is counted.
    """
    import torch.nn.parallel.distributed as ddp_module

    saved = ddp_module._verify_param_shape_across_processes
    ddp_module._verify_param_shape_across_processes = lambda *a, **k: None
    try:
        ddp = ddp_module.DistributedDataParallel(model, device_ids=[0], **ddp_kwargs)
    finally:
        ddp_module._verify_param_shape_across_processes = saved

    # No annotations: DDP checks them, and this module's postponed annotations would be strings.
    def allreduce_hook(state, bucket):  # noqa: ANN001, ANN202
        buf = bucket.buffer()
        buf.div_(dist.get_world_size())
        dist.all_reduce(buf)
        fut: torch.futures.Future = torch.futures.Future()
        fut.set_result(buf)
        return fut

    ddp.register_comm_hook(None, allreduce_hook)
    ddp.reducer = _NoRebuild(ddp.reducer)
    return ddp


class _NoRebuild:
    """A DDP reducer whose bucket rebuild (after the first step) is skipped; everything else is its own."""

    def __init__(self, reducer: Any) -> None:
        self._reducer = reducer

    def _rebuild_buckets(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reducer, name)
