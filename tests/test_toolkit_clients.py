"""The field's toolkits run our tracker through their own loops: got10k-toolkit and the VOT toolkit.

The tracker is the tiny golden LoRAT model (depth 2, real weights of the official code), on
sample sequences cut short and laid out as each toolkit expects.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorat_scale.evaluation.benchmarks import load_ground_truth
from lorat_scale.evaluation.metrics import score_sequence, summarize
from lorat_scale.evaluation.results import read_boxes_txt
from lorat_scale.tracking import Tracker

pytest.importorskip("got10k", reason="got10k-toolkit is a test dependency (setup.cfg dev extra)")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module tracks with the tiny model on one thread (see conftest)."""


@pytest.fixture(scope="module")
def model(golden) -> dict:
    d = golden / "model" / "S-gelu"
    return {"path": d / "lorat_checkpoint.safetensors", "backbone": str(d / "backbone.safetensors"),
            "variant": "S-224", "overrides": ["model.depth=2"], "device": "cpu"}


def _tracker(model: dict) -> Tracker:
    return Tracker.from_checkpoint(model["path"], variant=model["variant"], backbone=model["backbone"],
                                   overrides=model["overrides"], device=model["device"])


def _link_frames(src: list[Path], dst: Path, pattern: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(src, 1):
        os.symlink(f, dst / pattern.format(i))


def test_got10k_experiment_otb_runs_our_tracker_and_scores_like_us(tmp_path, shared_data, model, monkeypatch):
    from got10k.datasets import OTB
    from got10k.experiments import ExperimentOTB

    from lorat_scale.integrations.got10k import Got10kTracker

    n = 25
    src = shared_data / "otb" / "Crossing"
    root = tmp_path / "OTB"
    _link_frames(sorted((src / "img").glob("*.jpg"))[:n], root / "Crossing" / "img", "{:04d}.jpg")
    (root / "Crossing" / "groundtruth_rect.txt").write_text(
        "\n".join((src / "groundtruth_rect.txt").read_text().splitlines()[:n]) + "\n")
    # The toolkit knows OTB-2013/2015 as fixed lists (and downloads the rest): a one-sequence version.
    monkeypatch.setitem(OTB._OTB__version_dict, "lorat_sample", ["Crossing"])
    e = ExperimentOTB(str(root), version="lorat_sample", result_dir=str(tmp_path / "res"),
                      report_dir=str(tmp_path / "rep"))
    tracker = Got10kTracker(_tracker(model), name="LoRAT")
    e.run(tracker)
    perf = e.report([tracker.name])[tracker.name]["overall"]
    boxes = read_boxes_txt(tmp_path / "res" / "OTBlorat_sample" / "LoRAT" / "Crossing.txt")  # its own file
    gt = load_ground_truth("otb", root)[0]
    ours = summarize("got10k", [[score_sequence("got10k", boxes, gt.boxes, benchmark="otb")]], benchmark="otb")
    assert ours.scores == {"AUC": 100 * perf["success_score"], "P": 100 * perf["precision_score"],
                           "SR0.5": 100 * perf["success_rate"]}
    # ...and the boxes it wrote (%.3f) are our tracker's boxes on the same frames
    t = _tracker(model)
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in sorted((root / "Crossing" / "img").glob("*.jpg"))]
    t.init(frames[0], gt.boxes[0], box_format="xywh")
    mine = np.array([gt.boxes[0]] + [np.r_[b[:2], b[2:] - b[:2]] for b in (t.track(f)[0] for f in frames[1:])])
    np.testing.assert_allclose(boxes, mine, atol=5e-4, rtol=0)


def test_got10k_experiment_got10k_val_runs_our_tracker_and_scores_like_us(tmp_path, shared_data, model):
    from got10k.experiments import ExperimentGOT10k

    from lorat_scale.integrations.got10k import Got10kTracker

    root = tmp_path / "GOT-10k"
    sources = {  # real frames and boxes, laid out as GOT-10k val (0-based x,y,w,h)
        "GOT-10k_Val_000001": (sorted((shared_data / "otb" / "Crossing" / "img").glob("*.jpg"))[:15],
                               np.loadtxt(shared_data / "otb" / "Crossing" / "groundtruth_rect.txt")[:15], (360, 240)),
        "GOT-10k_Val_000002": (sorted((shared_data / "lasot" / "airplane" / "airplane-1" / "img").glob("*.jpg"))[:15],
                               np.loadtxt(shared_data / "lasot" / "airplane" / "airplane-1" / "groundtruth.txt",
                                          delimiter=",")[:15] - [1, 1, 0, 0], (640, 360)),
    }
    for name, (frames, boxes, (w, h)) in sources.items():
        d = root / "val" / name
        _link_frames(frames, d, "{:08d}.jpg")
        np.savetxt(d / "groundtruth.txt", boxes, fmt="%.4f", delimiter=",")
        cover = np.full(len(boxes), 8)
        cover[5] = 0  # one frame marked fully occluded: the toolkit leaves it out, and so must we
        np.savetxt(d / "cover.label", cover, fmt="%d")
        np.savetxt(d / "absence.label", (cover == 0).astype(int), fmt="%d")
        np.savetxt(d / "cut_by_image.label", np.zeros(len(boxes), int), fmt="%d")
        (d / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: sample\nresolution: ({w}, {h})\n")
    (root / "val" / "list.txt").write_text("\n".join(sources) + "\n")
    e = ExperimentGOT10k(str(root), subset="val", result_dir=str(tmp_path / "res"), report_dir=str(tmp_path / "rep"))
    tracker = Got10kTracker(_tracker(model), name="LoRAT")
    e.run(tracker)  # deterministic: one repetition
    perf = e.report([tracker.name])[tracker.name]["overall"]
    gts = load_ground_truth("got10k_val", root)
    per_seq = [[score_sequence("got10k", read_boxes_txt(tmp_path / "res" / "GOT-10k" / "LoRAT" / g.name /
                                                        f"{g.name}_001.txt"), g.boxes, cover=g.cover,
                               resolution=g.resolution, benchmark="got10k_val")] for g in gts]
    ours = summarize("got10k", per_seq, benchmark="got10k_val")
    assert ours.scores["AO"] == 100 * perf["ao"] and ours.scores["SR0.5"] == 100 * perf["sr"]
    assert np.array_equal(ours.curves["success"].y, 100 * np.asarray(perf["succ_curve"]))
    assert sum(len(s[0].curves["ious"]) for s in per_seq) == 2 * (15 - 2)  # frame 0 and the occluded frame out


def _vot_workspace(tmp_path: Path, shared_data: Path, model: dict, n: int) -> Path:
    from lorat_scale.integrations.vot import trackers_ini

    ws = tmp_path / "vot"
    seqs = ws / "sequences"
    for name, src in (("bag", shared_data / "vot" / "bag"), ("ball1", shared_data / "vot" / "vot15_ball1" / "imgs")):
        gt = (src.parent if name == "ball1" else src) / "groundtruth.txt"
        _link_frames(sorted(src.glob("*.jpg"))[:n], seqs / name / "color", "{:08d}.jpg")
        (seqs / name / "groundtruth.txt").write_text("\n".join(gt.read_text().splitlines()[:n]) + "\n")
        (seqs / name / "sequence").write_text("channels.color=color/%08d.jpg\nfps=30\nformat=default\n")
    (seqs / "list.txt").write_text("bag\nball1\n")
    # VOT2016's baseline experiment (supervised: re-initialised 5 frames after a failure) on two short
    # sequences; EAO over sequence lengths 5..15 (VOT2016 used 108..371 on its 60 full sequences).
    (ws / "stack.yaml").write_text("title: VOT2016 baseline on bag and ball1 (short)\nexperiments:\n"
                                   "  baseline:\n    type: supervised\n    repetitions: 1\n    skip_initialize: 5\n"
                                   "    analyses:\n      - type: supervised_average_ar\n        sensitivity: 30\n"
                                   "      - type: supervised_eao_score\n        low: 5\n        high: 15\n")
    (ws / "config.yaml").write_text("stack: stack.yaml\nregistry:\n- ./trackers.ini\n")
    (ws / "trackers.ini").write_text(trackers_ini(str(model["path"]), model["backbone"], variant=model["variant"],
                                                  overrides=model["overrides"], device=model["device"],
                                                  env={"OMP_NUM_THREADS": "1"}, timeout=300))
    return ws


def test_vot_toolkit_runs_lorat_over_trax(tmp_path, shared_data, model, capsys):
    """`vot evaluate` starts our TraX tracker process; `vot analysis` computes A, R and EAO (its code)."""
    pytest.importorskip("vot", reason="vot-toolkit is a test dependency (setup.cfg dev extra)")
    from vot.region import Special
    from vot.region.io import read_trajectory

    n = 20
    ws = _vot_workspace(tmp_path, shared_data, model, n)
    for cmd, done in ((["evaluate", "--workspace", str(ws), "LoRAT"], "Evaluation concluded"),
                      (["analysis", "--workspace", str(ws), "LoRAT", "--format", "json"], "Analysis successful")):
        r = subprocess.run([sys.executable, "-m", "vot", *cmd], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and done in r.stdout + r.stderr, r.stdout + r.stderr
    report = json.loads(next((ws / "analysis").glob("*.json")).read_text())
    (accuracy, robustness, *_), = report["results"]["baseline"]["results"][0]
    (eao,), = report["results"]["baseline"]["results"][1]
    with capsys.disabled():
        print(f"\nVOT toolkit {report['toolkit']} on bag, ball1 ({n} frames each): "
              f"accuracy {accuracy:.4f}, robustness {robustness:.4f}, EAO {eao:.4f}")
    assert 0 <= accuracy <= 1 and 0 <= eao <= 1
    failures = {}
    for name in ("bag", "ball1"):
        traj = read_trajectory(str(next((ws / "results" / "LoRAT" / "baseline" / name).glob(f"{name}_001.*"))))
        assert len(traj) == n and isinstance(traj[0], Special) and traj[0].code == 1  # initialised on frame 1
        codes = [t.code if isinstance(t, Special) else None for t in traj]
        failures[name] = codes.count(2)
        # Until its first failure, the process ran exactly our tracker (TraX rectangles are float32)
        first_fail = codes.index(2) if 2 in codes else n
        src = ws / "sequences" / name
        frames = [np.asarray(Image.open(src / "color" / f"{i + 1:08d}.jpg").convert("RGB")) for i in range(first_fail)]
        poly = np.array([float(v) for v in (src / "groundtruth.txt").read_text().splitlines()[0].split(",")])
        xs, ys = poly[0::2], poly[1::2]
        t = _tracker(model)
        t.init(frames[0], [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()], box_format="xywh")
        for i in range(1, first_fail):
            b = t.track(frames[i])[0]
            r = traj[i]
            np.testing.assert_allclose([r.x, r.y, r.x + r.width, r.y + r.height], b, atol=2e-3, rtol=0)
    # The toolkit's robustness is the failure count, weighted by sequence length: counted from the files
    assert robustness == pytest.approx((failures["bag"] * n + failures["ball1"] * n) / (2 * n))
