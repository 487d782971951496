"""Accumulate model outputs over batches, then compute metrics on the whole set.

:class:`PredictionCollector` is the state; the maths is in
:mod:`medcls.evaluation.functional`. It is called on every validation step, so
:meth:`PredictionCollector.update` does only the activation and a copy to the
CPU; concatenation and metrics happen once, in :meth:`~PredictionCollector.compute`.

Example::

    collector = PredictionCollector("binary", num_classes=2, class_names=["normal", "pneumonia"])
    for images, labels, case_ids in loader:
        collector.update(model(images), labels, case_ids)     # logits
    collector.sync()                                           # no-op without DDP
    metrics = collector.compute(threshold=0.5)
    collector.write_csv("predictions.csv")
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcls.errors import DataError, ModelError
from medcls.evaluation.functional import (
    _check_threshold,
    _class_names,
    check_task,
    classification_metrics,
    roc_curves,
)

__all__ = ["PredictionCollector", "all_gather_objects"]


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather a picklable object from every process of the default process group.

    Args:
        obj: any picklable object (here: numpy arrays and lists).

    Returns:
        ``[obj_rank0, obj_rank1, ...]`` when ``torch.distributed`` is initialised
        with more than one process; ``[obj]`` otherwise.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class PredictionCollector:
    """Keeps probabilities, targets and sample ids of a data set, batch by batch.

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        num_classes: K. Binary: 2 (1 is accepted and means the same); the model
            may output one logit ``(B,)``/``(B, 1)`` or two ``(B, 2)``.
        class_names: K names (binary: negative first); default ``"0"``, ``"1"``, ...

    Stored shapes (after :meth:`probabilities` / :meth:`targets`): binary
    ``(N,)`` positive-class probability and ``(N,)`` labels; multiclass
    ``(N, K)`` and ``(N,)``; multilabel ``(N, K)`` and ``(N, K)``.
    """

    def __init__(
        self, task: str, num_classes: int, class_names: Sequence[str] | None = None
    ) -> None:
        self.task = check_task(task)
        num_classes = int(num_classes)
        if task == "binary":
            if num_classes not in (1, 2):
                raise ModelError(
                    f"num_classes: task 'binary' expects 2 (or 1 for a single logit); got {num_classes}"
                )
            num_classes = 2
        elif num_classes < 2:
            raise ModelError(f"num_classes: task {task!r} expects at least 2; got {num_classes}")
        self.num_classes = num_classes
        self.class_names = _class_names(class_names, num_classes)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every sample seen (call at the start of each epoch)."""
        self._probs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        self._ids: list[str] = []
        self._has_ids: bool | None = None
        self._count = 0

    def __len__(self) -> int:
        """Number of samples collected so far."""
        return self._count

    @torch.no_grad()
    def update(
        self,
        logits_or_probs: torch.Tensor,
        target: torch.Tensor,
        ids: Sequence[str] | None = None,
        *,
        from_logits: bool = True,
    ) -> None:
        """Add one batch.

        Args:
            logits_or_probs: model outputs on any device and dtype. Binary
                ``(B,)``, ``(B, 1)`` or ``(B, 2)``; multiclass/multilabel ``(B, K)``.
            target: binary ``(B,)``/``(B, 1)`` in {0, 1}; multiclass ``(B,)``
                class indices; multilabel ``(B, K)`` in {0, 1}.
            ids: ``B`` sample ids (case names), kept for the CSV export; give them
                for every batch or for none.
            from_logits: apply sigmoid (binary with one output, multilabel) or
                softmax (binary with two outputs, multiclass) first; ``False``
                when the outputs are already probabilities.

        Raises:
            ModelError: outputs whose shape does not fit ``task``/``num_classes``.
            DataError: targets or ids that do not fit the outputs.
        """
        outputs = torch.as_tensor(logits_or_probs).detach()
        batch = outputs.shape[0] if outputs.ndim else 0
        if self.task == "binary":
            if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
                outputs = outputs.reshape(-1).float()
                probs = torch.sigmoid(outputs) if from_logits else outputs
            elif outputs.ndim == 2 and outputs.shape[1] == 2:
                outputs = outputs.float()
                probs = (torch.softmax(outputs, dim=1) if from_logits else outputs)[:, 1]
            else:
                raise ModelError(
                    "outputs for task 'binary' must have shape (B,), (B, 1) or (B, 2); "
                    f"got {tuple(outputs.shape)}"
                )
        else:
            if outputs.ndim != 2 or outputs.shape[1] != self.num_classes:
                raise ModelError(
                    f"outputs for task {self.task!r} must have shape (B, {self.num_classes}) "
                    f"(num_classes={self.num_classes}); got {tuple(outputs.shape)}"
                )
            outputs = outputs.float()
            if not from_logits:
                probs = outputs
            elif self.task == "multiclass":
                probs = torch.softmax(outputs, dim=1)
            else:
                probs = torch.sigmoid(outputs)

        labels = torch.as_tensor(target).detach()
        if self.task == "multilabel":
            expected: tuple[int, ...] = (batch, self.num_classes)
        else:
            expected = (batch,)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels.reshape(-1)
        if tuple(labels.shape) != expected:
            raise DataError(
                f"target for task {self.task!r} must have shape {expected} to match outputs "
                f"{tuple(outputs.shape)}; got {tuple(labels.shape)}"
            )
        if labels.is_floating_point():
            labels = labels.float()
        labels_np = labels.cpu().numpy()
        if labels_np.dtype.kind == "f" and np.any(labels_np != np.round(labels_np)):
            raise DataError(
                f"target for task {self.task!r} must hold integer labels (soft or mixed "
                "labels cannot be scored); got non-integer values"
            )
        labels_np = labels_np.astype(np.int64)
        high = 2 if self.task != "multiclass" else self.num_classes
        bad = labels_np[(labels_np < 0) | (labels_np >= high)]
        if bad.size:
            raise DataError(
                f"target for task {self.task!r} holds {bad.flat[0]}; expected values in [0, {high})"
            )

        if ids is not None:
            ids = [str(i) for i in ids]
            if len(ids) != batch:
                raise DataError(f"ids: expected {batch} ids for a batch of {batch}; got {len(ids)}")
        has_ids = ids is not None
        if self._has_ids is not None and has_ids != self._has_ids:
            earlier = "had" if self._has_ids else "did not have"
            raise DataError(
                "ids: give sample ids with every update or with none; earlier batches "
                f"{earlier} them, this one {'has' if has_ids else 'does not'}"
            )
        self._has_ids = has_ids

        self._probs.append(probs.cpu().numpy())
        self._targets.append(labels_np)
        if ids is not None:
            self._ids.extend(ids)
        self._count += batch

    def sync(
        self,
        gather_fn: Callable[[Any], list[Any]] | None = None,
        *,
        deduplicate: bool = True,
    ) -> None:
        """Replace the local samples by those of all processes (DDP).

        Call on every process before :meth:`compute`, so that metrics cover the
        whole validation set. Without ``torch.distributed`` (or with one process)
        this does nothing. Afterwards the samples are in rank order (all of rank
        0, then rank 1, ...), not in the order of the data set.

        Args:
            gather_fn: ``obj -> [obj of rank 0, obj of rank 1, ...]``; default
                :func:`all_gather_objects` (``torch.distributed.all_gather_object``).
            deduplicate: drop repeated sample ids, keeping the first. A
                ``DistributedSampler`` pads the last batches with repeated samples;
                without ids they cannot be recognised and are kept.
        """
        gather = gather_fn or all_gather_objects
        local = (self._concat_probs(), self._concat_targets(), list(self._ids), self._has_ids)
        parts = gather(local)
        if len(parts) <= 1 and gather_fn is None:
            return
        parts = [part for part in parts if part[0].shape[0] > 0]
        flags = {part[3] for part in parts}
        if len(flags) > 1:
            raise DataError("ids: some processes collected sample ids and others did not")
        self.reset()
        if not parts:
            return
        probs = np.concatenate([part[0] for part in parts])
        targets = np.concatenate([part[1] for part in parts])
        ids = [i for part in parts for i in part[2]]
        self._has_ids = flags.pop()
        if deduplicate and self._has_ids:
            seen: set[str] = set()
            keep = []
            for sample_id in ids:
                keep.append(sample_id not in seen)
                seen.add(sample_id)
            mask = np.asarray(keep)
            probs, targets = probs[mask], targets[mask]
            ids = [i for i, k in zip(ids, keep, strict=True) if k]
        self._probs, self._targets, self._ids = [probs], [targets], ids
        self._count = int(probs.shape[0])

    # ------------------------------------------------------------------ access

    def _concat_probs(self) -> np.ndarray:
        if not self._probs:
            shape = (0,) if self.task == "binary" else (0, self.num_classes)
            return np.zeros(shape, dtype=np.float32)
        return np.concatenate(self._probs)

    def _concat_targets(self) -> np.ndarray:
        if not self._targets:
            shape = (0, self.num_classes) if self.task == "multilabel" else (0,)
            return np.zeros(shape, dtype=np.int64)
        return np.concatenate(self._targets)

    def probabilities(self) -> np.ndarray:
        """Collected probabilities: binary ``(N,)`` (positive class), otherwise ``(N, K)``."""
        probs = self._concat_probs()
        self._probs = [probs] if probs.shape[0] else []
        return probs.copy()

    def targets(self) -> np.ndarray:
        """Collected labels (int64): ``(N,)``, multilabel ``(N, K)``."""
        targets = self._concat_targets()
        self._targets = [targets] if targets.shape[0] else []
        return targets.copy()

    def ids(self) -> list[str] | None:
        """Collected sample ids in order, or ``None`` if updates gave none."""
        return list(self._ids) if self._has_ids else None

    def _require_samples(self) -> None:
        if self._count == 0:
            raise DataError(
                "PredictionCollector has no samples: call update() with at least one batch "
                "before compute()/to_rows()"
            )

    def compute(self, threshold: float = 0.5) -> dict[str, Any]:
        """Metrics on every collected sample (see :func:`classification_metrics`)."""
        self._require_samples()
        return classification_metrics(
            self.probabilities(),
            self.targets(),
            self.task,
            threshold=threshold,
            class_names=self.class_names,
        )

    def roc_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """ROC curves of the collected samples (see :func:`roc_curves`)."""
        self._require_samples()
        return roc_curves(
            self.probabilities(), self.targets(), self.task, class_names=self.class_names
        )

    # ------------------------------------------------------------------ export

    def columns(self) -> list[str]:
        """Column names of :meth:`to_rows`, in order.

        ``id``; then binary/multiclass: ``target``, ``prob_<name>`` per class,
        ``pred``; multilabel: ``target_<name>``, ``prob_<name>``, ``pred_<name>``
        per label. Targets and predictions are class indices (0/1 for labels).
        """
        names = self.class_names
        if self.task == "multilabel":
            return [
                "id",
                *(f"target_{n}" for n in names),
                *(f"prob_{n}" for n in names),
                *(f"pred_{n}" for n in names),
            ]
        return ["id", "target", *(f"prob_{n}" for n in names), "pred"]

    def to_rows(self, threshold: float = 0.5) -> list[dict[str, Any]]:
        """One dict per sample, keys = :meth:`columns`, for a CSV or a table.

        ``id`` is the sample id, or the sample's position when no ids were given.
        Binary rows hold both class probabilities (``1 - p`` and ``p``) and
        ``pred = int(p >= threshold)``; multiclass ``pred`` is the argmax;
        multilabel ``pred_<name> = int(p >= threshold)``.
        """
        self._require_samples()
        threshold = _check_threshold(threshold)
        probs = self.probabilities().astype(np.float64)
        targets = self.targets()
        ids = self.ids() or [str(i) for i in range(len(targets))]
        names = self.class_names
        rows: list[dict[str, Any]] = []
        if self.task == "binary":
            preds = (probs >= threshold).astype(np.int64)
            for sample_id, p, t, y in zip(ids, probs, targets, preds, strict=True):
                rows.append(
                    {
                        "id": sample_id,
                        "target": int(t),
                        f"prob_{names[0]}": float(1.0 - p),
                        f"prob_{names[1]}": float(p),
                        "pred": int(y),
                    }
                )
        elif self.task == "multiclass":
            preds = np.argmax(probs, axis=1)
            for sample_id, p, t, y in zip(ids, probs, targets, preds, strict=True):
                row: dict[str, Any] = {"id": sample_id, "target": int(t)}
                row.update({f"prob_{n}": float(v) for n, v in zip(names, p, strict=True)})
                row["pred"] = int(y)
                rows.append(row)
        else:
            preds = (probs >= threshold).astype(np.int64)
            for sample_id, p, t, y in zip(ids, probs, targets, preds, strict=True):
                row = {"id": sample_id}
                row.update({f"target_{n}": int(v) for n, v in zip(names, t, strict=True)})
                row.update({f"prob_{n}": float(v) for n, v in zip(names, p, strict=True)})
                row.update({f"pred_{n}": int(v) for n, v in zip(names, y, strict=True)})
                rows.append(row)
        return rows

    def write_csv(self, path: str | Path, threshold: float = 0.5) -> Path:
        """Write :meth:`to_rows` to a CSV file (parent folders are created).

        Returns:
            The path written.
        """
        path = Path(path)
        rows = self.to_rows(threshold)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns())
            writer.writeheader()
            writer.writerows(rows)
        return path
