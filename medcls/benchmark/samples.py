"""Preprocessed example inputs of a finished run, for profiling and heatmap grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medcls.errors import DataError

__all__ = ["RunSamples", "load_run_samples", "model_input_from"]


class RunSamples:
    """A few preprocessed cases of one split of a run.

    Attributes:
        parts: modality -> ``(N, C_m, *spatial)`` tensor.
        ids: the N case ids.
        labels: the N class names (the first label of each case).
        modalities: modality names in channel order.
        classes: the run's classes.
    """

    def __init__(
        self,
        parts: dict[str, torch.Tensor],
        ids: list[str],
        labels: list[str],
        modalities: list[str],
        classes: list[str],
    ) -> None:
        self.parts = parts
        self.ids = ids
        self.labels = labels
        self.modalities = modalities
        self.classes = classes

    def __len__(self) -> int:
        return len(self.ids)

    def input_for(self, model: torch.nn.Module, count: int | None = None) -> Any:
        """The model's input: a dict for fusion models, else modalities concatenated on channels."""
        return model_input_from(model, self.parts, self.modalities, count)


def model_input_from(
    model: torch.nn.Module,
    parts: dict[str, torch.Tensor],
    modalities: list[str],
    count: int | None = None,
) -> Any:
    """``(count, C, *spatial)`` (or a modality dict for models with a ``modalities`` attribute)."""
    picked = {m: parts[m][:count] if count is not None else parts[m] for m in modalities}
    if getattr(model, "modalities", None):
        return picked
    tensors = [picked[m] for m in modalities]
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)


def load_run_samples(
    run_dir: str | Path,
    *,
    split: str = "test",
    per_class: int = 2,
    max_cases: int | None = None,
    checkpoint: str = "best",
) -> RunSamples:
    """Preprocess up to ``per_class`` cases of each class from a run's saved split.

    The cases go through the run's own deterministic preprocessing (no
    augmentation), read from its checkpoint description.

    Args:
        run_dir: a finished run folder (``splits.csv``, ``checkpoints/<checkpoint>.json``).
        split: ``test``, ``val`` or ``train``; falls back to ``val`` and then
            ``train`` when the split is empty.
        per_class: cases per class, in split order (classes interleaved).
        max_cases: at most this many cases in all.
        checkpoint: which checkpoint description to read.

    Raises:
        DataError: the run has no usable case.
    """
    from medcls.config import load_config
    from medcls.data.cases import CaseTable, load_cases
    from medcls.data.dataset import CaseDataset
    from medcls.data.splits import read_splits
    from medcls.data.transforms import build_preprocess
    from medcls.engine.checkpoint import read_meta

    run_dir = Path(run_dir)
    meta = read_meta(run_dir / "checkpoints" / checkpoint)
    cfg = load_config(meta["config"])
    classes, modalities = list(meta["classes"]), list(meta["modalities"])
    spatial_dims = int(meta["model"]["spatial_dims"])
    table = load_cases(cfg.data)
    assignment = read_splits(run_dir / "splits.csv")
    chosen = []
    for name in (split, "val", "train"):
        pool = [c for c in table.cases if assignment.get(c.id) == name]
        if pool:
            by_class: dict[str, list] = {c: [] for c in classes}
            for case in pool:
                label = case.labels[0] if case.labels else None
                if label in by_class and len(by_class[label]) < per_class:
                    by_class[label].append(case)
            rounds = max((len(v) for v in by_class.values()), default=0)
            chosen = [v[i] for i in range(rounds) for v in by_class.values() if i < len(v)]
            if chosen:
                break
    if max_cases is not None:
        chosen = chosen[: int(max_cases)]
    if not chosen:
        raise DataError(
            "no case with a known class in the saved split", path=run_dir / "splits.csv"
        )
    sub = CaseTable(chosen, classes, meta["task"], modalities, source=str(run_dir))
    preprocess = build_preprocess(cfg.preprocess, modalities, spatial_dims)
    dataset = CaseDataset(
        sub, chosen, preprocess, spatial_dims=spatial_dims, cache="none", with_target=False
    )
    samples = [dataset[i] for i in range(len(dataset))]
    parts = {m: torch.stack([s[m] for s in samples]) for m in modalities}
    labels = [c.labels[0] for c in chosen]
    return RunSamples(parts, [c.id for c in chosen], labels, modalities, classes)
