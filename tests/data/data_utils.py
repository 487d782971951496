"""Tiny image files and manifests written by the data-layer tests."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "bad_dataset_2d",
    "bad_dataset_3d",
    "good_pngs",
    "write_manifest",
    "write_nifti",
    "write_png",
]


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a gray ``(H, W)`` uint8/uint16 array as PNG."""
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array).save(path)
    return path


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a ``(X, Y, Z)`` array with a voxel -> RAS mm affine (identity by default)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def write_manifest(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as a CSV manifest (columns: ``columns`` or the first row's keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or rows[0].keys())
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    return path


def good_pngs(root: Path, per_class: int = 10, size: int = 8) -> list[dict]:
    """``per_class`` distinct PNGs of classes ``a`` and ``b``, as manifest rows."""
    rows = []
    for k in range(2 * per_class):
        label = "ab"[k % 2]
        array = ((np.arange(size * size).reshape(size, size) + 7 * k) % 256).astype(np.uint8)
        write_png(root / f"good{k}.png", array)
        rows.append({"id": f"g{k}", "image": f"good{k}.png", "label": label, "patient_id": f"p{k}"})
    return rows


def bad_dataset_2d(root: Path) -> tuple[Path, dict[str, str]]:
    """A 2D manifest with good cases and one of each bad input.

    Returns:
        The manifest and ``{file named in the error: words expected in its line}``.
    """
    rows = good_pngs(root)
    good = (root / "good0.png").read_bytes()
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    np.save(root / "noimage.npy", np.zeros((0, 8), np.float32))
    nan = np.ones((8, 8), np.float32)
    nan[2, 3] = np.nan
    np.save(root / "nan.npy", nan)
    bad = {
        "corrupt.png": "cannot read",
        "truncated.png": "cannot read",
        "empty.png": "file is empty",
        "noimage.npy": "image is empty",
        "nan.npy": "NaN",
        "missing.png": "no such file",
        "m.csv": "not in data.classes",
    }
    for k, name in enumerate(n for n in bad if n != "m.csv"):
        rows.append({"id": f"bad{k}", "image": name, "label": "a", "patient_id": f"q{k}"})
    rows.append({"id": "unknown", "image": "good1.png", "label": "tumour", "patient_id": "u"})
    return write_manifest(root / "m.csv", rows), bad


def bad_dataset_3d(root: Path) -> tuple[Path, dict[str, str]]:
    """A CT/PET manifest with good NIfTI cases and bad DICOM series / files."""
    try:
        from tests.data.dicom_utils import axial_positions, write_series
    except ImportError:  # pragma: no cover - run from inside tests/data
        from dicom_utils import axial_positions, write_series

    rows = []
    for k in range(12):
        volume = np.full((6, 6, 4), float(k), np.float32)
        volume[0, 0, 0] = -1.0
        write_nifti(root / f"ct{k}.nii.gz", volume)
        write_nifti(root / f"pet{k}.nii.gz", volume * 2)
        rows.append(
            {
                "id": f"c{k}",
                "ct": f"ct{k}.nii.gz",
                "pet": f"pet{k}.nii.gz",
                "label": "ab"[k % 2],
                "patient_id": f"p{k}",
            }
        )
    stored = np.arange(4 * 6 * 6, dtype=np.int16).reshape(4, 6, 6)
    positions = axial_positions(4)
    write_series(root / "gap", stored[[0, 1, 3]], positions[[0, 1, 3]])
    write_series(root / "dup", stored[[0, 1, 1, 2]], positions[[0, 1, 1, 2]])
    nan = np.ones((6, 6, 4), np.float32)
    nan[1, 1, 1] = np.inf
    write_nifti(root / "inf.nii.gz", nan)
    for name in ("gap", "dup", "inf.nii.gz"):
        rows.append(
            {"id": name, "ct": name, "pet": "pet0.nii.gz", "label": "a", "patient_id": name}
        )
    rows.append(
        {"id": "nopet", "ct": "ct0.nii.gz", "pet": "nopet.nii.gz", "label": "b", "patient_id": "x"}
    )
    bad = {
        "gap": "missing",
        "dup": "duplicate",
        "inf.nii.gz": "infinite",
        "nopet.nii.gz": "no such file",
    }
    return write_manifest(root / "petct.csv", rows), bad
