"""SLURM launch rendering from a fake SLURM environment; sbatch scripts parse."""
from __future__ import annotations

import re
import subprocess
import sys
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
    cmd = render(env, ["scripts/train.py", "--variant", "L-224", "--ds", "ds_configs/zero2.json"])
    # The interpreter that runs the launcher runs accelerate (not whatever `accelerate` PATH finds).
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    opts = dict(zip(cmd[3:], cmd[4:]))
    assert opts["--num_machines"] == "2" and opts["--machine_rank"] == "1"
    assert opts["--main_process_ip"] == "gpu12"  # the first host, on every node
    assert opts["--main_process_port"] == str(20000 + 123456 % 20000)
    assert opts["--num_processes"] == "8"  # total processes over all nodes
    assert "--multi_gpu" in cmd and opts["--rdzv_backend"] == "static"
    assert cmd[-5:] == ["scripts/train.py", "--variant", "L-224", "--ds", "ds_configs/zero2.json"]
    # Node 0 renders the same command except its rank.
    cmd0 = render({**env, "SLURM_NODEID": "0"}, ["scripts/train.py"])
    assert dict(zip(cmd0[3:], cmd0[4:]))["--machine_rank"] == "0"
    # The node's CPUs are passed on explicitly, shared by its GPU processes.
    cmd = render({**env, "SLURM_CPUS_PER_TASK": "64"}, ["t.py"], python="/venv/bin/python")
    assert cmd[0] == "/venv/bin/python" and dict(zip(cmd[3:], cmd[4:]))["--num_cpu_threads_per_process"] == "16"


def test_render_single_gpu_and_mismatch():
    # One process: the training itself, no launcher in between (SIGTERM must reach it: issue 13).
    cmd = render({"SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "1", "SLURM_NODEID": "0"}, ["-m", "m", "a"],
                 port=29500, python="/venv/bin/python")
    assert cmd == ["/venv/bin/python", "-m", "m", "a"]
    with pytest.raises(ValueError, match="SLURM_NNODES"):
        render({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_NNODES": "2"}, [])


def test_launch_module_dry_run_and_sbatch_syntax():
    env = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2", "SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "2",
           "SLURM_JOB_ID": "7", "PATH": "/usr/bin:/bin"}
    py = str(ROOT / ".venv/bin/python")
    out = subprocess.run([py, "-m", "lorat_scale.launch", "--dry-run", "--", "-m", "lorat_scale.train",
                          "--variant", "B-224"], env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"launch: {py} -m accelerate.commands.launch --num_machines 2 --machine_rank 0 "
                          "--main_process_ip n1")
    assert "--num_processes 4 --multi_gpu" in out and out.rstrip().endswith("-m lorat_scale.train --variant B-224")
    for name in ("train_1node.sbatch", "train_multinode.sbatch"):
        path = ROOT / "scripts" / "slurm" / name
        subprocess.run(["bash", "-n", str(path)], check=True)
        text = path.read_text()
        assert "lorat_scale.launch" in text and "--resume auto" in text and "--variant" in text
        # Recent Slurm does not pass --cpus-per-task on to srun steps: the job files pass it explicitly.
        assert re.search(r'srun [^\n]*--cpus-per-task="\$\{SLURM_CPUS_PER_TASK\}"', text), name


def test_rendered_command_starts_the_training_entry_without_accelerate_on_path(tmp_path):
    """The launcher's own interpreter runs accelerate and the module: nothing is looked up on PATH."""
    env = {"SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_ID": "11",
           "SLURM_CPUS_PER_TASK": "2", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    # A light module stands in for -m lorat_scale.train (what matters is what starts it).
    for gpus, via in (("1", f"launch: {ROOT / '.venv/bin/python'} -m platform"),
                      ("2", f"launch: {ROOT / '.venv/bin/python'} -m accelerate.commands.launch")):
        proc = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "lorat_scale.launch", "--", "-m", "platform"],
                              env={**env, "SLURM_GPUS_ON_NODE": gpus}, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith(via) and "Linux" in proc.stdout
