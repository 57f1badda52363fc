#!/usr/bin/env python
"""The dry run of every variant: per-rank memory, FLOPs and communication of one training step.

    python scripts/dry_run_table.py                                  # 8 variants x {none, max}, world 512
    python scripts/dry_run_table.py --world-size 8 --variants g-378 --sets none
    python scripts/dry_run_table.py --ds ds_configs/zero2.json --sets none

Each row is ``lorat-scale dry-run --variant V --batch B --world-size W [--memory-saving max]``:
two real training steps on fake CUDA tensors as rank 0 of a fake CUDA-only world of W ranks
(lorat_scale/memory/estimate.py), the second measured. Rows print as they finish; the CPU load
is printed with the table because the seconds column depends on it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from lorat_scale.config import VARIANTS  # noqa: E402
from lorat_scale.memory.estimate import GiB, default_probes, dry_run, format_bytes, resolve_config  # noqa: E402
from lorat_scale.train.distributed import read_ds_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Dry-run every (variant, option set) and print one Markdown row each."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--sets", default="none,max", help="memory-saving sets: none, max")
    p.add_argument("--batch", type=int, default=16, help="micro-batch per rank")
    p.add_argument("--world-size", type=int, default=512)
    p.add_argument("--ds", default="", help="DeepSpeed JSON (default: DDP)")
    args = p.parse_args(argv)
    ds = read_ds_config(args.ds) if args.ds else None

    load = os.getloadavg()
    print(f"world size {args.world_size}, micro-batch {args.batch} per rank, accumulation 1, "
          f"{'DeepSpeed ' + args.ds if ds else 'DDP'}; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start")
    print("| variant | memory saving | peak / rank | max_allocated / rank | peak in | FLOPs / step / rank | "
          "all-reduce / step | reduce-scatter / step | all-gather / step | dry run (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for variant in args.variants.split(","):
        for saving in args.sets.split(","):
            cfg = resolve_config(variant, args.batch, [f"train.global_batch={args.batch * args.world_size}"], saving)
            r = dry_run(cfg, args.world_size, ds, probe_depths=default_probes(cfg))
            m = r.memory
            print(f"| {variant} | {saving} | {m.peak / GiB:.2f} GiB | {m.allocated / GiB:.2f} GiB | "
                  f"{m.peak_phase.split(' (')[0]} | {r.flops / 1e12:.2f} TFLOP | {format_bytes(r.all_reduce)} | "
                  f"{format_bytes(r.reduce_scatter)} | {format_bytes(r.all_gather)} | {r.seconds:.1f} |", flush=True)
    load = os.getloadavg()
    print(f"\n{time.perf_counter() - t0:.0f} s in all; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          "at the end. FLOPs: matmul, conv and attention of forward + backward (FlopCounterMode); "
          "peak: traced + modelled terms (lorat-scale dry-run prints the breakdown).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
