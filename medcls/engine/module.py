"""The training recipe as a LightningModule around a plain ``nn.Module``.

The recipe (loss, optimiser, schedule, metrics, seeding) lives here; the network
is whatever :func:`medcls.create_model` returned, so any registered model trains
the same way. Multimodal batches are passed as a dict to models that declare
``modalities`` (fusion wrappers), and concatenated along channels otherwise.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from medcls.config.schema import OptimizerConfig, SchedulerConfig
from medcls.data.dataset import sample_seed
from medcls.engine.ema import ModelEma
from medcls.engine.mixing import BatchMixer
from medcls.engine.optim import build_optimizer, build_scheduler
from medcls.evaluation.collector import PredictionCollector

__all__ = ["ClassificationModule", "model_input", "seed_all"]

GLOBAL_STREAM = 2**31 - 1  # sample index reserved for the global RNGs of an epoch
SCALAR_METRICS = (
    "accuracy",
    "auc",
    "recall",
    "specificity",
    "precision",
    "f1",
    "balanced_accuracy",
)


def model_input(
    model: nn.Module, batch: dict, modalities: Sequence[str], channels_last: bool = False
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The network's input from a batch: a dict of modalities for fusion models
    (those with a ``modalities`` attribute), else the modalities concatenated
    along channels, ``(B, sum C, *spatial)``."""
    if getattr(model, "modalities", None):
        return {name: batch[name] for name in modalities}
    parts = [batch[name] for name in modalities]
    x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    if channels_last:
        x = x.contiguous(
            memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        )
    return x


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ClassificationModule(pl.LightningModule):
    """Trains and evaluates a classifier.

    Args:
        model: the network; ``forward(x)`` with x ``(B, C, *spatial)`` (or a dict of
            modality tensors when the model has a ``modalities`` attribute) returns
            logits ``(B, num_classes)``.
        task: ``binary``, ``multiclass`` or ``multilabel``.
        classes: class names in output order.
        modalities: batch keys holding the input images, in channel order.
        criterion: the loss module.
        optimizer: the ``optimizer`` section.
        scheduler: the ``scheduler`` section.
        seed: base seed; each epoch reseeds the RNGs from ``(seed, epoch)``.
        channels_last: feed inputs in channels-last memory format (CUDA speed-up).
        mixer: mixup/CutMix of training batches (``None`` or disabled: off).
        ema_decay: keep an exponential moving average of the weights
            (:class:`~medcls.engine.ema.ModelEma`); validation, testing, prediction
            and :attr:`eval_model` then use the averaged weights.
        ema_warmup: ramp the EMA decay up over the first steps.
        compile_mode: ``trainer.compile``: ``off``, ``on`` (``torch.compile``'s default
            mode), ``reduce-overhead`` or ``max-autotune``. Training and the evaluation
            of :attr:`model` run compiled; an EMA copy is evaluated eagerly.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str,
        classes: Sequence[str],
        modalities: Sequence[str],
        criterion: nn.Module,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        seed: int = 0,
        channels_last: bool = False,
        mixer: BatchMixer | None = None,
        ema_decay: float | None = None,
        ema_warmup: bool = True,
        compile_mode: str = "off",
    ) -> None:
        super().__init__()
        self.model = model
        # the compiled wrapper shares the model's parameters; kept out of the module
        # tree so that state dicts and checkpoints hold each weight once
        compiled = None
        if compile_mode != "off":
            mode = None if compile_mode == "on" else compile_mode
            compiled = torch.compile(model, mode=mode)
        object.__setattr__(self, "_compiled", compiled)
        self.mixer = mixer if mixer is not None and mixer.enabled else None
        self.ema = ModelEma(model, ema_decay, ema_warmup) if ema_decay is not None else None
        self.criterion = criterion
        self.task = task
        self.classes = list(classes)
        self.modalities = list(modalities)
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.seed = seed
        self.channels_last = channels_last
        self.collector = PredictionCollector(task, len(self.classes), self.classes)
        self.history: list[dict] = []
        self.last_results: dict | None = None
        self._sums = {"train": torch.zeros(2), "eval": torch.zeros(2)}
        self._epoch_start = 0.0

    # ------------------------------------------------------------------ model
    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, tested and saved: the EMA copy when one is
        kept, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def drop_ema(self) -> None:
        """Stops keeping (and evaluating with) the EMA copy, e.g. once its best
        weights have been loaded into :attr:`model` for the final evaluation."""
        self.ema = None

    def forward(self, batch: dict) -> torch.Tensor:
        net = self._compiled if self._compiled is not None else self.model
        return net(model_input(self.model, batch, self.modalities, self.channels_last))

    def _eval_forward(self, batch: dict) -> torch.Tensor:
        model = self.eval_model
        net = self._compiled if self._compiled is not None and model is self.model else model
        return net(model_input(model, batch, self.modalities, self.channels_last))

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits.float(), target)

    def _accumulate(self, key: str, loss: torch.Tensor, n: int) -> None:
        sums = self._sums[key]
        if sums.device != loss.device:
            sums = self._sums[key] = sums.to(loss.device)
        sums[0] += loss.detach().float() * n
        sums[1] += n

    def _mean(self, key: str) -> float:
        sums = self._sums[key]
        if self.trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.clone(), reduce_op="sum")
        return float(sums[0] / sums[1].clamp(min=1))

    # --------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        # every epoch's randomness depends on (seed, epoch) only: resuming a
        # killed run replays the interrupted epoch exactly
        seed_all(sample_seed(self.seed, self.current_epoch, GLOBAL_STREAM))
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)
        self._sums["train"].zero_()
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.mixer is not None:
            inputs, mixed = self.mixer({m: batch[m] for m in self.modalities}, batch["target"])
            logits = self({**batch, **inputs})
            loss = mixed.loss(self._loss, logits)
        else:
            logits = self(batch)
            loss = self._loss(logits, batch["target"])
        self._accumulate("train", loss, batch["target"].shape[0])
        self.log("loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            self.ema.update(self.model)

    # ------------------------------------------------------------- evaluation
    def _eval_start(self) -> None:
        self.collector.reset()
        self._sums["eval"].zero_()

    def _eval_step(self, batch: dict) -> None:
        logits = self._eval_forward(batch).float()
        self._accumulate("eval", self._loss(logits, batch["target"]), batch["target"].shape[0])
        self.collector.update(logits, batch["target"], list(batch["id"]))

    def _eval_end(self) -> dict:
        self.collector.sync()
        results = self.collector.compute()
        results["loss"] = self._mean("eval")
        self.last_results = results
        return results

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        results = self._eval_end()
        logged = {f"val_{name}": float(results[name]) for name in (*SCALAR_METRICS, "loss")}
        # values are identical on every process (predictions were gathered)
        self.log_dict(logged, prog_bar=False, sync_dist=False)
        row = {
            "epoch": self.current_epoch + 1,
            "train_loss": self._mean("train"),
            **logged,
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - self._epoch_start,
        }
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._eval_forward(batch).float()

    # ------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.optimizer_cfg)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        scheduler = build_scheduler(
            optimizer, self.scheduler_cfg, total_steps=total, steps_per_epoch=per_epoch
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["medcls_history"] = [dict(r) for r in self.history]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = [dict(r) for r in checkpoint.get("medcls_history", [])]
