"""The training dataset: cached deterministic preprocessing, seeded augmentation.

Everything before the first random transform is computed once per case and kept
in memory (``cache="memory"``), filled in the main process before data-loader
workers start so that forked workers share it. Augmentation of sample ``i`` in
epoch ``e`` is seeded from ``(seed, e, i)``: a sample's augmentation does not
depend on worker count, batch order or on whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medcls.data.cases import Case, CaseTable
from medcls.errors import DataError

__all__ = ["CaseDataset", "load_case", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed derived from (seed, epoch, index) with good mixing."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def load_case(
    case: Case,
    modalities: Sequence[str],
    spatial_dims: int | None = None,
    *,
    with_mask: bool = False,
) -> dict:
    """Read a case's modality files into ``{name: float32 array (C, *spatial)}``.

    Args:
        case: the case.
        modalities: which modalities to read.
        spatial_dims: expected dimensionality (checked by the reader) or None.
        with_mask: also read the case's mask under the key ``mask`` (if it has one).

    Raises:
        DataError: a file is missing, unreadable or invalid (names the file).
    """
    from medcls.data.readers import read_image

    sample = {}
    for name in modalities:
        path = case.modalities.get(name)
        if path is None:
            raise DataError(
                f"case {case.id!r} has no modality {name!r} (has {list(case.modalities)})"
            )
        sample[name] = read_image(path, spatial_dims=spatial_dims).array
    if with_mask and case.mask:
        sample["mask"] = (read_image(case.mask, spatial_dims=spatial_dims).array > 0).astype(
            np.float32
        )
    return sample


class CaseDataset(Dataset):
    """Cases -> ``{modality: (C, *spatial) float tensor, "target", "index", "id"}`` samples.

    Args:
        table: the case table (classes, task, modalities).
        cases: the cases of this split.
        preprocess: deterministic transform (sample dict -> sample dict).
        augment: random transform with ``set_random_state`` (or None).
        spatial_dims: 2 or 3.
        seed: base seed of the augmentation.
        cache: ``memory`` or ``none``.
        with_mask: include the lesion mask (``mask`` key; zeros when a case has none).
        with_target: include ``target`` (False for unlabelled prediction inputs).
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
        with_mask: bool = False,
        with_target: bool = True,
    ) -> None:
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
        self._cache: list[dict] | None = [None] * len(self.cases) if cache == "memory" else None

    def __len__(self) -> int:
        return len(self.cases)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before each epoch)."""
        self.epoch = int(epoch)

    def prepare(self, index: int) -> dict:
        """Load and preprocess case ``index`` (deterministic; cached when enabled)."""
        if self._cache is not None and self._cache[index] is not None:
            return self._cache[index]
        case = self.cases[index]
        raw = load_case(case, self.modalities, self.spatial_dims, with_mask=self.with_mask)
        item = self.preprocess(raw)
        shapes = {m: tuple(item[m].shape[1:]) for m in self.modalities}
        if len(set(shapes.values())) > 1:
            raise DataError(
                f"case {case.id!r}: modalities have different shapes after preprocessing "
                f"{shapes}; set preprocess.spatial_size so they share one grid"
            )
        for name in self.modalities:
            if not torch.isfinite(item[name]).all():
                raise DataError(
                    f"case {case.id!r}: modality {name!r} has NaN or Inf values after "
                    "preprocessing",
                    path=case.modalities[name],
                )
        if self._cache is not None:
            self._cache[index] = item
        return item

    def warm_cache(self, progress: Callable | None = None) -> list[str]:
        """Prepare every case now; returns the problems found (one line each).

        Args:
            progress: called with the number of cases done after each case.
        """
        problems = []
        for index in range(len(self)):
            try:
                self.prepare(index)
            except DataError as exc:
                problems.append(str(exc))
            if progress is not None:
                progress(index + 1)
        return problems

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
            sample["mask"] = item.get("mask", torch.zeros_like(reference[:1]))
        if self.with_target:
            target = self.table.target(self.cases[index])
            sample["target"] = torch.tensor(
                target, dtype=torch.float32 if self.table.task == "multilabel" else torch.long
            )
        return sample
