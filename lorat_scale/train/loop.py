"""Train a LoRAT tracker. The whole loop in one file, read top to bottom (nanoGPT style).

How to run it (examples, data sources, the run folder): ``USAGE`` below, printed by ``lorat-scale train --help``.

Sources: format[:split]=root with a reader of lorat_scale.data.readers (lasot, got10k, trackingnet,
coco, custom), or shard streams shards=MANIFEST[::BASE_URL] (data_prep/make_shards.py).
In order below: config -> accelerator -> model -> data -> optimizer and schedule -> checkpoints and
resume -> loop (lr, the training step of lorat_scale/train/step.py, log, validate, checkpoint, tracking
check) -> end. The run directory holds config.json, metrics.jsonl (one line per step), logs/
(TensorBoard), checkpoints/step_XXXXXXXX/, tracking/ (the tracking checks' results) and model.safetensors.

Faults: SIGTERM or SIGUSR1 (SLURM's time limit, ``#SBATCH --signal``) on any rank makes every rank save a
checkpoint at the next step boundary and exit with code 75 (EX_TEMPFAIL: "try again"; the job files requeue);
a failed write (full disk, read-only directory) stops the run with one line, keeping the last complete
checkpoint; an unreachable shard server stops it naming the URL and the cause.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import resource
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from tqdm import tqdm

from .. import recipes
from ..config import (Config, ConfigError, DataConfig, ModelConfig, add_overrides, load_config,
                      parse_with_overrides)
from ..data.cache import cached_read
from ..data.pairs import PairDataset
from ..data.readers import DatasetError, ReadReport, parse_source
from ..data.shards import load_shards
from ..data.storage import RetryPolicy, StorageError
from ..data.stream_pairs import ShardPairDataset
from ..models import build_model
from ..outputs import OutputError, atomic_path, check_outputs, write_atomic
from .checkpoint import CheckpointError, Checkpoints, find_resume_point, scan
from .distributed import DDP_KWARGS, accumulation_steps, check_run, fill_ds_config, read_ds_config, zero_stage
from .optim import build_optimizer, build_scheduler, peak_lr, steps_per_epoch
from .loss import lorat_loss
from .step import to_device, train_step
from .tracking_check import load_track_sets, run_tracking_check

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # train.precision -> accelerate
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; run it again (--resume auto)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser) -> None:
    """--recipe, --variant, --data-root, --ds, --resume and dotted overrides (the ``lorat-scale train`` options)."""
    p.add_argument("--recipe", default="", help="paper, got10k, quickstart or memory_saving: the data, schedule and "
                   "checks of that recipe; default: the variant preset alone")
    p.add_argument("--variant", default=None,
                   help="variant preset: S, B, L or g with 224 or 378, e.g. L-224 (default: the recipe's, else S-224)")
    p.add_argument("--data-root", default=None, help="with --recipe: the folder holding the recipe's datasets")
    p.add_argument("--config", help=argparse.SUPPRESS)  # the old name of --variant: a clear error below
    p.add_argument("--ds", default="", help="DeepSpeed JSON (ds_configs/zero2.json, zero3.json, ...); default DDP")
    p.add_argument("--resume", default="",
                   help="'auto' (the newest intact checkpoint of the run; fresh start if none) or a checkpoint folder")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume although the configuration differs from the checkpoint's in keys that change the run "
                        "(refused otherwise, naming them)")
    add_overrides(p)


USAGE = """Train or resume a LoRAT tracker: one process, DDP or DeepSpeed, the same command at every scale.

    # a recipe: the paper's data, schedule and tracking checks for a variant
    lorat-scale train --recipe paper --variant L-224 --data-root /datasets train.output_dir=runs/L-224
    # one process (GPU if present, else CPU): a variant preset with your own data
    lorat-scale train --variant S-224 data.train_sources=[lasot=/data/LaSOT,coco=/data/coco] \\
        model.backbone_weights=/w/dinov2_vits14_pretrain.pth train.output_dir=runs/s224
    # DDP on 8 GPUs / DeepSpeed ZeRO-2 (values marked "auto" in the JSON are filled from the config)
    accelerate launch --multi_gpu --num_processes 8 -m lorat_scale.train --variant L-224 ...
    accelerate launch --multi_gpu --num_processes 8 scripts/train.py --variant g-224 --ds ds_configs/zero2.json ...
    # continue from the newest intact checkpoint of train.output_dir (fresh start if there is none)
    lorat-scale train --variant S-224 --resume auto ...

Data sources are format[:split]=root (lasot, got10k, trackingnet, coco, custom, ...) or shard folders and URLs
written by lorat-scale make-shards (shards=FOLDER). Every configuration key, its value and valid range:
lorat-scale config --variant S-224.

The run folder (train.output_dir) holds config.json, metrics.jsonl (one line per step), logs/ (TensorBoard),
checkpoints/step_XXXXXXXX/, tracking/ and model.safetensors. SIGTERM or SIGUSR1 (a SLURM time limit) saves a
checkpoint at the next step and exits with code 75: run the same command with --resume auto to continue.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The training command line; options and overrides may come in any order."""
    p = argparse.ArgumentParser(prog="lorat-scale train", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    args = parse_with_overrides(p, argv)
    if args.config:
        p.error(f"--config was renamed --variant: use --variant {args.config}")
    if args.data_root and not args.recipe:
        p.error("--data-root belongs to a recipe: add --recipe paper (or got10k, ...), "
                "or give data.train_sources=[...]")
    return args


def resolve_config(args: argparse.Namespace) -> Config:
    """The run's configuration: the recipe's (or the bare variant preset) with the dotted overrides applied."""
    if args.recipe:
        return recipes.get_config(args.recipe, args.variant, args.data_root, args.overrides)
    return load_config(args.variant or "S-224", args.overrides)


# ----------------------------------------------------------------------------------------------
# Data: sources -> dataset -> this rank's micro-batches of an epoch
# ----------------------------------------------------------------------------------------------
def load_sources(entries: list[str], on_bad_sample: str = "raise", verbose: bool = True,
                 dc: DataConfig | None = None) -> list[list]:
    """``format[:split]=root`` and ``shards=FOLDER[::BASE_URL]`` entries -> one list of Sequences per entry.

    Shards are read by byte range (the frames a pair uses; ``dc``'s io_* and verify_frames settings). Bad data
    the readers find follows ``data.on_bad_sample``: "raise" stops at the first problem (``DatasetError``, one
    line naming the file), "skip" leaves it out and warns, naming the files.
    """
    dc = dc or DataConfig()
    sources = []
    for entry in entries:
        if entry.startswith("shards="):
            seqs = load_shards(entry.split("=", 1)[1], RetryPolicy(dc.io_retries, dc.io_backoff, dc.io_timeout),
                               dc.verify_frames)
            if not seqs:
                raise ConfigError(f"data source {entry!r} holds no usable sequence")
            sources.append(seqs)
            continue
        try:
            fmt, split, root = parse_source(entry)
        except ValueError as e:
            raise ConfigError(f"config key 'data.train_sources': {e}") from None
        report = ReadReport()
        seqs = cached_read(fmt, root, split, on_error=on_bad_sample, report=report)
        if report.records and verbose:
            shown = report.records[:10]
            print(f"warning: data source {entry}: {len(report.records)} problem(s), the bad lines or frames left out "
                  "(data.on_bad_sample=skip):\n" + "\n".join(f"  {p.message}" for p in shown)
                  + (f"\n  ... {len(report.records) - len(shown)} more: lorat-scale check-data --format {fmt} "
                     f"--root {root} --split {split} lists them all" if len(report.records) > len(shown) else ""),
                  file=sys.stderr)
        if not seqs:
            raise ConfigError(f"data source {entry!r} holds no usable sequence")
        sources.append(seqs)
    return sources


def build_dataset(entries: list[str], dc: DataConfig, mc: ModelConfig, micro: int, rank: int, world: int,
                  pairs_per_epoch: int) -> PairDataset | ShardPairDataset:
    """PairDataset over reader or shard sources; ShardPairDataset for ``shards=`` with data.shard_access=stream."""
    shards = [e.split("=", 1)[1] for e in entries if e.startswith("shards=")]
    if shards and dc.shard_access == "stream":
        if len(shards) != len(entries):
            raise ConfigError(f"data sources {entries}: data.shard_access=stream reads shards=... entries only")
        return ShardPairDataset(shards, dc, mc.template_size, mc.search_size, rank=rank, world_size=world,
                                batch_size=micro, pairs_per_epoch=pairs_per_epoch, patch_size=mc.patch_size)
    return PairDataset(load_sources(entries, dc.on_bad_sample, verbose=rank == 0, dc=dc), dc, mc.template_size,
                       mc.search_size, pairs_per_epoch=pairs_per_epoch, rank=rank, world_size=world,
                       patch_size=mc.patch_size)


def run_outputs(run_dir: Path) -> dict[str, Path]:
    """What a run writes in ``train.output_dir`` (checked against the run's inputs before it starts)."""
    return {f"train.output_dir's {name}": run_dir / name
            for name in ("config.json", "metrics.jsonl", "model.safetensors", "checkpoints", "logs")}


def run_inputs(cfg: Config) -> dict[str, str]:
    """The files and folders a run reads: source roots and shard folders, backbone weights, DeepSpeed JSON."""
    found = {"model.backbone_weights": cfg.model.backbone_weights, "train.ds_config": cfg.train.ds_config}
    for key in ("train_sources", "val_sources"):
        for entry in getattr(cfg.data, key):
            where = entry.split("=", 1)[-1]  # format[:split]=ROOT or shards=FOLDER[::BASE_URL]
            found[f"data.{key} entry {entry}"] = where.split("::")[0] if entry.startswith("shards=") else where
    return found


# ----------------------------------------------------------------------------------------------
# Run state: the counters a checkpoint holds besides the weights (lorat_scale/train/checkpoint.py saves
# and loads everything), the stop request of a signal, the per-step logs trimmed on a resume
# ----------------------------------------------------------------------------------------------
class TrainState:
    """Loop counters saved in every checkpoint; ``step`` is also the data position."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps done (including skipped non-finite ones)
        self.bad_steps = 0  # non-finite steps in total
        self.bad_in_row = 0
        self.counters: dict[str, int] = {}  # data-quality counters

    def state_dict(self) -> dict:
        """The counters as a JSON-able dict."""
        return {"step": self.step, "bad_steps": self.bad_steps, "bad_in_row": self.bad_in_row,
                "counters": dict(self.counters)}

    def load_state_dict(self, d: dict) -> None:
        """Restore the counters of a checkpoint."""
        self.__dict__.update(d)


class StopRequest(contextlib.AbstractContextManager):
    """SIGTERM and SIGUSR1 set ``signal``; the loop saves a checkpoint at the next step boundary and exits.

    The previous handlers come back on exit (in-process runs, tests).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


class RunDirError(OSError):
    """A file of the run directory cannot be written (full disk, read-only or vanished file system)."""


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (flock) while the run lives: two training processes never share a run directory.

    A second one (a job requeued while a killed launcher's training process still runs, a typo in two
    commands) is refused, naming the holder. The kernel drops the lock when the holder dies, even by kill -9.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / ".lock", "a+")
    except OSError as e:  # read-only, full or missing file system: before any work
        raise RunDirError(f"train.output_dir={run_dir}: cannot write there ({e.strerror or e}"
                          + (f": {e.filename})" if e.filename else ")")) from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunDirError(f"train.output_dir={run_dir} is in use by another training process "
                              f"({f.read().strip() or 'unknown'}): stop it first, or choose another "
                              "train.output_dir") from None
        except OSError as e:  # a file system without flock (some parallel file systems): run unguarded
            print(f"warning: {run_dir / '.lock'}: no lock on this file system ({e.strerror or e}): nothing stops "
                  "a second training process from using this run directory", file=sys.stderr)
        else:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
        yield


def write_or_stop(what: Path, fn: Callable[[], None], run_dir: Path) -> None:
    """Run a write; an OSError becomes one RunDirError naming the file and the cause."""
    try:
        fn()
    except OSError as e:
        done = scan(run_dir).complete
        raise RunDirError(f"cannot write {what}: {e.strerror or e}; the last complete checkpoint is kept "
                          f"({done[-1].name if done else 'none was written yet'}): fix the cause, then resume with "
                          "--resume auto") from None


def trim_log(path: Path, step: int) -> None:
    """Drop the lines of ``path`` (JSON lines with a "step") that the run redoes after resuming at ``step``.

    A training row (with "loss") of step s was written after step s: kept if s <= ``step``. Other rows (validation,
    pairs) were written before step s+1 ran: kept if s < ``step``. A half-written last line goes too.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            keep = row["step"] <= step if "loss" in row else row["step"] < step
        except (json.JSONDecodeError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def dump_nonfinite(ckpts: Checkpoints, step_batches: list[dict], parts: list[dict], epoch: int) -> Path:
    """Write what a non-finite step saw: pair keys and loss parts per rank, the trainable weights."""
    acc, state = ckpts.accelerator, ckpts.state
    out = ckpts.run_dir / f"nonfinite_step_{state.step:08d}"
    out.mkdir(parents=True, exist_ok=True)
    report = {"step": state.step, "epoch": epoch, "rank": acc.process_index, "world_size": acc.num_processes,
              "keys": [k for b in step_batches for k in b["key"]],
              "loss_parts": [{k: float(v) for k, v in p.items()} for p in parts]}
    write_atomic(out / f"batch_rank{acc.process_index}.json", json.dumps(report, indent=1))
    ckpts.save_weights(out / "trainable.safetensors")
    acc.wait_for_everyone()
    return out


# ----------------------------------------------------------------------------------------------
# Helpers for logging and validation
# ----------------------------------------------------------------------------------------------
def memory_gb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def flat_config(d: dict, prefix: str = "") -> dict:
    """Nested config -> flat {section/key: scalar} for the loggers' hyper-parameter tables."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: PairDataset | ShardPairDataset, accelerator: Accelerator,
             micro: int, batches: int, workers: int) -> dict:
    """Validation loss over a fixed pair set: global sums over all ranks / global positives."""
    model.eval()
    world = accelerator.num_processes
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    loader = dataset.epoch_loader(0, range(batches), micro * world, micro, workers, seed=0)
    for _, batch in zip(range(batches), loader):
        batch = to_device(batch, accelerator.device)
        with accelerator.autocast():
            out = model(batch["z"], batch["x"], batch["z_feat_mask"])
        res = lorat_loss(out, batch, num_positives=1.0)  # normaliser 1: the loss terms are sums
        sums += torch.stack([res["loss_bce"].double(), res["loss_giou"].double(), batch["positive_map"].sum().double()])
    sums = accelerator.reduce(sums, "sum")
    n = max(float(sums[2]), 1.0)
    model.train()
    return {"val/loss": float(sums[0] + sums[1]) / n, "val/loss_bce": float(sums[0]) / n,
            "val/loss_giou": float(sums[1]) / n}


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) a training run; returns 0 when done, EXIT_STOPPED (75) when a signal stopped it after a
    checkpoint, and exits with a one-line error on bad options, data, storage or checkpoints."""
    # Installed first: a signal during start-up is honoured at the first step boundary.
    with StopRequest() as stop, contextlib.ExitStack() as held:
        try:
            return train(argv, stop, held)
        except (ConfigError, DatasetError, OutputError, CheckpointError, RunDirError) as e:  # one line naming it
            raise SystemExit(f"error: {e}") from None
        except StorageError as e:  # an unreachable shard server: not bad data; the message names the URL and cause
            raise SystemExit(f"error: {storage_message(e)}") from None


def storage_message(e: StorageError) -> str:
    """The StorageError's own message (a DataLoader worker's arrives wrapped in its traceback text)."""
    text = str(e)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split("StorageError: ", 1)[-1]
    return text


def train(argv: list[str] | None, stop: StopRequest, held: contextlib.ExitStack) -> int:
    """The training run itself (``main`` turns configuration errors into a one-line exit; ``held`` releases the
    run directory's lock when the run ends)."""
    # ------------------------------------------------------------------------------------------
    # Config
    # ------------------------------------------------------------------------------------------
    args = parse_args(argv)
    cfg = resolve_config(args)
    if args.ds:
        cfg.train.ds_config = args.ds
    tc, dc = cfg.train, cfg.data
    run_dir = Path(tc.output_dir)
    check_outputs(run_outputs(run_dir), run_inputs(cfg))
    cuda = torch.cuda.is_available()
    ds = read_ds_config(tc.ds_config) if tc.ds_config else None
    check_run(cfg, ds, "cuda" if cuda else "cpu")
    if tc.precision == "bf16" and not cuda and "AVX512" not in torch.backends.cpu.get_cpu_capability():
        print("warning: train.precision=bf16 on a CPU without AVX-512: bf16 matmuls run far slower than fp32 "
              "here; pass train.precision=fp32", file=sys.stderr)

    # ------------------------------------------------------------------------------------------
    # Accelerator: one process, DDP (torchrun / accelerate launch) or DeepSpeed; CPU without CUDA
    # ------------------------------------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = accumulation_steps(tc.global_batch, tc.micro_batch, world)
    ds_plugin = None
    if ds is not None:
        if not cuda:
            if world > 1:
                # accelerate sets up no CPU process group for DeepSpeed (and cpu=True drops the plugin).
                raise SystemExit("DeepSpeed through accelerate runs multi-process on GPUs only; on CPU use one process")
            # DeepSpeed wants the torch.distributed variables even for one process (else it asks for mpi4py).
            for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                         ("MASTER_PORT", str(29500 + os.getpid() % 1000))):
                os.environ.setdefault(k, v)
        ds_plugin = DeepSpeedPlugin(hf_ds_config=fill_ds_config(ds, tc, world))
    accelerator = Accelerator(
        # Without cpu=True, torchrun ranks on a CPU-only machine silently train alone (no process group).
        cpu=not cuda and ds_plugin is None,
        mixed_precision=PRECISION[tc.precision],
        gradient_accumulation_steps=accum,
        deepspeed_plugin=ds_plugin,
        log_with=None if tc.log_with == "none" else tc.log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        kwargs_handlers=[DistributedDataParallelKwargs(**DDP_KWARGS)],
    )
    if accelerator.num_processes != world:
        raise SystemExit(f"WORLD_SIZE={world} but accelerate runs {accelerator.num_processes} processes: launch with "
                         "torchrun or `accelerate launch --multi_gpu` (see docs/TRAINING.md)")
    is_ds = ds_plugin is not None
    main_process = accelerator.is_main_process
    set_seed(tc.seed, device_specific=True)  # dropout / drop-path differ per rank, reproducibly
    if main_process:
        held.enter_context(run_dir_lock(run_dir))
    accelerator.wait_for_everyone()
    # The checkpoint to resume from: verified file by file, with this run's configuration (else refused).
    resume = find_resume_point(accelerator, run_dir, args.resume, cfg, args.allow_config_change)
    start = resume[1]["step"] if resume else 0
    if main_process:
        def init() -> None:
            write_atomic(run_dir / "config.json", cfg.to_json())  # the resolved configuration of this run
            trim_log(run_dir / "metrics.jsonl", start)  # the steps after `start` are redone: no duplicate lines

        write_or_stop(run_dir / "config.json", init, run_dir)
    accelerator.wait_for_everyone()
    if tc.log_pairs:
        trim_log(run_dir / f"pairs_rank{accelerator.process_index}.jsonl", start)

    # ------------------------------------------------------------------------------------------
    # Model, data, optimizer, schedule
    # ------------------------------------------------------------------------------------------
    # Built on the training device: int8/nf4 frozen weights are quantized there once (bitsandbytes
    # quantizes on a move from the CPU). Identical on every rank (fixed init seed).
    model = build_model(cfg.model, device=accelerator.device)
    if not cfg.model.backbone_weights:
        accelerator.print("warning: model.backbone_weights is empty: training on a random backbone")
    raw_model = model  # the plain module: its parameter names are the checkpoint's
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not dc.train_sources:
        raise ConfigError("config key 'data.train_sources' is empty: give e.g. data.train_sources=[lasot=/data/LaSOT]")
    rank = accelerator.process_index
    train_ds = build_dataset(dc.train_sources, dc, cfg.model, tc.micro_batch, rank, world, dc.pairs_per_epoch)
    val_ds = None
    if dc.val_sources and tc.val_every > 0:
        # Weights belong to the training sources; the validation set is a fixed epoch of its own seed.
        val_cfg = dataclasses.replace(dc, weights=[], seed=dc.seed + 1)
        val_ds = build_dataset(dc.val_sources, val_cfg, cfg.model, tc.micro_batch, rank, world,
                               dc.val_pairs_per_epoch)
    val_batches = tc.val_batches or dc.val_pairs_per_epoch // (tc.micro_batch * world)
    spe = steps_per_epoch(dc.pairs_per_epoch, tc.global_batch)
    total_steps = min(tc.max_steps, tc.epochs * spe) if tc.max_steps else tc.epochs * spe
    # The tracking check's sequences (annotations read now: a bad path fails before training starts).
    track_sets = (load_track_sets(dc.track_sources, tc.track_max_sequences, tc.track_max_frames)
                  if tc.track_every_epochs > 0 else [])
    track_every = max(1, round(tc.track_every_epochs * spe))

    optimizer = build_optimizer(model, tc)
    if tc.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    # timm's scheduler is stepped by us per iteration (accelerate's wrapper would call .step()).
    scheduler = build_scheduler(optimizer, tc, spe)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------------------
    # Checkpoints and resume
    # ------------------------------------------------------------------------------------------
    # The schedule is a function of the configuration and the step: it is not part of a checkpoint.
    state = TrainState()
    ckpts = Checkpoints(accelerator, run_dir, raw_model, optimizer, state, cfg, zero_stage(ds) if is_ds else None,
                        engine=model if is_ds else None)
    if resume is not None:
        ckpts.load(*resume)
        accelerator.print(f"resumed from {resume[0]} at step {state.step}")

    if tc.log_with != "none":
        init_kwargs = {"wandb": {"dir": str(run_dir), "name": run_dir.name}} if tc.log_with == "wandb" else {}
        accelerator.init_trackers(tc.wandb_project if tc.log_with == "wandb" else "tb",
                                  config=flat_config(cfg.to_dict()), init_kwargs=init_kwargs)
    accelerator.print(
        f"{cfg.variant}: {n_trainable:,} trainable params | world {world} x micro {tc.micro_batch} x accum {accum} "
        f"= global {tc.global_batch} | {spe} steps/epoch, {total_steps} steps | peak lr {peak_lr(tc):.3g} | "
        f"{'DeepSpeed ' + tc.ds_config if is_ds else accelerator.distributed_type} | precision {tc.precision} | "
        f"{len(train_ds.sources)} train sources | val {'on' if val_ds else 'off'} | tracking check "
        + (f"every {track_every} steps on {sum(len(t.sequences) for t in track_sets)} sequences"
           if track_sets else "off")
    )

    # ------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------
    metrics_file = open(run_dir / "metrics.jsonl", "a") if main_process else None
    pairs_file = open(run_dir / f"pairs_rank{rank}.jsonl", "a") if tc.log_pairs else None
    pbar = tqdm(total=total_steps, initial=state.step, disable=not main_process, dynamic_ncols=True, desc="train")
    model.train()
    last_saved = state.step if resume is not None else -1

    def log_line(f: TextIO, row: dict) -> None:
        def write() -> None:
            f.write(json.dumps(row) + "\n")
            f.flush()

        write_or_stop(Path(f.name), write, run_dir)

    def validate() -> None:
        val = evaluate(model, val_ds, accelerator, tc.micro_batch, val_batches, dc.num_workers)
        accelerator.log(val, step=state.step)
        if metrics_file:
            log_line(metrics_file, {"step": state.step, **val})
        pbar.write(f"step {state.step}: val loss {val['val/loss']:.4f}")

    def track_check() -> None:
        t = time.perf_counter()
        scores = run_tracking_check(raw_model, cfg, track_sets, run_dir / "tracking", state.step, rank, world,
                                    accelerator.device, accelerator.wait_for_everyone)
        if main_process:
            scores["track/seconds"] = time.perf_counter() - t
            accelerator.log(scores, step=state.step)
            log_line(metrics_file, {"step": state.step, **scores})
            pbar.write(f"step {state.step}: tracking check " + ", ".join(f"{k.removeprefix('track/')} {v:.1f}"
                                                                        for k, v in scores.items()))

    while state.step < total_steps:
        epoch, first = divmod(state.step, spe)
        last = min(spe, first + total_steps - state.step)
        batches = iter(train_ds.epoch_loader(epoch, range(first, last), tc.global_batch, tc.micro_batch,
                                             dc.num_workers, seed=tc.seed + epoch))
        for _ in range(first, last):
            if val_ds is not None and state.step % tc.val_every == 0:
                validate()  # at step 0 too: the starting point of the curve
            t0 = time.perf_counter()
            step_batches = [next(batches) for _ in range(accum)]
            if pairs_file:  # which pairs this rank trained on at this step (tests, debugging)
                idx = [int(p) for b in step_batches for p in b["position"]]  # position in the epoch
                log_line(pairs_file, {"step": state.step, "epoch": epoch, "indices": idx,
                                      "keys": [k for b in step_batches for k in b["key"]]})
            for b in step_batches:
                for k, v in b.pop("counters").items():
                    state.counters[k] = state.counters.get(k, 0) + v

            # ------------------------------------------------------------------ the step
            scheduler.step_update(state.step)
            result = train_step(model, optimizer, step_batches, accelerator, trainable=trainable,
                                grad_clip=tc.grad_clip, deepspeed=is_ds, stop=stop.signal is not None)
            row = result.row()  # one host sync per step
            bad = row.pop("nonfinite") > 0
            stopping = row.pop("stop") > 0  # some rank got SIGTERM/SIGUSR1: every rank stops after this step
            state.bad_steps += bad
            state.bad_in_row = state.bad_in_row + 1 if bad else 0
            state.step += 1
            pbar.update(1)

            # -------------------------------------------------------------------- log
            dt = time.perf_counter() - t0
            row = {"step": state.step, "epoch": epoch, **row, "lr": optimizer.param_groups[0]["lr"], "bad": bad,
                   "pairs_per_s": tc.global_batch / dt, "mem_gb": memory_gb(accelerator.device)}
            if metrics_file:
                log_line(metrics_file, row)
            if state.step % tc.log_every == 0 or state.step == total_steps:
                pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", pairs_s=f"{row['pairs_per_s']:.1f}",
                                 mem=f"{row['mem_gb']:.2f}G")
                data = {f"data/{k}": v for k, v in state.counters.items()}  # from the samples, checkpointed
                # Dataset-level counters (the stream's records, bad records, ...; this process and its workers).
                data |= {f"data/stream_{k}": v for k, v in train_ds.counters().items()}
                accelerator.log({f"train/{k}": v for k, v in row.items() if k not in ("step", "bad")}
                                | data | {"train/bad_steps": state.bad_steps}, step=state.step)
                if main_process and state.counters:
                    counts = " ".join(f"{k}={v}" for k, v in sorted(state.counters.items()))
                    pbar.write(f"step {state.step}: data {counts}")

            # ------------------------------------------------------ non-finite loss: dump, stop
            if bad and (tc.on_nonfinite == "stop" or state.bad_in_row >= tc.max_bad_steps):
                dump = dump_nonfinite(ckpts, step_batches, result.parts, epoch)
                why = ("train.on_nonfinite=stop" if tc.on_nonfinite == "stop" else
                       f"{state.bad_in_row} skipped steps in a row (train.max_bad_steps={tc.max_bad_steps})")
                raise SystemExit(f"stopping at step {state.step}: non-finite loss ({why}); the pair keys, loss parts "
                                 f"and trainable weights are in {dump}")

            # ------------------------------------------------------------------ checkpoint
            if (tc.save_every > 0 and state.step % tc.save_every == 0) or (stopping and last_saved != state.step):
                ckpts.save()
                last_saved = state.step
            if stopping and state.step < total_steps:  # SLURM requeues the job (scripts/slurm), which resumes
                accelerator.print(f"stopped at step {state.step} by {stop.signal or 'a signal to another rank'}: "
                                  f"checkpoint {run_dir / 'checkpoints' / f'step_{state.step:08d}'} saved; run again "
                                  "with --resume auto to continue")
                for f in (metrics_file, pairs_file):
                    if f:
                        f.close()
                pbar.close()
                accelerator.wait_for_everyone()
                accelerator.end_training()
                return EXIT_STOPPED

            # ------------------------------------------------------------ tracking check
            if track_sets and state.step % track_every == 0 and state.step < total_steps:
                track_check()  # the last step's check comes after the loop

    # ------------------------------------------------------------------------------------------
    # End: final checkpoint and the trainable weights at the top of the run directory
    # ------------------------------------------------------------------------------------------
    if val_ds is not None:
        validate()
    if last_saved != state.step:
        ckpts.save()
    if track_sets:
        track_check()
    if main_process:
        newest = run_dir / "checkpoints" / f"step_{state.step:08d}" / "model.safetensors"

        def copy_weights() -> None:
            with atomic_path(run_dir / "model.safetensors") as tmp:
                shutil.copyfile(newest, tmp)

        write_or_stop(run_dir / "model.safetensors", copy_weights, run_dir)
        metrics_file.close()
    if pairs_file:
        pairs_file.close()
    pbar.close()
    accelerator.print(f"done: {state.step} steps, {state.bad_steps} skipped (non-finite); "
                      f"weights in {run_dir / 'model.safetensors'}")
    # Finishing all ranks together avoids the teardown crashes seen with gloo on CPU.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0
