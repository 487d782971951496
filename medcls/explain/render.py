"""Drawing maps: 2D overlays and panels; 3D NIfTI heatmaps, three-plane views, montages.

Arrays here are NumPy and channel-free: a 2D image/map is ``(H, W)`` (rows x
columns), a 3D volume/map ``(i, j, k)`` in the voxel order of its affine (the
readers' convention, :mod:`medcls.data.readers`). Figures are drawn on a
:class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so they
work without a display and leave pyplot's state alone.

3D views show slices along the voxel axes without reorienting them: axis ``k``
slices (axial for a typical CT/PET volume) are drawn with ``i`` across and ``j`` up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcls.errors import DataError

__all__ = [
    "DEFAULT_CMAP",
    "colorize",
    "montage_figure",
    "overlay",
    "panel_figure",
    "peak_index",
    "save_figure",
    "save_nifti",
    "save_png",
    "three_plane_figure",
    "to_display",
]

DEFAULT_CMAP = "jet"


def _as_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def to_display(image: Any, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """An image or volume scaled to ``[0, 1]`` between two percentiles.

    Args:
        image: ``(H, W)``, ``(i, j, k)``, or with a leading channel axis (the first
            channel is shown).
        low: lower percentile.
        high: upper percentile.
    """
    a = np.nan_to_num(_as_array(image))
    lo, hi = np.percentile(a, [low, high])
    if hi - lo < 1e-12:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def colorize(heatmap: Any, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """A map in ``[0, 1]`` ``(*S)`` -> RGB floats ``(*S, 3)`` through a matplotlib colormap."""
    import matplotlib

    values = np.clip(np.nan_to_num(_as_array(heatmap)), 0.0, 1.0)
    return matplotlib.colormaps[cmap](values)[..., :3].astype(np.float32)


def overlay(
    image: Any, heatmap: Any, *, alpha: float = 0.45, cmap: str = DEFAULT_CMAP
) -> np.ndarray:
    """Blends a coloured map over a grey image.

    Args:
        image: ``(H, W)`` in any range (scaled with :func:`to_display`).
        heatmap: ``(H, W)`` in ``[0, 1]`` (same shape as ``image``).
        alpha: weight of the map where it is 1 (the blend weight grows with the map,
            so cold regions leave the image visible).
        cmap: matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    img, heat = to_display(image), _as_array(heatmap)
    if img.shape != heat.shape:
        raise DataError(f"overlay: image shape {img.shape} differs from map shape {heat.shape}")
    weight = alpha * np.clip(heat, 0.0, 1.0)[..., None] ** 0.5
    rgb = (1 - weight) * img[..., None] + weight * colorize(heat, cmap)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Writes an ``(H, W, 3)`` uint8 array (or ``(H, W)``) as PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)
    return path


def save_nifti(heatmap: Any, affine: Any, path: str | Path) -> Path:
    """Writes a 3D map ``(i, j, k)`` as a float32 NIfTI with ``affine`` (4x4, voxel -> RAS mm)."""
    import nibabel as nib

    data = _as_array(heatmap)
    if data.ndim != 3:
        raise DataError(
            f"save_nifti: expected a 3D map (i, j, k), got shape {data.shape}", path=path
        )
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise DataError(f"save_nifti: expected a 4x4 affine, got shape {aff.shape}", path=path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, aff)
    image.header.set_data_dtype(np.float32)
    image.header["descrip"] = b"medcls heatmap"
    nib.save(image, str(path))
    return path


def peak_index(heatmap: Any) -> tuple[int, ...]:
    """Index of the map's maximum (the first one if there are ties)."""
    a = np.nan_to_num(_as_array(heatmap), nan=-np.inf)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(a)), a.shape))


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, *, dpi: int = 150) -> Path:
    """Saves a figure (PNG, or the format of ``path``'s suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": "medcls"} if path.suffix == ".png" else None)
    return path


def _show(ax: Any, image: np.ndarray, heat: np.ndarray | None, *, alpha: float, cmap: str) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if heat is not None:
        ax.imshow(
            heat,
            cmap=cmap,
            vmin=0,
            vmax=1,
            alpha=alpha * np.clip(heat, 0, 1) ** 0.5,
            interpolation="bilinear",
        )
    ax.set_xticks([])
    ax.set_yticks([])


def panel_figure(
    image: Any,
    maps: Mapping[str, Any],
    *,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
):
    """Side-by-side panel of a 2D image and its maps: input, then one overlay per map.

    Args:
        image: ``(H, W)``.
        maps: label -> ``(H, W)`` map in ``[0, 1]`` (e.g. one per method or modality).
        title: figure title.
        alpha: overlay weight.
        cmap: colormap.

    Returns:
        a matplotlib ``Figure``.
    """
    img = to_display(image)
    n = 1 + len(maps)
    fig = _new_figure(2.2 * n, 2.5)
    axes = fig.subplots(1, n, squeeze=False)[0]
    _show(axes[0], img, None, alpha=alpha, cmap=cmap)
    axes[0].set_title("input")
    for ax, (label, heat) in zip(axes[1:], maps.items()):
        _show(ax, img, _as_array(heat), alpha=alpha, cmap=cmap)
        ax.set_title(str(label))
    if title:
        fig.suptitle(title)
    return fig


def _axis_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A slice of ``volume`` along ``axis``, oriented for display (first remaining axis across)."""
    return np.take(volume, index, axis=axis).T


def three_plane_figure(
    volume: Any,
    heatmap: Any,
    *,
    peak: Sequence[int] | None = None,
    title: str | None = None,
    spacing: Sequence[float] | None = None,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
):
    """Three orthogonal slices through the map's peak (or ``peak``), map over the volume.

    Args:
        volume: ``(i, j, k)`` intensities.
        heatmap: ``(i, j, k)`` map in ``[0, 1]``.
        peak: the voxel to cut through (default: :func:`peak_index` of the map).
        title: figure title.
        spacing: voxel size per axis (for the aspect ratio); default isotropic.
        alpha: overlay weight.
        cmap: colormap.
    """
    vol, heat = to_display(volume), _as_array(heatmap)
    if vol.ndim != 3 or vol.shape != heat.shape:
        raise DataError(
            f"three_plane_figure: volume {vol.shape} and map {heat.shape} must be equal 3D shapes"
        )
    peak = tuple(peak) if peak is not None else peak_index(heat)
    sp = tuple(spacing) if spacing is not None else (1.0, 1.0, 1.0)
    fig = _new_figure(9.0, 3.4)
    axes = fig.subplots(1, 3, squeeze=False)[0]
    names = ("i", "j", "k")
    for axis, ax in enumerate(axes):
        rest = [a for a in range(3) if a != axis]
        _show(
            ax,
            _axis_slice(vol, axis, peak[axis]),
            _axis_slice(heat, axis, peak[axis]),
            alpha=alpha,
            cmap=cmap,
        )
        ax.invert_yaxis()
        ax.set_aspect(sp[rest[1]] / sp[rest[0]])
        ax.set_title(f"{names[axis]} = {peak[axis]}")
        ax.plot([peak[rest[0]]], [peak[rest[1]]], marker="+", color="white", markersize=10, mew=1.5)
    fig.suptitle(title or f"peak at voxel {peak}")
    return fig


def montage_figure(
    volume: Any,
    heatmap: Any,
    *,
    axis: int = -1,
    slices: int = 12,
    columns: int = 6,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
):
    """Evenly spaced slices along ``axis`` (the map's peak slice always included).

    Args:
        volume: ``(i, j, k)``.
        heatmap: ``(i, j, k)`` in ``[0, 1]``.
        axis: the slicing axis (default the last, ``k``).
        slices: number of slices shown (at most the axis length).
        columns: slices per row.
        title: figure title.
        alpha: overlay weight.
        cmap: colormap.
    """
    vol, heat = to_display(volume), _as_array(heatmap)
    if vol.ndim != 3 or vol.shape != heat.shape:
        raise DataError(
            f"montage_figure: volume {vol.shape} and map {heat.shape} must be equal 3D shapes"
        )
    axis = axis % 3
    length = vol.shape[axis]
    count = max(1, min(int(slices), length))
    index = np.unique(np.linspace(0, length - 1, count).round().astype(int)).tolist()
    peak = peak_index(heat)[axis]
    if peak not in index:
        nearest = min(range(len(index)), key=lambda i: abs(index[i] - peak))
        index[nearest] = peak
        index = sorted(set(index))
    cols = max(1, min(columns, len(index)))
    rows = -(-len(index) // cols)
    fig = _new_figure(1.7 * cols, 1.8 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, idx in zip(axes, index):
        _show(ax, _axis_slice(vol, axis, idx), _axis_slice(heat, axis, idx), alpha=alpha, cmap=cmap)
        ax.invert_yaxis()
        ax.set_title(f"{'ijk'[axis]}={idx}" + (" (peak)" if idx == peak else ""), fontsize=8)
    for ax in axes[len(index) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig
