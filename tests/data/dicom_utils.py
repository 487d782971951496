"""Write small, valid DICOM files and series for tests (pydicom only, no bundled data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = ["axial_positions", "make_enhanced_ct", "make_slice", "write_series"]


def make_slice(
    stored: np.ndarray,
    *,
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing: Sequence[float] | None = (0.5, 0.75),
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance_number: int = 1,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slice_thickness: float = 2.5,
    window: tuple[float, float] | None = (40.0, 400.0),
    series_description: str = "test series",
) -> Dataset:
    """A single-frame image dataset with file meta, ready for ``save_as``.

    Args:
        stored: ``(rows, columns)`` stored values, uint8/uint16/int16.
        position, orientation, pixel_spacing: ImagePositionPatient,
            ImageOrientationPatient, PixelSpacing (row spacing, column spacing); None
            leaves the tag out.
        slope, intercept: RescaleSlope/RescaleIntercept; None leaves them out.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesDescription = series_description
    ds.Modality = modality
    ds.PatientID = "TEST"
    ds.InstanceNumber = instance_number
    ds.SliceThickness = slice_thickness
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    stored = np.ascontiguousarray(stored)
    bits = bits_stored or stored.dtype.itemsize * 8
    ds.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=bits)
    return ds


def axial_positions(
    n: int,
    *,
    origin: Sequence[float] = (-10.0, 20.0, 30.0),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    step: float = 2.5,
) -> np.ndarray:
    """``(n, 3)`` ImagePositionPatient values ``origin + k * step * normal``."""
    o = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    return np.asarray(origin, dtype=np.float64) + np.arange(n)[:, None] * step * normal


def write_series(
    folder: Path,
    stored: np.ndarray,
    positions: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    series_uid: str | None = None,
    **slice_kwargs: object,
) -> list[Path]:
    """Write ``stored[k]`` (``(K, rows, columns)``) at ``positions[k]``, one file each.

    Returns:
        The written paths, in slice order (``paths[k]`` holds slice ``k``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    paths = []
    for k in range(stored.shape[0]):
        ds = make_slice(
            stored[k], position=positions[k], series_uid=uid, instance_number=k + 1, **slice_kwargs
        )
        path = folder / (names[k] if names is not None else f"slice{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_enhanced_ct(
    stored: np.ndarray,
    positions: np.ndarray,
    *,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing: Sequence[float] = (0.5, 0.75),
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Dataset:
    """An Enhanced CT multi-frame dataset: frame ``f`` (``stored[f]``) at ``positions[f]``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [float(v) for v in orientation]
    shared.PlaneOrientationSequence = [orient]
    measures = Dataset()
    measures.PixelSpacing = [float(v) for v in pixel_spacing]
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = [measures]
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = intercept
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for pos in positions:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [float(v) for v in pos]
        item.PlanePositionSequence = [plane]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    stored = np.ascontiguousarray(stored)
    ds.set_pixel_data(
        stored, photometric_interpretation="MONOCHROME2", bits_stored=stored.dtype.itemsize * 8
    )
    return ds
