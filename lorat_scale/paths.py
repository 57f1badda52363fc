"""Where lorat_scale finds the shared sample data and golden tensors (never copied into the repo), and its cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout, when the package runs from one


def cache_dir() -> Path:
    """``$LORAT_CACHE`` or ``~/.cache/lorat_scale``: converted weights, exported and quantized models."""
    env = os.environ.get("LORAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lorat_scale"


def shared_root() -> Path:
    """``$LORAT_SHARED``; else ``shared/`` beside the checkout (the project's machines), or beside or in the cwd.

    An installed package has no checkout: it looks next to the current directory, and the callers'
    errors name ``--data`` / ``LORAT_SHARED`` when nothing is found.
    """
    if os.environ.get("LORAT_SHARED"):
        return Path(os.environ["LORAT_SHARED"]).resolve()
    candidates = [Path.cwd() / "shared", Path.cwd().parent / "shared"]
    if (REPO_ROOT / "setup.cfg").is_file():
        candidates.insert(0, REPO_ROOT.parent / "shared")
    return next((c.resolve() for c in candidates if c.is_dir()), candidates[0].resolve())


def shared_data() -> Path:
    """Real sample sequences, COCO photos and annotations (``shared/data``)."""
    return shared_root() / "data"


def golden() -> Path:
    """Tensors produced by the official LoRAT implementation (``shared/golden``)."""
    return shared_root() / "golden"
