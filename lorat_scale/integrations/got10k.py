"""got10k-toolkit adapter: ``ExperimentOTB``, ``ExperimentGOT10k``, ``ExperimentLaSOT`` (and the
toolkit's other experiments) run a LoRAT tracker as they run any other.

    from got10k.experiments import ExperimentGOT10k
    from lorat_scale.integrations.got10k import Got10kTracker

    tracker = Got10kTracker.from_checkpoint("run/model.safetensors", backbone="dinov2_vitb14_pretrain.pth")
    e = ExperimentGOT10k("/data/GOT-10k", subset="val", result_dir="results", report_dir="reports")
    e.run(tracker)
    e.report([tracker.name])

The toolkit's own loop opens the frames (PIL), times ``init``/``update`` and writes its result
files; boxes cross this adapter as the toolkit's x,y,w,h and our xyxy inside. The LoRAT tracker
is deterministic, so ``is_deterministic=True``: ExperimentGOT10k runs one repetition instead of
three identical ones. ``ExperimentLaSOT`` exists in got-10k/toolkit on GitHub only (PyPI's
got10k 0.1.3 predates it); the adapter works with it unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

try:
    from got10k.trackers import Tracker as _Got10kBase
except ImportError as e:  # pragma: no cover - exercised only without the toolkit
    raise ImportError("lorat_scale.integrations.got10k needs got10k-toolkit: pip install got10k") from e

from ..boxes import xyxy_to_xywh


class Got10kTracker(_Got10kBase):
    """A ``lorat_scale.tracking.Tracker`` behind got10k-toolkit's ``init(image, box)`` / ``update(image)``."""

    def __init__(self, tracker: Any, name: str = "LoRAT") -> None:
        """Wrap ``tracker`` (anything with ``init(frame, box, box_format="xywh")`` and ``track(frame)``)."""
        super().__init__(name=name, is_deterministic=True)
        self.tracker = tracker

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str = "", **kwargs: Any) -> "Got10kTracker":
        """``Tracker.from_checkpoint(path, **kwargs)`` behind the toolkit's interface (name: the file stem)."""
        from ..tracking import Tracker

        return cls(Tracker.from_checkpoint(path, **kwargs), name=name or f"LoRAT_{Path(path).stem}")

    def init(self, image: Any, box: np.ndarray) -> None:
        """First frame (a PIL image) and the toolkit's x,y,w,h box."""
        self.tracker.init(image, np.asarray(box, dtype=np.float64), box_format="xywh")

    def update(self, image: Any) -> np.ndarray:
        """The box in the next frame, as x,y,w,h."""
        box, _score = self.tracker.track(image)
        return xyxy_to_xywh(np.asarray(box, dtype=np.float64))
