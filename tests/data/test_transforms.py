"""Preprocessing and augmentation: grids, crops, intensity presets, seeded random transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcls.config import load_config
from medcls.config.schema import AugmentConfig, IntensityConfig, PreprocessConfig
from medcls.data.cases import Case, CaseTable
from medcls.data.dataset import CaseDataset
from medcls.data.transforms import (
    BatchAugment,
    build_augment,
    build_preprocess,
    resolve_augment,
    resolve_intensity,
)
from medcls.errors import ConfigError, DataError

try:
    from tests.data.data_utils import write_nifti, write_png
except ImportError:  # pragma: no cover
    from data_utils import write_nifti, write_png


def _cfg(section: str, *overrides: str):
    return getattr(load_config(None, [f"{section}.{o}" for o in overrides]), section)


def _dataset(cases, modalities, preprocess_cfg, spatial_dims, augment=None, **kwargs):
    table = CaseTable(list(cases), ["a", "b"], "binary", list(modalities))
    pre = build_preprocess(preprocess_cfg, modalities, spatial_dims, with_mask=True)
    return CaseDataset(table, cases, pre, augment, spatial_dims=spatial_dims, **kwargs)


def _linear_field(shape, affine):
    """Values f(world) = x + 2y + 3z at every voxel of a grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return (world[..., 0] + 2 * world[..., 1] + 3 * world[..., 2]).astype(np.float32)


@pytest.fixture
def petct(tmp_path):
    """CT 16^3 at 1 mm; PET 8^3 at 2 mm, shifted and stored with x reversed."""
    ct_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    pet_affine = np.array(
        [[-2.0, 0, 0, 14.5], [0, 2.0, 0, 0.5], [0, 0, 2.0, 0.5], [0, 0, 0, 1]], dtype=float
    )
    ct = _linear_field((16, 16, 16), ct_affine) * 10 - 500
    pet = _linear_field((8, 8, 8), pet_affine)
    files = {
        "ct": str(write_nifti(tmp_path / "ct.nii.gz", ct, ct_affine)),
        "pet": str(write_nifti(tmp_path / "pet.nii.gz", pet, pet_affine)),
    }
    return Case("case1", files, ("a",)), ct, pet


def test_pet_is_resampled_onto_the_ct_grid_through_the_affines(petct):
    case, ct, _ = petct
    cfg = _cfg("preprocess", "intensity={ct: {mode: none}, pet: {mode: none}}")
    item = _dataset([case], ["ct", "pet"], cfg, 3).prepare(0)
    assert item["ct"].shape == item["pet"].shape == (1, 16, 16, 16)
    np.testing.assert_allclose(item["ct"][0].numpy(), ct, atol=1e-3)  # reference untouched
    # the PET voxel centres span world 0.5 .. 14.5 mm: inside, linear interpolation is exact
    expected = _linear_field((16, 16, 16), np.eye(4))[1:15, 1:15, 1:15]
    np.testing.assert_allclose(item["pet"][0, 1:15, 1:15, 1:15].numpy(), expected, atol=1e-3)


def test_pet_as_reference_and_unknown_reference(petct):
    case, _, pet = petct
    cfg = _cfg(
        "preprocess", "reference_modality=pet", "intensity={ct: {mode: none}, pet: {mode: none}}"
    )
    item = _dataset([case], ["ct", "pet"], cfg, 3).prepare(0)
    assert item["ct"].shape == (1, 8, 8, 8)
    np.testing.assert_allclose(item["pet"][0].numpy(), pet, atol=1e-4)
    with pytest.raises(ConfigError, match="reference_modality: 'mr' is not one of"):
        build_preprocess(_cfg("preprocess", "reference_modality=mr"), ["ct", "pet"], 3)


def test_flip_is_applied_to_every_modality_identically(petct):
    case, _, _ = petct
    pre = _cfg(
        "preprocess",
        "spatial_size=[12, 12, 12]",
        "intensity={ct: {preset: ct_lung}, pet: {preset: pet_suv}}",
    )
    aug = _cfg("augment", "flip_prob=1.0", "flip_axes=[1]")
    table_aug = build_augment(aug, ["ct", "pet"], 3)
    plain = _dataset([case], ["ct", "pet"], pre, 3).prepare(0)
    flipped = _dataset([case], ["ct", "pet"], pre, 3, augment=table_aug)[0]
    for name in ("ct", "pet"):
        assert torch.equal(flipped[name], torch.flip(plain[name], dims=[2])), name


def test_affine_and_elastic_move_modalities_alike_but_intensity_is_per_modality(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    files = {m: str(write_nifti(tmp_path / f"{m}.nii.gz", volume)) for m in ("ct", "pet")}
    case = Case("c", files, ("a",))
    pre = _cfg("preprocess", "intensity={ct: {mode: none}, pet: {mode: none}}")
    spatial = _cfg(
        "augment",
        "affine_prob=1",
        "rotate_deg=20",
        "scale=0.1",
        "elastic_prob=1",
        "elastic_magnitude=2",
        "elastic_spacing=4",
    )
    ds = _dataset([case], ["ct", "pet"], pre, 3, augment=build_augment(spatial, ["ct", "pet"], 3))
    sample = ds[0]
    assert torch.equal(sample["ct"], sample["pet"])
    assert not torch.allclose(sample["ct"], ds.prepare(0)["ct"])
    jitter = _cfg("augment", "intensity_scale=0.5", "noise_std=0.1", "blur_prob=1")
    ds = _dataset([case], ["ct", "pet"], pre, 3, augment=build_augment(jitter, ["ct", "pet"], 3))
    sample = ds[0]
    assert not torch.allclose(sample["ct"], sample["pet"])


def test_augmentation_is_seeded_by_seed_epoch_and_index(tmp_path):
    files = [
        write_png(
            tmp_path / f"{i}.png", (np.arange(256).reshape(16, 16) * (i + 1) % 256).astype(np.uint8)
        )
        for i in range(2)
    ]
    cases = [Case(f"c{i}", {"image": str(f)}, ("a",)) for i, f in enumerate(files)]
    pre = _cfg("preprocess", "intensity={image: {mode: range, a_min: 0, a_max: 255}}")
    aug = build_augment(_cfg("augment", "preset=xray", "elastic_prob=0.5"), ["image"], 2)
    a = _dataset(cases, ["image"], pre, 2, augment=aug, seed=3)
    b = _dataset(
        cases,
        ["image"],
        pre,
        2,
        augment=build_augment(_cfg("augment", "preset=xray", "elastic_prob=0.5"), ["image"], 2),
        seed=3,
    )
    assert torch.equal(b[1]["image"], a[1]["image"]) and torch.equal(b[0]["image"], a[0]["image"])
    first = a[1]["image"]
    a.set_epoch(1)
    assert not torch.equal(a[1]["image"], first)
    a.set_epoch(0)
    assert torch.equal(a[1]["image"], first)


def test_spacing_orientation_crop_and_pad(tmp_path):
    volume = np.zeros((16, 16, 8), np.float32)
    volume[4:12, 6:10, 2:6] = 100.0
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    files = {"ct": str(write_nifti(tmp_path / "ct.nii.gz", volume, affine))}
    mask = np.zeros_like(volume)
    mask[5:7, 6:8, 3:4] = 1
    case = Case("c", files, ("a",), mask=str(write_nifti(tmp_path / "m.nii.gz", mask, affine)))
    none = "intensity={ct: {mode: none}}"
    item = _dataset([case], ["ct"], _cfg("preprocess", "spacing=[2, 2, 2]", none), 3).prepare(0)
    assert item["ct"].shape == (1, 8, 8, 8)
    cfg = _cfg("preprocess", "orientation=LPS", none)
    flipped = _dataset([case], ["ct"], cfg, 3).prepare(0)["ct"]
    assert torch.equal(flipped[0], torch.from_numpy(volume[::-1, ::-1].copy()))
    cfg = _cfg("preprocess", "crop_foreground=ct", "foreground_threshold=50", "crop_margin=1", none)
    crop = _dataset([case], ["ct"], cfg, 3).prepare(0)["ct"]
    assert crop.shape == (1, 10, 6, 6) and float(crop.min()) == 0.0
    cfg = _cfg("preprocess", "crop_foreground=mask", none)
    ds = _dataset([case], ["ct"], cfg, 3, with_mask=True, mask_for_preprocess=True)
    item = ds.prepare(0)
    assert item["ct"].shape == item["mask"].shape == (1, 2, 2, 1)
    cfg = _cfg("preprocess", "spatial_size=[20, 10, 8]", "size_mode=pad_crop", none)
    padded = _dataset([case], ["ct"], cfg, 3).prepare(0)["ct"]
    assert padded.shape == (1, 20, 10, 8) and float(padded.sum()) == float(volume[:, 3:13].sum())
    # a mask crop needs a mask
    maskless = Case("m", files, ("a",))
    ds = _dataset(
        [maskless], ["ct"], _cfg("preprocess", "crop_foreground=mask"), 3, mask_for_preprocess=True
    )
    with pytest.raises(DataError, match="case 'm' has no mask"):
        ds.prepare(0)
    # nothing above the threshold: an error naming the case, not an empty tensor
    cfg = _cfg("preprocess", "crop_foreground=ct", "foreground_threshold=1000", none)
    with pytest.raises(DataError, match=r"case 'c'.*empty after preprocessing"):
        _dataset([case], ["ct"], cfg, 3).prepare(0)


def test_mismatched_shapes_name_the_case(tmp_path):
    files = {
        "a": str(write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))),
        "b": str(write_png(tmp_path / "b.png", np.ones((8, 10), np.uint8))),
    }
    ds = _dataset([Case("twoviews", files, ("a",))], ["a", "b"], PreprocessConfig(), 2)
    with pytest.raises(DataError, match=r"case 'twoviews': modalities have different shapes"):
        ds.prepare(0)
    cfg = _cfg("preprocess", "spatial_size=[8, 8]")
    assert _dataset([Case("twoviews", files, ("a",))], ["a", "b"], cfg, 2).prepare(0)[
        "b"
    ].shape == (1, 8, 8)


def test_intensity_presets():
    lung = resolve_intensity(IntensityConfig(preset="ct_lung"), "ct")
    assert (lung.mode, lung.a_min, lung.a_max, lung.clip) == ("range", -1000.0, 400.0, True)
    assert resolve_intensity(IntensityConfig(preset="pet_suv"), "pet").clip is False
    with pytest.raises(ConfigError, match="either preset"):
        resolve_intensity(IntensityConfig(preset="ct_lung", a_min=0), "ct")
    with pytest.raises(ConfigError, match="unknown preset 'lungs'"):
        resolve_intensity(IntensityConfig(preset="lungs"), "ct")
    pre = build_preprocess(
        _cfg(
            "preprocess",
            "intensity={ct: {preset: ct_lung}, pet: {preset: pet_suv}, mr: {preset: mri}}",
        ),
        ["ct", "pet", "mr"],
        2,
    )
    mr = np.zeros((1, 4, 4), np.float32)
    mr[0, 1:3, 1:3] = [[1, 2], [3, 4]]
    out = pre(
        {
            "ct": np.array([[[-2000, -1000, 400, 1000]]], np.float32),
            "pet": np.array([[[0, 15, 30, 1]]], np.float32),
            "mr": mr,
        }
    )
    np.testing.assert_allclose(out["ct"].numpy(), [[[0, 0, 1, 1]]])
    np.testing.assert_allclose(out["pet"].numpy(), [[[0, 1, 2, 1 / 15]]], rtol=1e-6)
    inside = out["mr"][0, 1:3, 1:3]
    assert abs(float(inside.mean())) < 1e-6 and float(out["mr"][0, 0, 0]) == 0.0
    with pytest.raises(ConfigError, match=r"\['mri'\] are not modalities"):
        build_preprocess(_cfg("preprocess", "intensity={mri: {mode: zscore}}"), ["ct"], 3)


def test_augment_presets_fill_only_keys_left_at_default():
    ct = resolve_augment(AugmentConfig(preset="ct"))
    assert ct.flip_prob == 0.5 and ct.elastic_prob == 0.0 and ct.preset == "none"
    mri = resolve_augment(AugmentConfig(preset="mri", rotate_deg=5.0))
    assert mri.rotate_deg == 5.0 and mri.elastic_prob > 0 and mri.bias_field_prob > 0
    assert resolve_augment(AugmentConfig(preset="xray")).flip_prob == 0.0
    assert build_augment(AugmentConfig(), ["image"], 2) is None


def test_batch_augment_is_per_sample_and_modalities_share_the_geometry():
    cfg = AugmentConfig(
        flip_prob=0.5,
        affine_prob=0.8,
        rotate_deg=30,
        scale=0.1,
        translate=0.1,
        intensity_scale=0.2,
        noise_std=0.05,
    )
    aug = BatchAugment(cfg, ["ct", "pet"], 3, seed=1)
    torch.manual_seed(0)
    images = torch.rand(4, 1, 8, 10, 12)
    batch = {"ct": images.clone(), "pet": images.clone(), "index": torch.tensor([0, 1, 2, 3])}
    out = aug(dict(batch), epoch=2)
    assert out["ct"].shape == images.shape and not torch.allclose(out["ct"], out["pet"])
    # same geometry, independent intensity: without intensity jitter both are equal
    geo = BatchAugment(
        AugmentConfig(flip_prob=0.5, affine_prob=1.0, rotate_deg=30, scale=0.1),
        ["ct", "pet"],
        3,
        seed=1,
    )
    shared = geo(dict(batch), epoch=2)
    assert torch.equal(shared["ct"], shared["pet"]) and not torch.allclose(shared["ct"], images)
    # a sample's result does not depend on the rest of the batch
    single = aug(
        {"ct": images[2:3].clone(), "pet": images[2:3].clone(), "index": torch.tensor([2])}, epoch=2
    )
    torch.testing.assert_close(single["ct"][0], out["ct"][2])
    # a pure flip reproduces torch.flip (up to float rounding of the sampling grid)
    flip = BatchAugment(AugmentConfig(flip_prob=1.0, flip_axes=[2]), ["ct"], 3)
    flipped = flip({"ct": images.clone(), "index": torch.arange(4)}, epoch=0)["ct"]
    torch.testing.assert_close(flipped, torch.flip(images, dims=[4]), atol=1e-5, rtol=0)
