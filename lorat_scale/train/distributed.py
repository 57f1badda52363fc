"""How one global batch is spread over ranks and accumulation steps, the DeepSpeed config, run checks.

Global batch G = micro_batch * world_size * accumulation. Optimizer step s of an epoch covers the
pair indices [s*G, (s+1)*G) of that epoch; micro-step m of rank r takes the slice starting at
s*G + (m*world + r)*micro. Every pair of an epoch is used exactly once, by exactly one rank, and
the union over ranks of one step is the same whatever the world size: with the step-level loss
normaliser (train/loss.py) 1 and N processes compute the same update.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, TrainConfig

# DistributedDataParallel options of the loop (and of the dry run's DDP): gradients live in the
# communication buckets (no second copy).
DDP_KWARGS = {"gradient_as_bucket_view": True}

# DeepSpeed keys that the run's config decides; ds_configs/*.json set them to "auto".
DS_RUN_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "bf16.enabled",
    "fp16.enabled",
)


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Micro-batches per rank per optimizer step; the global batch must split evenly."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ConfigError(
            f"config key 'train.global_batch' must be a multiple of train.micro_batch * world size "
            f"= {micro_batch} * {world_size} = {per_step}; got {global_batch}"
        )
    return global_batch // per_step


def micro_batch_indices(step_in_epoch: int, global_batch: int, micro_batch: int, world_size: int,
                        rank: int) -> list[list[int]]:
    """Pair indices (within the epoch) of each micro-batch of ``rank`` at one optimizer step."""
    accum = accumulation_steps(global_batch, micro_batch, world_size)
    base = step_in_epoch * global_batch
    return [
        list(range(base + (m * world_size + rank) * micro_batch, base + (m * world_size + rank + 1) * micro_batch))
        for m in range(accum)
    ]


def _get(d: dict, dotted: str) -> Any:
    for k in dotted.split(".")[:-1]:
        d = d.get(k, {})
    return d.get(dotted.split(".")[-1], None)


def _set(d: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for k in parents:
        d = d.setdefault(k, {})
    d[leaf] = value


def read_ds_config(path: str | Path) -> dict:
    """A DeepSpeed JSON file as a dict; a missing, broken or non-object file raises one line naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--ds {path}: cannot read the DeepSpeed config ({e.strerror or e})") from None
    try:
        ds = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--ds {path}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); "
                          "expected a DeepSpeed config object such as ds_configs/zero2.json") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"--ds {path}: expected a JSON object ({{...}}) of DeepSpeed settings, "
                          f"got a JSON {type(ds).__name__}")
    return ds


def zero_stage(ds: dict | None) -> int:
    """The ZeRO stage of a DeepSpeed config (0 without DeepSpeed or without a zero_optimization section)."""
    return int(ds.get("zero_optimization", {}).get("stage", 0)) if ds else 0


def check_run(cfg: Config, ds: dict | None, device_type: str) -> None:
    """Refuse option combinations that would fail or train wrongly, before anything is built.

    ``ds``: the DeepSpeed config (None for DDP / one process); ``device_type``: "cuda" or "cpu".
    """
    m, t = cfg.model, cfg.train
    if t.precision == "fp16" and device_type != "cuda":
        # accelerate would silently run fp16 as fp32 on the CPU.
        raise ConfigError("train.precision=fp16 needs a CUDA GPU (fp16 autocast + loss scaling); "
                          "on CPU use bf16 or fp32")
    if m.trainable_dtype == "bf16" and ds is None:
        raise ConfigError(
            "model.trainable_dtype=bf16 would update bf16 weights with plain AdamW and no fp32 master copy: "
            "an update smaller than ~1/512 of a weight (~6e-5 for a LoRA weight of 0.02: the warm-up, the end of "
            "the cosine, all weight decay) rounds to zero. Keep model.trainable_dtype=fp32 (bf16 autocast still "
            "computes in bf16), or train with DeepSpeed (--ds), which keeps fp32 master weights")
    if ds is not None and zero_stage(ds) == 3 and m.frozen_dtype in ("int8", "nf4"):
        raise ConfigError(
            f"model.frozen_dtype={m.frozen_dtype} with ZeRO-3 (--ds {t.ds_config or 'config'}): ZeRO-3 partitions "
            "every weight across ranks and cannot partition bitsandbytes' quantized weights. Use ZeRO-2 "
            "(ds_configs/zero2.json) with int8/nf4, or model.frozen_dtype=bf16 with ZeRO-3")
    if t.track_every_epochs > 0 and not cfg.data.track_sources:
        raise ConfigError("train.track_every_epochs is set but data.track_sources is empty: give e.g. "
                          "data.track_sources=[got10k_val=/data/GOT-10k]")
    if t.track_every_epochs > 0 and ds is not None and zero_stage(ds) == 3:
        # ZeRO-3 partitions every weight: a forward needs every rank in lockstep, and ranks track
        # different sequences of different lengths.
        raise ConfigError("train.track_every_epochs with ZeRO-3: the ranks cannot run the tracker on their own "
                          "sequences; track the saved checkpoints with lorat-scale evaluate instead (or use ZeRO-2)")
    if ds is not None and t.optimizer == "adamw8bit":
        raise ConfigError("train.optimizer=adamw8bit with DeepSpeed: DeepSpeed keeps its own fp32 optimizer "
                          "partitions; use train.optimizer=adamw (or drop --ds)")


def fill_ds_config(ds: dict | str | Path, cfg: TrainConfig, world_size: int) -> dict:
    """DeepSpeed config with the run-decided values filled from ``cfg``; explicit disagreeing values raise.

    accelerate fills "auto" only partly (the micro batch only from a *prepared* DataLoader, which
    we do not use, and the clipping as a fixed 1.0), so the values are filled here instead.
    """
    if not isinstance(ds, dict):
        ds = read_ds_config(ds)
    ds = copy.deepcopy(ds)
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(f"DeepSpeed config must not define {key!r}: "
                              "lorat_scale builds AdamW and the schedule itself")
    accum = accumulation_steps(cfg.global_batch, cfg.micro_batch, world_size)
    want = {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": float(cfg.grad_clip),
        "bf16.enabled": cfg.precision == "bf16",
        "fp16.enabled": cfg.precision == "fp16",
    }
    for key, value in want.items():
        have = _get(ds, key)
        if have is not None and have != "auto" and have != value:
            raise ConfigError(
                f"DeepSpeed config sets {key}={have!r} but the run's config implies {value!r} "
                f"(set it to \"auto\" in the JSON, or change the train.* option)"
            )
        _set(ds, key, value)
    return ds
