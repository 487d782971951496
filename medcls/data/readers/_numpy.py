"""NumPy files: ``.npy`` holds a raw spatial array, ``.npz`` a channel-first one.

How to state the layout:

* ``.npy``: an array **without** a channel axis, ``(H, W)`` (2D) or ``(D, H, W)``-style
  (3D, axes kept in stored order); a channel axis is added (C = 1).
* ``.npz``: key ``image`` holds a **channel-first** array ``(C, H, W)`` or
  ``(C, *spatial)`` with three spatial axes; optional keys ``spacing`` (one value per
  spatial axis, mm) and ``affine`` (``(D+1, D+1)``, voxel index -> world mm). Write it
  with ``np.savez(path, image=array, spacing=...)``.

Pickled object arrays are refused (``allow_pickle=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medcls.data.readers._core import Image, library_errors
from medcls.errors import DataError

__all__ = ["read_npy", "read_npz"]


def read_npy(path: Path) -> Image:
    """Read a ``.npy`` array ``(H, W)`` or ``(D, H, W)`` (no channel axis).

    Returns:
        Image with array ``(1, H, W)`` or ``(1, D, H, W)``, spacing 1.0, identity affine.

    Raises:
        DataError: corrupt/truncated file, pickled objects, or another number of axes.
    """
    with library_errors(path, "NumPy .npy file"):
        data = np.load(path, allow_pickle=False)
    if data.ndim not in (2, 3):
        raise DataError(
            f".npy array of shape {data.shape}; expected (H, W) or (D, H, W) without a "
            "channel axis (save channel-first arrays in a .npz under the key 'image')",
            path=str(path),
        )
    dims = data.ndim
    meta: dict[str, Any] = {"format": "npy", "original_dtype": str(data.dtype), "issues": []}
    if dims == 3:
        meta["axis_order"] = "stored"
        if data.shape[-1] in (3, 4) and min(data.shape[:2]) > 4 * data.shape[-1]:
            meta["issues"].append(
                f"shape {data.shape} looks like a channels-last colour image but .npy "
                "arrays are read as (D, H, W) volumes; save (C, H, W) in a .npz as 'image'"
            )
    return Image(
        array=data[None],
        spacing=(1.0,) * dims,
        affine=np.eye(dims + 1),
        path=str(path),
        meta=meta,
    )


def read_npz(path: Path) -> Image:
    """Read a ``.npz`` archive with a channel-first ``image`` and optional geometry.

    Returns:
        Image with array ``(C, H, W)`` or ``(C, *spatial)``. Spacing comes from
        ``spacing``, else from the column norms of ``affine``, else 1.0; the affine from
        ``affine``, else a diagonal of the spacing.

    Raises:
        DataError: corrupt archive, no ``image`` key, wrong number of axes, or a
            ``spacing``/``affine`` of the wrong shape or disagreeing with each other.
    """
    with library_errors(path, "NumPy .npz archive"), np.load(path, allow_pickle=False) as z:
        keys = sorted(z.files)
        if "image" not in keys:
            raise DataError(
                f".npz archive has keys {keys}; expected a channel-first array under "
                "'image' (np.savez(path, image=array))",
                path=str(path),
            )
        data = z["image"]
        spacing_in = np.asarray(z["spacing"], dtype=np.float64) if "spacing" in keys else None
        affine_in = np.asarray(z["affine"], dtype=np.float64) if "affine" in keys else None
    if data.ndim not in (3, 4):
        raise DataError(
            f".npz 'image' has shape {data.shape}; expected channel-first (C, H, W) or "
            "(C, D, H, W)",
            path=str(path),
        )
    dims = data.ndim - 1
    if spacing_in is not None and spacing_in.shape != (dims,):
        raise DataError(
            f".npz 'spacing' has shape {spacing_in.shape}; expected ({dims},), one value per "
            "spatial axis of 'image'",
            path=str(path),
        )
    if affine_in is not None and affine_in.shape != (dims + 1, dims + 1):
        raise DataError(
            f".npz 'affine' has shape {affine_in.shape}; expected ({dims + 1}, {dims + 1}) "
            f"for a {dims}D image",
            path=str(path),
        )
    if affine_in is not None:
        norms = np.linalg.norm(affine_in[:dims, :dims], axis=0)
        if spacing_in is not None and not np.allclose(norms, spacing_in, rtol=1e-4, atol=1e-6):
            raise DataError(
                f".npz 'spacing' {spacing_in.tolist()} disagrees with the column norms of "
                f"'affine' {norms.tolist()}; give one of them or make them agree",
                path=str(path),
            )
        spacing = tuple(float(s) for s in norms)
        affine = affine_in
    else:
        spacing = tuple(float(s) for s in spacing_in) if spacing_in is not None else (1.0,) * dims
        affine = np.diag([*spacing, 1.0])
    meta: dict[str, Any] = {"format": "npz", "original_dtype": str(data.dtype)}
    if dims == 3:
        meta["axis_order"] = "stored"
    return Image(array=data, spacing=spacing, affine=affine, path=str(path), meta=meta)
