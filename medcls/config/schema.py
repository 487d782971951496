"""Typed schema of an experiment: one YAML file maps onto :class:`ExperimentConfig`.

Each section is a dataclass; field defaults are the documented defaults. The
validation (unknown keys, types, required values) lives in :mod:`medcls.config.loader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DemoDataConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "IntensityConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PreprocessConfig",
    "SchedulerConfig",
    "TrainerConfig",
]

Task = Literal["auto", "binary", "multiclass", "multilabel"]


@dataclass
class DemoDataConfig:
    """Parameters of a built-in synthetic dataset (``data.source: demo-*``).

    ``None`` keeps the generator's own default.
    """

    num_cases: int | None = None
    size: int | None = None
    seed: int = 0


@dataclass
class DataConfig:
    """Where the cases come from and how they are split and batched.

    Attributes:
        source: ``demo-xray2d``, ``demo-petct3d`` (built-in synthetic sets), ``csv``
            (a manifest: one column per modality holding a path) or ``folder``
            (one sub-folder per class, optionally below ``train/ val/ test/``).
        path: the manifest CSV or the root folder (not used by demo sources).
        modalities: manifest columns holding image paths, in the order the model
            sees them; ``None`` = the source's default (``[image]`` for folders).
        label_column: manifest column with the label (several labels of a
            multi-label case separated by ``|``).
        patient_column: manifest column grouping cases of one patient (optional
            in the file; when absent every case is its own patient).
        mask_column: manifest column with a lesion mask (kept for explanations).
        split_column: manifest column with an official ``train``/``val``/``test``
            split; used when present in the file.
        classes: class names in model-output order; ``None`` = sorted labels.
        task: ``auto`` (from the labels), ``binary``, ``multiclass``, ``multilabel``.
        val_fraction: share of patients for validation when no split is given.
        test_fraction: share of patients for testing when no split is given.
        batch_size: samples per batch on each device.
        num_workers: data-loading worker processes.
        cache: ``memory`` keeps the deterministic part of preprocessing in RAM;
            ``none`` recomputes it every epoch.
        sampler: ``random`` (shuffled) or ``balanced`` (class-balanced sampling).
        leakage: what a patient found in two splits does: ``error`` or ``warn``.
        demo: parameters of the built-in synthetic sets.
    """

    source: str = "demo-xray2d"
    path: str | None = None
    modalities: list[str] | None = None
    label_column: str = "label"
    patient_column: str = "patient_id"
    mask_column: str | None = "mask"
    split_column: str = "split"
    classes: list[str] | None = None
    task: Task = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    batch_size: int = 32
    num_workers: int = 0
    cache: Literal["memory", "none"] = "memory"
    sampler: Literal["random", "balanced"] = "random"
    leakage: Literal["error", "warn"] = "error"
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)


@dataclass
class IntensityConfig:
    """Intensity scaling of one modality to roughly ``[0, 1]``.

    Attributes:
        mode: ``range`` maps ``[a_min, a_max]`` to ``[0, 1]`` (CT windowing, 8-bit
            images); ``percentile`` maps the ``lower``-``upper`` percentiles of each
            image to ``[0, 1]``; ``zscore`` subtracts the mean and divides by the std
            of each image; ``none`` leaves values unchanged.
        a_min: lower bound for ``range`` (e.g. -1000 HU for a lung window).
        a_max: upper bound for ``range`` (e.g. 400 HU).
        lower: lower percentile for ``percentile``.
        upper: upper percentile for ``percentile``.
        clip: clip to ``[0, 1]`` after ``range``/``percentile`` scaling.
    """

    mode: Literal["range", "percentile", "zscore", "none"] = "percentile"
    a_min: float | None = None
    a_max: float | None = None
    lower: float = 0.5
    upper: float = 99.5
    clip: bool = True


@dataclass
class PreprocessConfig:
    """Deterministic preprocessing (computed once and cached).

    Attributes:
        spatial_size: target size of every image, ``[H, W]`` or ``[D, H, W]``;
            ``None`` keeps the files' size (which must then agree across cases).
        intensity: per-modality intensity scaling; a modality not listed gets
            the default :class:`IntensityConfig` (percentile scaling).
    """

    spatial_size: list[int] | None = None
    intensity: dict[str, IntensityConfig] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Random augmentation of training samples, seeded per (seed, epoch, sample).

    Attributes:
        flip_prob: probability of a flip, drawn independently per axis in ``flip_axes``.
        flip_axes: spatial axes that may be flipped (0 = first spatial axis);
            ``None`` = all of them.
        affine_prob: probability of a random affine transform.
        rotate_deg: largest rotation in degrees (about every axis in 3D).
        scale: largest relative zoom (0.1 = 0.9x to 1.1x).
        translate: largest shift as a fraction of the image size.
        noise_std: standard deviation of additive Gaussian noise (after scaling).
        intensity_scale: largest relative intensity scaling (0.1 = 0.9x to 1.1x).
        intensity_shift: largest additive intensity shift.
    """

    flip_prob: float = 0.0
    flip_axes: list[int] | None = None
    affine_prob: float = 0.0
    rotate_deg: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    noise_std: float = 0.0
    intensity_scale: float = 0.0
    intensity_shift: float = 0.0


@dataclass
class ModelConfig:
    """Which network to train: a registry name and its arguments.

    Attributes:
        name: a name from ``medcls models`` (``timm:resnet18``,
            ``timm3d:resnet18``, ``monai:densenet121``, a medcls model, ...).
        pretrained: load the library's pretrained weights (needs them cached locally).
        checkpoint_path: a local weights file (safetensors or a torch state dict).
        kwargs: further keyword arguments of the model's constructor.
    """

    name: str = "timm:resnet10t"
    pretrained: bool = False
    checkpoint_path: str | None = None
    kwargs: dict[str, object] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Training loss.

    Attributes:
        name: ``auto`` (cross-entropy for single-label tasks, BCE for
            multi-label), ``cross_entropy`` or ``bce``.
        label_smoothing: label smoothing for cross-entropy.
        class_weights: ``None``, ``balanced`` (inverse class frequency on the
            training split) or one weight per class.
    """

    name: Literal["auto", "cross_entropy", "bce"] = "auto"
    label_smoothing: float = 0.0
    class_weights: str | list[float] | None = None


@dataclass
class OptimizerConfig:
    """Optimiser: ``adamw`` or ``sgd`` (with ``momentum`` and ``nesterov``)."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped every optimiser step.

    Attributes:
        name: ``cosine`` (linear warm-up, then cosine decay) or ``constant``.
        warmup_epochs: length of the linear warm-up (fractions allowed).
        min_lr_ratio: final learning rate as a fraction of ``optimizer.lr``.
    """

    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01


@dataclass
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved for ``patience`` epochs (``None`` = never)."""

    patience: int | None = None
    min_delta: float = 0.0


@dataclass
class TrainerConfig:
    """How training runs: devices, precision, length, checkpoints and logging.

    Attributes:
        max_epochs: number of epochs.
        accelerator: ``auto``, ``cpu``, ``gpu``/``cuda`` or ``mps``.
        devices: ``auto``, a count, or a list of device indices.
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ... (Lightning strategies).
        num_nodes: machines for multi-node DDP.
        precision: ``auto`` (bf16 mixed precision on a GPU that has it, else
            16-mixed on GPU, 32 on CPU) or any Lightning precision string.
        gradient_clip_val: clip the gradient norm to this value.
        accumulate_grad_batches: optimiser step every N batches.
        monitor: validation metric that picks the best checkpoint and drives
            early stopping (``val_auc``, ``val_loss``, ``val_accuracy``, ...).
        monitor_mode: ``max`` or ``min``; ``auto`` = ``min`` for losses, else ``max``.
        early_stopping: early-stopping settings.
        cudnn_benchmark: let cuDNN pick the fastest kernels for fixed input sizes
            (``auto`` = on when training on CUDA).
        channels_last: channels-last memory format on CUDA (``auto`` = on for CUDA).
        sync_batchnorm: synchronise batch-norm statistics across DDP processes
            (CUDA only: PyTorch's SyncBatchNorm does not run on CPU).
        progress: show a progress bar.
        log_every_n_steps: how often training loss is logged.
        limit_train_batches: use only this many (int) or this share (float) of
            the training batches per epoch (quick checks).
    """

    max_epochs: int = 10
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    monitor: str = "val_auc"
    monitor_mode: Literal["auto", "max", "min"] = "auto"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    cudnn_benchmark: Literal["auto", "on", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    sync_batchnorm: bool = True
    progress: bool = True
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None


@dataclass
class ExperimentConfig:
    """One experiment: data, preprocessing, model, recipe and where results go.

    Attributes:
        name: the experiment's name (the run folder is ``output_dir/name``).
        seed: seeds the split, initialisation, sampling and augmentation.
        output_dir: parent folder of run folders.
        run_dir: explicit run folder (overrides ``output_dir/name``).
        resume: continue from the run folder's last checkpoint if there is one.
    """

    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs"
    run_dir: str | None = None
    resume: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
