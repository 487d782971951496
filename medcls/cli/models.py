"""``medcls models``: list the model zoo, or show one model.

Examples::

    medcls models                          # every model, as a table
    medcls models "timm3d:resnet*" --count
    medcls models --dims 3 --family hybrid
    medcls models --broken                 # known-broken zoo models and why
    medcls models show monai:densenet121   # tags, default config, stages, CAM layer
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
        help="fnmatch pattern(s) over model names (default '*'), or: show NAME",
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
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        help="with show: dims to describe a model that takes 2 or 3",
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
        tags.add_row(key, str(value))
    console.print(tags)
    stages = Table(title="feature stages")
    for column in ("module", "channels", "stride"):
        stages.add_column(column)
    for stage in info["feature_stages"]:
        stages.add_row(stage["module"], str(stage["num_chs"]), str(stage["reduction"]))
    console.print(stages)
    return 0


def run(args: argparse.Namespace) -> int:
    """Runs ``medcls models``; returns the exit status."""
    from rich.console import Console

    from medcls.errors import ConfigError

    console = Console()
    if args.broken:
        return _broken(console)
    if args.terms and args.terms[0] == "show":
        if len(args.terms) != 2:
            raise ConfigError("usage: medcls models show NAME (exactly one model name)")
        return _show(args.terms[1], args.spatial_dims, console)
    return _list(args, console)
