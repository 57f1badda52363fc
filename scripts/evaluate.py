"""Run a LoRAT checkpoint over a benchmark (resumable, parallel, repeated) and score it.

    python scripts/evaluate.py --benchmark lasot --root /data/LaSOT --checkpoint run/ckpt.safetensors \
        --backbone dinov2_vitb14.pth --num-workers 4 --repeat 1
    torchrun --nproc-per-node 8 scripts/evaluate.py ...   # each rank takes every 8th sequence run
    python scripts/evaluate.py --benchmark lasot --root /data/LaSOT --tracker-name mine --no-run

Same as ``lorat-scale evaluate``; the logic lives in lorat_scale/evaluation/runner.py.
"""
import argparse
import sys

from lorat_scale.evaluation.runner import add_evaluate_args, evaluate_main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluate_args(parser)
    sys.exit(evaluate_main(parser.parse_args()))
