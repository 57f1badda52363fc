#!/usr/bin/env python
"""Thin entry to the training loop (lorat_scale/train/loop.py), for launchers that take a script:

    accelerate launch --multi_gpu --num_processes 8 scripts/train.py --variant g-224 --ds ds_configs/zero2.json ...
    python scripts/train.py --variant S-224 ...        (= lorat-scale train ... = python -m lorat_scale.train ...)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout without `pip install`
from lorat_scale.train.loop import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
