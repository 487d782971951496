"""``medcls predict RUN_DIR INPUTS...``: class probabilities for new images."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict class probabilities for files, folders or a manifest",
        description="Apply RUN_DIR's model, with exactly the preprocessing it was trained "
        "with, to image files, folders (searched recursively) or one manifest CSV "
        "(one column per modality). Writes a CSV of per-class probabilities and the "
        "predicted class.",
    )
    parser.add_argument("run_dir", help="a run folder written by medcls train")
    parser.add_argument("inputs", nargs="+", help="image files, folders, or one manifest .csv")
    parser.add_argument("-o", "--output", help="CSV to write (default RUN_DIR/predictions.csv)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--batch-size", type=int, default=None)
    return parser


def run(args: argparse.Namespace) -> int:
    from medcls.engine.api import predict
    from medcls.progress import console

    out = predict(
        args.run_dir,
        args.inputs,
        output=args.output,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
    )
    console().print(f"Predictions written to [bold]{out}[/bold]", highlight=False)
    return 0
