"""The Lightning data module: cases, split, pre-training scan, datasets and loaders.

``setup_data()`` does all the work that can fail on bad input *before* any
training starts: it reads the cases, splits them, reads and preprocesses every
case once (filling the memory or disk cache), and checks labels, shapes,
patients and image content across splits (:meth:`ClassificationDataModule.scan`).
Every problem found is listed at once; ``data.on_bad_case: skip`` leaves bad
cases out instead, listing them (and writing ``skipped_cases.csv`` in the run
folder).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from medcls.config.schema import ExperimentConfig
from medcls.data.cases import CaseProblem, CaseTable, load_cases
from medcls.data.check import DataReport, format_problems
from medcls.data.dataset import CaseDataset, load_case_images
from medcls.data.samplers import EpochSampler, balanced_sample_weights
from medcls.data.splits import (
    assign_splits,
    check_content_leakage,
    check_leakage,
    read_splits,
    write_splits,
)
from medcls.data.transforms import BatchAugment, build_augment, build_preprocess
from medcls.errors import ConfigError, DataError

__all__ = ["ClassificationDataModule"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class ClassificationDataModule(pl.LightningDataModule):
    """Splits and loaders of one experiment.

    Args:
        cfg: the experiment configuration.
        run_dir: the run folder; the split is written to ``run_dir/splits.csv`` and,
            when that file exists (a resumed run), read back from it.
        progress: show a progress bar while the cases are scanned.
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
        self.report: DataReport | None = None
        self.spatial_dims: int | None = None
        self.in_chans: int | None = None
        self.modality_chans: dict[str, int] | None = None
        self.spatial_size: list[int] | None = None
        self.device_augment: BatchAugment | None = None
        self._ready = False

    # ------------------------------------------------------------------ set-up
    def setup_data(self) -> None:
        """Scan the data, stop on errors (or skip bad cases), build the loaders (once).

        Raises:
            DataError: listing every unusable case and every leak, one line each
                (under the default policies).
        """
        if self._ready:
            return
        report = self.scan()
        report.raise_for_errors()
        for line in report.leaks:
            log.warning("leak between splits: %s", line)
        if report.warnings:
            log.warning(
                format_problems(
                    report.warnings, header=f"{len(report.warnings)} reader warning(s)", limit=5
                )
            )
        if report.skipped:
            self._drop(report.skipped)
            log.warning(
                format_problems(
                    [str(p) for p in report.skipped],
                    header=f"skipped {len(report.skipped)} case(s) (data.on_bad_case=skip)",
                )
            )
        if self.run_dir is not None:
            split_file = self.run_dir / "splits.csv"
            if not split_file.is_file():
                write_splits(self.table, self.assignment, split_file)
            self._write_skipped(report.skipped)
        if "train" not in self.datasets:
            raise DataError("no usable training case is left", path=self.table.source)
        self._ready = True

    def scan(self) -> DataReport:
        """Read, split and preprocess every case once; collect what is wrong.

        Fills the cache (memory or disk). Problems that make the whole source
        unusable (a missing manifest or column, an invalid configuration) raise;
        problems of single cases and leaks are collected in the report.

        Returns:
            The :class:`~medcls.data.check.DataReport` (also kept as ``self.report``).
        """
        cfg = self.cfg
        table = load_cases(cfg.data, on_bad="collect")
        problems: list[CaseProblem] = list(table.problems)
        assignment = self._assignment(table)
        self.table, self.assignment = table, assignment
        self.spatial_dims = self._probe_dims(table)
        self._build_datasets()
        problems += self._scan_datasets()
        records = {
            d.cases[i].id: d.records[i]
            for d in self.datasets.values()
            for i in range(len(d))
            if d.records[i] is not None
        }
        problems += self._shape_problems(records)
        bad = {p.case_id for p in problems}
        usable = [c for c in table.cases if c.id not in bad]
        leaks = check_leakage(CaseTable(usable, table.classes, table.task, []), assignment)
        leaks = [f"{table.source}: {line}" for line in leaks]
        hashes = {i: r.hashes for i, r in records.items() if i not in bad}
        leaks += [f"{table.source}: {line}" for line in check_content_leakage(hashes, assignment)]
        warnings = [issue for r in records.values() for issue in r.issues]
        self.report = DataReport(
            table=table,
            assignment=assignment,
            problems=problems,
            leaks=leaks,
            warnings=warnings,
            records=records,
            on_bad_case=cfg.data.on_bad_case,
            leakage=cfg.data.leakage,
        )
        self._set_shape(records, bad)
        return self.report

    def _assignment(self, table: CaseTable) -> dict[str, str]:
        cfg = self.cfg
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
            return assignment
        return assign_splits(
            table,
            val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction,
            seed=cfg.seed,
            fold=cfg.data.fold,
            num_folds=cfg.data.num_folds,
        )

    def _probe_dims(self, table: CaseTable) -> int:
        """Spatial dims of the data: from the source, else from the first readable case."""
        if "spatial_dims" in table.extra:
            return int(table.extra["spatial_dims"])
        first_error = None
        for case in table.cases[:20]:
            try:
                images = load_case_images(case, table.modalities[:1])
            except DataError as exc:
                first_error = first_error or exc
                continue
            return next(iter(images.values())).spatial_dims
        if first_error is not None:
            raise DataError(
                f"none of the first {min(20, len(table.cases))} cases can be read; the first "
                f"problem: {first_error}"
            )
        raise DataError("the dataset has no case", path=table.source)

    def _build_datasets(self) -> None:
        from medcls.config import config_to_dict

        cfg, table = self.cfg, self.table
        dims = self.spatial_dims
        preprocess = build_preprocess(cfg.preprocess, table.modalities, dims, with_mask=True)
        augment = build_augment(cfg.augment, table.modalities, dims)
        self.device_augment = (
            BatchAugment(cfg.augment, table.modalities, dims, cfg.seed)
            if cfg.augment.on_device
            else None
        )
        disk = None
        if cfg.data.cache == "disk":
            from medcls.data.cache import DiskCache, default_cache_root

            root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_root()
            disk = DiskCache(
                root,
                {
                    "preprocess": config_to_dict(cfg.preprocess),
                    "modalities": list(table.modalities),
                    "spatial_dims": dims,
                },
                key_mode=cfg.data.cache_key,
            )
        self.datasets = {}
        for split in SPLITS:
            cases = [c for c in table.cases if self.assignment[c.id] == split]
            if not cases:
                continue
            self.datasets[split] = CaseDataset(
                table,
                cases,
                preprocess,
                augment if split == "train" else None,
                spatial_dims=dims,
                seed=cfg.seed,
                cache=cfg.data.cache,
                disk_cache=disk,
                with_mask=split != "train",
                mask_for_preprocess=cfg.preprocess.crop_foreground == "mask",
            )

    def _scan_datasets(self) -> list[CaseProblem]:
        from medcls.progress import track

        total = sum(len(d) for d in self.datasets.values())
        problems: list[CaseProblem] = []
        workers = self.cfg.data.num_workers
        with track("Reading and preprocessing cases", total, enabled=self.progress) as advance:
            for dataset in self.datasets.values():
                found = dataset.scan(progress=lambda _n: advance(1), num_workers=workers)
                for index, message in sorted(found.items()):
                    case = dataset.cases[index]
                    problems.append(CaseProblem(case.id, None, message))
        return problems

    def _shape_problems(self, records: dict) -> list[CaseProblem]:
        """Cases whose preprocessed shape differs from the most common one."""
        shapes = {
            case_id: tuple(tuple(v) for v in r.output_shape.values())
            for case_id, r in records.items()
        }
        if len(set(shapes.values())) <= 1:
            return []
        common, count = Counter(shapes.values()).most_common(1)[0]
        cases = {c.id: c for c in self.table.cases}
        problems = []
        for case_id, shape in shapes.items():
            if shape == common:
                continue
            case = cases[case_id]
            problems.append(
                CaseProblem(
                    case_id,
                    next(iter(case.modalities.values())),
                    f"case {case_id!r} has shape {list(shape[0])} after preprocessing but "
                    f"{count} other case(s) have {list(common[0])}; set preprocess.spatial_size "
                    "so that every case gets one size",
                )
            )
        return problems

    def _set_shape(self, records: dict, bad: set[str]) -> None:
        good = [r for case_id, r in records.items() if case_id not in bad]
        if not good:
            return
        shapes = good[0].output_shape
        self.modality_chans = {m: int(shapes[m][0]) for m in self.table.modalities}
        self.in_chans = sum(self.modality_chans.values())
        self.spatial_size = list(shapes[self.table.modalities[0]][1:])

    def _drop(self, skipped: list[CaseProblem]) -> None:
        """Leave the skipped cases out of the datasets (their cache slots too)."""
        bad = {p.case_id for p in skipped}
        for split, dataset in list(self.datasets.items()):
            keep = [i for i, c in enumerate(dataset.cases) if c.id not in bad]
            if len(keep) == len(dataset.cases):
                continue
            dataset.cases = [dataset.cases[i] for i in keep]
            dataset.records = [dataset.records[i] for i in keep]
            if dataset._cache is not None:
                dataset._cache = [dataset._cache[i] for i in keep]
            if not dataset.cases:
                del self.datasets[split]

    def _write_skipped(self, skipped: list[CaseProblem]) -> None:
        path = self.run_dir / "skipped_cases.csv"
        if not skipped:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "split", "problem"])
            for p in skipped:
                writer.writerow([p.case_id, self.assignment.get(p.case_id, ""), str(p)])

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

    def sample_weights(self, split: str = "train") -> list[float]:
        """Class-balanced sampling weights of ``split`` (see :func:`balanced_sample_weights`)."""
        return balanced_sample_weights([c.labels for c in self.datasets[split].cases])

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        rank, world = self._rank_world()
        weights = None
        if train and self.cfg.data.sampler == "balanced":
            weights = self.sample_weights(split)
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
        batch = self.cfg.data.batch_size
        if not isinstance(batch, int):
            raise ConfigError(
                f"data.batch_size={batch!r}: the training entry points (medcls train, "
                "medcls tune) resolve 'auto' to a number before loaders are built"
            )
        # A training batch of one sample cannot be normalised by BatchNorm when the
        # features are 1x1(x1) (it raises mid-epoch): drop such a last batch. The
        # sample order changes every epoch, so no case is left out for good.
        single = train and len(sampler) > batch and len(sampler) % batch == 1
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=False,
            drop_last=single,
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

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Run :class:`BatchAugment` on training batches when ``augment.on_device`` is set."""
        trainer = getattr(self, "trainer", None)
        if self.device_augment is None or trainer is None or not trainer.training:
            return batch
        return self.device_augment(batch, self.datasets["train"].epoch)
