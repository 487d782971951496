"""``medcls profile NAME...``: parameters, MACs, FLOPs, activation memory and latency.

Examples::

    medcls profile timm:resnet50 --input 3x224x224 --num-classes 1000
    medcls profile timm:resnet18 timm:convnext_tiny ldtransformer_s --input 1x224x224
    medcls profile monai:resnet50 --input 1x64x64x64 --no-latency      # 4 numbers = 3D
    medcls profile timm:resnet50@1x224x224 monai:resnet50@2x64x64x64 --format csv
    medcls profile timm:resnet18 --device cuda --format md --output sizes.md

``--input`` is ``CxHxW`` (2D) or ``CxDxHxW`` (3D) for every model; ``NAME@SPEC`` gives
one model its own input. Without either, a model is profiled at its default input
size with ``--in-chans`` channels. How each number is measured is described in
:mod:`medcls.models.profile`.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

HELP = "parameters, MACs/FLOPs, peak activation memory and latency of models, as one table"

FORMATS = ("md", "csv")

CSV_COLUMNS = (
    "name",
    "input",
    "params",
    "trainable_params",
    "macs",
    "flops",
    "activation_bytes",
    "activation_method",
    "latency_ms",
    "latency_p90_ms",
    "latency_device",
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``profile`` sub-command and returns its parser."""
    parser = subparsers.add_parser(
        "profile",
        help=HELP,
        description=HELP + ". Models get random weights and a zero input of one sample. "
        "MACs = FLOPs / 2, counted by torch's FlopCounterMode (convolutions, linear layers, "
        "matrix products, attention). Peak activation memory: tensors created by one "
        "forward pass with autograd on (CUDA: allocator peak; CPU: tensor tracker).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME[@SPEC]",
        help="registry names (see `medcls models`); NAME@2x64x64x64 sets that model's input",
    )
    parser.add_argument(
        "--input",
        metavar="SPEC",
        help="input of one sample for every model: CxHxW (2D, e.g. 1x224x224) or CxDxHxW "
        "(3D, e.g. 2x64x64x64); default: each model's default input size",
    )
    parser.add_argument(
        "--in-chans",
        type=int,
        metavar="C",
        help="input channels when no SPEC gives them (default 1)",
    )
    parser.add_argument(
        "--num-classes", type=int, default=2, metavar="N", help="classifier outputs (default 2)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "meta"),
        default="cpu",
        help="where everything is measured; meta counts without computing (no latency; "
        "models whose constructor or forward reads tensor values fail) (default cpu)",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument(
        "--repeats", type=int, default=10, metavar="N", help="timed passes (default 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, metavar="N", help="untimed passes first (default 2)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="print a Markdown or CSV table instead of the terminal table (default: from "
        "the --output suffix, else the terminal table)",
    )
    parser.add_argument("--output", metavar="FILE", help="write the table to FILE")
    return parser


def _jobs(args: argparse.Namespace) -> list[tuple[str, tuple[int, ...] | None]]:
    from medcls.errors import ConfigError
    from medcls.models.profile import parse_input_size

    common = None if args.input is None else parse_input_size(args.input, arg="--input")
    if args.in_chans is not None and args.in_chans < 1:
        raise ConfigError(f"--in-chans {args.in_chans}: expected an integer >= 1")
    if args.num_classes < 0:
        raise ConfigError(f"--num-classes {args.num_classes}: expected an integer >= 0")
    jobs = []
    for item in args.names:
        name, at, spec = item.partition("@")
        if at and not spec:
            raise ConfigError(f"{item}: expected NAME@SPEC with a SPEC such as 1x224x224")
        size = parse_input_size(spec, arg=f"{name}@") if spec else common
        if size is not None and args.in_chans is not None and args.in_chans != size[0]:
            source = f"{name}@{spec}" if spec else f"--input {args.input}"
            raise ConfigError(
                f"--in-chans {args.in_chans} contradicts the {size[0]} channel(s) of {source}; "
                "give the channels in one place"
            )
        jobs.append((name, size))
    return jobs


def _mib(value: int | None) -> str:
    if value is None:
        return "–"
    mib = value / 2**20
    return f"{mib:.1f}" if mib >= 1 else f"{mib:.3f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table_rows(rows: list[dict[str, Any]], *, latency: bool) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of a profile table (counts in SI units, memory in MiB)."""
    from medcls.models.profile import format_input_size
    from medcls.reports.tables import format_count

    headers = ["model", "input", "params", "trainable", "MACs", "FLOPs", "peak act. mem. (MiB)"]
    if latency:
        device = next((r["latency_device"] for r in rows if r["latency_device"]), "")
        headers.append(f"latency ({device}, ms)" if device else "latency (ms)")
    cells = []
    for row in rows:
        line = [
            row["name"],
            format_input_size(row["input_size"]),
            *(format_count(row[k])[0] for k in ("params", "trainable_params", "macs", "flops")),
            _mib(row["activation_bytes"]),
        ]
        if latency:
            line.append(_ms(row["latency_ms"]))
        cells.append(line)
    return headers, cells


def format_rows(rows: list[dict[str, Any]], fmt: str, *, latency: bool = True) -> str:
    """A profile table (rows of :func:`medcls.models.profile.profile_by_name`) as text.

    Args:
        rows: profile rows.
        fmt: ``"md"`` (formatted numbers) or ``"csv"`` (exact integers, bytes, ms).
        latency: include the latency column (Markdown only; CSV always has it).
    """
    from medcls.models.profile import format_input_size

    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            values = {**row, "input": format_input_size(row["input_size"])}
            writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
        return buffer.getvalue()
    headers, cells = table_rows(rows, latency=latency)
    right = [False, False] + [True] * (len(headers) - 2)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def _print_terminal(rows: list[dict[str, Any]], latency: bool) -> None:
    from rich.table import Table

    from medcls.cli.common import console

    headers, cells = table_rows(rows, latency=latency)
    table = Table(title=f"{len(rows)} model(s), one sample")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right")
    for line in cells:
        table.add_row(*line)
    console().print(table)


def run(args: argparse.Namespace) -> int:
    """Runs ``medcls profile``; returns the exit status."""
    import torch

    from medcls.errors import ConfigError
    from medcls.models.profile import profile_by_name
    from medcls.progress import console

    jobs = _jobs(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    fmt = args.format
    if fmt is None and args.output:
        fmt = "csv" if Path(args.output).suffix.lower() == ".csv" else "md"
    latency = not args.no_latency and args.device != "meta"
    rows = []
    for name, size in jobs:
        console().print(f"profiling {name} ...", highlight=False)
        rows.append(
            profile_by_name(
                name,
                size,
                in_chans=args.in_chans or 1,
                num_classes=args.num_classes,
                device=args.device,
                latency=latency,
                warmup=args.warmup,
                repeats=args.repeats,
            )
        )
    if fmt is None:
        _print_terminal(rows, latency)
        return 0
    text = format_rows(rows, fmt, latency=latency)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        console().print(f"wrote {args.output}", highlight=False)
    else:
        print(text, end="")
    return 0
