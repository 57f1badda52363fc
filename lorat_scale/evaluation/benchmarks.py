"""Benchmarks: their protocol, display names, and ground truth read from annotation files only.

Two ways in to a benchmark root:

* ``load_ground_truth`` (scoring): the boxes **as published**, in the benchmark's own
  coordinates (LaSOT stays 1-based), plus the visibility flags, GOT-10k cover levels and
  resolution. It reads annotation files only, so existing result files can be scored without
  the image folders.
* ``load_sequences`` (running a tracker): ``lorat_scale.data.readers`` with frames, boxes made
  0-based (readers' convention); ``Benchmark.toolkit_offset`` takes them back to the
  benchmark's coordinates when result files are written.

The protocol of each benchmark follows LoRAT's evaluation: LaSOT_ext and GOT-10k test are run 3
times and averaged; GOT-10k test and TrackingNet have withheld ground truth and are scored by
their servers from a zip of rasterized (integer pixel) boxes.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.readers._common import ReadReport, parse_flags, parse_rows

_SPLIT = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class Benchmark:
    """One evaluation benchmark: how to read it and its protocol defaults."""

    name: str  # command-line name
    display: str  # name in tables and plots, as papers write it
    reader: str  # module of lorat_scale.data.readers used to run a tracker on it
    reader_args: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1  # runs averaged per sequence by the protocol
    server: str = ""  # "got10k" | "trackingnet": ground truth withheld, scored from a submission zip
    rasterize: bool = False  # submission boxes as integer pixel boxes (LoRAT's GOT-10k/TrackingNet zips)
    toolkit_offset: float = 0.0  # readers' 0-based boxes + offset = the benchmark's coordinates
    default_convention: str = "stark"  # LoRAT's own default (STARK behaviour), GOT-10k's own toolkit for GOT-10k


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("lasot", "LaSOT", "lasot", {"split": "test"}, toolkit_offset=1.0),
    Benchmark("lasot_ext", "LaSOT_ext", "lasot", {"split": "all", "dataset": "lasot_ext"}, repeat=3,
              toolkit_offset=1.0),
    Benchmark("got10k_val", "GOT-10k val", "got10k", {"split": "val"}, default_convention="got10k"),
    Benchmark("got10k_test", "GOT-10k test", "got10k", {"split": "test"}, repeat=3, server="got10k",
              rasterize=True, default_convention="got10k"),
    Benchmark("trackingnet", "TrackingNet", "trackingnet", {"split": "test"}, server="trackingnet", rasterize=True),
    Benchmark("otb", "OTB-100", "otb"),
    Benchmark("uav123", "UAV123", "uav123"),
    Benchmark("nfs", "NfS", "nfs"),
    Benchmark("tnl2k", "TNL2K", "tnl2k"),
    Benchmark("vot", "VOT", "vot"),
    Benchmark("custom", "custom", "custom", {"split": "test"}),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (clear error listing the known ones)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[name]


@dataclass
class GroundTruth:
    """One sequence's annotation as published (what the benchmark's toolkit reads)."""

    name: str
    boxes: np.ndarray  # (N, 4) float64 x,y,w,h in the benchmark's coordinates; NaN rows = unannotated
    source: str  # the annotation file (named in error messages)
    visible: np.ndarray | None = None  # (N,) bool from the benchmark's flag files; None if it has none
    cover: np.ndarray | None = None  # GOT-10k cover.label levels 0..8 (its toolkit scores cover > 0)
    resolution: tuple[int, int] | None = None  # (W, H): GOT-10k's clipping bound from meta_info.ini

    def __len__(self) -> int:
        return len(self.boxes)


def _names(sequences: str | list[str]) -> list[str]:
    """Sequence names from ``"a,b"`` or a list (empty = all)."""
    return [s for s in (sequences.split(",") if isinstance(sequences, str) else sequences) if s]


def _pick(items: list, benchmark: str, root: Path, wanted: list[str]) -> list:
    """The named sequences (``.name``) of ``items`` in the order asked, or all; clear errors otherwise."""
    if wanted:
        by_name = {g.name: g for g in items}
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise ValueError(f"{benchmark} at {root}: no sequence(s) {missing[:5]} among {len(items)} found")
        items = [by_name[w] for w in wanted]
    if not items:
        raise ValueError(f"{benchmark} at {root}: no sequences found")
    return items


def _fail(msg: str, path: Path, line: int = 0) -> None:
    """Raise the readers' ``AnnotationError`` (one line naming the file and line)."""
    ReadReport().add(msg, "raise", path=path, line=line)


def _boxes(path: Path, what: str = "x,y,w,h", allow_empty_rows: bool = False) -> np.ndarray:
    """x,y,w,h rows of an annotation file (raises AnnotationError naming file:line on bad lines)."""
    return parse_rows(path, 4, "raise", ReadReport(), what=what, allow_empty_rows=allow_empty_rows)


def _flags(path: Path, n: int) -> np.ndarray:
    """0/1 flags of a sequence, one per frame (raises naming the file when the count differs)."""
    flags = parse_flags(path, "raise", ReadReport())
    if len(flags) != n:
        _fail(f"{path}:1: {len(flags)} flags, expected one per frame of the ground truth ({n})", path, 1)
    return flags


# ---------------------------------------------------------------------------------- per benchmark
def _lasot(root: Path, benchmark: str, wanted: list[str]) -> list[GroundTruth]:
    """LaSOT/LaSOT_ext root (``<class>/<seq>/groundtruth.txt`` + flag files), or the LaSOT
    toolkit's annotation folder (``<seq>.txt`` or ``boxes/<seq>.txt`` + ``absent/<seq>.txt``).

    LaSOT's test split comes from ``testing_set.txt`` unless the sequences are named.
    """
    from ..data.readers.lasot import find_testing_set, list_sequences

    out = []
    ts = find_testing_set(root)
    if wanted:
        keep: set[str] | None = set(wanted)
    elif benchmark == "lasot":
        if ts is None:
            raise FileNotFoundError(f"LaSOT test split needs testing_set.txt: none in {root} or its parent "
                                    "(or name the sequences)")
        keep = set(ts.read_text().split())
    else:
        keep = None
    if (root / "absent").is_dir():  # the official toolkit's annos/ layout: flags already merged
        box_dir = root / "boxes" if (root / "boxes").is_dir() else root
        names = sorted(p.stem for p in (root / "absent").glob("*.txt"))
        names = [n for n in names if keep is None or n in keep]
        for n in names:
            b = _boxes(box_dir / f"{n}.txt")
            absent = parse_rows(root / "absent" / f"{n}.txt", 1, "raise", ReadReport(), what="0/1")[:, 0]
            if len(absent) != len(b):
                _fail(f"{root / 'absent' / (n + '.txt')}:1: {len(absent)} flags, expected {len(b)} (one per "
                      f"line of {box_dir / (n + '.txt')})", root / "absent" / f"{n}.txt", 1)
            out.append(GroundTruth(n, b, str(box_dir / f"{n}.txt"), visible=absent != 1))
        return out
    dirs = [d for d in list_sequences(root) if keep is None or d.name in keep]
    for d in dirs:
        gt = d / "groundtruth.txt"
        b = _boxes(gt)
        visible = np.ones(len(b), dtype=bool)
        for flag in ("full_occlusion.txt", "out_of_view.txt"):
            if (d / flag).is_file():
                visible &= ~_flags(d / flag, len(b))
        out.append(GroundTruth(d.name, b, str(gt), visible=visible))
    return out


def _got10k(root: Path, split: str) -> list[GroundTruth]:
    """``<root>/<split>/list.txt`` + per sequence groundtruth.txt, absence/cover labels, meta_info.ini."""
    from ..data.readers.got10k import sequence_names

    folder, names = sequence_names(root, split)
    out = []
    for n in names:
        d = root / folder / n
        gt = d / "groundtruth.txt"
        b = _boxes(gt)
        cover = visible = None
        if (d / "cover.label").is_file():
            cover = parse_rows(d / "cover.label", 1, "raise", ReadReport(), what="cover level 0..8")[:, 0]
            if len(cover) != len(b) and split != "test":
                _fail(f"{d / 'cover.label'}:1: {len(cover)} levels, expected one per line of {gt} ({len(b)})",
                      d / "cover.label", 1)
            visible = cover > 0
        if (d / "absence.label").is_file():
            absent = _flags(d / "absence.label", len(b)) if split != "test" else None
            if absent is not None:
                visible = ~absent if visible is None else visible & ~absent
        out.append(GroundTruth(n, b, str(gt), visible=visible, cover=cover, resolution=_got10k_resolution(d)))
    return out


def _got10k_resolution(d: Path) -> tuple[int, int] | None:
    """(W, H) from ``meta_info.ini``'s ``resolution: (1280, 720)`` line, else the first frame's header."""
    meta = d / "meta_info.ini"
    if meta.is_file():
        text = meta.read_text(errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip().lower().startswith("resolution"):
                nums = re.findall(r"\d+", line)
                if len(nums) != 2:
                    _fail(f"{meta}:{lineno}: {line.strip()!r}, expected 'resolution: (W, H)'", meta, lineno)
                return int(nums[0]), int(nums[1])
    first = d / "00000001.jpg"
    if first.is_file():
        from ..data.readers._common import image_size

        return image_size(first)
    return None


def _otb(root: Path) -> list[GroundTruth]:
    """Every ``<Seq>/groundtruth_rect*.txt`` (Tiger1 without its first 5 frames, as the benchmark)."""
    from ..data.readers.otb import INIT_OMIT, annotation_files

    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for name, gt in annotation_files(d):
            b = _boxes(gt)[INIT_OMIT.get(d.name, 0):]
            out.append(GroundTruth(name, b, str(gt)))
    return out


def _uav123(root: Path) -> list[GroundTruth]:
    anno = root / "anno" / "UAV123"
    if not anno.is_dir():
        raise FileNotFoundError(f"UAV123: no annotation folder {anno} (expected <root>/anno/UAV123/*.txt)")
    return [GroundTruth(p.stem, _boxes(p, "x,y,w,h or NaN,NaN,NaN,NaN"), str(p)) for p in sorted(anno.glob("*.txt"))]


def _nfs(root: Path) -> list[GroundTruth]:
    """Converted layout (``anno/nfs_<seq>.txt``, x,y,w,h) or the official VATIC files (lost = invisible).

    With the official layout and its frames present, the reader's own fitting applies (a 240 fps
    annotation subsampled to the 30 fps frames); without frames the annotation is taken as it is.
    """
    from ..data.readers import nfs

    if (root / "anno").is_dir():
        return [GroundTruth(p.stem[len("nfs_"):], _boxes(p), str(p)) for p in sorted((root / "anno").glob("nfs_*.txt"))]
    from ..data.readers._common import list_images

    out = []
    dirs = sorted(p for p in root.iterdir() if (p / "30" / f"{p.name}.txt").is_file())
    has_frames = any(list_images(d / "30" / d.name) for d in dirs)
    with_frames = {s.name: s for s in nfs.read(root)} if has_frames else {}
    for d in dirs:
        gt = d / "30" / f"{d.name}.txt"
        if d.name in with_frames:
            s = with_frames[d.name]
            xyxy, visible = s.boxes, s.extra["visible"]
        else:
            xyxy, lost = nfs.parse_vatic(gt, "raise", ReadReport())
            visible = ~lost
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        out.append(GroundTruth(d.name, xywh, str(gt), visible=visible))
    return out


def _folders_with(root: Path, filename: str) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / filename).is_file())


def _tnl2k(root: Path) -> list[GroundTruth]:
    return [GroundTruth(d.name, _boxes(d / "groundtruth.txt"), str(d / "groundtruth.txt"))
            for d in _folders_with(root, "groundtruth.txt")]


def _vot(root: Path) -> list[GroundTruth]:
    """VOT rectangles or polygons -> the enclosing axis-aligned x,y,w,h (the reader's rule)."""
    from ..data.readers.vot import parse_groundtruth

    lst = root / "list.txt"
    dirs = [root / n for n in lst.read_text().split()] if lst.is_file() else _folders_with(root, "groundtruth.txt")
    out = []
    for d in dirs:
        xyxy = parse_groundtruth(d / "groundtruth.txt", "raise", ReadReport())
        out.append(GroundTruth(d.name, np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1),
                               str(d / "groundtruth.txt")))
    return out


def _custom(root: Path) -> list[GroundTruth]:
    from ..data.readers.custom import sequence_dirs

    out = []
    for d in sequence_dirs(root, "test"):
        b = _boxes(d / "groundtruth.txt", allow_empty_rows=True)
        vis = ~_flags(d / "absent.txt", len(b)) if (d / "absent.txt").is_file() else None
        out.append(GroundTruth(d.name, b, str(d / "groundtruth.txt"), visible=vis))
    return out


def _trackingnet(root: Path) -> list[GroundTruth]:
    """TrackingNet TEST: ``TEST/anno/<seq>.txt`` (first frame only: the rest is withheld)."""
    anno = root / "TEST" / "anno"
    if not anno.is_dir():
        raise FileNotFoundError(f"TrackingNet: no {anno} (expected <root>/TEST/anno/<seq>.txt)")
    return [GroundTruth(p.stem, _boxes(p), str(p)) for p in sorted(anno.glob("*.txt"))]


_LOADERS: dict[str, Callable[[Path], list[GroundTruth]]] = {
    "got10k_val": lambda r: _got10k(r, "val"),
    "got10k_test": lambda r: _got10k(r, "test"),
    "trackingnet": _trackingnet,
    "otb": _otb,
    "uav123": _uav123,
    "nfs": _nfs,
    "tnl2k": _tnl2k,
    "vot": _vot,
    "custom": _custom,
}


def load_ground_truth(benchmark: str, root: str | Path, sequences: str | list[str] = "") -> list[GroundTruth]:
    """Ground truth of a benchmark from its annotation files only (no frames are opened)."""
    b = get_benchmark(benchmark)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{b.display}: benchmark root {root} is not a folder")
    wanted = _names(sequences)
    items = _lasot(root, b.name, wanted) if b.name in ("lasot", "lasot_ext") else _LOADERS[b.name](root)
    return _pick(items, b.name, root, wanted)


def load_sequences(benchmark: str, root: str | Path, sequences: str | list[str] = "") -> list:
    """Sequences with frames for running a tracker (readers' 0-based boxes, ground truth uncleaned)."""
    b = get_benchmark(benchmark)
    reader = importlib.import_module(f"lorat_scale.data.readers.{b.reader}")
    wanted = _names(sequences)
    args = dict(b.reader_args)
    if b.name == "lasot" and wanted:
        args["split"] = "all"  # named sequences need no testing_set.txt (as in load_ground_truth)
    return _pick(reader.read(root, clean=False, **args), b.name, Path(root), wanted)
