"""The VOT toolkit's integration: LoRAT as a TraX tracker process.

The toolkit (``pip install vot-toolkit``) starts ``python -m lorat_scale.integrations.vot`` and
talks to it over TraX: an initialization message (frame path and rectangle), then one frame per
message, each answered with the tracked rectangle and its confidence. The model comes from
environment variables set in the workspace's ``trackers.ini`` (``trackers_ini()`` writes the
entry)::

    [LoRAT]
    label = LoRAT
    protocol = traxpython
    command = lorat_scale.integrations.vot
    timeout = 120
    env_LORAT_CHECKPOINT = /abs/path/model.safetensors
    env_LORAT_BACKBONE = /abs/path/dinov2_vits14_pretrain.pth
    env_LORAT_VARIANT = S-224
    env_LORAT_DEVICE = cuda

``env_LORAT_OVERRIDES`` takes config overrides separated by ``;`` (e.g. ``model.depth=2``); the
optional ``python =`` line picks the interpreter (default: the one running the toolkit).
Then ``vot evaluate LoRAT`` and ``vot analysis LoRAT`` as for any VOT tracker. Polygon
ground truth reaches the tracker as its bounding rectangle (the toolkit converts it, since only
rectangles are declared here).
"""
from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

ENV = {"checkpoint": "LORAT_CHECKPOINT", "backbone": "LORAT_BACKBONE", "variant": "LORAT_VARIANT",
       "overrides": "LORAT_OVERRIDES", "device": "LORAT_DEVICE"}


def trackers_ini(checkpoint: str, backbone: str = "", name: str = "LoRAT", variant: str = "",
                 overrides: list[str] | tuple[str, ...] = (), device: str = "", python: str = "",
                 env: dict[str, str] | None = None, timeout: int = 120) -> str:
    """A ``trackers.ini`` section that runs LoRAT under the VOT toolkit (absolute paths recommended).

    ``env`` adds environment variables of the tracker process (e.g. ``OMP_NUM_THREADS``).
    ``timeout``: seconds the toolkit waits for an answer; its default of 30 s is too short for
    importing torch and loading a ViT-L/g backbone before the first frame.
    """
    lines = [f"[{name}]", f"label = {name}", "protocol = traxpython", "command = lorat_scale.integrations.vot",
             f"timeout = {timeout}", f"env_{ENV['checkpoint']} = {checkpoint}"]
    for key, value in (("backbone", backbone), ("variant", variant), ("overrides", ";".join(overrides)),
                       ("device", device)):
        if value:
            lines.append(f"env_{ENV[key]} = {value}")
    lines += [f"env_{k} = {v}" for k, v in (env or {}).items()]
    if python:
        lines.append(f"python = {python}")
    return "\n".join(lines) + "\n"


def tracker_from_env(environ: dict[str, str] | None = None) -> Any:
    """``Tracker.from_checkpoint`` with the settings of the ``LORAT_*`` environment variables."""
    from ..tracking import Tracker

    env = os.environ if environ is None else environ
    ckpt = env.get(ENV["checkpoint"], "")
    if not ckpt:
        raise SystemExit(f"set {ENV['checkpoint']} (env_{ENV['checkpoint']} in trackers.ini) to a LoRAT checkpoint")
    overrides = [o.strip() for o in env.get(ENV["overrides"], "").split(";") if o.strip()]
    return Tracker.from_checkpoint(ckpt, variant=env.get(ENV["variant"]) or None, backbone=env.get(ENV["backbone"], ""),
                                   overrides=overrides, device=env.get(ENV["device"]) or None)


def _frame(images: dict) -> np.ndarray:
    """The colour frame of a TraX request (a file path) as RGB uint8."""
    from PIL import Image

    image = images.get("color") or next(iter(images.values()))
    with Image.open(image.path()) as im:
        return np.asarray(im.convert("RGB"))


def serve(tracker: Any, log: bool = False) -> None:
    """Answer TraX requests until the client quits: initialize -> echo the region, frame -> the tracked box."""
    from trax import Image, Region, Server, TraxStatus
    from trax.region import Rectangle

    with Server([Region.RECTANGLE], [Image.PATH], tracker_name="LoRAT", log=log) as server:
        while True:
            request = server.wait()
            if request.type in (TraxStatus.QUIT, TraxStatus.ERROR):
                break
            frame = _frame(request.image)
            if request.type == TraxStatus.INITIALIZE:
                if len(request.objects) != 1:
                    raise ValueError(f"LoRAT tracks one object per sequence; the toolkit sent {len(request.objects)}")
                region = request.objects[0][0]
                x, y, w, h = region.bounds()
                tracker.init(frame, [x, y, w, h], box_format="xywh")
                server.status([(Rectangle.create(x, y, w, h), {})])
            else:
                box, score = tracker.track(frame)
                x1, y1, x2, y2 = (float(v) for v in box)
                server.status([(Rectangle.create(x1, y1, x2 - x1, y2 - y1), {"confidence": f"{score:.6f}"})])


def main() -> int:
    """Entry point of ``python -m lorat_scale.integrations.vot`` (started by the VOT toolkit)."""
    serve(tracker_from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
