"""Leak-free splits: stratified by class, grouped by patient, reproducible from a seed.

A patient's cases always land in one split (or one fold). Official splits in the
source are kept; when the source has ``train`` and ``test`` but no ``val``, the
validation patients are drawn from ``train``.

Cross-validation (``fold`` given): the test split is fixed first (the official
one, or ``test_fraction`` of each class's patients drawn from the seed alone, so
it is the same for every fold); the remaining patients are dealt into
``num_folds`` stratified folds (or take the manifest's ``fold`` column), and fold
``fold`` is the validation split.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medcls.data.cases import Case, CaseTable
from medcls.errors import DataError

__all__ = [
    "assign_splits",
    "check_content_leakage",
    "check_leakage",
    "grouped_stratified_folds",
    "read_splits",
    "write_splits",
]


def _patient_groups(cases: list[Case]) -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        groups[case.patient_id or case.id].append(case)
    return groups


def _stratum(cases: list[Case]) -> str:
    """The class key of a patient: the label set of their first case (stable)."""
    return "|".join(sorted(cases[0].labels))


def _strata(groups: dict[str, list[Case]]) -> dict[str, list[str]]:
    strata: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(groups):
        strata[_stratum(groups[patient])].append(patient)
    return strata


def _draw(
    patients: list[str], fractions: dict[str, float], rng: np.random.Generator
) -> dict[str, str]:
    """Shuffle one stratum's patients and cut it into splits by fraction."""
    order = [patients[i] for i in rng.permutation(len(patients))]
    assignment = {}
    start = 0
    for split, fraction in fractions.items():
        count = round(fraction * len(order))
        for patient in order[start : start + count]:
            assignment[patient] = split
        start += count
    for patient in order[start:]:
        assignment[patient] = "train"
    return assignment


def assign_splits(
    table: CaseTable,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    fold: int | None = None,
    num_folds: int = 5,
) -> dict[str, str]:
    """Assign each case to ``train``, ``val`` or ``test``.

    Args:
        table: the cases.
        val_fraction: share of each class's patients for validation (when the
            source has no ``val`` split and no ``fold`` is given).
        test_fraction: share of each class's patients for testing (when the
            source has no ``test`` split).
        seed: the same seed gives the same split.
        fold: cross-validation: the fold (``0 .. num_folds-1``) that is the
            validation split; ``None`` = no cross-validation.
        num_folds: number of folds when ``fold`` is given.

    Returns:
        case id -> split name.

    Raises:
        DataError: a fraction or fold is out of range, cases mix having and not
            having an official split or fold, or a split would be empty.
    """
    if fold is not None:
        return _assign_fold(
            table, test_fraction=test_fraction, seed=seed, fold=fold, num_folds=num_folds
        )
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"data.{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError("data.val_fraction + data.test_fraction must be below 1")
    rng = np.random.default_rng(seed)
    official = {c.split for c in table.cases if c.split}
    assignment: dict[str, str] = {}
    if official:
        unsplit = [c.id for c in table.cases if not c.split]
        if unsplit:
            raise DataError(
                f"{len(unsplit)} case(s) have no split while others do (e.g. {unsplit[0]!r}); "
                "give every case a split or none",
                path=table.source,
            )
        assignment = {c.id: c.split for c in table.cases}
        fractions = {}
        if "test" not in official:
            fractions["test"] = test_fraction
        if "val" not in official:
            fractions["val"] = val_fraction
        pool = [c for c in table.cases if c.split == "train"]
    else:
        fractions = {"test": test_fraction, "val": val_fraction}
        pool = table.cases
    if fractions:
        groups = _patient_groups(pool)
        for patients in _strata(groups).values():
            for patient, split in _draw(patients, fractions, rng).items():
                for case in groups[patient]:
                    assignment[case.id] = split
    for split in ("train", "val", "test"):
        if split == "test" and test_fraction == 0 and "test" not in official:
            continue
        if split == "val" and val_fraction == 0 and "val" not in official:
            continue
        if not any(s == split for s in assignment.values()):
            raise DataError(
                f"the {split!r} split is empty ({len(table.cases)} cases); use more data or a "
                f"larger data.{split}_fraction",
                path=table.source,
            )
    return assignment


def _assign_fold(
    table: CaseTable, *, test_fraction: float, seed: int, fold: int, num_folds: int
) -> dict[str, str]:
    if num_folds < 2:
        raise DataError(f"data.num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise DataError(f"data.fold must be in 0..{num_folds - 1}, got {fold}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    official = {c.split for c in table.cases if c.split}
    assignment: dict[str, str] = {}
    if "test" in official:
        test_ids = {c.id for c in table.cases if c.split == "test"}
    elif test_fraction > 0:
        groups = _patient_groups(table.cases)
        rng = np.random.default_rng(seed)
        test_ids = set()
        for patients in _strata(groups).values():
            for patient, split in _draw(patients, {"test": test_fraction}, rng).items():
                if split == "test":
                    test_ids.update(c.id for c in groups[patient])
    else:
        test_ids = set()
    pool = [c for c in table.cases if c.id not in test_ids]
    given = [c for c in pool if c.fold is not None]
    if given and len(given) != len(pool):
        bad = next(c for c in pool if c.fold is None)
        raise DataError(
            f"{len(pool) - len(given)} case(s) have no fold while others do (e.g. {bad.id!r}); "
            "give every case a fold or none",
            path=table.source,
        )
    if given:
        outside = sorted({c.fold for c in given if c.fold >= num_folds})
        if outside:
            raise DataError(
                f"fold column has fold(s) {outside} but data.num_folds is {num_folds}",
                path=table.source,
            )
        fold_of = {c.id: c.fold for c in pool}
    else:
        fold_of = _deal_folds(pool, num_folds, np.random.default_rng([seed, 1]))
    for case in table.cases:
        if case.id in test_ids:
            assignment[case.id] = "test"
        else:
            assignment[case.id] = "val" if fold_of[case.id] == fold else "train"
    for split in ("train", "val"):
        if split not in assignment.values():
            raise DataError(
                f"the {split!r} split of fold {fold} is empty ({len(pool)} cases outside the "
                "test split); use fewer folds or more data",
                path=table.source,
            )
    return assignment


def grouped_stratified_folds(table: CaseTable, *, folds: int, seed: int) -> dict[str, int]:
    """Assign each case to one of ``folds`` folds, stratified by class, grouped by patient.

    Patients of each class are shuffled and dealt round-robin, starting each class
    at the currently smallest fold, so fold sizes differ by at most a few patients.

    Returns:
        case id -> fold index in ``range(folds)``.
    """
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    return _deal_folds(table.cases, folds, np.random.default_rng(seed))


def _deal_folds(cases: list[Case], folds: int, rng: np.random.Generator) -> dict[str, int]:
    groups = _patient_groups(cases)
    sizes = [0] * folds
    fold_of: dict[str, int] = {}
    for patients in _strata(groups).values():
        order = [patients[i] for i in rng.permutation(len(patients))]
        start = int(np.argmin(sizes))
        for k, patient in enumerate(order):
            fold = (start + k) % folds
            fold_of[patient] = fold
            sizes[fold] += len(groups[patient])
    return {case.id: fold_of[pid] for pid, members in groups.items() for case in members}


def check_leakage(table: CaseTable, assignment: dict[str, str]) -> list[str]:
    """Patients whose cases fall in more than one split.

    Returns:
        Messages, one per leaking patient (empty when there is no leak).
    """
    splits_of: dict[str, set[str]] = defaultdict(set)
    for case in table.cases:
        splits_of[case.patient_id or case.id].add(assignment[case.id])
    return [
        f"patient {pid!r} is in splits {sorted(splits)}"
        for pid, splits in sorted(splits_of.items())
        if len(splits) > 1
    ]


def check_content_leakage(
    hashes: Mapping[str, Mapping[str, str]], assignment: Mapping[str, str]
) -> list[str]:
    """Identical image content in more than one split.

    Args:
        hashes: case id -> {modality: content hash of its image}.
        assignment: case id -> split.

    Returns:
        Messages, one per image content found in several splits (empty when none),
        naming the cases and their splits.
    """
    where: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for case_id, by_modality in hashes.items():
        if case_id not in assignment:
            continue
        for modality, digest in by_modality.items():
            where[digest].append((assignment[case_id], case_id, modality))
    messages = []
    for entries in where.values():
        splits = sorted({split for split, _, _ in entries})
        if len(splits) > 1:
            shown = ", ".join(
                f"{cid!r} ({split}, {mod})" for split, cid, mod in sorted(entries)[:4]
            )
            more = f" and {len(entries) - 4} more" if len(entries) > 4 else ""
            messages.append(f"identical image content in splits {splits}: {shown}{more}")
    return sorted(messages)


def write_splits(table: CaseTable, assignment: dict[str, str], path: str | Path) -> Path:
    """Save the split as CSV (``id, split, patient_id, label``) for the run folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "split", "patient_id", "label"])
        for case in table.cases:
            writer.writerow([case.id, assignment[case.id], case.patient_id, "|".join(case.labels)])
    return path


def read_splits(path: str | Path) -> dict[str, str]:
    """Read a split file written by :func:`write_splits`."""
    with Path(path).open(newline="") as fh:
        return {row["id"]: row["split"] for row in csv.DictReader(fh)}
