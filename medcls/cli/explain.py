"""``medcls explain``: heatmaps and gradient maps for images and volumes.

Two spellings of one command::

    medcls explain RUN_DIR_OR_MODEL INPUTS... --method gradcam [--target-class C] [--layer L] [-o OUT]
    medcls explain --image-path X --model M --weight-path W [--method ...]      # the seed's

``--check`` evaluates the maps of a run on its test split instead (pointing game,
energy in the lesion, deletion/insertion, randomisation check).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from medcls.explain.names import METHODS

    parser = subparsers.add_parser(
        "explain",
        help="heatmaps / gradient maps of a model's decisions (2D and 3D)",
        description="Explain a model's output for images or volumes: class activation maps "
        "(the layer comes from the model; no need to name one), gradient maps or occlusion. "
        "Writes overlays and panels (2D), NIfTI heatmaps on the input's grid, three-plane "
        "views and slice montages (3D), and explain.csv. The source is a run folder, or a "
        "model name with --weight-path.",
        epilog="Methods: " + ", ".join(METHODS) + ". The seed's form "
        "'--image-path X --model M --weight-path W' is accepted too.",
    )
    parser.add_argument(
        "source", nargs="?", help="a run folder (medcls train output) or a model name"
    )
    parser.add_argument(
        "inputs", nargs="*", help="image files, folders, or one manifest .csv (multimodal)"
    )
    parser.add_argument(
        "--method",
        "-m",
        default="gradcam",
        help="explanation method (default gradcam); with --check, a comma-separated list",
    )
    parser.add_argument(
        "--target-class", help="class name or index to explain (default: the predicted class)"
    )
    parser.add_argument("--layer", help="CAM layer(s), comma-separated (default: automatic)")
    parser.add_argument("-o", "--output", help="output folder (default RUN_DIR/explain/METHOD)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, ...")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay weight (default 0.5)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, repeatable: max_channels=64 (Score-/Ablation-CAM), samples=16, "
        "noise=0.15 (SmoothGrad), steps=32 (integrated gradients), window=8, stride=4 "
        "(occlusion), min_cells=343 (automatic CAM layer; default 7 per axis), "
        "upsample=linear (CAM resize; default bspline)",
    )
    seed = parser.add_argument_group("the seed's flags (same as SOURCE and INPUTS)")
    seed.add_argument(
        "--image-path", action="append", default=[], help="an input image (repeatable)"
    )
    seed.add_argument("--model", help="model name (registry) or run folder")
    seed.add_argument("--weight-path", help="weights file for --model / a model name")
    bare = parser.add_argument_group("for a model name with a weights file")
    bare.add_argument("--classes", help="comma-separated class names")
    bare.add_argument("--modalities", help="comma-separated modality names (channel order)")
    bare.add_argument("--spatial-size", help="input size, e.g. 224,224 (default: the model's)")
    bare.add_argument("--spatial-dims", type=int, choices=(2, 3), help="for monai:/native models")
    check = parser.add_argument_group("checking the maps of a run")
    check.add_argument(
        "--check",
        action="store_true",
        help="evaluate the maps on the run's test split (needs lesion masks)",
    )
    check.add_argument("--split", default="test", choices=("train", "val", "test"))
    check.add_argument("--max-cases", type=int, default=None)
    return parser


def _options(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> options; values become int, float, a tuple of ints, or text."""
    from medcls.errors import ConfigError

    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE, e.g. max_channels=64")
        text = value.strip()
        parsed: object = text
        for convert in (int, float):
            try:
                parsed = convert(text)
                break
            except ValueError:
                continue
        if isinstance(parsed, str) and "," in text:
            try:
                parsed = tuple(int(v) for v in text.split(","))
            except ValueError:
                parsed = text
        options[key.strip()] = parsed
    return options


def _csv(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    from medcls.errors import ConfigError

    if args.source and args.model:
        raise ConfigError("give the model either as SOURCE or as --model, not both")
    source = args.model or args.source
    inputs = [*args.inputs, *args.image_path]
    if not source:
        raise ConfigError("missing the model: a run folder or model name (SOURCE or --model)")
    if args.check:
        return _run_check(args, source)
    if not inputs:
        raise ConfigError("no inputs: give image files/folders/a manifest, or --image-path")
    from medcls.explain.names import canonical_method
    from medcls.explain.pipeline import explain_files, load_explain_model
    from medcls.progress import console

    method = canonical_method(args.method)
    size = [int(s) for s in _csv(args.spatial_size) or []] or None
    loaded = load_explain_model(
        source,
        weight_path=args.weight_path,
        checkpoint=args.checkpoint,
        spatial_dims=args.spatial_dims,
        classes=_csv(args.classes),
        modalities=_csv(args.modalities),
        spatial_size=size,
    )
    default_out = (
        Path(source) / "explain" / method if Path(source).is_dir() else Path("explain") / method
    )
    out_dir = Path(args.output) if args.output else default_out
    report = explain_files(
        loaded,
        inputs,
        method=method,
        target=args.target_class,
        layer=args.layer,
        output_dir=out_dir,
        batch_size=args.batch_size,
        device=args.device,
        alpha=args.alpha,
        **_options(args.option),
    )
    out = console()
    layers = {r["layers"] for r in report.rows if r.get("layers")}
    out.print(
        f"[bold]{method}[/bold] maps of {len(report.rows)} input(s) by {loaded.name}"
        + (f" at layer {', '.join(sorted(layers))}" if layers else "")
        + f" written to [bold]{out_dir}[/bold]",
        highlight=False,
    )
    for note in report.notes:
        out.print(f"  note: {note}", highlight=False)
    return 0


def _run_check(args: argparse.Namespace, source: str) -> int:
    from medcls.explain.evaluate import evaluate_run_maps, markdown_table, write_report
    from medcls.explain.names import canonical_method
    from medcls.progress import console

    methods = _csv(args.method) or ["gradcam"]
    options = _options(args.option)
    report = evaluate_run_maps(
        source,
        methods,
        split=args.split,
        checkpoint=args.checkpoint,
        layer=args.layer,
        max_cases=args.max_cases,
        batch_size=args.batch_size,
        device=args.device,
        method_options=_per_method(methods, options, canonical_method),
    )
    out_dir = Path(args.output) if args.output else Path(source) / "explain"
    files = write_report(report, out_dir)
    out = console()
    out.print(markdown_table(report), highlight=False, soft_wrap=True)
    out.print(f"Written: {', '.join(str(f) for f in files)}", highlight=False)
    return 0


# which options each method takes (--check passes each method only its own)
_METHOD_OPTIONS = {
    "scorecam": {"max_channels"},
    "ablationcam": {"max_channels"},
    "smoothgrad": {"samples", "noise"},
    "integrated-gradients": {"steps"},
    "occlusion": {"window", "stride", "per_pass"},
}
_CAM_OPTIONS = {"min_cells", "upsample"}


def _per_method(methods: list[str], options: dict, canonical) -> dict[str, dict]:
    from medcls.errors import ConfigError
    from medcls.explain.names import CAM_METHODS

    known = set().union(*_METHOD_OPTIONS.values(), _CAM_OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"--option: unknown option(s) {unknown}; known: {sorted(known)}")
    out = {}
    for name in methods:
        method = canonical(name)
        allowed = _METHOD_OPTIONS.get(method, set()) | (
            _CAM_OPTIONS if method in CAM_METHODS else set()
        )
        out[method] = {k: v for k, v in options.items() if k in allowed}
    return out
