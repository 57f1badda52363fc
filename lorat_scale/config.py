"""One typed configuration for lorat_scale: model, data, training and tracking.

Every option is documented where it is defined. Presets exist for each LoRAT variant
(S/B/L/g x 224/378); any field can be overridden from the command line with a dotted key:

    lorat-scale train --variant L-224 train.lr=5e-5 model.grad_checkpointing=true

Unknown keys and values of the wrong type raise a ``ConfigError`` that names the key.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key."""


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """The LoRAT network: DINOv2 ViT backbone + LoRA + token-type table + MLP head."""

    # Architecture (filled by the variant preset; change only for custom/tiny models).
    embed_dim: int = 384  # ViT width C
    depth: int = 12  # number of transformer blocks
    num_heads: int = 6  # attention heads
    ffn: Literal["gelu", "swiglu"] = "gelu"  # "swiglu" = DINOv2-g packed SwiGLU (w12/w3)
    ffn_hidden: int = 0  # hidden width of the FFN; 0 = 4*C (gelu) or the DINOv2 SwiGLU rule
    patch_size: int = 14  # ViT patch size (stride of the feature maps)
    template_size: int = 112  # template crop side in pixels (112 for *-224, 196 for *-378)
    search_size: int = 224  # search crop side in pixels (224 or 378)
    pretrain_grid: int = 37  # side of the pretrained position table (DINOv2: 518/14 = 37)
    layerscale: bool = True  # DINOv2 blocks carry LayerScale gammas
    drop_path: float = 0.0  # stochastic depth rate (paper: 0.1 for L, 0.4 for g)
    # DINOv2 computes residual branches on a random batch subset when drop_path > 0.1
    # ("batch-subset" stochastic depth; saves compute and memory for g). Off = per-sample DropPath.
    batch_subset_drop_path: bool = True

    # LoRA (applied with peft to q, k, v, proj and both FFN matrices of every block).
    lora_r: int = 64  # rank
    lora_alpha: float = 64.0  # scaling = alpha / r (or alpha / sqrt(r) with rslora)
    lora_dropout: float = 0.0  # dropout on the LoRA input
    lora_init: Literal["trunc_normal", "peft", "gaussian"] = "trunc_normal"
    # trunc_normal: LoRAT's "bert" init, trunc_normal(std 0.02) on both A and B;
    # peft: peft's default (kaiming-uniform A, zero B); gaussian: normal(1/r) A, zero B.
    use_rslora: bool = False  # rank-stabilised scaling alpha/sqrt(r)

    # Memory hooks.
    grad_checkpointing: bool = False  # recompute each block in backward (non-reentrant, RNG-preserving)
    attn_backend: Literal["sdpa", "xformers", "math"] = "sdpa"  # xformers: CUDA only
    frozen_dtype: Literal["fp32", "bf16", "fp16", "int8", "nf4"] = "fp32"  # storage of frozen weights
    trainable_dtype: Literal["fp32", "bf16"] = "fp32"  # dtype of LoRA/type-table/head params

    # Weights.
    backbone_weights: str = ""  # Meta .pth, timm/safetensors file, "timm:<name>" or "" (random)
    init_seed: int = 42  # seed for the trainable parameters' initialisation


# (embed_dim, depth, num_heads, ffn, drop_path) for each DINOv2 size.
BACKBONES: dict[str, tuple[int, int, int, str, float]] = {
    "S": (384, 12, 6, "gelu", 0.0),
    "B": (768, 12, 12, "gelu", 0.0),
    "L": (1024, 24, 16, "gelu", 0.1),
    "g": (1536, 40, 24, "swiglu", 0.4),
}
# (template_size, search_size, search_area_factor) for each input size.
RESOLUTIONS: dict[int, tuple[int, int, float]] = {224: (112, 224, 4.0), 378: (196, 378, 5.0)}
VARIANTS = [f"{s}-{r}" for s in BACKBONES for r in RESOLUTIONS]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Training data: sources, sampling, crops and augmentation (lorat_spec.md section 4)."""

    # Sources: comma-free list of "name=path" entries or shard URL patterns (see README).
    train_sources: list[str] = field(default_factory=list)
    val_sources: list[str] = field(default_factory=list)
    # The periodic tracking check (train.track_every_epochs): "benchmark[:seq+seq]=root" entries with a
    # benchmark of lorat-scale evaluate (got10k_val, lasot, otb, ...), e.g. got10k_val=/data/GOT-10k or
    # lasot:airplane-1+bird-2=/data/LaSOT (only the named sequences).
    track_sources: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # per-source sampling weight (default equal)
    pairs_per_epoch: int = 131072  # training pairs per epoch (LoRAT: 131,072)
    val_pairs_per_epoch: int = 4096  # validation pairs (GOT-10k val in LoRAT)
    max_frame_gap: int = 100  # search frame within +-N frames of the template frame
    template_area_factor: float = 2.0  # SiamFC context factor of the template crop
    search_area_factor: float = 4.0  # 4 for *-224, 5 for *-378
    scale_jitter: float = 0.25  # sigma of the log-normal per-axis search scale jitter
    translate_jitter: float = 3.0  # translation jitter in multiples of the mean object side
    min_object_size: float = 10.0  # min object side (px) left in the search crop
    crop_retries: int = 12  # jitter retries before the pair is re-sampled
    color_jitter: float = 0.4  # brightness/contrast/saturation strength (no hue)
    flip_prob: float = 0.5  # independent horizontal flip probability per image
    num_workers: int = 4  # loader processes per rank
    shuffle_buffer: int = 2000  # webdataset shuffle buffer (samples)
    # How ``shards=`` sources are read (docs/DATA.md). "random": only the frames a pair uses, by byte range
    # (local/parallel file systems: pread; http(s) URLs: range requests); pairs identical to the raw folders'.
    # "stream": whole records in shard order (storage without random access; needs shards written with
    # --margin >= max_frame_gap and at least ranks x num_workers shards).
    shard_access: Literal["random", "stream"] = "random"
    verify_frames: bool = True  # random access: check each frame read against its crc32 in the index (~25 us/100 kB)
    # Decode JPEGs at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling) when the crop shrinks the frame at least that
    # much. Faster on large frames, not bit-exact (scripts/bench_data.py prints the largest pixel difference).
    reduced_decode: bool = False
    # Reading shards over the network or a parallel file system: retries of a failed read (>= 0), the first
    # backoff in seconds (> 0; doubles per retry, capped at 30 s) and the connect/read timeout in seconds (> 0).
    io_retries: int = 5
    io_backoff: float = 0.5
    io_timeout: float = 30.0
    # Shard stream (lorat_scale/data/stream.py): its items are whole sequence windows holding up to
    # ~400 frames of JPEG bytes (tens of MB), so its shuffle buffer is counted in windows and small;
    # records are also shuffled across shards when written.
    stream_shuffle_buffer: int = 16
    # Pairs streamed from shards (lorat_scale/data/stream_pairs.py): mean pairs drawn per record visit
    # (fewer bytes read per pair vs. more correlated pairs; docs/DATA.md), and records held open per
    # source in each loader lane (pairs of one record spread over more batches).
    stream_pairs_per_record: float = 4.0
    stream_open_records: int = 4
    check_images: bool = True  # stream: reject truncated/non-image frame bytes (header + end marker; no decode)
    # Bad data: a frame failing the strict decode or of another size than its sequence, a bad box, a
    # truncated shard, and the readers' problems (malformed lines, missing or unreadable frames).
    # "skip": left out, counted and logged with its file; "raise": stop at the first, naming it.
    on_bad_sample: Literal["skip", "raise"] = "skip"
    seed: int = 0  # the pair stream is a function of (seed, epoch, position)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Optimisation recipe (lorat_spec.md section 4.4); defaults are the paper's."""

    epochs: int = 170  # 100 for the GOT-10k-only protocol
    global_batch: int = 128  # summed over ranks and accumulation steps
    micro_batch: int = 16  # per rank per forward; accumulation = global / (micro * world)
    lr: float = 1e-4  # AdamW peak lr (the paper's, at global batch 128; see lr_scaling)
    # "none": peak = lr whatever the global batch (the paper); "linear": lr * global_batch /
    # lr_reference_batch (linear scaling rule). See lorat_scale/train/optim.py.
    lr_scaling: Literal["none", "linear"] = "none"
    lr_reference_batch: int = 128  # global batch at which ``lr`` is the peak under linear scaling
    min_lr: float = 1e-6  # cosine floor
    warmup_epochs: float = 2.0  # linear warm-up from warmup_lr
    warmup_lr: float = 1e-7
    weight_decay: float = 0.1  # not applied to 1-D params and embeddings
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit: bitsandbytes, changes numerics
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"  # fp16: CUDA only (loss scaling)
    compile: bool = False  # torch.compile the training model
    # A non-finite loss (on any rank): "stop" (the paper's NaN guard) writes nonfinite_step_N/ (the
    # batch's pair keys, the loss parts, the trainable weights) to the run directory and stops;
    # "skip" drops the update and stops only after train.max_bad_steps skipped steps in a row.
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_bad_steps: int = 10  # with on_nonfinite=skip: consecutive skipped steps before the run stops
    output_dir: str = "runs/default"
    save_every: int = 1000  # steps between checkpoints
    keep_checkpoints: int = 3
    log_every: int = 10
    val_every: int = 1000  # steps between validation-loss runs (0 = off)
    max_steps: int = 0  # stop after N optimizer steps (0 = epochs * steps_per_epoch)
    seed: int = 0
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"  # experiment logger (accelerate's log_with)
    wandb_project: str = "lorat_scale"  # used when log_with = "wandb"
    ds_config: str = ""  # DeepSpeed JSON (lorat-scale train --ds); "" = DDP / single process
    val_batches: int = 0  # micro-batches per rank per validation run (0 = all val_pairs_per_epoch)
    # Tracking check: the current weights track data.track_sources every N epochs (fractions allowed) and
    # at the end; AUC / AO / ... go to the log and metrics.jsonl (the paper: GOT-10k val every 10 epochs).
    # 0 = off. Ranks split the sequences; the first N sequences / frames per sequence (0 = all) bound the cost.
    track_every_epochs: float = 0.0
    track_max_sequences: int = 0
    track_max_frames: int = 0
    track_batch: int = 32  # sequences advanced together in one forward (the reference's periodic test: 32)
    log_pairs: bool = False  # write each rank's pair indices/keys per step to pairs_rank{r}.jsonl (debug, tests)


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------
@dataclass
class TrackConfig:
    """Inference settings (lorat_spec.md section 5)."""

    window_penalty: float = 0.45  # Hann-window blend weight
    search_area_factor: float = 4.0  # 4 for *-224, 5 for *-378
    template_area_factor: float = 2.0
    min_box_size: float = 10.0  # previous box w/h raised to at least this before cropping
    # Autocast dtype of the model forward (post-processing always runs in fp32). The reference
    # evaluates under fp16 autocast on GPU; fp32 reproduces the golden files exactly.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the merged model
    device: str = "auto"  # "auto" = cuda if available else cpu; or "cpu", "cuda", "cuda:1", ...


@dataclass
class Config:
    """The whole run: model + data + train + track."""

    variant: str = "S-224"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Pretty JSON of the resolved configuration."""
        return json.dumps(self.to_dict(), indent=2)


def get_preset(variant: str) -> Config:
    """The configuration of a LoRAT variant such as ``"L-224"`` or ``"g-378"``."""
    try:
        size, res = variant.split("-")
        dim, depth, heads, ffn, dp = BACKBONES[size]
        tz, tx, factor = RESOLUTIONS[int(res)]
    except (ValueError, KeyError):
        raise ConfigError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}") from None
    cfg = Config(variant=variant)
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads, m.ffn, m.drop_path = dim, depth, heads, ffn, dp
    m.template_size, m.search_size = tz, tx
    cfg.data.search_area_factor = factor
    cfg.track.search_area_factor = factor
    return cfg


def _parse_value(key: str, raw: str, typ: Any) -> Any:
    """Parse a command-line string into ``typ``; raise ConfigError naming ``key`` on failure."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    try:
        if typ is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is str:
            return raw
        if origin is Literal:
            if raw not in args:
                raise ConfigError(f"config key {key!r}: {raw!r} is not one of {list(args)}")
            return raw
        if origin in (list, tuple):
            items = [s for s in raw.strip("[]()").split(",") if s.strip()] if raw.strip("[]()") else []
            if origin is tuple:
                return tuple(_parse_value(key, s.strip(), a) for s, a in zip(items, args, strict=True))
            return [_parse_value(key, s.strip(), args[0]) for s in items]
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"config key {key!r}: cannot read {raw!r} as {getattr(typ, '__name__', typ)}") from None
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


# Keys that were renamed: the error names the new one.
RENAMED = {"train.tracker": "train.log_with"}


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides in place; unknown keys raise ConfigError."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        if key in RENAMED:
            raise ConfigError(f"config key {key!r} was renamed {RENAMED[key]!r}: use {RENAMED[key]}={raw}")
        node: Any = cfg
        parts = key.split(".")
        for i, name in enumerate(parts):
            hints = typing.get_type_hints(type(node))
            if name not in hints:
                where = ".".join(parts[:i]) or "config"
                valid = ", ".join(sorted(hints))
                raise ConfigError(f"unknown config key {key!r}: {where} has no field {name!r} (fields: {valid})")
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(hints[name]):
                    raise ConfigError(f"config key {key!r} is a section; set one of its fields")
                setattr(node, name, _parse_value(key, raw, hints[name]))
            else:
                node = getattr(node, name)
                if not dataclasses.is_dataclass(node):
                    raise ConfigError(f"config key {key!r}: {'.'.join(parts[: i + 1])} is not a section")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Check value ranges that types cannot express; raise ConfigError naming the key."""
    m = cfg.model
    checks = [
        ("model.embed_dim", m.embed_dim % m.num_heads == 0, "divisible by model.num_heads"),
        ("model.template_size", m.template_size % m.patch_size == 0, "a multiple of model.patch_size"),
        ("model.search_size", m.search_size % m.patch_size == 0, "a multiple of model.patch_size"),
        ("model.template_size", m.template_size <= m.search_size, "<= model.search_size"),
        ("model.lora_r", m.lora_r >= 0, ">= 0"),
        ("model.drop_path", 0.0 <= m.drop_path < 1.0, "in [0, 1)"),
        ("model.lora_dropout", 0.0 <= m.lora_dropout < 1.0, "in [0, 1)"),
        ("train.global_batch", cfg.train.global_batch >= 1, ">= 1"),
        ("train.micro_batch", cfg.train.micro_batch >= 1, ">= 1"),
        ("train.lr", cfg.train.lr > 0, "> 0"),
        ("train.track_every_epochs", cfg.train.track_every_epochs >= 0, ">= 0"),
        ("train.track_max_sequences", cfg.train.track_max_sequences >= 0, ">= 0"),
        ("train.track_max_frames", cfg.train.track_max_frames >= 0, ">= 0"),
        ("train.track_batch", cfg.train.track_batch >= 1, ">= 1"),
        ("track.window_penalty", 0.0 <= cfg.track.window_penalty <= 1.0, "in [0, 1]"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} must be {expected}")


def load_config(variant: str, overrides: list[str] | None = None) -> Config:
    """Preset for ``variant`` with dotted ``overrides`` applied and validated."""
    cfg = get_preset(variant)
    apply_overrides(cfg, overrides or [])
    return cfg
