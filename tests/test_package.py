"""The package stands on its own: no module reaches into the checkout (scripts/, ../shared, setup.cfg).

The package folder alone is copied to a temporary directory and used from there, with that
directory as the working directory: every module imports, and the training entry trains a tiny
model for one step. (A real ``pip install .`` into a fresh venv, run from another folder with
``lorat-scale quickstart``, was done once by hand; docs/TRAINING.md says how.)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

IMPORT_ALL_THEN_TRAIN = """
import importlib, pkgutil, sys, lorat_scale
assert lorat_scale.__file__.startswith(sys.argv[1]), lorat_scale.__file__
names = [m.name for m in pkgutil.walk_packages(lorat_scale.__path__, 'lorat_scale.') if not m.name.endswith('__main__')]
for n in names:
    importlib.import_module(n)
print(len(names), 'modules imported')
from lorat_scale.train.loop import main
sys.exit(main(sys.argv[2:]))
"""


def test_the_package_alone_imports_every_module_and_trains(tmp_path, shared_data):
    where = tmp_path / "alone"
    shutil.copytree(ROOT / "lorat_scale", where / "lorat_scale", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(where), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("LORAT_SHARED", None)
    run = where / "run"
    train = ["--variant", "S-224", "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.lora_r=4",
             "model.template_size=28", "model.search_size=56", "model.pretrain_grid=6", "train.precision=fp32",
             "train.log_with=none", "data.num_workers=0", f"data.train_sources=[lasot:all={shared_data / 'lasot'}]",
             "data.pairs_per_epoch=2", "train.global_batch=2", "train.micro_batch=2", "train.epochs=1",
             f"train.output_dir={run}"]
    proc = subprocess.run([PY, "-c", IMPORT_ALL_THEN_TRAIN, str(where), *train], cwd=where, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) > 40 and "done: 1 steps" in proc.stdout
    assert (run / "model.safetensors").is_file()


def test_quickstart_trains_through_the_module_not_a_script_path(tmp_path, monkeypatch):
    from lorat_scale import quickstart

    seen = []
    monkeypatch.setattr(quickstart.subprocess, "run", lambda cmd, **kw: seen.append(cmd))
    quickstart._train(tmp_path / "data", tmp_path / "out", steps=2, batch=2)
    cmd = seen[0]
    assert cmd[:5] == [sys.executable, "-m", "lorat_scale.train", "--recipe", "quickstart"]
    assert "data.pairs_per_epoch=4" in cmd and "train.global_batch=2" in cmd
    assert not any(str(ROOT) in str(a) for a in cmd[1:])  # nothing of the checkout (the venv aside)


LOOKUP_VOT_TRAIN = """
import sys
from pathlib import Path
from lorat_scale.data.readers import got10k
root = Path(sys.argv[1])
folder, names = got10k.sequence_names(root, "vot_train")
print(got10k._subset_file(root, "vot_train", None), len(names), names[0])
"""


def test_a_built_wheel_ships_the_got10k_split_files(tmp_path):
    """pip builds a wheel from the source files alone, installs it elsewhere, and vot_train resolves from it."""
    src = tmp_path / "src"  # built from a copy: building in the checkout would leave build/ and *.egg-info behind
    shutil.copytree(ROOT / "lorat_scale", src / "lorat_scale", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("setup.cfg", "setup.py", "README.md"):
        shutil.copy(ROOT / f, src / f)
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("LORAT_SHARED", None)
    build = subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("lorat_scale-*.whl")
    site = tmp_path / "site"
    inst = subprocess.run([PY, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    # A GOT-10k root without the split file: 9,335 training folders listed (GOT-10k's train/list.txt).
    root = tmp_path / "GOT-10k"
    (root / "train").mkdir(parents=True)
    (root / "train" / "list.txt").write_text("\n".join(f"GOT-10k_Train_{i:06d}" for i in range(1, 9336)) + "\n")
    proc = subprocess.run([PY, "-c", LOOKUP_VOT_TRAIN, str(root)], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(env, PYTHONPATH=str(site)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path, count, first = proc.stdout.split()
    assert path == str(site / "lorat_scale" / "data" / "readers" / "splits" / "got10k_vot_train_split.txt")
    assert int(count) == 7086 and first == "GOT-10k_Train_003785"  # the list's first index is 3784 (0-based)
