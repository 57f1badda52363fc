"""Write shards of a tracking dataset: ``lorat-scale make-shards`` from a checkout without installing.

    python data_prep/make_shards.py --format lasot --root /data/LaSOT --split train \
        --testing-set /data/LaSOT/testing_set.txt --out /data/shards/lasot-train --num-workers 8

Same arguments as ``lorat-scale make-shards --help`` (layout and resuming: docs/DATA.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lorat_scale.cli import main as cli_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """``lorat-scale make-shards ARGS``."""
    return cli_main(["make-shards", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
