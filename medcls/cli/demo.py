"""``medcls demo``: generate a built-in dataset, train, evaluate, write the report."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small model on a built-in synthetic dataset",
        description="Generate the synthetic demo-xray2d dataset (or demo-petct3d), train "
        "a small model, evaluate it on the held-out test split and write report.html "
        "(metrics, ROC curve, confusion matrix, training curves, heatmaps). The run "
        "folder is replaced if it exists. --benchmark instead compares a CNN, a "
        "CNN-Transformer hybrid and a paper model over 3 folds (several times longer).",
    )
    parser.add_argument("--dataset", default="demo-xray2d", choices=("demo-xray2d", "demo-petct3d"))
    parser.add_argument(
        "--output-dir", default="runs", help="parent folder of the run (default runs)"
    )
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="run the demo benchmark (3 models x 3 folds on demo-xray2d) instead",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip report.html (and its heatmaps)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.cli.common import print_run_summary, resolve_config_path
    from medcls.progress import console

    out = console()
    if args.benchmark:
        from medcls.benchmark.demo import demo_benchmark
        from medcls.cli.benchmark import _print_table

        _, _, files = demo_benchmark(
            args.output_dir, dataset=args.dataset, overrides=args.overrides
        )
        if files:
            _print_table(files["summary"])
            out.print(f"Report: [bold]{files['report']}[/bold]", highlight=False)
        return 0

    from medcls.engine.api import train

    overrides = [f"output_dir={args.output_dir}", *args.overrides]
    result = train(resolve_config_path(args.dataset), overrides, overwrite=True)
    print_run_summary(result.run_dir, result.metrics)
    if not args.no_report:
        from medcls.reports.run_report import build_run_report

        report = build_run_report(result.run_dir)
        out.print(f"Report: [bold]{report}[/bold]", highlight=False)
    return 0
