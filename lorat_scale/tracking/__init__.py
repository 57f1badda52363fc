"""Tracking: post-processing and the ``Tracker`` / ``BatchTracker`` API."""
from .postprocess import hann_window, postprocess

__all__ = ["hann_window", "postprocess", "Tracker", "BatchTracker"]


def __getattr__(name: str) -> type:
    """Import the tracker lazily (it pulls in the model and crop modules)."""
    if name in ("Tracker", "BatchTracker"):
        from . import tracker

        return getattr(tracker, name)
    raise AttributeError(name)
