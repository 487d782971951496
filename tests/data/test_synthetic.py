"""Tests of the built-in synthetic demo datasets (small sizes: 32² images, 16³ volumes)."""

from __future__ import annotations

import csv
import os
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medcls.data import synthetic
from medcls.data.synthetic import (
    DEMO_DATASETS,
    default_cache_dir,
    demo_dataset,
    demo_dataset_dir,
    generate_demo_petct3d,
    generate_demo_xray2d,
)
from medcls.errors import ConfigError, DataError

XRAY = {"num_cases": 14, "size": 32}
PETCT = {"num_cases": 6, "size": 16}


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> Path:
    return generate_demo_xray2d(tmp_path_factory.mktemp("x") / "ds", seed=3, **XRAY)


@pytest.fixture(scope="module")
def petct(tmp_path_factory) -> Path:
    return generate_demo_petct3d(tmp_path_factory.mktemp("p") / "ds", seed=3, **PETCT)


# --------------------------------------------------------------------------- files and manifest


def test_xray_manifest_files_and_masks(xray: Path) -> None:
    rows = _rows(xray)
    assert list(rows[0]) == ["image", "mask", "label", "patient_id"]
    assert len(rows) == XRAY["num_cases"]
    labels = [r["label"] for r in rows]
    assert set(labels) == {"normal", "pneumonia"}
    assert abs(labels.count("normal") - labels.count("pneumonia")) <= 2
    for row in rows:
        image = Image.open(xray.parent / row["image"])
        mask = np.asarray(Image.open(xray.parent / row["mask"]))
        assert image.mode == "L" and image.size == (32, 32)
        assert mask.dtype == np.uint8 and mask.shape == (32, 32)
        assert set(np.unique(mask)) <= {0, 255}
        # a mask is non-empty exactly for the cases that carry an opacity
        assert mask.any() == (row["label"] == "pneumonia"), row
        pixels = np.asarray(image)
        assert pixels.std() > 10  # an image, not a constant


def test_petct_manifest_shapes_dtypes_affine(petct: Path) -> None:
    rows = _rows(petct)
    assert list(rows[0]) == ["ct", "pet", "mask", "label", "patient_id"]
    assert {r["label"] for r in rows} <= {"benign", "malignant"}
    labels = [r["label"] for r in rows]
    assert abs(labels.count("benign") - labels.count("malignant")) <= 2
    fov = DEMO_DATASETS["demo-petct3d"].param("fov_mm")
    expected_zooms = (fov / 16, fov / 16, fov / 16 * 2 / 3)
    for row in rows:
        ct, pet, mask = (nib.load(str(petct.parent / row[k])) for k in ("ct", "pet", "mask"))
        assert ct.get_data_dtype() == np.int16
        assert pet.get_data_dtype() == np.float32
        assert mask.get_data_dtype() == np.uint8
        for img in (ct, pet, mask):
            assert img.shape == (16, 16, 16)
            np.testing.assert_allclose(img.header.get_zooms(), expected_zooms, rtol=1e-6)
            np.testing.assert_allclose(img.affine, ct.affine)  # co-registered
        hu = np.asarray(ct.dataobj)
        suv = np.asarray(pet.dataobj)
        m = np.asarray(mask.dataobj)
        assert hu.min() >= -1024 and hu.min() < -900 and hu.max() > 0  # air and tissue in HU
        assert suv.min() >= 0.0 and suv.max() > 1.0
        assert set(np.unique(m)) == {0, 1}  # every case has a lesion
        # the lesion is soft tissue in the lung on CT and takes up tracer on PET
        assert np.median(hu[m > 0]) > -500
        assert suv[m > 0].mean() > np.median(suv[hu > -900])


def test_dataset_info_says_synthetic(xray: Path) -> None:
    import json

    info = json.loads((xray.parent / "dataset.json").read_text())
    assert info["synthetic"] is True
    assert info["name"] == "demo-xray2d"
    assert info["spec"]["size"] == 32 and info["seed"] == 3


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    ("generate", "kwargs"), [(generate_demo_xray2d, XRAY), (generate_demo_petct3d, PETCT)]
)
def test_same_seed_gives_byte_identical_files(tmp_path: Path, generate, kwargs) -> None:
    a = generate(tmp_path / "a", seed=11, **kwargs).parent
    b = generate(tmp_path / "b", seed=11, **kwargs).parent
    c = generate(tmp_path / "c", seed=12, **kwargs).parent
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    images = [k for k in files_a if k.endswith((".png", ".nii.gz")) and "mask" not in k]
    assert images and all(files_a[k] != files_c[k] for k in images)


@pytest.mark.parametrize(
    ("generate", "kwargs"), [(generate_demo_xray2d, XRAY), (generate_demo_petct3d, PETCT)]
)
def test_more_cases_keep_the_first_ones(tmp_path: Path, generate, kwargs) -> None:
    n = kwargs["num_cases"]
    short = generate(tmp_path / "short", seed=5, **kwargs)
    longer = generate(tmp_path / "long", seed=5, num_cases=n + 4, size=kwargs["size"])
    assert _rows(longer)[:n] == _rows(short)
    for row in _rows(short):
        for column in row:
            if column not in ("label", "patient_id"):
                assert (short.parent / row[column]).read_bytes() == (
                    longer.parent / row[column]
                ).read_bytes()


def test_case_plan_is_balanced_grouped_and_prefix_stable() -> None:
    plan = synthetic._case_plan(1000, seed=0, followup_fraction=0.15)
    labels = np.array([c.label for c in plan])
    assert abs(int((labels == 0).sum()) - int((labels == 1).sum())) <= 2
    by_patient = defaultdict(list)
    for case in plan:
        by_patient[case.patient].append(case)
    sizes = np.array([len(v) for v in by_patient.values()])
    assert sizes.max() == 2  # at most one follow-up per patient
    share = (sizes == 2).sum() / len(plan)
    assert 0.08 < share < 0.2  # ~15 % of images are follow-ups
    for cases in by_patient.values():
        assert len({c.label for c in cases}) == 1
        assert cases[0].index == cases[0].patient and cases[0].visit == 0
    assert synthetic._case_plan(300, seed=0, followup_fraction=0.15) == plan[:300]


def test_follow_up_images_share_patient_and_label(tmp_path: Path) -> None:
    manifest = generate_demo_xray2d(tmp_path / "ds", num_cases=40, size=32, seed=0)
    groups = defaultdict(list)
    for row in _rows(manifest):
        groups[row["patient_id"]].append(row)
    pairs = [rows for rows in groups.values() if len(rows) == 2]
    assert pairs, "expected some patients with a follow-up image"
    for first, second in pairs:
        assert first["label"] == second["label"]
        a = np.asarray(Image.open(manifest.parent / first["image"]), dtype=float)
        b = np.asarray(Image.open(manifest.parent / second["image"]), dtype=float)
        assert not np.array_equal(a, b)  # new pose and noise
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.6  # same anatomy


# --------------------------------------------------------------------------- cache


def test_demo_dataset_caches_and_reuses(tmp_path: Path, monkeypatch) -> None:
    manifest = demo_dataset("demo-xray2d", cache_dir=tmp_path, seed=1, **XRAY)
    assert manifest.name == "manifest.csv" and manifest.is_file()
    assert manifest.parent == demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=1, **XRAY)

    def boom(*args, **kwargs):
        raise AssertionError("the cached dataset should have been reused")

    monkeypatch.setitem(synthetic._GENERATORS, "demo-xray2d", boom)
    assert demo_dataset("demo-xray2d", cache_dir=tmp_path, seed=1, **XRAY) == manifest
    assert [p.name for p in tmp_path.iterdir()] == [manifest.parent.name]


def test_cache_key_changes_with_every_parameter(tmp_path: Path, monkeypatch) -> None:
    base = demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=0, **XRAY)
    assert base.name.startswith("demo-xray2d-")
    others = {
        demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=1, **XRAY),
        demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=0, num_cases=15, size=32),
        demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=0, num_cases=14, size=33),
        demo_dataset_dir("demo-petct3d", cache_dir=tmp_path, seed=0, **XRAY),
    }
    assert base not in others and len(others) == 4
    # a changed default generator parameter or generator version is a new dataset
    spec = DEMO_DATASETS["demo-xray2d"]
    monkeypatch.setitem(DEMO_DATASETS, "demo-xray2d", spec.replace(opacity_contrast=0.5))
    changed_param = demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=0, **XRAY)
    monkeypatch.setitem(DEMO_DATASETS, "demo-xray2d", spec)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    changed_version = demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, seed=0, **XRAY)
    assert len({base, changed_param, changed_version}) == 3


def test_default_cache_dir_follows_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDCLS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "datasets"
    monkeypatch.delenv("MEDCLS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "medcls" / "datasets"


# --------------------------------------------------------------------------- atomic generation


def test_leftover_temp_folder_does_not_break_generation(tmp_path: Path) -> None:
    final = demo_dataset_dir("demo-xray2d", cache_dir=tmp_path, **XRAY)
    fresh = tmp_path / f".tmp-{final.name}-999999-deadbeef"  # killed run, recent
    (fresh / "images").mkdir(parents=True)
    (fresh / "images" / "half.png").write_bytes(b"not a png")
    stale = tmp_path / f".tmp-{final.name}-999998-deadbeef"  # killed run, long ago
    stale.mkdir()
    old = time.time() - 7 * 24 * 3600
    os.utime(stale, (old, old))
    manifest = demo_dataset("demo-xray2d", cache_dir=tmp_path, **XRAY)
    assert manifest.parent == final and len(_rows(manifest)) == XRAY["num_cases"]
    assert fresh.exists()  # may belong to a running process: left alone
    assert not stale.exists()  # cleaned up


def test_killed_generation_leaves_no_dataset(tmp_path: Path, monkeypatch) -> None:
    real = synthetic._GENERATORS["demo-xray2d"]

    def dies_half_way(out_dir, **kwargs):
        Path(out_dir, "images").mkdir(parents=True)
        Path(out_dir, "images", "cxr00000.png").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setitem(synthetic._GENERATORS, "demo-xray2d", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        demo_dataset("demo-xray2d", cache_dir=tmp_path, **XRAY)
    assert list(tmp_path.iterdir()) == []  # neither a final folder nor a temp folder
    monkeypatch.setitem(synthetic._GENERATORS, "demo-xray2d", real)
    manifest = demo_dataset("demo-xray2d", cache_dir=tmp_path, **XRAY)
    assert len(_rows(manifest)) == XRAY["num_cases"]


def test_race_keeps_the_first_complete_copy(tmp_path: Path) -> None:
    final = tmp_path / "ds"
    winner = generate_demo_xray2d(tmp_path / "a", seed=0, **XRAY).parent
    loser = generate_demo_xray2d(tmp_path / "b", seed=0, **XRAY).parent
    os.rename(winner, final)
    before = _files(final)
    synthetic._publish(loser, final)  # the second process finds the folder taken
    assert _files(final) == before
    # a final folder without a manifest (not ours) is replaced by the new copy
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    synthetic._publish(final, broken)
    assert (broken / "manifest.csv").is_file()


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"demo-petct3d.*demo-xray2d"):
        demo_dataset("demo-mri", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs", [{"seed": -1}, {"size": 4}, {"num_cases": 1}, {"num_cases": 2.5}, {"seed": True}]
)
def test_invalid_arguments_raise_config_error(tmp_path: Path, kwargs) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        demo_dataset("demo-xray2d", cache_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_spec_replace_and_param() -> None:
    spec = DEMO_DATASETS["demo-petct3d"]
    assert spec.columns == ("ct", "pet", "mask", "label", "patient_id")
    changed = spec.replace(num_cases=10, malignant_suv=9.0)
    assert changed.num_cases == 10 and changed.param("malignant_suv") == 9.0
    assert spec.param("malignant_suv") != 9.0  # frozen original unchanged
    with pytest.raises(ConfigError, match="no_such_knob"):
        spec.replace(no_such_knob=1)
    with pytest.raises(ConfigError, match="no_such_knob"):
        spec.param("no_such_knob")


def test_non_empty_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DataError, match="empty"):
        generate_demo_xray2d(tmp_path, **XRAY)


def test_segments_field_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    starts = rng.uniform(-0.7, 0.7, (5, 3))
    ends = starts + rng.normal(0, 0.3, (5, 3))
    widths, amps = rng.uniform(0.03, 0.06, 5), rng.uniform(0.5, 1.0, 5)
    pose = synthetic._Pose(angle=0.2, scale=1.1, shift=(0.05, -0.02, 0.01))
    field = synthetic._segments_field(16, pose, starts, ends, widths, amps)
    grid = np.stack(np.meshgrid(*[synthetic._pixel_centres(16)] * 3, indexing="ij"), axis=-1)
    a, b = pose.to_image(starts), pose.to_image(ends)
    expected = np.zeros(field.shape)
    for k in range(5):
        ab = b[k] - a[k]
        t = np.clip(((grid - a[k]) @ ab) / (ab @ ab), 0, 1)
        d2 = ((grid - a[k] - t[..., None] * ab) ** 2).sum(-1)
        expected += amps[k] * np.exp(-d2 / (2 * (widths[k] * pose.scale) ** 2))
    np.testing.assert_allclose(field, expected, atol=3e-3)  # tubes cut at 3.5 widths
    # the pose maps patient points to image points and back
    coords = pose.patient_grid(16, 3)
    assert coords[0].shape == (16, 16, 16)
    image = pose.to_image(np.stack([c[3, 5, 7] for c in coords]))
    np.testing.assert_allclose(image, synthetic._pixel_centres(16)[[3, 5, 7]], atol=1e-12)
