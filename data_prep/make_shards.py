"""Write webdataset shards of a tracking dataset (one record = one sequence window; see shards.py).

    python data_prep/make_shards.py --format lasot --root /data/LaSOT --split train \
        --testing-set /data/LaSOT/testing_set.txt --out /data/shards/lasot-train --workers 8

Resumable: rerun the same command after an interruption; shards recorded as done in
``manifest.json`` are kept, unfinished ones are rewritten.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lorat_scale.data.cache import fingerprint  # noqa: E402
from lorat_scale.data.readers import DEFAULT_SPLIT, READERS, ReadReport  # noqa: E402
from lorat_scale.data.shards import make_shards  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, read the dataset, write the shards, print the totals."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=sorted(READERS))
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default=None, help="default: the format's training split")
    p.add_argument("--testing-set", default=None, help="LaSOT testing_set.txt (train/test splits)")
    p.add_argument("--split-file", default=None, help="GOT-10k vot_train/vot_val index list")
    p.add_argument("--dataset", default=None, help="dataset name stored in records (e.g. lasot_ext)")
    p.add_argument("--core", type=int, default=400, help="template frames per record (see docs/DATA.md)")
    p.add_argument("--margin", type=int, default=100, help="context frames each side (>= max_frame_gap)")
    p.add_argument("--shard-mb", type=float, default=1024, help="target shard size in MB")
    p.add_argument("--min-shards", type=int, default=64,
                   help="at least this many shards (>= ranks x workers of the largest run)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="record order")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="malformed annotations")
    p.add_argument("--overwrite", action="store_true", help="discard an existing manifest with another plan")
    a = p.parse_args(argv)
    split = a.split or DEFAULT_SPLIT[a.format]
    kw = {}
    if a.testing_set:
        kw["testing_set"] = a.testing_set
    if a.split_file:
        kw["split_file"] = a.split_file
    if a.dataset:
        kw["dataset"] = a.dataset
    report = ReadReport()
    seqs = READERS[a.format](a.root, split, on_error=a.on_error, report=report, **kw)
    for msg in report.problems:
        print("problem:", msg, file=sys.stderr)
    source = {"format": a.format, "root": str(Path(a.root).resolve()), "split": split,
              "reader_args": kw, "fingerprint": fingerprint(a.root, [v for k, v in kw.items() if k != "dataset"]),
              "sequences": len(seqs), "dropped": len(report.dropped), "problems": len(report.problems)}
    m = make_shards(seqs, a.out, source, core=a.core, margin=a.margin, shard_bytes=int(a.shard_mb * 2**20),
                    min_shards=a.min_shards, workers=a.workers, seed=a.seed, overwrite=a.overwrite)
    t = m["totals"]
    print(f"{t['shards']} shards, {t['records']} records, {t['sequences']} sequences, {t['frames']} frames, "
          f"{t['bytes'] / 2**20:.1f} MB, {t['num_missing']} missing frames -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
