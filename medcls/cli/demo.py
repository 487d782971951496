"""``medcls demo``: generate a built-in dataset, train, evaluate, show where results are."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small model on a built-in synthetic dataset",
        description="Generate the synthetic demo-xray2d dataset (or demo-petct3d), train "
        "a small model for a few epochs, evaluate it and write the figures. "
        "The run folder is replaced if it exists.",
    )
    parser.add_argument("--dataset", default="demo-xray2d", choices=("demo-xray2d", "demo-petct3d"))
    parser.add_argument(
        "--output-dir", default="runs", help="parent folder of the run (default runs)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.cli.common import print_run_summary, resolve_config_path
    from medcls.engine.api import train

    overrides = [f"output_dir={args.output_dir}", *args.overrides]
    result = train(resolve_config_path(args.dataset), overrides, overwrite=True)
    print_run_summary(result.run_dir, result.metrics)
    return 0
