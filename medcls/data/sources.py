"""Dataset sources beside the CSV manifest and the folder tree: MedMNIST and ChestX-ray14.

* **MedMNIST** (``data.source: medmnist``): one ``.npz`` file with
  ``train_images``/``train_labels``, ``val_*`` and ``test_*`` arrays, 2D
  (``(N, H, W)`` gray, ``(N, H, W, 3)`` colour) or 3D (``(N, D, H, W)``). The
  official splits are kept. Labels ``(N, 1)`` are class indices; ``(N, K)`` with
  ``K > 1`` are multi-label 0/1 columns (ChestMNIST). The images stay in the
  ``.npz``: a case points at one of them with a *member locator*
  ``"/path/file.npz::train_images/17"``, which :func:`read_source_image` reads.
* **ChestX-ray14** (``data.source: chestxray14``): the label CSV
  ``Data_Entry_2017.csv`` (``Image Index``, ``Finding Labels`` with ``|`` between
  findings, ``Patient ID``). ``No Finding`` means no label (the task is
  multi-label); images are looked up by name anywhere below ``data.image_dir``;
  ``train_val_list.txt`` and ``test_list.txt`` beside the CSV give the official
  split when present.
"""

from __future__ import annotations

import csv
import functools
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medcls.data.cases import (
    SPLITS,
    Case,
    CaseProblem,
    CaseTable,
    _check_unique_ids,
    _drop_unknown_labels,
    _resolve_classes,
)
from medcls.errors import ConfigError, DataError

__all__ = [
    "CHESTXRAY14_COLUMNS",
    "MEMBER_SEP",
    "cases_from_chestxray14",
    "cases_from_medmnist",
    "member_locator",
    "parse_locator",
    "read_source_image",
]

MEMBER_SEP = "::"
CHESTXRAY14_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
NO_FINDING = "No Finding"


# ------------------------------------------------------------ member locators


def member_locator(path: str | Path, key: str, index: int) -> str:
    """The locator of image ``index`` of array ``key`` inside the ``.npz`` at ``path``."""
    return f"{Path(path).resolve()}{MEMBER_SEP}{key}/{int(index)}"


def parse_locator(text: str) -> tuple[str, str, int] | None:
    """``(npz path, array key, index)`` of a member locator, or None for a plain path."""
    if MEMBER_SEP not in text:
        return None
    path, _, member = text.rpartition(MEMBER_SEP)
    key, _, index = member.partition("/")
    if not path.lower().endswith(".npz") or not index.isdigit():
        return None
    return path, key, int(index)


@functools.lru_cache(maxsize=4)
def _npz_array(path: str, mtime_ns: int, key: str) -> np.ndarray:
    """One array of an ``.npz``, loaded once per process (``mtime_ns`` invalidates)."""
    from medcls.data.readers._core import library_errors

    with library_errors(path, "MedMNIST .npz file"), np.load(path, allow_pickle=False) as npz:
        if key not in npz.files:
            raise DataError(f"has no array {key!r} (arrays: {sorted(npz.files)})", path=path)
        return npz[key]


def _layout(shape: tuple[int, ...], key: str, path: str | Path) -> int:
    """Spatial dims of a stack of images ``(N, H, W)``, ``(N, H, W, 3)`` or ``(N, D, H, W)``."""
    if len(shape) == 3:
        return 2
    if len(shape) == 4:
        return 2 if shape[-1] == 3 and min(shape[1:3]) > 3 else 3
    raise DataError(
        f"array {key!r} has shape {shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W)",
        path=str(path),
    )


def _channel_first(image: np.ndarray, spatial_dims: int) -> np.ndarray:
    if image.ndim == spatial_dims + 1:  # (H, W, 3) colour
        return np.moveaxis(image, -1, 0)
    return image[None]


def read_source_image(path: str, *, spatial_dims: int | None = None):
    """Read an image file, a DICOM series folder or an ``.npz`` member locator.

    Args:
        path: a path (see :func:`medcls.data.readers.read_image`) or a locator
            ``"file.npz::train_images/17"`` made by :func:`member_locator`.
        spatial_dims: 2 or 3 to require that many spatial axes.

    Returns:
        A :class:`~medcls.data.readers.Image` (float32, channel-first).

    Raises:
        DataError: the file or member is missing, unreadable or invalid.
    """
    from medcls.data.readers import Image, check_array, read_image

    located = parse_locator(path)
    if located is None:
        return read_image(path, spatial_dims=spatial_dims)
    file, key, index = located
    if not os.path.isfile(file):
        raise DataError("no such file", path=file)
    stack = _npz_array(file, os.stat(file).st_mtime_ns, key)
    if index >= len(stack):
        raise DataError(f"{key!r} has {len(stack)} images; index {index} is out of range", file)
    dims = _layout(stack.shape, key, file)
    if spatial_dims is not None and dims != spatial_dims:
        raise DataError(
            f"{key!r} holds {dims}D images (shape {stack.shape}); expected {spatial_dims}D", file
        )
    array = np.ascontiguousarray(_channel_first(stack[index], dims), dtype=np.float32)
    issues = check_array(array, path)
    return Image(
        array=array,
        spacing=(1.0,) * dims,
        affine=np.eye(dims + 1),
        path=path,
        meta={"format": "medmnist", "original_dtype": str(stack.dtype), "issues": issues},
    )


# ------------------------------------------------------------------ MedMNIST


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays of an ``.npz``, read from the member headers (no data loaded)."""
    from medcls.data.readers._core import library_errors

    shapes = {}
    with library_errors(path, "MedMNIST .npz file"), zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            shapes[name[: -len(".npy")]] = tuple(int(n) for n in shape)
    return shapes


def cases_from_medmnist(
    path: str | Path,
    *,
    modality: str = "image",
    classes: Sequence[str] | None = None,
    task: str = "auto",
    on_bad: str = "error",
) -> CaseTable:
    """Cases of a MedMNIST ``.npz`` (MedMNIST v2 and MedMNIST+ layouts), official splits kept.

    Args:
        path: the ``.npz`` file.
        modality: the modality name of the images.
        classes: class names, one per label index (single-label) or per label
            column (multi-label); ``None`` = ``"0"``, ``"1"``, ...
        task: ``auto`` (``multilabel`` for ``(N, K>1)`` labels, else binary or
            multiclass), or a task to check against.
        on_bad: ``error`` raises at a label outside ``classes``; ``collect`` lists it.

    Returns:
        One case per image, id ``"<split>/<index>"``, each its own patient (the
        format has no patient ids), ``extra["spatial_dims"]`` set.

    Raises:
        DataError: the file is missing or corrupt, has no ``<split>_images`` array,
            or its image and label arrays disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("MedMNIST .npz file not found", path=path)
    shapes = _npz_shapes(path)
    splits = [s for s in SPLITS if f"{s}_images" in shapes]
    if not splits:
        raise DataError(
            f"no train_images, val_images or test_images array (arrays: {sorted(shapes)}); "
            "expected a MedMNIST .npz",
            path=path,
        )
    dims = {_layout(shapes[f"{s}_images"], f"{s}_images", path) for s in splits}
    if len(dims) > 1:
        raise DataError("mixes 2D and 3D image arrays across splits", path=path)
    labels: dict[str, np.ndarray] = {}
    for split in splits:
        key = f"{split}_labels"
        if key not in shapes:
            raise DataError(f"has {split}_images but no {key!r} array", path=path)
        y = np.asarray(_npz_array(str(path.resolve()), os.stat(path).st_mtime_ns, key))
        y = y.reshape(len(y), -1) if y.ndim != 2 else y
        if len(y) != shapes[f"{split}_images"][0]:
            raise DataError(
                f"{key} has {len(y)} rows but {split}_images has "
                f"{shapes[f'{split}_images'][0]} images",
                path=path,
            )
        labels[split] = y
    widths = {y.shape[1] for y in labels.values()}
    if len(widths) > 1:
        raise DataError(f"label arrays have different widths {sorted(widths)}", path=path)
    width = widths.pop()
    multilabel = width > 1
    count = width if multilabel else max(int(y.max()) + 1 for y in labels.values() if y.size)
    names = list(classes) if classes else [str(i) for i in range(max(count, 2))]
    problems: list[CaseProblem] = []
    cases: list[Case] = []
    source = str(path)
    for split in splits:
        for index, row in enumerate(labels[split]):
            case_id = f"{split}/{index}"
            if multilabel:
                if len(names) != width:
                    raise DataError(
                        f"{width} label columns but data.classes has {len(names)} names",
                        path=path,
                    )
                case_labels = tuple(names[k] for k in np.flatnonzero(row))
            else:
                value = int(row[0])
                if not 0 <= value < len(names):
                    message = (
                        f"{split}_labels[{index}] = {value} is not a class index of "
                        f"data.classes {names}"
                    )
                    if on_bad == "error":
                        raise DataError(message, path=path)
                    problems.append(CaseProblem(case_id, source, message))
                    continue
                case_labels = (names[value],)
            cases.append(
                Case(
                    id=case_id,
                    modalities={modality: member_locator(path, f"{split}_images", index)},
                    labels=case_labels,
                    patient_id=case_id,
                    split=split,
                )
            )
    if multilabel and task == "auto":
        task = "multilabel"
    resolved, task = _resolve_classes(cases, names, task, source)
    table = CaseTable(cases, resolved, task, [modality], source, problems=problems)
    table.extra["spatial_dims"] = dims.pop()
    return table


# -------------------------------------------------------------- ChestX-ray14


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def cases_from_chestxray14(
    path: str | Path,
    *,
    image_dir: str | Path | None = None,
    modality: str = "image",
    classes: Sequence[str] | None = None,
    task: str = "auto",
    on_bad: str = "error",
) -> CaseTable:
    """Cases of the ChestX-ray14 label CSV (``Data_Entry_2017.csv``).

    Args:
        path: the CSV with ``Image Index``, ``Finding Labels``, ``Patient ID``.
        image_dir: folder searched recursively for the PNG files (the release
            spreads them over ``images_001/images`` ... ``images_012/images``);
            ``None`` = the CSV's folder.
        modality: the modality name of the images.
        classes: finding names in output order; ``None`` = the sorted findings.
        task: ``auto`` (``multilabel``) or a task to check against.
        on_bad: ``error`` raises at the first bad row; ``collect`` lists bad rows
            (an unknown finding, a row in neither official list).

    Returns:
        One case per row, id = the image name, grouped by ``Patient ID``; an
        image not found below ``image_dir`` keeps the path it would have there
        (reading it reports the missing file).

    Raises:
        DataError: the CSV or the folder is missing, or a column is absent.
    """
    if on_bad not in ("error", "collect"):
        raise ConfigError(f"on_bad: expected 'error' or 'collect', got {on_bad!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError("ChestX-ray14 label CSV not found", path=path)
    root = Path(image_dir) if image_dir else path.parent
    if not root.is_dir():
        raise DataError("data.image_dir: folder not found", path=root)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    missing = [c for c in CHESTXRAY14_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; a ChestX-ray14 label CSV has {list(CHESTXRAY14_COLUMNS)} "
            f"(this file has {columns})",
            path=path,
        )
    if not rows:
        raise DataError("label CSV has no rows", path=path)
    found: dict[str, Path] = {}
    for file in sorted(root.rglob("*.png")):
        found.setdefault(file.name, file)
    lists = {}
    for split, name in (("test", "test_list.txt"), ("train", "train_val_list.txt")):
        for folder in (path.parent, root):
            if (folder / name).is_file():
                lists[split] = _read_list(folder / name)
                break
    problems: list[CaseProblem] = []
    cases: list[Case] = []
    where: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        name = (row["Image Index"] or "").strip()
        patient = (row["Patient ID"] or "").strip()
        message = None
        if not name:
            message = f"line {line}: empty 'Image Index'"
        split = None
        if message is None and lists:
            split = next((s for s, names in lists.items() if name in names), None)
            if split is None:
                message = (
                    f"line {line}: image {name!r} is in neither test_list.txt nor "
                    "train_val_list.txt"
                )
        if message is not None:
            if on_bad == "error":
                raise DataError(message, path=path)
            problems.append(CaseProblem(name or f"line {line}", str(path), message))
            continue
        findings = tuple(
            part.strip()
            for part in (row["Finding Labels"] or "").split("|")
            if part.strip() and part.strip() != NO_FINDING
        )
        file = found.get(name, root / name)
        cases.append(
            Case(
                id=name,
                modalities={modality: str(file.resolve())},
                labels=findings,
                patient_id=patient or name,
                split=split,
            )
        )
        where[name] = f"line {line}: "
    _check_unique_ids(cases, path)
    if classes:
        collect = problems if on_bad == "collect" else None
        cases = _drop_unknown_labels(cases, classes, str(path), collect, where)
    if task == "auto":
        task = "multilabel"
    resolved, task = _resolve_classes(cases, classes, task, str(path))
    return CaseTable(cases, resolved, task, [modality], str(path), problems=problems)
