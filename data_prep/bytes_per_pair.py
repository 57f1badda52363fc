"""Measure shard bytes read per training pair, streamed record layouts vs. random access (docs/DATA.md).

    python data_prep/bytes_per_pair.py --format lasot --root ../shared/data/lasot --split all --tile-to 2500

For each streamed layout (records of ``core`` frames + ``margin`` each side, read whole) it writes real shards
of the given sequences into a temporary folder and reports the tar bytes per record and the bytes read per
pair when (a) every record is streamed once per epoch and the epoch draws ``--pairs-per-frame`` pairs per
valid frame, (b) each record visit yields ``k`` pairs. The last row is the random-access layout (format 2,
the training default): measured by drawing ``--pairs`` LoRAT pairs through ``load_shards`` + ``PairDataset``
and counting the bytes each pair read, plus the index's bytes per stored frame (read once per process).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale.config import DataConfig  # noqa: E402
from lorat_scale.data.pairs import PairDataset  # noqa: E402
from lorat_scale.data.readers import READERS  # noqa: E402
from lorat_scale.data.shards import load_shards, make_shards  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Write shards per layout and print a table of bytes per record and per pair."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="all")
    p.add_argument("--pairs-per-frame", type=float, default=32768 / 2.81e6,
                   help="pairs drawn per valid frame per epoch (LaSOT train: 32,768 / 2.81M frames)")
    p.add_argument("--pairs", type=int, default=200, help="pairs drawn to measure the random-access row")
    p.add_argument("--tile-to", type=int, default=0,
                   help="repeat each sequence's frames up to this length (model long videos from a short sample)")
    a = p.parse_args(argv)
    seqs = READERS[a.format](a.root, a.split)
    if a.tile_to:
        for s in seqs:
            idx = np.arange(a.tile_to) % len(s)
            s.frames, s.boxes, s.valid = [s.frames[i] for i in idx], s.boxes[idx], s.valid[idx]
    frames = sum(int(s.valid.sum()) for s in seqs)
    raw = sum(Path(s.frames[i]).stat().st_size for s in seqs for i in s.valid_indices())
    print(f"{len(seqs)} sequences, {frames} valid frames, mean frame {raw / frames / 1024:.1f} KiB")
    print("layout              records  MiB/record  frames/record  MiB/pair(full pass)  KiB/pair(k=1,4,16)")
    layouts = [("whole sequence", 10**9, 0), ("core 400 + 2x100", 400, 100), ("core 200 + 2x100", 200, 100),
               ("core 100 + 2x100", 100, 100),
               ("core 50 + 2x50", 50, 50)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, core, margin in layouts:
            m = make_shards(seqs, Path(tmp) / name.replace(" ", "_"), {"format": a.format}, core=core,
                            margin=margin, progress=False, num_workers=1)
            t = m["totals"]
            per_rec = t["bytes"] / t["records"]
            full = t["bytes"] / (frames * a.pairs_per_frame)
            ks = ", ".join(f"{per_rec / k / 1024:.0f}" for k in (1, 4, 16))
            print(f"{name:18s} {t['records']:8d} {per_rec / 2**20:11.2f} {t['frames'] / t['records']:14.1f} "
                  f"{full / 2**20:20.2f}  {ks}")
        out = Path(tmp) / "random_access"
        m = make_shards(seqs, out, {"format": a.format}, core=400, margin=0, progress=False)
        ds = PairDataset([load_shards(out)], DataConfig(pairs_per_epoch=a.pairs), 56, 112, augment_images=False)
        got = [ds[i]["counters"] for i in range(a.pairs)]
        per_pair = sum(c["bytes_read"] for c in got) / a.pairs
        idx = (out / "index.npz").stat().st_size / m["index"]["frames"]
        t = m["totals"]
        print(f"{'random access (2)':18s} {t['records']:8d} {t['bytes'] / t['records'] / 2**20:11.2f} "
              f"{t['frames'] / t['records']:14.1f} {per_pair / 2**20:20.3f}  {per_pair / 1024:.0f} (any k; "
              f"{np.mean([c['frames_read'] for c in got]):.2f} frames/pair; index {idx:.0f} B/frame, read once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
