#!/usr/bin/env python
"""Track one object through a video file or a camera and write an annotated video + the boxes.

    python scripts/track_video.py --video clip.mp4 --init 292,128,146,132 --checkpoint run/best.safetensors \
        --backbone dinov2_vits14.pth --out tracked.mp4
    python scripts/track_video.py --video 0            # camera 0; select the target with the mouse

``--init`` is x,y,w,h in frame pixels (0-based). Without it the first frame is shown for a mouse
selection (cv2.selectROI; needs a display and a GUI build of OpenCV). Without ``--checkpoint`` the
sample ViT-S weights are used with an **untrained head** (the boxes then show the pipeline, not
tracking). The boxes file holds one ``x,y,w,h`` line per frame (0-based continuous pixels).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale.boxes import xyxy_to_xywh
from lorat_scale.config import ConfigError, add_overrides, parse_with_overrides
from lorat_scale.demo import sample_tracker
from lorat_scale.evaluation.visualize import draw_box, draw_label
from lorat_scale.outputs import OutputError, atomic_path, check_outputs
from lorat_scale.tracking.tracker import Tracker


def parse_init(text: str) -> np.ndarray:
    """'x,y,w,h' -> float64 xyxy; ValueError with the reason otherwise."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--init {text!r}: expected four numbers x,y,w,h (e.g. 292,128,146,132)") from None
    if not (w > 0 and h > 0) or not np.isfinite([x, y, w, h]).all():
        raise ValueError(f"--init {text!r}: width and height must be positive and finite")
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def open_video(source: str) -> tuple[cv2.VideoCapture, bool]:
    """Open a file or a camera index; (capture, is_camera). Raises if it cannot be read."""
    is_camera = source.isdigit()
    if not is_camera and not Path(source).is_file():
        raise FileNotFoundError(f"video file not found: {source}")
    cap = cv2.VideoCapture(int(source) if is_camera else source)
    if not cap.isOpened():
        raise RuntimeError(f"cannot open {'camera' if is_camera else 'video'} {source!r} with OpenCV")
    return cap, is_camera


def select_roi(frame_bgr: np.ndarray) -> np.ndarray:
    """Mouse selection of the target on the first frame (needs a display)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("no display for a mouse selection: pass --init x,y,w,h")
    try:
        x, y, w, h = cv2.selectROI("select the target, then ENTER", frame_bgr, showCrosshair=True)
        cv2.destroyAllWindows()
    except cv2.error as e:  # opencv-python-headless has no GUI
        raise RuntimeError(f"OpenCV has no GUI here ({e.msg.strip()}): pass --init x,y,w,h") from None
    if w <= 0 or h <= 0:
        raise RuntimeError("empty selection: pass --init x,y,w,h or select a box")
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def draw(frame_bgr: np.ndarray, box: np.ndarray, score: float | None, index: int) -> np.ndarray:
    """Box, score and frame index drawn on a copy of the frame."""
    out = frame_bgr.copy()
    draw_box(out, box, (0, 255, 0))
    draw_label(out, f"#{index}" + ("  init" if score is None else f"  score {score:.2f}"), 0, (0, 255, 255), 0.6)
    return out


def build_tracker(args: argparse.Namespace) -> Tracker:
    """Tracker from --checkpoint/--backbone, or the sample weights (untrained head); the overrides apply to both."""
    kw = dict(device=args.device, precision=args.precision, backend=args.backend, compile=args.compile or None)
    if args.checkpoint:
        return Tracker.from_checkpoint(args.checkpoint, variant=args.variant, backbone=args.backbone,
                                       overrides=args.overrides, **kw)
    if args.backbone:
        raise SystemExit("--backbone without --checkpoint: pass the trained checkpoint too")
    print("note: no --checkpoint: sample ViT-S weights with an UNTRAINED head (boxes will not follow the target)")
    return sample_tracker(variant=args.variant, overrides=args.overrides, **kw)


def main(argv: list[str] | None = None) -> int:
    """Run the tracker over the video; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="video file or camera index (0, 1, ...)")
    p.add_argument("--init", default="", help="x,y,w,h of the target in the first frame (default: mouse selection)")
    p.add_argument("--checkpoint", default="", help="trained checkpoint (ours or official LoRAT)")
    p.add_argument("--backbone", default="", help="DINOv2 backbone weights for --checkpoint")
    p.add_argument("--variant", default="S-224", help="variant preset, e.g. B-224 (the sample weights are ViT-S)")
    p.add_argument("--out", default="", help="annotated video (default: <video>_tracked.mp4)")
    p.add_argument("--boxes", default="", help="boxes txt (default: next to --out, .txt)")
    add_overrides(p, "track.window_penalty=0.3")
    # Unset flags leave the value to the config (track.device/backend/precision, also settable as overrides).
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: track.device, auto)")
    p.add_argument("--backend", default=None, choices=["torch", "onnxruntime"],
                   help="what runs the model: PyTorch (default), or ONNX Runtime (exported once and cached; "
                        "faster on CPUs)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16", "int8"],
                   help="torch: fp32 (default), bf16, fp16 (autocast); onnxruntime: fp32, int8 (CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (backend torch)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all; cameras: until Ctrl-C)")
    p.add_argument("--snapshot", default="", help="also save annotated frame --snapshot-frame as this PNG")
    p.add_argument("--snapshot-frame", type=int, default=10, help="frame number (0-based) of --snapshot")
    args = parse_with_overrides(p, argv)

    try:
        init_box = parse_init(args.init) if args.init else None
        cap, is_camera = open_video(args.video)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        p.error(str(e))
    ok, first = cap.read()
    if not ok or first is None:
        p.error(f"cannot read a first frame from {args.video!r} (empty or unsupported codec)")
    h, w = first.shape[:2]
    if init_box is None:
        try:
            init_box = select_roi(first)
        except RuntimeError as e:
            p.error(str(e))
    if init_box[2] <= 0 or init_box[3] <= 0 or init_box[0] >= w or init_box[1] >= h:
        p.error(f"--init box {args.init} lies outside the {w}x{h} frame")

    out_path = Path(args.out or (f"camera{args.video}" if is_camera else str(Path(args.video).with_suffix("")))
                    + ("" if args.out else "_tracked.mp4"))
    boxes_path = Path(args.boxes) if args.boxes else out_path.with_suffix(".txt")
    try:  # before anything is written: no output may be one of the inputs, under any spelling or link
        check_outputs({"--out": out_path, "--boxes": boxes_path, "--snapshot": args.snapshot},
                      {"--video": None if is_camera else args.video, "--checkpoint": args.checkpoint,
                       "--backbone": args.backbone})
    except OutputError as e:
        p.error(str(e))
    try:  # before any output file is opened: a bad override must not leave (or clobber) files
        tracker = build_tracker(args)
    except ConfigError as e:  # an unknown override key, or a backend/precision that do not go together
        p.error(str(e))
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 25.0
    announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not is_camera else 0  # the container's own count
    # Outputs are written to temporary files and renamed at the end: a crash leaves no half video.
    with atomic_path(out_path) as video_tmp:
        writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
        if not writer.isOpened():
            p.error(f"cannot write {out_path} (mp4v codec unavailable? try --out file.avi)")

        tracker.init(cv2.cvtColor(first, cv2.COLOR_BGR2RGB), init_box)
        print(f"video {args.video}: {w}x{h} @ {fps_in:.1f} fps; init box xyxy {np.round(init_box, 2).tolist()}; "
              f"{args.variant} on {tracker.device} ({tracker.backend} {tracker.precision})")
        total = announced
        if args.max_frames:
            total = min(total, args.max_frames) if total > 0 else args.max_frames
        boxes = [init_box]
        writer.write(draw(first, init_box, None, 0))
        if args.snapshot and args.snapshot_frame == 0:
            save_image(args.snapshot, draw(first, init_box, None, 0))
        track_s, index, interrupted = 0.0, 0, False
        bar = tqdm(total=total or None, initial=1, unit="frame")
        try:
            while not args.max_frames or index + 1 < args.max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                index += 1
                t0 = time.perf_counter()
                box, score = tracker.track(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                track_s += time.perf_counter() - t0
                boxes.append(box)
                annotated = draw(frame, box, score, index)
                writer.write(annotated)
                if args.snapshot and index == args.snapshot_frame:
                    save_image(args.snapshot, annotated)
                bar.update(1)
                bar.set_postfix(track_fps=f"{index / track_s:.1f}")
        except KeyboardInterrupt:
            print("\ninterrupted: writing what was tracked so far")
            interrupted = True
        finally:
            bar.close()
            cap.release()
            writer.release()
        with atomic_path(boxes_path) as tmp:
            np.savetxt(tmp, xyxy_to_xywh(np.stack(boxes)), fmt="%.3f", delimiter=",")
    fps = index / track_s if track_s > 0 else float("nan")
    print(f"tracked {index} frames: {fps:.1f} fps (crop + model + post-processing, no video I/O)")
    print(f"wrote {out_path} and {boxes_path} (x,y,w,h per frame)")
    read = index + 1
    if announced > 0 and read < announced and not interrupted and not (args.max_frames and read >= args.max_frames):
        # OpenCV ends a damaged or cut-off file as if it were complete: say so, and fail the command.
        print(f"warning: {args.video}: read {read} of the {announced} frames its container announces (truncated or "
              f"damaged file?); the outputs hold the {read} frames that could be read", file=sys.stderr)
        return 1
    return 0


def save_image(path: str, image_bgr: np.ndarray) -> None:
    """cv2.imwrite through a temporary file (the format follows the extension)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image_bgr):
            raise OSError(f"cannot write {path}: OpenCV has no encoder for its extension (use .png or .jpg)")


if __name__ == "__main__":
    sys.exit(main())
