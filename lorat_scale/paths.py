"""Where lorat_scale finds the shared sample data and golden tensors (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """``$LORAT_CACHE`` or ``~/.cache/lorat_scale``: converted weights, exported and quantized models."""
    env = os.environ.get("LORAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lorat_scale"


def shared_root() -> Path:
    """``$LORAT_SHARED`` or ``<repo>/../shared`` (the layout of the project's machines)."""
    return Path(os.environ.get("LORAT_SHARED", REPO_ROOT.parent / "shared")).resolve()


def shared_data() -> Path:
    """Real sample sequences, COCO photos and annotations (``shared/data``)."""
    return shared_root() / "data"


def golden() -> Path:
    """Tensors produced by the official LoRAT implementation (``shared/golden``)."""
    return shared_root() / "golden"
