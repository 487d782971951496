"""``medcls evaluate RUN_DIR``: evaluate a run's checkpoint again."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on its validation/test split or other data",
        description="Evaluate RUN_DIR's checkpoint; writes metrics_<checkpoint>.json, "
        "predictions and figures into the run folder. Overrides such as "
        "data.path=other.csv data.source=csv evaluate on other data.",
    )
    parser.add_argument("run_dir", help="a run folder written by medcls train")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="configuration overrides (e.g. another data.path)",
    )
    parser.add_argument(
        "--split",
        action="append",
        choices=("train", "val", "test"),
        help="split(s) to evaluate (default: val and test)",
    )
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.cli.common import print_run_summary
    from medcls.engine.api import evaluate

    metrics = evaluate(
        args.run_dir,
        splits=args.split or ("val", "test"),
        checkpoint=args.checkpoint,
        overrides=args.overrides,
    )
    print_run_summary(Path(args.run_dir), metrics)
    return 0
