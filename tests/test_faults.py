"""Faults at scale (issues 13 and 16): planted pickles, damaged checkpoints, changed configurations, stray
folders, kill -9 and signals, a full or read-only disk, a dead shard server. Tiny model, real sample data.

In-process runs where they can be (seconds); subprocesses where a real process must die or get a signal.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import PY, ROOT, TINY, metrics, run_inprocess, sub_env

from lorat_scale.train import checkpoint as ck

RNG_IN_USE = ["model.drop_path=0.2", "model.batch_subset_drop_path=false", "model.lora_dropout=0.1"]


@pytest.fixture(scope="module")
def loop():
    from lorat_scale.train import loop

    return loop


@pytest.fixture(scope="module")
def common(shared_data):
    """8 steps (2 epochs of 4) with dropout and drop-path drawing from the RNG, a checkpoint every 2 steps."""
    return ["--variant", "S-224", *TINY, f"data.train_sources=[lasot:all={shared_data / 'lasot'}]",
            "data.pairs_per_epoch=16", "train.global_batch=4", "train.micro_batch=2", "train.epochs=2",
            "train.warmup_epochs=1", "train.lr=3e-3", "train.save_every=2", "train.keep_checkpoints=3", *RNG_IN_USE]


@pytest.fixture(scope="module")
def reference(loop, common, tmp_path_factory):
    """The uninterrupted run's final weights and per-step losses."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert run_inprocess(loop, [*common, f"train.output_dir={run}"]) == 0
    return load_file(run / "model.safetensors"), metrics(run)


def assert_same_as_reference(run: Path, reference) -> None:
    """All trainable tensors bitwise equal to the uninterrupted run's; one log line per step, equal losses."""
    weights, rows = reference
    got = load_file(run / "model.safetensors")
    assert got.keys() == weights.keys()
    differ = [k for k in weights if not torch.equal(weights[k], got[k])]
    assert not differ, f"{len(differ)} of {len(weights)} trainable tensors differ, e.g. {differ[:3]}"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 9)), steps  # no duplicate step lines
    assert all(metrics(run)[s]["loss"] == rows[s]["loss"] for s in rows)


class Plant:
    """A pickle whose unpickling creates a file (what a crafted checkpoint file would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------------------------
# Code execution from a checkpoint directory
# ----------------------------------------------------------------------------------------------
def test_planted_pickles_never_run(loop, common, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    assert run_inprocess(loop, [*common, "train.max_steps=4", f"train.output_dir={run}"]) == 0
    step4 = run / "checkpoints" / "step_00000004"
    assert sorted(p.name for p in step4.iterdir()) == ["checkpoint.json", "model.safetensors",
                                                       "optimizer.safetensors", "rng_rank0.safetensors",
                                                       "trainer_state.json"]  # no pickle of ours
    # accelerate's names for its pickled state (loaded with weights_only=False by accelerate's load_state).
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (step4 / name).write_bytes(pickle.dumps(Plant(marker)))
    capsys.readouterr()
    assert run_inprocess(loop, [*common, "train.max_steps=6", "--resume", "auto", f"train.output_dir={run}"]) == 0
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"{step4}: custom_checkpoint_0.pkl, random_states_0.pkl: not written by the trainer" in err
    assert "never read" in err
    # A file of ours replaced by a pickle, the checkpoint.json rewritten to match it: refused, not run.
    step6 = run / "checkpoints" / "step_00000006"
    evil = step6 / "optimizer.safetensors"
    evil.write_bytes(pickle.dumps(Plant(marker)))
    m = json.loads((step6 / "checkpoint.json").read_text())
    m["files"]["optimizer.safetensors"] = {"size": evil.stat().st_size,
                                           "sha256": hashlib.sha256(evil.read_bytes()).hexdigest()}
    (step6 / "checkpoint.json").write_text(json.dumps(m))
    with pytest.raises(SystemExit) as e:
        run_inprocess(loop, [*common, "--resume", "auto", f"train.output_dir={run}"])
    assert str(e.value).startswith(f"error: {step6}: cannot load it:") and not marker.exists()
    # DeepSpeed's engine files are torch pickles that DeepSpeed loads with weights_only=False: inside
    # weights_only_loads that is overridden, and a pickle that builds anything else is refused.
    pt = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"optimizer_state_dict": {"x": torch.ones(2)}, "loss_scaler": Plant(marker)}, pt)
    with ck.weights_only_loads(), pytest.raises(ck.CheckpointError) as e:
        torch.load(pt, map_location="cpu", weights_only=False)
    assert str(e.value).startswith(f"{pt}: refused: it is a pickle that builds objects other than tensors")
    assert str(e.value).endswith("(it calls io.open)") and not marker.exists()
    torch.save({"state": {0: {"exp_avg": torch.ones(3)}}, "step": 3}, pt)
    with ck.weights_only_loads():  # tensors and plain containers load as before
        assert torch.equal(torch.load(pt, weights_only=False)["state"][0]["exp_avg"], torch.ones(3))


# ----------------------------------------------------------------------------------------------
# Silent loss of exactness: damaged files, fallback, the log
# ----------------------------------------------------------------------------------------------
def test_damaged_checkpoints_are_found_and_the_run_falls_back(loop, common, reference, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_inprocess(loop, [*common, "train.max_steps=6", f"train.output_dir={run}"]) == 0
    ckdir = run / "checkpoints"
    assert [p.name for p in ck.scan(run).complete] == ["step_00000002", "step_00000004", "step_00000006"]
    rng6 = ckdir / "step_00000006" / "rng_rank0.safetensors"
    rng6.write_bytes(rng6.read_bytes()[:-100])  # truncated (the random_states_0.pkl)
    opt4 = ckdir / "step_00000004" / "optimizer.safetensors"
    data = bytearray(opt4.read_bytes())
    data[-5] ^= 0x01  # one bit of one Adam moment: same size, other numbers
    opt4.write_bytes(bytes(data))
    marker2 = ckdir / "step_00000002" / "checkpoint.json"
    good = marker2.read_text()
    marker2.write_text(good[:50])
    with pytest.raises(SystemExit) as e:  # nothing intact: refused, not a fresh start over the run
        run_inprocess(loop, [*common, "--resume", "auto", f"train.output_dir={run}"])
    msg = str(e.value)
    assert msg.startswith(f"error: --resume auto: no intact checkpoint in {ckdir}")
    size = rng6.stat().st_size
    assert f"step_00000006: rng_rank0.safetensors: {size} bytes, {size + 100} written" in msg
    assert "step_00000004: optimizer.safetensors: sha256 differs from the one written at save time" in msg
    assert "step_00000002: " in msg and "checkpoint.json: damaged" in msg
    marker2.write_text(good)
    capsys.readouterr()
    assert run_inprocess(loop, [*common, "--resume", "auto", f"train.output_dir={run}"]) == 0
    out = capsys.readouterr()
    assert "warning: resuming from step_00000002, the newest intact checkpoint; step_00000006 is damaged: " \
           "rng_rank0.safetensors" in out.err and "step_00000004 is damaged: optimizer.safetensors" in out.err
    assert f"resumed from {ckdir / 'step_00000002'} at step 2" in out.out
    assert_same_as_reference(run, reference)
    # The damaged saves of steps 4 and 6 were replaced by this run's.
    assert [p.name for p in ck.scan(run).complete] == ["step_00000004", "step_00000006", "step_00000008"]
    for p in ck.scan(run).complete:
        assert ck.verify(_Acc(), p)[1] == []


class _Acc:
    """The two attributes ``checkpoint.verify`` reads of an Accelerator: one process."""

    process_index, num_processes = 0, 1


# ----------------------------------------------------------------------------------------------
# Resuming with a different configuration; a fresh start over a run
# ----------------------------------------------------------------------------------------------
def test_resume_refuses_a_configuration_that_changes_the_run(loop, common, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [*common, f"train.output_dir={run}"]
    assert run_inprocess(loop, [*argv, "train.max_steps=2"]) == 0
    with pytest.raises(SystemExit) as e:
        run_inprocess(loop, [*argv, "model.search_size=84", "train.global_batch=8", "--resume", "auto"])
    msg = str(e.value)
    assert "step_00000002 was written with another configuration; these differences change the run:" in msg
    assert "model.search_size: checkpoint 56, now 84" in msg and "train.global_batch: checkpoint 4, now 8" in msg
    assert "--allow-config-change" in msg and "train.max_steps" not in msg
    # Settings that do not change a number of the run are allowed, and named.
    capsys.readouterr()
    assert run_inprocess(loop, [*argv, "train.max_steps=3", "train.log_every=5", "train.keep_checkpoints=1",
                                "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert "changed settings that do not alter the run: train.keep_checkpoints: checkpoint 3, now 1; " \
           "train.log_every: checkpoint 1000, now 5" in out
    # An explicit override goes on with the new values (and says so).
    assert run_inprocess(loop, [*argv, "train.global_batch=8", "train.max_steps=4", "--allow-config-change",
                                "--resume", "auto"]) == 0
    assert "warning: resuming" in capsys.readouterr().err and sorted(metrics(run)) == [1, 2, 3, 4]
    # A fresh start must not write over a run's checkpoints.
    holds = r"already holds checkpoints \(step_00000003, step_00000004\): pass --resume auto"
    with pytest.raises(SystemExit, match=holds):
        run_inprocess(loop, argv)
    # Nor may two training processes share a run directory (a killed launcher's child still running, say).
    import fcntl

    with open(run / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("pid 4242 on gpu07 since 2026-12-01 10:00:00")
        held.flush()
        with pytest.raises(SystemExit, match=rf"train.output_dir={run} is in use by another training process "
                                             r"\(pid 4242 on gpu07 since 2026-12-01 10:00:00\): stop it first"):
            run_inprocess(loop, [*argv, "--resume", "auto"])


# ----------------------------------------------------------------------------------------------
# Stray folders in a run directory (issue 16)
# ----------------------------------------------------------------------------------------------
def test_stray_folders_are_left_alone_and_named(loop, common, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [*common, "train.keep_checkpoints=2", f"train.output_dir={run}"]
    assert run_inprocess(loop, [*argv, "train.max_steps=4"]) == 0
    ckdir = run / "checkpoints"
    strays = {name: ckdir / name for name in ("step_best", "step_00000005_keep", "step_00000099_old")}
    for p in strays.values():  # copies of a real checkpoint, under names the trainer does not write
        shutil.copytree(ckdir / "step_00000002", p)
    (ckdir / "step_00000009").mkdir()  # the trainer's name, no checkpoint.json
    (ckdir / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert run_inprocess(loop, [*argv, "--resume", "auto"]) == 0
    out = capsys.readouterr()
    assert f"resumed from {ckdir / 'step_00000004'} at step 4" in out.out  # not 99, no crash on "best"
    for name in ("step_best", "step_00000005_keep", "step_00000099_old", "notes.txt"):
        assert f"warning: {ckdir / name}: not a checkpoint of this trainer" in out.err
    assert f"warning: {ckdir / 'step_00000009'}: no checkpoint.json" in out.err
    # Rotation pruned its own (keep 2 of 2, 4, 6, 8) and nothing else.
    assert sorted(p.name for p in ckdir.iterdir()) == ["notes.txt", "step_00000005_keep", "step_00000006",
                                                       "step_00000008", "step_00000009", "step_00000099_old",
                                                       "step_best"]
    assert all(ck.verify(_Acc(), p)[1] == [] for p in strays.values())  # untouched


# ----------------------------------------------------------------------------------------------
# kill -9 (some inside a checkpoint save) and SIGTERM, then --resume auto: bitwise
# ----------------------------------------------------------------------------------------------
SLOW_SAVE = """
import sys, time
import lorat_scale.train.checkpoint as c
real = c.sha256_file
c.sha256_file = lambda p: (time.sleep(0.15), real(p))[1]  # widens the window inside a save, nothing else
from lorat_scale.train.loop import main
sys.exit(main(sys.argv[1:]))
"""


FAKE_SRUN = """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done   # srun's own options
exec "$@"
"""


def test_kills_and_preemption_then_resume_are_bitwise(loop, common, reference, tmp_path):
    """kill -9 inside a save, kill -9 between steps, then the SLURM job file gets USR1 (its --signal): training
    checkpoints at the next step and exits 75, the job requeues itself; the resumed end is the uninterrupted run."""
    run = tmp_path / "run"
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    out = tmp_path / "out.txt"

    def start(cmd, env=None):
        with open(out, "w") as f:
            return subprocess.Popen(cmd, env=env or sub_env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)

    def wait_for(proc, cond, what):
        deadline = time.time() + 120
        while not cond():
            assert proc.poll() is None, f"ended before {what}: {out.read_text()[-3000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def done() -> int:
        return max(metrics(run), default=0) if (run / "metrics.jsonl").is_file() else 0

    slow = [PY, str(script), *common, "--resume", "auto", f"train.output_dir={run}"]
    # 1. kill -9 inside the save of step 4: its files are written, its checkpoint.json is not.
    proc = start(slow)
    wait_for(proc, lambda: (run / "checkpoints" / ".tmp_step_00000004" / "model.safetensors").is_file(), "save 4")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p.name for p in ck.scan(run).complete] == ["step_00000002"]
    # 2. kill -9 between steps, after step 5 was logged (step 6's checkpoint not written).
    proc = start(slow)
    wait_for(proc, lambda: done() >= 5, "step 5")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done() < 8 and not (run / "model.safetensors").exists()
    # 3. The SLURM job file (srun and scontrol stand-ins): USR1 to the batch script, as #SBATCH --signal=B:USR1.
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text(FAKE_SRUN)
    (bin_ / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / "scontrol.txt"}\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {**sub_env(), "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "4242",
           "SLURM_CPUS_PER_TASK": "1", "SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
           "SLURM_GPUS_ON_NODE": "1", "VARIANT": "S-224", "RUN_DIR": str(run)}
    proc = start(["bash", str(ROOT / "scripts" / "slurm" / "train_1node.sbatch"), *common[2:]], env)
    wait_for(proc, lambda: "resumed from" in out.read_text() and done() >= 5, "step 5 after the resume")
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=120) == 75, out.read_text()[-3000:]
    text = out.read_text()
    stopped = int(text.split("stopped at step ")[1].split()[0])
    assert f"by SIGTERM: checkpoint {run / 'checkpoints' / f'step_{stopped:08d}'} saved" in text
    assert stopped < 8 and ck.scan(run).complete[-1].name == f"step_{stopped:08d}" and done() == stopped
    assert (tmp_path / "scontrol.txt").read_text() == "requeue 4242\n"
    # 4. The requeued job resumes (here in-process).
    assert run_inprocess(loop, [*common, "--resume", "auto", f"train.output_dir={run}"]) == 0
    assert_same_as_reference(run, reference)
    assert not ck.scan(run).leftovers


# ----------------------------------------------------------------------------------------------
# A full disk, a read-only output directory
# ----------------------------------------------------------------------------------------------
IN_NAMESPACE = """
import json, sys
from lorat_scale.train.loop import main
for out in sys.argv[2:]:
    try:
        print("RC", main([*json.loads(sys.argv[1]), f"train.output_dir={out}"]), flush=True)
    except SystemExit as e:
        print("EXIT", e, flush=True)
"""


def _namespace_mounts_work() -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (real ENOSPC / EROFS)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=8k tmpfs $d && umount $d && rmdir $d"],
                           capture_output=True)
    return probe.returncode == 0


def test_full_disk_and_read_only_output_stop_with_one_line_and_keep_the_last_checkpoint(
        loop, common, reference, tmp_path, monkeypatch):
    """A 360 KiB tmpfs (room for two checkpoints) and a read-only tmpfs, mounted in a user namespace: real
    ENOSPC/EROFS. Where the machine forbids that, ENOSPC is simulated in-process at the third save instead."""
    ro, full, copy = tmp_path / "ro", tmp_path / "full", tmp_path / "copy"
    ro.mkdir(), full.mkdir()
    if _namespace_mounts_work():
        driver = tmp_path / "driver.py"
        driver.write_text(IN_NAMESPACE)
        sh = (f'set -e; mount -t tmpfs -o ro,size=64k tmpfs {ro}; mount -t tmpfs -o size=360k tmpfs {full}; '
              f'"$0" {driver} "$1" {ro / "run"} {full / "run"}; cp -a {full / "run"} {copy}')
        proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", sh, PY,
                               json.dumps(common)], env=sub_env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [x for x in proc.stdout.splitlines() if x.startswith(("RC", "EXIT"))]
        assert lines[0] == f"EXIT error: train.output_dir={ro / 'run'}: cannot write there (Read-only file system: " \
                           f"{ro / 'run'})"
        full_msg, run = lines[1], full / "run"
    else:  # simulated: the save of step 6 fails as a full disk would make it
        real = ck.save_file

        def save_file(tensors, path, metadata=None):
            if ".tmp_step_00000006" in str(path):
                raise OSError(28, "No space left on device", str(path))
            return real(tensors, path, metadata=metadata)

        monkeypatch.setattr(ck, "save_file", save_file)
        run = copy
        with pytest.raises(SystemExit) as e:
            run_inprocess(loop, [*common, f"train.output_dir={run}"])
        full_msg = f"EXIT {e.value}"
        monkeypatch.setattr(ck, "save_file", real)
    kept = ck.scan(copy).complete[-1].name
    assert full_msg.startswith(f"EXIT error: cannot write checkpoint {run / 'checkpoints'}")
    assert ": No space left on device: " in full_msg and ".safetensors;" in full_msg and "\n" not in full_msg
    assert full_msg.endswith(f"the last complete checkpoint is kept ({kept}): fix the cause, then resume with "
                             "--resume auto")
    assert kept in ("step_00000002", "step_00000004") and not ck.scan(copy).leftovers  # the failed save removed
    assert all(ck.verify(_Acc(), p)[1] == [] for p in ck.scan(copy).complete)
    # Nothing lost: with room again, the run resumes and ends as the uninterrupted run.
    assert run_inprocess(loop, [*common, "--resume", "auto", f"train.output_dir={copy}"]) == 0
    assert_same_as_reference(copy, reference)


# ----------------------------------------------------------------------------------------------
# Dead storage: the shard server killed mid-run
# ----------------------------------------------------------------------------------------------
def test_killed_shard_server_stops_the_run_naming_url_and_cause(loop, tmp_path, shared_data, monkeypatch):
    """Not 'all bad records': one line with the URL, the attempts and the cause; the checkpoints stay intact."""
    from _data_trees import build_shards
    from _http_server import spawn as spawn_server

    shards = build_shards(tmp_path / "src", shared_data, n_seqs=4, n=6, min_shards=2)
    server, url = spawn_server(shards, tmp_path / "url")
    try:
        real, calls = loop.train_step, []

        def step_then_kill(*a, **kw):  # the server dies during step 3 (its batch was read already)
            calls.append(1)
            if len(calls) == 3:
                server.kill()
                server.wait()
            return real(*a, **kw)

        monkeypatch.setattr(loop, "train_step", step_then_kill)
        run = tmp_path / "run"
        with pytest.raises(SystemExit) as e:
            run_inprocess(loop, ["--variant", "S-224", *TINY, f"data.train_sources=[shards={url}]",
                                 "data.pairs_per_epoch=16", "train.global_batch=4", "train.micro_batch=2",
                                 "train.epochs=2", "train.save_every=2", "data.io_retries=2", "data.io_backoff=0.05",
                                 "data.io_timeout=2", f"train.output_dir={run}"])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    msg = str(e.value)
    assert msg.startswith(f"error: {url}/shard-") and "gave up after 3 attempts" in msg, msg
    assert "connection refused" in msg and "bad" not in msg and "\n" not in msg
    assert [p.name for p in ck.scan(run).complete] == ["step_00000002"] and max(metrics(run)) == 3
