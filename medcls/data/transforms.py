"""Preprocessing and augmentation pipelines built from the configuration.

Samples are dictionaries keyed by modality name (``{"ct": (C, *spatial), "pet": ...}``).
Spatial transforms draw their random parameters once per sample and apply them to
every modality (and the mask) alike; intensity transforms act per modality. The
pipeline is split where randomness starts: :func:`build_preprocess` is
deterministic (its output can be cached), :func:`build_augment` is random and
seeded per sample by the dataset. MONAI's dictionary transforms do the work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medcls.config.schema import AugmentConfig, IntensityConfig, PreprocessConfig

__all__ = ["build_augment", "build_preprocess", "intensity_transform"]

MASK_KEY = "mask"


def intensity_transform(key: str, cfg: IntensityConfig):
    """The MONAI dictionary transform scaling modality ``key`` as ``cfg`` says (or None)."""
    from monai import transforms as mt

    if cfg.mode == "range":
        if cfg.a_min is None or cfg.a_max is None or cfg.a_max <= cfg.a_min:
            from medcls.errors import ConfigError

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
        return mt.NormalizeIntensityd(key)
    return None


def _interp_mode(spatial_dims: int) -> str:
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def build_preprocess(
    cfg: PreprocessConfig, modalities: Sequence[str], spatial_dims: int, *, with_mask: bool = False
):
    """The deterministic part: resize to ``spatial_size`` and scale intensities.

    Args:
        cfg: the ``preprocess`` section.
        modalities: keys of the sample holding images.
        spatial_dims: 2 or 3.
        with_mask: also resize the ``mask`` key (nearest neighbour).

    Returns:
        A MONAI ``Compose`` mapping a sample dict to a sample dict of float32 tensors.
    """
    from monai import transforms as mt

    keys = list(modalities)
    steps = []
    if cfg.spatial_size is not None:
        if len(cfg.spatial_size) != spatial_dims:
            from medcls.errors import ConfigError

            raise ConfigError(
                f"preprocess.spatial_size: {cfg.spatial_size} has {len(cfg.spatial_size)} "
                f"axes but the images are {spatial_dims}D"
            )
        steps.append(
            mt.Resized(
                keys,
                spatial_size=cfg.spatial_size,
                mode=_interp_mode(spatial_dims),
                anti_aliasing=True,
            )
        )
        if with_mask:
            steps.append(
                mt.Resized(
                    MASK_KEY, spatial_size=cfg.spatial_size, mode="nearest", allow_missing_keys=True
                )
            )
    for key in keys:
        step = intensity_transform(key, cfg.intensity.get(key, IntensityConfig()))
        if step is not None:
            steps.append(step)
    steps.append(mt.EnsureTyped(keys, data_type="tensor", dtype="float32", track_meta=False))
    if with_mask:
        steps.append(
            mt.EnsureTyped(MASK_KEY, data_type="tensor", track_meta=False, allow_missing_keys=True)
        )
    return mt.Compose(steps)


def build_augment(
    cfg: AugmentConfig, modalities: Sequence[str], spatial_dims: int, spatial_size: Sequence[int]
):
    """The random part: flips, affine, intensity jitter and noise; ``None`` if all off.

    Args:
        cfg: the ``augment`` section.
        modalities: keys of the sample holding images (transformed alike).
        spatial_dims: 2 or 3.
        spatial_size: the size of the preprocessed images (for translations).

    Returns:
        A MONAI ``Compose`` (``Randomizable``: seed it with ``set_random_state``) or None.
    """
    from monai import transforms as mt

    keys = list(modalities)
    steps = []
    axes = range(spatial_dims) if cfg.flip_axes is None else cfg.flip_axes
    for axis in axes:
        if cfg.flip_prob > 0:
            steps.append(mt.RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=axis))
    if cfg.affine_prob > 0 and (cfg.rotate_deg or cfg.scale or cfg.translate):
        n_angles = 1 if spatial_dims == 2 else 3
        steps.append(
            mt.RandAffined(
                keys,
                prob=cfg.affine_prob,
                rotate_range=[math.radians(cfg.rotate_deg)] * n_angles if cfg.rotate_deg else None,
                scale_range=[cfg.scale] * spatial_dims if cfg.scale else None,
                translate_range=[cfg.translate * s for s in spatial_size]
                if cfg.translate
                else None,
                mode="bilinear",
                padding_mode="zeros",
            )
        )
    if cfg.intensity_scale > 0:
        steps.append(mt.RandScaleIntensityd(keys, factors=cfg.intensity_scale, prob=1.0))
    if cfg.intensity_shift > 0:
        steps.append(mt.RandShiftIntensityd(keys, offsets=cfg.intensity_shift, prob=1.0))
    if cfg.noise_std > 0:
        steps.append(mt.RandGaussianNoised(keys, prob=1.0, std=cfg.noise_std))
    if not steps:
        return None
    steps.append(mt.EnsureTyped(keys, data_type="tensor", dtype="float32", track_meta=False))
    return mt.Compose(steps)
