"""Small dataset trees in the real layouts, built in tmp_path from the shared LaSOT frames."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SRC = "lasot/airplane/airplane-1"


def frames(shared: Path, n: int, start: int = 0) -> list[Path]:
    """Paths of n real 640x360 frames of airplane-1."""
    return [shared / SRC / "img" / f"{i + 1:08d}.jpg" for i in range(start, start + n)]


def real_xywh(shared: Path, n: int, start: int = 0) -> np.ndarray:
    """Real LaSOT ground truth rows (1-based x,y) of those frames."""
    rows = (shared / SRC / "groundtruth.txt").read_text().splitlines()[start:start + n]
    return np.array([[float(v) for v in r.split(",")] for r in rows])


def link(src: Path, dst: Path) -> None:
    """Symlink (cheap) a frame into a tree."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def write_rows(path: Path, rows, sep: str = ",") -> None:
    """One line per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sep.join(f"{v:g}" for v in r) for r in rows) + "\n")


def lasot_tree(tmp: Path, shared: Path, n: int = 12) -> Path:
    """airplane-1 (test) and airplane-2 (train, frames 3..4 occluded) with n frames each."""
    root = tmp / "lasot"
    for name, start in (("airplane-1", 0), ("airplane-2", 20)):
        d = root / "airplane" / name
        for i, f in enumerate(frames(shared, n, start)):
            link(f, d / "img" / f"{i + 1:08d}.jpg")
        write_rows(d / "groundtruth.txt", real_xywh(shared, n, start))
        occ = ["0"] * n
        if name == "airplane-2":
            occ[3] = occ[4] = "1"
        (d / "full_occlusion.txt").write_text(",".join(occ))
        (d / "out_of_view.txt").write_text(",".join(["0"] * n))
    (root / "testing_set.txt").write_text("airplane-1\nbicycle-2")
    return root


def got10k_tree(tmp: Path, shared: Path) -> Path:
    """train (4 seqs x 8 frames, seq 2 absent at frame 0 and 7), val (1), test (1, first box only)."""
    root = tmp / "got10k"
    for split, names in (("train", [f"GOT-10k_Train_{i:06d}" for i in range(1, 5)]),
                         ("val", ["GOT-10k_Val_000001"]), ("test", ["GOT-10k_Test_000001"])):
        (root / split).mkdir(parents=True)
        (root / split / "list.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            d = root / split / name
            for i, f in enumerate(frames(shared, 8, 10 * k)):
                link(f, d / f"{i + 1:08d}.jpg")
            xywh = real_xywh(shared, 8, 10 * k)
            write_rows(d / "groundtruth.txt", xywh[:1] if split == "test" else xywh)
            if split != "test":
                absent = [0] * 8
                if k == 1:
                    absent[0] = absent[7] = 1
                (d / "absence.label").write_text("\n".join(map(str, absent)) + "\n")
                (d / "cover.label").write_text("\n".join(["8"] * 8) + "\n")
    (root / "vot_train.txt").write_text("3\n1\n")
    return root


def trackingnet_tree(tmp: Path, shared: Path) -> Path:
    """TRAIN_0 (2 seqs x 12 frames), TRAIN_1 (1 seq), TEST (1 seq, first box only)."""
    root = tmp / "trackingnet"
    for chunk, names in (("TRAIN_0", ["aaa_1", "bbb_2"]), ("TRAIN_1", ["ccc_3"]), ("TEST", ["ddd_4"])):
        for k, name in enumerate(names):
            for i, f in enumerate(frames(shared, 12, 5 * k)):
                link(f, root / chunk / "frames" / name / f"{i}.jpg")
            xywh = real_xywh(shared, 12, 5 * k)
            write_rows(root / chunk / "anno" / f"{name}.txt", xywh[:1] if chunk == "TEST" else xywh)
    return root


def custom_tree(tmp: Path, shared: Path, n_seqs: int = 3, n: int = 10, sep: str = "\t") -> Path:
    """n_seqs sequences of n frames (names 1.jpg..n.jpg: natural order matters), tab-separated boxes."""
    root = tmp / "custom"
    for s in range(n_seqs):
        d = root / f"seq{s}"
        for i, f in enumerate(frames(shared, n, 7 * s)):
            link(f, d / f"{i + 1}.jpg")
        xywh = real_xywh(shared, n, 7 * s)
        xywh[:, :2] -= 1
        write_rows(d / "groundtruth.txt", xywh, sep=sep)
    return root


def build_shards(tmp: Path, shared: Path, n_seqs: int = 7, n: int = 4, min_shards: int = 5, **kw) -> Path:
    """Shards of a custom tree (one record per sequence): uneven records per shard on purpose.

    ``min_shards`` is the writer's reader count (at least that many shards, as many as records allow)."""
    from lorat_scale.data.readers import read_dataset
    from lorat_scale.data.shards import make_shards

    root = custom_tree(tmp, shared, n_seqs=n_seqs, n=n)
    out = tmp / "shards"
    make_shards(read_dataset("custom", root), out, {"format": "custom"}, readers=min_shards, progress=False, **kw)
    return out
