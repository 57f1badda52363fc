"""Measure shard bytes read per training pair for several record layouts (figures in docs/DATA.md).

    python data_prep/bytes_per_pair.py --format lasot --root ../shared/data/lasot --split all

For each layout it writes real shards of the given sequences into a temporary folder and reports
the tar bytes per record and the bytes read per pair when (a) every record is streamed once per
epoch and the epoch draws ``--pairs-per-frame`` pairs per valid frame, (b) each record visit
yields ``k`` pairs. "per-frame" is the random-access alternative (2 frames per pair + tar headers).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorat_scale.data.readers import READERS  # noqa: E402
from lorat_scale.data.shards import make_shards  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Write shards per layout and print a table of bytes per record and per pair."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="all")
    p.add_argument("--pairs-per-frame", type=float, default=32768 / 2.81e6,
                   help="pairs drawn per valid frame per epoch (LaSOT train: 32,768 / 2.81M frames)")
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
                            margin=margin, progress=False)
            t = m["totals"]
            per_rec = t["bytes"] / t["records"]
            full = t["bytes"] / (frames * a.pairs_per_frame)
            ks = ", ".join(f"{per_rec / k / 1024:.0f}" for k in (1, 4, 16))
            print(f"{name:18s} {t['records']:8d} {per_rec / 2**20:11.2f} {t['frames'] / t['records']:14.1f} "
                  f"{full / 2**20:20.2f}  {ks}")
    per_frame = 2 * (raw / frames + 1024)  # two frames + their tar header/padding (~1 KiB each)
    print(f"{'per-frame access':18s} {'-':>8s} {'-':>11s} {'1':>14s} {per_frame / 2**20:20.3f}  "
          f"{per_frame / 1024:.0f} (any k)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
