"""Compare trackers' result folders on a benchmark: Markdown/CSV table and success/precision plots.

    python scripts/report.py --benchmark lasot --root /data/LaSOT --results results \
        --trackers lorat_b224,lorat_l224 --out reports/lasot

Same as ``lorat-scale report``; the logic lives in lorat_scale/evaluation/report.py.
"""
import argparse
import sys

from lorat_scale.evaluation.report import add_report_args, report_main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_report_args(parser)
    sys.exit(report_main(parser.parse_args()))
