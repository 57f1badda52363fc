"""One LoRAT training step, computed in one place (pytracking's "actor", plus the update).

    micro-batches (host) -> device -> positives normaliser over every rank and micro-batch
      -> per micro-batch: forward (autocast), loss (fp32), backward (gradients accumulate)
      -> one all-reduce of [loss, bce, giou, non-finite count, stop requests] -> skip or: clip -> optimizer step

The training loop (``lorat_scale.train.loop``) runs it through accelerate's ``Accelerator``;
the dry run and the memory estimate (``lorat_scale.memory.estimate``) run it on fake CUDA tensors
in a simulated world, and the benchmarks on one device, both through ``LocalRunner`` below. The
"runner" is whatever provides accelerate's names for the distributed parts of a step:
``device``, ``autocast()``, ``accumulate(model)``, ``backward(loss)``, ``clip_grad_norm_``,
``reduce(tensor, "sum")``.

Non-finite losses. Without DeepSpeed every micro-batch goes through backward, and one flag summed
over all ranks (in the same all-reduce as the logged losses) decides whether the step updates:
every rank skips alike. Under DeepSpeed the engine updates inside the last ``backward``, so each
micro-batch is checked first (one small all-reduce each) and a non-finite one is replaced by a
zero-gradient stand-in; the finite micro-batches of that step are applied.

Stop requests (SIGTERM/SIGUSR1 on any rank, the training loop's ``stop``) ride in the same all-reduce, so
every rank learns at the same step that some rank was asked to stop, at no extra collective.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .loss import lorat_loss, positives_normalizer

LossFn = Callable[[dict[str, torch.Tensor], dict[str, Any], Any], dict[str, torch.Tensor]]


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor on ``device`` (non-blocking from pinned memory); other values as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclasses.dataclass
class StepResult:
    """What one step did. ``totals`` = global [loss, loss_bce, loss_giou] means, the non-finite count and the
    number of ranks asked to stop."""

    totals: torch.Tensor  # on the device; the loop reads it once per step (one host sync)
    grad_norm: torch.Tensor | float | None  # None when the step was skipped or clipping is off
    parts: list[dict[str, torch.Tensor]]  # this rank's loss parts per micro-batch (for the non-finite dump)
    updated: bool  # whether the optimizer stepped

    def row(self) -> dict[str, Any]:
        """Plain numbers (one host sync): loss, loss_bce, loss_giou, nonfinite, stop, grad_norm (if any)."""
        values = self.totals
        if torch.is_tensor(self.grad_norm):
            values = torch.cat([values, self.grad_norm.detach().reshape(1).to(values)])
        loss, bce, giou, bad, stop, *norm = values.tolist()
        row = {"loss": loss, "loss_bce": bce, "loss_giou": giou, "nonfinite": int(bad), "stop": int(stop)}
        if self.grad_norm is not None:
            row["grad_norm"] = norm[0] if norm else float(self.grad_norm)
        return row


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict], runner: Any, *,
               trainable: list[nn.Parameter], grad_clip: float, deepspeed: bool = False,
               loss_fn: LossFn | None = None, host_sync: bool = True, stop: bool = False) -> StepResult:
    """One optimizer step over this rank's micro-batches ``batches`` (host tensors).

    ``stop``: this rank was asked to stop (a signal); summed over the ranks into ``totals[4]``.
    ``deepspeed``: ``model`` is a DeepSpeed engine (it clips and steps inside the last backward).
    ``host_sync=False`` (the dry run, whose fake tensors hold no values) traces the finite path
    without reading any value back; every collective still runs. ``loss_fn``: default
    ``lorat_loss``; the model runs under the runner's autocast, the loss in fp32 outside it.
    """
    loss_fn = loss_fn or lorat_loss
    device = runner.device
    batches = [to_device(b, device) for b in batches]
    accum = len(batches)
    # The normaliser is known before any forward (positive maps come with the data); its count is
    # all-reduced, so it must be a device tensor (NCCL has no CPU backend).
    n_pos = positives_normalizer([b["positive_map"] for b in batches])
    # loss, bce, giou (this rank's micro-batches), non-finite count, stop request
    stats = torch.zeros(5, device=device)
    if stop:
        stats[4] = 1.0
    parts = []
    for b in batches:
        with runner.accumulate(model):
            with runner.autocast():
                out = model(b["z"], b["x"], b["z_feat_mask"])
            res = loss_fn(out, b, n_pos)
            loss = res["loss"]
            bad = (~torch.isfinite(loss.detach())).float()
            if deepspeed:  # the engine applies the update inside backward: check this micro-batch first
                anywhere = runner.reduce(bad.clone(), "sum")
                if host_sync and anywhere.item() > 0:
                    # A zero-gradient stand-in keeps every rank's engine hooks and counters in step.
                    loss = sum(p.sum() for p in trainable) * 0.0
            runner.backward(loss)
            stats[:4] += torch.stack([res["loss"].detach(), res["loss_bce"].detach(), res["loss_giou"].detach(), bad])
            parts.append({k: res[k].detach() for k in ("loss", "loss_bce", "loss_giou", "num_positives")})
    totals = runner.reduce(stats, "sum")
    totals = torch.cat([totals[:3] / (accum * runner.num_processes), totals[3:]])  # means; the counts stay sums
    if deepspeed:  # stepped already: the engine's own norm (accelerate's clip_grad_norm_ may return None)
        return StepResult(totals, model.get_global_grad_norm(), parts, updated=True)
    if host_sync and totals[3].item() > 0:
        optimizer.zero_grad(set_to_none=True)  # no update on any rank
        return StepResult(totals, None, parts, updated=False)
    grad_norm = runner.clip_grad_norm_(trainable, grad_clip) if grad_clip > 0 else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(totals, grad_norm, parts, updated=True)


class LocalRunner:
    """accelerate's step interface for plain torch: one process, or one rank of a DDP model.

    Why not an ``Accelerator``: the dry run simulates one rank of a world of any size inside one
    process, on fake CUDA tensors, which accelerate cannot represent; the benchmarks use this too so
    that they time exactly what the dry run traces. Mixed precision as accelerate does it: autocast
    around the forward (``train_step`` computes the loss in fp32 outside it), fp16 with a
    ``GradScaler`` (``prepare_optimizer``).
    """

    def __init__(self, device: torch.device | str, precision: str = "fp32", accumulation_steps: int = 1) -> None:
        self.device = torch.device(device)
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.accumulation_steps = accumulation_steps
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self._micro = 0  # micro-batches seen: the last of each step synchronises DDP gradients

    @property
    def num_processes(self) -> int:
        """World size of the default process group (1 without one)."""
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the training precision on this device type (nothing for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module) -> Iterator[None]:
        """Gradient accumulation: DDP synchronises only on the last micro-batch of a step."""
        self._micro += 1
        last = self._micro % self.accumulation_steps == 0
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the loss divided by the accumulation steps (scaled under fp16)."""
        loss = loss / self.accumulation_steps
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Global gradient norm, clipped to ``max_norm`` (after unscaling under fp16)."""
        if self.scaler is not None:
            self.scaler.unscale_(self._optimizer)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Sum (or mean) over the ranks of the default process group."""
        if self.num_processes > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
            if reduction == "mean":
                tensor = tensor / self.num_processes
        return tensor

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer, stepping through the GradScaler under fp16 (as accelerate's wrapper does)."""
        self._optimizer = optimizer
        if self.scaler is None:
            return optimizer
        scaler = self.scaler

        class _Scaled:
            param_groups = optimizer.param_groups
            state = optimizer.state

            def step(self) -> None:
                scaler.step(optimizer)
                scaler.update()

            def zero_grad(self, set_to_none: bool = True) -> None:
                optimizer.zero_grad(set_to_none=set_to_none)

        return _Scaled()
