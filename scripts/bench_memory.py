"""Measured peak GPU memory of one training step next to the estimate (error in %).

    python scripts/bench_memory.py                          # g-224 and g-378, every option set
    python scripts/bench_memory.py --variants B-224 --sets C,G --batch 16

On a CUDA GPU each configuration is built on the device (random backbone: values do not change
memory), one step creates the optimizer state, then the peak statistics are reset and the second
step (the steady state the estimate predicts) is measured: ``torch.cuda.max_memory_allocated``
against the predicted max_allocated, ``max_memory_reserved`` against predicted allocated +
fragmentation. Without a GPU it says so, prints the estimates and exits 0.
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

import torch  # noqa: E402

from lorat_scale.memory.estimate import GiB, default_probes, estimate, make_batch, resolve_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_table import OPTION_SETS  # noqa: E402


def measure(cfg) -> tuple[int, int]:
    """(max_memory_allocated, max_memory_reserved) of a steady-state training step on the GPU."""
    from lorat_scale.models import build_model
    from lorat_scale.train.optim import build_optimizer
    from lorat_scale.train.step import LocalRunner, train_step

    model = build_model(cfg.model, device="cuda").train()
    runner = LocalRunner("cuda", cfg.train.precision)
    opt = runner.prepare_optimizer(build_optimizer(model, cfg.train))
    trainable = [p for p in model.parameters() if p.requires_grad]
    batches = [make_batch(cfg, cfg.train.micro_batch)]

    def step() -> None:  # the training loop's step, as the dry run traces it
        train_step(model, opt, batches, runner, trainable=trainable, grad_clip=cfg.train.grad_clip).row()

    step()  # creates the optimizer state
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    out = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    del model, opt, batches
    gc.collect()
    torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    """Estimate (and on a GPU measure) every requested configuration; print one row each."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="g-224,g-378")
    p.add_argument("--sets", default="", help="option-set letters from scripts/memory_table.py, e.g. C,G (default all)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--full-depth", action="store_true", help="estimate by tracing every block")
    args = p.parse_args(argv)

    gpu = torch.cuda.is_available()
    if not gpu:
        print("no CUDA GPU present: printing the estimates only (nothing measured)")
    sets = [s for s in OPTION_SETS if not args.sets or s[0].split()[0] in args.sets.split(",")]
    print("| variant | option set | est. max_allocated | measured | error | est. reserved | measured | error |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        for label, overrides in sets:
            cfg = resolve_config(variant, args.batch, overrides)
            e = estimate(cfg, probe_depths=None if args.full_depth else default_probes(cfg))
            frag = sum(t.bytes for t in e.modelled if t.name == "fragmentation")
            est_alloc, est_res = e.allocated, e.allocated + frag
            row = f"| {variant} | {label} | {est_alloc / GiB:.2f} GiB |"
            if not gpu:
                print(f"{row} - | - | {est_res / GiB:.2f} GiB | - | - |", flush=True)
                continue
            try:
                alloc, reserved = measure(cfg)
            except torch.cuda.OutOfMemoryError:
                print(f"{row} OOM | - | {est_res / GiB:.2f} GiB | OOM | - |", flush=True)
                gc.collect()
                torch.cuda.empty_cache()
                continue
            except (ImportError, RuntimeError) as err:  # e.g. bitsandbytes missing on the GPU image
                print(f"{row} skipped: {str(err).splitlines()[0][:80]} | | | | |", flush=True)
                continue
            err_alloc, err_res = 100 * (est_alloc - alloc) / alloc, 100 * (est_res - reserved) / reserved
            print(f"{row} {alloc / GiB:.2f} GiB | {err_alloc:+.1f}% | "
                  f"{est_res / GiB:.2f} GiB | {reserved / GiB:.2f} GiB | {err_res:+.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
