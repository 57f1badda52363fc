"""One typed configuration for lorat_scale: model, data, training and tracking.

Every option is documented where it is defined. Presets exist for each LoRAT variant
(S/B/L/g x 224/378); any field can be overridden from the command line with a dotted key:

    lorat-scale train --variant L-224 train.lr=5e-5 model.grad_checkpointing=true

Every field declares its valid range where it is defined, as an ``Annotated`` type with annotated-types'
vocabulary (``Ge(1)``, ``Interval(ge=0, lt=1)``, ...; the aliases below); ``validate`` checks each field
against it, and the rules that tie fields together (``RULES``), for presets, dotted overrides, a run's
``config.json`` (``read_config``) and checkpoint metadata alike. Unknown keys, values of the wrong type and
values outside their range raise a ``ConfigError`` that names the key, the value and what was expected.
``lorat-scale config`` prints every key with its value and range.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, Le, Lt, MinLen, Predicate


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the key."""


def _non_blank(s: str) -> bool:
    """a non-empty path"""
    return bool(s.strip())


def _device_name(s: str) -> bool:
    """"auto" or a torch device such as cpu, cuda, cuda:1"""
    if s == "auto":
        return True
    import torch  # only when a device other than the default is set

    try:
        torch.device(s)
    except (RuntimeError, ValueError):
        return False
    return True


# Ranges used by many fields (a float field must also be finite: NaN and inf are always refused).
Count = Annotated[int, Ge(1)]  # a size or count of at least 1
Count0 = Annotated[int, Ge(0)]  # a count where 0 has a meaning given at the field (off, auto, all)
Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]
Probability = Annotated[float, Interval(ge=0, le=1)]
Rate = Annotated[float, Interval(ge=0, lt=1)]  # a dropout-like rate: 1 would drop everything
# numpy seeds must be < 2**32; the loop adds the rank and the epoch, so leave room for them.
Seed = Annotated[int, Interval(ge=0, lt=2**31)]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """The LoRAT network: DINOv2 ViT backbone + LoRA + token-type table + MLP head."""

    # Architecture (filled by the variant preset; change only for custom/tiny models).
    embed_dim: Count = 384  # ViT width C
    depth: Count = 12  # number of transformer blocks
    num_heads: Count = 6  # attention heads
    ffn: Literal["gelu", "swiglu"] = "gelu"  # "swiglu" = DINOv2-g packed SwiGLU (w12/w3)
    ffn_hidden: Count0 = 0  # hidden width of the FFN; 0 = 4*C (gelu) or the DINOv2 SwiGLU rule
    patch_size: Count = 14  # ViT patch size (stride of the feature maps)
    template_size: Count = 112  # template crop side in pixels (112 for *-224, 196 for *-378)
    search_size: Count = 224  # search crop side in pixels (224 or 378)
    pretrain_grid: Count = 37  # side of the pretrained position table (DINOv2: 518/14 = 37)
    layerscale: bool = True  # DINOv2 blocks carry LayerScale gammas
    drop_path: Rate = 0.0  # stochastic depth rate (paper: 0.1 for L, 0.4 for g)
    # DINOv2 computes residual branches on a random batch subset when drop_path > 0.1
    # ("batch-subset" stochastic depth; saves compute and memory for g). Off = per-sample DropPath.
    batch_subset_drop_path: bool = True

    # LoRA (applied with peft to q, k, v, proj and both FFN matrices of every block).
    lora_r: Count = 64  # rank
    lora_alpha: Positive = 64.0  # scaling = alpha / r (or alpha / sqrt(r) with rslora)
    lora_dropout: Rate = 0.0  # dropout on the LoRA input
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
    init_seed: Seed = 42  # seed for the trainable parameters' initialisation


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


def _known_variant(v: str) -> bool:
    """one of S-224, S-378, B-224, B-378, L-224, L-378, g-224, g-378"""
    return v in VARIANTS


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Training data: sources, sampling, crops and augmentation; defaults are the paper's."""

    # Sources: comma-free list of "name=path" entries or shard URL patterns (see README).
    train_sources: list[str] = field(default_factory=list)
    val_sources: list[str] = field(default_factory=list)
    # The periodic tracking check (train.track_every_epochs): "benchmark[:seq+seq]=root" entries with a
    # benchmark of lorat-scale evaluate (got10k_val, lasot, otb, ...), e.g. got10k_val=/data/GOT-10k or
    # lasot:airplane-1+bird-2=/data/LaSOT (only the named sequences).
    track_sources: list[str] = field(default_factory=list)
    weights: list[NonNegative] = field(default_factory=list)  # per-source sampling weight (default equal)
    pairs_per_epoch: Count = 131072  # training pairs per epoch (LoRAT: 131,072)
    val_pairs_per_epoch: Count = 4096  # validation pairs (GOT-10k val in LoRAT)
    max_frame_gap: Count = 100  # search frame within +-N frames of the template frame
    template_area_factor: Positive = 2.0  # SiamFC context factor of the template crop
    search_area_factor: Positive = 4.0  # 4 for *-224, 5 for *-378
    scale_jitter: NonNegative = 0.25  # sigma of the log-normal per-axis search scale jitter
    translate_jitter: NonNegative = 3.0  # translation jitter in multiples of the mean object side
    min_object_size: NonNegative = 10.0  # min object side (px) left in the search crop
    crop_retries: Count = 12  # jitter retries before the pair is re-sampled
    color_jitter: NonNegative = 0.4  # brightness/contrast/saturation strength (no hue)
    flip_prob: Probability = 0.5  # independent horizontal flip probability per image
    num_workers: Count0 = 4  # loader processes per rank
    # How ``shards=`` sources are read (docs/DATA.md). "random": only the frames a pair uses, by byte range
    # (local/parallel file systems: pread; http(s) URLs: range requests); pairs identical to the raw folders'.
    # "stream": whole records in shard order (storage without random access; needs shards written with
    # --margin >= max_frame_gap and at least ranks x num_workers shards).
    shard_access: Literal["random", "stream"] = "random"
    verify_frames: bool = True  # random access: check each frame read against its crc32 in the index (~25 us/100 kB)
    # Decode JPEGs at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling) when the crop shrinks the frame at least that
    # much. Faster on large frames, not bit-exact (scripts/bench_data.py prints the largest pixel difference).
    reduced_decode: bool = False
    # Decode only the rows and columns of a JPEG that its crops read (libjpeg-turbo partial decoding): the same
    # pixels as the full decode, bit for bit. Crops that need padding (the frame's mean colour) decode the whole
    # frame; without the decoder (decode.region_decoding() says why) every frame is decoded whole.
    region_decode: bool = True
    # libjpeg-turbo's fast integer IDCT and fast chroma upsampling for frames decoded whole or reduced (region
    # decodes stay accurate). Not bit-exact (scripts/bench_data.py prints the largest pixel difference).
    fast_jpeg: bool = False
    # Reading shards over the network or a parallel file system: retries of a failed read (>= 0), the first
    # backoff in seconds (> 0; doubles per retry, capped at 30 s) and the connect/read timeout in seconds (> 0).
    io_retries: Count0 = 5
    io_backoff: Positive = 0.5
    io_timeout: Positive = 30.0
    # Shard stream (lorat_scale/data/stream.py): its items are whole sequence windows holding up to
    # ~400 frames of JPEG bytes (tens of MB), so its shuffle buffer is counted in windows and small;
    # records are also shuffled across shards when written.
    stream_shuffle_buffer: Count0 = 16
    # Pairs streamed from shards (lorat_scale/data/stream_pairs.py): mean pairs drawn per record visit
    # (fewer bytes read per pair vs. more correlated pairs; docs/DATA.md), and records held open per
    # source in each loader lane (pairs of one record spread over more batches).
    stream_pairs_per_record: Positive = 4.0
    stream_open_records: Count = 4
    check_images: bool = True  # stream: reject truncated/non-image frame bytes (header + end marker; no decode)
    # Bad data: a frame failing the strict decode or of another size than its sequence, a bad box, a
    # truncated shard, and the readers' problems (malformed lines, missing or unreadable frames).
    # "skip": left out, counted and logged with its file; "raise": stop at the first, naming it.
    on_bad_sample: Literal["skip", "raise"] = "skip"
    seed: Seed = 0  # the pair stream is a function of (seed, epoch, position)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Optimisation recipe; defaults are the paper's."""

    epochs: Count = 170  # 100 for the GOT-10k-only protocol
    global_batch: Count = 128  # summed over ranks and accumulation steps
    micro_batch: Count = 16  # per rank per forward; accumulation = global / (micro * world)
    lr: Positive = 1e-4  # AdamW peak lr (the paper's, at global batch 128; see lr_scaling)
    # "none": peak = lr whatever the global batch (the paper); "linear": lr * global_batch /
    # lr_reference_batch (linear scaling rule). See lorat_scale/train/optim.py.
    lr_scaling: Literal["none", "linear"] = "none"
    lr_reference_batch: Count = 128  # global batch at which ``lr`` is the peak under linear scaling
    min_lr: NonNegative = 1e-6  # cosine floor
    warmup_epochs: NonNegative = 2.0  # linear warm-up from warmup_lr
    warmup_lr: NonNegative = 1e-7
    weight_decay: NonNegative = 0.1  # not applied to 1-D params and embeddings
    betas: tuple[Rate, Rate] = (0.9, 0.999)
    grad_clip: NonNegative = 1.0  # max global grad norm (0 = off)
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit: bitsandbytes, changes numerics
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"  # fp16: CUDA only (loss scaling)
    compile: bool = False  # torch.compile the training model
    # A non-finite loss (on any rank): "stop" (the paper's NaN guard) writes nonfinite_step_N/ (the
    # batch's pair keys, the loss parts, the trainable weights) to the run directory and stops;
    # "skip" drops the update and stops only after train.max_bad_steps skipped steps in a row.
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_bad_steps: Count = 10  # with on_nonfinite=skip: consecutive skipped steps before the run stops
    output_dir: Annotated[str, Predicate(_non_blank)] = "runs/default"
    save_every: Count0 = 1000  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: Count0 = 3  # newest checkpoints kept (0 = all)
    log_every: Count = 10
    val_every: Count0 = 1000  # steps between validation-loss runs (0 = off)
    max_steps: Count0 = 0  # stop after N optimizer steps (0 = epochs * steps_per_epoch)
    seed: Seed = 0
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"  # experiment logger (accelerate's log_with)
    wandb_project: Annotated[str, MinLen(1)] = "lorat_scale"  # used when log_with = "wandb"
    ds_config: str = ""  # DeepSpeed JSON (lorat-scale train --ds); "" = DDP / single process
    val_batches: Count0 = 0  # micro-batches per rank per validation run (0 = all val_pairs_per_epoch)
    # Tracking check: the current weights track data.track_sources every N epochs (fractions allowed) and
    # at the end; AUC / AO / ... go to the log and metrics.jsonl (the paper: GOT-10k val every 10 epochs).
    # 0 = off. Ranks split the sequences; the first N sequences / frames per sequence (0 = all) bound the cost.
    track_every_epochs: NonNegative = 0.0
    track_max_sequences: Count0 = 0
    track_max_frames: Count0 = 0
    track_batch: Count = 32  # sequences advanced together in one forward (the reference's periodic test: 32)
    log_pairs: bool = False  # write each rank's pair indices/keys per step to pairs_rank{r}.jsonl (debug, tests)


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------
@dataclass
class TrackConfig:
    """Inference settings; defaults are the official tracker's."""

    window_penalty: Probability = 0.45  # Hann-window blend weight
    search_area_factor: Positive = 4.0  # 4 for *-224, 5 for *-378
    template_area_factor: Positive = 2.0
    min_box_size: NonNegative = 10.0  # previous box w/h raised to at least this before cropping
    # What runs the merged model (lorat_scale/tracking/backends.py): "torch", or "onnxruntime" (the
    # model exported to ONNX once, cached, run with ONNX Runtime's graph optimisations; faster on CPUs).
    backend: Literal["torch", "onnxruntime"] = "torch"
    # Precision of the model forward (post-processing always runs in fp32). torch: fp32 or bf16/fp16
    # autocast (the reference evaluates under fp16 autocast on GPU; fp32 reproduces the golden files
    # exactly). onnxruntime: fp32, or int8 (dynamic quantization of the linear layers; CPU only).
    precision: Literal["fp32", "bf16", "fp16", "int8"] = "fp32"
    compile: bool = False  # torch.compile the merged model (backend torch)
    # "auto" = cuda if available else cpu; or "cpu", "cuda", "cuda:1", ...
    device: Annotated[str, Predicate(_device_name)] = "auto"
    ort_threads: Count0 = 0  # ONNX Runtime intra-op threads (0 = torch.get_num_threads())
    onnx_cache: str = ""  # folder of exported/quantized models ("" = $LORAT_CACHE/onnx or ~/.cache/lorat_scale/onnx)


@dataclass
class Config:
    """The whole run: model + data + train + track."""

    variant: Annotated[str, Predicate(_known_variant)] = "S-224"
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
                if len(items) != len(args):
                    raise ConfigError(f"config key {key!r} must hold {len(args)} comma-separated values; got {raw!r}")
                return tuple(_parse_value(key, s.strip(), a) for s, a in zip(items, args, strict=True))
            return [_parse_value(key, s.strip(), args[0]) for s in items]
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"config key {key!r}: cannot read {raw!r} as {getattr(typ, '__name__', typ)}") from None
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


# Keys that were renamed: the error names the new one.
RENAMED = {"train.tracker": "train.log_with"}


def add_overrides(p: argparse.ArgumentParser, example: str = "train.lr=5e-5") -> None:
    """Dotted configuration overrides, the one syntax of every command: ``section.key=value ...``."""
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help=f"configuration overrides, in any order with the options, e.g. {example}")
    # The old spellings get a clear message instead of argparse's "unrecognized arguments".
    for old in ("--set", "--override"):
        p.add_argument(old, dest="old_" + old[2:], nargs="*", default=None, help=argparse.SUPPRESS)


def parse_with_overrides(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse options and dotted overrides in any order; the old --set/--override get a message saying what to write."""
    args = p.parse_intermixed_args(argv)
    for old in ("set", "override"):
        if getattr(args, "old_" + old, None) is not None:
            words = " ".join(getattr(args, "old_" + old)) or "section.key=value"
            p.error(f"--{old} is gone: write overrides as plain words after the options, e.g. {words}")
    return args


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


# --------------------------------------------------------------------------------------------
# Checks: each field against its declared range, then the rules that tie fields together
# --------------------------------------------------------------------------------------------
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Field name -> annotated type (ranges included) of a config dataclass."""
    return typing.get_type_hints(cls, include_extras=True)


def _split(hint: Any) -> tuple[Any, list[Any]]:
    """``Annotated[T, *ranges]`` -> (T, ranges); any other type -> (type, [])."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        return base, meta
    return hint, []


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _describe(meta: Any) -> str:
    """One range in words: ">= 1", "in [0, 1)", "a non-empty path"."""
    if isinstance(meta, Interval):
        lo = f"[{_num(meta.ge)}" if meta.ge is not None else f"({_num(meta.gt)}" if meta.gt is not None else "(-inf"
        hi = f"{_num(meta.le)}]" if meta.le is not None else f"{_num(meta.lt)})" if meta.lt is not None else "inf)"
        return f"in {lo}, {hi}"
    for cls, op, attr in ((Gt, ">", "gt"), (Ge, ">=", "ge"), (Lt, "<", "lt"), (Le, "<=", "le")):
        if isinstance(meta, cls):
            return f"{op} {_num(getattr(meta, attr))}"
    if isinstance(meta, MinLen):
        return "non-empty" if meta.min_length == 1 else f"at least {meta.min_length} long"
    if isinstance(meta, Predicate):
        # The docstring of a range's predicate says in words what it accepts.
        return (meta.func.__doc__ or meta.func.__name__).strip()
    raise TypeError(f"no description for the config range {meta!r}")


def _holds(value: Any, meta: Any) -> bool:
    """Whether ``value`` lies in one range (an Interval is the conjunction of its bounds)."""
    if isinstance(meta, Interval):
        return all(_holds(value, m) for m in meta)
    if isinstance(meta, Gt):
        return value > meta.gt
    if isinstance(meta, Ge):
        return value >= meta.ge
    if isinstance(meta, Lt):
        return value < meta.lt
    if isinstance(meta, Le):
        return value <= meta.le
    if isinstance(meta, MinLen):
        return len(value) >= meta.min_length
    if isinstance(meta, Predicate):
        return bool(meta.func(value))
    raise TypeError(f"unsupported config range {meta!r}")


def describe_range(hint: Any) -> str:
    """The declared range of a field's type in words ("" if it has none): "a finite number > 0"."""
    base, meta = _split(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple):
        inner = describe_range(args[0])
        return ("each " + inner) if inner else ""
    words = " and ".join(_describe(m) for m in meta)
    if base is float:
        return f"a finite number {words}".strip()
    return words


# bool is an int in Python, but ``true`` is no value for a count; an int is a fine float.
_IS_TYPE = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda v: isinstance(v, str)}


def check_value(key: str, value: Any, hint: Any) -> None:
    """Type and declared range of one value; a ConfigError names the key, the value and the range."""
    base, meta = _split(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(args)}")
        return
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list; got {value!r}")
        if origin is tuple and len(value) != len(args):
            raise ConfigError(f"config key {key!r} must hold {len(args)} values; got {value!r}")
        for i, v in enumerate(value):
            check_value(f"{key}[{i}]", v, args[i] if origin is tuple else args[0])
        return
    if not _IS_TYPE[base](value):
        raise ConfigError(f"config key {key!r} must be of type {base.__name__}; got {value!r}")
    if (base is float and not math.isfinite(value)) or not all(_holds(value, m) for m in meta):
        raise ConfigError(f"config key {key!r} must be {describe_range(hint)}; got {value!r}")


def config_fields(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, value, annotated type) of every field of ``cfg``, sections walked in order."""
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), _hints(type(cfg))[f.name]
        if dataclasses.is_dataclass(hint):
            yield from config_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, hint


def _peak_lr(t: TrainConfig) -> float:
    return t.lr * (t.global_batch / t.lr_reference_batch if t.lr_scaling == "linear" else 1.0)


# The rules that tie fields together: (key, holds, what it must be). The one place for them.
RULES: list[typing.Callable[[Config], tuple[str, bool, str]]] = [
    lambda c: ("model.embed_dim", c.model.embed_dim % c.model.num_heads == 0,
               f"divisible by model.num_heads ({c.model.num_heads})"),
    lambda c: ("model.template_size", c.model.template_size % c.model.patch_size == 0,
               f"a multiple of model.patch_size ({c.model.patch_size})"),
    lambda c: ("model.search_size", c.model.search_size % c.model.patch_size == 0,
               f"a multiple of model.patch_size ({c.model.patch_size})"),
    lambda c: ("model.template_size", c.model.template_size <= c.model.search_size,
               f"<= model.search_size ({c.model.search_size})"),
    lambda c: ("train.min_lr", c.train.min_lr <= _peak_lr(c.train),
               f"<= the peak lr ({_num(_peak_lr(c.train))}: train.lr with train.lr_scaling)"),
    lambda c: ("train.warmup_lr", c.train.warmup_lr <= _peak_lr(c.train),
               f"<= the peak lr ({_num(_peak_lr(c.train))}: train.lr with train.lr_scaling)"),
    lambda c: ("train.global_batch", c.train.global_batch % c.train.micro_batch == 0,
               f"a multiple of train.micro_batch ({c.train.micro_batch})"),
    lambda c: ("data.pairs_per_epoch", c.data.pairs_per_epoch >= c.train.global_batch,
               f">= train.global_batch ({c.train.global_batch}): an epoch holds at least one step"),
    lambda c: ("data.weights", not c.data.weights or len(c.data.weights) == len(c.data.train_sources),
               f"empty (equal weights) or one weight per entry of data.train_sources ({len(c.data.train_sources)})"),
    lambda c: ("data.weights", not c.data.weights or sum(c.data.weights) > 0, "positive in sum (not all zero)"),
]


def validate(cfg: Config) -> None:
    """Check every field against its declared range, then the cross-field rules; ConfigError names the key."""
    for key, value, hint in config_fields(cfg):
        check_value(key, value, hint)
    for rule in RULES:
        key, ok, expected = rule(cfg)
        if not ok:
            node: Any = cfg
            for part in key.split("."):
                node = getattr(node, part)
            raise ConfigError(f"config key {key!r} must be {expected}; got {node!r}")


def config_from_dict(d: Any, source: str = "config") -> Config:
    """A Config from a nested dict (``Config.to_dict``, a run's config.json), checked as overrides are.

    Keys left out keep the values of the variant's preset. Errors name ``source`` and the key.
    """
    try:
        if not isinstance(d, Mapping):
            raise ConfigError(f"expected a JSON object of config sections, got {type(d).__name__}")
        variant = d.get("variant", "S-224")
        check_value("variant", variant, _hints(Config)["variant"])
        cfg = get_preset(variant)
        _set_from_dict(cfg, d, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def _set_from_dict(node: Any, d: Mapping, prefix: str) -> None:
    hints = _hints(type(node))
    for name, value in d.items():
        key = prefix + name
        if name not in hints:
            raise ConfigError(f"unknown config key {key!r}: {prefix.rstrip('.') or 'config'} has no field {name!r} "
                              f"(fields: {', '.join(sorted(hints))})")
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {key!r} is a section: expected an object, got {value!r}")
            _set_from_dict(getattr(node, name), value, key + ".")
            continue
        if typing.get_origin(_split(hints[name])[0]) is tuple and isinstance(value, list):
            value = tuple(value)  # JSON has no tuples
        check_value(key, value, hints[name])
        setattr(node, name, value)


def read_config(path: str | Path) -> Config:
    """The configuration saved in a JSON file (a run's ``config.json``), checked; errors name the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); expected a JSON configuration") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected a configuration") from None
    return config_from_dict(d, str(path))


def load_config(variant: str, overrides: list[str] | None = None) -> Config:
    """Preset for ``variant`` with dotted ``overrides`` applied and validated."""
    cfg = get_preset(variant)
    apply_overrides(cfg, overrides or [])
    return cfg
