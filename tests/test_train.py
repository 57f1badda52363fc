"""The training loop on CPU with a tiny model and the real sample data.

Runs in-process where it can (no 15 s import per run) and as subprocesses where it must
(two processes, DeepSpeed, kill -9). Threads are pinned to 1 so in- and out-of-process runs
compute bit-identical numbers.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorat_scale.config import ConfigError, TrainConfig
from lorat_scale.train.distributed import accumulation_steps, fill_ds_config, micro_batch_indices

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.lora_r=4", "model.lora_alpha=8",
        "model.template_size=28", "model.search_size=56", "model.pretrain_grid=6", "train.precision=fp32",
        "train.log_with=none", "data.num_workers=0", "train.log_every=1000"]


@pytest.fixture(scope="module")
def sources(shared_data):
    """Training sources (LaSOT airplane-1 + COCO128) and a validation source from the sample data."""
    lasot, coco = shared_data / "lasot", shared_data / "det" / "coco128"
    return [f"data.train_sources=[lasot:all={lasot},coco={coco}]", f"data.val_sources=[lasot:all={lasot}]"]


@pytest.fixture(scope="module")
def train_module():
    """The training loop module (its main() runs in-process)."""
    from lorat_scale.train import loop

    return loop


def run_inprocess(mod, argv):
    """main(argv) with one thread, then accelerate's process-wide state reset for the next run."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return mod.main(argv)
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def sub_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def metrics(run_dir: Path) -> dict[int, dict]:
    """Per-step training rows of metrics.jsonl (a resumed run's rows replace the killed run's)."""
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            rows[r["step"]] = r
    return rows


def val_rows(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val/loss" in r]


# ----------------------------------------------------------------------------------------------
# Pure pieces: batch split and DeepSpeed config fill
# ----------------------------------------------------------------------------------------------
def test_batch_split_covers_each_pair_once():
    assert accumulation_steps(128, 16, 8) == 1 and accumulation_steps(128, 16, 2) == 4
    with pytest.raises(ConfigError, match="train.global_batch"):
        accumulation_steps(100, 16, 2)
    for world, micro in ((1, 8), (2, 4), (2, 2), (4, 1)):
        seen = []
        for step in range(3):
            per_step = [i for r in range(world) for mb in micro_batch_indices(step, 16, micro, world, r) for i in mb]
            assert sorted(per_step) == list(range(16 * step, 16 * step + 16))  # same union for any split
            seen += per_step
        assert len(seen) == len(set(seen)) == 48


def test_fill_ds_config_from_run_config():
    tc = TrainConfig(global_batch=64, micro_batch=4, grad_clip=0.5, precision="bf16")
    for name in ("zero2", "zero3", "zero2_offload"):
        raw = json.loads((ROOT / "ds_configs" / f"{name}.json").read_text())
        assert raw["train_batch_size"] == raw["gradient_accumulation_steps"] == raw["gradient_clipping"] == "auto"
        ds = fill_ds_config(raw, tc, world_size=4)
        assert ds["train_batch_size"] == 64 and ds["train_micro_batch_size_per_gpu"] == 4
        assert ds["gradient_accumulation_steps"] == 4 and ds["gradient_clipping"] == 0.5
        assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
        assert "auto" not in json.dumps(ds)
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu=8"):
        fill_ds_config({"train_micro_batch_size_per_gpu": 8}, tc, 4)
    with pytest.raises(ConfigError, match="optimizer"):
        fill_ds_config({"optimizer": {"type": "Adam"}}, tc, 4)
    # accelerate takes the filled dict as is (no "auto" left for it to guess).
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=fill_ds_config(ROOT / "ds_configs" / "zero2.json", tc, 4))
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 4 and plugin.zero_stage == 2


def test_broken_or_non_object_ds_json_is_one_line_naming_the_file(train_module, sources, tmp_path):
    broken, array = tmp_path / "broken.json", tmp_path / "array.json"
    broken.write_text('{"zero_optimization": {"stage": 2,}}')
    array.write_text('[{"zero_optimization": {"stage": 2}}]')
    argv = ["--variant", "S-224", *TINY, *sources, f"train.output_dir={tmp_path / 'run'}"]
    with pytest.raises(SystemExit) as e:
        run_inprocess(train_module, [*argv, "--ds", str(broken)])
    msg = str(e.value)
    assert msg.startswith(f"error: --ds {broken}: line 1 column 35: not valid JSON") and "\n" not in msg
    with pytest.raises(SystemExit, match=rf"--ds {array}: expected a JSON object .* got a JSON list"):
        run_inprocess(train_module, [*argv, "--ds", str(array)])
    with pytest.raises(SystemExit, match=rf"--ds {tmp_path / 'nope.json'}: cannot read"):
        run_inprocess(train_module, [*argv, "--ds", str(tmp_path / "nope.json")])


def test_run_checks_refuse_unsafe_option_sets():
    from lorat_scale.config import load_config
    from lorat_scale.train.distributed import check_run

    zero3 = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    zero2 = json.loads((ROOT / "ds_configs" / "zero2.json").read_text())
    # bf16 trainable weights under plain AdamW: no master copy, small updates vanish.
    with pytest.raises(ConfigError, match="model.trainable_dtype=bf16 .* no fp32 master copy"):
        check_run(load_config("S-224", ["model.trainable_dtype=bf16"]), None, "cuda")
    check_run(load_config("S-224", ["model.trainable_dtype=bf16"]), zero2, "cuda")  # DeepSpeed keeps fp32 masters
    # Quantized frozen weights cannot be partitioned by ZeRO-3.
    for storage in ("int8", "nf4"):
        with pytest.raises(ConfigError, match=f"model.frozen_dtype={storage} with ZeRO-3"):
            check_run(load_config("g-224", [f"model.frozen_dtype={storage}"]), zero3, "cuda")
        check_run(load_config("g-224", [f"model.frozen_dtype={storage}"]), zero2, "cuda")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        check_run(load_config("S-224", ["train.precision=fp16"]), None, "cpu")


def test_bitsandbytes_releases_that_requantize_int8_on_a_move_are_refused():
    from lorat_scale.models.lora import check_bitsandbytes

    for bad in ("0.46.0", "0.47.1"):
        with pytest.raises(RuntimeError, match=f"bitsandbytes {bad}: this release re-quantizes int8 weights"):
            check_bitsandbytes(bad, "int8")
        check_bitsandbytes(bad, "nf4")  # 4-bit parameters track their own quantized state
    for good in ("0.45.5", "0.48.0", "0.50.2"):
        check_bitsandbytes(good, "int8")


def test_deepspeed_step_logs_the_engines_grad_norm():
    """Under DeepSpeed the engine clips and steps; its norm is logged even where accelerate returns None."""
    from lorat_scale.train.step import LocalRunner, train_step

    class Engine(torch.nn.Module):  # what the step uses of a DeepSpeed engine
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, z, x, mask):
            s = self.lin(x).squeeze(-1)
            return {"score_map": s, "boxes": torch.sigmoid(torch.stack([s] * 4, -1)).cumsum(-1) / 4}

        def get_global_grad_norm(self):
            return torch.tensor(0.75)

    class Runner(LocalRunner):  # older accelerate under DeepSpeed: clip_grad_norm_ returns None
        def clip_grad_norm_(self, params, max_norm):
            return None

    engine = Engine()
    batch = {"z": torch.zeros(2, 1), "x": torch.randn(2, 3, 3, 4), "z_feat_mask": torch.zeros(2, 1),
             "target_box": torch.tensor([[0.2, 0.2, 0.6, 0.6]] * 2),
             "positive_map": torch.ones(2, 3, 3, dtype=torch.bool)}
    opt = torch.optim.SGD(engine.parameters(), lr=0.1)
    res = train_step(engine, opt, [batch], Runner("cpu"), trainable=list(engine.parameters()), grad_clip=1.0,
                     deepspeed=True)
    assert res.row()["grad_norm"] == 0.75


def test_one_command_language_for_training(capsys):
    """lorat-scale train is the loop's own parser; --variant (not --config); train.log_with (not train.tracker)."""
    from lorat_scale.cli import main
    from lorat_scale.config import load_config

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "usage: lorat-scale train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--config", "L-224"])
    assert "--config was renamed --variant: use --variant L-224" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'train.tracker' was renamed 'train.log_with': use train.log_with=wandb"):
        load_config("S-224", ["train.tracker=wandb"])
    assert load_config("S-224", ["train.log_with=wandb"]).train.log_with == "wandb"


def test_fp16_on_cpu_is_a_clear_error(train_module, sources, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(SystemExit, match="fp16 needs a CUDA GPU"):
        run_inprocess(train_module, ["--variant", "S-224", *TINY, *sources, "train.precision=fp16",
                                     f"train.output_dir={tmp_path}"])


# ----------------------------------------------------------------------------------------------
# Training runs
# ----------------------------------------------------------------------------------------------
def test_loss_goes_down(train_module, sources, tmp_path):
    run = tmp_path / "run"
    argv = ["--variant", "S-224", *TINY, *sources, "data.pairs_per_epoch=16", "data.val_pairs_per_epoch=16",
            "train.global_batch=8", "train.micro_batch=8", "train.epochs=20", "train.warmup_epochs=0",
            "train.lr=3e-3", "train.min_lr=3e-4", "train.val_every=20", "train.save_every=0",
            f"train.output_dir={run}"]
    assert run_inprocess(train_module, argv) == 0
    rows = metrics(run)
    assert sorted(rows) == list(range(1, 41))
    losses = [rows[s]["loss"] for s in range(1, 41)]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    vals = val_rows(run)
    assert [v["step"] for v in vals] == [0, 20, 40]
    assert vals[-1]["val/loss"] < 0.8 * vals[0]["val/loss"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["lr"] == 3e-3 and cfg["model"]["embed_dim"] == 32  # the resolved config is saved
    # Only trainable tensors are checkpointed.
    weights = load_file(run / "model.safetensors")
    assert "token_type_embed" in weights and not any(k.startswith("blocks.0.attn.q.base") for k in weights)
    assert not any("patch_embed" in k or "norm1" in k for k in weights)


def flaky_loss(monkeypatch, bad_calls):
    """Make the step's loss non-finite on the given (1-based) calls."""
    from lorat_scale.train import step

    real, calls = step.lorat_loss, {"n": 0}

    def flaky(outputs, batch, n):
        calls["n"] += 1
        res = real(outputs, batch, n)
        if bad_calls(calls["n"]):
            res["loss"] = res["loss"] * float("nan")
        return res

    monkeypatch.setattr(step, "lorat_loss", flaky)


def test_nonfinite_skip_option_skips_then_stops(train_module, sources, tmp_path, monkeypatch):
    flaky_loss(monkeypatch, lambda n: n == 2 or n >= 5)  # step 2 is bad once; from step 5 on every step is bad
    run = tmp_path / "run"
    argv = ["--variant", "S-224", *TINY, sources[0], "data.pairs_per_epoch=64", "train.global_batch=4",
            "train.micro_batch=4", "train.epochs=1", "train.on_nonfinite=skip", "train.max_bad_steps=3",
            "train.save_every=0", f"train.output_dir={run}"]
    with pytest.raises(SystemExit, match="3 skipped steps in a row"):
        run_inprocess(train_module, argv)
    rows = metrics(run)
    assert [rows[s]["bad"] for s in range(1, 8)] == [False, True, False, False, True, True, True]
    assert "grad_norm" not in rows[2] and "grad_norm" in rows[3]  # no update on a skipped step
    assert sorted(p.name for p in run.glob("nonfinite_step_*")) == ["nonfinite_step_00000007"]


def test_nonfinite_loss_stops_by_default_and_dumps_the_state(train_module, sources, tmp_path, monkeypatch):
    """The spec's NaN guard: the first non-finite loss writes keys, step, loss parts and weights, then stops."""
    flaky_loss(monkeypatch, lambda n: n == 6)  # step 3's second micro-batch
    run = tmp_path / "run"
    argv = ["--variant", "S-224", *TINY, sources[0], "data.pairs_per_epoch=64", "train.global_batch=4",
            "train.micro_batch=2", "train.epochs=1", "train.save_every=0", f"train.output_dir={run}"]
    with pytest.raises(SystemExit, match=r"stopping at step 3: non-finite loss \(train.on_nonfinite=stop\).*"
                                         r"nonfinite_step_00000003"):
        run_inprocess(train_module, argv)
    dump = run / "nonfinite_step_00000003"
    report = json.loads((dump / "batch_rank0.json").read_text())
    assert report["step"] == 3 and report["world_size"] == 1 and len(report["keys"]) == 4
    assert all(k.count("/") == 3 for k in report["keys"])  # <dataset>/<sequence>/<t>/<s>
    parts = report["loss_parts"]
    assert len(parts) == 2 and all(math.isfinite(v) for v in parts[0].values())
    assert math.isnan(parts[1]["loss"]) and math.isfinite(parts[1]["loss_bce"])
    weights = load_file(dump / "trainable.safetensors")
    assert "token_type_embed" in weights and all(torch.isfinite(v).all() for v in weights.values())
    # The weights dumped are those before the bad step: steps 1 and 2 updated, step 3 did not.
    assert sorted(metrics(run)) == [1, 2, 3] and metrics(run)[3]["bad"] is True


def _worker_pid(agent: int, rank: int) -> int | None:
    """The pid of torchrun ``agent``'s worker process of ``rank`` (from /proc), None before it exists."""
    for child in Path(f"/proc/{agent}/task/{agent}/children").read_text().split():
        try:
            if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
                return int(child)
        except OSError:
            continue
    return None


def test_one_vs_two_processes_same_losses(train_module, sources, tmp_path):
    """2 ranks = 1 rank (losses, weights, pairs), also when one rank gets SIGUSR1 mid-run: every rank stops at the
    same step with a checkpoint, and the resumed run continues as if never stopped (issue 13, preemption)."""
    common = ["--variant", "S-224", *TINY, sources[0], "data.pairs_per_epoch=16", "train.global_batch=8",
              "train.epochs=4", "train.warmup_epochs=0", "train.lr=3e-3", "train.save_every=0", "train.log_pairs=true"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_inprocess(train_module, [*common, "train.micro_batch=4", f"train.output_dir={one}"]) == 0
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29400 + os.getpid() % 500),
           str(ROOT / "scripts" / "train.py"), *common, "train.micro_batch=2", "--resume", "auto",
           f"train.output_dir={two}"]
    log = tmp_path / "two.log"
    with open(log, "w") as f:
        agent = subprocess.Popen(cmd, env=sub_env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 150
        while not ((two / "metrics.jsonl").is_file() and metrics(two)):  # step 1 done
            assert agent.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        os.kill(_worker_pid(agent.pid, 1), signal.SIGUSR1)  # rank 1 only: rank 0 must learn it from the step
        agent.wait(timeout=150)
    finally:
        if agent.poll() is None:
            agent.kill()
    text = log.read_text()
    stop = max(metrics(two))
    assert 1 <= stop < 8 and f"stopped at step {stop} by a signal to another rank" in text, text[-3000:]
    last = [json.loads((two / f"pairs_rank{r}.jsonl").read_text().splitlines()[-1])["step"] for r in (0, 1)]
    assert last == [stop - 1, stop - 1]  # both ranks trained exactly the steps up to the stop
    marker = json.loads((two / "checkpoints" / f"step_{stop:08d}" / "checkpoint.json").read_text())
    assert marker["step"] == stop and {"rng_rank0.safetensors", "rng_rank1.safetensors"} <= set(marker["files"])
    proc = subprocess.run(cmd, env=sub_env(), cwd=ROOT, capture_output=True, text=True, timeout=150)  # the requeue
    m1, m2 = metrics(one), metrics(two)
    # Judge on what the run wrote (gloo teardown can abort after a finished run).
    assert sorted(m2) == list(range(1, 9)), proc.stderr[-3000:]
    assert f"resumed from {two / 'checkpoints' / f'step_{stop:08d}'} at step {stop}" in proc.stdout
    assert (two / "model.safetensors").is_file(), proc.stderr[-3000:]
    for s in range(1, 9):
        assert abs(m1[s]["loss"] - m2[s]["loss"]) < 1e-4 * max(1.0, abs(m1[s]["loss"])), (s, m1[s], m2[s])
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)
    # Each rank trained on half of every global batch; no pair twice in an epoch; same pairs as 1 process.
    per_rank = [[json.loads(x) for x in (two / f"pairs_rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    single = [json.loads(x) for x in (one / "pairs_rank0.jsonl").read_text().splitlines()]
    for epoch in range(4):
        idx = [i for rows in per_rank for row in rows if row["epoch"] == epoch for i in row["indices"]]
        assert sorted(idx) == list(range(16))
        keys2 = sorted(k for rows in per_rank for row in rows if row["epoch"] == epoch for k in row["keys"])
        keys1 = sorted(k for row in single if row["epoch"] == epoch for k in row["keys"])
        assert keys1 == keys2
    assert len(per_rank[0]) == len(per_rank[1]) == 8


def test_deepspeed_zero2_step_and_resume(sources, tmp_path):
    pytest.importorskip("deepspeed")
    run = tmp_path / "ds"
    cmd = [PY, str(ROOT / "scripts" / "train.py"), "--variant", "S-224",
           "--ds", str(ROOT / "ds_configs" / "zero2.json"),
           *TINY, sources[0], "train.precision=bf16", "data.pairs_per_epoch=8", "train.global_batch=4",
           "train.micro_batch=2", "train.epochs=2", "train.save_every=0", f"train.output_dir={run}"]
    # The first DeepSpeed run on a machine JIT-builds an op (cached in ~/.cache/torch_extensions).
    proc = subprocess.run([*cmd, "train.max_steps=2"], env=sub_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DeepSpeed" in proc.stdout and "accum 2" in proc.stdout  # ZeRO-2 engine, micro 2 x accum 2
    rows = metrics(run)
    assert sorted(rows) == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows.values())
    assert all(r["grad_norm"] > 0 for r in rows.values())  # the engine's own norm
    # timm's schedule drives the DeepSpeed optimizer: warm-up of 4 steps from 1e-7 to 1e-4.
    assert rows[2]["lr"] == pytest.approx(1e-7 + (1e-4 - 1e-7) / 4, rel=1e-9)
    ck = run / "checkpoints" / "step_00000002"
    assert (ck / "model.safetensors").is_file() and any(ck.rglob("*optim_states.pt"))
    w2 = load_file(ck / "model.safetensors")
    # Resume the DeepSpeed state (optimizer partitions, trainable module weights) for one more step.
    proc = subprocess.run([*cmd, "train.max_steps=3", "--resume", "auto"], env=sub_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    rows = metrics(run)
    assert sorted(rows) == [1, 2, 3] and rows[3]["lr"] == pytest.approx(1e-7 + 2 * (1e-4 - 1e-7) / 4, rel=1e-9)
    w3 = load_file(run / "model.safetensors")
    assert any(not torch.equal(w2[k], w3[k]) for k in w2)


def test_resume_with_compile(train_module, sources, tmp_path, monkeypatch):
    """train.compile=true: checkpoints carry the plain parameter names and a compiled run resumes from them."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend="eager"))  # dynamo, no codegen
    common = ["--variant", "S-224", *TINY, sources[0], "data.pairs_per_epoch=8", "train.global_batch=2",
              "train.micro_batch=2", "train.epochs=1", "train.warmup_epochs=0", "train.lr=3e-3", "train.compile=true",
              "train.save_every=2", f"train.output_dir={tmp_path}"]
    assert run_inprocess(train_module, [*common, "train.max_steps=2"]) == 0
    saved = load_file(tmp_path / "checkpoints" / "step_00000002" / "model.safetensors")
    assert "token_type_embed" in saved and not any(k.startswith("_orig_mod.") for k in saved)
    assert run_inprocess(train_module, [*common, "train.max_steps=3", "--resume", "auto"]) == 0
    assert sorted(metrics(tmp_path)) == [1, 2, 3]
    after = load_file(tmp_path / "model.safetensors")
    assert any(not torch.equal(saved[k], after[k]) for k in saved)  # step 3 trained on the loaded weights


@pytest.mark.parametrize("access", ["random", "stream"])
def test_shard_training_resumes_exactly(train_module, tmp_path, shared_data, access):
    """shards=FOLDER sources, random access and the stream: training runs; stop + resume continues bit-exactly."""
    from _data_trees import build_shards

    shards = build_shards(tmp_path / "src", shared_data, n_seqs=4, n=6, min_shards=2)
    common = ["--variant", "S-224", *TINY, f"data.train_sources=[shards={shards}]", "data.pairs_per_epoch=16",
              f"data.shard_access={access}",
              "data.num_workers=0", "train.global_batch=4", "train.micro_batch=2", "train.epochs=2",
              "train.warmup_epochs=0", "train.lr=3e-3", "train.save_every=0", "train.log_pairs=true"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert run_inprocess(train_module, [*common, "train.max_steps=6", f"train.output_dir={ref}"]) == 0
    assert run_inprocess(train_module, [*common, "train.max_steps=3", f"train.output_dir={run}"]) == 0
    assert run_inprocess(train_module, [*common, "train.max_steps=6", "--resume", "auto",
                                        f"train.output_dir={run}"]) == 0
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = metrics(ref), metrics(run)
    assert sorted(ma) == sorted(mb) == list(range(1, 7)) and all(ma[s]["loss"] == mb[s]["loss"] for s in ma)
    rows = [json.loads(x) for x in (ref / "pairs_rank0.jsonl").read_text().splitlines()]
    # Stream positions: each of an epoch's 16 pairs once (epoch 0: steps 1-4 use positions 0..15).
    assert sorted(p for r in rows if r["epoch"] == 0 for p in r["indices"]) == list(range(16))


# ---------------------------------------------------------------------------------------------------- tracking check
def track_rows(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if any(k.startswith("track/") for k in r)]


def test_tracking_check_during_training_scores_what_the_saved_tracker_tracks(train_module, sources, shared_data,
                                                                             tmp_path):
    """Every half epoch and at the end the weights track LaSOT airplane-1 and OTB Crossing (first 12 frames);
    the last check's scores equal lorat-scale evaluate's path: the saved checkpoint, a merged Tracker, one
    sequence at a time."""
    from lorat_scale.config import load_config
    from lorat_scale.evaluation.benchmarks import load_ground_truth, load_sequences
    from lorat_scale.evaluation.runner import evaluate_results, run_benchmark
    from lorat_scale.models import build_model
    from lorat_scale.models.weights import load_trainable
    from lorat_scale.tracking import Tracker

    run = tmp_path / "run"
    lasot, otb = shared_data / "lasot", shared_data / "otb"
    argv = ["--variant", "S-224", *TINY, sources[0], "data.pairs_per_epoch=16", "train.global_batch=4",
            "train.micro_batch=4", "train.epochs=1", "train.warmup_epochs=0", "train.lr=3e-3", "train.save_every=0",
            f"data.track_sources=[lasot:airplane-1={lasot},otb={otb}]", "train.track_every_epochs=0.5",
            "train.track_max_frames=12", "train.track_batch=2", f"train.output_dir={run}"]
    assert run_inprocess(train_module, argv) == 0
    rows = track_rows(run)
    assert [r["step"] for r in rows] == [2, 4]  # 4 steps an epoch: after step 2, and the end
    for r in rows:
        assert set(r) >= {"track/lasot/AUC", "track/lasot/P", "track/lasot/P_norm", "track/otb/AUC", "track/seconds"}
    folders = sorted(p.name for p in (run / "tracking" / "lasot" / "lorat").iterdir())
    assert folders == ["step_00000002_000", "step_00000004_000"]
    crossing = run / "tracking" / "otb" / "lorat" / "step_00000004_000" / "Crossing.txt"
    assert len(crossing.read_text().split("\n")) == 13

    # The same weights through the evaluation path (checkpoint -> merged Tracker, one sequence at a time); the
    # random tiny backbone is rebuilt from its fixed seed.
    def factory():
        cfg = load_config("S-224", TINY[:8])
        model = build_model(cfg.model)
        load_trainable(model, run / "model.safetensors")
        return Tracker(model, cfg, device="cpu")

    torch.set_num_threads(1)
    try:
        for bench, root, names in (("lasot", lasot, ["airplane-1"]), ("otb", otb, [])):
            seqs = load_sequences(bench, root, names)
            for s in seqs:
                s.frames, s.boxes, s.valid = s.frames[:12], s.boxes[:12], s.valid[:12]
            run_benchmark(factory, seqs, tmp_path / "eval" / bench, "lorat", "final", log=None)
            gts = load_ground_truth(bench, root, [s.name for s in seqs])
            s = evaluate_results(gts, tmp_path / "eval" / bench, "lorat", "final", "stark", bench, length="truncate")
            for k, v in s.scores.items():
                assert abs(rows[-1][f"track/{bench}/{k}"] - v) < 1e-9, (bench, k, rows[-1], s.scores)
    finally:
        torch.set_num_threads(2)


def test_tracking_check_options_are_checked_before_training(train_module, sources, shared_data, tmp_path):
    from lorat_scale.config import load_config
    from lorat_scale.train.distributed import check_run

    with pytest.raises(ConfigError, match="train.track_every_epochs is set but data.track_sources is empty"):
        check_run(load_config("S-224", ["train.track_every_epochs=1"]), None, "cpu")
    zero3 = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    with pytest.raises(ConfigError, match="train.track_every_epochs with ZeRO-3"):
        check_run(load_config("S-224", ["train.track_every_epochs=1", "data.track_sources=[otb=/x]"]), zero3, "cuda")
    base = ["--variant", "S-224", *TINY, sources[0], "train.epochs=1", "data.pairs_per_epoch=4", "train.global_batch=4",
            "train.micro_batch=4", f"train.output_dir={tmp_path / 'run'}", "train.track_every_epochs=1"]
    for entry, message in ((f"got10k_test={tmp_path}", "GOT-10k test withholds its ground truth"),
                           (f"nope={tmp_path}", "unknown benchmark 'nope'"),
                           (f"{shared_data / 'otb'}", "must look like benchmark"),
                           (f"lasot:airplane-9={shared_data / 'lasot'}", r"no sequence\(s\) \['airplane-9'\]")):
        with pytest.raises(SystemExit, match=f"error: data.track_sources entry .*{message}"):
            run_inprocess(train_module, [*base, f"data.track_sources=[{entry}]"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained
