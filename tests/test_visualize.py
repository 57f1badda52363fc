"""Annotated GIFs: the boxes land where they should, in their colours, on every kept frame."""
from __future__ import annotations

import numpy as np
from PIL import Image

from lorat_scale.evaluation.benchmarks import load_sequences
from lorat_scale.evaluation.visualize import COLOURS, GT_COLOUR, write_tracking_gif


def test_tracking_gif_draws_ground_truth_and_each_tracker(tmp_path, shared_data):
    (seq,) = load_sequences("otb", shared_data / "otb", "Crossing")  # 360x240
    seq.frames, seq.boxes, seq.valid = seq.frames[:7], seq.boxes[:7], seq.valid[:7]
    shifted = seq.boxes + [40, 20, 40, 20]
    path = write_tracking_gif(seq, {"a": shifted, "b": np.full((7, 4), np.nan)}, tmp_path / "x.gif", every=3, width=180)
    gif = Image.open(path)
    assert gif.n_frames == 3 and gif.size == (180, 120)  # frames 1, 4, 7 at half size
    gif.seek(1)
    rgb = np.asarray(gif.convert("RGB")).astype(int)
    s = 0.5
    gx1, gy1, gx2, gy2 = (int(round(v * s)) for v in seq.boxes[3])
    ax1, ay1, ax2, ay2 = (int(round(v * s)) for v in shifted[3])
    # GIF palettes round colours a little: compare with a tolerance.
    assert np.abs(rgb[(gy1 + gy2) // 2, gx2] - GT_COLOUR).max() < 40  # right edge of the ground truth
    assert np.abs(rgb[ay2, (ax1 + ax2) // 2] - COLOURS[0]).max() < 40  # bottom edge of tracker "a"
    assert np.abs(rgb[ay2 + 6, (ax1 + ax2) // 2] - COLOURS[0]).max() > 60  # nothing drawn beside it
