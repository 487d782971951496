"""Every model of the seed papers' comparison tables: our parameters and MACs beside the tables'.

For each table of :mod:`medcls.models.paper_tables` (six papers, 59 rows), builds
every row's registry name at the table's setting on the ``meta`` device (no weights,
no compute) and counts its parameters (also at 3 channels and 1,000 classes for the 2D
tables, the setting of most published figures) and its MACs at the table's input
(:func:`medcls.models.profile.profile_by_name`, ``device="meta"``), and converts the
table's printed figures with the table's unit reading. Writes:

- the block between ``<!-- paper-tables:start -->`` and ``<!-- paper-tables:end -->``
  in ``docs/models.md`` (``--docs``);
- the raw rows to ``benchmarks/results/paper_tables.json`` (``--json``).

    OMP_NUM_THREADS=1 python benchmarks/paper_tables.py
    python benchmarks/paper_tables.py --only cconvformer --docs '' # one table, JSON only

A model that cannot be counted on ``meta`` is built on the CPU (random weights) instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medcls.errors import ModelError
from medcls.models.paper_tables import PAPERS, PaperTable, paper_rows
from medcls.models.profile import profile_by_name
from medcls.reports.tables import format_count

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- paper-tables:start -->", "<!-- paper-tables:end -->"
EXACT = 0.005  # a figure "matches" when within 0.5 %

_macs_cache: dict[tuple[str, tuple[int, ...]], int | str] = {}


def _macs(name: str, size: tuple[int, ...], num_classes: int) -> int | str:
    """MACs of one sample on the meta device (an error text if the model cannot be run)."""
    key = (name, size)
    if key not in _macs_cache:
        try:
            row = profile_by_name(
                name, size, num_classes=num_classes, device="meta", latency=False, memory=False
            )
            _macs_cache[key] = int(row["macs"])
        except ModelError as exc:
            _macs_cache[key] = f"failed: {str(exc).splitlines()[0]}"
    return _macs_cache[key]


def _count(value: float | None, decimals: int = 3) -> str:
    return format_count(value, "si_compact", decimals)[0]


def _match(row: dict[str, Any]) -> str:
    """Which of our counts the table's figure (converted) matches, within 0.5 %."""
    table = row["table_params_count"]
    task = row["params"] / table - 1
    if abs(task) <= EXACT:
        return f"yes, 2 cls ({task:+.2%})"
    if row["params_imagenet"] is not None:
        imagenet = row["params_imagenet"] / table - 1
        if abs(imagenet) <= EXACT:
            return f"yes, 1000 cls ({imagenet:+.2%})"
    return f"no ({task:+.1%})"


def measure(paper: PaperTable) -> list[dict[str, Any]]:
    rows = paper_rows(paper.key, imagenet=paper.spatial_dims == 2)
    for row in rows:
        print(f"{paper.key}: {row['model']}", file=sys.stderr, flush=True)
        row["macs"] = _macs(row["model"], paper.input_size, paper.num_classes)
    return rows


def _section(paper: PaperTable, rows: list[dict[str, Any]]) -> list[str]:
    reading = f"'{paper.params_column}' read as {paper.params_unit}"
    if paper.computation_column:
        reading += f", '{paper.computation_column}' as {paper.computation_unit}"
    else:
        reading += "; the table has no computation column"
    matched = [f"{r['label']} ({r['table_params']})" for r in rows if _match(r).startswith("yes")]
    lines = [
        f"### `{paper.key}`: {paper.paper}",
        "",
        f"{paper.table}. Ours at {paper.setting_note}. "
        f"The table's {reading}. Rows whose figure, so read, equals our count within "
        f"{EXACT:.1%}: {', '.join(matched) if matched else 'none'}.",
        "",
        "| in the table | registry name | source | dims | params (ours) | MACs (ours) | "
        "table: params | = params | params match | table: computation | = MACs | "
        "MACs ours / table | note |",
        "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        macs = r["macs"]
        name = f"`{r['model']}`"
        if r["target"] != r["model"]:
            name += f" → `{r['target']}`"
        label = f"**{r['label']}**" if r["model"] == paper.model else r["label"]
        ratio = (
            f"{macs / r['table_macs']:.2f}" if isinstance(macs, int) and r["table_macs"] else "–"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    name,
                    r["source"],
                    f"{r['dims']}D",
                    _count(r["params"]),
                    _count(macs, 2) if isinstance(macs, int) else str(macs),
                    r["table_params"],
                    _count(r["table_params_count"]),
                    _match(r),
                    r["table_computation"] or "–",
                    _count(r["table_macs"], 2),
                    ratio,
                    r["note"],
                ]
            )
            + " |"
        )
    return [*lines, ""]


def render(results: dict[str, list[dict[str, Any]]], command: str) -> str:
    count = sum(len(rows) for rows in results.values())
    lines = [
        START,
        "",
        f"Generated by `{command}` (torch {torch.__version__}, {time.strftime('%Y-%m-%d')}); "
        "do not edit by hand. Raw rows: "
        "[`benchmarks/results/paper_tables.json`](../benchmarks/results/paper_tables.json).",
        "",
        f"{count} rows in {len(results)} tables. **params (ours)**: parameters at the "
        "table's setting (channels, classes, dims), counted on the `meta` device; **MACs "
        "(ours)**: one sample at the table's input, `medcls.models.profile` (FLOPs / 2 of "
        "convolutions, linear layers, matrix products and attention). **table: params / "
        "computation**: as printed; **= params / = MACs**: the printed figure converted with "
        "the table's unit reading (`medcls/models/paper_tables.py`). **params match**: "
        f"whether that equals our count within {EXACT:.1%} at the table's 2 classes or, for "
        "2D, at 3 channels and 1,000 classes (the published ImageNet count); otherwise "
        "ours / table - 1. The paper's own model is in bold. K/M/G = 10^3/10^6/10^9.",
        "",
    ]
    for key, rows in results.items():
        lines += _section(PAPERS[key], rows)
    lines.append(END)
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(
            f"{path}: markers {START} ... {END} not found; add them where the block goes"
        )
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + block + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(PAPERS), action="append", help="these tables only")
    parser.add_argument(
        "--docs", default="docs/models.md", help="file with the marked block ('' : none)"
    )
    parser.add_argument("--json", default="benchmarks/results/paper_tables.json", help="raw rows")
    args = parser.parse_args(argv)
    command = "python benchmarks/paper_tables.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    results = {key: measure(PAPERS[key]) for key in (args.only or PAPERS)}
    if args.json:
        out = ROOT / args.json
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"command": command.strip(), "torch": torch.__version__, "tables": results}
        out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    if args.docs:
        write_docs(ROOT / args.docs, render(results, command.strip()))
        print(f"wrote {ROOT / args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
