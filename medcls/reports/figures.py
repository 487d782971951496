"""Result figures: ROC curves, confusion matrices, training curves.

Every function writes ``<path_stem>.png`` (150 dpi) and ``<path_stem>.svg`` and
returns both paths as a :class:`FigureFiles`. Figures are drawn on a
:class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
they work without a display, leave pyplot's global state alone and are safe to
call from a training process. matplotlib is imported inside the functions.

Colours are the Okabe-Ito palette (distinguishable with the common forms of
colour blindness); beyond eight curves the line style changes as well.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medcls.errors import DataError

__all__ = [
    "PALETTE",
    "TRAINING_COLUMNS",
    "FigureFiles",
    "plot_confusion_matrix",
    "plot_roc",
    "plot_training_curves",
]

PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: faint on white)
)
"""Okabe-Ito colours, in the order curves receive them."""

_LINESTYLES = ("-", "--", "-.", ":")

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "svg.hashsalt": "medcls",  # stable SVG ids: the same figure gives the same file
}

TRAINING_COLUMNS = {
    "Loss": ("train_loss", "val_loss"),
    "Accuracy": ("train_accuracy", "val_accuracy"),
    "AUC": ("train_auc", "val_auc"),
}
"""Panels of :func:`plot_training_curves` and the history columns each one shows."""


class FigureFiles(NamedTuple):
    """Paths of one figure written in two formats."""

    png: Path
    svg: Path


def _stem(path_stem: str | Path) -> Path:
    path = Path(path_stem)
    if path.suffix.lower() in (".png", ".svg", ".pdf"):
        path = path.with_suffix("")
    return path


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path_stem: str | Path) -> FigureFiles:
    stem = _stem(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = stem.parent / f"{stem.name}.png"
    svg = stem.parent / f"{stem.name}.svg"
    fig.savefig(png, dpi=150, facecolor="white")
    fig.savefig(svg, facecolor="white", metadata={"Date": None})
    return FigureFiles(png, svg)


def _style(index: int) -> dict[str, Any]:
    """Colour and line style of the ``index``-th curve."""
    return {
        "color": PALETTE[index % len(PALETTE)],
        "linestyle": _LINESTYLES[(index // len(PALETTE)) % len(_LINESTYLES)],
    }


def _auc_label(name: str, auc: float | None) -> str:
    if auc is None:
        return name
    if isinstance(auc, float) and math.isnan(auc):
        return f"{name} (AUC = n/a)"
    return f"{name} (AUC = {float(auc):.3f})"


def plot_roc(
    curves: Mapping[str, tuple[Any, Any]],
    aucs: Mapping[str, float | None] | None,
    path_stem: str | Path,
    title: str = "ROC curve",
) -> FigureFiles:
    """Overlay ROC curves (classes of one model, or several models) on one plot.

    Args:
        curves: ``{name: (fpr, tpr)}``, each ``(M,)``; the legend keeps this
            order. :func:`medcls.evaluation.roc_curves` returns this form.
        aucs: ``{name: auc}`` shown in the legend (missing names show no AUC;
            NaN shows "n/a"); ``None`` for no AUCs.
        path_stem: output path without extension.
        title: plot title.

    Returns:
        The PNG and SVG paths.

    Raises:
        DataError: no curves, or a curve with mismatched/non-1-D arrays.
    """
    from matplotlib import rc_context

    if not curves:
        raise DataError("plot_roc: curves is empty; expected at least one {name: (fpr, tpr)}")
    checked = {}
    for name, pair in curves.items():
        try:
            fpr, tpr = pair
        except (TypeError, ValueError) as exc:
            raise DataError(f"plot_roc: curve {name!r} must be a pair (fpr, tpr)") from exc
        fpr = np.asarray(fpr, dtype=np.float64)
        tpr = np.asarray(tpr, dtype=np.float64)
        if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size == 0:
            raise DataError(
                f"plot_roc: curve {name!r} needs 1-D fpr and tpr of equal, non-zero length; "
                f"got shapes {fpr.shape} and {tpr.shape}"
            )
        checked[str(name)] = (fpr, tpr)
    aucs = aucs or {}
    many = len(checked) > 10
    with rc_context(_STYLE):
        fig = _new_figure(7.2 if many else 4.8, 4.6)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], color="#888888", linestyle=":", linewidth=1, label="Chance")
        for index, (name, (fpr, tpr)) in enumerate(checked.items()):
            ax.plot(
                fpr, tpr, linewidth=1.6, label=_auc_label(name, aucs.get(name)), **_style(index)
            )
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 − specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.set_title(title)
        if many:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        else:
            ax.legend(loc="lower right", frameon=True, framealpha=0.9)
        return _save(fig, path_stem)


def _draw_matrix(
    fig: Any, ax: Any, cm: np.ndarray, names: Sequence[str], normalize: bool, colorbar: bool
) -> None:
    rows = cm.sum(axis=1, keepdims=True)
    fraction = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows != 0)
    shown = fraction if normalize else cm.astype(np.float64)
    vmax = 1.0 if normalize else max(float(shown.max()), 1.0)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    k = cm.shape[0]
    cell_font = 9 if k <= 6 else 7 if k <= 12 else 5
    for i in range(k):
        for j in range(k):
            percent = f"{100 * fraction[i, j]:.1f}%" if rows[i, 0] else "–"
            text = f"{percent}\n(n={cm[i, j]})" if normalize else f"{cm[i, j]}\n({percent})"
            dark = shown[i, j] > 0.55 * vmax
            ax.text(
                j, i, text, ha="center", va="center", fontsize=cell_font,
                color="white" if dark else "#222222",
            )  # fmt: skip
    ax.set_xticks(range(k), labels=list(names))
    ax.set_yticks(range(k), labels=list(names))
    if max(len(n) for n in names) > 6 or k > 6:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if colorbar:
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("Fraction of true class" if normalize else "Samples")


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    path_stem: str | Path,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> FigureFiles:
    """Draw a confusion matrix; each cell shows its count and its row percentage.

    Args:
        cm: ``(K, K)`` counts, rows = true class, columns = predicted; or
            ``(K, 2, 2)`` multilabel matrices ``[[tn, fp], [fn, tp]]`` (one small
            panel per label), as in ``classification_metrics(...)["confusion_matrix"]``.
        class_names: K names.
        path_stem: output path without extension.
        normalize: colour by row fraction (the percentage first in each cell)
            instead of by count.
        title: figure title.

    Returns:
        The PNG and SVG paths.

    Raises:
        DataError: a matrix of the wrong shape, negative counts, or a number of
            names that is not K.
    """
    from matplotlib import rc_context

    matrix = np.asarray(cm)
    if matrix.ndim == 2:
        square = matrix.shape[0] == matrix.shape[1]
    else:
        square = matrix.ndim == 3 and matrix.shape[1:] == (2, 2)
    if not square or matrix.shape[0] == 0:
        raise DataError(
            f"plot_confusion_matrix: cm must have shape (K, K) or (K, 2, 2); got {matrix.shape}"
        )
    if np.any(matrix < 0) or np.any(matrix != np.round(matrix)):
        raise DataError("plot_confusion_matrix: cm must hold non-negative integer counts")
    matrix = matrix.astype(np.int64)
    names = [str(n) for n in class_names]
    if len(names) != matrix.shape[0]:
        raise DataError(
            f"plot_confusion_matrix: class_names has {len(names)} names; "
            f"cm has {matrix.shape[0]} classes"
        )
    with rc_context(_STYLE):
        if matrix.ndim == 2:
            k = matrix.shape[0]
            side = min(max(3.6, 0.75 * k + 2.0), 14.0)
            fig = _new_figure(side + 0.8, side)
            ax = fig.add_subplot()
            _draw_matrix(fig, ax, matrix, names, normalize, colorbar=True)
            ax.set_title(title)
        else:
            k = matrix.shape[0]
            cols = min(k, 4)
            nrows = math.ceil(k / cols)
            fig = _new_figure(2.6 * cols, 2.5 * nrows + 0.4)
            axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
            for index, ax in enumerate(axes):
                if index >= k:
                    ax.set_visible(False)
                    continue
                _draw_matrix(fig, ax, matrix[index], ["neg", "pos"], normalize, colorbar=False)
                ax.set_title(names[index])
            fig.suptitle(title)
        return _save(fig, path_stem)


def _read_history_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError("training history CSV not found", path=str(path))
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(value: Any, column: str, source: str | None) -> float | None:
    """A float, or ``None`` for a missing value (empty cell, None, NaN)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"column {column!r} holds {value!r}; expected a number or an empty cell",
            path=source,
        ) from None
    return None if math.isnan(number) else number


def _series(
    rows: Sequence[Mapping[str, Any]], source: str | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{column: (epochs, values)}`` for the known columns present in ``rows``.

    Rows without an ``epoch`` use their position. When a column has several
    values for one epoch (e.g. step-level rows of a logger), the last one is kept.
    """
    wanted = [column for columns in TRAINING_COLUMNS.values() for column in columns]
    found: dict[str, dict[float, float]] = {}
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(
                f"history row {position} is a {type(row).__name__}; expected a dict of metrics",
                path=source,
            )
        epoch = _number(row.get("epoch"), "epoch", source)
        epoch = float(position) if epoch is None else epoch
        for column in wanted:
            value = _number(row.get(column), column, source)
            if value is not None:
                found.setdefault(column, {})[epoch] = value
    series = {}
    for column, points in found.items():
        epochs = np.array(sorted(points))
        series[column] = (epochs, np.array([points[e] for e in epochs]))
    return series


def plot_training_curves(
    history: Sequence[Mapping[str, Any]] | str | Path,
    path_stem: str | Path,
    title: str = "Training curves",
) -> FigureFiles:
    """Plot loss, accuracy and AUC per epoch, one panel each.

    Args:
        history: one dict per epoch (or per logged step), or the path of a CSV
            with a header. Used columns: ``epoch``, ``train_loss``, ``val_loss``,
            ``train_accuracy``, ``val_accuracy``, ``train_auc``, ``val_auc``;
            any subset, other columns are ignored, empty cells are skipped. A
            panel is drawn only if one of its columns is present. The best
            validation value (lowest loss, highest accuracy/AUC) is marked.
        path_stem: output path without extension.
        title: figure title.

    Returns:
        The PNG and SVG paths.

    Raises:
        DataError: a missing CSV, a non-numeric value, or none of the columns.
    """
    from matplotlib import rc_context
    from matplotlib.ticker import MaxNLocator

    if isinstance(history, (str, Path)):
        source: str | None = str(history)
        rows = _read_history_csv(Path(history))
    else:
        source = None
        rows = list(history)
    series = _series(rows, source)
    panels = [
        (panel, [c for c in columns if c in series]) for panel, columns in TRAINING_COLUMNS.items()
    ]
    panels = [(panel, columns) for panel, columns in panels if columns]
    if not panels:
        expected = ", ".join(c for columns in TRAINING_COLUMNS.values() for c in columns)
        raise DataError(
            f"training history has none of the columns {expected} (or no values in them)",
            path=source,
        )
    with rc_context(_STYLE):
        fig = _new_figure(3.4 * len(panels), 3.2)
        axes = np.atleast_1d(fig.subplots(1, len(panels))).ravel()
        for ax, (panel, columns) in zip(axes, panels, strict=True):
            for column in columns:
                epochs, values = series[column]
                split = column.split("_", 1)[0]
                style = {"color": PALETTE[0], "linestyle": "-"}
                if split == "val":
                    style = {"color": PALETTE[1], "linestyle": "--"}
                label = "train" if split == "train" else "validation"
                ax.plot(
                    epochs, values, marker="o", markersize=3, linewidth=1.4, label=label, **style
                )
                if split == "val":
                    best = int(np.argmin(values) if panel == "Loss" else np.argmax(values))
                    ax.plot(
                        epochs[best], values[best], marker="*", markersize=11, linestyle="none",
                        color=PALETTE[1], markeredgecolor="black", markeredgewidth=0.5,
                        label=f"best {values[best]:.3f} (epoch {epochs[best]:g})",
                    )  # fmt: skip
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("Epoch")
            ax.set_ylabel(panel)
            ax.set_title(panel)
            high = max(float(series[c][1].max()) for c in columns)
            if panel != "Loss" and high <= 1.0:  # fractions (not percentages): a 0-1 scale
                low = min(float(series[c][1].min()) for c in columns)
                ax.set_ylim(max(0.0, min(low, 0.5) - 0.05), 1.02)
            ax.legend(loc="best", frameon=False)
        fig.suptitle(title)
        return _save(fig, path_stem)


def plot_lr_finder(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggestion: float,
    path_stem: str | Path,
    title: str = "Learning-rate range test",
) -> FigureFiles:
    """Plot the training loss against the learning rate (log axis), raw and smoothed,
    with the suggested rate marked.

    Returns:
        The PNG and SVG paths.

    Raises:
        DataError: no losses, or ``lrs`` and ``losses`` of different lengths.
    """
    from matplotlib import rc_context

    if not losses or len(lrs) != len(losses) or len(smoothed) != len(losses):
        raise DataError(
            f"learning-rate curve: {len(lrs)} rates, {len(losses)} losses and "
            f"{len(smoothed)} smoothed losses; expected equal, non-zero lengths"
        )
    with rc_context(_STYLE):
        fig = _new_figure(4.8, 3.4)
        ax = fig.subplots()
        ax.plot(lrs, losses, color=PALETTE[0], alpha=0.35, linewidth=1.0, label="loss")
        ax.plot(lrs, smoothed, color=PALETTE[0], linewidth=1.6, label="smoothed")
        ax.axvline(suggestion, color=PALETTE[1], linestyle="--", linewidth=1.2)
        at = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(suggestion))))
        ax.plot(
            [suggestion], [smoothed[at]], "o", color=PALETTE[1], label=f"suggested {suggestion:.2g}"
        )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        top = float(np.nanpercentile(smoothed, 95))
        bottom = float(np.nanmin(smoothed))
        ax.set_ylim(bottom - 0.05 * abs(bottom), top + 0.1 * abs(top - bottom) + 1e-6)
        ax.set_title(title)
        ax.legend(frameon=False)
        return _save(fig, path_stem)
