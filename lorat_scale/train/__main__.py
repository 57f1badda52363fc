"""``python -m lorat_scale.train ...``: the training loop (lorat_scale/train/loop.py)."""
import sys

from .loop import main

sys.exit(main())
