"""The report of one training run: ``RUN_DIR/report.html``.

:func:`build_run_report` reads what ``medcls train`` wrote (``metrics.json``,
``timing.json``, ``history.csv``, ``config.yaml``, the figures) and adds two things
computed from the best checkpoint: a heatmap grid (test images of each class, the
Grad-CAM and gradient maps of the predicted class) and, when the split carries
lesion masks, how often the Grad-CAM peak falls inside the lesion (pointing game).
The page is self-contained like the benchmark report (:mod:`medcls.reports.html`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medcls.errors import DataError
from medcls.reports.html import (
    FigureEntry,
    _cards,
    _esc,
    _figure_html,
    _fmt,
    _grid_table,
    _kv_table,
    _notes,
    page_html,
    write_report,
)

__all__ = ["build_run_report", "heatmap_figure", "localisation_summary"]

METRICS = (
    ("auc", "AUC"),
    ("accuracy", "Accuracy"),
    ("recall", "Recall"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("f1", "F1"),
    ("balanced_accuracy", "Balanced acc."),
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("missing: is this a finished run folder?", path=path) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"not readable as JSON ({exc})", path=path) from None


def heatmap_figure(
    run_dir: str | Path,
    path: str | Path,
    *,
    methods: Sequence[str] = ("gradcam", "gradients"),
    split: str = "test",
    per_class: int = 3,
) -> Path:
    """Heatmaps of the run's best model on ``per_class`` cases of each class.

    Rows: the cases (their id and true class; the predicted class and its
    probability); columns: the input, then one explanation method each, each map
    for the predicted class and scaled to [0, 1] per image.
    """
    import torch

    from medcls.benchmark.samples import load_run_samples
    from medcls.engine.api import load_run_model
    from medcls.explain import explain
    from medcls.explain.figures import grid_figure
    from medcls.explain.render import save_figure

    model, meta = load_run_model(run_dir)
    samples = load_run_samples(run_dir, split=split, per_class=per_class)
    x = samples.input_for(model)
    with torch.no_grad():
        logits = model(x)
    multilabel = meta.get("task") == "multilabel"
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
    predicted = probs.argmax(dim=1)
    columns = {}
    for method in methods:
        result = explain(model, x, method, target=predicted)
        first = next(iter(result.maps))
        columns[method] = [m.numpy() for m in result.maps[first]]
    images = [samples.parts[samples.modalities[0]][i, 0].numpy() for i in range(len(samples))]
    titles = [
        f"{case} ({label})\npred. {samples.classes[int(p)]} {float(probs[i, p]):.2f}"
        for i, (case, label, p) in enumerate(zip(samples.ids, samples.labels, predicted))
    ]
    fig = grid_figure(images, columns, image_titles=titles)
    return save_figure(fig, path)


def localisation_summary(run_dir: str | Path, *, split: str = "test") -> dict[str, Any] | None:
    """Pointing game and energy inside the lesion of Grad-CAM, or ``None`` without masks."""
    from medcls.explain.evaluate import evaluate_run_maps

    try:
        report = evaluate_run_maps(run_dir, ("gradcam",), split=split, curve_cases=0)
    except DataError:
        return None  # the split has no lesion masks
    out = report["methods"]["gradcam"]
    out["num_cases"] = report.get("num_cases")
    out["positive_class"] = report.get("positive_class")
    return out


def _history_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _figure(
    run_dir: Path, name: str, key: str, title: str, caption: str, *, wide: bool = False
) -> FigureEntry | None:
    path = run_dir / "figures" / f"{name}.png"
    return FigureEntry(key, title, path, caption, wide=wide) if path.is_file() else None


def build_run_report(
    run_dir: str | Path,
    *,
    heatmaps: bool = True,
    localisation: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``RUN_DIR/report.html`` for a finished run and return its path.

    Args:
        run_dir: a folder written by :func:`medcls.engine.api.train`.
        heatmaps: draw the heatmap grid (loads the best checkpoint).
        localisation: with lesion masks in the split, measure the Grad-CAM pointing game.
        log: where progress lines go (default: nowhere).

    Raises:
        DataError: the folder is not a finished run.
    """
    log = log or (lambda text: None)
    run_dir = Path(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    meta = _read_json(run_dir / "checkpoints" / "best.json")
    timing = _read_json(run_dir / "timing.json") if (run_dir / "timing.json").is_file() else {}
    config = meta.get("config") or {}
    data = config.get("data") or {}
    model_name = (meta.get("model") or {}).get("name") or config.get("model", {}).get("name")
    classes = metrics.get("classes") or meta.get("classes") or []
    task = metrics.get("task", "")
    splits = [s for s in ("train", "val", "test") if isinstance(metrics.get(s), dict)]
    main = "test" if "test" in splits else (splits[-1] if splits else None)
    figures_dir = run_dir / "figures"

    heatmap, heatmap_note = None, None
    if heatmaps and main is not None:
        log("drawing heatmaps")
        try:
            path = heatmap_figure(run_dir, figures_dir / "heatmaps.png", split=main)
            heatmap = FigureEntry(
                "heatmaps",
                "Where the model looks.",
                path,
                f"{main.capitalize()} cases of each class (rows). Columns: the input, the "
                "Grad-CAM map at the model's default layer, and the gradient map (|d score / d "
                "input|), each for the predicted class and scaled to [0, 1] per image.",
                wide=True,
            )
        except Exception as exc:  # an explanation may fail on an unusual model: say so
            heatmap_note = f"The heatmaps could not be drawn: {type(exc).__name__}: {exc}"
    elif not heatmaps:
        heatmap_note = "Heatmaps were not requested."
    local = None
    if localisation and heatmaps and main is not None:
        log("measuring the Grad-CAM pointing game")
        try:
            local = localisation_summary(run_dir, split=main)
        except Exception as exc:
            heatmap_note = (heatmap_note or "") + (
                f" The pointing game could not be measured: {type(exc).__name__}: {exc}"
            )

    cards = []
    if main is not None:
        results = metrics[main]
        cards.append((f"{main} AUC", _fmt(results.get("auc")), model_name or ""))
        cards.append(
            (
                f"{main} accuracy",
                _fmt(results.get("accuracy")),
                f"recall {_fmt(results.get('recall'), 3)} · "
                f"specificity {_fmt(results.get('specificity'), 3)}",
            )
        )
        cards.append(("F1", _fmt(results.get("f1")), f"precision {_fmt(results.get('precision'))}"))
    params = meta.get("num_parameters")
    if params is not None:
        cards.append(("Parameters", f"{params / 1e6:.2f} M", f"{params:,}"))
    fit = timing.get("fit_seconds")
    if fit is not None:
        epochs = timing.get("epochs_run")
        cards.append(
            (
                "Training time",
                f"{fit:.0f} s",
                f"{epochs} epochs; best epoch {metrics.get('best_epoch')}",
            )
        )
    if local is not None and local.get("pointing") is not None:
        cards.append(
            (
                "Grad-CAM in lesion",
                f"{100 * float(local['pointing']):.0f}%",
                f"peak inside the mask, {local.get('num_cases')} {local.get('positive_class')} "
                "cases",
            )
        )

    sections = [("results", "Results"), ("figures", "Curves"), ("heatmaps", "Heatmaps")]
    sections += [("training", "Training"), ("config", "Configuration")]
    numbers = iter(range(1, 100))

    def heading(key: str) -> str:
        return f'<h2><span class="num">{next(numbers)}</span>{_esc(dict(sections)[key])}</h2>'

    parts = [f'<section id="results">{heading("results")}']
    rows = [
        [
            split,
            *[_fmt((metrics[split] or {}).get(k)) for k, _ in METRICS],
            metrics[split].get("num_samples"),
        ]
        for split in splits
    ]
    parts.append(_grid_table(["Split", *[h for _, h in METRICS], "Cases"], rows))
    threshold = (metrics.get(main) or {}).get("threshold") if main else None
    parts.append(
        _notes(
            [
                f"Best checkpoint by {((metrics.get('monitor') or {}).get('name'))} "
                f"(epoch {metrics.get('best_epoch')}); metrics of the positive class "
                + (f"at threshold {threshold}." if threshold is not None else "(arg-max class).")
            ]
        )
    )
    parts.append("</section>")

    figure_number = iter(range(1, 100))
    entries = [
        _figure(run_dir, f"roc_{main}", "roc", "ROC curve.", f"{main} split, best checkpoint."),
        _figure(
            run_dir,
            f"confusion_{main}",
            "confusion",
            "Confusion matrix.",
            f"{main} split, best checkpoint.",
        ),
        _figure(
            run_dir,
            "training_curves",
            "training_curves",
            "Training curves.",
            "Training and validation loss and the validation metrics per epoch.",
            wide=True,
        ),
    ]
    parts.append(f'<section id="figures">{heading("figures")}<div class="figs">')
    parts += [_figure_html(e, next(figure_number)) for e in entries if e is not None]
    parts.append("</div></section>")

    parts.append(f'<section id="heatmaps">{heading("heatmaps")}')
    if heatmap is not None:
        parts.append(f'<div class="figs">{_figure_html(heatmap, next(figure_number))}</div>')
    if heatmap_note:
        parts.append(f'<p class="missing">{_esc(heatmap_note.strip())}</p>')
    if local is not None:
        parts.append(
            _notes(
                [
                    f"Pointing game: the Grad-CAM peak lies inside the lesion mask for "
                    f"{100 * float(local['pointing']):.1f}% of the {local.get('num_cases')} "
                    f"{local.get('positive_class')} {main} cases; on average "
                    f"{100 * float(local.get('energy') or 0):.1f}% of the map's energy is inside "
                    "the mask. Re-run with more methods: medcls explain RUN_DIR --check."
                ]
            )
        )
    parts.append("</section>")

    parts.append(f'<section id="training">{heading("training")}')
    history = _history_rows(run_dir)
    if history:
        keys = [k for k in ("epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr")]
        keys = [k for k in keys if k in history[0]]
        hist_rows = [[_short(r.get(k)) for k in keys] for r in history]
        parts.append(
            f"<details><summary>Every epoch ({len(history)})</summary>"
            f"{_grid_table(keys, hist_rows)}</details>"
        )
    parts.append(
        _kv_table(
            [
                ("Model", model_name),
                ("Input", f"{meta.get('modalities')} · {meta.get('spatial_size')}"),
                ("Data source", data.get("source")),
                ("Cases per split", _counts(metrics, splits)),
                ("Run folder", str(run_dir.resolve())),
            ]
        )
    )
    parts.append("</section>")

    config_path = run_dir / "config.yaml"
    config_yaml = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    parts.append(f'<section id="config">{heading("config")}')
    parts.append(
        "<details><summary>Resolved configuration (YAML)</summary>"
        f"<pre>{_esc(config_yaml)}</pre></details>"
    )
    versions = meta.get("versions") or {}
    if versions:
        parts.append("<h3>Software</h3>" + _kv_table(list(versions.items())))
    parts.append("</section>")

    title = f"{config.get('name') or run_dir.name}: {model_name}"
    page = page_html(
        title,
        f"{_esc(task)} classification · {_esc(' vs '.join(classes))}",
        sections,
        _cards(cards) + "".join(parts),
        f"Generated by medcls from {_esc(run_dir.resolve())}. "
        f"Rebuild with <code>medcls report {_esc(run_dir)}</code>.",
    )
    path = write_report(run_dir / "report.html", page)
    log(f"report written to {path}")
    return path


def _short(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–" if value in (None, "") else str(value)
    if not math.isfinite(number):
        return "–"
    return str(int(number)) if number.is_integer() and abs(number) >= 1 else f"{number:.4g}"


def _counts(metrics: dict[str, Any], splits: Sequence[str]) -> str:
    return ", ".join(f"{s} {metrics[s].get('num_samples', '–')}" for s in splits)
