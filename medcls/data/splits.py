"""Leak-free splits: stratified by class, grouped by patient, reproducible from a seed.

A patient's cases always land in one split (or one fold). Official splits in the
source are kept; when the source has ``train`` and ``test`` but no ``val``, the
validation patients are drawn from ``train``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from medcls.data.cases import Case, CaseTable
from medcls.errors import DataError

__all__ = [
    "assign_splits",
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
    table: CaseTable, *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign each case to ``train``, ``val`` or ``test``.

    Args:
        table: the cases.
        val_fraction: share of each class's patients for validation (when the
            source has no ``val`` split).
        test_fraction: share of each class's patients for testing (when the
            source has no ``test`` split).
        seed: the same seed gives the same split.

    Returns:
        case id -> split name.

    Raises:
        DataError: a fraction is out of range or a split would be empty.
    """
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


def grouped_stratified_folds(table: CaseTable, *, folds: int, seed: int) -> dict[str, int]:
    """Assign each case to one of ``folds`` folds, stratified by class, grouped by patient.

    Patients of each class are shuffled and dealt round-robin, starting each class
    at the currently smallest fold, so fold sizes differ by at most a few patients.

    Returns:
        case id -> fold index in ``range(folds)``.
    """
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    rng = np.random.default_rng(seed)
    groups = _patient_groups(table.cases)
    sizes = [0] * folds
    fold_of: dict[str, int] = {}
    for patients in _strata(groups).values():
        order = [patients[i] for i in rng.permutation(len(patients))]
        start = int(np.argmin(sizes))
        for k, patient in enumerate(order):
            fold = (start + k) % folds
            fold_of[patient] = fold
            sizes[fold] += len(groups[patient])
    return {case.id: fold_of[pid] for pid, cases in groups.items() for case in cases}


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
