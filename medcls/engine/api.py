"""Train, evaluate and predict: the Python API behind ``medcls train|evaluate|predict``.

A run folder holds everything a run produced::

    RUN_DIR/
      config.yaml            resolved configuration
      splits.csv             case -> train/val/test (re-used on resume)
      checkpoints/           best.safetensors + best.json, last.*, last.ckpt (trainer state)
      history.csv            one row per epoch (losses, validation metrics, lr, seconds)
      logs/                  Lightning CSV and TensorBoard logs
      metrics.json           validation and test metrics of the best checkpoint
      predictions_{val,test}.csv
      figures/               ROC curves, confusion matrices, training curves (PNG + SVG)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcls.config import ExperimentConfig, config_to_dict, load_config, save_config
from medcls.errors import CheckpointError, ConfigError, DataError

__all__ = [
    "RunResult",
    "evaluate",
    "find_lr",
    "load_checkpoint_model",
    "load_run_model",
    "predict",
    "resolve_run_dir",
    "train",
]


@dataclass
class RunResult:
    """What :func:`train` returns: where the run is and its final metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    best_epoch: int | None = None
    files: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------- set-up


def _is_launcher() -> bool:
    """True in the process a user started (not in a DDP worker Lightning spawned)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def resolve_run_dir(cfg: ExperimentConfig, *, overwrite: bool = False) -> Path:
    """The run folder of ``cfg``: ``run_dir`` or ``output_dir/name``.

    An existing run is continued when ``cfg.resume`` is set, replaced when
    ``overwrite`` is set, and otherwise refused (nothing is lost by accident).
    """
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.output_dir) / cfg.name
    started = (run_dir / "checkpoints").exists() or (run_dir / "metrics.json").exists()
    if started and not cfg.resume and _is_launcher():
        if not overwrite:
            raise ConfigError(
                f"run folder {run_dir} already holds a run; set resume=true to continue it, "
                "--overwrite to replace it, or choose another name/run_dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _cuda_wanted(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _precision(cfg: ExperimentConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if _cuda_wanted(cfg.trainer.accelerator):
        import torch

        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _switch(value: str, cuda: bool) -> bool:
    return value == "on" or (value == "auto" and cuda)


def _monitor_mode(cfg: ExperimentConfig) -> str:
    mode = cfg.trainer.monitor_mode
    if mode == "auto":
        mode = "min" if cfg.trainer.monitor.endswith("loss") else "max"
    return mode


def _model_meta(cfg: ExperimentConfig, dm, model) -> dict[str, Any]:
    return {
        "model": {
            "name": cfg.model.name,
            "kwargs": cfg.model.kwargs,
            "in_chans": dm.in_chans,
            "num_classes": len(dm.classes),
            "spatial_dims": dm.spatial_dims,
            "fusion": cfg.model.fusion,
            "modality_chans": dm.modality_chans,
            "restructure": config_to_dict(cfg.model.restructure),
        },
        "task": dm.task,
        "classes": dm.classes,
        "modalities": dm.modalities,
        "spatial_size": dm.spatial_size,
        "preprocess": config_to_dict(cfg.preprocess),
        "config": config_to_dict(cfg),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }


def _build_model(
    name: str,
    *,
    in_chans: int,
    num_classes: int,
    spatial_dims: int,
    kwargs: dict,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    fusion: str = "none",
    modality_chans: dict[str, int] | None = None,
):
    from medcls.models import create_fusion_model, create_model

    if fusion == "none":
        return create_model(
            name,
            in_chans=in_chans,
            num_classes=num_classes,
            spatial_dims=spatial_dims,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            **dict(kwargs),
        )
    if not modality_chans or len(modality_chans) < 2:
        raise ConfigError(
            f"model.fusion: {fusion!r} fuses several modalities, but the data has "
            f"{list(modality_chans or [])}; set data.modalities to at least two or "
            "model.fusion=none"
        )
    return create_fusion_model(
        name,
        modalities=list(modality_chans),
        fusion=fusion,
        in_chans=dict(modality_chans),
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        pretrained=pretrained,
        checkpoint_path=checkpoint_path,
        **dict(kwargs),
    )


def _build_restructured(restructure: Any, *, for_training: bool, **build: Any):
    """:func:`_build_model`, then the ``model.restructure`` changes (docs/restructure.md).

    ``restructure`` is the config section (a dict when read from a checkpoint). A
    training build gets every change; a build that is to receive a run's checkpoint
    gets the structural ones only (no freezing, no inflation check).
    """
    from medcls.engine.restructure import apply_restructure, build_settings, restructure_config

    rs = restructure_config(restructure)
    in_chans, spatial_dims = build_settings(
        rs,
        name=build["name"],
        in_chans=build["in_chans"],
        spatial_dims=build["spatial_dims"],
        pretrained=build.get("pretrained", False),
        checkpoint_path=build.get("checkpoint_path"),
        fusion=build.get("fusion", "none"),
        kwargs=build.get("kwargs"),
    )
    model = _build_model(**{**build, "in_chans": in_chans, "spatial_dims": spatial_dims})
    return apply_restructure(model, rs, in_chans=build["in_chans"], for_training=for_training)


def _quiet_lightning() -> None:
    """Keep Lightning's console output to what a user needs (warnings stay visible)."""
    import logging
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*smaller than the logging interval.*",
        ".*does not have many workers.*",
        ".*litlogger.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def _build_trainer(cfg: ExperimentConfig, run_dir: Path, callbacks: list, *, for_fit: bool = True):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    _quiet_lightning()
    cuda = _cuda_wanted(cfg.trainer.accelerator)
    progress = cfg.trainer.progress and os.isatty(2)
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks = [*callbacks, RichProgressBar(leave=False)]
    loggers = []
    if for_fit:
        # a resumed run logs into a new CSV folder: Lightning would delete the old file
        version, n = "csv", 1
        while cfg.resume and (run_dir / "logs" / version).exists():
            version, n = f"csv-resume{n}", n + 1
        loggers = [
            CSVLogger(run_dir, name="logs", version=version),
            TensorBoardLogger(run_dir, name="logs", version="tensorboard", default_hp_metric=False),
        ]
    return pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices if for_fit else 1,
        strategy=cfg.trainer.strategy if for_fit else "auto",
        num_nodes=cfg.trainer.num_nodes if for_fit else 1,
        precision=_precision(cfg),
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        benchmark=_switch(cfg.trainer.cudnn_benchmark, cuda),
        # torch's SyncBatchNorm needs CUDA; on CPU each process keeps its own statistics
        sync_batchnorm=cfg.trainer.sync_batchnorm and for_fit and cuda,
        use_distributed_sampler=False,  # our sampler shards by rank itself
        num_sanity_val_steps=0,
        # RunCheckpoint (atomic, safetensors) replaces Lightning's default ModelCheckpoint
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        limit_train_batches=cfg.trainer.limit_train_batches,
        logger=loggers or False,
        callbacks=callbacks,
    )


# ------------------------------------------------------------------ train


def _as_config(config: ExperimentConfig | str | Path | dict, overrides: Iterable[str]):
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config, overrides)
    if overrides and isinstance(config, ExperimentConfig):
        cfg = load_config(config_to_dict(config), overrides)
    return cfg


def _model_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    """``model.kwargs`` plus ``model.drop_path_rate``/``drop_rate`` when set."""
    kwargs = dict(cfg.model.kwargs)
    for key in ("drop_path_rate", "drop_rate"):
        value = getattr(cfg.model, key)
        if value is not None:
            if key in kwargs and kwargs[key] != value:
                raise ConfigError(
                    f"model.{key}={value} and model.kwargs.{key}={kwargs[key]} disagree; "
                    "set one of them"
                )
            kwargs[key] = value
    return kwargs


def _devices_count(trainer_devices: Any) -> int:
    if isinstance(trainer_devices, list):
        return len(trainer_devices)
    if isinstance(trainer_devices, int):
        return trainer_devices
    return 1


def _resolve_batch_size(cfg: ExperimentConfig, dm, model) -> None:
    """Turns ``data.batch_size: auto`` and ``trainer.effective_batch_size`` into a batch
    size and gradient accumulation (written into ``cfg``, which the run saves)."""
    import torch

    from medcls.engine.batch_size import (
        accumulation_plan,
        default_memory_limit,
        largest_batch_size,
        training_step_bytes,
    )
    from medcls.progress import console

    devices = _devices_count(cfg.trainer.devices)
    effective = cfg.trainer.effective_batch_size
    if cfg.data.batch_size == "auto":
        device = torch.device("cuda" if _cuda_wanted(cfg.trainer.accelerator) else "cpu")
        limit = (
            int(cfg.trainer.memory_limit_gb * 2**30)
            if cfg.trainer.memory_limit_gb is not None
            else default_memory_limit(device)
        )
        sample = dm.datasets["train"][0]
        example = {m: sample[m].unsqueeze(0) for m in dm.modalities}
        if not getattr(model, "modalities", None):
            example = torch.cat(list(example.values()), dim=1)
        largest = max(1, len(dm.datasets["train"]) // max(1, devices))
        cap = min(largest, effective or 256)
        home = next(model.parameters()).device
        model.to(device)
        try:

            def fits(batch: int) -> bool:
                used = training_step_bytes(model, example, batch)
                return used is not None and used <= limit

            found = largest_batch_size(fits, cap)
        finally:
            model.to(home)
            model.zero_grad(set_to_none=True)
        batch, accumulate = accumulation_plan(found, effective, devices)
        console().print(
            f"data.batch_size=auto: {found} fits {limit / 2**30:.1f} GiB on {device.type}; "
            f"using batch {batch} x {accumulate} accumulation x {devices} device(s)",
            highlight=False,
        )
    else:
        batch, accumulate = accumulation_plan(cfg.data.batch_size, effective, devices)
        if effective is None:
            accumulate = cfg.trainer.accumulate_grad_batches
    cfg.data.batch_size = batch
    cfg.trainer.accumulate_grad_batches = accumulate


def _setup_training(cfg: ExperimentConfig, run_dir: Path | None):
    """Data, model and training module of ``cfg`` (seeded), as :func:`train` uses them.

    ``data.batch_size: auto`` and ``trainer.effective_batch_size`` are resolved here
    (into ``cfg``).

    Returns:
        ``(datamodule, model, module)``.
    """
    import lightning.pytorch as pl

    from medcls.data.datamodule import ClassificationDataModule
    from medcls.engine.losses import build_loss, resolve_class_weights
    from medcls.engine.mixing import BatchMixer
    from medcls.engine.module import ClassificationModule, seed_all
    from medcls.models import to_channels_last

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = ClassificationDataModule(cfg, run_dir, progress=cfg.trainer.progress)
    dm.setup_data()
    seed_all(cfg.seed)
    model = _build_restructured(
        cfg.model.restructure,
        for_training=True,
        name=cfg.model.name,
        in_chans=dm.in_chans,
        num_classes=len(dm.classes),
        spatial_dims=dm.spatial_dims,
        kwargs=_model_kwargs(cfg),
        pretrained=cfg.model.pretrained,
        checkpoint_path=cfg.model.checkpoint_path,
        fusion=cfg.model.fusion,
        modality_chans=dm.modality_chans,
    )
    _resolve_batch_size(cfg, dm, model)
    counts = dm.class_counts("train")
    weights = resolve_class_weights(cfg.loss, [counts[c] for c in dm.classes])
    cuda = _cuda_wanted(cfg.trainer.accelerator)
    channels_last = _switch(cfg.trainer.channels_last, cuda)
    if channels_last:
        model = to_channels_last(model, dm.spatial_dims)
    aug = cfg.augment
    module = ClassificationModule(
        model,
        task=dm.task,
        classes=dm.classes,
        modalities=dm.modalities,
        criterion=build_loss(cfg.loss, dm.task, weights),
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        seed=cfg.seed,
        channels_last=channels_last,
        mixer=BatchMixer(aug.mixup_alpha, aug.cutmix_alpha, aug.mix_prob, aug.mix_switch_prob),
        ema_decay=cfg.trainer.ema_decay,
        ema_warmup=cfg.trainer.ema_warmup,
        compile_mode=cfg.trainer.compile,
    )
    return dm, model, module


def train(
    config: ExperimentConfig | str | Path | dict,
    overrides: Iterable[str] = (),
    *,
    callbacks: Sequence[Any] = (),
    overwrite: bool = False,
) -> RunResult:
    """Train a model as the configuration says, then evaluate its best checkpoint.

    Args:
        config: an :class:`ExperimentConfig`, a YAML path or a mapping.
        overrides: ``dotted.key=value`` overrides.
        callbacks: extra Lightning callbacks.
        overwrite: replace an existing run in the run folder.

    Returns:
        The run folder, metrics (``val`` and ``test``) and the written files.
    """
    from lightning.pytorch.callbacks import EarlyStopping

    from medcls.engine.callbacks import EpochSummary, RunCheckpoint
    from medcls.engine.checkpoint import safe_torch_load, save_weights
    from medcls.progress import console

    cfg = _as_config(config, overrides)
    run_dir = resolve_run_dir(cfg, overwrite=overwrite)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume_from = last if cfg.resume and last.is_file() else None
    if resume_from is not None:
        safe_torch_load(resume_from)  # refuse anything but tensors before Lightning sees it

    dm, model, module = _setup_training(cfg, run_dir)
    meta = _model_meta(cfg, dm, model)
    if _is_launcher():
        save_config(cfg, run_dir / "config.yaml")

    monitor, mode = f"{cfg.trainer.monitor}", _monitor_mode(cfg)
    checkpoint = RunCheckpoint(
        run_dir / "checkpoints",
        monitor,
        mode,
        # the EMA weights when trainer.ema_decay is set
        export=lambda stem, info: save_weights(module.eval_model, stem, {**meta, **info}),
        history_path=run_dir / "history.csv",
    )
    extra = [checkpoint, EpochSummary(cfg.trainer.max_epochs), *callbacks]
    if cfg.trainer.early_stopping.patience is not None:
        extra.append(
            EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=cfg.trainer.early_stopping.patience,
                min_delta=cfg.trainer.early_stopping.min_delta,
            )
        )
    trainer = _build_trainer(cfg, run_dir, extra)
    if trainer.is_global_zero:
        console().print(
            f"[bold]medcls[/bold] training {cfg.model.name}"
            + (f", {cfg.model.fusion} fusion" if cfg.model.fusion != "none" else "")
            + f" ({meta['num_parameters']:,} parameters) "
            f"on {len(dm.datasets['train'])} cases, {dm.task} {dm.classes}, "
            f"{dm.spatial_dims}D input {dm.in_chans}x{'x'.join(map(str, dm.spatial_size))}"
            + (f"; resuming from {resume_from}" if resume_from else ""),
            highlight=False,
            soft_wrap=True,
        )
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - started
    best = run_dir / "checkpoints" / "best"
    if not best.with_suffix(".json").is_file():
        raise DataError(
            f"no epoch produced a finite {monitor}; nothing to evaluate "
            f"(see {run_dir / 'history.csv'})"
        )
    from medcls.engine.checkpoint import load_weights

    load_weights(module.model, best)
    module.drop_ema()  # the best (averaged, if EMA is on) weights are now in module.model
    metrics, files = _evaluate_module(module, trainer, dm, run_dir, ("val", "test"))
    metrics.update(best_epoch=checkpoint.best_epoch, monitor={"name": monitor, "mode": mode})
    if trainer.is_global_zero:
        _write_json(run_dir / "metrics.json", metrics)
        _write_json(
            run_dir / "timing.json", {"fit_seconds": fit_seconds, "epochs_run": len(module.history)}
        )
        if module.history:
            from medcls.reports.figures import plot_training_curves

            files["training_curves"] = plot_training_curves(
                module.history, run_dir / "figures" / "training_curves"
            ).png
    return RunResult(run_dir, metrics, checkpoint.best_epoch, files)


def find_lr(
    config: ExperimentConfig | str | Path | dict,
    overrides: Iterable[str] = (),
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    output: str | Path | None = None,
):
    """Learning-rate range test on the configured data and model (see
    :mod:`medcls.engine.lr_finder`); nothing is trained for good.

    Writes ``lr_find.json`` and the figure ``lr_find.{png,svg}`` into ``output``
    (default: the run folder's ``lr_find/``).

    Returns:
        The :class:`~medcls.engine.lr_finder.LRFinderResult` (its ``files`` filled).
    """
    import torch

    from medcls.engine.lr_finder import lr_range_test
    from medcls.engine.module import model_input
    from medcls.engine.optim import build_optimizer
    from medcls.progress import console
    from medcls.reports.figures import plot_lr_finder

    cfg = _as_config(config, overrides)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.output_dir) / cfg.name
    out = Path(output) if output else run_dir / "lr_find"
    dm, model, module = _setup_training(cfg, None)
    device = torch.device("cuda" if _cuda_wanted(cfg.trainer.accelerator) else "cpu")
    model.to(device)
    criterion = module.criterion.to(device)
    loader = dm.train_dataloader()
    augment = dm.device_augment

    def step_loss(net, batch):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if augment is not None:
            batch = augment(batch, dm.datasets["train"].epoch)
        logits = net(model_input(net, batch, dm.modalities))
        return criterion(logits.float(), batch["target"])

    every = max(1, steps // 10)

    def progress(step: int, lr: float, loss: float) -> None:
        if step % every == 0 or step == steps - 1:
            console().print(f"  step {step + 1:>4}/{steps}  lr {lr:.2e}  loss {loss:.4f}")

    console().print(
        f"[bold]medcls[/bold] learning-rate range test: {cfg.model.name}, "
        f"lr {min_lr:g} .. {max_lr:g} over {steps} steps",
        highlight=False,
    )
    result = lr_range_test(
        model,
        loader,
        step_loss,
        lambda net: build_optimizer(net, cfg.optimizer),
        min_lr=min_lr,
        max_lr=max_lr,
        steps=steps,
        set_epoch=dm.set_epoch,
        progress=progress,
    )
    figure = plot_lr_finder(
        result.lrs, result.losses, result.smoothed, result.suggestion, out / "lr_find"
    )
    result.files = {"png": figure.png, "svg": figure.svg, "json": out / "lr_find.json"}
    _write_json(out / "lr_find.json", {"model": cfg.model.name, **result.to_dict()})
    return result


def _write_json(path: Path, data: dict) -> None:
    from medcls.engine.checkpoint import atomic_write
    from medcls.evaluation.functional import to_jsonable

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n"))


def _evaluate_module(
    module, trainer, dm, run_dir: Path, splits: Sequence[str], *, suffix: str = ""
) -> tuple[dict, dict]:
    """Run ``module`` on each split; write predictions and figures (rank 0)."""
    from medcls.reports.figures import plot_confusion_matrix, plot_roc

    metrics: dict[str, Any] = {"task": dm.task, "classes": dm.classes}
    files: dict[str, Path] = {}
    for split in splits:
        if split not in dm.datasets:
            continue
        trainer.test(module, dataloaders=dm.loader(split), verbose=False)
        results = dict(module.last_results)
        metrics[split] = results
        if not trainer.is_global_zero:
            continue
        name = f"{split}{suffix}"
        files[f"predictions_{name}"] = module.collector.write_csv(
            run_dir / f"predictions_{name}.csv"
        )
        curves = module.collector.roc_curves()
        aucs = {k: v.get("auc") for k, v in results.get("per_class", {}).items()}
        if dm.task == "binary":
            aucs = {next(iter(curves)): results["auc"]}
        files[f"roc_{name}"] = plot_roc(
            curves, aucs, run_dir / "figures" / f"roc_{name}", title=f"ROC curve ({split})"
        ).png
        files[f"confusion_{name}"] = plot_confusion_matrix(
            results["confusion_matrix"],
            dm.classes,
            run_dir / "figures" / f"confusion_{name}",
            title=f"Confusion matrix ({split})",
        ).png
    return metrics, files


# --------------------------------------------------------------- evaluate


def load_run_model(run_dir: str | Path, checkpoint: str = "best"):
    """Rebuild a run's model from ``checkpoints/<checkpoint>.{json,safetensors}``.

    Returns:
        ``(model, meta)``: the model in eval mode and the checkpoint description.
    """
    from medcls.engine.checkpoint import read_meta

    stem = Path(run_dir) / "checkpoints" / checkpoint
    meta = read_meta(stem)
    return load_checkpoint_model(stem, meta), meta


def load_checkpoint_model(stem: str | Path, meta: dict[str, Any]):
    """The model a medcls checkpoint describes (fusion and ``model.restructure``
    included), with its weights loaded, in eval mode.

    Args:
        stem: the checkpoint path without suffix (``.../checkpoints/best``).
        meta: its description (:func:`medcls.engine.checkpoint.read_meta`).
    """
    from medcls.engine.checkpoint import load_weights
    from medcls.engine.restructure import prepare_for_inference, restructure_config

    spec = meta["model"]
    model = _build_restructured(
        spec.get("restructure"),
        for_training=False,
        name=spec["name"],
        in_chans=spec["in_chans"],
        num_classes=spec["num_classes"],
        spatial_dims=spec["spatial_dims"],
        kwargs=spec.get("kwargs") or {},
        fusion=spec.get("fusion", "none"),
        modality_chans=spec.get("modality_chans"),
    )
    load_weights(model, stem)
    prepare_for_inference(model, restructure_config(spec.get("restructure")))
    return model.eval()


def _run_config(run_dir: Path, meta: dict, overrides: Iterable[str] = ()) -> ExperimentConfig:
    cfg = load_config(meta["config"], overrides)
    cfg.run_dir = str(run_dir)
    return cfg


def evaluate(
    run_dir: str | Path,
    *,
    splits: Sequence[str] = ("val", "test"),
    checkpoint: str = "best",
    overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on its saved split (or other data via overrides).

    Writes ``metrics_<checkpoint>.json``, predictions and figures in the run folder.

    Args:
        run_dir: the run folder.
        splits: which splits to evaluate.
        checkpoint: ``best`` or ``last``.
        overrides: configuration overrides, e.g. ``data.path=other.csv`` to evaluate
            on another manifest (its cases then need a ``split`` column or all go
            through the run's split rules).
    """
    from medcls.data.datamodule import ClassificationDataModule
    from medcls.engine.losses import build_loss
    from medcls.engine.module import ClassificationModule

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run folder not found")
    model, meta = load_run_model(run_dir, checkpoint)
    cfg = _run_config(run_dir, meta, overrides)
    same_data = not list(overrides)
    dm = ClassificationDataModule(
        cfg, run_dir if same_data else None, progress=cfg.trainer.progress
    )
    dm.setup_data()
    if dm.classes != meta["classes"]:
        raise DataError(
            f"the data's classes {dm.classes} differ from the model's {meta['classes']}"
        )
    module = ClassificationModule(
        model,
        task=meta["task"],
        classes=meta["classes"],
        modalities=meta["modalities"],
        criterion=build_loss(cfg.loss, meta["task"]),
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        seed=cfg.seed,
    )
    trainer = _build_trainer(cfg, run_dir, [], for_fit=False)
    metrics, _ = _evaluate_module(module, trainer, dm, run_dir, splits, suffix=f"_{checkpoint}")
    metrics["checkpoint"] = {"name": checkpoint, "epoch": meta.get("epoch")}
    _write_json(run_dir / f"metrics_{checkpoint}.json", metrics)
    return metrics


# ---------------------------------------------------------------- predict


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    output: str | Path | None = None,
    checkpoint: str = "best",
    batch_size: int | None = None,
) -> Path:
    """Predict class probabilities for files, folders or a manifest CSV.

    The inputs go through exactly the preprocessing the model was trained with
    (read from the checkpoint). A single ``.csv`` input is read as a manifest with
    the model's modality columns (needed for multimodal models).

    Returns:
        The CSV written: ``id``, one ``prob_<class>`` column per class, ``predicted``.
    """
    import csv

    import torch
    from torch.utils.data import DataLoader

    from medcls.data.cases import CaseTable, cases_from_files, cases_from_manifest
    from medcls.data.dataset import CaseDataset
    from medcls.data.transforms import build_preprocess
    from medcls.engine.module import model_input

    run_dir = Path(run_dir)
    model, meta = load_run_model(run_dir, checkpoint)
    cfg = _run_config(run_dir, meta)
    modalities, classes, task = meta["modalities"], meta["classes"], meta["task"]
    if len(inputs) == 1 and str(inputs[0]).lower().endswith(".csv"):
        table = cases_from_manifest(
            inputs[0], modalities=modalities, require_labels=False, mask_column=None
        )
        cases = table.cases
    else:
        if len(modalities) > 1:
            raise DataError(
                f"this model takes {len(modalities)} modalities {modalities}; give a "
                "manifest CSV with one column per modality"
            )
        cases = cases_from_files(inputs, modality=modalities[0])
    table = CaseTable(cases, classes, task, modalities, source="predict")
    spatial_dims = meta["model"]["spatial_dims"]
    preprocess = build_preprocess(cfg.preprocess, modalities, spatial_dims)
    dataset = CaseDataset(
        table, cases, preprocess, spatial_dims=spatial_dims, cache="none", with_target=False
    )
    loader = DataLoader(dataset, batch_size=batch_size or cfg.data.batch_size, shuffle=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    ids: list[str] = []
    probs = []
    with torch.inference_mode():
        for batch in loader:
            batch = {m: batch[m].to(device) for m in modalities} | {"id": batch["id"]}
            logits = model(model_input(model, batch, modalities)).float().cpu()
            probs.append(logits.softmax(1) if task != "multilabel" else logits.sigmoid())
            ids += list(batch["id"])
    p = torch.cat(probs).numpy() if probs else None
    out = Path(output) if output else run_dir / "predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", *[f"prob_{c}" for c in classes], "predicted"])
        for i, case_id in enumerate(ids):
            row = p[i]
            if task == "multilabel":
                predicted = "|".join(c for c, v in zip(classes, row) if v >= 0.5)
            else:
                predicted = classes[int(row.argmax())]
            writer.writerow([case_id, *[f"{v:.6f}" for v in row], predicted])
    return out
