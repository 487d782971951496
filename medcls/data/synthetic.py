"""Built-in synthetic demo datasets: ``demo-xray2d`` and ``demo-petct3d``.

Both datasets are **synthetic**: every image is rendered from a random anatomical
model, deterministically from a seed, and written to disk in the same formats as
user data (8-bit PNG, NIfTI), with a manifest CSV beside them. They exist so that
``medcls demo``, the tests and the documentation can train, evaluate and explain a
classifier without downloading anything. They are not medical data and say
nothing about the performance of a model on real patients.

* ``demo-xray2d``: chest-X-ray-like radiographs (lungs, mediastinum and heart,
  ribs, clavicles, diaphragm domes, vessel markings, soft tissue, noise). The
  ``pneumonia`` class carries faint, patchy, irregular opacities of varying size
  and position, mostly in the lower lung fields; both classes carry confounders
  (breast/soft-tissue shadows, calcified granulomas, vessel markings).
* ``demo-petct3d``: co-registered CT (Hounsfield units) and PET (SUV-like)
  volumes of a chest with a lung lesion in every case. ``benign`` lesions are
  rounder and smoother with lower, homogeneous uptake; ``malignant`` ones are
  lobulated or spiculated, hotter and heterogeneous. The distributions overlap.

Each case keeps its lesion mask, so that heatmaps can be checked against it.

Example:
    >>> from medcls.data.synthetic import demo_dataset
    >>> manifest = demo_dataset("demo-xray2d", num_cases=40, size=32)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcls.errors import ConfigError, DataError

__all__ = [
    "DEMO_DATASETS",
    "GENERATOR_VERSION",
    "DemoSpec",
    "default_cache_dir",
    "demo_dataset",
    "demo_dataset_dir",
    "generate_demo_petct3d",
    "generate_demo_xray2d",
]

#: Bumped whenever a change to the generators changes the files they write, so
#: that a cache written by an older version is never read as the current one.
GENERATOR_VERSION = 2

_MANIFEST = "manifest.csv"
_INFO = "dataset.json"
_TMP_PREFIX = ".tmp-"
# a temporary folder older than this is left over from a killed run and is removed
_STALE_TMP_SECONDS = 6 * 3600


@dataclass(frozen=True)
class DemoSpec:
    """Description and generator parameters of one demo dataset.

    Every field takes part in the cache key (see :func:`demo_dataset_dir`), so a
    changed parameter always generates a new dataset.

    Attributes:
        name: the dataset's name, e.g. ``"demo-xray2d"``.
        description: one line saying what the data is.
        spatial_dims: 2 or 3.
        modalities: manifest columns holding one image each, in channel order.
        class_names: ``(negative, positive)`` label strings of the ``label`` column.
        num_cases: default number of images/cases.
        size: default side length in pixels/voxels (square/cubic grid).
        followup_fraction: probability that a case is a follow-up of the
            previous patient (same anatomy and label, new pose and noise).
        params: generator-specific knobs as ``(name, value)`` pairs; read them
            with :meth:`param`.
        mask_column: manifest column of the lesion mask.
        label_column: manifest column of the class label.
        group_column: manifest column of the patient identifier.
    """

    name: str
    description: str
    spatial_dims: int
    modalities: tuple[str, ...]
    class_names: tuple[str, str]
    num_cases: int
    size: int
    followup_fraction: float
    params: tuple[tuple[str, float], ...] = ()
    mask_column: str = "mask"
    label_column: str = "label"
    group_column: str = "patient_id"

    @property
    def columns(self) -> tuple[str, ...]:
        """Manifest columns, in file order."""
        return (*self.modalities, self.mask_column, self.label_column, self.group_column)

    def param(self, name: str) -> float:
        """Return the generator parameter ``name``.

        Raises:
            ConfigError: if the dataset has no such parameter.
        """
        for key, value in self.params:
            if key == name:
                return value
        known = ", ".join(k for k, _ in self.params)
        raise ConfigError(f"{self.name}: unknown generator parameter {name!r}; known: {known}")

    def replace(self, **changes: Any) -> DemoSpec:
        """Return a copy with fields (or, by name, generator ``params``) changed.

        Example: ``spec.replace(num_cases=50, opacity_contrast=0.2)``.
        """
        fields = {f.name for f in dataclasses.fields(self)}
        params = dict(self.params)
        direct: dict[str, Any] = {}
        for key, value in changes.items():
            if key in fields:
                direct[key] = value
            elif key in params:
                params[key] = float(value)
            else:
                raise ConfigError(
                    f"{self.name}: unknown field or generator parameter {key!r}; "
                    f"fields: {', '.join(sorted(fields))}; parameters: {', '.join(params)}"
                )
        if "params" not in direct:
            direct["params"] = tuple(params.items())
        return dataclasses.replace(self, **direct)


DEMO_DATASETS: dict[str, DemoSpec] = {
    "demo-xray2d": DemoSpec(
        name="demo-xray2d",
        description="synthetic chest-X-ray-like 2D images, normal vs pneumonia-like opacities",
        spatial_dims=2,
        modalities=("image",),
        class_names=("normal", "pneumonia"),
        num_cases=800,
        size=96,
        followup_fraction=0.15,
        params=(
            ("opacity_contrast", 0.3),  # peak density added by an opacity (soft tissue = 1)
            ("opacity_size_min", 0.09),  # blob-cluster radius, normalised (1 = half the image)
            ("opacity_size_max", 0.18),
            ("opacity_grain", 0.7),  # grain of the opacities' mottled texture, in pixels at 64²
            ("lower_zone_prob", 0.75),  # share of opacities centred in the lower lung fields
            # confounders, equally frequent in both classes: bright spots and lower-zone
            # shadows that are not opacities (a model that uses them gains nothing)
            ("granuloma_rate", 1.0),  # mean number of calcified dots per image
            ("breast_shadow_prob", 0.5),  # share of patients with lower-zone soft-tissue shadows
            ("noise", 0.025),  # std of the quantum noise, in display units
        ),
    ),
    "demo-petct3d": DemoSpec(
        name="demo-petct3d",
        description="synthetic co-registered chest CT + PET volumes, benign vs malignant lesion",
        spatial_dims=3,
        modalities=("ct", "pet"),
        class_names=("benign", "malignant"),
        num_cases=300,
        size=32,
        followup_fraction=0.1,
        params=(
            ("fov_mm", 384.0),  # in-plane field of view (x, y); z covers 2/3 of it
            ("benign_suv", 1.5),  # median SUVmax of benign lesions
            ("malignant_suv", 6.0),  # median SUVmax of malignant lesions
            ("suv_spread", 0.3),  # log-normal sigma of SUVmax in each class
            ("heart_suv_max", 3.5),  # myocardial uptake is drawn up to this SUV
            (
                "pet_scale_spread",
                0.15,
            ),  # log-normal sigma of a per-scan SUV scale (uptake time, calibration)
            ("ct_noise_hu", 20.0),  # std of CT noise in HU
            # share of patients with inflammatory patches, by class (benign lesions are
            # often inflammatory, with inflamed lung around them)
            ("inflammation_prob_benign", 0.5),
            ("inflammation_prob_malignant", 0.5),
        ),
    ),
}


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """Return the folder that holds generated demo datasets.

    ``$MEDCLS_CACHE/datasets`` if the variable is set, else ``~/.cache/medcls/datasets``.
    """
    root = os.environ.get("MEDCLS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "medcls"
    return base / "datasets"


def _get_spec(name: str) -> DemoSpec:
    spec = DEMO_DATASETS.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown demo dataset {name!r}; known demo datasets: {', '.join(sorted(DEMO_DATASETS))}"
        )
    return spec


def _resolve_spec(
    name: str, num_cases: int | None, size: int | None, spec: DemoSpec | None = None
) -> DemoSpec:
    spec = _get_spec(name) if spec is None else spec
    changes: dict[str, Any] = {}
    if num_cases is not None:
        changes["num_cases"] = num_cases
    if size is not None:
        changes["size"] = size
    spec = spec.replace(**changes) if changes else spec
    _check_int("num_cases", spec.num_cases, minimum=2)
    _check_int("size", spec.size, minimum=16)
    return spec


def _check_int(what: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _cache_key(spec: DemoSpec, seed: int) -> str:
    payload = {
        "spec": dataclasses.asdict(spec),
        "seed": int(seed),
        "generator_version": GENERATOR_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def demo_dataset_dir(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    num_cases: int | None = None,
    size: int | None = None,
) -> Path:
    """Return the folder that does (or will) hold a demo dataset, without generating it.

    The folder name is ``<name>-<hash>``, the hash covering the name, every
    generator parameter, the seed and :data:`GENERATOR_VERSION`.
    """
    _check_int("seed", seed, minimum=0)
    spec = _resolve_spec(name, num_cases, size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{name}-{_cache_key(spec, seed)}"


def demo_dataset(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    num_cases: int | None = None,
    size: int | None = None,
    progress: bool = False,
) -> Path:
    """Return the path of a demo dataset's manifest CSV, generating it if needed.

    Generation writes into a temporary folder beside the final one and renames it
    into place at the end, so a killed run never leaves half a dataset, and two
    processes racing end with one complete copy.

    Args:
        name: ``"demo-xray2d"`` or ``"demo-petct3d"`` (see :data:`DEMO_DATASETS`).
        cache_dir: folder holding generated datasets; default :func:`default_cache_dir`.
        seed: non-negative integer; the same seed gives byte-identical files.
        num_cases: number of images (2D) or cases (3D); default from the spec.
        size: side length of the square/cubic grid; default from the spec.
        progress: print a progress bar (rich) while generating.

    Returns:
        Path of ``manifest.csv``; its image paths are relative to its folder.

    Raises:
        ConfigError: unknown name, or an invalid ``seed``/``num_cases``/``size``.
    """
    final = demo_dataset_dir(name, cache_dir=cache_dir, seed=seed, num_cases=num_cases, size=size)
    manifest = final / _MANIFEST
    if manifest.is_file():
        return manifest
    spec = _resolve_spec(name, num_cases, size)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _GENERATORS[name](
            tmp, num_cases=spec.num_cases, size=spec.size, seed=seed, spec=spec, progress=progress
        )
        _publish(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not manifest.is_file():  # pragma: no cover - only if someone deletes it meanwhile
        raise DataError("generation finished but the manifest is missing", path=str(manifest))
    return manifest


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; keep an existing complete copy if one won the race."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if (final / _MANIFEST).is_file():
            return  # another process finished first: its copy is identical
    # ``final`` exists without a manifest (not written by this module): replace it
    trash = final.parent / f"{_TMP_PREFIX}trash-{final.name}-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(OSError):
        os.rename(final, trash)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / _MANIFEST).is_file():
            raise
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_tmp(root: Path) -> None:
    now = time.time()
    for path in root.glob(f"{_TMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


# --------------------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class _Case:
    index: int  # case index (0-based), also the file id
    patient: int  # case index of the patient's first case
    visit: int  # 0 for the first case of a patient, 1 for a follow-up
    label: int  # 0 negative, 1 positive


def _rng(seed: int, *key: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, *key)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))


# stream ids of _rng: one independent stream per purpose
_PLAN, _PATIENT, _VISIT = 1, 2, 3


def _case_plan(num_cases: int, seed: int, followup_fraction: float) -> list[_Case]:
    """Patients, visits and labels of cases ``0..num_cases-1``.

    Case ``i`` depends only on ``seed`` and cases ``< i``, so a longer plan starts
    with the shorter one. A new patient gets the label of the class that has fewer
    images so far (ties drawn at random), which keeps the classes balanced to
    within two images; a follow-up repeats its patient's label.
    """
    cases: list[_Case] = []
    counts = [0, 0]
    for i in range(num_cases):
        rng = _rng(seed, _PLAN, i)
        followup_draw, tie_draw = rng.random(2)
        prev = cases[-1] if cases else None
        if prev is not None and prev.visit == 0 and followup_draw < followup_fraction:
            case = _Case(i, prev.patient, 1, prev.label)
        else:
            label = int(tie_draw < 0.5) if counts[0] == counts[1] else int(counts[1] < counts[0])
            case = _Case(i, i, 0, label)
        counts[case.label] += 1
        cases.append(case)
    return cases


def _case_id(prefix: str, index: int) -> str:
    return f"{prefix}{index:05d}"


def _patient_id(prefix: str, patient: int) -> str:
    return f"{prefix}P{patient:05d}"


def _gauss_filter(array: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(array, sigma=sigma, mode="reflect")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """White noise blurred with ``sigma`` pixels, rescaled to zero mean and unit std."""
    field_ = _gauss_filter(rng.standard_normal(shape), sigma)
    return (field_ - field_.mean()) / (field_.std() + 1e-8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _ellipsoid(coords: tuple[np.ndarray, ...], center, radii, edge: float) -> np.ndarray:
    """Soft indicator of an axis-aligned ellipsoid (any number of dims), in [0, 1].

    ``edge`` is the width of the transition, in units of the normalised radius.
    """
    r2 = sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, center, radii))
    return _sigmoid((1.0 - np.sqrt(r2)) / edge)


@dataclass(frozen=True)
class _Pose:
    """Similarity transform between patient and image coordinates (any number of dims).

    ``image = scale * R @ patient + shift``, where ``R`` rotates the first two axes
    by ``angle`` radians and leaves the others (the body axis in 3D) alone.
    """

    angle: float
    scale: float
    shift: tuple[float, ...]

    def _rotation(self, ndim: int) -> np.ndarray:
        rot = np.eye(ndim)
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot[:2, :2] = [[c, -s], [s, c]]
        return rot

    def patient_grid(self, size: int, ndim: int) -> tuple[np.ndarray, ...]:
        """Patient coordinates of the pixel/voxel centres, one array of shape ``(size,)*ndim`` per axis."""
        axis = _pixel_centres(size)
        image = np.stack(np.meshgrid(*([axis] * ndim), indexing="ij"), axis=-1)
        patient = (image - np.asarray(self.shift)) @ self._rotation(ndim) / self.scale
        return tuple(patient[..., k] for k in range(ndim))

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., D)`` patient points to image coordinates."""
        return self.scale * points @ self._rotation(points.shape[-1]).T + np.asarray(self.shift)


def _pixel_centres(size: int) -> np.ndarray:
    """Normalised coordinates in (-1, 1) of ``size`` pixel centres along one axis."""
    return (np.arange(size) + 0.5) / size * 2.0 - 1.0


def _segments_field(
    size: int,
    pose: _Pose,
    starts: np.ndarray,
    ends: np.ndarray,
    widths: np.ndarray,
    amps: np.ndarray,
) -> np.ndarray:
    """Sum of tubes (Gaussian cross-section) along line segments, any number of dims.

    Each tube is evaluated only in the bounding box of its segment, so a tree of
    many short segments costs little.

    Args:
        size: side length of the square/cubic grid.
        pose: maps the patient coordinates of the segments onto the grid.
        starts, ends: ``(K, D)`` segment end points in patient coordinates.
        widths, amps: ``(K,)`` Gaussian widths (patient units) and peak values.

    Returns:
        Array of shape ``(size,) * D``.
    """
    ndim = starts.shape[1]
    out = np.zeros((size,) * ndim, dtype=np.float64)
    axis = _pixel_centres(size)
    starts, ends, widths = pose.to_image(starts), pose.to_image(ends), widths * pose.scale
    lows = np.searchsorted(axis, np.minimum(starts, ends) - 3.5 * widths[:, None])
    highs = np.searchsorted(axis, np.maximum(starts, ends) + 3.5 * widths[:, None])
    for a, b, w, amp, lo, hi in zip(starts, ends, widths, amps, lows, highs):
        if np.any(hi <= lo):
            continue
        # per-axis offsets from the start point, broadcast against each other (no meshgrid)
        rel = [
            (axis[i:j] - a[k]).reshape([-1 if m == k else 1 for m in range(ndim)])
            for k, (i, j) in enumerate(zip(lo, hi))
        ]
        ab = b - a
        t = sum(r * ab[k] for k, r in enumerate(rel)) / max(float(ab @ ab), 1e-12)
        t = np.clip(t, 0.0, 1.0)
        d2 = sum((r - t * ab[k]) ** 2 for k, r in enumerate(rel))
        box = tuple(slice(int(i), int(j)) for i, j in zip(lo, hi))
        out[box] += amp * np.exp(-d2 / (2.0 * w * w))
    return out


def _branching_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    direction: np.ndarray,
    *,
    length: float,
    width: float,
    amp: float,
    depth: int,
    spread: float,
) -> Iterator[tuple[np.ndarray, np.ndarray, float, float]]:
    """Yield ``(start, end, width, amp)`` segments of a random binary tree."""
    stack = [(root, direction / np.linalg.norm(direction), length, width, amp, depth)]
    while stack:
        start, d, ln, w, a, k = stack.pop()
        end = start + d * ln
        yield start, end, w, a
        if k <= 0:
            continue
        for sign in (-1.0, 1.0):
            child = d + sign * spread * rng.uniform(0.5, 1.2) * _perpendicular(rng, d)
            child = child / np.linalg.norm(child)
            stack.append((end, child, ln * rng.uniform(0.6, 0.8), w * 0.75, a * 0.8, k - 1))


def _perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    v = rng.standard_normal(d.shape[0])
    v -= (v @ d) * d
    return v / (np.linalg.norm(v) + 1e-12)


def _write_manifest(out_dir: Path, spec: DemoSpec, rows: list[dict[str, str]]) -> Path:
    path = out_dir / _MANIFEST
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(spec.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_info(out_dir: Path, spec: DemoSpec, seed: int, cases: list[_Case]) -> None:
    info = {
        "name": spec.name,
        "synthetic": True,
        "description": spec.description,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "spec": dataclasses.asdict(spec),
        "num_cases": len(cases),
        "num_patients": len({c.patient for c in cases}),
        "class_counts": {spec.class_names[k]: sum(c.label == k for c in cases) for k in (0, 1)},
    }
    (out_dir / _INFO).write_text(json.dumps(info, indent=2, default=list) + "\n", encoding="utf-8")


def _progress_iter(items: list[_Case], enabled: bool, title: str) -> Iterator[_Case]:
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=title)


def _prepare_out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError("output folder for a demo dataset must be empty or absent", path=str(out))
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- demo-xray2d


def _xray_anatomy(rng: np.random.Generator, spec: DemoSpec) -> dict[str, Any]:
    """Random patient anatomy in normalised patient coordinates (x right, y down, [-1, 1])."""
    body_a = rng.uniform(0.88, 1.02)
    lungs = []
    for side in (-1.0, 1.0):  # image left (patient right), image right (patient left)
        a = rng.uniform(0.24, 0.30) * body_a / 0.875
        lungs.append(
            {
                "side": side,
                "cx": side * rng.uniform(0.33, 0.39) * body_a / 0.875,
                "cy": rng.uniform(-0.12, -0.03),
                "a": a,
                "b": rng.uniform(0.55, 0.65),
                # right hemidiaphragm (image left) sits higher than the left one
                "dome": rng.uniform(0.30, 0.42) + (0.05 if side > 0 else 0.0),
                "dome_k": rng.uniform(0.18, 0.30),
            }
        )
    ribs = []
    for k in range(10):
        ribs.append((-0.74 + 0.135 * k + rng.normal(0, 0.012), rng.uniform(0.8, 1.2)))
    vessel_segments = []
    for side in (-1.0, 1.0):
        hilum = np.array([side * rng.uniform(0.14, 0.19), rng.uniform(-0.06, 0.04)])
        for angle in np.deg2rad(rng.uniform(-75, 75, size=4) + np.array([-60, -20, 20, 60])):
            direction = np.array([side * math.cos(angle), math.sin(angle)])
            vessel_segments.extend(
                _branching_tree(
                    rng,
                    hilum,
                    direction,
                    length=rng.uniform(0.12, 0.2),
                    width=0.016,
                    amp=0.08,
                    depth=2,
                    spread=0.5,
                )
            )
    granulomas = []
    for _ in range(rng.poisson(spec.param("granuloma_rate"))):
        granulomas.append(
            (
                rng.uniform(-0.6, 0.6),
                rng.uniform(-0.55, 0.35),
                rng.uniform(0.015, 0.03),
                rng.uniform(0.15, 0.35),
            )
        )
    breast = None
    if rng.random() < spec.param("breast_shadow_prob"):
        breast = (rng.uniform(0.28, 0.45), rng.uniform(0.30, 0.50), rng.uniform(0.06, 0.14))
    return {
        "body_a": body_a,
        "body_cy": rng.uniform(0.15, 0.3),
        "soft_tissue": rng.uniform(0.9, 1.1),
        "mediastinum": rng.uniform(0.09, 0.13),
        "heart": (
            rng.uniform(0.08, 0.15),
            rng.uniform(0.28, 0.36),
            rng.uniform(0.25, 0.33),
            rng.uniform(0.22, 0.28),
        ),
        "lungs": lungs,
        "ribs": ribs,
        "vessels": vessel_segments,
        "vessel_gain": rng.uniform(0.6, 1.4),
        "granulomas": granulomas,
        "breast": breast,
    }


def _xray_lung_field(
    X: np.ndarray, Y: np.ndarray, anat: dict[str, Any], dome_shift: float
) -> np.ndarray:
    """Soft mask (values in [0, 1]) of both lung fields, minus heart and mediastinum."""
    lung = np.zeros_like(X)
    for p in anat["lungs"]:
        ell = _ellipsoid((X, Y), (p["cx"], p["cy"]), (p["a"], p["b"]), edge=0.06)
        dome = p["dome"] + dome_shift + p["dome_k"] * ((X - p["cx"]) / p["a"]) ** 2
        lung = np.maximum(lung, ell * _sigmoid((dome - Y) / 0.015))
    hx, hy, ha, hb = anat["heart"]
    heart = _ellipsoid((X, Y), (hx, hy), (ha, hb), edge=0.05)
    medi = _sigmoid((np.abs(X) - anat["mediastinum"]) / 0.015)
    return lung * (1.0 - heart) * medi


def _xray_lesion(rng: np.random.Generator, anat: dict[str, Any], spec: DemoSpec) -> dict[str, Any]:
    """Pneumonia-like opacity: a cluster of blobs centred in a lung field."""
    grid = np.linspace(-1, 1, 96)
    X, Y = np.meshgrid(grid, grid, indexing="xy")
    from scipy.ndimage import binary_erosion

    # opacity centres keep ~0.06 (normalised units) away from the lung border
    lung = binary_erosion(_xray_lung_field(X, Y, anat, 0.0) > 0.5, iterations=3)
    # lower zone: below the midpoint between apex and dome of that lung
    lower = np.zeros_like(lung)
    for p in anat["lungs"]:
        mid = 0.5 * ((p["cy"] - p["b"]) + p["dome"])
        lower |= (np.sign(X) == p["side"]) & (mid < Y)
    zone = lung & (lower if rng.random() < spec.param("lower_zone_prob") else ~lower)
    if not zone.any():
        zone = lung
    ys, xs = np.nonzero(zone)
    k = rng.integers(len(xs))
    center = np.array([grid[xs[k]], grid[ys[k]]])
    size = rng.uniform(spec.param("opacity_size_min"), spec.param("opacity_size_max"))
    blobs = []
    for _ in range(rng.integers(3, 7)):
        offset = rng.normal(0, size, size=2)
        blobs.append(
            (
                center + offset,
                size * rng.uniform(0.5, 1.0),
                size * rng.uniform(0.5, 1.0),
                rng.uniform(0, math.pi),
                rng.uniform(0.5, 1.0),
            )
        )
    return {"blobs": blobs, "amp": spec.param("opacity_contrast") * rng.uniform(0.7, 1.3)}


def _render_xray(
    anat: dict[str, Any],
    lesion: dict[str, Any] | None,
    rng: np.random.Generator,
    size: int,
    spec: DemoSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one radiograph.

    Returns:
        ``(image, mask)``: ``(size, size)`` uint8 image and boolean lesion mask.
    """
    # pose of the patient on the detector; arrays are (row = y, column = x)
    pose = _Pose(
        angle=math.radians(rng.normal(0.0, 4.0)),
        scale=rng.uniform(0.92, 1.06),
        shift=tuple(rng.normal(0.0, 0.04, size=2)),
    )
    Y, X = pose.patient_grid(size, 2)
    dome_shift = rng.normal(0.0, 0.03)  # depth of inspiration

    # attenuation (density) map, soft tissue = 1
    # boxy torso (superellipse) whose top corners are the shoulders
    body_r = (np.abs(X) / anat["body_a"]) ** 3 + (np.abs(Y - anat["body_cy"]) / 1.3) ** 3
    body = _sigmoid((1.0 - body_r) / 0.08)
    thickness = np.sqrt(np.clip(1.0 - (X / anat["body_a"]) ** 2, 0.0, 1.0))
    density = anat["soft_tissue"] * body * (0.55 + 0.45 * thickness)
    lung = _xray_lung_field(X, Y, anat, dome_shift)
    density -= 0.62 * lung * thickness
    density += 0.22 * body * np.exp(-((X / 0.07) ** 2))  # spine through the mediastinum
    hx, hy, ha, hb = anat["heart"]
    density += 0.08 * _ellipsoid((X, Y), (hx, hy), (ha, hb), edge=0.05)

    # ribs: posterior arcs, rising laterally then curving down
    U = np.abs(X) / anat["body_a"]
    rib_field = np.zeros_like(X)
    for y0, gain in anat["ribs"]:
        posterior = y0 - 0.16 * U + 0.55 * U**2.5
        anterior = y0 + 0.30 - 0.35 * U
        rib_field += gain * np.exp(-(((Y - posterior) / 0.026) ** 2))
        rib_field += 0.5 * gain * np.exp(-(((Y - anterior) / 0.03) ** 2)) * (U > 0.25)
    cage = _sigmoid((U - 0.07) / 0.02) * _sigmoid((0.92 - U) / 0.03) * _sigmoid((0.55 - Y) / 0.05)
    density += 0.07 * rib_field * body * cage
    # clavicles
    clav_y = -0.70 + 0.10 * U - 0.3 * (U - 0.35) ** 2
    density += 0.18 * np.exp(-(((Y - clav_y) / 0.028) ** 2)) * (U > 0.05) * (U < 0.6)

    # vessel markings (inside the lungs), granulomas, breast shadows
    seg = anat["vessels"]
    starts = np.array([s_[0] for s_ in seg])
    ends = np.array([s_[1] for s_ in seg])
    widths = np.array([s_[2] for s_ in seg])
    amps = np.array([s_[3] for s_ in seg]) * anat["vessel_gain"]
    # segments are stored as (x, y); the grid's axes are (y, x)
    density += _segments_field(size, pose, starts[:, ::-1], ends[:, ::-1], widths, amps) * lung
    for gx, gy, gr, ga in anat["granulomas"]:
        density += ga * np.exp(-((X - gx) ** 2 + (Y - gy) ** 2) / (2 * gr * gr)) * lung
    if anat["breast"] is not None:
        bx, by, bamp = anat["breast"]
        for side in (-1.0, 1.0):
            density += bamp * _ellipsoid((X, Y), (side * bx, by), (0.3, 0.22), edge=0.25) * body

    mask = np.zeros(X.shape, dtype=bool)
    if lesion is not None:
        opacity = np.zeros_like(X)
        for (cx, cy), sa, sb, angle, weight in lesion["blobs"]:
            ca, sa_ = math.cos(angle), math.sin(angle)
            u = ca * (X - cx) + sa_ * (Y - cy)
            v = -sa_ * (X - cx) + ca * (Y - cy)
            opacity += weight * np.exp(-0.5 * ((u / sa) ** 2 + (v / sb) ** 2))
        # patchy, mottled (alveolar) texture
        texture = _smooth_noise(rng, X.shape, sigma=spec.param("opacity_grain") * size / 64.0)
        envelope = np.clip(opacity, 0.0, 1.0) * lung
        opacity = envelope * np.clip(0.5 + 0.7 * texture, 0.0, 1.8)
        density += lesion["amp"] * opacity
        mask = (envelope > 0.3) & (lung > 0.5)

    # image formation: exposure, processing curve, noise
    contrast = rng.uniform(0.8, 1.25)
    level = rng.uniform(0.15, 0.3)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip((density - level) * contrast / 0.85, 0.0, 1.0) ** gamma
    img += 0.04 * _smooth_noise(rng, X.shape, sigma=size / 32.0)  # soft-tissue texture
    img += spec.param("noise") * rng.standard_normal(X.shape)
    image = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return image, mask


def generate_demo_xray2d(
    out_dir: str | Path,
    *,
    num_cases: int | None = None,
    size: int | None = None,
    seed: int = 0,
    spec: DemoSpec | None = None,
    progress: bool = False,
) -> Path:
    """Write the ``demo-xray2d`` dataset into ``out_dir`` (absent or empty).

    Files: ``images/<id>.png`` (8-bit grayscale, ``(size, size)``),
    ``masks/<id>.png`` (0/255, empty for ``normal``), ``manifest.csv`` with
    columns ``image,mask,label,patient_id`` and ``dataset.json`` (parameters).

    Args:
        out_dir: destination folder.
        num_cases: number of images; default ``spec.num_cases``.
        size: side length in pixels; default ``spec.size``.
        seed: non-negative integer seed.
        spec: generator parameters; default ``DEMO_DATASETS["demo-xray2d"]``.
        progress: show a progress bar.

    Returns:
        Path of the manifest.
    """
    from PIL import Image

    _check_int("seed", seed, minimum=0)
    spec = _resolve_spec("demo-xray2d", num_cases, size, spec)
    out = _prepare_out_dir(out_dir)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    cases = _case_plan(spec.num_cases, seed, spec.followup_fraction)
    rows = []
    for case in _progress_iter(cases, progress, "generating demo-xray2d"):
        prng = _rng(seed, _PATIENT, case.patient)
        anat = _xray_anatomy(prng, spec)
        lesion = _xray_lesion(prng, anat, spec) if case.label == 1 else None
        image, mask = _render_xray(anat, lesion, _rng(seed, _VISIT, case.index), spec.size, spec)
        cid = _case_id("cxr", case.index)
        Image.fromarray(image, mode="L").save(out / "images" / f"{cid}.png", optimize=False)
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(out / "masks" / f"{cid}.png")
        rows.append(
            {
                "image": f"images/{cid}.png",
                "mask": f"masks/{cid}.png",
                "label": spec.class_names[case.label],
                "patient_id": _patient_id("cxr", case.patient),
            }
        )
    _write_info(out, spec, seed, cases)
    return _write_manifest(out, spec, rows)


# --------------------------------------------------------------------------- demo-petct3d


def _petct_anatomy(rng: np.random.Generator, spec: DemoSpec) -> dict[str, Any]:
    """Random chest anatomy in normalised coordinates (x patient right, y anterior, z superior)."""
    lungs = []
    for side in (1.0, -1.0):  # patient right, patient left
        lungs.append(
            {
                "side": side,
                "center": (
                    side * rng.uniform(0.36, 0.43),
                    rng.uniform(-0.06, 0.02),
                    rng.uniform(0.1, 0.2),
                ),
                "radii": (rng.uniform(0.26, 0.32), rng.uniform(0.36, 0.44), rng.uniform(0.7, 0.8)),
                # the right hemidiaphragm (over the liver) sits higher
                "dome": rng.uniform(-0.62, -0.5) + (0.08 if side > 0 else 0.0),
            }
        )
    vessels = []
    for side in (1.0, -1.0):
        hilum = np.array(
            [side * rng.uniform(0.16, 0.2), rng.uniform(-0.05, 0.05), rng.uniform(0.0, 0.15)]
        )
        for _ in range(4):
            direction = np.array(
                [side * rng.uniform(0.3, 1.0), rng.normal(0, 0.5), rng.normal(0, 0.9)]
            )
            vessels.extend(
                _branching_tree(
                    rng,
                    hilum,
                    direction,
                    length=rng.uniform(0.16, 0.26),
                    width=0.025,
                    amp=0.8,
                    depth=2,
                    spread=0.6,
                )
            )
    return {
        "body": (rng.uniform(0.8, 0.92), rng.uniform(0.56, 0.66)),
        "fat": rng.uniform(0.04, 0.1),
        "lungs": lungs,
        "mediastinum": rng.uniform(0.1, 0.14),
        "heart": (
            (rng.uniform(-0.18, -0.08), rng.uniform(0.1, 0.2), rng.uniform(-0.4, -0.25)),
            (rng.uniform(0.26, 0.32), rng.uniform(0.24, 0.3), rng.uniform(0.24, 0.3)),
        ),
        "vessels": vessels,
        "rib_z": rng.uniform(-0.9, -0.75) + np.arange(8) * rng.uniform(0.23, 0.26),
        "background_suv": rng.uniform(0.5, 0.9),
        "liver_suv": rng.uniform(1.8, 2.6),
    }


def _petct_lung_field(X, Y, Z, anat: dict[str, Any]) -> np.ndarray:
    """Soft mask (values in [0, 1]) of both lungs, minus the heart and the mediastinum."""
    lung = np.zeros_like(X)
    for p in anat["lungs"]:
        (cx, cy, _cz), (a, b, _c) = p["center"], p["radii"]
        ell = _ellipsoid((X, Y, Z), p["center"], p["radii"], edge=0.06)
        dome = p["dome"] + 0.25 * ((X - cx) / a) ** 2 + 0.25 * ((Y - cy) / b) ** 2
        lung = np.maximum(lung, ell * _sigmoid((Z - dome) / 0.03))
    heart = _ellipsoid((X, Y, Z), *anat["heart"], edge=0.06)
    medi = _sigmoid((np.abs(X) - anat["mediastinum"]) / 0.02)
    return lung * (1.0 - heart) * medi


def _petct_lesion(
    rng: np.random.Generator, anat: dict[str, Any], label: int, spec: DemoSpec
) -> dict[str, Any]:
    """Lung lesion: centre, radius, shape (lobes, spicules), uptake and CT texture.

    Benign lesions are mostly round and smooth with low homogeneous uptake;
    malignant ones mostly lobulated/spiculated with high heterogeneous uptake.
    Each trait is drawn with overlapping class-conditional distributions.
    """
    center = _point_in_lung(rng, anat)
    malignant = label == 1
    # malignant lesions gain volume from lobes and spicules: a smaller base radius
    # keeps the lesion volume (a linear cue) about equal between the classes
    radius = rng.uniform(0.09, 0.16) if malignant else rng.uniform(0.105, 0.185)
    irregular = rng.random() < (0.8 if malignant else 0.2)
    n_lobes = int(rng.integers(3, 7)) if irregular else int(rng.integers(0, 3))
    lobe_amp = (0.2, 0.45) if irregular else (0.03, 0.1)
    lobes = [(_unit(rng), rng.uniform(*lobe_amp), rng.uniform(0.35, 0.6)) for _ in range(n_lobes)]
    spicules = []
    if rng.random() < (0.6 if malignant else 0.1):
        for _ in range(rng.integers(3, 9)):
            u = _unit(rng)
            spicules.append((u, radius * rng.uniform(1.5, 2.6)))
    median = spec.param("malignant_suv") if malignant else spec.param("benign_suv")
    return {
        "center": center,
        "radius": radius,
        "stretch": rng.uniform(0.85, 1.15, size=3),
        "lobes": lobes,
        "spicules": spicules,
        "suv_max": float(median * math.exp(rng.normal(0.0, spec.param("suv_spread")))),
        "heterogeneity": rng.uniform(0.25, 0.6) if malignant else rng.uniform(0.0, 0.2),
        "necrosis": malignant and rng.random() < 0.3,
        "calcified": (not malignant) and rng.random() < 0.25,
        "hu": rng.uniform(10, 50),
    }


def _point_in_lung(rng: np.random.Generator, anat: dict[str, Any]) -> np.ndarray:
    """A random point at least ~0.1 (normalised units) inside a lung."""
    from scipy.ndimage import binary_erosion

    grid = np.linspace(-1, 1, 40)
    X, Y, Z = np.meshgrid(grid, grid, grid, indexing="ij")
    lung = _petct_lung_field(X, Y, Z, anat) > 0.5
    inside = binary_erosion(lung, iterations=2)
    inside = inside if inside.any() else lung
    idx = np.argwhere(inside)[rng.integers(int(inside.sum()))]
    return grid[idx] + rng.uniform(-0.025, 0.025, size=3)


def _petct_inflammation(
    rng: np.random.Generator, anat: dict[str, Any], label: int, spec: DemoSpec
) -> list[dict[str, Any]]:
    """Inflammatory patches: faint ground glass with mild, diffuse uptake.

    They are more frequent beside benign lesions (often inflammatory themselves).
    The tracer a patch holds is of the order of the extra tracer of a malignant
    lesion, spread over a larger volume at a lower SUV: the total uptake of the
    lungs (a linear cue) then says little about the class, while the peak uptake
    and the shape of the lesion still do.
    """
    prob = spec.param("inflammation_prob_malignant" if label else "inflammation_prob_benign")
    patches = []
    if rng.random() < prob:
        for _ in range(1 + int(rng.random() < 0.3)):
            patches.append(
                {
                    "center": _point_in_lung(rng, anat),
                    "radii": rng.uniform(0.14, 0.28, size=3),
                    "suv": rng.uniform(1.0, 2.0),
                    "hu": rng.uniform(100, 250),
                }
            )
    return patches


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _render_petct(
    anat: dict[str, Any],
    lesion: dict[str, Any],
    rng: np.random.Generator,
    size: int,
    spec: DemoSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one co-registered case.

    Returns:
        ``(ct, pet, mask)``, each of shape ``(size, size, size)`` (axes x, y, z):
        int16 HU, float32 SUV, uint8 lesion mask.
    """
    # pose: rotation about the body axis, shift, scale
    pose = _Pose(
        angle=math.radians(rng.normal(0.0, 3.0)),
        scale=rng.uniform(0.95, 1.05),
        shift=tuple(rng.normal(0.0, 0.03, size=3)),
    )
    coords = pose.patient_grid(size, 3)
    X, Y, Z = coords

    ba, bb = anat["body"]
    body = _ellipsoid((X, Y), (0.0, 0.0), (ba, bb), edge=0.02)
    inner = _ellipsoid((X, Y), (0.0, 0.0), (ba - anat["fat"], bb - anat["fat"]), edge=0.03)
    lung = _petct_lung_field(X, Y, Z, anat)
    heart_center, heart_radii = anat["heart"]
    heart = _ellipsoid(coords, heart_center, heart_radii, edge=0.06)
    blood = _ellipsoid(coords, heart_center, tuple(r * 0.7 for r in heart_radii), edge=0.06)
    aorta = _ellipsoid((X, Y), (-0.08, -0.25), (0.065, 0.065), edge=0.15)
    spine = _ellipsoid((X, Y), (0.0, -0.42 * bb / 0.6), (0.1, 0.09), edge=0.1)
    right_dome = anat["lungs"][0]["dome"]
    liver = _ellipsoid(coords, (0.3, 0.0, right_dome - 0.3), (0.55, 0.45, 0.4), edge=0.06)
    liver = liver * inner * (1.0 - lung) * (1.0 - spine)
    ribs = np.zeros_like(X)
    ring = np.sqrt((X / (ba - anat["fat"] - 0.04)) ** 2 + (Y / (bb - anat["fat"] - 0.04)) ** 2)
    for z0 in anat["rib_z"]:
        zc = z0 - 0.12 * Y  # ribs slope down anteriorly
        ribs += np.exp(-(((ring - 1.0) / 0.05) ** 2) - ((Z - zc) / 0.04) ** 2)
    ribs = np.clip(ribs, 0.0, 1.0) * (0.3 * bb > Y)
    seg = anat["vessels"]
    vessels = _segments_field(
        size,
        pose,
        np.array([v[0] for v in seg]),
        np.array([v[1] for v in seg]),
        np.array([v[2] for v in seg]),
        np.array([v[3] for v in seg]),
    )
    vessels = np.clip(vessels, 0.0, 1.0) * lung

    # lesion: star-shaped solid with a direction-dependent radius, plus spicules
    rel = np.stack([X, Y, Z], axis=-1) - lesion["center"]
    rel = rel / lesion["stretch"]
    dist = np.sqrt((rel**2).sum(-1)) + 1e-9
    u = rel / dist[..., None]
    radius = np.full(X.shape, lesion["radius"])
    for v, amp, width in lesion["lobes"]:
        radius += lesion["radius"] * amp * np.exp(((u @ v) - 1.0) / (width * width))
    solid = _sigmoid((radius - dist) / 0.012)
    if lesion["spicules"]:
        starts = np.repeat(lesion["center"][None], len(lesion["spicules"]), axis=0)
        ends = np.array([lesion["center"] + v * length for v, length in lesion["spicules"]])
        spic = _segments_field(
            size, pose, starts, ends, np.full(len(ends), 0.018), np.full(len(ends), 1.0)
        )
        solid = np.maximum(solid, np.clip(spic, 0.0, 1.0))
    mask = solid > 0.5

    # inflammatory patches (ground glass, mild uptake), inside the lungs only
    inflam_hu = np.zeros_like(X)
    inflam_suv = np.zeros_like(X)
    for patch in lesion.get("inflammation", ()):
        blob = _ellipsoid(coords, patch["center"], patch["radii"], edge=0.25) * lung
        blob = blob * np.clip(0.75 + 0.35 * _smooth_noise(rng, X.shape, 1.0), 0.2, 1.4)
        inflam_hu += patch["hu"] * blob
        inflam_suv += (patch["suv"] - 0.35) * blob

    # CT in Hounsfield units
    hu = np.full(X.shape, -1000.0)
    hu = hu + body * (1000.0 - 100.0)  # subcutaneous fat
    hu = hu + inner * 140.0  # muscle / soft tissue ~ +40
    hu = hu + lung * (-890.0 + 40.0 * _sigmoid(-Y / 0.2))  # dependent (posterior) lung denser
    hu = hu + vessels * 880.0
    hu = hu + heart * 0.0 + liver * 20.0
    hu = hu + spine * 450.0 + ribs * 500.0 * inner
    hu = hu + inflam_hu
    hu = hu * (1.0 - solid) + solid * lesion["hu"]
    if lesion["calcified"]:
        hu += 500.0 * _ellipsoid(coords, lesion["center"], (0.4 * lesion["radius"],) * 3, edge=0.1)
    hu = _gauss_filter(hu, 0.5)
    hu += spec.param("ct_noise_hu") * rng.standard_normal(X.shape)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    # PET (SUV): physiological background, blurred, with noise
    suv = anat["background_suv"] * inner + 0.3 * (body - inner)
    suv = suv * (1.0 - lung) + 0.35 * lung + inflam_suv
    myocardium = np.clip(heart - blood, 0.0, 1.0)
    suv += myocardium * rng.uniform(0.5, spec.param("heart_suv_max"))
    suv += (blood + aorta * inner) * 1.0
    suv += liver * (anat["liver_suv"] - anat["background_suv"])
    suv += spine * 0.8
    texture = np.clip(1.0 + lesion["heterogeneity"] * _smooth_noise(rng, X.shape, 1.0), 0.2, 1.8)
    uptake = solid * texture
    if lesion["necrosis"]:
        uptake *= 1.0 - 0.7 * _ellipsoid(
            coords, lesion["center"], (0.5 * lesion["radius"],) * 3, edge=0.2
        )
    suv = suv * (1.0 - solid) + uptake * lesion["suv_max"]
    suv *= math.exp(rng.normal(0.0, spec.param("pet_scale_spread")))
    suv = _gauss_filter(suv, 0.8 * size / 32.0)
    suv += 0.12 * np.sqrt(np.clip(suv, 0.0, None)) * rng.standard_normal(X.shape)
    pet = np.clip(suv, 0.0, None).astype(np.float32)
    return ct, pet, mask.astype(np.uint8)


def _petct_affine(spec: DemoSpec) -> np.ndarray:
    """Voxel -> RAS+ world (mm) affine: x right, y anterior, z superior, centred at 0."""
    fov = spec.param("fov_mm")
    spacing = np.array([fov, fov, fov * 2.0 / 3.0]) / spec.size
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (spec.size - 1) / 2.0
    return affine


def generate_demo_petct3d(
    out_dir: str | Path,
    *,
    num_cases: int | None = None,
    size: int | None = None,
    seed: int = 0,
    spec: DemoSpec | None = None,
    progress: bool = False,
) -> Path:
    """Write the ``demo-petct3d`` dataset into ``out_dir`` (absent or empty).

    Files: ``ct/<id>.nii.gz`` (int16 HU), ``pet/<id>.nii.gz`` (float32 SUV),
    ``mask/<id>.nii.gz`` (uint8 0/1), all ``(size, size, size)`` on one grid with
    the same affine (spacing ``fov_mm / size`` in x and y, two thirds of that in z);
    ``manifest.csv`` with columns ``ct,pet,mask,label,patient_id`` and
    ``dataset.json``. Every case has a lesion, so every mask is non-empty.

    Args:
        out_dir: destination folder.
        num_cases: number of cases; default ``spec.num_cases``.
        size: side length in voxels; default ``spec.size``.
        seed: non-negative integer seed.
        spec: generator parameters; default ``DEMO_DATASETS["demo-petct3d"]``.
        progress: show a progress bar.

    Returns:
        Path of the manifest.
    """
    import nibabel as nib

    _check_int("seed", seed, minimum=0)
    spec = _resolve_spec("demo-petct3d", num_cases, size, spec)
    out = _prepare_out_dir(out_dir)
    for sub in ("ct", "pet", "mask"):
        (out / sub).mkdir()
    affine = _petct_affine(spec)
    cases = _case_plan(spec.num_cases, seed, spec.followup_fraction)
    rows = []
    for case in _progress_iter(cases, progress, "generating demo-petct3d"):
        prng = _rng(seed, _PATIENT, case.patient)
        anat = _petct_anatomy(prng, spec)
        lesion = _petct_lesion(prng, anat, case.label, spec)
        lesion["inflammation"] = _petct_inflammation(prng, anat, case.label, spec)
        ct, pet, mask = _render_petct(anat, lesion, _rng(seed, _VISIT, case.index), spec.size, spec)
        cid = _case_id("pc", case.index)
        row = {}
        for column, array in (("ct", ct), ("pet", pet), ("mask", mask)):
            image = nib.Nifti1Image(array, affine)
            image.header.set_xyzt_units("mm", "sec")
            image.header["descrip"] = f"medcls synthetic {spec.name} {column}".encode()[:79]
            if column == "ct":
                image.header.set_intent("none")
            nib.save(image, str(out / column / f"{cid}.nii.gz"))
            row[column] = f"{column}/{cid}.nii.gz"
        row["label"] = spec.class_names[case.label]
        row["patient_id"] = _patient_id("pc", case.patient)
        rows.append(row)
    _write_info(out, spec, seed, cases)
    return _write_manifest(out, spec, rows)


_GENERATORS: dict[str, Callable[..., Path]] = {
    "demo-xray2d": generate_demo_xray2d,
    "demo-petct3d": generate_demo_petct3d,
}
