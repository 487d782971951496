from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcls.data.cases import Case, CaseTable
from medcls.data.splits import assign_splits, check_leakage, grouped_stratified_folds
from medcls.errors import DataError


def _table(patients: list[tuple[str, str, int]]) -> CaseTable:
    """patients: (patient id, label, number of cases)."""
    cases = [
        Case(
            id=f"{pid}-{k}", modalities={"image": f"{pid}-{k}.png"}, labels=(label,), patient_id=pid
        )
        for pid, label, n in patients
        for k in range(n)
    ]
    return CaseTable(cases, sorted({label for _, label, _ in patients}), "binary", ["image"])


patient_lists = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 4)), min_size=12, max_size=60
).map(lambda rows: [(f"p{i}", label, n) for i, (label, n) in enumerate(rows)])


@settings(max_examples=60, deadline=None)
@given(patient_lists, st.integers(0, 2**16))
def test_no_patient_in_two_splits(patients, seed):
    labels = Counter(label for _, label, _ in patients)
    table = _table(patients)
    try:
        assignment = assign_splits(table, val_fraction=0.2, test_fraction=0.2, seed=seed)
    except DataError as exc:  # too few patients of a class for a non-empty split is allowed to fail
        assert "split is empty" in str(exc)
        assert min(labels.values()) < 5 or len(patients) < 15
        return
    assert check_leakage(table, assignment) == []
    assert set(assignment) == {c.id for c in table.cases}
    assert assign_splits(table, val_fraction=0.2, test_fraction=0.2, seed=seed) == assignment


@settings(max_examples=40, deadline=None)
@given(patient_lists, st.integers(2, 5), st.integers(0, 2**16))
def test_folds_group_patients_and_balance_classes(patients, k, seed):
    table = _table(patients)
    folds = grouped_stratified_folds(table, folds=k, seed=seed)
    by_patient = {}
    for case in table.cases:
        by_patient.setdefault(case.patient_id, set()).add(folds[case.id])
    assert all(len(v) == 1 for v in by_patient.values())
    for label in ("a", "b"):
        per_fold = Counter(
            folds[c.id]
            for c in table.cases
            if c.patient_id in {p for p, lab, _ in patients if lab == label} and c.id.endswith("-0")
        )
        if per_fold:
            assert max(per_fold.values()) - min(per_fold.get(f, 0) for f in range(k)) <= 1


def test_stratified_fractions_and_official_split():
    patients = [(f"p{i}", "a" if i % 3 else "b", 1) for i in range(90)]
    table = _table(patients)
    assignment = assign_splits(table, val_fraction=0.2, test_fraction=0.2, seed=1)
    counts = Counter((assignment[c.id], c.labels[0]) for c in table.cases)
    assert counts[("test", "a")] == 12 and counts[("test", "b")] == 6
    assert counts[("val", "a")] == 12 and counts[("val", "b")] == 6

    official = [
        Case(c.id, c.modalities, c.labels, c.patient_id, "test" if i < 10 else "train")
        for i, c in enumerate(table.cases)
    ]
    table2 = CaseTable(official, table.classes, "binary", ["image"])
    assignment2 = assign_splits(table2, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert [assignment2[c.id] for c in official[:10]] == ["test"] * 10
    assert (
        Counter(assignment2.values())["val"] == 16
    )  # 20% of each class among the 80 train patients


def test_leakage_is_reported():
    table = _table([("p1", "a", 2), ("p2", "b", 1)])
    leaks = check_leakage(table, {"p1-0": "train", "p1-1": "test", "p2-0": "train"})
    assert leaks == ["patient 'p1' is in splits ['test', 'train']"]


def test_bad_fractions_are_errors():
    table = _table([(f"p{i}", "ab"[i % 2], 1) for i in range(10)])
    with pytest.raises(DataError, match="val_fraction"):
        assign_splits(table, val_fraction=1.2, test_fraction=0.1, seed=0)
    with pytest.raises(DataError, match="below 1"):
        assign_splits(table, val_fraction=0.5, test_fraction=0.5, seed=0)


# patients: (label, number of cases, official split or None); classes imbalanced
official_lists = st.lists(
    st.tuples(
        st.sampled_from(["a", "a", "a", "b"]),
        st.integers(1, 4),
        st.sampled_from(["train", "train", "train", "val", "test"]),
    ),
    min_size=15,
    max_size=60,
)


def _official_table(rows, with_val: bool) -> CaseTable:
    cases = []
    for i, (label, n, split) in enumerate(rows):
        if split == "val" and not with_val:
            split = "train"
        cases += [
            Case(f"p{i}-{k}", {"image": f"p{i}-{k}.png"}, (label,), f"p{i}", split)
            for k in range(n)
        ]
    return CaseTable(cases, ["a", "b"], "binary", ["image"])


@settings(max_examples=50, deadline=None)
@given(official_lists, st.booleans(), st.integers(0, 2**16))
def test_official_splits_are_kept_and_never_leak(rows, with_val, seed):
    table = _official_table(rows, with_val)
    try:
        assignment = assign_splits(table, val_fraction=0.2, test_fraction=0.2, seed=seed)
    except DataError as exc:
        assert "split is empty" in str(exc)
        return
    assert check_leakage(table, assignment) == []
    official = {c.split for c in table.cases}
    drawn = {"train"} | ({"val", "test"} - official)  # splits the source lacks come from train
    for case in table.cases:
        if case.split in ("val", "test"):
            assert assignment[case.id] == case.split
        else:
            assert assignment[case.id] in drawn


@settings(max_examples=50, deadline=None)
@given(patient_lists, st.integers(2, 5), st.data(), st.floats(0.0, 0.3), st.integers(0, 2**16))
def test_cross_validation_folds_never_leak_and_share_one_test_split(patients, k, data, test, seed):
    table = _table(patients)
    fold = data.draw(st.integers(0, k - 1))
    try:
        assignment = assign_splits(
            table, val_fraction=0.2, test_fraction=test, seed=seed, fold=fold, num_folds=k
        )
    except DataError as exc:
        assert "is empty" in str(exc)
        return
    assert check_leakage(table, assignment) == []
    test_ids = {i for i, s in assignment.items() if s == "test"}
    vals = set()
    for other in range(k):
        try:
            again = assign_splits(
                table, val_fraction=0.2, test_fraction=test, seed=seed, fold=other, num_folds=k
            )
        except DataError:
            continue
        assert {i for i, s in again.items() if s == "test"} == test_ids
        fold_val = {i for i, s in again.items() if s == "val"}
        assert not fold_val & vals  # folds are disjoint
        vals |= fold_val


def test_official_fold_column_is_used_and_checked():
    cases = [Case(f"c{i}", {"image": "x"}, ("ab"[i % 2],), f"p{i}", fold=i % 3) for i in range(12)]
    table = CaseTable(cases, ["a", "b"], "binary", ["image"])
    assignment = assign_splits(
        table, val_fraction=0.2, test_fraction=0.0, seed=0, fold=1, num_folds=3
    )
    assert {c.id for c in cases if c.fold == 1} == {i for i, s in assignment.items() if s == "val"}
    with pytest.raises(DataError, match="fold column has fold"):
        assign_splits(table, val_fraction=0.2, test_fraction=0.0, seed=0, fold=0, num_folds=2)
    with pytest.raises(DataError, match=r"data\.fold must be in 0\.\.2"):
        assign_splits(table, val_fraction=0.2, test_fraction=0.0, seed=0, fold=3, num_folds=3)
    leaky = [
        Case("x0", {"image": "x"}, ("a",), "same", fold=0),
        Case("x1", {"image": "x"}, ("b",), "same", fold=1),
    ]
    table = CaseTable(cases + leaky, ["a", "b"], "binary", ["image"])
    assignment = assign_splits(
        table, val_fraction=0.2, test_fraction=0.0, seed=0, fold=0, num_folds=3
    )
    assert check_leakage(table, assignment) == ["patient 'same' is in splits ['train', 'val']"]
