"""``medcls report FOLDER``: rebuild the report.html of a benchmark or of one run."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from medcls.cli.benchmark import add_report_options

    parser = subparsers.add_parser(
        "report",
        help="rebuild the HTML report of a benchmark folder or of one training run",
        description="Summarise the finished runs of a benchmark folder again (also a partial "
        "one) and rewrite results/, figures/ and report.html. Options not given keep the "
        "values the benchmark was started with. Given a run folder of medcls train, "
        "(re)writes that run's report.html (metrics, curves, heatmaps).",
    )
    parser.add_argument(
        "folder", help="a folder written by medcls benchmark, or a run folder of medcls train"
    )
    parser.add_argument(
        "--no-heatmaps", action="store_true", help="skip the heatmap grid (needs no model loading)"
    )
    add_report_options(parser, defaults=False)
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.benchmark.report import build_report
    from medcls.cli.benchmark import _print_table, report_options
    from medcls.progress import console

    def log(text: str) -> None:
        console().print(text, highlight=False, soft_wrap=True)

    from pathlib import Path

    if (Path(args.folder) / "metrics.json").is_file():  # one training run
        from medcls.reports.run_report import build_run_report

        path = build_run_report(args.folder, heatmaps=not args.no_heatmaps, log=log)
        console().print(f"Report: [bold]{path}[/bold]", highlight=False)
        return 0
    options = report_options(args)
    files = build_report(
        args.folder, options=options or None, heatmaps=not args.no_heatmaps, log=log
    )
    _print_table(files["summary"])
    console().print(f"Report: [bold]{files['report']}[/bold]", highlight=False)
    return 0
