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
    lr = parser.add_argument_group(
        "learning-rate range test (instead of training)",
        "--find-lr trains a copy of the model for --lr-steps steps while the learning rate "
        "grows from --lr-min to --lr-max, writes RUN_DIR/lr_find/lr_find.{png,svg,json} and "
        "prints the suggested optimizer.lr; nothing is kept.",
    )
    lr.add_argument("--find-lr", action="store_true", help="run the range test and stop")
    lr.add_argument("--lr-min", type=float, default=1e-7, metavar="LR", help="default 1e-7")
    lr.add_argument("--lr-max", type=float, default=10.0, metavar="LR", help="default 10")
    lr.add_argument("--lr-steps", type=int, default=100, metavar="N", help="default 100")
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.engine.api import find_lr, train

    if args.find_lr:
        from medcls.progress import console

        result = find_lr(
            resolve_config_path(args.config),
            list(args.overrides),
            min_lr=args.lr_min,
            max_lr=args.lr_max,
            steps=args.lr_steps,
        )
        console().print(
            f"suggested learning rate: [bold]{result.suggestion:.3g}[/bold] (steepest loss "
            f"descent; loss minimum at {result.min_loss_lr:.3g})\n"
            f"Figure: {result.files['png']}\n"
            f"Train with it: medcls train {args.config} optimizer.lr={result.suggestion:.3g}",
            highlight=False,
            soft_wrap=True,
        )
        return 0

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    result = train(resolve_config_path(args.config), overrides, overwrite=args.overwrite)
    print_run_summary(result.run_dir, result.metrics)
    return 0
