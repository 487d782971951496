"""The `Image` record, the suffix registry, dispatch and the checks every reader shares."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcls.errors import ConfigError, DataError, MedclsError

__all__ = [
    "Image",
    "ReaderFn",
    "check_array",
    "read_image",
    "register_reader",
    "supported_suffixes",
]

# values above this magnitude are not all representable in float32 (24-bit mantissa)
_FLOAT32_EXACT = 2**24

# (D+1, D+1) matrix that turns DICOM/ITK patient coordinates (LPS+) into NIfTI world (RAS+)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(eq=False)
class Image:
    """One image or volume as read from disk, before any transform.

    Attributes:
        array: float32, channel-first. 2D: ``(C, H, W)`` (rows x columns). 3D:
            ``(C, i, j, k)``, in the voxel index order of ``affine``; for DICOM, NIfTI,
            NRRD and MHA that is (column/x, row/y, slice/z).
        spacing: voxel size per spatial axis of ``array``, in mm (1.0 where the format
            has none).
        affine: ``(D+1, D+1)`` matrix from voxel index to world coordinates (RAS+ mm, the
            NIfTI convention) for 3D volumes; for 2D images a diagonal built from
            ``spacing`` (a 2D DICOM keeps its patient position and orientation in ``meta``).
        path: the file or folder that was read.
        meta: format-specific extras (``format``, ``original_dtype``, DICOM ``modality``,
            ``window_center``/``window_width``, ...) and ``issues``: warning-level findings
            (e.g. a constant image) that did not stop the read.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    path: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes: 2 for ``(C, H, W)``, 3 for ``(C, i, j, k)``."""
        return self.array.ndim - 1

    @property
    def in_chans(self) -> int:
        """Number of channels ``C`` (1 for grayscale, 3 for RGB)."""
        return int(self.array.shape[0])


ReaderFn = Callable[[Path], Image]

_READERS: dict[str, ReaderFn] = {}


def _normalise_suffix(suffix: str) -> str:
    if not isinstance(suffix, str) or not suffix.strip("."):
        raise ConfigError(
            f"register_reader: suffix {suffix!r} must be a non-empty string such as '.png'"
        )
    suffix = suffix.lower()
    return suffix if suffix.startswith(".") else "." + suffix


def register_reader(
    suffixes: str | Iterable[str], fn: ReaderFn, *, overwrite: bool = False
) -> None:
    """Register ``fn`` as the reader of files whose names end with ``suffixes``.

    Matching is case-insensitive and the longest registered suffix wins (``.nii.gz``
    before ``.gz``). The reader gets a :class:`~pathlib.Path` and returns an
    :class:`Image`; :func:`read_image` then converts its array to float32, validates its
    shapes and checks its values, so a reader only has to get the layout right.

    Args:
        suffixes: one suffix (``".png"``; the dot is optional) or several.
        fn: ``fn(path) -> Image``.
        overwrite: replace an existing reader of the same suffix instead of refusing.

    Raises:
        ConfigError: a suffix is empty, or already has a reader and ``overwrite`` is False.
    """
    if isinstance(suffixes, str):
        suffixes = [suffixes]
    if not callable(fn):
        raise ConfigError(f"register_reader: fn must be callable, got {type(fn).__name__}")
    normalised = [_normalise_suffix(s) for s in suffixes]
    if not normalised:
        raise ConfigError("register_reader: no suffix given")
    taken = [s for s in normalised if s in _READERS and _READERS[s] is not fn]
    if taken and not overwrite:
        raise ConfigError(
            f"register_reader: suffix(es) {', '.join(taken)} already have a reader; "
            "pass overwrite=True to replace it"
        )
    for s in normalised:
        _READERS[s] = fn


def supported_suffixes() -> tuple[str, ...]:
    """Return the registered file suffixes, sorted (folders are read as DICOM series)."""
    return tuple(sorted(_READERS))


def _find_reader(path: Path) -> ReaderFn | None:
    name = path.name.lower()
    for suffix in sorted(_READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return _READERS[suffix]
    return None


def has_dicm_preamble(path: Path) -> bool:
    """Whether ``path`` starts with the 128-byte DICOM preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


@contextlib.contextmanager
def library_errors(path: Path | str, what: str, reason: str | None = None) -> Iterator[None]:
    """Turn any exception a decoding library raises into a `DataError` naming ``path``.

    Args:
        path: the file being read.
        what: what was being read, in words (``"PNG image"``), used in the message.
        reason: the likely cause, in words; by default that the file is corrupt,
            truncated or not a valid ``what``.
    """
    try:
        yield
    except MedclsError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # a third-party library; any failure means an unreadable file
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = reason or f"the file is corrupt, truncated or not a valid {what}"
        raise DataError(
            f"cannot read {what}: {reason} ({type(e).__name__}{': ' + detail if detail else ''})",
            path=str(path),
        ) from e


def precision_issues(array: np.ndarray) -> list[str]:
    """Warn when integer values are too large for float32 to hold exactly (> 2**24)."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize < 4 or not array.size:
        return []
    peak = max(abs(int(array.min())), abs(int(array.max())))
    if peak <= _FLOAT32_EXACT:
        return []
    return [f"integer values up to {peak} exceed 2**24 and are rounded in float32"]


def to_float32(array: np.ndarray, path: Path | str) -> tuple[np.ndarray, list[str]]:
    """Convert a numeric array to float32, reporting integers float32 cannot hold exactly.

    Returns:
        The float32 array (same shape) and a list of warning-level issues.

    Raises:
        DataError: the array is not numeric (complex, strings, objects, records).
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"pixel data has dtype {array.dtype}; expected bool, integer or float values",
            path=str(path),
        )
    return np.ascontiguousarray(array, dtype=np.float32), precision_issues(array)


def check_array(array: np.ndarray, path: str | Path | None = None) -> list[str]:
    """Check pixel values; raise for unusable arrays, return warning-level issues.

    Args:
        array: any numeric array (typically an :attr:`Image.array`, ``(C, *spatial)``).
        path: the file it came from, named in errors.

    Returns:
        Warning-level issues, as sentences: a constant image (every value equal) is
        suspicious (a blank export, a wrong window) but can be legal, so it is reported
        here rather than raised. Empty list when nothing is suspicious.

    Raises:
        DataError: the array is empty (an axis of length 0), is not numeric, or holds NaN
            or infinite values (their counts and the index of the first are given).
    """
    path = None if path is None else str(path)
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"pixel data has dtype {array.dtype}; expected bool, integer or float values",
            path=path,
        )
    if array.size == 0:
        raise DataError(f"image is empty (array shape {array.shape})", path=path)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.isnan(array).sum())
            n_inf = int(array.size - int(finite.sum()) - n_nan)
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise DataError(
                f"{n_nan} NaN and {n_inf} infinite values among {array.size} "
                f"(first at index {first} of shape {array.shape}); expected finite intensities",
                path=path,
            )
    issues: list[str] = []
    lo, hi = array.min(), array.max()
    if lo == hi:
        issues.append(f"constant image: every value is {float(lo):g}")
    return issues


def _validate(image: Image, path: Path) -> Image:
    """Check the layout a reader returned and convert its array to contiguous float32."""
    if not isinstance(image, Image):
        raise DataError(
            f"the reader returned {type(image).__name__}; expected medcls Image", path=str(path)
        )
    array = np.asarray(image.array)
    if array.ndim not in (3, 4):
        raise DataError(
            f"reader returned an array of shape {array.shape}; expected channel-first "
            "(C, H, W) or (C, i, j, k)",
            path=str(path),
        )
    dims = array.ndim - 1
    spacing = tuple(float(s) for s in image.spacing)
    if len(spacing) != dims or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(
            f"voxel spacing {spacing} is invalid for a {dims}D image; expected {dims} "
            "positive finite values (mm)",
            path=str(path),
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    if affine.shape != (dims + 1, dims + 1) or not np.isfinite(affine).all():
        raise DataError(
            f"affine of shape {affine.shape} is invalid for a {dims}D image; expected a "
            f"finite ({dims + 1}, {dims + 1}) matrix",
            path=str(path),
        )
    array, issues = to_float32(array, path)
    meta = dict(image.meta)
    meta["issues"] = [*meta.get("issues", []), *issues]
    return Image(array=array, spacing=spacing, affine=affine, path=str(path), meta=meta)


def _as_spatial_dims(image: Image, spatial_dims: int) -> Image:
    """Return ``image`` with ``spatial_dims`` spatial axes, squeezing a one-slice volume."""
    if image.spatial_dims == spatial_dims:
        return image
    shape = tuple(image.array.shape[1:])
    if spatial_dims == 3:
        raise DataError(
            f"is a 2D image (spatial shape {shape}); expected a 3D volume "
            "(for DICOM, pass the series folder rather than one slice)",
            path=image.path,
        )
    single = [axis for axis, n in enumerate(shape) if n == 1]
    if len(single) != 1:
        raise DataError(
            f"is a 3D volume (spatial shape {shape}); expected a 2D image (a volume is read "
            "as 2D only when exactly one of its axes has a single voxel)",
            path=image.path,
        )
    axis = single[0]
    kept = [a for a in range(3) if a != axis]
    array = np.squeeze(image.array, axis=axis + 1)
    if image.meta.get("axis_order") == "ijk":
        # (column, row) index order -> (rows, columns), as the same slice reads in 2D
        kept = kept[::-1]
        array = array.transpose(0, 2, 1)
    array = np.ascontiguousarray(array)
    spacing = tuple(image.spacing[a] for a in kept)
    meta = dict(image.meta)
    meta["squeezed_axis"] = axis
    meta["world_affine"] = image.affine
    return Image(
        array=array,
        spacing=spacing,
        affine=np.diag([*spacing, 1.0]),
        path=image.path,
        meta=meta,
    )


def read_image(path: str | Path, *, spatial_dims: int | None = None) -> Image:
    """Read an image file or a DICOM series folder into an :class:`Image`.

    The reader is chosen by suffix, case-insensitively: ``.png .jpg .jpeg .bmp .tif
    .tiff`` (Pillow), ``.dcm`` (pydicom), ``.nii .nii.gz`` (nibabel), ``.nrrd .nhdr .mha
    .mhd`` (SimpleITK), ``.npy .npz`` and any suffix added with :func:`register_reader`.
    A file with another suffix (or none) is read as DICOM if it has the ``DICM``
    preamble; a folder is read as one DICOM series.

    Intensities are not normalised: 16-bit images stay 0..65535, CT is in Hounsfield
    units; normalisation is a transform's job.

    Args:
        path: the file or folder.
        spatial_dims: 2 or 3 to require that many spatial axes. A 2D file where 3D is
            expected raises; a 3D volume with exactly one single-voxel axis is squeezed to
            2D when 2 is asked for (its full affine goes to ``meta["world_affine"]``).

    Returns:
        The image, array float32 ``(C, H, W)`` or ``(C, i, j, k)``.

    Raises:
        ConfigError: ``spatial_dims`` is not None, 2 or 3.
        DataError: the path is missing, empty, of an unknown format, corrupt or
            truncated, holds NaN/Inf or no voxels, or has the wrong number of dimensions.
    """
    if spatial_dims is not None and spatial_dims not in (2, 3):
        raise ConfigError(f"read_image: spatial_dims must be 2, 3 or None, got {spatial_dims!r}")
    p = Path(path)
    if not p.exists():
        raise DataError("no such file or folder", path=str(p))
    if p.is_dir():
        from medcls.data.readers._dicom import read_dicom_series

        fn: ReaderFn | None = read_dicom_series
    else:
        if p.stat().st_size == 0:
            raise DataError("file is empty (0 bytes)", path=str(p))
        fn = _find_reader(p)
        if fn is None:
            if not has_dicm_preamble(p):
                raise DataError(
                    f"unknown image format {''.join(p.suffixes) or '(no suffix)'!r}; expected "
                    f"one of {', '.join(supported_suffixes())}, a DICOM file with the 'DICM' "
                    "preamble, or a DICOM series folder",
                    path=str(p),
                )
            from medcls.data.readers._dicom import read_dicom_file

            fn = read_dicom_file
    image = _validate(fn(p), p)
    image.meta["issues"].extend(check_array(image.array, p))
    if spatial_dims is not None:
        image = _as_spatial_dims(image, spatial_dims)
    return image
