"""Render the ``accelerate launch`` command of one node from its SLURM environment.

Run once per node (``srun --ntasks-per-node=1``); it reads the SLURM variables, picks the first
host of the allocation as the rendezvous address and execs, with the interpreter that runs it:

    PYTHON -m accelerate.commands.launch --num_machines N --machine_rank NODEID --main_process_ip HOST0
        --main_process_port PORT --num_processes N*GPUS [--multi_gpu] [--num_cpu_threads_per_process T] ARGS...

    srun --ntasks-per-node=1 --cpus-per-task=$SLURM_CPUS_PER_TASK .venv/bin/python -m lorat_scale.launch -- \
        -m lorat_scale.train --variant L-224 --ds ds_configs/zero2.json

Why the interpreter and not ``accelerate`` from PATH: the job file starts a given Python (a venv's);
an ``accelerate`` found on PATH may belong to another installation, or be missing. Why
``--cpus-per-task`` on srun: since Slurm 22.05 an srun step no longer inherits the job's
``--cpus-per-task``, so each node's step would be pinned to one CPU. DeepSpeed vs DDP is decided by
the training loop (``--ds``), not by the launcher: the launcher only starts one process per GPU with
the torch.distributed environment. ``render`` is a pure function of the environment dict so that it
can be tested without a cluster.

One process in all (one node, one GPU): the training command runs as is, without ``accelerate launch``.
Its single-process launcher starts the training as a child and dies on SIGTERM without passing it on, so
the step would end (and Slurm kill the child) in the middle of the checkpoint a preemption asks for; torch's
multi-process agent does pass SIGTERM on and waits for its workers (``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``).
"""
from __future__ import annotations

import os
import re
import shlex
import sys


def expand_hostlist(nodelist: str) -> list[str]:
    """Expand a SLURM node list such as ``gpu[01-03,07],login1`` into host names.

    Own code because ``scontrol show hostnames`` exists only on the cluster (and not in tests).
    """
    hosts: list[str] = []
    # Split on commas that are not inside brackets.
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", nodelist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", item)
        if not m:
            hosts.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if hi:
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{lo}{suffix}")
    return hosts


def gpus_per_node(env: dict[str, str]) -> int:
    """GPUs of this node from SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE (``gpu:a100:4`` -> 4), else 1."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = env.get(key, "")
        if value:
            return int(value.split(":")[-1].split("(")[0])
    return 1


def default_port(env: dict[str, str]) -> int:
    """A rendezvous port derived from the job id (distinct jobs sharing a node do not collide)."""
    return 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000


def render(env: dict[str, str], train_args: list[str], port: int | None = None,
           python: str = sys.executable) -> list[str]:
    """The launch command (argv list) for the node described by the SLURM variables in ``env``."""
    hosts = expand_hostlist(env["SLURM_JOB_NODELIST"])
    num_nodes = int(env.get("SLURM_NNODES", len(hosts)))
    if len(hosts) != num_nodes:
        raise ValueError(f"SLURM_JOB_NODELIST has {len(hosts)} hosts but SLURM_NNODES={num_nodes}")
    node_rank = int(env.get("SLURM_NODEID", "0"))
    gpus = gpus_per_node(env)
    world = num_nodes * gpus
    if world == 1:  # no launcher: signals reach the training process itself (module docstring)
        return [python, *train_args]
    cmd = [python, "-m", "accelerate.commands.launch", "--num_machines", str(num_nodes),
           "--machine_rank", str(node_rank), "--main_process_ip", hosts[0],
           "--main_process_port", str(port or default_port(env)), "--num_processes", str(world)]
    if world > 1:
        cmd.append("--multi_gpu")
    cpus = int(env.get("SLURM_CPUS_PER_TASK", "0") or 0)
    if cpus:  # the node's CPUs shared by its GPU processes (accelerate sets OMP_NUM_THREADS from it)
        cmd += ["--num_cpu_threads_per_process", str(max(1, cpus // gpus))]
    if num_nodes > 1:
        cmd += ["--rdzv_backend", "static", "--same_network"]
    cmd += ["--mixed_precision", "no"]  # the training loop passes train.precision to Accelerator itself
    return cmd + list(train_args)


def main(argv: list[str] | None = None) -> None:
    """Render from ``os.environ`` and exec (``--dry-run`` prints the command instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    dry = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    if argv and argv[0] == "--":
        argv = argv[1:]
    port = int(os.environ["LORAT_PORT"]) if os.environ.get("LORAT_PORT") else None
    cmd = render(dict(os.environ), argv, port=port)
    print("launch:", shlex.join(cmd), flush=True)
    if not dry:
        os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
