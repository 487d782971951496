"""``medcls models``: list the model zoo, or show one model.

Examples::

    medcls models                          # every model, as a table
    medcls models "timm3d:resnet*" --count
    medcls models --dims 3 --family hybrid
    medcls models --broken                 # known-broken zoo models and why
    medcls models show monai:densenet121   # tags, default config, stages, CAM layer
    medcls models show resnet50_3d         # an alias: what it points to
    medcls models --aliases                # the papers' table names for zoo models
    medcls models --paper                  # the seed papers whose tables are known
    medcls models --paper ddsfnet          # one paper's comparison table, our counts beside
    medcls models check                    # zoo health sweep (resumes), writes docs/zoo.md
    medcls models check --pattern "timm3d:*" --limit 20 --timeout-per-model 300
    medcls models check --report-only      # rewrite docs/zoo.md from the results so far
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "list models (timm:, timm3d:, monai:, medcls's own) or show one"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``models`` sub-command and returns its parser."""
    parser = subparsers.add_parser(
        "models",
        help=HELP,
        description=HELP + ". `medcls models show NAME` prints one model's tags, default "
        "config, feature stages and default CAM layer.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "terms",
        nargs="*",
        metavar="PATTERN",
        help="fnmatch pattern(s) over model names (default '*'), or: show NAME, or: check",
    )
    parser.add_argument("--dims", type=int, choices=(2, 3), help="spatial dims the model supports")
    parser.add_argument(
        "--family", choices=("cnn", "transformer", "hybrid", "mlp"), help="model family"
    )
    parser.add_argument(
        "--source", choices=("timm", "timm3d", "monai", "medcls"), help="model source"
    )
    parser.add_argument("--count", action="store_true", help="print only the number of models")
    parser.add_argument(
        "--broken", action="store_true", help="list known-broken zoo models with the reason"
    )
    parser.add_argument(
        "--aliases",
        action="store_true",
        help="list the aliases (the papers' table names for zoo models) and their targets",
    )
    parser.add_argument(
        "--paper",
        nargs="?",
        const="list",
        metavar="NAME",
        help="a seed paper's comparison table: each row's registry name, dims, our "
        "parameters at the table's setting and the table's figures; without NAME (or "
        "'list'): the papers",
    )
    parser.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="with show: dims to describe a model that takes 2 or 3",
    )
    check = parser.add_argument_group(
        "check (zoo health sweep: build, forward, backward, gradients, CAM layer)"
    )
    check.add_argument(
        "--pattern",
        action="append",
        default=None,
        help="models to check (fnmatch, repeatable; default every listed and excluded model)",
    )
    check.add_argument("--limit", type=int, help="check at most N models in this run")
    check.add_argument(
        "--timeout-per-model",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="stop a model's check after this long and record it as failed (default 900)",
    )
    check.add_argument(
        "--out",
        default="benchmarks/results/zoo_health.jsonl",
        help="results file, one JSON line per model; names already in it are skipped",
    )
    check.add_argument("--docs", default="docs/zoo.md", help="report to (re)write")
    check.add_argument(
        "--retry-failed",
        action="store_true",
        help="check again the models recorded as failed or skipped",
    )
    check.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="models checked at once, each in its own process (0: in this process)",
    )
    check.add_argument(
        "--memory-gb",
        type=float,
        help="address-space limit per check process (default 80%% of the machine's memory); "
        "a check that needs more is recorded as skipped",
    )
    check.add_argument(
        "--order",
        choices=("size", "name"),
        default="size",
        help="fewest parameters first, or by name",
    )
    check.add_argument(
        "--report-only", action="store_true", help="only rewrite the report from the results"
    )
    return parser


def _format_params(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _list(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    from medcls.models.registry import get_entry, parse_model_name
    from medcls.models.registry import list_models as list_names
    from medcls.models.zoo.families import index_entry

    patterns = args.terms or ["*"]
    names = list_names(patterns, dims=args.dims, family=args.family, source=args.source)
    if args.count:
        console.print(len(names))
        return 0
    table = Table(title=f"{len(names)} models", show_lines=False)
    for column in ("name", "source", "dims", "family", "params (1 ch, 2 cls)", "input"):
        table.add_column(column, justify="right" if column.startswith("params") else "left")
    for name in names:
        source, arch = parse_model_name(name)
        cached = index_entry(name) or {}
        if source == "medcls":
            entry = get_entry(arch)
            dims, family = entry.dims, entry.family
        else:
            dims = (3,) if source == "timm3d" else (2,) if source == "timm" else (2, 3)
            family = cached.get("family")
        size = cached.get("input_size")
        table.add_row(
            name,
            source,
            "/".join(f"{d}D" for d in dims),
            family or "?",
            _format_params(cached.get("params")),
            "x".join(str(s) for s in size) if size else "",
        )
    console.print(table)
    return 0


def _broken(console: Any) -> int:
    from rich.table import Table

    from medcls.models.zoo import broken_models

    table = Table(title="known-broken zoo models (left out of `medcls models`)")
    table.add_column("name")
    table.add_column("reason")
    for name, reason in broken_models().items():
        table.add_row(name, reason)
    console.print(table)
    return 0


def _show(name: str, spatial_dims: int | None, console: Any) -> int:
    from rich.table import Table

    from medcls.models.factory import model_info

    info = model_info(name, spatial_dims=spatial_dims)
    tags = Table(title=name, show_header=False)
    tags.add_column("field", style="bold")
    tags.add_column("value")
    cfg = info["config"]
    rows = {
        "source": info["source"],
        "dims": "/".join(f"{d}D" for d in info["dims"]),
        "family": info["family"] or "?",
        "alias of": info.get("alias_of") or "",
        "note": info.get("note") or "",
        "params (1 ch, 2 cls)": f"{info['params']:,} ({_format_params(info['params'])})",
        "paper": info["paper"] or "",
        "described at": f"{info['spatial_dims']}D, input {tuple(info['input_size'])}",
        "mean / std": f"{tuple(cfg['mean'])} / {tuple(cfg['std'])}",
        "first conv": cfg["first_conv"] or "",
        "classifier": ", ".join(cfg["classifier"]),
        "fixed input size": str(cfg["fixed_input_size"]),
        "cam layer": "{module} ({layout}, prefix tokens {num_prefix_tokens}, "
        "stride {reduction})".format(**info["cam_layer"]),
    }
    for key, value in rows.items():
        if value or key not in ("alias of", "note"):
            tags.add_row(key, str(value))
    console.print(tags)
    stages = Table(title="feature stages")
    for column in ("module", "channels", "stride"):
        stages.add_column(column)
    for stage in info["feature_stages"]:
        stages.add_row(stage["module"], str(stage["num_chs"]), str(stage["reduction"]))
    console.print(stages)
    return 0


def _aliases(patterns: list[str], dims: int | None, console: Any) -> int:
    from rich.table import Table

    from medcls.models.registry import list_aliases

    aliases = list_aliases(patterns or ["*"], dims=dims)
    table = Table(title=f"{len(aliases)} aliases (not counted in `medcls models`)")
    for column in ("alias", "target", "dims", "note"):
        table.add_column(column)
    for alias in aliases:
        dims_text = "/".join(f"{d}D" for d in alias.dims)
        table.add_row(alias.name, alias.target, dims_text, alias.note)
    console.print(table)
    return 0


def _paper(name: str, console: Any) -> int:
    from rich.table import Table

    from medcls.models import paper_tables

    if name == "list":
        table = Table(title="seed papers with a comparison table (medcls models --paper NAME)")
        for column in ("NAME", "paper", "table", "rows", "input"):
            table.add_column(column)
        for paper in paper_tables.PAPERS.values():
            size = "x".join(map(str, paper.input_size))
            table.add_row(paper.key, paper.paper, paper.table, str(len(paper.rows)), size)
        console.print(table)
        return 0
    paper = paper_tables.get_paper(name)
    size = "x".join(map(str, paper.input_size))
    table = Table(
        title=f"{paper.paper}, {paper.table}",
        caption=f"ours: parameters at {size}, {paper.num_classes} classes. The table's "
        f"'{paper.params_column}' read as {paper.params_unit}"
        + (
            f"; '{paper.computation_column}' as {paper.computation_unit}"
            if paper.computation_column
            else ""
        )
        + " (see medcls/models/paper_tables.py).",
    )
    columns = ("in the table", "registry name", "source", "dims", "params (ours)")
    for column in (*columns, "table: params", "= params", "ours / table", "table: computation"):
        table.add_column(column, justify="right" if "params" in column else "left")
    for row in paper_tables.paper_rows(paper.key):
        count = row["table_params_count"]
        table.add_row(
            row["label"],
            row["model"] if row["model"] == row["target"] else f"{row['model']} -> {row['target']}",
            row["source"],
            f"{row['dims']}D",
            _format_params(row["params"]),
            row["table_params"],
            _format_params(round(count)),
            f"{row['params'] / count:.2f}",
            row["table_computation"] or "",
        )
    console.print(table)
    return 0


def _memory_gb() -> float | None:
    try:
        import os

        return 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _check(args: argparse.Namespace, console: Any) -> int:
    import signal

    from medcls.errors import ConfigError
    from medcls.models.zoo import health

    patterns = list(args.pattern or []) + list(args.terms[1:]) or ["*"]
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit {args.limit}: expected a count >= 0")
    if args.timeout_per_model <= 0 or args.jobs < 0:
        raise ConfigError("--timeout-per-model must be > 0 and --jobs >= 0")
    if not args.report_only:

        def stop(_signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            summary = health.run_sweep(
                args.out,
                patterns=patterns,
                limit=args.limit,
                timeout=args.timeout_per_model,
                jobs=args.jobs,
                memory_gb=args.memory_gb or _memory_gb(),
                retry_failed=args.retry_failed,
                order=args.order,
                progress=True,
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
        counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or "nothing new"
        console.print(
            f"checked {summary.checked} model(s) ({counts}); {summary.skipped_done} already "
            f"recorded in {args.out}"
        )
    text = health.write_report(health.load_records(args.out), args.docs, results_path=args.out)
    rate = next((line for line in text.splitlines() if "pass rate over" in line), "")
    rate = rate.replace("**", "").strip("| ").replace(" | ", ": ")
    console.print(f"wrote {args.docs} ({rate})")
    return 130 if not args.report_only and summary.interrupted else 0


def run(args: argparse.Namespace) -> int:
    """Runs ``medcls models``; returns the exit status."""
    from medcls.cli.common import console as make_console
    from medcls.errors import ConfigError

    console = make_console()
    if args.broken:
        return _broken(console)
    if args.paper is not None:
        return _paper(args.paper, console)
    if args.aliases:
        return _aliases(args.terms, args.dims, console)
    if args.terms and args.terms[0] == "show":
        if len(args.terms) != 2:
            raise ConfigError("usage: medcls models show NAME (exactly one model name)")
        return _show(args.terms[1], args.spatial_dims, console)
    if args.terms and args.terms[0] == "check":
        return _check(args, console)
    return _list(args, console)
