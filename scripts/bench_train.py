#!/usr/bin/env python
"""Training throughput (pairs/s) and peak memory of one variant with each memory option on and off.

    python scripts/bench_train.py --variant S-224 --batch 2 --steps 3            # CPU or GPU
    python scripts/bench_train.py --variant L-224 --batch 16 --rows base,bf16,ckpt,nf4

Each row runs in a fresh subprocess (peak memory is per process): the model is built with a
random backbone on the device, then `warmup` + `steps` optimizer steps of the training loop's own
step (lorat_scale/train/step.py: host batch to the device, forward, LoRAT loss, backward, clip,
optimizer) run on synthetic inputs of the variant's sizes, so the numbers are the model+optimizer
cost without the data loader. Memory: CUDA max_memory_allocated, or on CPU the peak resident set size
(ru_maxrss) minus the RSS after imports (the Python/torch baseline is printed once).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name -> (description, dotted overrides). "base" is every option off (fp32 everywhere).
ROWS: dict[str, tuple[str, list[str]]] = {
    "base": ("fp32, nothing on", []),
    "bf16": ("bf16 autocast", ["train.precision=bf16"]),
    "fp16": ("fp16 autocast + GradScaler (CUDA)", ["train.precision=fp16"]),
    "ckpt": ("gradient checkpointing", ["model.grad_checkpointing=true"]),
    "frozen_bf16": ("frozen weights bf16", ["model.frozen_dtype=bf16"]),
    "int8": ("frozen weights int8 (bnb)", ["model.frozen_dtype=int8"]),
    "nf4": ("frozen weights nf4 (bnb)", ["model.frozen_dtype=nf4"]),
    "adamw8bit": ("8-bit AdamW (bnb)", ["train.optimizer=adamw8bit"]),
    "all": ("bf16 + ckpt + nf4 + adamw8bit",
            ["train.precision=bf16", "model.grad_checkpointing=true", "model.frozen_dtype=nf4",
             "train.optimizer=adamw8bit"]),
}
DEFAULT_ROWS = "base,bf16,ckpt,frozen_bf16,int8,nf4,adamw8bit,all"


def rss_gb() -> float:
    """Peak resident set size of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_one(variant: str, overrides: list[str], batch: int, steps: int, warmup: int, device: str) -> dict:
    """Build, train ``warmup + steps`` steps on synthetic data; return pairs/s and peak memory."""
    import torch

    from lorat_scale.config import load_config
    from lorat_scale.memory.estimate import make_batch
    from lorat_scale.models import build_model
    from lorat_scale.train.optim import build_optimizer
    from lorat_scale.train.step import LocalRunner, train_step

    base_rss = rss_gb()
    cfg = load_config(variant, overrides)
    dev = torch.device(device)
    if cfg.train.precision == "fp16" and dev.type != "cuda":
        return {"error": "fp16 needs CUDA"}
    model = build_model(cfg.model, device=dev).train()  # int8/nf4 quantized on the device itself
    # The training loop's step (train/step.py) through accelerate's interface for one device.
    runner = LocalRunner(dev, cfg.train.precision)
    opt = runner.prepare_optimizer(build_optimizer(model, cfg.train))
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    batches = [make_batch(cfg, batch)]  # host tensors: the step moves them, as in training
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        row = train_step(model, opt, batches, runner, trainable=trainable, grad_clip=cfg.train.grad_clip).row()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    res = {"pairs_per_s": batch * len(times) / sum(times), "loss": row["loss"]}
    if dev.type == "cuda":
        res["peak_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    else:
        res["peak_gb"] = rss_gb() - base_rss
        res["base_rss_gb"] = base_rss
    return res


def main(argv: list[str] | None = None) -> int:
    """Run every requested row in its own process and print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="S-224")
    p.add_argument("--batch", type=int, default=2, help="pairs per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one row, print JSON
    p.add_argument("overrides", nargs="*", help="extra dotted overrides applied to every row")
    a = p.parse_intermixed_args(argv)
    import torch

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if a.one:
        # Every row starts from fp32 (the config default is bf16, the GPU default) so "base" is all-off.
        overrides = ["train.precision=fp32"] + ROWS[a.one][1] + a.overrides
        res = run_one(a.variant, overrides, a.batch, a.steps, a.warmup, device)
        print("RESULT " + json.dumps(res))
        return 0
    names = a.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    threads = torch.get_num_threads()
    print(f"{a.variant}, batch {a.batch}, {a.steps} timed steps after {a.warmup} warm-up, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else f", {threads} threads"))
    mem_col = "peak GPU alloc (GiB)" if device.startswith("cuda") else "peak RSS above baseline (GiB)"
    lines = [f"| row | options | pairs/s | {mem_col} |", "|---|---|---|---|"]
    base_rss = None
    for name in names:
        cmd = [sys.executable, __file__, "--variant", a.variant, "--batch", str(a.batch), "--steps", str(a.steps),
               "--warmup", str(a.warmup), "--device", device, "--one", name, *a.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        out = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not out:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            lines.append(f"| {name} | {ROWS[name][0]} | failed: {tail[:80]} | |")
        else:
            r = json.loads(out[0][7:])
            if "error" in r:
                lines.append(f"| {name} | {ROWS[name][0]} | n/a ({r['error']}) | |")
            else:
                base_rss = r.get("base_rss_gb", base_rss)
                lines.append(f"| {name} | {ROWS[name][0]} | {r['pairs_per_s']:.3g} | {r['peak_gb']:.3f} |")
        print(lines[-1] if len(lines) > 3 else "\n".join(lines), flush=True)
    print()
    print("\n".join(lines))
    if base_rss is not None:
        print(f"\n(CPU baseline RSS after imports: {base_rss:.2f} GiB, excluded above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
