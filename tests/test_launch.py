"""SLURM launch rendering from a fake SLURM environment; sbatch scripts parse."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lorat_scale.launch import expand_hostlist, gpus_per_node, render

ROOT = Path(__file__).resolve().parent.parent


def test_expand_hostlist():
    assert expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert expand_hostlist("node7") == ["node7"]
    assert expand_hostlist("a[8-10]-ib,b[1]") == ["a8-ib", "a9-ib", "a10-ib", "b1"]


def test_gpus_per_node():
    assert gpus_per_node({"SLURM_GPUS_ON_NODE": "8"}) == 8
    assert gpus_per_node({"SLURM_GPUS_PER_NODE": "gpu:a100:4"}) == 4
    assert gpus_per_node({}) == 1


def test_render_multinode():
    env = {"SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
           "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "123456"}
    cmd = render(env, ["scripts/train.py", "--config", "L-224", "--ds", "ds_configs/zero2.json"])
    assert cmd[:2] == ["accelerate", "launch"]
    opts = dict(zip(cmd[2:], cmd[3:]))
    assert opts["--num_machines"] == "2" and opts["--machine_rank"] == "1"
    assert opts["--main_process_ip"] == "gpu12"  # the first host, on every node
    assert opts["--main_process_port"] == str(20000 + 123456 % 20000)
    assert opts["--num_processes"] == "8"  # total processes over all nodes
    assert "--multi_gpu" in cmd and opts["--rdzv_backend"] == "static"
    assert cmd[-5:] == ["scripts/train.py", "--config", "L-224", "--ds", "ds_configs/zero2.json"]
    # Node 0 renders the same command except its rank.
    cmd0 = render({**env, "SLURM_NODEID": "0"}, ["scripts/train.py"])
    assert dict(zip(cmd0[2:], cmd0[3:]))["--machine_rank"] == "0"


def test_render_single_gpu_and_mismatch():
    cmd = render({"SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "1", "SLURM_NODEID": "0"}, ["t.py"], port=29500)
    assert "--multi_gpu" not in cmd and "--rdzv_backend" not in cmd
    assert dict(zip(cmd[2:], cmd[3:]))["--num_processes"] == "1"
    with pytest.raises(ValueError, match="SLURM_NNODES"):
        render({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_NNODES": "2"}, [])


def test_launch_module_dry_run_and_sbatch_syntax():
    env = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2", "SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "2",
           "SLURM_JOB_ID": "7", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "lorat_scale.launch", "--dry-run", "--",
                          "scripts/train.py", "--config", "B-224"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("launch: accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip n1")
    assert "--num_processes 4 --multi_gpu" in out and out.rstrip().endswith("scripts/train.py --config B-224")
    for name in ("train_1node.sbatch", "train_multinode.sbatch"):
        path = ROOT / "scripts" / "slurm" / name
        subprocess.run(["bash", "-n", str(path)], check=True)
        assert "lorat_scale.launch" in path.read_text() and "--resume auto" in path.read_text()
