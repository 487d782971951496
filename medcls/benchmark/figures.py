"""Figures that compare the models of a benchmark.

* :func:`plot_model_rocs` - the pooled ROC curve of every model on one plot;
* :func:`plot_validation_curves` - per-epoch validation AUC, accuracy and loss of
  every model (mean over runs, band = ± one standard deviation);
* :func:`plot_calibration` - reliability diagrams of every model on one plot;
* :func:`plot_heatmap_grid` - a models × images grid of explanation heatmaps
  (:mod:`medcls.explain`).

Same style and file conventions as :mod:`medcls.reports.figures` (PNG and SVG,
Okabe-Ito colours, drawn without pyplot).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcls.errors import DataError
from medcls.reports.figures import _STYLE, FigureFiles, _new_figure, _save, _style, plot_roc

__all__ = [
    "plot_calibration",
    "plot_heatmap_grid",
    "plot_model_rocs",
    "plot_validation_curves",
]

PANELS = (("val_auc", "Validation AUC"), ("val_accuracy", "Validation accuracy"))
PANELS += (("val_loss", "Validation loss"),)


def plot_model_rocs(
    curves: Mapping[str, tuple[Any, Any]],
    aucs: Mapping[str, float],
    path_stem: str | Path,
    *,
    title: str = "ROC curves",
) -> FigureFiles:
    """All models' ROC curves on one plot (see :func:`medcls.reports.figures.plot_roc`)."""
    return plot_roc(curves, aucs, path_stem, title=title)


def _epoch_table(histories: Sequence[Sequence[Mapping[str, float]]], column: str):
    """``(epochs, mean, std)`` of ``column`` over runs, on the epochs any run reached."""
    values: dict[float, list[float]] = {}
    for history in histories:
        for row in history:
            epoch, value = row.get("epoch"), row.get(column)
            if epoch is None or value is None or not math.isfinite(value):
                continue
            values.setdefault(float(epoch), []).append(float(value))
    if not values:
        return None
    epochs = np.array(sorted(values))
    mean = np.array([np.mean(values[e]) for e in epochs])
    std = np.array([np.std(values[e], ddof=1) if len(values[e]) > 1 else 0.0 for e in epochs])
    return epochs, mean, std


def plot_validation_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]],
    path_stem: str | Path,
    *,
    title: str = "Validation curves (mean ± std over runs)",
) -> FigureFiles:
    """Per-epoch validation metrics of every model, one panel per metric.

    Args:
        histories: model label -> its runs' histories (rows with ``epoch`` and
            ``val_auc``/``val_accuracy``/``val_loss``).
        path_stem: output path without extension.
        title: figure title.

    Raises:
        DataError: no history holds any validation column.
    """
    from matplotlib import rc_context
    from matplotlib.ticker import MaxNLocator

    panels = [
        (column, name)
        for column, name in PANELS
        if any(_epoch_table(h, column) is not None for h in histories.values())
    ]
    if not panels:
        raise DataError("plot_validation_curves: no run history has validation metrics")
    with rc_context(_STYLE):
        fig = _new_figure(3.6 * len(panels) + 0.4, 3.4)
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (column, name) in zip(axes, panels):
            for index, (label, runs) in enumerate(histories.items()):
                table = _epoch_table(runs, column)
                if table is None:
                    continue
                epochs, mean, std = table
                style = _style(index)
                ax.plot(
                    epochs, mean, linewidth=1.6, marker="o", markersize=2.5, label=label, **style
                )
                if np.any(std > 0):
                    ax.fill_between(
                        epochs,
                        mean - std,
                        mean + std,
                        color=style["color"],
                        alpha=0.15,
                        linewidth=0,
                    )
            ax.set_title(name)
            ax.set_xlabel("Epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(labels), 4),
            frameon=False,
        )
        fig.suptitle(title)
        return _save(fig, path_stem)


def plot_calibration(
    curves: Mapping[str, Mapping[str, Any]],
    path_stem: str | Path,
    *,
    title: str = "Calibration (reliability diagram)",
    xlabel: str = "Predicted probability",
    ylabel: str = "Observed frequency",
) -> FigureFiles:
    """Reliability diagrams of several models on one plot.

    Args:
        curves: model label -> :func:`medcls.evaluation.statistics.calibration_curve`
            output (``mean_predicted``, ``observed``, ``count``), with the model's
            ECE under ``"ece"`` if it should appear in the legend.
        path_stem: output path without extension.
    """
    from matplotlib import rc_context

    if not curves:
        raise DataError("plot_calibration: no curve given")
    with rc_context(_STYLE):
        fig = _new_figure(4.8, 4.6)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], color="#888888", linestyle=":", linewidth=1, label="Perfect")
        for index, (label, curve) in enumerate(curves.items()):
            x = np.asarray(curve["mean_predicted"], dtype=float)
            y = np.asarray(curve["observed"], dtype=float)
            keep = np.isfinite(x) & np.isfinite(y)
            ece = curve.get("ece")
            name = f"{label} (ECE = {ece:.3f})" if ece is not None else label
            ax.plot(
                x[keep],
                y[keep],
                marker="o",
                markersize=3,
                linewidth=1.4,
                label=name,
                **_style(index),
            )
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper left", frameon=True, framealpha=0.9)
        return _save(fig, path_stem)


def plot_heatmap_grid(
    models: Mapping[str, Any],
    inputs: Mapping[str, Any],
    images: Sequence[np.ndarray],
    path: str | Path,
    *,
    method: str = "gradcam",
    image_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Explanation heatmaps of every model on the same images (rows: images, columns: models).

    Args:
        models: model label -> trained model (eval mode).
        inputs: model label -> that model's input for the images (``(N, C, *spatial)``
            or a dict of modalities; the same cases in the same order).
        images: the N images shown under the maps, ``(H, W)`` or ``(D, H, W)``.
        path: output PNG path.
        method: explanation method (see :mod:`medcls.explain`).
        image_titles: one label per row.
        title: figure title.

    Returns:
        the written path.
    """
    from medcls.explain import explain
    from medcls.explain.figures import grid_figure
    from medcls.explain.render import save_figure

    columns = {}
    for label, model in models.items():
        result = explain(model, inputs[label], method)
        shown = textwrap.fill(label, width=18, break_long_words=False)
        columns[shown] = [m.detach().float().cpu().numpy() for m in result.map(None)]
    fig = grid_figure(list(images), columns, image_titles=image_titles, title=title or method)
    return save_figure(fig, path)
