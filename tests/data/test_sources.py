"""Dataset sources: folder trees, CSV manifests, MedMNIST .npz, ChestX-ray14; presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcls.config import load_config
from medcls.data.cases import cases_from_folder, cases_from_manifest, load_cases
from medcls.data.dataset import load_case
from medcls.data.sources import (
    cases_from_chestxray14,
    cases_from_medmnist,
    parse_locator,
    read_source_image,
)
from medcls.errors import ConfigError, DataError

try:
    from tests.data.data_utils import write_manifest, write_nifti, write_png
except ImportError:  # pragma: no cover - run from inside tests/data
    from data_utils import write_manifest, write_nifti, write_png

PRESETS = Path(__file__).resolve().parents[2] / "medcls" / "configs"


def _img(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size), value, dtype=np.uint8)


# ------------------------------------------------------------------- folders


def test_folder_with_and_without_split_dirs(tmp_path):
    flat = tmp_path / "flat"
    for cls, n in (("normal", 3), ("pneumonia", 2)):
        for i in range(n):
            write_png(flat / cls / f"{i}.png", _img(i))
    table = cases_from_folder(flat)
    assert table.classes == ["normal", "pneumonia"] and table.task == "binary"
    assert len(table.cases) == 5 and all(c.split is None for c in table.cases)

    split = tmp_path / "split"  # the ChestXRay2017 / COVID-CT layout
    for part in ("train", "test"):
        for cls in ("covid", "noncovid"):
            write_png(split / part / cls / "a.png", _img(1))
            write_png(split / part / cls / "sub" / "b.png", _img(2))
    table = cases_from_folder(split)
    assert {c.split for c in table.cases} == {"train", "test"}
    assert len(table.cases) == 8 and table.cases[0].id == "train/covid/a.png"


def test_folder_class_not_in_classes_is_collected(tmp_path):
    for cls in ("a", "b", "junk"):
        write_png(tmp_path / cls / "x.png", _img(3))
    with pytest.raises(DataError, match=r"not in data\.classes"):
        cases_from_folder(tmp_path, classes=["a", "b"])
    table = cases_from_folder(tmp_path, classes=["a", "b"], on_bad="collect")
    assert [c.id for c in table.cases] == ["a/x.png", "b/x.png"]
    assert [p.case_id for p in table.problems] == ["junk/x.png"]


# --------------------------------------------------------------------- CSV


def test_multimodal_manifest_with_patients_splits_folds_and_multilabel(tmp_path):
    rows = []
    for i in range(4):
        ct = write_nifti(tmp_path / f"ct{i}.nii.gz", np.zeros((4, 4, 4), np.int16))
        pet = write_nifti(tmp_path / f"pet{i}.nii.gz", np.zeros((2, 2, 2), np.float32))
        rows.append(
            {
                "id": f"c{i}",
                "ct": ct.name,
                "pet": pet.name,
                "label": "a|b" if i == 0 else "ab"[i % 2],
                "patient_id": f"p{i // 2}",
                "fold": str(i % 2),
            }
        )
    manifest = write_manifest(tmp_path / "m.csv", rows)
    table = cases_from_manifest(manifest, modalities=None)
    assert table.modalities == ["ct", "pet"]  # every non-reserved column
    assert table.task == "multilabel" and table.cases[0].labels == ("a", "b")
    assert [c.patient_id for c in table.cases] == ["p0", "p0", "p1", "p1"]
    assert [c.fold for c in table.cases] == [0, 1, 0, 1]
    assert table.cases[1].modalities["pet"] == str((tmp_path / "pet1.nii.gz").resolve())
    assert table.target(table.cases[0]) == [1.0, 1.0]


def test_manifest_row_problems_raise_or_are_collected(tmp_path):
    rows = [
        {"id": "ok1", "image": "a.png", "label": "x"},
        {"id": "ok2", "image": "b.png", "label": "y"},
        {"id": "nopath", "image": "", "label": "x"},
        {"id": "nolabel", "image": "c.png", "label": ""},
        {"id": "unknown", "image": "d.png", "label": "z"},
        {"id": "badsplit", "image": "e.png", "label": "x", "split": "training"},
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows, ["id", "image", "label", "split"])
    with pytest.raises(DataError, match=r"m\.csv: line 4: empty path in column 'image'"):
        cases_from_manifest(manifest, modalities=["image"], classes=["x", "y"])
    table = cases_from_manifest(
        manifest, modalities=["image"], classes=["x", "y"], on_bad="collect"
    )
    assert [c.id for c in table.cases] == ["ok1", "ok2"]
    lines = [str(p) for p in table.problems]
    assert len(lines) == 4 and all(line.startswith(str(manifest)) for line in lines)
    assert "line 5: empty label" in lines[1]
    assert "split 'training'" in lines[2]
    assert "line 6: case 'unknown' has label(s) ['z'] not in data.classes" in lines[3]


def test_missing_modality_column_names_the_columns(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", [{"ct": "a.nii", "label": "x"}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['pet'\]"):
        cases_from_manifest(manifest, modalities=["ct", "pet"])


# ----------------------------------------------------------------- MedMNIST


def _medmnist(path: Path, images: dict, labels: dict) -> Path:
    arrays = {f"{s}_images": v for s, v in images.items()}
    arrays.update({f"{s}_labels": v for s, v in labels.items()})
    np.savez_compressed(path, **arrays)
    return path


def test_medmnist_2d_keeps_official_splits_and_reads_members(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        s: rng.integers(0, 255, (n, 6, 7), dtype=np.uint8)
        for s, n in (("train", 5), ("val", 2), ("test", 3))
    }
    labels = {s: (np.arange(len(v)) % 3).reshape(-1, 1) for s, v in images.items()}
    path = _medmnist(tmp_path / "organamnist.npz", images, labels)
    table = cases_from_medmnist(path, classes=["liver", "kidney", "lung"])
    assert table.task == "multiclass" and table.extra["spatial_dims"] == 2
    assert [c.split for c in table.cases] == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    case = table.cases[6]  # val/1
    assert case.id == "val/1" and case.labels == ("kidney",)
    assert parse_locator(case.modalities["image"])[1:] == ("val_images", 1)
    image = read_source_image(case.modalities["image"], spatial_dims=2)
    assert image.array.shape == (1, 6, 7)
    np.testing.assert_array_equal(image.array[0], images["val"][1])
    # default class names are the label indices
    assert cases_from_medmnist(path).classes == ["0", "1", "2"]


def test_medmnist_rgb_3d_and_multilabel(tmp_path):
    rgb = _medmnist(
        tmp_path / "derma.npz",
        {"train": np.zeros((4, 5, 5, 3), np.uint8), "test": np.ones((2, 5, 5, 3), np.uint8)},
        {"train": np.array([[0], [1], [0], [1]]), "test": np.array([[1], [0]])},
    )
    table = cases_from_medmnist(rgb)
    assert table.task == "binary" and {c.split for c in table.cases} == {"train", "test"}
    assert read_source_image(table.cases[0].modalities["image"]).array.shape == (3, 5, 5)

    vol = np.arange(3 * 4 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4, 4)
    three = _medmnist(
        tmp_path / "nodule3d.npz", {"train": vol}, {"train": np.array([[0], [1], [1]])}
    )
    table = cases_from_medmnist(three)
    assert table.extra["spatial_dims"] == 3
    array = load_case(table.cases[2], ["image"], 3)["image"]
    np.testing.assert_array_equal(array[0], vol[2])

    multi = _medmnist(
        tmp_path / "chest.npz",
        {"train": np.zeros((3, 4, 4), np.uint8)},
        {"train": np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]])},
    )
    table = cases_from_medmnist(multi, classes=["a", "b", "c"])
    assert table.task == "multilabel"
    assert [c.labels for c in table.cases] == [("a", "c"), (), ("b",)]


def test_medmnist_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        cases_from_medmnist(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", image=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"expected a MedMNIST \.npz"):
        cases_from_medmnist(tmp_path / "other.npz")
    np.savez(tmp_path / "nolabels.npz", train_images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="no 'train_labels' array"):
        cases_from_medmnist(tmp_path / "nolabels.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"broken\.npz: cannot read MedMNIST \.npz file"):
        cases_from_medmnist(tmp_path / "broken.npz")
    path = _medmnist(
        tmp_path / "m.npz",
        {"train": np.zeros((3, 4, 4), np.uint8)},
        {"train": np.array([[0], [1], [5]])},
    )
    table = cases_from_medmnist(path, classes=["a", "b"], on_bad="collect")
    assert [c.id for c in table.cases] == ["train/0", "train/1"]
    assert "train_labels[2] = 5 is not a class index" in str(table.problems[0])


# ------------------------------------------------------------- ChestX-ray14


def test_chestxray14_labels_patients_official_split_and_image_search(tmp_path):
    csv_path = tmp_path / "Data_Entry_2017.csv"
    names = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]
    write_png(tmp_path / "images_001" / "images" / names[0], _img(10))
    write_png(tmp_path / "images_001" / "images" / names[1], _img(20))
    write_png(tmp_path / "images_002" / "images" / names[2], _img(30))
    write_manifest(
        csv_path,
        [
            {
                "Image Index": names[0],
                "Finding Labels": "Cardiomegaly|Effusion",
                "Follow-up #": "0",
                "Patient ID": "1",
            },
            {
                "Image Index": names[1],
                "Finding Labels": "No Finding",
                "Follow-up #": "1",
                "Patient ID": "1",
            },
            {
                "Image Index": names[2],
                "Finding Labels": "Effusion",
                "Follow-up #": "0",
                "Patient ID": "2",
            },
            {
                "Image Index": names[3],
                "Finding Labels": "Hernia",
                "Follow-up #": "0",
                "Patient ID": "3",
            },
        ],
    )
    (tmp_path / "test_list.txt").write_text(names[2] + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join([*names[:2], names[3]]) + "\n")
    table = cases_from_chestxray14(csv_path)
    assert table.task == "multilabel"
    assert table.classes == ["Cardiomegaly", "Effusion", "Hernia"]
    by_id = {c.id: c for c in table.cases}
    assert by_id[names[1]].labels == () and by_id[names[0]].labels == ("Cardiomegaly", "Effusion")
    assert by_id[names[0]].patient_id == by_id[names[1]].patient_id == "1"
    assert by_id[names[2]].split == "test" and by_id[names[0]].split == "train"
    assert "images_002" in by_id[names[2]].modalities["image"]
    # a listed image that is missing keeps the path it would have; reading names it
    with pytest.raises(DataError, match=r"00000003_000\.png: no such file"):
        load_case(by_id[names[3]], ["image"], 2)


def test_chestxray14_errors(tmp_path):
    csv_path = write_manifest(tmp_path / "d.csv", [{"Image Index": "a.png", "Finding Labels": "x"}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['Patient ID'\]"):
        cases_from_chestxray14(csv_path)
    csv_path = write_manifest(
        tmp_path / "e.csv",
        [
            {"Image Index": "a.png", "Finding Labels": "Mass", "Patient ID": "1"},
            {"Image Index": "b.png", "Finding Labels": "Nodule", "Patient ID": "2"},
            {"Image Index": "c.png", "Finding Labels": "Mass", "Patient ID": "3"},
        ],
    )
    (tmp_path / "test_list.txt").write_text("a.png\n")
    (tmp_path / "train_val_list.txt").write_text("b.png\n")
    with pytest.raises(
        DataError, match=r"'c\.png' is in neither test_list\.txt nor train_val_list\.txt"
    ):
        cases_from_chestxray14(csv_path)
    table = cases_from_chestxray14(csv_path, on_bad="collect")
    assert [c.id for c in table.cases] == ["a.png", "b.png"] and len(table.problems) == 1


# ------------------------------------------------------------------ presets


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_preset_is_a_valid_config(preset):
    cfg = load_config(PRESETS / f"{preset}.yaml")
    assert cfg.data.source in (
        "csv",
        "folder",
        "medmnist",
        "chestxray14",
    ) or cfg.data.source.startswith("demo-")


def test_load_cases_dispatches_and_checks_config(tmp_path):
    for i, cls in enumerate(["a", "b"]):
        write_png(tmp_path / "f" / cls / f"{i}.png", _img(i))
    cfg = load_config(None, ["data.source=folder", f"data.path={tmp_path / 'f'}"])
    assert len(load_cases(cfg.data).cases) == 2
    with pytest.raises(ConfigError, match=r"data\.path: required"):
        load_cases(load_config(None, ["data.source=medmnist"]).data)
    with pytest.raises(ConfigError, match="unknown source 'nifti'"):
        load_cases(load_config(None, ["data.source=nifti", "data.path=x"]).data)
    with pytest.raises(ConfigError, match="one modality per case"):
        load_cases(
            load_config(None, ["data.source=folder", "data.path=x", "data.modalities=[a, b]"]).data
        )
