"""Image readers for medical formats: one call, one layout, errors that name the file.

>>> image = read_image("scan/")            # a DICOM series folder
>>> image.array.shape, image.spacing        # (1, 512, 512, 120), (0.7, 0.7, 2.5)

Every reader returns an :class:`Image` whose ``array`` is float32 and channel-first:
``(C, H, W)`` (rows x columns) for 2D, ``(C, i, j, k)`` for 3D in the voxel index order of
``affine`` (for DICOM, NIfTI, NRRD and MHA: column/x, row/y, slice/z), with a voxel ->
RAS+ mm affine (the NIfTI convention). Grayscale gives ``C = 1``, colour ``C = 3``.
Intensities are not normalised (16-bit stays 0..65535, CT is in Hounsfield units).

Formats, by suffix (case-insensitive):

==========================  ============================================================
``.png .jpg .jpeg .bmp``    Pillow; 8/16-bit, gray or RGB (alpha dropped); spacing 1.0
``.tif .tiff``              Pillow; a multi-page TIFF of equal pages is a 3D volume
``.dcm`` / ``DICM`` files   pydicom; rescale applied; MONOCHROME1 inverted; multi-frame
                            is 3D; JPEG, JPEG-LS, JPEG 2000 and RLE via pylibjpeg plugins
folder                      one DICOM series, sorted by slice position (not file name)
``.nii .nii.gz``            nibabel; affine kept; 4D ``(X, Y, Z, C)`` -> channels
``.nrrd .nhdr .mha .mhd``   SimpleITK; LPS geometry converted to the RAS+ affine
``.npy``                    raw ``(H, W)`` or ``(D, H, W)``: a channel axis is added
``.npz``                    key ``image``: channel-first; optional ``spacing``, ``affine``
==========================  ============================================================

Bad input raises :class:`medcls.errors.DataError` naming the file and the problem:
corrupt or truncated files, empty images, NaN/Inf values, a DICOM series with a missing
or duplicated slice, several series in one folder, a compressed DICOM whose decoder
plugin is missing (the transfer syntax and the package to install are named).
Warning-level findings (a constant image) are listed in ``meta["issues"]``.
"""

from __future__ import annotations

from medcls.data.readers._core import (
    Image,
    ReaderFn,
    check_array,
    read_image,
    register_reader,
    supported_suffixes,
)
from medcls.data.readers._dicom import read_dicom_file, read_dicom_series
from medcls.data.readers._numpy import read_npy, read_npz
from medcls.data.readers._raster import read_raster
from medcls.data.readers._volume import read_itk, read_nifti

__all__ = [
    "Image",
    "ReaderFn",
    "check_array",
    "read_dicom_file",
    "read_dicom_series",
    "read_image",
    "register_reader",
    "supported_suffixes",
]

register_reader((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"), read_raster)
register_reader(".dcm", read_dicom_file)
register_reader((".nii", ".nii.gz"), read_nifti)
register_reader((".nrrd", ".nhdr", ".mha", ".mhd"), read_itk)
register_reader(".npy", read_npy)
register_reader(".npz", read_npz)
