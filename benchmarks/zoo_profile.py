"""Size and cost of the seed papers' comparison models that the model zoo provides.

The six seed papers (``/work/shared/reference/seed-papers.md``: LDTransformer,
Light-3Dformer, 3D-CConvFormer, DRLTransformer, MADenseNet, DDSF-Net) compare their
models with baselines in one table each. This script maps every baseline name to a
zoo model (``medcls models``), profiles it with :func:`medcls.models.profile.profile_by_name`
(the code behind ``medcls profile``) at the tables' input sizes, and writes
``benchmarks/zoo_profile.md``: the mapping, one table for the 2D and one for the 3D
models, and the baselines the zoo does not provide.

Inputs: 2D tables (chest X-ray, COVID CT) at ``1x224x224`` (grey level, the papers'
2D size); 3D PET/CT tables at ``2x64x64x64`` (PET + CT as channels, or a modality
dict for the fusion models; the papers do not state their volume size, 64^3 is the
size the project's PET/CT presets and paper-model docs use). All with 2 classes
(the papers' tasks are binary) and random weights.

    python benchmarks/zoo_profile.py                   # CPU, latency with 3 repeats
    python benchmarks/zoo_profile.py --no-latency      # counts and memory only
    python benchmarks/zoo_profile.py --device cuda --output /tmp/zoo_profile_cuda.md

Also writes the raw rows to ``benchmarks/results/zoo_profile_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from medcls.cli.profile import table_rows
from medcls.errors import ModelError
from medcls.models.profile import profile_by_name

HERE = Path(__file__).resolve().parent
INPUT_2D = (1, 224, 224)
INPUT_3D = (2, 64, 64, 64)


def _baselines(spatial_dims: int) -> list[tuple[str, str | None, str, str]]:
    """``(name in the papers, zoo model or None for a native one, tables, note)`` of every
    comparison model of the seed's tables in ``spatial_dims``, from
    :mod:`medcls.models.paper_tables` (one place for the table-to-model mapping)."""
    from medcls.models.paper_tables import all_rows, model_source
    from medcls.models.registry import get_alias

    papers = {p.model for p, _ in all_rows()}
    merged: dict[str, dict] = {}
    for paper, row in all_rows():
        if paper.spatial_dims != spatial_dims or row.model in papers:
            continue
        alias = get_alias(row.model)
        native = model_source(row.model) == "native"
        key = row.model if native else alias.target if alias else row.model
        entry = merged.setdefault(key, {"labels": [], "tables": [], "notes": [], "native": native})
        for field, value in (("labels", row.label), ("tables", paper.key), ("notes", row.note)):
            if value and value not in entry[field]:
                entry[field].append(value)
    return [
        (
            " / ".join(e["labels"]),
            None if e["native"] else key,
            ", ".join(e["tables"]),
            ("native medcls model `" + key + "`; " if e["native"] else "") + "; ".join(e["notes"]),
        )
        for key, e in merged.items()
    ]


BASELINES_2D = _baselines(2)
PAPER_2D = ["ldtransformer_s", "drltransformer_s", "madensenet_s", "ddsfnet_s"]
BASELINES_3D = _baselines(3)
PAPER_3D = ["light3dformer_s", "cconvformer_s"]


def _profile(name: str, size: tuple[int, ...], args: argparse.Namespace) -> dict:
    print(f"profiling {name} at {'x'.join(map(str, size))} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        row = profile_by_name(
            name,
            size,
            num_classes=2,
            device=args.device,
            latency=not args.no_latency,
            warmup=1,
            repeats=args.repeats,
        )
    except ModelError as exc:
        return {"name": name, "input_size": size, "error": str(exc)}
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _table(labelled: list[tuple[str, dict]], latency: bool) -> list[str]:
    rows = [r for _, r in labelled if "error" not in r]
    headers, cells = table_rows(rows, latency=latency)
    labels = [label for label, r in labelled if "error" not in r]
    lines = [
        "| in the papers | " + " | ".join(headers) + " |",
        "|---|---|---|" + "---:|" * (len(headers) - 2),
    ]
    lines += [f"| {label} | " + " | ".join(c) + " |" for label, c in zip(labels, cells)]
    for label, r in labelled:
        if "error" in r:
            lines.append(f"| {label} | {r['name']} | failed: {r['error']} |")
    return lines


def _section(title, baselines, papers, size, args, results) -> list[str]:
    labelled = []
    for label, name, _, _ in baselines:
        if name:
            labelled.append((label, _profile(name, size, args)))
    for name in papers:
        labelled.append(
            (f"**{name.removesuffix('_s')}** (paper model)", _profile(name, size, args))
        )
    results.extend(r for _, r in labelled)
    return [f"## {title}", "", *_table(labelled, not args.no_latency), ""]


def _mapping(baselines) -> list[str]:
    lines = ["| in the papers | listed in | zoo model | note |", "|---|---|---|---|"]
    for label, name, where, note in baselines:
        zoo = f"`{name}`" if name else "native (not a zoo model)"
        lines.append(f"| {label} | {where} | {zoo} | {note.strip('; ')} |")
    return lines


PAPER_PARAMS = {"monai:resnet50": ("3D-ResNet50", 46.203e6), "timm3d:convnext_small": (
    "3D-ConvNeXt-S", 54.954e6)}  # fmt: skip


def _agreement(results: list[dict]) -> str:
    parts = []
    for row in results:
        if row["name"] in PAPER_PARAMS and "error" not in row:
            label, published = PAPER_PARAMS[row["name"]]
            parts.append(
                f" {label} {published / 1e6:.3f}M in the papers vs {row['params']:,} here"
                f" ({100 * (row['params'] - published) / published:+.2f}%)"
            )
    return (";".join(parts) or " (3D table not run)") + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (default 3)")
    parser.add_argument("--only", choices=("2d", "3d"), help="profile one table only")
    parser.add_argument("--output", type=Path, default=HERE / "zoo_profile.md")
    args = parser.parse_args(argv)

    command = "python benchmarks/zoo_profile.py " + shlex.join(argv or sys.argv[1:])
    results: list[dict] = []
    body: list[str] = []
    if args.only in (None, "2d"):
        title = f"2D models at {'x'.join(map(str, INPUT_2D))} (X-ray / CT slices), 2 classes"
        body += _section(title, BASELINES_2D, PAPER_2D, INPUT_2D, args, results)
    if args.only in (None, "3d"):
        title = f"3D models at {'x'.join(map(str, INPUT_3D))} (PET + CT), 2 classes"
        body += _section(title, BASELINES_3D, PAPER_3D, INPUT_3D, args, results)

    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    latency_note = (
        "Latency: not measured."
        if args.no_latency
        else f"Latency: median of {args.repeats} single-sample forward passes after one "
        f"warm-up pass (at most 3 s of timed passes per model), inference mode, on "
        f"{args.device} ({device or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{torch.get_num_threads()} torch threads)"
        + (
            ". **The CPU is a shared, loaded 2-core machine: latencies are indicative "
            "only and not comparable with other machines or runs.**"
            if args.device == "cpu"
            else "."
        )
    )
    text = [
        "# Seed-paper baselines in the model zoo: parameters, MACs, FLOPs, memory",
        "",
        f"Generated by `{command.strip()}` (torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}). Do not edit by hand; rerun the command.",
        "",
        "Each model: random weights, 2 classes, one zero sample. Params exact; MACs = FLOPs"
        " / 2 counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions, linear"
        " layers, matrix products and attention; not normalisation, activations, pooling);"
        " peak act. mem. = the most memory held at once by tensors that one forward pass"
        " with autograd on creates (training-style, parameters and input excluded), "
        + (
            "from the CUDA allocator."
            if args.device == "cuda"
            else "from medcls's tensor tracker (CPU)."
        )
        + " See `docs/profile.md`. K/M/G = 10^3/10^6/10^9.",
        "",
        latency_note,
        "",
        "The papers' own figures are not comparable one-to-one: they do not state channels,"
        " classes or (3D) volume size. Parameter counts of the 3D baselines can be matched:"
        + _agreement(results),
        "",
        *body,
        "## Mapping of the papers' baselines (2D)",
        "",
        *_mapping(BASELINES_2D),
        "",
        "## Mapping of the papers' baselines (3D PET/CT)",
        "",
        *_mapping(BASELINES_3D),
        "",
    ]
    args.output.write_text("\n".join(text), encoding="utf-8")
    raw = HERE / "results" / f"zoo_profile_{args.device}.json"
    raw.write_text(json.dumps({"command": command, "rows": results}, indent=1) + "\n")
    print(f"wrote {args.output} and {raw}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
