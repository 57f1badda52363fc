"""``lorat-scale evaluate``: running real checkpoints, results keyed on the model, scoring without
frames, result files of the wrong length, submission zips, protocol defaults, errors naming files."""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from lorat_scale.cli import main
from lorat_scale.data.readers import otb
from lorat_scale.evaluation.results import result_file, write_sequence_result

N = 6  # frames of the cut OTB Crossing (tracked by the tiny golden model)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module tracks with the tiny model on one thread (see conftest)."""


def _otb_tree(tmp_path: Path, shared_data: Path, n: int = N, images: bool = True) -> Path:
    """OTB layout with Crossing cut to ``n`` frames (frames symlinked; ground truth only if not ``images``)."""
    src = shared_data / "otb" / "Crossing"
    d = tmp_path / "otb" / "Crossing"
    (d / "img").mkdir(parents=True)
    if images:
        for i in range(1, n + 1):
            os.symlink(src / "img" / f"{i:04d}.jpg", d / "img" / f"{i:04d}.jpg")
    (d / "groundtruth_rect.txt").write_text("\n".join(src.joinpath("groundtruth_rect.txt").read_text()
                                                      .splitlines()[:n]) + "\n")
    return tmp_path / "otb"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, golden) -> tuple[Path, Path, Path]:
    """Two different trained checkpoints under the same file name, and their backbone (the tiny golden model)."""
    d = golden / "model" / "S-gelu"
    root = tmp_path_factory.mktemp("ckpt")
    a = root / "runA" / "model.safetensors"
    b = root / "runB" / "model.safetensors"
    a.parent.mkdir()
    b.parent.mkdir()
    shutil.copy(d / "lorat_checkpoint.safetensors", a)
    state = load_file(str(a))
    key = next(k for k in sorted(state) if "head" in k and k.endswith("weight"))
    state[key] = state[key] * 0.5  # another "training run": same names, same shapes, other weights
    from safetensors import safe_open

    with safe_open(str(a), "pt") as f:
        meta = f.metadata()
    save_file(state, str(b), metadata=meta)
    return a, b, d / "backbone.safetensors"


def _run(args: list[str]) -> int:
    return main(["evaluate", "--variant", "S-224", "--override", "model.depth=2", "--device", "cpu"] + args)


def test_two_checkpoints_with_one_file_name_give_two_results(tmp_path, shared_data, checkpoints, capsys):
    """Issue 15: results are keyed on what produced them (content hashes), never on the file name."""
    a, b, backbone = checkpoints
    root = _otb_tree(tmp_path, shared_data)
    common = ["--benchmark", "otb", "--root", str(root), "--results", str(tmp_path / "res"), "--backbone",
              str(backbone), "--convention", "stark"]
    assert _run(common + ["--checkpoint", str(a)]) == 0
    out_a = capsys.readouterr().out
    assert _run(common + ["--checkpoint", str(b)]) == 0
    out_b = capsys.readouterr().out
    assert "1 of 1 sequence runs to do" in out_b  # not "0 of 1": runB's results are not runA's
    params = sorted(p.name for p in (tmp_path / "res" / "lorat").iterdir() if p.is_dir() and "report" not in p.name)
    assert len(params) == 2 and all(p.startswith("S-224-") and p.endswith("_000") for p in params)
    box_a, box_b = (np.loadtxt(tmp_path / "res" / "lorat" / p / "Crossing.txt") for p in params)
    assert not np.array_equal(box_a, box_b)
    line = next(ln for ln in out_a.splitlines() if "AUC" in ln)
    assert line != next(ln for ln in out_b.splitlines() if "AUC" in ln)
    # runA again: its results are found and reused; the model is still loaded (resolved and hashed)
    assert _run(common + ["--checkpoint", str(a)]) == 0
    again = capsys.readouterr().out
    assert "0 of 1 sequence runs to do" in again and line in again
    # Forcing runB into runA's folder is refused; nothing is mixed
    pa = next(p[:-4] for p in params if str(a.resolve()) in (tmp_path / "res" / "lorat" / p / "lorat_run.json").read_text())
    assert _run(common + ["--checkpoint", str(b), "--param", pa]) == 2
    assert "holds results of another model" in capsys.readouterr().err
    # A checkpoint that does not exist is an error, also when only scoring
    for extra in ([], ["--no-run"]):
        assert _run(common + ["--checkpoint", str(tmp_path / "runC" / "model.safetensors")] + extra) == 2
        assert "checkpoint not found" in capsys.readouterr().err


def test_scoring_needs_only_annotations_and_reports_missing_runs(tmp_path, shared_data, capsys):
    root = _otb_tree(tmp_path, shared_data, n=120, images=False)  # no frames at all
    seq = otb.read(shared_data / "otb")[0]
    args = ["evaluate", "--benchmark", "otb", "--root", str(root), "--results", str(tmp_path / "r"),
            "--param", "p", "--no-run", "--repeat", "2"]
    write_sequence_result(result_file(tmp_path / "r", "lorat", "p", 0, "Crossing"), seq.boxes)
    assert main(args) == 0
    assert "1 sequence runs have no result yet" in capsys.readouterr().out  # p_001 missing
    write_sequence_result(result_file(tmp_path / "r", "lorat", "p", 1, "Crossing"), seq.boxes)
    assert main(args + ["--convention", "otb,pytracking"]) == 0
    out = capsys.readouterr().out
    assert "lorat/p on OTB-100 (1 sequences, 2 runs): AUC 95.24, P 100.00" in out  # GT vs GT: 20/21
    assert "by convention otb (OTB MATLAB toolkit" in out and "by convention pytracking (pytracking" in out
    assert (tmp_path / "r" / "lorat" / "report_otb_p" / "success_otb.png").is_file()


def test_result_files_of_the_wrong_length(tmp_path, shared_data, capsys):
    root = _otb_tree(tmp_path, shared_data, n=120, images=False)
    seq = otb.read(shared_data / "otb")[0]
    res = tmp_path / "r"
    p = result_file(res, "lorat", "p", 0, "Crossing")
    write_sequence_result(p, seq.boxes[:-1] + [3, 0, 3, 0])  # one frame short, as many published results
    args = ["evaluate", "--benchmark", "otb", "--root", str(root), "--results", str(res), "--no-run"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{p}: 119 boxes for the 120 frames of {root / 'Crossing' / 'groundtruth_rect.txt'} (1 short)" in err
    assert "--length-mismatch truncate" in err and "Traceback" not in err
    assert main(args + ["--length-mismatch", "truncate"]) == 0
    truncated = capsys.readouterr().out
    assert "scored with the ground truth cut to the result" in truncated
    assert main(args + ["--length-mismatch", "pad"]) == 0
    padded = capsys.readouterr().out
    auc = [float(t.split("AUC ")[1].split(",")[0]) for t in (truncated, padded)]
    assert auc[1] < auc[0]  # the padded frame is a miss
    write_sequence_result(p, np.concatenate([seq.boxes, seq.boxes[-1:]]))  # one frame too many: cut, noted
    assert main(args) == 0 and "longer than the ground truth were cut" in capsys.readouterr().out


def test_nan_in_a_result_file_names_file_and_line(tmp_path, shared_data, capsys):
    """Issue 16: a NaN box becomes one line with the file, the 1-based line and what was expected."""
    root = _otb_tree(tmp_path, shared_data, n=120, images=False)
    seq = otb.read(shared_data / "otb")[0]
    p = result_file(tmp_path / "r", "lorat", "p", 0, "Crossing")
    write_sequence_result(p, seq.boxes)
    lines = p.read_text().splitlines()
    lines[49] = "nan\tnan\tnan\tnan"
    p.write_text("\n".join(lines) + "\n")
    args = ["evaluate", "--benchmark", "otb", "--root", str(root), "--results", str(tmp_path / "r"), "--no-run"]
    assert main(args + ["--convention", "pytracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {p}:50: box nan,nan,nan,nan is not valid for pytracking's analysis (it stops on NaN "
                   "or a negative width/height): expected x,y,w,h with w, h >= 0")
    assert main(args + ["--convention", "otb"]) == 0  # the OTB toolkit takes the previous box instead


def test_server_benchmarks_write_rasterized_zips_with_the_protocol_runs(tmp_path, shared_data, capsys):
    frames = sorted((shared_data / "otb" / "Crossing" / "img").glob("*.jpg"))[:5]
    root = tmp_path / "got10k"
    names = ("GOT-10k_Test_000001", "GOT-10k_Test_000002")
    for name in names:
        d = root / "test" / name
        d.mkdir(parents=True)
        for i, f in enumerate(frames):
            os.symlink(f, d / f"{i + 1:08d}.jpg")
        (d / "groundtruth.txt").write_text("205,151,17,50\n")  # test split: first frame only
    (root / "test" / "list.txt").write_text("\n".join(names) + "\n")
    res = tmp_path / "res"
    args = ["evaluate", "--benchmark", "got10k_test", "--root", str(root), "--results", str(res), "--param", "p",
            "--no-run"]
    for name in names:
        write_sequence_result(result_file(res, "lorat", "p", 0, name), np.tile([205.5, 151, 222, 201], (5, 1)),
                              times=np.full(5, 0.01))
    assert main(args) == 0
    assert "4 sequence runs have no result yet" in capsys.readouterr().out  # GOT-10k test: 3 runs by default
    for r in (1, 2):
        for name in names:
            write_sequence_result(result_file(res, "lorat", "p", r, name), np.tile([205.5, 151, 222, 201], (5, 1)))
    assert main(args) == 0
    assert "upload" in capsys.readouterr().out
    with zipfile.ZipFile(res / "lorat" / "p_got10k_test.zip") as zf:
        assert len(zf.namelist()) == 2 * 4 and "GOT-10k_Test_000002/GOT-10k_Test_000002_003.txt" in zf.namelist()
        assert zf.read("GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt").decode().splitlines()[0] == "205,151,17,50"
    tn = tmp_path / "tn" / "TEST"
    (tn / "anno").mkdir(parents=True)
    (tn / "anno" / "-0Q9iFyL4j0_0.txt").write_text("205.5,151,16.5,50\n")
    write_sequence_result(result_file(res, "tn", "p", 0, "-0Q9iFyL4j0_0"), np.tile([205.5, 151, 222, 201], (5, 1)))
    assert main(["evaluate", "--benchmark", "trackingnet", "--root", str(tmp_path / "tn"), "--results", str(res),
                 "--tracker-name", "tn", "--param", "p", "--no-run"]) == 0  # one run by default
    with zipfile.ZipFile(res / "tn" / "p_trackingnet.zip") as zf:
        assert zf.read("-0Q9iFyL4j0_0.txt").decode().splitlines()[0] == "205,151,17,50"  # rasterized


def test_lasot_ext_runs_three_times_by_default(tmp_path, shared_data, capsys):
    src = shared_data / "lasot" / "airplane" / "airplane-1"
    d = tmp_path / "ext" / "airplane" / "airplane-1"
    d.mkdir(parents=True)
    for f in ("groundtruth.txt", "full_occlusion.txt", "out_of_view.txt"):
        shutil.copy(src / f, d / f)  # annotations only
    gt = np.loadtxt(src / "groundtruth.txt", delimiter=",")
    write_sequence_result(result_file(tmp_path / "r", "lorat", "p", 0, "airplane-1"),
                          np.concatenate([gt[:, :2] - 1, gt[:, :2] - 1 + gt[:, 2:]], axis=1), coord_offset=1.0)
    assert main(["evaluate", "--benchmark", "lasot_ext", "--root", str(tmp_path / "ext"), "--results",
                 str(tmp_path / "r"), "--param", "p", "--no-run"]) == 0
    assert "2 sequence runs have no result yet" in capsys.readouterr().out
