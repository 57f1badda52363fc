"""Run checkpoints: state in formats that cannot carry code, every file verified when loaded, written atomically.

    checkpoints/step_00001000/     exactly "step_" + 8 digits (the optimizer steps done) and a checkpoint.json
      model.safetensors            trainable tensors + the resolved model configuration (weights.save_trainable)
      optimizer.safetensors        the optimizer's per-parameter state tensors (not under DeepSpeed)
      trainer_state.json           step, data-quality counters, accelerate's micro-step counter, the fp16
                                   GradScaler, the optimizer's non-tensor per-parameter state
      rng_rank<r>.safetensors      rank r's Python, NumPy, torch CPU and CUDA generator states
      deepspeed/                   DeepSpeed only: the engine's own checkpoint (its optimizer partitions)
      checkpoint.json              written last, the completion marker: format, step, world size, the resolved
                                   configuration, and the size and sha256 of every other file

Why not accelerate's ``save_state``/``load_state``: it pickles the registered objects and unpickles them with
``weights_only=False`` (a planted ``custom_checkpoint_0.pkl`` runs its code), and it ignores an RNG file it
cannot read (a truncated ``random_states_0.pkl`` resumed with other dropout masks, without a word). Here the
trainer's own state is safetensors and JSON; the one pickle format left, DeepSpeed's engine files, is loaded
with ``torch.load(weights_only=True)`` (``weights_only_loads``): a pickle that would build anything but
tensors and plain containers is refused.

Saving (``Checkpoints.save``, every rank): the files go to ``.tmp_step_N``; the ranks hash them (each a share)
and the main process writes ``checkpoint.json`` last, then renames the folder to ``step_N`` and prunes the
oldest complete checkpoints beyond ``train.keep_checkpoints``. A failed write (full disk, read-only or vanished
file system) stops every rank with one message and keeps the last complete checkpoint. Loading
(``find_resume_point``): ``--resume auto`` takes the newest complete checkpoint whose files all match their
recorded sizes and sha256, falling back to the previous one, with a warning naming the damage, when they do
not; and it refuses a configuration that differs from the checkpoint's in a key that changes the run
(``config_changes``) unless ``--allow-config-change``. Only folders named exactly ``step_`` + 8 digits that
hold a ``checkpoint.json`` are resumed from or pruned; anything else under ``checkpoints/`` is left alone and
named in a warning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..config import Config
from ..models.weights import CheckpointMismatchError, check_finite, load_trainable, save_trainable

FORMAT = "lorat_scale/checkpoint-v1"
MARKER = "checkpoint.json"
STEP_DIR = re.compile(r"step_(\d{8})")
TEMP_DIR = re.compile(r"\.(tmp|old)_step_\d{8}")  # an interrupted save's folders (the trainer's own)
DS_DIR, DS_TAG = "deepspeed", "state"

# Configuration keys that may differ between a checkpoint and its resume: none of them changes a number of the
# run (what is trained, on which pairs, with which update). Any other difference is refused unless
# --allow-config-change. Why each is safe:
RUN_NEUTRAL_KEYS = {
    "train.output_dir": "where the run is written (a run directory may be moved)",
    "train.max_steps": "where the run stops; the schedule follows train.epochs",
    "train.save_every": "checkpoint cadence", "train.keep_checkpoints": "checkpoint cadence",
    "train.log_every": "logging", "train.log_with": "logging", "train.wandb_project": "logging",
    "train.log_pairs": "logging",
    # Validation runs the model in eval mode on pairs from its own generator: the training numbers are the same.
    "train.val_every": "validation", "train.val_batches": "validation", "data.val_sources": "validation",
    "data.val_pairs_per_epoch": "validation",
    # A pair is a function of (seed, epoch, position): the worker count only says who computes it (not so for
    # data.shard_access=stream, whose lanes follow the workers; see config_changes).
    "data.num_workers": "loader processes",
    "data.io_retries": "read retries", "data.io_backoff": "read retries", "data.io_timeout": "read retries",
    # What happens at a fault; without one the run is the same.
    "data.verify_frames": "a check", "data.check_images": "a check", "data.on_bad_sample": "a fault policy",
    "train.on_nonfinite": "a fault policy", "train.max_bad_steps": "a fault policy",
}
RUN_NEUTRAL_SECTIONS = ("track.",)  # inference settings: training does not read them


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, found or trusted; the message says which file and why."""


def _named(path: Path, write: Any) -> None:
    """Run a safetensors write; its failure (a SafetensorError without a file name) becomes an OSError naming it."""
    try:
        write()
    except SafetensorError as e:
        found = re.search(r"I/O error: (.*) \(os error (\d+)\)", str(e))
        raise OSError(int(found.group(2)), found.group(1), str(path)) if found else OSError(str(e), str(path)) from None


# ----------------------------------------------------------------------------------------------
# What a run directory holds
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Found:
    """The folders under ``run_dir/checkpoints``, sorted into what the trainer may touch and what it may not."""

    complete: list[Path]  # step_XXXXXXXX with a checkpoint.json, oldest first: resumed from and pruned
    unmarked: list[Path]  # step_XXXXXXXX without one (another version's or an interrupted tool's): left alone
    leftovers: list[Path]  # .tmp_step_*/.old_step_* of an interrupted save: the trainer's own, removed
    strays: list[Path]  # anything else: left alone, named in a warning

    def warnings(self) -> list[str]:
        """One line per folder the trainer leaves alone."""
        out = [f"{p}: not a checkpoint of this trainer (its folders are named step_ + 8 digits); left alone"
               for p in self.strays]
        out += [f"{p}: no {MARKER} (an incomplete save, or written by another version); left alone"
                for p in self.unmarked]
        return out


def scan(run_dir: Path) -> Found:
    """Sort the entries of ``run_dir/checkpoints`` (see ``Found``)."""
    found = Found([], [], [], [])
    d = run_dir / "checkpoints"
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        if STEP_DIR.fullmatch(p.name) and p.is_dir():
            (found.complete if (p / MARKER).is_file() else found.unmarked).append(p)
        elif TEMP_DIR.fullmatch(p.name) and p.is_dir():
            found.leftovers.append(p)
        else:
            found.strays.append(p)
    return found


def finish_interrupted_saves(run_dir: Path) -> None:
    """Folders of a save killed part-way: a complete one killed before its rename gets its name; the rest go."""
    for p in scan(run_dir).leftovers:
        final = p.with_name(p.name[len(".tmp_"):]) if p.name.startswith(".tmp_") else None
        try:
            if final is not None and (p / MARKER).is_file() and not final.exists():
                os.replace(p, final)  # verified like any other before it is resumed from
            else:
                shutil.rmtree(p)
        except OSError as e:  # a read-only run directory: the run stops at its first write, saying so
            warn(f"{p}: left from an interrupted save, cannot be removed ({e.strerror or e})")


def step_of(path: Path) -> int:
    """The step of a trainer checkpoint folder ``step_XXXXXXXX``."""
    return int(STEP_DIR.fullmatch(path.name).group(1))


# ----------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_marker(ckdir: Path) -> dict:
    """The parsed checkpoint.json of ``ckdir``; CheckpointError if it is missing, damaged or not ours."""
    p = ckdir / MARKER
    try:
        marker = json.loads(p.read_text())
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: damaged ({e})") from None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or not isinstance(marker.get("files"), dict):
        found = marker.get("format") if isinstance(marker, dict) else None
        raise CheckpointError(f"{p}: not a {FORMAT} marker (format {found!r})")
    return marker


def check_file(ckdir: Path, name: str, want: dict) -> str | None:
    """None if ``ckdir/name`` has the recorded size and sha256, else what is wrong."""
    p = ckdir / name
    try:
        size = p.stat().st_size
    except OSError as e:
        return f"{name}: missing ({e.strerror or e})"
    if size != want["size"]:
        return f"{name}: {size} bytes, {want['size']} written"
    if sha256_file(p) != want["sha256"]:
        return f"{name}: sha256 differs from the one written at save time (same size: damaged or replaced)"
    return None


def unlisted_files(ckdir: Path, marker: dict) -> list[str]:
    """Files under ``ckdir`` that the checkpoint does not list (never read)."""
    return sorted(str(p.relative_to(ckdir)) for p in ckdir.rglob("*")
                  if p.is_file() and p.name != MARKER and str(p.relative_to(ckdir)) not in marker["files"])


def verify(accelerator: Accelerator, ckdir: Path) -> tuple[dict | None, list[str]]:
    """(marker, problems) of a checkpoint folder; every rank hashes a share of its files, all get the result."""
    try:
        marker = read_marker(ckdir)
    except CheckpointError as e:
        return None, [str(e)]
    names = sorted(marker["files"])
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = [check_file(ckdir, n, marker["files"][n]) for n in names[rank::world]]
    problems = [p for p in gather_object([p for p in mine if p]) if p]
    return marker, sorted(problems)


@contextlib.contextmanager
def weights_only_loads(allowed: list | tuple = ()) -> Iterator[None]:
    """Within the block every ``torch.load`` (DeepSpeed's too) runs with ``weights_only=True``.

    ``allowed``: classes the pickles may build besides tensors and plain containers (data-only classes of
    DeepSpeed's files). A pickle that needs anything else is refused with a CheckpointError naming the file.
    """
    real = torch.load

    def safe_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True  # whatever the caller asked for
        try:
            with torch.serialization.safe_globals(list(allowed)):
                return real(f, *args, **kwargs)
        except pickle.UnpicklingError as e:
            found = re.search(r"GLOBAL (\S+)", str(e))
            why = f"it calls {found.group(1)}" if found else str(e).strip().splitlines()[0]
            raise CheckpointError(f"{f}: refused: it is a pickle that builds objects other than tensors and plain "
                                  f"containers, and loading it could run code ({why})") from None

    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = real


# ----------------------------------------------------------------------------------------------
# Configuration comparison
# ----------------------------------------------------------------------------------------------
def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """(changes that alter the run, changes that do not), each ``key: checkpoint X, now Y``, between two configs."""
    a, b = _flat(saved), _flat(current)
    stream = b.get("data.shard_access") == "stream" and any(str(s).startswith("shards=")
                                                             for s in b.get("data.train_sources", []))
    altering, neutral = [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") == b.get(key, "<absent>"):
            continue
        line = f"{key}: checkpoint {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r}"
        is_neutral = key in RUN_NEUTRAL_KEYS or key.startswith(RUN_NEUTRAL_SECTIONS)
        if key == "data.num_workers" and stream:
            is_neutral = False  # the stream's lanes follow the worker count
        (neutral if is_neutral else altering).append(line)
    return altering, neutral


# ----------------------------------------------------------------------------------------------
# Choosing the checkpoint to resume from
# ----------------------------------------------------------------------------------------------
def warn(msg: str) -> None:
    """A warning line on stderr (the run goes on)."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def find_resume_point(accelerator: Accelerator, run_dir: Path, which: str, cfg: Config,
                      allow_config_change: bool = False) -> tuple[Path, dict] | None:
    """The verified checkpoint to resume from and its marker, or None for a fresh start.

    ``which``: "" (fresh start: refused if the run directory holds checkpoints), "auto" (the newest intact
    complete checkpoint; an older one, with a warning, when the newer are damaged; None if there is none) or a
    checkpoint folder (used as is, or refused). Every rank calls it and gets the same answer. First the main
    process finishes or removes the folders of interrupted saves (``.tmp_step_*``, ``.old_step_*``).
    """
    if accelerator.is_main_process:
        finish_interrupted_saves(run_dir)
    accelerator.wait_for_everyone()
    found = scan(run_dir)
    if accelerator.is_main_process:
        for line in found.warnings():
            warn(line)
    if not which:
        if found.complete or found.unmarked:
            have = ", ".join(p.name for p in (found.complete + found.unmarked)[-3:])
            raise CheckpointError(f"train.output_dir={run_dir} already holds checkpoints ({have}): pass --resume "
                                  "auto to continue that run, or choose another train.output_dir")
        return None
    if which != "auto":
        path = Path(which)
        marker, problems = verify(accelerator, path)
        if problems:
            raise CheckpointError(f"--resume {path}: not an intact checkpoint: " + "; ".join(problems))
        _check_config(marker, path, cfg, accelerator, allow_config_change)
        return path, marker
    if not found.complete:
        if found.unmarked:
            raise CheckpointError(
                f"--resume auto: {run_dir / 'checkpoints'} holds {', '.join(p.name for p in found.unmarked)} but no "
                f"complete checkpoint (a folder with a {MARKER}): written by an older lorat_scale (whose pickled "
                "state is not loaded: it can run code) or by something else. Resume them with the version that "
                "wrote them, or move them away to start over")
        return None
    damaged = []
    for path in reversed(sorted(found.complete, key=step_of)):
        marker, problems = verify(accelerator, path)
        if not problems and marker.get("step") != step_of(path):
            problems = [f"{MARKER} says step {marker.get('step')}, the folder step {step_of(path)}"]
        if not problems:
            if damaged and accelerator.is_main_process:
                warn(f"resuming from {path.name}, the newest intact checkpoint; "
                     + " | ".join(f"{p.name} is damaged: {'; '.join(pr)}" for p, pr in damaged))
            _check_config(marker, path, cfg, accelerator, allow_config_change)
            return path, marker
        damaged.append((path, problems))
    raise CheckpointError("--resume auto: no intact checkpoint in " + str(run_dir / "checkpoints") + ": "
                          + " | ".join(f"{p.name}: {'; '.join(pr)}" for p, pr in damaged)
                          + " (move them away to start over)")


def _check_config(marker: dict, path: Path, cfg: Config, accelerator: Accelerator, allow: bool) -> None:
    """Refuse a resume whose configuration or world size changes the run (unless ``allow``); note the rest.

    Also names the files in ``path`` that the checkpoint does not list: they are never read.
    """
    extra = unlisted_files(path, marker) if accelerator.is_main_process else []
    if extra:
        warn(f"{path}: {', '.join(extra)}: not written by the trainer (not in {MARKER}); never read")
    altering, neutral = config_changes(marker.get("config", {}), cfg.to_dict())
    world, saved_world = accelerator.num_processes, marker.get("world_size", accelerator.num_processes)
    if world != saved_world:
        if cfg.train.ds_config:
            raise CheckpointError(f"{path}: written by {saved_world} processes, resumed by {world}: DeepSpeed's "
                                  "optimizer partitions cannot be re-split by a resume; use the same world size")
        line = f"world size: checkpoint {saved_world}, now {world}"
        if cfg.data.shard_access == "stream" and any(s.startswith("shards=") for s in cfg.data.train_sources):
            altering.append(line + " (the shard stream's lanes are split by rank)")
        else:
            neutral.append(line + " (the same pairs per step; summation order differs, so not bitwise)")
    if altering and not allow:
        raise CheckpointError(
            f"{path} was written with another configuration; these differences change the run:\n  "
            + "\n  ".join(altering)
            + "\nresume with the checkpoint's values, or pass --allow-config-change to go on with the new ones")
    if accelerator.is_main_process:
        if altering:
            warn(f"resuming {path} with a changed configuration (--allow-config-change): " + "; ".join(altering))
        if neutral:
            print(f"resuming {path}; changed settings that do not alter the run: " + "; ".join(neutral), flush=True)


# ----------------------------------------------------------------------------------------------
# The state files
# ----------------------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's generator states as (tensors, metadata) for a safetensors file."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"python": torch.tensor(internal, dtype=torch.int64),
               "numpy": torch.from_numpy(keys.astype(np.int64)), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    meta = {"python_version": str(version), "python_gauss": repr(gauss), "numpy_pos": str(pos),
            "numpy_has_gauss": str(has_gauss), "numpy_gauss": repr(float(cached))}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Restore what ``rng_state`` returned."""
    gauss = None if meta["python_gauss"] == "None" else float(meta["python_gauss"])
    random.setstate((int(meta["python_version"]), tuple(int(x) for x in tensors["python"].tolist()), gauss))
    np.random.set_state(("MT19937", tensors["numpy"].numpy().astype(np.uint32), int(meta["numpy_pos"]),
                         int(meta["numpy_has_gauss"]), float(meta["numpy_gauss"])))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The per-parameter optimizer state as (tensors ``<param index>.<name>``, the JSON-able rest).

    Hyper-parameters (lr, betas, weight decay) are not saved: they come from the configuration and the
    schedule, which is a function of the step.
    """
    tensors, scalars = {}, {}
    for idx, st in optimizer.state_dict()["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{name}"] = v.detach().to("cpu").contiguous()
            elif v is None or isinstance(v, (bool, int, float, str)):
                scalars[f"{idx}.{name}"] = v
            else:
                raise CheckpointError(f"optimizer state {idx}.{name} is a {type(v).__name__}: not saveable as "
                                      "tensors or JSON")
    return tensors, {"params": sum(len(g["params"]) for g in optimizer.param_groups), "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict,
                         source: str) -> None:
    """Restore ``optimizer_state``'s output into ``optimizer`` (whose hyper-parameters stay as configured)."""
    n = sum(len(g["params"]) for g in optimizer.param_groups)
    if rest["params"] != n:
        raise CheckpointError(f"{source}: optimizer state of {rest['params']} parameters, the model trains {n}")
    state: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *rest["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)


class Checkpoints:
    """Saving and loading the run's state (see the module docstring); every rank calls ``save`` and ``load``.

    Weights go through ``save_trainable``/``load_trainable`` on ``raw_model``, the plain LoRAT module (no DDP,
    DeepSpeed or torch.compile wrapper: its parameter names are the checkpoint's); the frozen backbone is
    never saved. ``engine``: the DeepSpeed engine (it saves and loads the optimizer partitions itself).
    """

    def __init__(self, accelerator: Accelerator, run_dir: Path, raw_model: torch.nn.Module, optimizer: Any,
                 state: Any, cfg: Config, ds_stage: int | None = None, engine: Any = None) -> None:
        self.accelerator, self.run_dir, self.raw_model, self.optimizer = accelerator, run_dir, raw_model, optimizer
        self.state, self.cfg, self.ds_stage, self.engine = state, cfg, ds_stage, engine  # ds_stage None: no DeepSpeed

    # ------------------------------------------------------------------------------------ save
    def save_weights(self, path: Path) -> None:
        """The trainable tensors to ``path`` (main process; every rank must call it under ZeRO-3)."""
        if self.ds_stage == 3:
            import deepspeed

            # Partitioned parameters: gathered on every rank for the write.
            with deepspeed.zero.GatheredParameters([p for p in self.raw_model.parameters() if p.requires_grad]):
                if self.accelerator.is_main_process:
                    _named(path, lambda: save_trainable(self.raw_model, path, self.cfg.variant))
        elif self.accelerator.is_main_process:
            _named(path, lambda: save_trainable(self.raw_model, path, self.cfg.variant))

    def _all_ranks(self, what: str, fn: Any) -> Any:
        """Run ``fn`` on this rank; if it fails to write on any rank, every rank raises one CheckpointError."""
        err, out = None, None
        try:
            out = fn()
        except OSError as e:
            err = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        except RuntimeError as e:  # torch.save (DeepSpeed's files): "PytorchStreamWriter failed writing file"
            if "PytorchStreamWriter" not in str(e) and "write failed" not in str(e):
                raise
            err = str(e).strip().splitlines()[0]
        errors = [e for e in gather_object([err]) if e]
        if errors:
            raise CheckpointError(f"cannot write {what}: {errors[0]}")
        return out

    def save(self) -> Path:
        """Save the state at ``state.step``; keep the newest ``train.keep_checkpoints`` complete checkpoints."""
        acc, step = self.accelerator, self.state.step
        ckdir = self.run_dir / "checkpoints"
        final, tmp = ckdir / f"step_{step:08d}", ckdir / f".tmp_step_{step:08d}"
        try:
            self._write(tmp, step)
            self._all_ranks(f"checkpoint {final}", lambda: self._publish(tmp, final) if acc.is_main_process else None)
        except CheckpointError as e:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)  # frees what the failed save took
            done = [p.name for p in scan(self.run_dir).complete]
            raise CheckpointError(f"{e}; the last complete checkpoint is kept "
                                  f"({done[-1] if done else 'none was written yet'}): fix the cause, then resume with "
                                  "--resume auto") from None
        acc.wait_for_everyone()
        return final

    def _write(self, tmp: Path, step: int) -> None:
        """Every rank writes its files into ``tmp``; the ranks hash them; the main process writes the marker."""
        acc = self.accelerator
        main = acc.is_main_process

        def prepare() -> None:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)

        self._all_ranks(f"checkpoint folder {tmp}", prepare)

        def write_own() -> None:
            if self.ds_stage is not None:  # collective: the engine writes its (partitioned) optimizer state
                self.engine.save_checkpoint(str(tmp / DS_DIR), DS_TAG, save_latest=False,
                                            exclude_frozen_parameters=True)
            self.save_weights(tmp / "model.safetensors")
            tensors, meta = rng_state()
            rng = tmp / f"rng_rank{acc.process_index}.safetensors"
            _named(rng, lambda: save_file(tensors, str(rng), metadata=meta))
            if main:
                trainer = {"state": self.state.state_dict(), "accelerate_step": acc.step,
                           "scaler": acc.scaler.state_dict() if acc.scaler is not None else None}
                if self.ds_stage is None:
                    opt, trainer["optimizer"] = optimizer_state(self.optimizer)
                    _named(tmp / "optimizer.safetensors", lambda: save_file(opt, str(tmp / "optimizer.safetensors")))
                (tmp / "trainer_state.json").write_text(json.dumps(trainer, indent=1))

        self._all_ranks(f"checkpoint {tmp}", write_own)
        acc.wait_for_everyone()
        names = broadcast_object_list([sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
                                       if main else None])[0]
        mine = self._all_ranks(f"checkpoint {tmp}", lambda: {
            n: {"size": (tmp / n).stat().st_size, "sha256": sha256_file(tmp / n)}
            for n in names[acc.process_index::acc.num_processes]})
        files = {k: v for d in gather_object([mine]) for k, v in d.items()}

        def write_marker() -> None:
            if main:
                marker = {"format": FORMAT, "step": step, "world_size": acc.num_processes,
                          "config": self.cfg.to_dict(), "files": dict(sorted(files.items()))}
                (tmp / MARKER).write_text(json.dumps(marker, indent=1))

        self._all_ranks(f"checkpoint {tmp / MARKER}", write_marker)

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename the complete ``tmp`` to ``final`` (replacing an older save of the step), then prune (main)."""
        if final.exists():
            if not (final / MARKER).is_file():
                raise CheckpointError(f"{final} exists and is not a checkpoint of this trainer (no {MARKER}); "
                                      "move it away")
            old = final.with_name(f".old_{final.name}")  # a damaged save of this step (the resume fell back)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        keep = self.cfg.train.keep_checkpoints
        for old in sorted(scan(self.run_dir).complete, key=step_of)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------------------------ load
    def load(self, path: Path, marker: dict) -> None:
        """Restore the state saved in ``path`` (verified by ``find_resume_point``) on every rank."""
        acc = self.accelerator
        try:
            if self.ds_stage is not None:
                check_finite(load_file(str(path / "model.safetensors")), str(path / "model.safetensors"))
                with weights_only_loads(deepspeed_safe_globals()):
                    self.engine.load_checkpoint(str(path / DS_DIR), DS_TAG, load_module_strict=False,
                                                load_lr_scheduler_states=False)
            else:
                load_trainable(self.raw_model, path / "model.safetensors")
            trainer = json.loads((path / "trainer_state.json").read_text())
            if self.ds_stage is None:
                load_optimizer_state(self.optimizer, load_file(str(path / "optimizer.safetensors")),
                                     trainer["optimizer"], str(path / "optimizer.safetensors"))
            rng = path / f"rng_rank{acc.process_index}.safetensors"
            if rng.is_file():
                with safe_open(str(rng), "pt") as f:
                    set_rng_state({k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {})
            else:  # a rank the saving run did not have (another world size: noted by find_resume_point)
                warn(f"{path}: no RNG state for rank {acc.process_index}; it keeps its seed")
        except (CheckpointMismatchError, SafetensorError, KeyError, ValueError, OSError) as e:
            raise CheckpointError(f"{path}: cannot load it: {e}") from None
        self.state.load_state_dict(trainer["state"])
        acc.step = trainer["accelerate_step"]
        if acc.scaler is not None and trainer.get("scaler"):
            acc.scaler.load_state_dict(trainer["scaler"])


def deepspeed_safe_globals() -> list:
    """Data-only classes DeepSpeed's optimizer pickles hold besides tensors, allowed under weights_only.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on ZeRO-2 files (deepspeed 0.19): the loss
    scalers (their attributes are numbers), the ZeRO stage (an int enum) and a fragment's (start, numel) address.
    None of them defines ``__setstate__`` or ``__reduce__``: building them sets attributes, runs no code.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
