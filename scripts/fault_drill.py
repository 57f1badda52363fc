#!/usr/bin/env python
"""Fault drills on a tiny model and the sample data: kill -9, SIGTERM, a dead shard server, a full disk.

    python scripts/fault_drill.py                          # the four drills (~6 min on 2 busy cores)
    python scripts/fault_drill.py --drills kill9 --kills 10 --seed 1

Each drill interrupts real training processes (``python -m lorat_scale.train``) the way a cluster does,
resumes them with ``--resume auto`` and compares the final trainable tensors with those of an uninterrupted
run of the same configuration. Printed per drill: runs tried (training processes started), runs that resumed
(started from a checkpoint), the largest |difference| of any trainable tensor from the uninterrupted run (0:
bitwise) and what the drill saw (exit codes, error lines).

* kill9: SIGKILL at random moments, three kinds in turn: as soon as a checkpoint save has begun (its
  ``.tmp_step`` folder exists), one to three steps after the run's starting point, after a random delay from
  the start (0.5-4 s: loading, resuming or the first steps); then a run to the end.
* sigterm: SIGTERM once training has begun: a checkpoint at the next step boundary and exit code 75; again;
  then a run to the end.
* dead-server: the shards are read by HTTP range requests from a server process (tests/_http_server.py,
  127.0.0.1). Killed mid-run and brought back on its port within the retry window: the run goes on. Killed and
  left dead: the run stops with one line naming the URL and the cause; brought back, the run resumes.
* full-disk: the run directory on a tmpfs with room for two checkpoints (a user namespace, where the machine
  allows one; else this drill is skipped, saying so): the run stops at the first failed write, keeping its last
  complete checkpoint; copied to a disk with room, it resumes. Also a read-only tmpfs: refused before training.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a checkout without `pip install`
PY = sys.executable
TINY = ["--variant", "S-224", "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.lora_r=4",
        "model.lora_alpha=8", "model.template_size=28", "model.search_size=56", "model.pretrain_grid=6",
        "model.drop_path=0.2", "model.batch_subset_drop_path=false", "model.lora_dropout=0.1",
        "train.precision=fp32", "train.log_with=none", "data.num_workers=0", "train.log_every=1000",
        "data.pairs_per_epoch=32", "train.global_batch=4", "train.micro_batch=2", "train.epochs=2",
        "train.warmup_epochs=1", "train.lr=3e-3", "train.save_every=2", "train.keep_checkpoints=3"]
STEPS = 16  # 2 epochs of 32 pairs / 4 per step


def env() -> dict:
    """One intra-op thread in every run (the uninterrupted one too), no hub access."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


class Run:
    """One training process of a drill, its output in a log file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen([PY, "-m", "lorat_scale.train", *args, "--resume", "auto"], env=env(),
                                         cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def resumed(self) -> bool:
        return "resumed from" in self.text()

    def error(self) -> str:
        """The run's one-line error (after the progress bar's carriage returns)."""
        return next((x[x.index("error:"):] for x in self.text().splitlines() if "error:" in x), "")


def steps_done(run_dir: Path) -> int:
    """The last training step logged in metrics.jsonl (0 if none)."""
    try:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    except (OSError, json.JSONDecodeError):
        return 0
    return max((r["step"] for r in rows if "loss" in r), default=0)


def wait_for_step(run: Run, run_dir: Path, step: int) -> None:
    """Return once ``run`` has logged ``step`` (or has ended)."""
    while run.proc.poll() is None and steps_done(run_dir) < step:
        time.sleep(0.01)


def max_diff(a: Path, b: Path) -> float:
    """Largest |difference| over the trainable tensors of two model.safetensors files (inf if one is missing)."""
    from safetensors.torch import load_file

    if not (a.is_file() and b.is_file()):
        return float("inf")
    x, y = load_file(a), load_file(b)
    if x.keys() != y.keys():
        return float("inf")
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def reference(args: list[str], out: Path) -> Path:
    """The uninterrupted run's weights."""
    run = Run([*args, f"train.output_dir={out}"], out.parent / f"{out.name}.log")
    if run.proc.wait() != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{run.text()[-3000:]}")
    return out / "model.safetensors"


def finish(args: list[str], run_dir: Path, logs: Path, n: int) -> Run:
    """A last run to the end."""
    run = Run([*args, f"train.output_dir={run_dir}"], logs / f"run{n}.log")
    run.proc.wait()
    return run


# ----------------------------------------------------------------------------------------------
# Drills
# ----------------------------------------------------------------------------------------------
def drill_kill9(args: list[str], ref: Path, work: Path, kills: int, rng: random.Random) -> dict:
    run_dir, runs, moments = work / "run", [], []
    for k in range(kills):
        if steps_done(run_dir) >= STEPS - 1:
            break  # nothing left to interrupt
        run = Run([*args, f"train.output_dir={run_dir}"], work / f"run{k}.log")
        runs.append(run)
        # Each kind of moment in turn; a kill one to three steps on, so that every kill of the drill lands
        # before the end of its short run (a far target would let one run do most of the training).
        moment = ["in a save", "mid-training", "at a random time"][k % 3]
        ahead, delay, t0, target = rng.randint(1, 3), rng.uniform(0.5, 4.0), time.time(), None
        while run.proc.poll() is None:
            if moment == "at a random time" and time.time() - t0 > delay:
                break
            # The banner line comes after the resume: the log is trimmed and leftovers of a killed save are gone.
            if target is None and "trainable params" in run.text():
                target = min(steps_done(run_dir) + ahead, STEPS - 1)
            if target is not None and moment == "in a save" and list((run_dir / "checkpoints").glob(".tmp_step_*")):
                break
            if target is not None and moment == "mid-training" and steps_done(run_dir) >= target:
                time.sleep(rng.uniform(0.0, 0.05))
                break
            time.sleep(0.002)
        if run.proc.poll() is not None:
            moments.append("finished first")
            continue
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait()
        saving = bool(list((run_dir / "checkpoints").glob(".tmp_step_*")))  # a save was under way
        if moment == "at a random time":
            moment = f"{delay:.1f} s after the start"
        moments.append(f"{moment}{' (a save under way)' if saving and moment != 'in a save' else ''}"
                       f"{' (missed the save)' if moment == 'in a save' and not saving else ''} at step "
                       f"{steps_done(run_dir)}")
    last = finish(args, run_dir, work, len(runs))
    runs.append(last)
    return {"runs tried": len(runs), "runs that resumed": sum(r.resumed() for r in runs),
            "largest |diff|": max_diff(ref, run_dir / "model.safetensors"),
            "notes": f"kill -9: {'; '.join(moments)}; last run rc {last.proc.returncode}, "
                     f"{steps_done(run_dir)}/{STEPS} steps"}


def drill_sigterm(args: list[str], ref: Path, work: Path, stops: int) -> dict:
    run_dir, runs, codes = work / "run", [], []
    for k in range(stops):
        start = steps_done(run_dir)
        run = Run([*args, f"train.output_dir={run_dir}"], work / f"run{k}.log")
        runs.append(run)
        # Once this process has trained a step of its own (the log is trimmed to the resume point first).
        while run.proc.poll() is None and not (("resumed from" in run.text() or start == 0)
                                                and steps_done(run_dir) > start):
            time.sleep(0.01)
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        codes.append(run.proc.wait())
    last = finish(args, run_dir, work, len(runs))
    runs.append(last)
    stopped = [x.split("stopped at step ")[1].split()[0] for r in runs for x in r.text().splitlines()
               if "stopped at step" in x]
    return {"runs tried": len(runs), "runs that resumed": sum(r.resumed() for r in runs),
            "largest |diff|": max_diff(ref, run_dir / "model.safetensors"),
            "notes": f"exit codes {codes} (75: checkpoint saved, run again), stopped at steps {stopped}; "
                     f"last run rc {last.proc.returncode}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """tests/_http_server.py as a process on a fixed port (killed with SIGKILL, brought back on the same port)."""

    def __init__(self, folder: Path, port: int, work: Path) -> None:
        self.folder, self.port, self.work = folder, port, work
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        port_file = self.work / f"port{time.time_ns()}"
        self.proc = subprocess.Popen([PY, str(ROOT / "tests" / "_http_server.py"), str(self.folder), str(port_file),
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the shard server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def drill_dead_server(base: list[str], work: Path, data: Path) -> dict:
    shards = work / "shards"
    subprocess.run([PY, "-m", "lorat_scale.cli", "make-shards", "--format", "lasot", "--root", str(data / "lasot"),
                    "--split", "all", "--out", str(shards), "--num-workers", "1"], env=env(), cwd=ROOT, check=True,
                   capture_output=True)
    server = Server(shards, free_port(), work)
    args = [*base, f"data.train_sources=[shards={server.url}]", "data.io_retries=4", "data.io_backoff=0.5",
            "data.io_timeout=5"]
    server.start()
    runs: list[Run] = []
    try:
        ref = reference(args, work / "ref")
        # (a) killed at step 5 and back after 1 s: within the retries (0.5 + 1 + 2 + 4 s)
        back = work / "back"
        run = Run([*args, f"train.output_dir={back}"], work / "back.log")
        runs.append(run)
        wait_for_step(run, back, 5)
        server.kill()
        time.sleep(1.0)
        server.start()
        rc_back = run.proc.wait()
        # (b) killed at step 5 and left dead: the run stops, naming the URL; brought back, it resumes.
        dead = work / "dead"
        run = Run([*args, f"train.output_dir={dead}"], work / "dead0.log")
        runs.append(run)
        wait_for_step(run, dead, 5)
        server.kill()
        rc_dead, error = run.proc.wait(), run.error()
        server.start()
        run = Run([*args, f"train.output_dir={dead}"], work / "dead1.log")
        runs.append(run)
        rc_resumed = run.proc.wait()
    finally:
        server.kill()
    diff = max(max_diff(ref, back / "model.safetensors"), max_diff(ref, dead / "model.safetensors"))
    return {"runs tried": len(runs), "runs that resumed": sum(r.resumed() for r in runs), "largest |diff|": diff,
            "notes": f"back within the retries: rc {rc_back}; left dead: rc {rc_dead}, {error!r}; "
                     f"resumed once back: rc {rc_resumed}"}


NAMESPACE = """set -e
mount -t tmpfs -o ro,size=64k tmpfs "$RO"; mount -t tmpfs -o size=360k tmpfs "$FULL"
"$PY" -m lorat_scale.train "$@" --resume auto train.output_dir="$RO/run" > "$WORK/ro.log" 2>&1 || echo "ro rc $?"
"$PY" -m lorat_scale.train "$@" --resume auto train.output_dir="$FULL/run" > "$WORK/full.log" 2>&1 || echo "full rc $?"
cp -a "$FULL/run" "$WORK/copy"
"""


def drill_full_disk(args: list[str], ref: Path, work: Path) -> dict:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True) \
        if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        return {"runs tried": 0, "runs that resumed": 0, "largest |diff|": float("nan"),
                "notes": "skipped: this machine allows no user-namespace tmpfs (tests/test_faults.py simulates "
                         "ENOSPC instead)"}
    (work / "ro").mkdir()
    (work / "full").mkdir()
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", NAMESPACE, "drill", *args],
                          env={**env(), "PY": PY, "RO": str(work / "ro"), "FULL": str(work / "full"),
                               "WORK": str(work)}, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"full-disk drill failed: {proc.stderr[-3000:]}")
    err = lambda name: next((x[x.index("error:"):] for x in (work / name).read_text().splitlines()  # noqa: E731
                             if "error:" in x), "")
    copy = work / "copy"
    from lorat_scale.train.checkpoint import scan

    kept = [p.name for p in scan(copy).complete]
    last = finish(args, copy, work, 2)
    return {"runs tried": 3, "runs that resumed": int(last.resumed()),
            "largest |diff|": max_diff(ref, copy / "model.safetensors"),
            "notes": f"{'; '.join(proc.stdout.split(chr(10))).strip('; ')}; read-only: {err('ro.log')!r}; full: "
                     f"{err('full.log')!r}; kept {kept}; resumed elsewhere: rc {last.proc.returncode}"
                     .replace(f"{work}/", "")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drills", default="kill9,sigterm,dead-server,full-disk")
    p.add_argument("--kills", type=int, default=10, help="kill -9 per kill9 drill")
    p.add_argument("--stops", type=int, default=3, help="SIGTERMs in the sigterm drill")
    p.add_argument("--seed", type=int, default=0, help="the kill moments")
    p.add_argument("--data", default="", help="shared/data (default: ../shared/data or $LORAT_SHARED)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    a = p.parse_args()
    from lorat_scale.paths import shared_data

    data = Path(a.data) if a.data else shared_data()
    drills = a.drills.split(",")
    base = [*TINY]
    raw = [*base, f"data.train_sources=[lasot:all={data / 'lasot'},coco={data / 'det' / 'coco128'}]"]
    work = Path(tempfile.mkdtemp(prefix="fault_drill_"))
    print(f"tiny LoRAT ({' '.join(TINY[2:])}), {STEPS} steps, one thread per run; work folder {work}")
    print(f"load average before: {os.getloadavg()[0]:.1f} (the machine's cores may be shared)", flush=True)
    t0, rows = time.time(), {}
    try:
        ref = reference(raw, work / "ref") if {"kill9", "sigterm", "full-disk"} & set(drills) else None
        for name in drills:
            d = work / name
            d.mkdir()
            t = time.time()
            if name == "kill9":
                rows[name] = drill_kill9(raw, ref, d, a.kills, random.Random(a.seed))
            elif name == "sigterm":
                rows[name] = drill_sigterm(raw, ref, d, a.stops)
            elif name == "dead-server":
                rows[name] = drill_dead_server(base, d, data)
            elif name == "full-disk":
                rows[name] = drill_full_disk(raw, ref, d)
            else:
                raise SystemExit(f"unknown drill {name!r}")
            rows[name]["s"] = time.time() - t
            print(f"{name}: {rows[name]}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| drill | runs tried | runs that resumed | largest diff from the uninterrupted run | seconds | notes |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['runs tried']} | {r['runs that resumed']} | {r['largest |diff|']:.3g} | {r['s']:.0f} | "
              f"{r['notes']} |")
    print(f"\ntotal {time.time() - t0:.0f} s; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
