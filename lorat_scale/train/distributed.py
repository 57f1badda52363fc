"""How one global batch is spread over ranks and accumulation steps, and the DeepSpeed config fill.

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

from ..config import ConfigError, TrainConfig

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


def _get(d: dict, dotted: str):
    for k in dotted.split(".")[:-1]:
        d = d.get(k, {})
    return d.get(dotted.split(".")[-1], None)


def _set(d: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for k in parents:
        d = d.setdefault(k, {})
    d[leaf] = value


def fill_ds_config(ds: dict | str | Path, cfg: TrainConfig, world_size: int) -> dict:
    """DeepSpeed config with the run-decided values filled from ``cfg``; explicit disagreeing values raise.

    accelerate fills "auto" only partly (the micro batch only from a *prepared* DataLoader, which
    we do not use, and the clipping as a fixed 1.0), so the values are filled here instead.
    """
    if not isinstance(ds, dict):
        ds = json.loads(Path(ds).read_text())
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
