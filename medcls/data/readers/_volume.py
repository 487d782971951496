"""NIfTI through nibabel; NRRD and MetaImage (MHA/MHD) through SimpleITK.

Both give 3D arrays in voxel index order (i, j, k) = (x, y, z) and a voxel -> RAS+ mm
affine. SimpleITK works in LPS+ (DICOM patient coordinates), so its direction, origin and
spacing are turned into the same RAS+ affine nibabel reads from a NIfTI header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medcls.data.readers._core import LPS_TO_RAS, Image, library_errors
from medcls.errors import DataError

__all__ = ["read_itk", "read_nifti"]

# NIfTI xyzt spatial units -> factor to mm
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def read_nifti(path: Path) -> Image:
    """Read a NIfTI-1/NIfTI-2 file (``.nii`` or ``.nii.gz``).

    The array keeps nibabel's voxel order (i, j, k) and the header's scaling
    (``scl_slope``/``scl_inter``); the affine is nibabel's (sform if set, else qform),
    converted to mm if the header gives metres or microns. A 2D file gets a
    single-voxel k axis; a 4D file ``(X, Y, Z, C)`` has its last axis as channels; a 5D
    file ``(X, Y, Z, 1, C)`` (NIfTI vector data) has its fifth.

    Returns:
        Image with array ``(C, i, j, k)``, spacing from the affine's column norms.

    Raises:
        DataError: corrupt/truncated file, or a shape or data type medcls cannot use.
    """
    import nibabel as nib

    what = "NIfTI file"
    with library_errors(path, what):
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise DataError(
                f"nibabel read a {type(img).__name__}; expected a NIfTI-1 or NIfTI-2 image",
                path=str(path),
            )
        dtype = img.get_data_dtype()
        if dtype.fields is not None:
            raise DataError(
                f"NIfTI data type {dtype} (RGB or structured voxels) is not supported; "
                "store colour channels along the 4th axis instead",
                path=str(path),
            )
        data = img.get_fdata(dtype=np.float32)
        affine = np.array(img.affine, dtype=np.float64)
        unit = img.header.get_xyzt_units()[0]
    shape = data.shape
    if data.ndim == 2:
        array = data[None, :, :, None]
    elif data.ndim == 3:
        array = data[None]
    elif data.ndim == 4:
        array = np.moveaxis(data, 3, 0)
    elif data.ndim == 5 and shape[3] == 1:
        array = np.moveaxis(data[:, :, :, 0, :], 3, 0)
    else:
        raise DataError(
            f"NIfTI image of shape {shape}; expected (X, Y[, Z]), (X, Y, Z, C) or (X, Y, Z, 1, C)",
            path=str(path),
        )
    factor = _UNIT_TO_MM.get(unit, 1.0)
    affine[:3, :] *= factor
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    meta: dict[str, Any] = {
        "format": "nifti",
        "original_dtype": str(dtype),
        "original_shape": tuple(int(n) for n in shape),
        "spatial_unit": unit,
        "sform_code": int(img.header["sform_code"]),
        "qform_code": int(img.header["qform_code"]),
        "axis_order": "ijk",
    }
    return Image(array=array, spacing=spacing, affine=affine, path=str(path), meta=meta)


def read_itk(path: Path) -> Image:
    """Read NRRD (``.nrrd``/``.nhdr``) or MetaImage (``.mha``/``.mhd``) with SimpleITK.

    A 3D image becomes ``(C, i, j, k)`` with the ITK (LPS+) geometry converted to a RAS+
    affine, so the world position of a voxel matches what a NIfTI of the same data
    gives. A 2D image becomes ``(C, rows, columns)`` with a diagonal affine (its ITK
    origin and direction are kept in ``meta``). Multi-component pixels are channels.

    Raises:
        DataError: corrupt/truncated file, missing detached data file, or an image
            that is not 2D or 3D.
    """
    import SimpleITK as sitk

    what = f"{path.suffix.lstrip('.').upper()} image"
    with library_errors(path, what):
        img = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(img)  # (z, y, x[, comp]) or (y, x[, comp])
    dims = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() == 1:
        data = data[..., None]
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dims, dims)
    meta: dict[str, Any] = {
        "format": path.suffix.lstrip(".").lower(),
        "original_dtype": str(data.dtype),
        "pixel_type": img.GetPixelIDTypeAsString(),
        "origin_lps": tuple(float(v) for v in origin),
        "direction_lps": tuple(float(v) for v in direction.ravel()),
    }
    if dims == 2:
        array = data.transpose(2, 0, 1)  # (C, y, x): rows x columns
        row_col = (float(spacing[1]), float(spacing[0]))
        return Image(
            array=array, spacing=row_col, affine=np.diag([*row_col, 1.0]), path=str(path), meta=meta
        )
    if dims != 3:
        raise DataError(
            f"{dims}D image of size {img.GetSize()}; expected a 2D or 3D image "
            "(vector pixels are read as channels)",
            path=str(path),
        )
    array = data.transpose(3, 2, 1, 0)  # (C, x, y, z)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = origin
    meta["axis_order"] = "ijk"
    return Image(
        array=array,
        spacing=tuple(float(s) for s in spacing),
        affine=LPS_TO_RAS @ lps,
        path=str(path),
        meta=meta,
    )
