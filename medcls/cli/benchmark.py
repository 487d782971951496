"""``medcls benchmark CONFIG --models a,b,c``: every model over the same folds, compared."""

from __future__ import annotations

import argparse


def add_report_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Options shared with ``medcls report`` (``defaults=False``: unset means keep the folder's)."""

    def default(value):
        return value if defaults else None

    parser.add_argument(
        "--threshold",
        default=default("youden"),
        help="binary decision threshold, chosen per run on its validation fold: youden, "
        "sensitivity:0.9 (the most specific threshold with that sensitivity) or a fixed "
        "probability such as 0.5 (default youden)",
    )
    parser.add_argument(
        "--reference",
        default=default("best"),
        help="model the others are tested against (DeLong, McNemar): a name or label, or "
        "'best' = highest mean AUC (default best)",
    )
    parser.add_argument(
        "--preset",
        default=default("full"),
        help="table layout: full, seed (the seed paper's Table 2 columns), ddsfnet, "
        "drltransformer, madensenet, cconvformer, light3dformer (default full)",
    )
    parser.add_argument(
        "--eval-split",
        default=default("auto"),
        choices=("auto", "test", "val"),
        help="where models are compared: auto = the test split when there is one, else the "
        "out-of-fold validation predictions",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=default(2000),
        metavar="N",
        help="bootstrap resamples of the confidence intervals (default 2000)",
    )
    parser.add_argument(
        "--heatmap-method",
        default=default("gradcam"),
        help="explanation method of the models x images heatmap grid; none = no grid",
    )
    parser.add_argument(
        "--heatmap-images",
        type=int,
        default=default(4),
        metavar="N",
        help="images in the heatmap grid (default 4)",
    )


def report_options(args: argparse.Namespace) -> dict:
    """The report options given on the command line (those left unset are omitted)."""
    values = {
        "threshold": args.threshold,
        "reference": args.reference,
        "preset": args.preset,
        "eval_split": args.eval_split,
        "n_bootstrap": args.bootstrap,
        "heatmap_method": args.heatmap_method,
        "heatmap_images": args.heatmap_images,
    }
    return {k: v for k, v in values.items() if v is not None}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark",
        help="train several models over the same cross-validation folds and compare them",
        description="Train every model of --models on every fold (and seed) of CONFIG's data, "
        "with the same patient-grouped, class-stratified split for every model, then write "
        "the comparison table (Markdown, CSV, LaTeX), ROC and validation curves, confusion "
        "matrices, a heatmap grid and a self-contained report.html. Run the same command "
        "again to continue an interrupted benchmark (finished runs are never redone), or "
        "start it in several processes or on several machines sharing --output: each run "
        "is claimed by one process only. KEY=VALUE overrides follow CONFIG, before the options.",
    )
    parser.add_argument("config", help="experiment YAML file, or the name of a preset in configs/")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="configuration overrides for every run (right after CONFIG)",
    )
    parser.add_argument(
        "--models",
        required=True,
        help="comma-separated model names; arguments and a display label in braces: "
        "'timm:resnet18,timm:vit_tiny_patch16_224{img_size: 64},ldtransformer_s{label: LDTransformer}'",
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    parser.add_argument(
        "--output",
        default=None,
        help="benchmark folder (default <output_dir>/benchmark-<name> of the config)",
    )
    parser.add_argument(
        "--resplit",
        action="store_true",
        help="draw new folds for every seed (repeated cross-validation); the test split stays",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=None,
        metavar="N",
        help="stop after N runs (a job's share when many jobs work on one folder)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="take over a run of another machine whose heartbeat is older than this (default 600)",
    )
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="only run; write the report later with medcls report",
    )
    add_report_options(parser, defaults=True)
    return parser


def _sigterm_as_interrupt() -> None:
    """A cluster's SIGTERM (pre-emption) releases the current run at once, like Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from medcls.benchmark.sweep import detach_from_torchrun, is_ddp_worker

    torchrun = detach_from_torchrun()  # before anything initialises CUDA

    from medcls.benchmark.report import append_command, run_benchmark
    from medcls.cli.common import resolve_config_path
    from medcls.config import load_config
    from medcls.progress import console

    config = resolve_config_path(args.config)
    output = args.output
    if output is None:
        cfg = load_config(config, args.overrides)
        output = str(Path(cfg.output_dir) / f"benchmark-{cfg.name}")
    _sigterm_as_interrupt()
    out = console()

    def log(text: str) -> None:
        out.print(text, highlight=False, soft_wrap=True)

    if torchrun:
        log(torchrun)
    if not is_ddp_worker():
        argv = ["benchmark", args.config, *args.overrides, "--models", args.models]
        argv += ["--folds", str(args.folds), "--seeds", args.seeds, "--output", str(output)]
        append_command(output, "medcls " + " ".join(shlex.quote(a) for a in argv))
    bench, stats, files = run_benchmark(
        config,
        args.models,
        output,
        folds=args.folds,
        seeds=args.seeds,
        overrides=args.overrides,
        resplit=args.resplit,
        report=report_options(args),
        max_runs=args.max_runs,
        stale_after=args.stale_after,
        write=not args.no_report,
        log=log,
    )
    if is_ddp_worker():
        return 0
    state = bench.status(stale_after=args.stale_after)
    log(
        f"this process ran {len(stats.ran)} run(s), {len(stats.failed)} failed; the folder has "
        f"{len(state['done'])} done, {len(state['running'])} running elsewhere, "
        f"{len(state['pending'])} pending, {len(state['failed'])} failed"
    )
    if files:
        _print_table(files["summary"])
        log(f"Report: [bold]{files['report']}[/bold]")
        log(f"Tables: {files['table_md'].parent}")
    elif not args.no_report and (state["running"] or state["pending"]):
        log(
            "the report will be written by the process that finishes the last run "
            f"(or now with: medcls report {bench.folder})"
        )
    return 1 if stats.failed else 0


TERMINAL_COLUMNS = ("model", "params", "macs", "fit_seconds", "accuracy", "auc", "ci:auc", "f1")
"""The columns of the ``full`` table shown on the terminal (the files have all of them)."""


def _print_table(summary_path) -> None:
    """A compact comparison table on the terminal (all columns are in results/table.*)."""
    import json

    from rich.table import Table

    from medcls.progress import console
    from medcls.reports.tables import PRESETS, Preset, build_table

    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    full = PRESETS["full"]
    compact = Preset(
        "terminal", "", tuple(c for c in full.columns if c.key in TERMINAL_COLUMNS), full.pm
    )
    table = build_table(summary, compact)
    shown = Table(title=table.caption, title_justify="left")
    for header, key in zip(table.headers, table.keys):
        shown.add_column(header, justify="left" if key == "model" else "right")
    for row in table.rows:
        shown.add_row(
            *[(f"[bold]{c.text}{c.mark}[/bold]" if c.bold else c.text + c.mark) for c in row]
        )
    console().print(shown)
    for note in table.notes:
        console().print(note, highlight=False, soft_wrap=True)
