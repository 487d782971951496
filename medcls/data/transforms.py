"""Preprocessing and augmentation pipelines built from the configuration.

Samples are dictionaries keyed by modality name (``{"ct": (C, *spatial), "pet": ...}``,
plus an optional ``mask``). Spatial transforms draw their random parameters once per
sample and apply them to every modality (and the mask) alike; intensity transforms
act per modality, each with its own random draw. The pipeline is split where
randomness starts: :func:`build_preprocess` is deterministic (its output can be
cached), :func:`build_augment` is random and seeded per sample by the dataset.
MONAI's dictionary transforms do the work; the few steps MONAI lacks
(:class:`AlignToReferenced`, :class:`RandElasticd`, :class:`BatchAugment`) are
written once for 2D and 3D.

Deterministic steps, in order: 3D modalities (and the mask) resampled onto the
reference modality's grid through their affines; ``orientation``; ``spacing``;
``crop_foreground``; intensity scaling per modality; ``spatial_size`` (resize or
pad/crop).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

from medcls.config.schema import AugmentConfig, IntensityConfig, PreprocessConfig
from medcls.errors import ConfigError

__all__ = [
    "AUGMENT_PRESETS",
    "INTENSITY_PRESETS",
    "MASK_KEY",
    "AlignToReferenced",
    "BatchAugment",
    "RandElasticd",
    "RandFlipAffined",
    "RandNoised",
    "build_augment",
    "build_preprocess",
    "intensity_transform",
    "resolve_augment",
    "resolve_intensity",
]

MASK_KEY = "mask"

#: Named intensity settings (``preprocess.intensity.<modality>.preset``).
INTENSITY_PRESETS: dict[str, dict] = {
    "ct_lung": {"mode": "range", "a_min": -1000.0, "a_max": 400.0, "clip": True},
    "ct_mediastinum": {"mode": "range", "a_min": -160.0, "a_max": 240.0, "clip": True},
    "ct_soft_tissue": {"mode": "range", "a_min": -125.0, "a_max": 225.0, "clip": True},
    "ct_bone": {"mode": "range", "a_min": -500.0, "a_max": 1300.0, "clip": True},
    "ct_brain": {"mode": "range", "a_min": 0.0, "a_max": 80.0, "clip": True},
    "pet_suv": {"mode": "range", "a_min": 0.0, "a_max": 15.0, "clip": False},
    "mri": {"mode": "zscore", "nonzero": True},
}

#: Augmentation defaults per imaging type (``augment.preset``); a key the user set
#: to something other than its schema default wins over the preset.
AUGMENT_PRESETS: dict[str, dict] = {
    # CT: HU are calibrated, so only mild intensity changes; no elastic deformation
    "ct": {
        "flip_prob": 0.5,
        "affine_prob": 0.3,
        "rotate_deg": 15.0,
        "scale": 0.1,
        "translate": 0.05,
        "intensity_scale": 0.05,
        "intensity_shift": 0.05,
        "noise_std": 0.02,
        "blur_prob": 0.1,
        "blur_sigma": 1.0,
    },
    # MRI: arbitrary intensity scale and coil bias fields; soft-tissue deformation
    "mri": {
        "flip_prob": 0.5,
        "affine_prob": 0.3,
        "rotate_deg": 15.0,
        "scale": 0.1,
        "translate": 0.05,
        "elastic_prob": 0.2,
        "intensity_scale": 0.15,
        "intensity_shift": 0.1,
        "noise_std": 0.03,
        "blur_prob": 0.15,
        "blur_sigma": 1.0,
        "bias_field_prob": 0.3,
    },
    # chest X-ray: no flips (laterality: the heart is on the left), small affine
    "xray": {
        "affine_prob": 0.5,
        "rotate_deg": 10.0,
        "scale": 0.1,
        "translate": 0.05,
        "intensity_scale": 0.1,
        "intensity_shift": 0.1,
        "noise_std": 0.01,
        "blur_prob": 0.1,
        "blur_sigma": 1.0,
    },
}


# --------------------------------------------------------------- resolution


def resolve_intensity(cfg: IntensityConfig, key: str) -> IntensityConfig:
    """``cfg`` with its ``preset`` expanded into ``mode``/``a_min``/``a_max``/``clip``.

    Raises:
        ConfigError: an unknown preset, or a preset together with ``a_min``/``a_max``.
    """
    if cfg.preset is None:
        return cfg
    if cfg.preset not in INTENSITY_PRESETS:
        raise ConfigError(
            f"preprocess.intensity.{key}.preset: unknown preset {cfg.preset!r}; expected one "
            f"of {', '.join(INTENSITY_PRESETS)}"
        )
    if cfg.a_min is not None or cfg.a_max is not None:
        raise ConfigError(
            f"preprocess.intensity.{key}: give either preset ({cfg.preset!r}) or a_min/a_max"
        )
    return dataclasses.replace(cfg, **INTENSITY_PRESETS[cfg.preset], preset=None)


def resolve_augment(cfg: AugmentConfig) -> AugmentConfig:
    """``cfg`` with its ``preset`` applied to every key left at its schema default."""
    if cfg.preset == "none":
        return cfg
    defaults = AugmentConfig()
    values = {
        name: value
        for name, value in AUGMENT_PRESETS[cfg.preset].items()
        if getattr(cfg, name) == getattr(defaults, name)
    }
    return dataclasses.replace(cfg, **values, preset="none")


def intensity_transform(key: str, cfg: IntensityConfig):
    """The MONAI dictionary transform scaling modality ``key`` as ``cfg`` says (or None)."""
    from monai import transforms as mt

    cfg = resolve_intensity(cfg, key)
    if cfg.mode == "range":
        if cfg.a_min is None or cfg.a_max is None or cfg.a_max <= cfg.a_min:
            raise ConfigError(
                f"preprocess.intensity.{key}: mode 'range' needs a_min < a_max "
                f"(got a_min={cfg.a_min}, a_max={cfg.a_max})"
            )
        return mt.ScaleIntensityRanged(
            key, a_min=cfg.a_min, a_max=cfg.a_max, b_min=0.0, b_max=1.0, clip=cfg.clip
        )
    if cfg.mode == "percentile":
        return mt.ScaleIntensityRangePercentilesd(
            key, lower=cfg.lower, upper=cfg.upper, b_min=0.0, b_max=1.0, clip=cfg.clip
        )
    if cfg.mode == "zscore":
        return mt.NormalizeIntensityd(key, nonzero=cfg.nonzero)
    return None


def _interp_mode(spatial_dims: int) -> str:
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


# ------------------------------------------------------------ deterministic


class _Above:
    """``x > threshold`` (picklable, for CropForeground's ``select_fn``)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, x):
        return x > self.threshold


class AlignToReferenced(MapTransform):
    """Resample modalities (and the mask) onto the grid of a reference modality.

    Each image is a MONAI ``MetaTensor`` whose ``affine`` maps voxel indices to
    world millimetres; an image whose grid (shape and affine) already equals the
    reference's is left untouched, the others are resampled through the two
    affines (PET onto CT), with linear interpolation (nearest for ``mask``) and
    border padding outside the source's field of view.

    Args:
        keys: the keys to bring onto the reference grid (the reference may be among them).
        reference: the key whose grid is kept.
        atol: tolerance (mm) under which two affines count as equal.
    """

    def __init__(self, keys: Sequence[str], reference: str, atol: float = 1e-3) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.reference = reference
        self.atol = atol

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        from monai.transforms import ResampleToMatch

        d = dict(data)
        ref = d[self.reference]
        ref_affine = np.asarray(ref.affine, dtype=np.float64)
        for key in self.key_iterator(d):
            if key == self.reference:
                continue
            img = d[key]
            same_shape = tuple(img.shape[1:]) == tuple(ref.shape[1:])
            if same_shape and np.allclose(
                np.asarray(img.affine, dtype=np.float64), ref_affine, atol=self.atol
            ):
                continue
            mode = "nearest" if key == MASK_KEY else "bilinear"
            d[key] = ResampleToMatch(mode=mode, padding_mode="border", dtype=torch.float32)(
                img, ref
            )
        return d


def build_preprocess(
    cfg: PreprocessConfig, modalities: Sequence[str], spatial_dims: int, *, with_mask: bool = False
):
    """The deterministic part: grids, crops, intensity scaling and size.

    Args:
        cfg: the ``preprocess`` section.
        modalities: keys of the sample holding images (MONAI ``MetaTensor`` with
            their affine, or plain arrays when no step needs geometry).
        spatial_dims: 2 or 3.
        with_mask: also transform the ``mask`` key (nearest neighbour), when present.

    Returns:
        A MONAI ``Compose`` mapping a sample dict to a sample dict of float32
        tensors ``(C, *spatial)``.

    Raises:
        ConfigError: a size, spacing or orientation with the wrong number of axes,
            an unknown reference modality or crop source, or a bad intensity setting.
    """
    from monai import transforms as mt

    keys = list(modalities)
    geo_keys = keys + ([MASK_KEY] if with_mask else [])
    modes = [_interp_mode(spatial_dims)] * len(keys) + ["nearest"] * (len(geo_keys) - len(keys))
    linear = ["bilinear"] * len(keys) + ["nearest"] * (len(geo_keys) - len(keys))
    steps = []
    if spatial_dims == 3:
        reference = cfg.reference_modality or keys[0]
        if reference not in keys:
            raise ConfigError(
                f"preprocess.reference_modality: {reference!r} is not one of the modalities {keys}"
            )
        if len(geo_keys) > 1:
            steps.append(AlignToReferenced(geo_keys, reference))
    elif cfg.reference_modality is not None and cfg.reference_modality not in keys:
        raise ConfigError(
            f"preprocess.reference_modality: {cfg.reference_modality!r} is not one of the "
            f"modalities {keys}"
        )
    if cfg.orientation is not None:
        if len(cfg.orientation) != spatial_dims:
            raise ConfigError(
                f"preprocess.orientation: {cfg.orientation!r} has {len(cfg.orientation)} axis "
                f"codes but the images are {spatial_dims}D"
            )
        steps.append(
            mt.Orientationd(
                geo_keys,
                axcodes=cfg.orientation,
                labels=(("L", "R"), ("P", "A"), ("I", "S")),  # readers give RAS+ affines
                allow_missing_keys=True,
            )
        )
    if cfg.spacing is not None:
        if len(cfg.spacing) != spatial_dims or min(cfg.spacing) <= 0:
            raise ConfigError(
                f"preprocess.spacing: {cfg.spacing} must be {spatial_dims} positive values (mm)"
            )
        steps.append(
            mt.Spacingd(
                geo_keys,
                pixdim=cfg.spacing,
                mode=linear,
                padding_mode="border",
                dtype=np.float32,
                allow_missing_keys=True,
            )
        )
    if cfg.crop_foreground is not None:
        source = cfg.crop_foreground
        if source != MASK_KEY and source not in keys:
            raise ConfigError(
                f"preprocess.crop_foreground: {source!r} is neither 'mask' nor one of the "
                f"modalities {keys}"
            )
        if source == MASK_KEY and not with_mask:
            raise ConfigError("preprocess.crop_foreground: 'mask' needs the cases' masks")
        steps.append(
            mt.CropForegroundd(
                geo_keys,
                source_key=source,
                select_fn=_Above(0.0 if source == MASK_KEY else cfg.foreground_threshold),
                margin=cfg.crop_margin,
                allow_smaller=True,
                start_coord_key=None,
                end_coord_key=None,
                allow_missing_keys=True,
            )
        )
    unknown = sorted(set(cfg.intensity) - set(keys))
    if unknown:
        raise ConfigError(
            f"preprocess.intensity: {unknown} are not modalities of this dataset {keys}"
        )
    for key in keys:
        step = intensity_transform(key, cfg.intensity.get(key, IntensityConfig()))
        if step is not None:
            steps.append(step)
    if cfg.spatial_size is not None:
        if len(cfg.spatial_size) != spatial_dims:
            raise ConfigError(
                f"preprocess.spatial_size: {cfg.spatial_size} has {len(cfg.spatial_size)} "
                f"axes but the images are {spatial_dims}D"
            )
        if cfg.size_mode == "pad_crop":
            steps.append(
                mt.ResizeWithPadOrCropd(
                    geo_keys, spatial_size=cfg.spatial_size, allow_missing_keys=True
                )
            )
        else:
            steps.append(
                mt.Resized(
                    geo_keys,
                    spatial_size=cfg.spatial_size,
                    mode=modes,
                    anti_aliasing=[True] * len(keys) + [False] * (len(geo_keys) - len(keys)),
                    allow_missing_keys=True,
                )
            )
    steps.append(mt.EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    if with_mask:
        steps.append(
            mt.EnsureTyped(MASK_KEY, data_type="tensor", track_meta=False, allow_missing_keys=True)
        )
    return mt.Compose(steps)


# ------------------------------------------------------------------- random


def _identity_grid(shape: Sequence[int], device=None) -> torch.Tensor:
    """``(*shape, D)`` grid of normalised coordinates in grid_sample's (x, y, z) order."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh[::-1], dim=-1)


class RandElasticd(RandomizableTransform, MapTransform):
    """Random smooth deformation of every key alike, for 2D and 3D.

    Displacements are drawn uniformly in ``[-magnitude, magnitude]`` voxels per axis
    at control points ``spacing`` voxels apart and interpolated linearly to every
    voxel; images are resampled linearly (``mask`` by nearest neighbour) with border
    padding.

    Args:
        keys: sample keys holding ``(C, *spatial)`` tensors of one shape.
        prob: probability of deforming a sample.
        magnitude: largest displacement, voxels.
        spacing: distance between control points, voxels.
    """

    def __init__(self, keys: Sequence[str], prob: float, magnitude: float, spacing: float) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        if spacing <= 0:
            raise ConfigError(f"augment.elastic_spacing must be positive, got {spacing}")
        self.magnitude = float(magnitude)
        self.spacing = float(spacing)
        self._control: np.ndarray | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        grid = [max(2, math.ceil((n - 1) / self.spacing) + 1) for n in spatial_shape]
        self._control = self.R.uniform(
            -self.magnitude, self.magnitude, size=(len(spatial_shape), *grid)
        ).astype(np.float32)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        first = torch.as_tensor(d[present[0]])
        shape = tuple(first.shape[1:])
        self.randomize(shape)
        if not self._do_transform:
            return d
        dims = len(shape)
        control = torch.from_numpy(self._control).to(first.device)[None]
        disp = F.interpolate(control, size=shape, mode=_interp_mode(dims), align_corners=True)[0]
        # voxels -> normalised units per axis, then grid_sample's reversed axis order
        scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], device=first.device)
        disp = (disp * scale.view(dims, *([1] * dims))).permute(*range(1, dims + 1), 0)
        grid = (_identity_grid(shape, first.device) + disp.flip(-1))[None]
        for key in present:
            img = torch.as_tensor(d[key])
            mode = "nearest" if key == MASK_KEY else "bilinear"
            out = F.grid_sample(
                img[None].float(), grid, mode=mode, padding_mode="border", align_corners=True
            )[0]
            d[key] = out.to(img.dtype)
        return d


def build_augment(cfg: AugmentConfig, modalities: Sequence[str], spatial_dims: int):
    """The random part run in the loader; ``None`` if nothing is enabled.

    Spatial steps (flips, affine, elastic) move every modality and the ``mask``
    alike; intensity steps (bias field, scaling, shift, blur, noise) draw their
    parameters per modality. With ``cfg.on_device`` the flips, affine, scaling,
    shift and noise are left to :class:`BatchAugment` on the training device.

    Args:
        cfg: the ``augment`` section (its preset is applied here).
        modalities: keys of the sample holding images.
        spatial_dims: 2 or 3 (shifts are relative to each sample's own size).

    Returns:
        A MONAI ``Compose`` (``Randomizable``: seed it with ``set_random_state``) or None.
    """
    from monai import transforms as mt

    cfg = resolve_augment(cfg)
    keys = list(modalities)
    geo = [*keys, MASK_KEY]
    steps = []
    loader = not cfg.on_device
    spatial = cfg.flip_prob > 0 or (
        cfg.affine_prob > 0 and (cfg.rotate_deg or cfg.scale or cfg.translate)
    )
    if loader and spatial:
        steps.append(RandFlipAffined(geo, cfg))
    if cfg.elastic_prob > 0 and cfg.elastic_magnitude > 0:
        steps.append(
            RandElasticd(geo, cfg.elastic_prob, cfg.elastic_magnitude, cfg.elastic_spacing)
        )
    for key in keys:  # one transform per modality: independent intensity draws
        if cfg.bias_field_prob > 0:
            steps.append(
                mt.RandBiasFieldd(
                    key, coeff_range=(0.0, cfg.bias_field_coeff), prob=cfg.bias_field_prob
                )
            )
        if loader and cfg.intensity_scale > 0:
            steps.append(mt.RandScaleIntensityd(key, factors=cfg.intensity_scale, prob=1.0))
        if loader and cfg.intensity_shift > 0:
            steps.append(mt.RandShiftIntensityd(key, offsets=cfg.intensity_shift, prob=1.0))
        if cfg.blur_prob > 0 and cfg.blur_sigma > 0:
            sigma = (min(0.25, cfg.blur_sigma), cfg.blur_sigma)
            steps.append(
                mt.RandGaussianSmoothd(
                    key, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=cfg.blur_prob
                )
            )
        if loader and cfg.noise_std > 0:
            steps.append(RandNoised([key], cfg.noise_std))
    if not steps:
        return None
    steps.append(mt.EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    return mt.Compose(steps)


def _draw_spatial(
    rng, cfg: AugmentConfig, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[int], bool]:
    """Random flips and affine of one sample.

    Args:
        rng: a NumPy ``RandomState`` or ``Generator`` (only ``uniform`` is used).
        cfg: the resolved ``augment`` section.
        shape: the spatial shape.

    Returns:
        ``(matrix, shift, flipped_axes, affine)``: the ``(D, D)`` linear map (flips
        included) and the ``(D,)`` shift in voxels of the map input -> output about
        the centre, the flipped axes, and whether a rotation/zoom/shift was drawn.
    """
    dims = len(shape)
    axes = range(dims) if cfg.flip_axes is None else cfg.flip_axes
    flipped = [a for a in axes if cfg.flip_prob > 0 and rng.uniform() < cfg.flip_prob]
    matrix, shift = np.eye(dims), np.zeros(dims)
    affine = bool(
        cfg.affine_prob > 0
        and (cfg.rotate_deg or cfg.scale or cfg.translate)
        and rng.uniform() < cfg.affine_prob
    )
    if affine:
        count = 1 if dims == 2 else 3
        angles = rng.uniform(-1.0, 1.0, size=count) * math.radians(cfg.rotate_deg)
        zoom = 1.0 + rng.uniform(-cfg.scale, cfg.scale, size=dims)
        matrix = _rotation(angles, dims) @ np.diag(zoom)
        shift = rng.uniform(-1.0, 1.0, size=dims) * cfg.translate * np.asarray(shape, float)
    for axis in flipped:
        matrix[:, axis] = -matrix[:, axis]
    return matrix, shift, flipped, affine


def _theta(matrix: np.ndarray, shift: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``affine_grid``'s ``(D, D+1)`` output -> input map (align_corners=True) for a
    voxel map ``out = matrix @ (in - c) + c + shift`` about the centre ``c``."""
    dims = len(shape)
    half = np.asarray([max(n - 1, 1) / 2.0 for n in shape])
    inverse = np.linalg.inv(matrix)
    linear = np.diag(1.0 / half) @ inverse @ np.diag(half)
    offset = -(inverse @ shift) / half
    theta = np.zeros((dims, dims + 1))
    # grid_sample's coordinates run over the axes in reversed order (x = last axis)
    theta[:, :dims] = linear[::-1, ::-1]
    theta[:, dims] = offset[::-1]
    return theta


class RandFlipAffined(RandomizableTransform, MapTransform):
    """Random flips and affine (rotation, zoom, shift) of every key alike, in one resampling.

    Flips alone are exact (``torch.flip``); when a rotation/zoom/shift is drawn,
    flips and affine are composed into one matrix and every key is resampled once
    (linear; ``mask`` nearest; zeros outside). Written once for 2D and 3D.

    Args:
        keys: sample keys holding ``(C, *spatial)`` tensors of one shape.
        cfg: the resolved ``augment`` section (flip and affine keys are used).
    """

    def __init__(self, keys: Sequence[str], cfg: AugmentConfig) -> None:
        RandomizableTransform.__init__(self, 1.0)
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.cfg = cfg
        self._draw = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self._draw = _draw_spatial(self.R, self.cfg, spatial_shape)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        first = torch.as_tensor(d[present[0]])
        shape = tuple(first.shape[1:])
        self.randomize(shape)
        matrix, shift, flipped, affine = self._draw
        if not affine and not flipped:
            return d
        grid = None
        if affine:
            theta = torch.as_tensor(_theta(matrix, shift, shape), dtype=torch.float32)
            grid = F.affine_grid(theta[None], [1, 1, *shape], align_corners=True)
        for key in present:
            img = torch.as_tensor(d[key])
            if grid is None:
                d[key] = torch.flip(img, dims=[a + 1 for a in flipped])
                continue
            mode = "nearest" if key == MASK_KEY else "bilinear"
            out = F.grid_sample(
                img[None].float(), grid, mode=mode, padding_mode="zeros", align_corners=True
            )
            d[key] = out[0].to(img.dtype)
        return d


class RandNoised(RandomizableTransform, MapTransform):
    """Additive Gaussian noise ``N(0, std)`` per key, drawn in float32 by torch.

    Args:
        keys: sample keys (each gets its own noise).
        std: standard deviation.
    """

    def __init__(self, keys: Sequence[str], std: float) -> None:
        RandomizableTransform.__init__(self, 1.0)
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.std = float(std)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            generator = torch.Generator().manual_seed(int(self.R.randint(2**31)))
            noise = torch.randn(img.shape, generator=generator, dtype=torch.float32)
            d[key] = img + noise.to(img.device, img.dtype) * self.std
        return d


class BatchAugment:
    """Flips, affine, intensity jitter and noise for a whole batch on its device.

    The same parameters as :class:`RandFlipAffined` and the intensity steps of
    :func:`build_augment`, drawn per sample: sample ``i`` of epoch ``e`` draws from
    ``(seed, e, i)`` (the dataset index travels in ``batch["index"]``), so the
    result does not depend on the batch composition, the device or the number of
    processes. All modalities of a sample share one spatial transform (one
    ``grid_sample`` per modality for the whole batch); intensity scaling, shift
    and noise are drawn per modality.

    Args:
        cfg: the ``augment`` section (its preset is applied here).
        modalities: batch keys holding ``(B, C, *spatial)`` images.
        spatial_dims: 2 or 3.
        seed: base seed.
    """

    STREAM = 0x5EED  # keeps these draws apart from the loader's per-sample stream

    def __init__(
        self, cfg: AugmentConfig, modalities: Sequence[str], spatial_dims: int, seed: int = 0
    ) -> None:
        self.cfg = resolve_augment(cfg)
        self.modalities = list(modalities)
        self.spatial_dims = spatial_dims
        self.seed = int(seed)

    def _sample_params(self, epoch: int, index: int, shape: Sequence[int]):
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, epoch, index, self.STREAM])
        matrix, shift, _, _ = _draw_spatial(rng, cfg, shape)
        intensity = {
            m: (
                1.0 + rng.uniform(-cfg.intensity_scale, cfg.intensity_scale),
                rng.uniform(-cfg.intensity_shift, cfg.intensity_shift),
                int(rng.integers(2**31)),
            )
            for m in self.modalities
        }
        return matrix, shift, intensity

    def __call__(self, batch: dict, epoch: int) -> dict:
        """Augment ``batch`` (a dict with modality tensors and ``index``); returns it."""
        first = batch[self.modalities[0]]
        shape = tuple(first.shape[2:])
        device = first.device
        indices = [int(i) for i in torch.as_tensor(batch["index"]).tolist()]
        params = [self._sample_params(epoch, i, shape) for i in indices]
        theta = np.stack([_theta(matrix, shift, shape) for matrix, shift, _ in params])
        theta = torch.as_tensor(theta, dtype=torch.float32, device=device)
        grid = F.affine_grid(theta, [len(indices), 1, *shape], align_corners=True)
        view = (-1,) + (1,) * (first.ndim - 1)
        for m in self.modalities:
            images = batch[m]
            out = F.grid_sample(
                images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )
            scale = torch.tensor([p[2][m][0] for p in params], device=device)
            offset = torch.tensor([p[2][m][1] for p in params], device=device)
            out = out * scale.view(view) + offset.view(view)
            if self.cfg.noise_std > 0:
                noise = torch.stack(
                    [
                        torch.randn(
                            out.shape[1:],
                            generator=torch.Generator(device).manual_seed(p[2][m][2]),
                            device=device,
                        )
                        for p in params
                    ]
                )
                out = out + noise * self.cfg.noise_std
            batch[m] = out.to(images.dtype)
        return batch


def _rotation(angles: np.ndarray, dims: int) -> np.ndarray:
    """Rotation matrix in spatial-axis order: one angle in 2D, one per axis plane in 3D."""
    if dims == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        rot = np.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        matrix = matrix @ rot
    return matrix
