"""Cases: what a dataset is made of, read from a manifest, a folder tree or a demo set.

A :class:`Case` names its modality files (``{"ct": path, "pet": path}``), its
label(s), its patient and, when the source has one, an official split. The
:class:`CaseTable` holds the cases with the class list and the task, and is the
only thing the rest of the data layer needs to know about the source.

Rows that cannot become a usable case (an empty path, an empty or unknown label,
an invalid split) either raise at once (``on_bad="error"``) or are collected in
:attr:`CaseTable.problems` (``on_bad="collect"``) so that every problem of a
dataset can be listed together before training.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medcls.errors import ConfigError, DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Case",
    "CaseProblem",
    "CaseTable",
    "cases_from_files",
    "cases_from_folder",
    "cases_from_manifest",
    "infer_task",
    "load_cases",
]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".dcm",
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".npy",
    ".npz",
)


@dataclass(frozen=True)
class Case:
    """One sample: named modality files, labels and grouping.

    Attributes:
        id: unique case identifier (row id or relative path).
        modalities: modality name -> image path.
        labels: class names of the case (one for single-label tasks, empty when unknown).
        patient_id: cases of one patient share it; never split across train/val/test.
        split: official split (``train``, ``val``, ``test``) or ``None``.
        mask: optional lesion mask path (used to check explanations).
        fold: official cross-validation fold (from the manifest) or ``None``.
    """

    id: str
    modalities: dict[str, str]
    labels: tuple[str, ...] = ()
    patient_id: str = ""
    split: str | None = None
    mask: str | None = None
    fold: int | None = None


@dataclass(frozen=True)
class CaseProblem:
    """Why a case cannot be used: the case, the file to look at and the problem.

    ``str(problem)`` is one line that starts with the file, like a
    :class:`~medcls.errors.DataError`.
    """

    case_id: str
    path: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass
class CaseTable:
    """Cases with their class list and task.

    Attributes:
        cases: the cases, in source order.
        classes: class names in model-output order.
        task: ``binary``, ``multiclass`` or ``multilabel``.
        modalities: modality names in the order the model sees them.
        source: where the cases came from (for messages and reports).
        extra: source-specific facts (e.g. ``spatial_dims`` of a MedMNIST file).
        problems: rows of the source that could not become a usable case
            (collected instead of raised with ``on_bad="collect"``).
    """

    cases: list[Case]
    classes: list[str]
    task: str
    modalities: list[str]
    source: str = ""
    extra: dict = field(default_factory=dict)
    problems: list[CaseProblem] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, cases: Sequence[Case] | None = None) -> dict[str, int]:
        """Number of cases carrying each class (over ``cases`` or all cases)."""
        counts = Counter(label for case in (cases or self.cases) for label in case.labels)
        return {name: counts.get(name, 0) for name in self.classes}

    def target(self, case: Case) -> int | list[float]:
        """The training target of ``case``: a class index, or a multi-hot list."""
        index = {name: i for i, name in enumerate(self.classes)}
        if self.task == "multilabel":
            hot = [0.0] * len(self.classes)
            for label in case.labels:
                hot[index[label]] = 1.0
            return hot
        return index[case.labels[0]]


def infer_task(label_sets: Sequence[tuple[str, ...]], num_classes: int) -> str:
    """``multilabel`` if any case has several labels (or none), else binary/multiclass."""
    if any(len(labels) != 1 for labels in label_sets):
        return "multilabel"
    return "binary" if num_classes == 2 else "multiclass"


def _drop_unknown_labels(
    cases: list[Case],
    classes: Sequence[str],
    source: str,
    problems: list[CaseProblem] | None,
    where: dict[str, str] | None = None,
) -> list[Case]:
    """Cases whose labels are all in ``classes``; the others raise or become problems."""
    known = set(classes)
    kept = []
    for case in cases:
        unknown = sorted(set(case.labels) - known)
        if not unknown:
            kept.append(case)
            continue
        prefix = (where or {}).get(case.id, "")
        message = (
            f"{prefix}case {case.id!r} has label(s) {unknown} not in data.classes {list(classes)}"
        )
        if problems is None:
            raise DataError(message, path=source)
        problems.append(CaseProblem(case.id, source, message))
    return kept


def _resolve_classes(
    cases: list[Case], classes: Sequence[str] | None, task: str, source: str
) -> tuple[list[str], str]:
    seen = sorted({label for case in cases for label in case.labels})
    if classes:
        _drop_unknown_labels(cases, classes, source, None)
        classes = list(classes)
    else:
        classes = seen
    if len(classes) < 2:
        raise DataError(
            f"found {len(classes)} class(es) {classes}; classification needs at least 2",
            path=source,
        )
    if not cases:
        raise DataError("no usable case (every row has a problem)", path=source)
    inferred = infer_task([c.labels for c in cases], len(classes))
    if task == "auto":
        task = inferred
    elif task in ("binary", "multiclass") and inferred == "multilabel":
        bad = next(c for c in cases if len(c.labels) != 1)
        raise DataError(
            f"data.task is {task!r} but case {bad.id!r} has {len(bad.labels)} labels "
            f"{list(bad.labels)}; use task 'multilabel'",
            path=source,
        )
    elif task == "binary" and len(classes) != 2:
        raise DataError(
            f"data.task is 'binary' but there are {len(classes)} classes {classes}", path=source
        )
    return classes, task


def _split_labels(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split("|") if part.strip())


def cases_from_manifest(
    path: str | Path,
    *,
    modalities: Sequence[str] | None,
    label_column: str = "label",
    patient_column: str = "patient_id",
    mask_column: str | None = "mask",
    split_column: str = "split",
    fold_column: str = "fold",
    classes: Sequence[str] | None = None,
    task: str = "auto",
    require_labels: bool = True,
    on_bad: str = "error",
) -> CaseTable:
    """Read a CSV manifest: one row per case, one column per modality (a path).

    Relative paths are resolved against the manifest's folder. ``modalities=None``
    takes every column that is not a label/patient/mask/split/fold/id column.

    Args:
        path: the CSV file.
        modalities: columns holding image paths (``None``: every other column).
        label_column, patient_column, mask_column, split_column, fold_column: column
            names (the last four are optional in the file).
        classes: class names in output order (``None``: the sorted labels).
        task: ``auto``, ``binary``, ``multiclass`` or ``multilabel``.
        require_labels: False for unlabelled inputs (prediction).
        on_bad: ``error`` raises at the first bad row; ``collect`` leaves bad rows
            out and lists them in :attr:`CaseTable.problems`.

    Raises:
        DataError: the file is missing or empty, a required column is absent, or
            (with ``on_bad="error"``) a row has an empty path or label, an invalid
            split or fold, or a label not in ``classes``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("manifest not found", path=path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    if not rows:
        raise DataError("manifest has no rows", path=path)
    reserved = {label_column, patient_column, mask_column, split_column, fold_column, "id"}
    if modalities is None:
        modalities = [c for c in columns if c not in reserved]
    required = list(modalities) + ([label_column] if require_labels else [])
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the manifest has columns {columns}", path=path
        )
    if on_bad not in ("error", "collect"):
        raise ConfigError(f"on_bad: expected 'error' or 'collect', got {on_bad!r}")
    root = path.parent
    cases: list[Case] = []
    problems: list[CaseProblem] = []
    where: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        row_id = (row.get("id") or "").strip() or f"line {line}"
        try:
            case = _manifest_row(
                row,
                line,
                root,
                modalities,
                label_column=label_column,
                patient_column=patient_column,
                mask_column=mask_column,
                split_column=split_column,
                fold_column=fold_column,
                require_labels=require_labels,
            )
        except DataError as exc:
            if on_bad == "error":
                raise DataError(str(exc), path=path) from None
            problems.append(CaseProblem(row_id, str(path), str(exc)))
            continue
        where[case.id] = f"line {line}: "
        cases.append(case)
    _check_unique_ids(cases, path)
    collect = problems if on_bad == "collect" else None
    if not require_labels:
        return CaseTable(
            cases, list(classes or []), task, list(modalities), str(path), problems=problems
        )
    if classes:
        cases = _drop_unknown_labels(cases, classes, str(path), collect, where)
    resolved, task = _resolve_classes(cases, classes, task, str(path))
    return CaseTable(cases, resolved, task, list(modalities), str(path), problems=problems)


def _manifest_row(
    row: dict,
    line: int,
    root: Path,
    modalities: Sequence[str],
    *,
    label_column: str,
    patient_column: str,
    mask_column: str | None,
    split_column: str,
    fold_column: str,
    require_labels: bool,
) -> Case:
    """One manifest row as a :class:`Case`; a bad row raises a DataError (no path)."""
    files = {}
    for name in modalities:
        value = (row.get(name) or "").strip()
        if not value:
            raise DataError(f"line {line}: empty path in column {name!r}")
        files[name] = str((root / value).resolve())
    labels = _split_labels(row.get(label_column) or "")
    if require_labels and not labels:
        raise DataError(f"line {line}: empty label in column {label_column!r}")
    split = (row.get(split_column) or "").strip().lower() or None
    if split is not None and split not in SPLITS:
        raise DataError(
            f"line {line}: split {split!r} in column {split_column!r} is not one of {SPLITS}"
        )
    fold_text = (row.get(fold_column) or "").strip()
    fold = None
    if fold_text:
        try:
            fold = int(fold_text)
        except ValueError:
            fold = -1
        if fold < 0:
            raise DataError(
                f"line {line}: fold {fold_text!r} in column {fold_column!r} is not a "
                "non-negative integer"
            )
    mask = (row.get(mask_column) or "").strip() if mask_column else ""
    case_id = (row.get("id") or "").strip() or Path(next(iter(files.values()))).name
    return Case(
        id=case_id,
        modalities=files,
        labels=labels,
        patient_id=(row.get(patient_column) or "").strip() or case_id,
        split=split,
        mask=str((root / mask).resolve()) if mask else None,
        fold=fold,
    )


def _check_unique_ids(cases: list[Case], source: Path | str) -> None:
    counts = Counter(c.id for c in cases)
    dupes = [i for i, n in counts.items() if n > 1]
    if dupes:
        raise DataError(f"case ids must be unique; repeated: {dupes[:5]}", path=source)


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in IMAGE_SUFFIXES)


def cases_from_folder(
    root: str | Path,
    *,
    modality: str = "image",
    classes: Sequence[str] | None = None,
    task: str = "auto",
    on_bad: str = "error",
) -> CaseTable:
    """Read a folder-per-class tree, optionally below ``train/``, ``val/``, ``test/``.

    ``root/CLASS/*.png`` or ``root/{train,val,test}/CLASS/*.png`` (the ChestXRay2017
    and COVID-CT layouts). Every file is its own patient (the layout records none).

    Args:
        root: the dataset folder.
        modality: the modality name of the images.
        classes: class names (folder names) in output order; ``None`` = sorted folders.
        task: ``auto``, ``binary`` or ``multiclass``.
        on_bad: ``error`` raises for a class folder not in ``classes``; ``collect``
            lists its images in :attr:`CaseTable.problems`.

    Raises:
        DataError: the folder is missing or holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("dataset folder not found", path=root)
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    parents = split_dirs or [root]
    cases = []
    for parent in parents:
        split = parent.name if split_dirs else None
        for class_dir in sorted(p for p in parent.iterdir() if p.is_dir()):
            for file in sorted(p for p in class_dir.rglob("*") if _is_image(p)):
                rel = file.relative_to(root).as_posix()
                cases.append(
                    Case(
                        id=rel,
                        modalities={modality: str(file.resolve())},
                        labels=(class_dir.name,),
                        patient_id=rel,
                        split=split,
                    )
                )
    if not cases:
        raise DataError(
            "no images found; expected ROOT/CLASS/image files or ROOT/{train,val,test}/CLASS/...",
            path=root,
        )
    problems: list[CaseProblem] = []
    if classes:
        collect = problems if on_bad == "collect" else None
        cases = _drop_unknown_labels(cases, classes, str(root), collect)
    resolved, task = _resolve_classes(cases, classes, task, str(root))
    return CaseTable(cases, resolved, task, [modality], str(root), problems=problems)


def cases_from_files(inputs: Sequence[str | Path], modality: str = "image") -> list[Case]:
    """Unlabelled single-modality cases from files and folders (searched recursively)."""
    cases = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if _is_image(p))
            if not files:
                raise DataError("folder holds no readable image files", path=item)
        elif item.exists():
            files = [item]
        else:
            raise DataError("input not found", path=item)
        for file in files:
            cases.append(Case(id=str(file), modalities={modality: str(file.resolve())}))
    return cases


SOURCES = ("csv", "folder", "medmnist", "chestxray14")


def load_cases(data_cfg, *, on_bad: str = "collect") -> CaseTable:
    """The cases described by a :class:`~medcls.config.DataConfig`.

    Demo sources are generated into the cache on first use.

    Args:
        data_cfg: the ``data`` section.
        on_bad: ``collect`` (default) lists rows that cannot become a usable case
            in :attr:`CaseTable.problems`; ``error`` raises at the first one.

    Raises:
        ConfigError: an unknown source, or a source without ``data.path``.
        DataError: the source itself is unusable (missing file, missing column).
    """
    source = data_cfg.source
    if source.startswith("demo-"):
        from medcls.data.synthetic import demo_dataset

        demo = data_cfg.demo
        path = demo_dataset(
            source, seed=demo.seed, num_cases=demo.num_cases, size=demo.size, progress=True
        )
    elif source in SOURCES:
        if not data_cfg.path:
            raise ConfigError(f"data.path: required when data.source is {source!r}")
        path = Path(data_cfg.path)
    else:
        raise ConfigError(
            f"data.source: unknown source {source!r}; expected one of {', '.join(SOURCES)} "
            "or a demo set ('demo-xray2d', 'demo-petct3d')"
        )
    modality = (data_cfg.modalities or ["image"])[0]
    if source in ("folder", "medmnist", "chestxray14") and len(data_cfg.modalities or []) > 1:
        raise ConfigError(
            f"data.modalities: source {source!r} has one modality per case, got "
            f"{data_cfg.modalities}"
        )
    if source == "folder":
        return cases_from_folder(
            path, modality=modality, classes=data_cfg.classes, task=data_cfg.task, on_bad=on_bad
        )
    if source == "medmnist":
        from medcls.data.sources import cases_from_medmnist

        return cases_from_medmnist(
            path, modality=modality, classes=data_cfg.classes, task=data_cfg.task, on_bad=on_bad
        )
    if source == "chestxray14":
        from medcls.data.sources import cases_from_chestxray14

        return cases_from_chestxray14(
            path,
            image_dir=data_cfg.image_dir,
            modality=modality,
            classes=data_cfg.classes,
            task=data_cfg.task,
            on_bad=on_bad,
        )
    return cases_from_manifest(
        path,
        modalities=data_cfg.modalities,
        label_column=data_cfg.label_column,
        patient_column=data_cfg.patient_column,
        mask_column=data_cfg.mask_column,
        split_column=data_cfg.split_column,
        fold_column=data_cfg.fold_column,
        classes=data_cfg.classes,
        task=data_cfg.task,
        on_bad=on_bad,
    )
