"""Paper-style heatmap figures: models x images, and the class-wise maps of one model.

The seed papers show (a) the heatmaps of several (ablation) models side by side on
the same images and (b) one model's maps on several images. These functions
compute the maps and draw the figure in one call, so a benchmark or report can
include them::

    from medcls.explain.figures import models_grid, classwise_maps
    models_grid({"full": m1, "no-attention": m2}, x, "gradcam", "figures/ablation.png")

For 3D inputs each cell shows the slice (along ``slice_axis``) through the peak of
the mean map of that image over all models, so every model is shown on the same slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcls.errors import ConfigError
from medcls.explain.api import explain
from medcls.explain.render import DEFAULT_CMAP, _new_figure, _show, save_figure, to_display

__all__ = ["classwise_figure", "classwise_maps", "grid_figure", "models_grid"]


def _slice_for_display(image: np.ndarray, heat: np.ndarray, axis: int, index: int | None) -> tuple:
    """2D ``(H, W)`` pairs pass through; 3D ones are cut at ``index`` along ``axis``."""
    if image.ndim == 2:
        return image, heat
    cut = int(
        index if index is not None else np.unravel_index(int(np.argmax(heat)), heat.shape)[axis]
    )
    return np.take(image, cut, axis=axis).T, np.take(heat, cut, axis=axis).T


def grid_figure(
    images: Sequence[Any],
    maps: Mapping[str, Sequence[Any]],
    *,
    image_titles: Sequence[str] | None = None,
    title: str | None = None,
    slice_axis: int = -1,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
):
    """A grid: one row per image; the input, then one column per model (or method).

    Args:
        images: ``(H, W)`` images or ``(i, j, k)`` volumes.
        maps: column label -> one map per image (same shape as the image), in ``[0, 1]``.
        image_titles: one label per row.
        title: figure title.
        slice_axis: for volumes, the axis the shown slice is cut along.
        alpha: overlay weight.
        cmap: colormap.

    Returns:
        a matplotlib ``Figure``.
    """
    imgs = [to_display(i) for i in images]
    columns = list(maps)
    for label in columns:
        if len(maps[label]) != len(imgs):
            raise ConfigError(
                f"grid_figure: column {label!r} has {len(maps[label])} maps for {len(imgs)} images"
            )
    rows, cols = len(imgs), 1 + len(columns)
    fig = _new_figure(1.9 * cols, 1.9 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, img in enumerate(imgs):
        heats = [np.asarray(maps[c][r], dtype=np.float32) for c in columns]
        index = None
        if img.ndim == 3:
            mean = np.mean(heats, axis=0) if heats else img
            index = int(np.unravel_index(int(np.argmax(mean)), mean.shape)[slice_axis])
        shown, _ = _slice_for_display(img, img, slice_axis, index)
        _show(axes[r, 0], shown, None, alpha=alpha, cmap=cmap)
        if img.ndim == 3:
            axes[r, 0].invert_yaxis()
        label = image_titles[r] if image_titles is not None else f"image {r + 1}"
        axes[r, 0].set_ylabel(
            label + (f"\n{'ijk'[slice_axis % 3]}={index}" if index is not None else "")
        )
        for c, heat in enumerate(heats, start=1):
            img2d, heat2d = _slice_for_display(img, heat, slice_axis, index)
            _show(axes[r, c], img2d, heat2d, alpha=alpha, cmap=cmap)
            if img.ndim == 3:
                axes[r, c].invert_yaxis()
    axes[0, 0].set_title("input")
    for c, label in enumerate(columns, start=1):
        axes[0, c].set_title(str(label))
    if title:
        fig.suptitle(title)
    return fig


def _first_modality_image(x: torch.Tensor | Mapping[str, torch.Tensor], index: int) -> np.ndarray:
    t = next(iter(x.values())) if isinstance(x, Mapping) else x
    return t[index, 0].detach().float().cpu().numpy()


def models_grid(
    models: Mapping[str, nn.Module],
    x: torch.Tensor | Mapping[str, torch.Tensor],
    method: str,
    path: str | Path,
    *,
    target: int | Sequence[int] | None = None,
    modality: str | None = None,
    image_titles: Sequence[str] | None = None,
    title: str | None = None,
    **options: Any,
) -> Path:
    """Computes ``method``'s maps of every model on the same images and draws the grid.

    Args:
        models: column label -> model (each explained at its default layer).
        x: ``(B, C, *spatial)`` inputs shared by all models (or a dict of modalities).
        method: explanation method.
        path: output image (PNG/SVG/PDF by suffix).
        target: class to explain (None: each model's predicted class).
        modality: which modality's map to show (default: the mean over modalities).
        image_titles: one label per image.
        title: figure title (default: the method).
        **options: passed to :func:`~medcls.explain.api.explain`.

    Returns:
        the written path.
    """
    batch = (next(iter(x.values())) if isinstance(x, Mapping) else x).shape[0]
    columns = {}
    for label, model in models.items():
        result = explain(model, x, method, target=target, **options)
        columns[label] = [m.numpy() for m in result.map(modality)]
    images = [_first_modality_image(x, i) for i in range(batch)]
    fig = grid_figure(images, columns, image_titles=image_titles, title=title or method)
    return save_figure(fig, path)


def classwise_figure(
    image: Any,
    maps: Mapping[str, Any],
    *,
    scores: Mapping[str, float] | None = None,
    title: str | None = None,
    slice_axis: int = -1,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
):
    """One image and the map of each class side by side (titles carry the class scores)."""
    labels = {c: (f"{c} ({scores[c]:.2f})" if scores and c in scores else c) for c in maps}
    fig = grid_figure(
        [image],
        {labels[c]: [m] for c, m in maps.items()},
        title=title,
        slice_axis=slice_axis,
        alpha=alpha,
        cmap=cmap,
    )
    return fig


def classwise_maps(
    model: nn.Module,
    x: torch.Tensor | Mapping[str, torch.Tensor],
    method: str,
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    modality: str | None = None,
    title: str | None = None,
    **options: Any,
) -> Path:
    """Maps of every class for one image ``x`` ``(1, C, *spatial)``, drawn side by side.

    Args:
        model: the classifier.
        x: one input (batch of 1), or a dict of modalities.
        method: explanation method.
        path: output image.
        classes: class names in output order (default ``class 0``, ``class 1``, ...).
        modality: which modality's map to show (default: the mean).
        title: figure title.
        **options: passed to :func:`~medcls.explain.api.explain`.

    Returns:
        the written path.
    """
    tensor = next(iter(x.values())) if isinstance(x, Mapping) else x
    if tensor.shape[0] != 1:
        raise ConfigError(
            f"classwise_maps: expected one image (batch of 1), got a batch of {tensor.shape[0]}"
        )
    maps, scores = {}, {}
    first = explain(model, x, method, target=0, **options)
    num_classes = first.logits.shape[1]
    names = list(classes) if classes is not None else [f"class {i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(
            f"classwise_maps: {len(names)} class names for a model with {num_classes} outputs"
        )
    probs = torch.softmax(first.logits[0], dim=0)
    for k, name in enumerate(names):
        result = first if k == 0 else explain(model, x, method, target=k, **options)
        maps[name] = result.map(modality)[0].numpy()
        scores[name] = float(probs[k])
    fig = classwise_figure(_first_modality_image(x, 0), maps, scores=scores, title=title or method)
    return save_figure(fig, path)
