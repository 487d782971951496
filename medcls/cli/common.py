"""Helpers shared by the sub-commands (no argument parsing here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcls.errors import ConfigError

PRESETS = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with medcls."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve_config_path(name: str) -> Path:
    """A YAML path as given, or the preset of that name (``demo-xray2d``)."""
    path = Path(name)
    if path.is_file():
        return path
    preset = PRESETS / f"{name}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(
        f"{name}: no such file, and no preset of that name (presets: {', '.join(preset_names())})"
    )


def print_run_summary(run_dir: Path, metrics: dict[str, Any]) -> None:
    """A table of the main metrics per split, and where the results are."""
    from rich.table import Table

    from medcls.progress import console

    table = Table(
        title=f"Results ({metrics.get('task', '')}: {', '.join(metrics.get('classes', []))})"
    )
    table.add_column("split")
    names = ("accuracy", "auc", "recall", "specificity", "precision", "f1", "balanced_accuracy")
    headers = ("acc", "AUC", "recall", "spec", "prec", "F1", "bal_acc")
    for header in headers:
        table.add_column(header, justify="right")
    for split in ("val", "test"):
        if split in metrics:
            table.add_row(split, *[f"{metrics[split][n]:.4f}" for n in names])
    out = console()
    out.print(table)
    out.print(f"Run folder: [bold]{run_dir}[/bold]", highlight=False)
    for name in ("metrics.json", "figures", "checkpoints", "history.csv"):
        if (run_dir / name).exists():
            out.print(f"  {run_dir / name}", highlight=False)


def console(**kwargs: Any):
    """A rich console for tables on standard output.

    On a terminal it takes the terminal's width. Written to a file or a pipe, rich
    would fold tables into 80 columns; there it gets 200 (``COLUMNS`` still wins), so
    a saved listing keeps one row per line.
    """
    import os
    import sys

    from rich.console import Console

    if "width" not in kwargs and not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        kwargs["width"] = 200
    return Console(**kwargs)
