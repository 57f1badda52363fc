#!/usr/bin/env python
"""One-shot GPU check: what only a GPU can show, in one command (about 8 minutes on one H100/H200).

    bash scripts/gpu_wheels.sh                 # here: the wheels the GPU image lacks -> .whl/ (git-ignored)
    python scripts/gpu_check.py --prepare      # here: sample frames + dry-run estimates -> .gpu/ (git-ignored)
    # on the lent machine (device tool: carry [".whl", ".gpu"]):
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 scripts/gpu_check.py --out $OUT
    python scripts/gpu_check.py --smoke --out /tmp/gc   # CPU smoke mode (tests/test_gpu_check.py, in CI)

Writes gpu_check.json and gpu_check.md (one Markdown table per part) to --out. Each part ends
"ok", "failed" (with the error) or "skipped" (with the reason); a threshold a part checks is
reported as met or not met next to the measured figure.

1. memory: ``torch.cuda.max_memory_allocated`` of a steady-state training step (the loop's step,
   lorat_scale/train/step.py) against the dry-run estimate (``lorat-scale dry-run``, world size 1)
   for g-224 and g-378 at batch 16, option sets none / checkpointing + bf16 frozen weights / max;
   pairs/s of the same steps for L-224 and g-378 (batches made on the device, no data loading).
2. DeepSpeed ZeRO-2 and ZeRO-3 through accelerate and the training loop on one GPU (torchrun, an
   NCCL group of size 1): 4 steps, and 2 steps + save + resume for 2 more; the weights of both
   runs compared, grad_norm logged.
3. int8 and nf4 frozen weights trained on CUDA: loss within 2% of bf16 frozen weights after 20
   steps on the same batches; merging works; the quantized weights are unchanged by a move to CUDA.
4. xformers against SDPA (outputs, speed).
5. fp16 with GradScaler through the loop; torch.compile + resume through the loop.
6. tracking FPS of the merged B-224, L-224 and g-378 at batch 1 in bf16 and fp16, model-only and
   end-to-end on the carried sample sequence (scripts/bench_track.py's measurements).
Random backbones everywhere: memory and speed do not depend on the weights.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout without install
sys.path.insert(0, str(ROOT / "scripts"))  # bench_memory, bench_track

import torch  # noqa: E402

from lorat_scale.config import load_config  # noqa: E402
from lorat_scale.memory.estimate import GiB, default_probes, estimate, make_batch  # noqa: E402
from lorat_scale.recipes import memory_saving  # noqa: E402
from lorat_scale.outputs import write_atomic  # noqa: E402

CARRY = ROOT / ".gpu"  # what --prepare writes and the device tool carries
OPTION_SETS = {"none": [], "ckpt+bf16": ["model.grad_checkpointing=true", "model.frozen_dtype=bf16"],
               "max": memory_saving.SETS["max"]}
TINY = ["model.embed_dim=64", "model.depth=1", "model.num_heads=2", "model.lora_r=4", "model.lora_alpha=4",
        "model.template_size=28", "model.search_size=56", "model.pretrain_grid=6"]


class Skip(Exception):
    """A part (or row) that cannot run here, with the reason."""


class Check:
    """Runs the parts, keeps their rows and statuses, writes gpu_check.json and gpu_check.md."""

    def __init__(self, out: Path, smoke: bool, budget: float) -> None:
        self.out, self.smoke, self.budget, self.t0 = out, smoke, budget, time.perf_counter()
        self.device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
        self.parts: dict[str, dict] = {}
        self.env = {"torch": torch.__version__, "python": sys.version.split()[0], "device": self.device.type,
                    "gpu": torch.cuda.get_device_name(0) if self.device.type == "cuda" else None, "smoke": smoke}
        for mod in ("deepspeed", "bitsandbytes", "xformers", "webdataset", "accelerate", "timm", "peft"):
            try:
                self.env[mod] = __import__(mod).__version__
            except Exception as e:  # noqa: BLE001 - any import failure is a reason to report
                self.env[mod] = f"missing ({type(e).__name__})"

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.budget - (time.perf_counter() - self.t0)

    def run(self, name: str, fn, *args) -> None:
        """Run one part; record ok / failed / skipped with its rows."""
        rows: list[dict] = []
        t0 = time.perf_counter()
        try:
            if self.left() < 20:
                raise Skip(f"time budget of {self.budget:.0f} s spent")
            fn(self, rows, *args)
            status, why = "ok", ""
        except Skip as e:
            status, why = "skipped", str(e)
        except Exception as e:  # noqa: BLE001 - a part's failure is a result, the next parts still run
            status, why = "failed", f"{type(e).__name__}: {e}"
            traceback.print_exc()
        seconds = round(time.perf_counter() - t0, 1)
        self.parts[name] = {"status": status, "reason": why, "rows": rows, "seconds": seconds}
        print(f"[{name}] {status} in {time.perf_counter() - t0:.0f} s {why}", flush=True)
        self.write()

    def write(self) -> None:
        """gpu_check.json (everything) and gpu_check.md (a table per part)."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "gpu_check.json", json.dumps({"env": self.env, "parts": self.parts}, indent=1))
        md = ["# GPU check", "", " | ".join(f"{k} {v}" for k, v in self.env.items()), ""]
        for name, part in self.parts.items():
            why = f": {part['reason']}" if part["reason"] else ""
            md += [f"## {name}: {part['status']} ({part['seconds']} s){why}", ""]
            if part["rows"]:
                keys = list(dict.fromkeys(k for r in part["rows"] for k in r))
                md += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                md += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in part["rows"]]
                md.append("")
        write_atomic(self.out / "gpu_check.md", "\n".join(md) + "\n")


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cfg(check: Check, variant: str, overrides: list[str], batch: int):
    """The variant's config (tiny in smoke mode) with the micro-batch and one micro-batch per step."""
    extra = TINY + ["train.precision=fp32"] if check.smoke else []
    return load_config(variant, [*overrides, *extra, f"train.micro_batch={batch}", f"train.global_batch={batch}"])


def _needs(overrides: list[str]) -> None:
    """Skip a row whose options need bitsandbytes when it is missing."""
    if any(o.endswith(("int8", "nf4", "adamw8bit")) for o in overrides):
        try:
            import bitsandbytes  # noqa: F401
        except Exception as e:  # noqa: BLE001
            raise Skip(f"bitsandbytes not importable ({type(e).__name__}): carry it (scripts/gpu_wheels.sh)") from None


# ---------------------------------------------------------------------------------------------
# 1. memory against the dry run, and pairs/s
# ---------------------------------------------------------------------------------------------
def part_memory_speed(check: Check, rows: list[dict]) -> None:
    """max_memory_allocated vs the estimate (g-224, g-378); pairs/s (L-224, g-378); every option set."""
    from lorat_scale.models import build_model
    from lorat_scale.train.optim import build_optimizer
    from lorat_scale.train.step import LocalRunner, train_step

    estimates = json.loads((CARRY / "estimates.json").read_text()) if (CARRY / "estimates.json").is_file() else {}
    batch = 2 if check.smoke else 16
    plan = {"g-224": ("memory",), "g-378": ("memory", "speed"), "L-224": ("speed",)}
    if check.smoke:
        plan = {"S-224": ("memory", "speed")}
    sets = {k: v for k, v in OPTION_SETS.items() if not check.smoke or k != "ckpt+bf16"}  # smoke: none and max
    for variant, what in plan.items():
        for set_name, overrides in sets.items():
            row = {"variant": variant, "options": set_name, "batch": batch}
            rows.append(row)
            try:
                _needs(overrides)
                cfg = _cfg(check, variant, overrides, batch)
                if "memory" in what:
                    key = f"{variant}|{set_name}|{batch}"
                    est = estimates.get(key) or estimate(cfg, probe_depths=default_probes(cfg)).allocated
                    row["estimate GiB"] = est / GiB
                model = build_model(cfg.model, device=check.device).train()
                runner = LocalRunner(check.device, cfg.train.precision)
                opt = runner.prepare_optimizer(build_optimizer(model, cfg.train))
                trainable = [p for p in model.parameters() if p.requires_grad]
                batches = [{k: v.to(check.device) for k, v in make_batch(cfg, batch).items()}]  # made on the device

                def step() -> float:  # called only within this iteration of the loop
                    return train_step(model, opt, batches, runner, trainable=trainable,  # noqa: B023
                                      grad_clip=cfg.train.grad_clip).row()["loss"]  # noqa: B023

                step()  # optimizer state
                if check.device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                step()
                if "memory" in what:
                    if check.device.type == "cuda":
                        torch.cuda.synchronize()
                        measured = torch.cuda.max_memory_allocated()
                        row["measured GiB"] = measured / GiB
                        row["error %"] = 100 * (est - measured) / measured
                    else:
                        row["measured GiB"] = "n/a on CPU"
                if "speed" in what:
                    n = 1 if check.smoke else 5
                    if check.device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(n):
                        loss = step()  # .row() reads the loss back: each step ends synchronised
                    row["pairs/s"] = batch * n / (time.perf_counter() - t0)
                    row["loss finite"] = math.isfinite(loss)
                model = opt = batches = None  # frees the memory (the step closure holds these names)
            except Skip as e:
                row["skipped"] = str(e)
            except torch.cuda.OutOfMemoryError:
                row["skipped"] = "out of memory"
            _free()


# ---------------------------------------------------------------------------------------------
# 2. DeepSpeed through the loop; 5. fp16 and compile + resume through the loop
# ---------------------------------------------------------------------------------------------
def _loop(check: Check, run_dir: Path, extra: list[str], steps: int,
          resume: bool = False) -> subprocess.CompletedProcess:
    """The training loop in a process of its own (torchrun, one process: an NCCL group of size 1 on a GPU)."""
    from lorat_scale import paths

    lasot = paths.shared_data() / "lasot"  # the carried frames on the GPU machine (main() sets LORAT_SHARED)
    if not lasot.is_dir():
        raise Skip(f"sample frames not found ({lasot}): run --prepare here and carry .gpu")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                 "--master_port", str(29400 + os.getpid() % 500)] if check.device.type == "cuda" else [sys.executable])
    cmd = [*launcher, "-m", "lorat_scale.train", "--variant", "S-224", *(["--resume", "auto"] if resume else []),
           *(TINY if check.smoke else []), f"data.train_sources=[lasot:all={lasot}]", "data.num_workers=0",
           "data.pairs_per_epoch=64", "train.global_batch=4", "train.micro_batch=2", "train.epochs=1",
           "train.warmup_epochs=0", "train.lr=1e-3", "train.log_with=none", f"train.max_steps={steps}",
           "train.save_every=2", f"train.output_dir={run_dir}", *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
               HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(60, check.left()))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-12:])} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return proc


def _rows(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def _max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a), load_file(b)
    if wa.keys() != wb.keys():
        raise RuntimeError(f"{a} and {b} hold different tensors")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def part_deepspeed(check: Check, rows: list[dict]) -> None:
    """ZeRO-2 and ZeRO-3: uninterrupted 4 steps vs 2 steps + resume; grad_norm logged; weights compared."""
    from lorat_scale.train.distributed import fill_ds_config, read_ds_config

    for stage in ("zero2", "zero3"):
        path = ROOT / "ds_configs" / f"{stage}.json"
        tc = load_config("S-224", ["train.global_batch=4", "train.micro_batch=2"]).train
        fill_ds_config(read_ds_config(path), tc, 1)
    if check.smoke:
        raise Skip("CPU smoke: the configs were filled and checked; DeepSpeed steps through the loop on CPU "
                   "take minutes (tests/test_train.py::test_deepspeed_zero2_step_and_resume runs ZeRO-2)")
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise Skip(f"deepspeed not importable ({type(e).__name__}): carry it (scripts/gpu_wheels.sh)") from None
    base = check.out / "deepspeed"
    for stage in ("zero2", "zero3"):
        ds = ["--ds", str(ROOT / "ds_configs" / f"{stage}.json"), "train.precision=bf16"]
        full, split = base / f"{stage}_full", base / f"{stage}_split"
        shutil.rmtree(full, ignore_errors=True)
        shutil.rmtree(split, ignore_errors=True)
        t0 = time.perf_counter()
        _loop(check, full, ds, 4)
        _loop(check, split, ds, 2)
        proc = _loop(check, split, ds, 4, resume=True)
        a, b = _rows(full), _rows(split)
        diff = _max_diff(full / "model.safetensors", split / "model.safetensors")
        rows.append({"config": stage, "steps": sorted(b), "resumed": "resumed from" in proc.stdout,
                     "grad_norm logged": all("grad_norm" in r for r in b.values()),
                     "loss step 4 (full / resumed)": f"{a[4]['loss']:.5f} / {b[4]['loss']:.5f}",
                     "max |weight diff|": diff, "bitwise": diff == 0.0, "seconds": time.perf_counter() - t0})


def part_loop_fp16_compile(check: Check, rows: list[dict]) -> None:
    """fp16 + GradScaler through the loop; torch.compile, save, resume through the loop."""
    if check.device.type != "cuda":
        raise Skip("fp16 and torch.compile runs need CUDA (the CPU path of compile + resume is "
                   "tests/test_train.py::test_resume_with_compile)")
    run = check.out / "fp16"
    shutil.rmtree(run, ignore_errors=True)
    _loop(check, run, ["train.precision=fp16"], 3)
    r = _rows(run)
    rows.append({"run": "fp16 + GradScaler", "steps": sorted(r),
                 "losses finite": all(math.isfinite(x["loss"]) for x in r.values()),
                 "grad_norm finite": all(math.isfinite(x.get("grad_norm", float("nan"))) for x in r.values())})
    run = check.out / "compile"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    _loop(check, run, ["train.precision=bf16", "train.compile=true"], 2)
    proc = _loop(check, run, ["train.precision=bf16", "train.compile=true"], 3, resume=True)
    rows.append({"run": "compile + resume", "steps": sorted(_rows(run)), "resumed": "resumed from" in proc.stdout,
                 "seconds": time.perf_counter() - t0})


# ---------------------------------------------------------------------------------------------
# 3. int8 / nf4 frozen weights on CUDA
# ---------------------------------------------------------------------------------------------
def part_quantized(check: Check, rows: list[dict]) -> None:
    """20 steps on the same batches: int8 / nf4 loss vs bf16 (within 2%); merge; weights unchanged by a move."""
    _needs(["model.frozen_dtype=nf4"])
    from lorat_scale.models import build_model, merge_for_inference
    from lorat_scale.train.optim import build_optimizer
    from lorat_scale.train.step import LocalRunner, train_step

    steps, batch = (3, 2) if check.smoke else (20, 8)
    losses = {}
    for storage in ("bf16", "int8", "nf4"):
        cfg = _cfg(check, "S-224", [f"model.frozen_dtype={storage}", "train.lr=1e-3", "train.warmup_epochs=0",
                                    *(["train.precision=bf16"] if not check.smoke else [])], batch)
        torch.manual_seed(0)
        batches = [make_batch(cfg, batch)]
        model = build_model(cfg.model, device=check.device).train()
        runner = LocalRunner(check.device, cfg.train.precision)
        opt = runner.prepare_optimizer(build_optimizer(model, cfg.train))
        trainable = [p for p in model.parameters() if p.requires_grad]
        losses[storage] = [train_step(model, opt, batches, runner, trainable=trainable,
                                      grad_clip=cfg.train.grad_clip).row()["loss"] for _ in range(steps)]
        row = {"frozen": storage, "steps": steps, "first loss": losses[storage][0], "last loss": losses[storage][-1]}
        if storage != "bf16":
            rel = abs(losses[storage][-1] - losses["bf16"][-1]) / abs(losses["bf16"][-1])
            row["vs bf16 %"] = 100 * rel
            row["within 2%"] = rel <= 0.02
            model.eval()
            with torch.no_grad():
                b = {k: v.to(check.device) for k, v in batches[0].items()}
                ref = model(b["z"], b["x"], b["z_feat_mask"])["score_map"].float()
                merged = merge_for_inference(model)
                out = merged(b["z"], b["x"], b["z_feat_mask"])["score_map"].float()
            row["merge max |diff|"] = float((out - ref).abs().max())
            moved = _unchanged_by_move(cfg, storage) if check.device.type == "cuda" else "n/a on CPU"
            row["unchanged by move to CUDA"] = moved
        rows.append(row)
        del model, opt
        _free()


def _unchanged_by_move(cfg, storage: str) -> bool:
    """Build on the CPU (quantized there), move to CUDA: the quantized data and scales must not change."""
    from lorat_scale.models import build_model

    model = build_model(cfg.model, device="cpu")
    def state() -> tuple[torch.Tensor, torch.Tensor]:  # the quantized data and its scales, on the CPU
        w = model.blocks[0].attn.q.base_layer.weight
        return w.data.cpu().clone(), (w.SCB if storage == "int8" else w.quant_state.absmax).cpu().clone()

    before = state()
    model.to("cuda")
    after = state()
    return bool(torch.equal(before[0], after[0]) and torch.equal(before[1], after[1]))


# ---------------------------------------------------------------------------------------------
# 4. xformers against SDPA
# ---------------------------------------------------------------------------------------------
def part_xformers(check: Check, rows: list[dict]) -> None:
    """Attention outputs and speed, xformers memory-efficient attention vs SDPA, at g-378 shapes."""
    try:
        import xformers.ops  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise Skip(f"xformers not importable ({type(e).__name__}): its wheels are built for one torch release "
                   "and exceed the device tool's transfer limit, so scripts/gpu_wheels.sh does not fetch it") from None
    if check.device.type != "cuda":
        raise Skip("xformers has no CPU kernels")
    from lorat_scale.models.layers import Attention

    cfg = load_config("g-378")
    m = cfg.model
    n = (m.template_size // m.patch_size) ** 2 + (m.search_size // m.patch_size) ** 2
    x = torch.randn(16, n, m.embed_dim, device="cuda", dtype=torch.bfloat16)
    attn = Attention(m.embed_dim, m.num_heads).to("cuda", torch.bfloat16)
    outs, ms = {}, {}
    for backend in ("sdpa", "xformers"):
        attn.backend = backend
        with torch.no_grad():
            for _ in range(3):
                outs[backend] = attn(x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                attn(x)
            torch.cuda.synchronize()
        ms[backend] = (time.perf_counter() - t0) / 20 * 1e3
    rows.append({"shape": f"16 x {n} x {m.embed_dim}, {m.num_heads} heads, bf16",
                 "max |xformers - sdpa|": float((outs["xformers"] - outs["sdpa"]).abs().max()),
                 "sdpa ms": ms["sdpa"], "xformers ms": ms["xformers"]})


# ---------------------------------------------------------------------------------------------
# 6. tracking FPS
# ---------------------------------------------------------------------------------------------
def part_tracking(check: Check, rows: list[dict]) -> None:
    """Merged model at batch 1: model-only and end-to-end FPS in bf16 and fp16."""
    from bench_track import load_frames, model_inputs, time_end_to_end, time_model

    from lorat_scale.config import get_preset
    from lorat_scale.models import build_model
    from lorat_scale.tracking.tracker import BatchTracker

    frames, box, desc = load_frames()
    variants = ["S-224"] if check.smoke else ["B-224", "L-224", "g-378"]
    precisions = ["fp32"] if check.smoke else ["bf16", "fp16"]
    warmup, iters = (1, 2) if check.smoke else (10, 100)
    for variant in variants:
        cfg = get_preset(variant)
        if check.smoke:
            cfg = load_config(variant, TINY)
        model = build_model(cfg.model)
        for precision in precisions:
            tracker = BatchTracker(model, cfg, device=check.device, precision=precision)
            model = tracker.model  # merged in place on first use
            model_s = time_model(tracker, model_inputs(tracker, frames, box, 1), warmup, iters)
            e2e_s, _ = time_end_to_end(tracker, frames, box, 1, warmup, max(iters // 5, 2))
            rows.append({"variant": variant, "precision": precision, "frames": desc,
                         "model fps": 1 / sorted(model_s)[len(model_s) // 2],
                         "end-to-end fps": 1 / sorted(e2e_s)[len(e2e_s) // 2]})
        del model
        _free()


# ---------------------------------------------------------------------------------------------
# --prepare: sample frames and estimates to carry
# ---------------------------------------------------------------------------------------------
def prepare(frames: int = 100) -> None:
    """Copy the first ``frames`` LaSOT airplane-1 frames (+ annotations) and write the dry-run estimates to .gpu/."""
    from lorat_scale import paths
    from lorat_scale.memory.estimate import resolve_config

    src = paths.shared_data() / "lasot" / "airplane" / "airplane-1"
    dst = CARRY / "shared" / "data" / "lasot" / "airplane" / "airplane-1"
    shutil.rmtree(CARRY, ignore_errors=True)
    (dst / "img").mkdir(parents=True)
    for i in range(1, frames + 1):
        shutil.copy(src / "img" / f"{i:08d}.jpg", dst / "img")
    (dst / "groundtruth.txt").write_text("\n".join((src / "groundtruth.txt").read_text().splitlines()[:frames]) + "\n")
    for flags in ("full_occlusion.txt", "out_of_view.txt"):
        (dst / flags).write_text(",".join((src / flags).read_text().strip().split(",")[:frames]))
    shutil.copy(src / "nlp.txt", dst)
    estimates = {}
    for variant in ("g-224", "g-378"):
        for set_name, overrides in OPTION_SETS.items():
            cfg = resolve_config(variant, 16, overrides)
            estimates[f"{variant}|{set_name}|16"] = estimate(cfg, probe_depths=default_probes(cfg)).allocated
            print(f"estimate {variant} {set_name}: {estimates[f'{variant}|{set_name}|16'] / GiB:.2f} GiB", flush=True)
    write_atomic(CARRY / "estimates.json", json.dumps(estimates, indent=1))
    size = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    print(f"wrote {CARRY} ({size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    """Run every part (or --prepare); exit 1 if a part failed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json, gpu_check.md, run folders")
    p.add_argument("--smoke", action="store_true", help="CPU smoke mode: every part on a tiny model")
    p.add_argument("--prepare", action="store_true", help="write .gpu/ (sample frames, estimates) and exit")
    p.add_argument("--budget", type=float, default=460, help="seconds; parts that would start later are skipped")
    p.add_argument("--parts", default="memory,deepspeed,quantized,loop,tracking,xformers")
    args = p.parse_args(argv)
    if args.prepare:
        prepare()
        return 0
    if (CARRY / "shared").is_dir() and "LORAT_SHARED" not in os.environ:
        os.environ["LORAT_SHARED"] = str(CARRY / "shared")  # the carried sample frames (bench_track reads them)
    check = Check(Path(args.out), args.smoke, args.budget)
    print(json.dumps(check.env), flush=True)
    parts = {"memory": ("memory and speed", part_memory_speed), "deepspeed": ("DeepSpeed", part_deepspeed),
             "quantized": ("int8 / nf4", part_quantized), "loop": ("fp16, compile + resume", part_loop_fp16_compile),
             "tracking": ("tracking FPS", part_tracking), "xformers": ("xformers vs SDPA", part_xformers)}
    for key in args.parts.split(","):
        name, fn = parts[key]
        check.run(name, fn)
    print(f"wrote {check.out / 'gpu_check.json'} and {check.out / 'gpu_check.md'} "
          f"({time.perf_counter() - check.t0:.0f} s)")
    return 1 if any(part["status"] == "failed" for part in check.parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
