"""``medcls data check CONFIG [key=value ...]``: scan a dataset without training.

Reads every case the way training would (same source, split, preprocessing and
cache), then prints a summary (cases, classes and patients per split; image
shapes, spacings and intensity ranges per modality) and one line per problem:

    medcls data: error: /data/ct/case07.nii.gz: 12 NaN and 0 infinite values ...

Exit status: 0 when training would start, 1 when it would stop on the problems
listed, 2 when the configuration or the source itself is unusable.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="check a dataset before training",
        description="Dataset tools. 'medcls data check CONFIG' reads and preprocesses every "
        "case as training would and reports problems and a summary.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="scan every case and print a summary and the problems found",
        description="Read, split and preprocess every case of CONFIG's dataset (filling the "
        "cache), check labels, shapes, patients and image content across splits, and print a "
        "summary. Each problem is one line naming the file. Overrides as for 'medcls train'.",
    )
    check.add_argument("config", help="experiment YAML file, or the name of a preset in configs/")
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    check.add_argument("--json", metavar="PATH", help="also write the summary and problems as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rich.console import Console

    from medcls.cli.common import resolve_config_path
    from medcls.config import load_config
    from medcls.data.check import render_report
    from medcls.data.datamodule import ClassificationDataModule

    cfg = load_config(resolve_config_path(args.config), args.overrides)
    dm = ClassificationDataModule(cfg, None, progress=cfg.trainer.progress)
    report = dm.scan()
    render_report(report, Console(soft_wrap=True))
    prefix = f"medcls {args.command}"
    for line in report.warnings:
        print(f"{prefix}: warning: {line}", file=sys.stderr)
    if report.on_bad_case == "skip":
        for problem in report.skipped:
            print(f"{prefix}: skipped: {problem}", file=sys.stderr)
    if report.leakage == "warn":
        for line in report.leaks:
            print(f"{prefix}: warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"{prefix}: error: {line}", file=sys.stderr)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "summary": report.summary(),
            "problems": [str(p) for p in report.problems],
            "leaks": report.leaks,
            "warnings": report.warnings,
        }
        out.write_text(json.dumps(data, indent=2) + "\n")
    if report.errors:
        print(
            f"{prefix}: {len(report.errors)} problem(s); training would stop "
            "(data.on_bad_case=skip leaves bad cases out, data.leakage=warn accepts leaks)",
            file=sys.stderr,
        )
        return 1
    return 0
