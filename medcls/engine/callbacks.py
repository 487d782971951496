"""Small stateful callbacks of the training recipe (Lightning ``on_<stage>_<event>`` hooks)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

from medcls.engine.checkpoint import atomic_write

__all__ = ["EpochSummary", "RunCheckpoint", "write_history"]


def write_history(history: list[dict], path: str | Path) -> Path:
    """Write per-epoch rows (epoch, train_loss, val_*, lr, epoch_seconds) as CSV, atomically."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)

    return atomic_write(path, write)


class RunCheckpoint(Checkpoint):
    """Keeps ``best.*`` (weights of the best epoch) and ``last.ckpt`` (trainer state).

    After each epoch's validation: if ``monitor`` improved, the model's weights are
    exported by ``export(stem, meta)`` as ``best.safetensors``/``best.json``; then
    the full trainer state is saved as ``last.ckpt`` and the weights as
    ``last.safetensors``/``last.json``. Every file is replaced atomically, so a
    kill at any moment leaves a loadable previous version.

    Args:
        dirpath: the ``checkpoints`` folder of the run.
        monitor: metric name in ``trainer.callback_metrics`` (e.g. ``val_auc``).
        mode: ``max`` or ``min``.
        export: ``export(path_stem, meta)`` writes weights and description.
        history_path: where the per-epoch history CSV is rewritten.
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str,
        mode: str,
        export: Callable[[Path, dict], object],
        history_path: str | Path,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.export = export
        self.history_path = Path(history_path)
        self.best_score: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_score is None:
            return True
        return value > self.best_score if self.mode == "max" else value < self.best_score

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch + 1
        info = {
            "epoch": epoch,
            "monitor": {"name": self.monitor, "mode": self.mode, "value": value},
        }
        if self._improved(value):
            self.best_score, self.best_epoch = value, epoch
            if trainer.is_global_zero:
                self.export(self.dirpath / "best", info)
        # the trainer state: every process takes part, rank 0 writes
        tmp = self.dirpath / f".last.ckpt.{epoch}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            tmp.replace(self.last_path)
            self.export(self.dirpath / "last", info)
            write_history(getattr(pl_module, "history", []), self.history_path)
        trainer.strategy.barrier("medcls-checkpoint")

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")


class EpochSummary(pl.Callback):
    """Prints one line per epoch (rank 0): losses, monitored metrics, time."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        if not trainer.is_global_zero or not history or trainer.sanity_checking:
            return
        from medcls.progress import console

        row = history[-1]
        console().print(
            f"epoch {row['epoch']:>3}/{self.max_epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
            f"val_auc {row['val_auc']:.4f}  ({row['epoch_seconds']:.1f}s)",
            highlight=False,
            soft_wrap=True,
        )
