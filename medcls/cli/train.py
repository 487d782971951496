"""``medcls train CONFIG [key=value ...]``: train and evaluate one experiment."""

from __future__ import annotations

import argparse

from medcls.cli.common import print_run_summary, resolve_config_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a YAML experiment file",
        description="Train a model as CONFIG says, then evaluate its best checkpoint on the "
        "validation and test splits. Any key can be overridden: trainer.max_epochs=5 "
        "model.name=timm:resnet18 data.batch_size=16.",
    )
    parser.add_argument("config", help="experiment YAML file, or the name of a preset in configs/")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the run folder from its last checkpoint",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished or partial run in the run folder",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.engine.api import train

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    result = train(resolve_config_path(args.config), overrides, overwrite=args.overwrite)
    print_run_summary(result.run_dir, result.metrics)
    return 0
