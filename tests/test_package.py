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
    quickstart._train(tmp_path / "data", tmp_path / "backbone.safetensors", tmp_path / "out", steps=2, batch=2)
    cmd = seen[0]
    assert cmd[:4] == [sys.executable, "-m", "lorat_scale.train", "--variant"]
    assert not any(str(ROOT) in str(a) for a in cmd[1:])  # nothing of the checkout (the venv aside)
