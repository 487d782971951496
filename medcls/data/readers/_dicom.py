"""DICOM single files, multi-frame files and series folders through pydicom.

Compressed transfer syntaxes are decoded by the pydicom plugins medcls depends on:
pylibjpeg with pylibjpeg-libjpeg (JPEG baseline/extended/lossless, JPEG-LS),
pylibjpeg-openjpeg (JPEG 2000, HTJ2K) and pylibjpeg-rle (RLE; pydicom also has its own).

Values are real-world values: the modality LUT (RescaleSlope/RescaleIntercept, or a
Modality LUT Sequence) is applied, so CT is in Hounsfield units. ``MONOCHROME1`` images
(where low values display white) are inverted into the ``MONOCHROME2`` convention as
``lo + hi - value``, where ``lo..hi`` is the range the stored bits can hold after the
modality LUT; the window centre in ``meta`` is mirrored the same way. Colour images
(RGB, YBR_*, PALETTE COLOR) are returned as RGB, 3 channels.

Geometry: a single-frame file is a 2D image ``(C, rows, columns)`` whose spacing is
(row spacing, column spacing) from PixelSpacing (or ImagerPixelSpacing); its
ImagePositionPatient/ImageOrientationPatient are kept in ``meta``. A multi-frame file or
a series folder is a 3D volume ``(C, i, j, k)`` = (column, row, slice), slices sorted by
their position projected on the slice normal (ImageOrientationPatient row x column
direction), never by file name, and an affine from voxel index to RAS+ mm: the voxel
(i, j, k) lies where DICOM puts it (the same world point dcm2niix's NIfTI gives; unlike
dcm2niix, rows are not flipped, so the affine differs from its by that flip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcls.data.readers._core import (
    LPS_TO_RAS,
    Image,
    has_dicm_preamble,
    library_errors,
    precision_issues,
)
from medcls.errors import DataError

__all__ = ["read_dicom_file", "read_dicom_series"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# transfer syntax UID -> the medcls dependencies whose pydicom plugin decodes it
_LIBJPEG = "pylibjpeg and pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg and pylibjpeg-openjpeg"
_PLUGIN_PACKAGES = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG Extended (Process 2 and 4)
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": _LIBJPEG,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": _LIBJPEG,  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",  # RLE Lossless
}

# slice geometry tolerances
_ORIENTATION_TOL = 1e-3  # direction cosines
_DUPLICATE_TOL_MM = 0.01
_GAP_FACTOR = 1.5  # a step this many times the smallest one means a missing slice
_IRREGULAR_REL = 0.05


# --------------------------------------------------------------------------- reading


def _dcmread(path: Path) -> Any:
    """Read a DICOM dataset; a file without the preamble is tried with ``force``."""
    import pydicom
    from pydicom import uid

    with library_errors(path, "DICOM file"):
        if has_dicm_preamble(path):
            ds = pydicom.dcmread(path)
        else:
            ds = pydicom.dcmread(path, force=True)
            if "Rows" not in ds or not any(k in ds for k in _PIXEL_KEYWORDS):
                raise DataError(
                    "not a DICOM image: no 'DICM' preamble and no readable image header",
                    path=str(path),
                )
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                uid.ImplicitVRLittleEndian
                if implicit
                else uid.ExplicitVRLittleEndian
                if little
                else uid.ExplicitVRBigEndian
            )
    return ds


def _has_pixels(ds: Any) -> bool:
    return any(k in ds for k in _PIXEL_KEYWORDS)


def _n_frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _require_decoder(ds: Any, path: Path) -> None:
    """Raise a `DataError` naming the package to install if no plugin decodes ``ds``."""
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as e:
        raise DataError(
            f"pixel data in transfer syntax {ts.name} ({ts}) cannot be decoded by pydicom; "
            "convert the file to an uncompressed or JPEG/JPEG 2000/RLE transfer syntax",
            path=str(path),
        ) from e
    if not decoder.is_available:
        packages = _PLUGIN_PACKAGES.get(str(ts), "a pydicom pixel-data decoder plugin")
        missing = "; ".join(decoder.missing_dependencies)
        raise DataError(
            f"cannot decode pixel data compressed with {ts.name} ({ts}): no decoder plugin "
            f"is available; install {packages} (medcls dependencies: "
            f"pip install {packages.replace(' and ', ' ')})"
            + (f" [pydicom reports: {missing}]" if missing else ""),
            path=str(path),
        )


def _decode(ds: Any, path: Path) -> np.ndarray:
    """Decode the pixel data of ``ds`` to ``(frames, rows, columns, samples)``."""
    from pydicom.pixels import apply_color_lut, pixel_array

    if not _has_pixels(ds):
        sop = ds.get("SOPClassUID")
        raise DataError(
            f"DICOM object has no pixel data (SOP class {getattr(sop, 'name', sop)}); "
            "expected an image",
            path=str(path),
        )
    _require_decoder(ds, path)
    ts = ds.file_meta.TransferSyntaxUID
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    with library_errors(
        path,
        f"DICOM pixel data ({ts.name})",
        "the pixel data is corrupt or truncated, or the decoder failed on it",
    ):
        arr = pixel_array(ds)
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        samples = 3 if photometric == "PALETTE COLOR" else int(ds.get("SamplesPerPixel", 1) or 1)
        arr = arr.reshape(_n_frames(ds), int(ds.Rows), int(ds.Columns), samples)
    return arr


# ------------------------------------------------------------------ per-frame values


def _num(value: Any, default: float | None = None) -> float | None:
    """First number of a DICOM value (``MultiValue`` or scalar), ``default`` if empty."""
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return default
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _vector(value: Any, n: int) -> np.ndarray | None:
    """A DICOM multi-value of ``n`` numbers as float64, None if absent or malformed."""
    if value is None or value == "":
        return None
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _group_value(groups: tuple[Any, ...], sequence: str, keyword: str) -> Any:
    """Value of ``keyword`` in the first functional group (per-frame, shared) that has it."""
    for group in groups:
        if group is None:
            continue
        seq = group.get(sequence)
        if seq and keyword in seq[0] and seq[0][keyword].value not in (None, ""):
            return seq[0][keyword].value
    return None


def _frame_groups(ds: Any, index: int) -> tuple[Any, ...]:
    """(per-frame item, shared item) of an enhanced multi-frame object, None if absent."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    return (
        per_frame[index] if per_frame and index < len(per_frame) else None,
        shared[0] if shared else None,
    )


def _rescale(ds: Any, groups: tuple[Any, ...]) -> tuple[float, float] | None:
    """(slope, intercept) for one frame, None when there is no rescale at all."""
    slope = _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and intercept is None:
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        return None
    return _num(slope, 1.0) or 1.0, _num(intercept, 0.0) or 0.0


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _real_world(
    stored: np.ndarray, ds: Any, groups: tuple[Any, ...]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the modality LUT and MONOCHROME1 inversion to one ``(R, C, S)`` frame."""
    from pydicom.pixels import apply_modality_lut

    notes: dict[str, Any] = {}
    if stored.shape[-1] != 1 or stored.dtype.kind == "f":
        return stored.astype(np.float64), notes  # colour and float data: no modality LUT
    rescale = _rescale(ds, groups)
    lo_hi = np.asarray(_stored_range(ds), dtype=np.float64)
    if rescale is not None:
        slope, intercept = rescale
        values = stored.astype(np.float64) * slope + intercept
        lo_hi = lo_hi * slope + intercept
        notes.update(rescale_slope=slope, rescale_intercept=intercept)
    elif ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(stored, ds).astype(np.float64)
        lo_hi = apply_modality_lut(lo_hi.astype(stored.dtype), ds).astype(np.float64)
        notes["modality_lut"] = True
    else:
        values = stored.astype(np.float64)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        total = float(lo_hi.min() + lo_hi.max())
        values = total - values
        notes["monochrome1_inverted"] = True
        notes["inversion_sum"] = total
    return values, notes


@dataclass
class _Slice:
    """One 2D frame with what is needed to place it in a volume."""

    pixels: np.ndarray  # (rows, columns, samples), real-world values
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    thickness: float | None
    label: str  # file name or "frame n", for messages


def _pixel_spacing(ds: Any, groups: tuple[Any, ...]) -> tuple[tuple[float, float] | None, str]:
    value = _group_value(groups, "PixelMeasuresSequence", "PixelSpacing")
    source = "PixelMeasuresSequence"
    if value is None:
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            if ds.get(keyword) not in (None, ""):
                value, source = ds.get(keyword), keyword
                break
    vec = _vector(value, 2)
    if vec is None or (vec <= 0).any():
        return None, "none"
    return (float(vec[0]), float(vec[1])), source


def _make_slice(
    ds: Any, stored: np.ndarray, groups: tuple[Any, ...], label: str
) -> tuple[_Slice, dict[str, Any]]:
    pixels, notes = _real_world(stored, ds, groups)
    position = _vector(
        _group_value(groups, "PlanePositionSequence", "ImagePositionPatient")
        or ds.get("ImagePositionPatient"),
        3,
    )
    orientation = _vector(
        _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        or ds.get("ImageOrientationPatient"),
        6,
    )
    spacing, source = _pixel_spacing(ds, groups)
    notes["pixel_spacing_source"] = source
    thickness = _num(
        _group_value(groups, "PixelMeasuresSequence", "SliceThickness") or ds.get("SliceThickness")
    )
    return _Slice(pixels, position, orientation, spacing, thickness, label), notes


# ------------------------------------------------------------------ volume assembly


def _unit_directions(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row_dir, col_dir = orientation[:3], orientation[3:]
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    return row_dir, col_dir, normal / np.linalg.norm(normal)


def _check_same(slices: list[_Slice], where: Path, kind: str) -> tuple[float, float]:
    """Check that all slices share size and pixel spacing; return (row, column) spacing."""
    first = slices[0]
    for s in slices[1:]:
        if s.pixels.shape != first.pixels.shape:
            raise DataError(
                f"{kind}s differ in size: {first.label} has (rows, columns, samples) "
                f"{first.pixels.shape} but {s.label} has {s.pixels.shape}; expected one stack",
                path=str(where),
            )
    spacings = [s.pixel_spacing for s in slices]
    if any(sp is None for sp in spacings):
        return (1.0, 1.0) if first.pixel_spacing is None else first.pixel_spacing
    ref = np.asarray(first.pixel_spacing)
    for s in slices[1:]:
        if not np.allclose(s.pixel_spacing, ref, rtol=1e-4, atol=1e-6):
            raise DataError(
                f"{kind}s differ in pixel spacing: {first.label} has {tuple(ref)} mm but "
                f"{s.label} has {s.pixel_spacing} mm; expected one stack",
                path=str(where),
            )
    return float(ref[0]), float(ref[1])


def _stack(slices: list[_Slice]) -> np.ndarray:
    """(K, R, C, S) slices -> ``(S, C, R, K)``: channels, then (column, row, slice)."""
    return np.stack([s.pixels for s in slices]).transpose(3, 2, 1, 0)


def _lps_affine(
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    step: np.ndarray,
    origin: np.ndarray,
    pixel_spacing: tuple[float, float],
) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]  # i: along a row (column index), column spacing
    lps[:3, 1] = col_dir * pixel_spacing[0]  # j: down a column (row index), row spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def _assemble_by_position(
    slices: list[_Slice], where: Path, kind: str
) -> tuple[np.ndarray, tuple[float, ...], np.ndarray, dict[str, Any]]:
    """Sort slices along their normal, check spacing, build array, spacing and affine."""
    pixel_spacing = _check_same(slices, where, kind)
    first = slices[0]
    for s in slices[1:]:
        if np.abs(s.orientation - first.orientation).max() > _ORIENTATION_TOL:
            raise DataError(
                f"{kind}s have different orientations (ImageOrientationPatient): "
                f"{first.label} {np.round(first.orientation, 4).tolist()} vs {s.label} "
                f"{np.round(s.orientation, 4).tolist()}; expected one stack of parallel "
                f"{kind}s",
                path=str(where),
            )
    row_dir, col_dir, normal = _unit_directions(first.orientation)
    along = np.asarray([float(s.position @ normal) for s in slices])
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along = along[order]
    n = len(slices)
    if n > 1:
        steps = np.diff(along)
        positive = steps[steps > _DUPLICATE_TOL_MM]
        nominal = float(positive.min()) if positive.size else 0.0
        dup_tol = max(_DUPLICATE_TOL_MM, 0.05 * nominal)
        duplicates = np.flatnonzero(steps <= dup_tol)
        if duplicates.size:
            k = int(duplicates[0])
            raise DataError(
                f"duplicated {kind} position: {slices[k].label} and {slices[k + 1].label} "
                f"are both at {along[k]:.3f} mm along the {kind} normal"
                + (f" ({duplicates.size} duplicates in all)" if duplicates.size > 1 else "")
                + "; expected one image per position (a repeated file, or a multi-echo/4D "
                "series that must be split)",
                path=str(where),
            )
        gaps = np.flatnonzero(steps > _GAP_FACTOR * nominal)
        if gaps.size:
            k = int(gaps[0])
            missing = max(round(steps[k] / nominal) - 1, 1)
            raise DataError(
                f"missing {kind}: a gap of {steps[k]:.3f} mm between {slices[k].label} "
                f"(at {along[k]:.3f} mm) and {slices[k + 1].label} (at {along[k + 1]:.3f} mm) "
                f"along the {kind} normal where the spacing is {nominal:.3f} mm (about "
                f"{missing} {kind}(s) missing; {n} found)",
                path=str(where),
            )
        irregular = np.flatnonzero(np.abs(steps - nominal) > _IRREGULAR_REL * nominal)
        if irregular.size:
            k = int(irregular[0])
            raise DataError(
                f"irregular {kind} spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm "
                f"(e.g. {steps[k]:.3f} mm between {slices[k].label} and {slices[k + 1].label}); "
                "expected uniform spacing",
                path=str(where),
            )
        step = (slices[-1].position - slices[0].position) / (n - 1)
    else:
        step = normal * (first.thickness or 1.0)
    affine = _lps_affine(row_dir, col_dir, step, slices[0].position, pixel_spacing)
    spacing = (pixel_spacing[1], pixel_spacing[0], float(np.linalg.norm(step)))
    notes = {
        "slice_positions": [float(a) for a in along],
        "order": [int(i) for i in order],
        "axis_order": "ijk",
    }
    return _stack(slices), spacing, affine, notes


def _assemble_in_order(
    slices: list[_Slice],
    where: Path,
    kind: str,
    origin: np.ndarray | None,
    orientation: np.ndarray | None,
    step_mm: float,
) -> tuple[np.ndarray, tuple[float, ...], np.ndarray, dict[str, Any]]:
    """Stack frames in stored order (no per-frame positions)."""
    pixel_spacing = _check_same(slices, where, kind)
    spacing = (pixel_spacing[1], pixel_spacing[0], step_mm)
    if origin is not None and orientation is not None:
        row_dir, col_dir, normal = _unit_directions(orientation)
        affine = _lps_affine(row_dir, col_dir, normal * step_mm, origin, pixel_spacing)
    else:
        affine = np.diag([*spacing, 1.0])
    notes = {"order": list(range(len(slices))), "axis_order": "ijk"}
    return _stack(slices), spacing, affine, notes


# ------------------------------------------------------------------------ metadata


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or str(value) == "" else str(value)


def _dicom_meta(
    ds: Any, stored_dtype: np.dtype, notes: dict[str, Any], stored_issues: list[str]
) -> dict[str, Any]:
    ts = ds.file_meta.TransferSyntaxUID
    meta: dict[str, Any] = {
        "format": "dicom",
        "modality": _text(ds, "Modality"),
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "series_description": _text(ds, "SeriesDescription"),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "transfer_syntax": ts.name,
        "transfer_syntax_uid": str(ts),
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
        "original_dtype": str(stored_dtype),
        "number_of_frames": _n_frames(ds),
        "rescale_type": _text(ds, "RescaleType"),
        "window_center": _num(ds.get("WindowCenter")),
        "window_width": _num(ds.get("WindowWidth")),
    }
    meta.update({k: v for k, v in notes.items() if k != "inversion_sum"})
    meta["issues"] = list(stored_issues)
    if notes.get("monochrome1_inverted") and meta["window_center"] is not None:
        meta["window_center"] = notes["inversion_sum"] - meta["window_center"]
    if ds.get("DoseGridScaling") not in (None, ""):
        meta["dose_grid_scaling"] = _num(ds.get("DoseGridScaling"))
    return meta


# ------------------------------------------------------------------------- readers


def read_dicom_file(path: Path) -> Image:
    """Read one DICOM file: a 2D image, or a 3D volume if it has several frames.

    Frames of an enhanced multi-frame object are placed by their per-frame positions
    (PlanePositionSequence); RT dose grids by GridFrameOffsetVector; other multi-frame
    objects (cine, NM) are stacked in stored order with SpacingBetweenSlices (or
    SliceThickness, else 1.0) as the frame spacing.

    Returns:
        Image ``(C, rows, columns)`` or ``(C, column, row, frame)``.

    Raises:
        DataError: not DICOM, no pixel data, corrupt or truncated pixel data, a
            missing decoder plugin (the transfer syntax and the package are named), or
            frames that do not form one evenly spaced stack.
    """
    ds = _dcmread(path)
    stored = _decode(ds, path)
    n = stored.shape[0]
    if n == 1:
        groups = _frame_groups(ds, 0)
        s, notes = _make_slice(ds, stored[0], groups, path.name)
        meta = _dicom_meta(ds, stored.dtype, notes, precision_issues(stored))
        meta["image_position_patient"] = None if s.position is None else s.position.tolist()
        meta["image_orientation_patient"] = (
            None if s.orientation is None else s.orientation.tolist()
        )
        spacing = s.pixel_spacing or (1.0, 1.0)
        return Image(
            array=s.pixels.transpose(2, 0, 1),
            spacing=spacing,
            affine=np.diag([*spacing, 1.0]),
            path=str(path),
            meta=meta,
        )
    slices: list[_Slice] = []
    frame_notes: list[dict[str, Any]] = []
    for index in range(n):
        s, notes = _make_slice(ds, stored[index], _frame_groups(ds, index), f"frame {index}")
        slices.append(s)
        frame_notes.append(notes)
    has_per_frame = "PerFrameFunctionalGroupsSequence" in ds and all(
        s.position is not None and s.orientation is not None for s in slices
    )
    offsets = ds.get("GridFrameOffsetVector")
    origin = _vector(ds.get("ImagePositionPatient"), 3)
    orientation = _vector(ds.get("ImageOrientationPatient"), 6)
    if (
        not has_per_frame
        and offsets
        and len(offsets) == n
        and origin is not None
        and orientation is not None
    ):
        normal = _unit_directions(orientation)[2]
        rel = np.asarray([float(o) for o in offsets]) - float(offsets[0])
        for s, r in zip(slices, rel):
            s.position = origin + r * normal
        has_per_frame = True
    if has_per_frame:
        array, spacing, affine, geo = _assemble_by_position(slices, path, "frame")
    else:
        step = _num(ds.get("SpacingBetweenSlices")) or _num(ds.get("SliceThickness")) or 1.0
        array, spacing, affine, geo = _assemble_in_order(
            slices, path, "frame", origin, orientation, abs(step)
        )
    order = geo.pop("order")
    meta = _dicom_meta(ds, stored.dtype, frame_notes[order[0]], precision_issues(stored))
    meta["frame_order"] = order  # stored frame index of each slice k
    meta.update(geo)
    return Image(array=array, spacing=spacing, affine=affine, path=str(path), meta=meta)


def read_dicom_series(folder: Path) -> Image:
    """Read a folder holding one DICOM series as a 3D volume ``(C, column, row, slice)``.

    Files are DICOM if they have the ``DICM`` preamble or the ``.dcm`` suffix; other
    files, ``DICOMDIR`` and DICOM objects without pixel data (reports, presentation
    states) are skipped and listed in ``meta["skipped_files"]``. Subfolders are not
    searched. Slices are sorted by position along the slice normal; a folder with one
    multi-frame file is read as that file.

    Returns:
        Image with the RAS+ affine of the stack; ``meta["files"]`` lists the files in
        slice order and ``meta["slice_positions"]`` their positions along the normal (mm).

    Raises:
        DataError: no DICOM image in the folder; several series (their UIDs, file counts
            and descriptions are listed); a corrupt file (named); slices of different
            size, spacing or orientation; a duplicated position or a missing slice (the
            files and positions are named); slices without position when there are
            several.
    """
    entries = sorted(folder.iterdir())
    skipped: list[str] = []
    datasets: list[tuple[Path, Any]] = []
    for p in entries:
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.name.upper() == "DICOMDIR" or not (has_dicm_preamble(p) or p.suffix.lower() == ".dcm"):
            skipped.append(p.name)
            continue
        if p.stat().st_size == 0:
            raise DataError("DICOM file is empty (0 bytes)", path=str(p))
        ds = _dcmread(p)
        if not _has_pixels(ds) or str(ds.get("SOPClassUID", "")) == _DICOMDIR_SOP_CLASS:
            skipped.append(p.name)
            continue
        datasets.append((p, ds))
    if not datasets:
        subfolders = [p.name for p in entries if p.is_dir()]
        raise DataError(
            f"folder holds no DICOM image ({len(entries)} entries); expected the files of one "
            "DICOM series"
            + (
                f"; it has subfolders {subfolders[:5]}: pass a series folder itself"
                if subfolders
                else ""
            ),
            path=str(folder),
        )
    series: dict[str, list[tuple[Path, Any]]] = {}
    for p, ds in datasets:
        series.setdefault(_text(ds, "SeriesInstanceUID") or "<no SeriesInstanceUID>", []).append(
            (p, ds)
        )
    if len(series) > 1:
        listing = "; ".join(
            f"{uid} ({len(items)} file(s)"
            + (
                f", {_text(items[0][1], 'SeriesDescription')!r}"
                if _text(items[0][1], "SeriesDescription")
                else ""
            )
            + ")"
            for uid, items in series.items()
        )
        raise DataError(
            f"folder holds {len(series)} DICOM series, expected one: {listing}; put each "
            "series in its own folder",
            path=str(folder),
        )
    multi = [p for p, ds in datasets if _n_frames(ds) > 1]
    if multi:
        if len(datasets) == 1:
            image = read_dicom_file(multi[0])
            image.meta["files"] = [multi[0].name]
            image.meta["skipped_files"] = skipped
            return image
        raise DataError(
            f"series mixes {len(multi)} multi-frame file(s) (e.g. {multi[0].name}) with "
            f"{len(datasets) - len(multi)} other file(s); expected single-frame slices or "
            "one multi-frame file",
            path=str(folder),
        )
    slices: list[_Slice] = []
    slice_notes: list[dict[str, Any]] = []
    dtype = None
    issues: list[str] = []
    for p, ds in datasets:
        stored = _decode(ds, p)
        dtype = stored.dtype
        issues.extend(f"{p.name}: {issue}" for issue in precision_issues(stored))
        s, notes = _make_slice(ds, stored[0], (None, None), p.name)
        slices.append(s)
        slice_notes.append(notes)
    unplaced = [s.label for s in slices if s.position is None or s.orientation is None]
    if unplaced and len(slices) > 1:
        raise DataError(
            f"cannot order {len(slices)} slices by position: {unplaced[0]}"
            + (f" and {len(unplaced) - 1} more" if len(unplaced) > 1 else "")
            + " lack ImagePositionPatient/ImageOrientationPatient",
            path=str(folder),
        )
    if unplaced:
        ds = datasets[0][1]
        step = _num(ds.get("SpacingBetweenSlices")) or _num(ds.get("SliceThickness")) or 1.0
        array, spacing, affine, geo = _assemble_in_order(
            slices, folder, "slice", None, None, abs(step)
        )
    else:
        array, spacing, affine, geo = _assemble_by_position(slices, folder, "slice")
    order = geo.pop("order")
    first = order[0]
    meta = _dicom_meta(datasets[first][1], dtype, slice_notes[first], issues)
    meta.update(geo)
    meta["format"] = "dicom-series"
    meta["files"] = [datasets[i][0].name for i in order]  # file of each slice k
    meta["skipped_files"] = skipped
    return Image(array=array, spacing=spacing, affine=affine, path=str(folder), meta=meta)
