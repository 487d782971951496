"""The training dataset: cached deterministic preprocessing, seeded augmentation.

Everything before the first random transform is computed once per case and kept
in memory (``cache="memory"``, filled in the main process before data-loader
workers start so that forked workers share it) or on disk (``cache="disk"``, a
:class:`~medcls.data.cache.DiskCache` shared by every process and run).
Augmentation of sample ``i`` in epoch ``e`` is seeded from ``(seed, e, i)``: a
sample's augmentation does not depend on worker count, batch order or on whether
the run was resumed.

Preprocessing a case also records facts about its raw images
(:class:`CaseRecord`: content hash, shape, spacing, intensity range), which the
pre-training scan uses for the leakage check and the dataset summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from medcls.data.cases import Case, CaseTable
from medcls.errors import ConfigError, DataError, MedclsError

__all__ = [
    "CaseDataset",
    "CaseRecord",
    "content_hash",
    "load_case",
    "load_case_images",
    "sample_seed",
]

MASK_KEY = "mask"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed derived from (seed, epoch, index) with good mixing."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def content_hash(array: np.ndarray) -> str:
    """A hash of an image's shape and values (identical pixels, identical hash)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(tuple(array.shape)).encode())
    digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


@dataclass
class CaseRecord:
    """Facts about one case, gathered while it is preprocessed.

    Attributes:
        hashes: modality -> content hash of the raw image.
        shapes: modality -> raw shape ``(C, *spatial)``.
        spacings: modality -> raw voxel size (mm per spatial axis).
        ranges: modality -> raw ``(min, max)`` intensity.
        issues: warning-level findings of the readers (e.g. a constant image).
        output_shape: modality -> preprocessed shape ``(C, *spatial)``.
    """

    hashes: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    spacings: dict[str, list[float]] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    output_shape: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CaseRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def load_case_images(
    case: Case,
    modalities: Sequence[str],
    spatial_dims: int | None = None,
    *,
    with_mask: bool = False,
) -> dict:
    """Read a case's files into ``{name: Image}`` (arrays with their geometry).

    Args:
        case: the case.
        modalities: which modalities to read.
        spatial_dims: expected dimensionality (checked by the reader) or None.
        with_mask: also read the case's mask under the key ``mask`` (if it has one),
            binarised (``> 0``).

    Raises:
        DataError: a file is missing, unreadable or invalid (names the file).
    """
    from medcls.data.sources import read_source_image

    images = {}
    for name in modalities:
        path = case.modalities.get(name)
        if path is None:
            raise DataError(
                f"case {case.id!r} has no modality {name!r} (has {list(case.modalities)})"
            )
        images[name] = read_source_image(path, spatial_dims=spatial_dims)
    if with_mask and case.mask:
        mask = read_source_image(case.mask, spatial_dims=spatial_dims)
        mask.array = (mask.array > 0).astype(np.float32)
        images[MASK_KEY] = mask
    return images


def load_case(
    case: Case,
    modalities: Sequence[str],
    spatial_dims: int | None = None,
    *,
    with_mask: bool = False,
) -> dict:
    """Read a case's modality files into ``{name: float32 array (C, *spatial)}``.

    Like :func:`load_case_images` without the geometry.
    """
    images = load_case_images(case, modalities, spatial_dims, with_mask=with_mask)
    return {name: image.array for name, image in images.items()}


def _record(images: dict, modalities: Sequence[str]) -> CaseRecord:
    record = CaseRecord()
    for name in modalities:
        image = images[name]
        record.hashes[name] = content_hash(image.array)
        record.shapes[name] = [int(n) for n in image.array.shape]
        record.spacings[name] = [float(s) for s in image.spacing]
        record.ranges[name] = [float(image.array.min()), float(image.array.max())]
        record.issues += [f"{image.path}: {issue}" for issue in image.meta.get("issues", [])]
    return record


class CaseDataset(Dataset):
    """Cases -> ``{modality: (C, *spatial) float tensor, "target", "index", "id"}`` samples.

    Args:
        table: the case table (classes, task, modalities).
        cases: the cases of this split.
        preprocess: deterministic transform (sample dict -> sample dict).
        augment: random transform with ``set_random_state`` (or None).
        spatial_dims: 2 or 3.
        seed: base seed of the augmentation.
        cache: ``memory``, ``disk`` (needs ``disk_cache``) or ``none``.
        disk_cache: the :class:`~medcls.data.cache.DiskCache` of ``cache="disk"``.
        with_mask: include the lesion mask (``mask`` key; zeros when a case has none).
        with_target: include ``target`` (False for unlabelled prediction inputs).
        mask_for_preprocess: read the mask even when it is not returned
            (``preprocess.crop_foreground: mask``); a case without a mask is then
            an error.
    """

    def __init__(
        self,
        table: CaseTable,
        cases: Sequence[Case],
        preprocess: Callable,
        augment=None,
        *,
        spatial_dims: int,
        seed: int = 0,
        cache: str = "memory",
        disk_cache=None,
        with_mask: bool = False,
        with_target: bool = True,
        mask_for_preprocess: bool = False,
    ) -> None:
        if cache not in ("memory", "disk", "none"):
            raise ConfigError(f"data.cache: expected 'memory', 'disk' or 'none', got {cache!r}")
        if cache == "disk" and disk_cache is None:
            raise ConfigError("data.cache: 'disk' needs a DiskCache")
        self.table = table
        self.cases = list(cases)
        self.modalities = list(table.modalities)
        self.preprocess = preprocess
        self.augment = augment
        self.spatial_dims = spatial_dims
        self.seed = seed
        self.epoch = 0
        self.with_mask = with_mask
        self.with_target = with_target
        self.mask_for_preprocess = mask_for_preprocess
        self.cache = cache
        self.disk_cache = disk_cache if cache == "disk" else None
        self._cache: list[dict | None] | None = (
            [None] * len(self.cases) if cache == "memory" else None
        )
        self.records: list[CaseRecord | None] = [None] * len(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before each epoch)."""
        self.epoch = int(epoch)

    @property
    def _reads_mask(self) -> bool:
        return self.with_mask or self.mask_for_preprocess

    def _compute(self, case: Case) -> tuple[dict, CaseRecord]:
        from monai.data import MetaTensor

        if self.mask_for_preprocess and not case.mask:
            raise DataError(
                f"case {case.id!r} has no mask, but preprocess.crop_foreground is 'mask'",
                path=next(iter(case.modalities.values()), None),
            )
        images = load_case_images(
            case, self.modalities, self.spatial_dims, with_mask=self._reads_mask
        )
        record = _record(images, self.modalities)
        sample = {
            name: MetaTensor(image.array, affine=torch.as_tensor(image.affine, dtype=torch.float64))
            for name, image in images.items()
        }
        try:
            item = self.preprocess(sample)
        except MedclsError:
            raise
        except Exception as exc:  # a transform failing on this case's data
            cause = exc.__cause__ or exc
            detail = str(cause).strip().splitlines()[-1] if str(cause).strip() else ""
            raise DataError(
                f"case {case.id!r}: preprocessing failed ({type(cause).__name__}: {detail})",
                path=case.modalities[self.modalities[0]],
            ) from exc
        kept = [*self.modalities, MASK_KEY] if self.with_mask else self.modalities
        item = {key: item[key] for key in kept if key in item}
        self._check(case, item)
        record.output_shape = {m: [int(n) for n in item[m].shape] for m in self.modalities}
        return item, record

    def _check(self, case: Case, item: dict) -> None:
        shapes = {m: tuple(item[m].shape[1:]) for m in self.modalities}
        if len(set(shapes.values())) > 1:
            raise DataError(
                f"case {case.id!r}: modalities have different shapes after preprocessing "
                f"{shapes}; set preprocess.spatial_size (or preprocess.spacing for 3D "
                "volumes) so they share one grid",
                path=case.modalities[self.modalities[0]],
            )
        for name in self.modalities:
            if 0 in shapes[name]:
                raise DataError(
                    f"case {case.id!r}: modality {name!r} is empty after preprocessing "
                    f"(shape {tuple(item[name].shape)}); is there any foreground for "
                    "preprocess.crop_foreground?",
                    path=case.modalities[name],
                )
            if not torch.isfinite(item[name]).all():
                raise DataError(
                    f"case {case.id!r}: modality {name!r} has NaN or Inf values after "
                    "preprocessing",
                    path=case.modalities[name],
                )

    def prepare(self, index: int) -> dict:
        """Load and preprocess case ``index`` (deterministic; cached when enabled).

        Raises:
            DataError: the case's files cannot be read or preprocessed (names the file).
        """
        if self._cache is not None and self._cache[index] is not None:
            return self._cache[index]
        case = self.cases[index]
        key = None
        if self.disk_cache is not None:
            key = self.disk_cache.key(
                case,
                self.modalities,
                with_mask=self._reads_mask,
                tag=f"returns_mask={self.with_mask}",
            )
            hit = self.disk_cache.load(key)
            if hit is not None:
                item, record = hit
                if self.records[index] is None:
                    self.records[index] = CaseRecord.from_dict(record)
                return item
        item, record = self._compute(case)
        self.records[index] = record
        if key is not None:
            self.disk_cache.save(key, item, record.to_dict())
        if self._cache is not None:
            self._cache[index] = item
        return item

    def scan(self, progress: Callable | None = None, num_workers: int = 0) -> dict[int, str]:
        """Prepare every case now (filling the cache); returns the problems by index.

        Args:
            progress: called with the number of cases done after each case.
            num_workers: worker processes that read and preprocess in parallel.

        Returns:
            Case index -> problem (one line naming the file), for the cases that
            could not be used.
        """
        problems: dict[int, str] = {}
        todo = [i for i in range(len(self)) if self.records[i] is None]
        done = len(self) - len(todo)
        if progress is not None and done:
            progress(done)
        if num_workers > 0 and len(todo) > 1:
            results = _parallel_prepare(self, todo, num_workers)
        else:
            results = (self._prepare_one(i) for i in todo)
        for index, item, record, problem in results:
            if problem is not None:
                problems[index] = problem
            else:
                self.records[index] = record
                if self._cache is not None and item is not None:
                    self._cache[index] = item
            done += 1
            if progress is not None:
                progress(done)
        return problems

    def _prepare_one(self, index: int, keep: bool = True):
        try:
            item = self.prepare(index)
        except DataError as exc:
            return index, None, None, str(exc)
        return index, item if keep else None, self.records[index], None

    def warm_cache(self, progress: Callable | None = None) -> list[str]:
        """Prepare every case now; returns the problems found (one line each)."""
        return list(self.scan(progress).values())

    def __getitem__(self, index: int) -> dict:
        item = dict(self.prepare(index))
        if self.augment is not None:
            self.augment.set_random_state(seed=sample_seed(self.seed, self.epoch, index))
            item = self.augment(item)
        sample = {name: item[name] for name in self.modalities}
        sample["index"] = index
        sample["id"] = self.cases[index].id
        if self.with_mask:
            reference = item[self.modalities[0]]
            sample[MASK_KEY] = item.get(MASK_KEY, torch.zeros_like(reference[:1]))
        if self.with_target:
            target = self.table.target(self.cases[index])
            sample["target"] = torch.tensor(
                target, dtype=torch.float32 if self.table.task == "multilabel" else torch.long
            )
        return sample


class _ScanView(Dataset):
    """Index ``k`` -> ``(index, item or None, record, problem)`` of case ``todo[k]``."""

    def __init__(self, dataset: CaseDataset, todo: list[int]) -> None:
        self.dataset = dataset
        self.todo = todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        keep = self.dataset.cache == "memory"
        return self.dataset._prepare_one(self.todo[k], keep=keep)


def _as_is(item):
    return item


def _parallel_prepare(dataset: CaseDataset, todo: list[int], num_workers: int):
    """Run :meth:`CaseDataset.prepare` over ``todo`` in worker processes."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _ScanView(dataset, todo), batch_size=None, num_workers=num_workers, collate_fn=_as_is
    )
    for index, item, record, problem in loader:
        if item is not None:  # copy out of shared memory: keeps no file descriptor per case
            item = {k: v.clone() for k, v in item.items()}
        yield index, item, record, problem
