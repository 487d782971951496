"""The Lightning data module: cases, split, leakage check, datasets and loaders.

``setup_data()`` does all the work that can fail on bad input (reading every
case once, checking labels, shapes and patients) *before* any training starts,
and fills the in-memory cache so forked loader workers share it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from medcls.config.schema import ExperimentConfig
from medcls.data.cases import CaseTable, load_cases
from medcls.data.dataset import CaseDataset
from medcls.data.samplers import EpochSampler
from medcls.data.splits import assign_splits, check_leakage, read_splits, write_splits
from medcls.data.transforms import build_augment, build_preprocess
from medcls.errors import DataError

__all__ = ["ClassificationDataModule"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class ClassificationDataModule(pl.LightningDataModule):
    """Splits and loaders of one experiment.

    Args:
        cfg: the experiment configuration.
        run_dir: the run folder; the split is written to ``run_dir/splits.csv`` and,
            when that file exists (a resumed run), read back from it.
        progress: show a progress bar while the cache is filled.
    """

    def __init__(
        self, cfg: ExperimentConfig, run_dir: str | Path | None = None, *, progress: bool = True
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.progress = progress
        self.table: CaseTable | None = None
        self.assignment: dict[str, str] = {}
        self.datasets: dict[str, CaseDataset] = {}
        self.spatial_dims: int | None = None
        self.in_chans: int | None = None
        self.spatial_size: list[int] | None = None
        self._ready = False

    # ------------------------------------------------------------------ set-up
    def setup_data(self) -> None:
        """Read the cases, split them, check for leaks and fill the cache (once)."""
        if self._ready:
            return
        cfg = self.cfg
        table = load_cases(cfg.data)
        split_file = None if self.run_dir is None else self.run_dir / "splits.csv"
        if split_file is not None and split_file.is_file():
            assignment = read_splits(split_file)
            missing = [c.id for c in table.cases if c.id not in assignment]
            if missing:
                raise DataError(
                    f"the saved split does not list case {missing[0]!r} ({len(missing)} missing); "
                    "the data changed since this run started",
                    path=split_file,
                )
        else:
            assignment = assign_splits(
                table,
                val_fraction=cfg.data.val_fraction,
                test_fraction=cfg.data.test_fraction,
                seed=cfg.seed,
            )
        leaks = check_leakage(table, assignment)
        if leaks:
            message = f"{len(leaks)} patient(s) in more than one split: " + "; ".join(leaks[:5])
            if cfg.data.leakage == "error":
                raise DataError(
                    message + " (set data.leakage=warn to continue anyway)", path=table.source
                )
            log.warning(message)
        if split_file is not None and not split_file.is_file():
            write_splits(table, assignment, split_file)
        self.table, self.assignment = table, assignment
        self._build_datasets()
        self._ready = True

    def _probe(self, table: CaseTable) -> None:
        from medcls.data.dataset import load_case

        first = load_case(table.cases[0], table.modalities)
        arrays = list(first.values())
        self.spatial_dims = arrays[0].ndim - 1
        self.in_chans = sum(a.shape[0] for a in arrays)
        size = self.cfg.preprocess.spatial_size
        self.spatial_size = list(size) if size else list(arrays[0].shape[1:])

    def _build_datasets(self) -> None:
        cfg, table = self.cfg, self.table
        self._probe(table)
        preprocess = build_preprocess(
            cfg.preprocess, table.modalities, self.spatial_dims, with_mask=True
        )
        augment = build_augment(cfg.augment, table.modalities, self.spatial_dims, self.spatial_size)
        for split in SPLITS:
            cases = [c for c in table.cases if self.assignment[c.id] == split]
            if not cases:
                continue
            self.datasets[split] = CaseDataset(
                table,
                cases,
                preprocess,
                augment if split == "train" else None,
                spatial_dims=self.spatial_dims,
                seed=cfg.seed,
                cache=cfg.data.cache,
                with_mask=split != "train",
            )
        if cfg.data.cache == "memory":
            self._fill_caches()

    def _fill_caches(self) -> None:
        from medcls.progress import track

        total = sum(len(d) for d in self.datasets.values())
        problems: list[str] = []
        with track("Reading and preprocessing cases", total, enabled=self.progress) as advance:
            for dataset in self.datasets.values():
                problems += dataset.warm_cache(progress=lambda _n: advance(1))
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"{len(problems)} case(s) could not be used:\n  {shown}{more}")

    # ------------------------------------------------------------- properties
    @property
    def classes(self) -> list[str]:
        return self.table.classes

    @property
    def task(self) -> str:
        return self.table.task

    @property
    def modalities(self) -> list[str]:
        return self.table.modalities

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Cases per class in ``split``."""
        return self.table.class_counts(self.datasets[split].cases)

    # ---------------------------------------------------------------- loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        rank, world = self._rank_world()
        weights = None
        if train and self.cfg.data.sampler == "balanced":
            counts = self.class_counts(split)
            weights = [
                1.0 / max(1, min((counts[label] for label in c.labels), default=1))
                for c in dataset.cases
            ]
        sampler = EpochSampler(
            len(dataset),
            seed=self.cfg.seed,
            shuffle=train,
            weights=weights,
            rank=rank,
            world_size=world,
            pad=train,
        )
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.cfg.data.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def loader(self, split: str) -> DataLoader:
        """An evaluation loader (no shuffling, no augmentation) of ``split``."""
        if split not in self.datasets:
            raise DataError(f"the run has no {split!r} split (has {sorted(self.datasets)})")
        return self._loader(split, train=False)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` in the training set."""
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)
