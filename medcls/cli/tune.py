"""``medcls tune CONFIG [key=value ...] --trials N [--timeout S]``: hyperparameter search."""

from __future__ import annotations

import argparse

from medcls.cli.common import resolve_config_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tune",
        help="search hyperparameters (Optuna) over the space a YAML declares",
        description="Train one run per trial with values drawn from the config's tune.space, "
        "prune trials whose per-epoch validation metric lags, and write the best configuration "
        "(best.yaml), a trial table, figures and report.html into output_dir/<name>-tune. The "
        "study is stored (SQLite by default): running the command again continues it, and "
        "several workers given the same tune.storage share it. See docs/tuning.md.",
    )
    parser.add_argument("config", help="experiment YAML file with a tune section, or a preset name")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    parser.add_argument(
        "--trials", type=int, metavar="N", help="finished trials to reach (tune.trials)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="start no trial after S seconds (tune.timeout)"
    )
    parser.add_argument(
        "--storage", metavar="URL", help="Optuna storage URL shared by workers (tune.storage)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete the study and its folder and start again"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.tune import tune

    overrides = list(args.overrides)
    if args.storage:
        overrides.append(f"tune.storage={args.storage}")
    result = tune(
        resolve_config_path(args.config),
        overrides,
        trials=args.trials,
        timeout=args.timeout,
        overwrite=args.overwrite,
    )
    return 0 if result.best_value is not None else 1
