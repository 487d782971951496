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
    "RestructureConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "TuneConfig",
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
            (a manifest: one column per modality holding a path), ``folder``
            (one sub-folder per class, optionally below ``train/ val/ test/``),
            ``medmnist`` (a MedMNIST ``.npz`` with ``train_images``/``train_labels``,
            ``val_*``, ``test_*``) or ``chestxray14`` (the ChestX-ray14 label CSV
            ``Data_Entry_2017.csv``).
        path: the manifest CSV, root folder or ``.npz`` file (not used by demo sources).
        image_dir: ``chestxray14`` only: the folder searched (recursively) for the
            images the CSV names; ``None`` = the CSV's folder.
        modalities: manifest columns holding image paths, in the order the model
            sees them; ``None`` = the source's default (``[image]`` for folders).
        label_column: manifest column with the label (several labels of a
            multi-label case separated by ``|``).
        patient_column: manifest column grouping cases of one patient (optional
            in the file; when absent every case is its own patient).
        mask_column: manifest column with a lesion mask (kept for explanations).
        split_column: manifest column with an official ``train``/``val``/``test``
            split; used when present in the file.
        fold_column: manifest column with a cross-validation fold number (optional
            in the file; used when ``fold`` is set).
        classes: class names in model-output order; ``None`` = sorted labels.
        task: ``auto`` (from the labels), ``binary``, ``multiclass``, ``multilabel``.
        val_fraction: share of patients for validation when no split is given.
        test_fraction: share of patients for testing when no split is given.
        fold: cross-validation: the fold (``0 .. num_folds-1``) used for validation;
            the test split stays the same for every fold. ``None`` = no folds.
        num_folds: number of folds (stratified, grouped by patient) when ``fold`` is set.
        batch_size: samples per batch on each device, or ``auto``: the largest
            batch that fits the device's memory (``trainer.memory_limit_gb``), at
            most ``trainer.effective_batch_size`` (default 256).
        num_workers: data-loading worker processes.
        cache: ``memory`` keeps the deterministic part of preprocessing in RAM;
            ``disk`` stores it in ``cache_dir`` (shared by processes and runs);
            ``none`` recomputes it every epoch.
        cache_dir: folder of the disk cache; ``None`` = ``$MEDCLS_CACHE/preprocessed``
            (``~/.cache/medcls/preprocessed``).
        cache_key: what identifies an input file in the disk-cache key: ``stat``
            (path, size and modification time) or ``content`` (a hash of its bytes).
        sampler: ``random`` (shuffled) or ``balanced`` (class-balanced sampling).
        leakage: what a patient, or identical image content, found in two splits
            does: ``error`` or ``warn``.
        on_bad_case: what an unusable case (unreadable file, NaN, unknown label, ...)
            does: ``error`` stops before training, ``skip`` leaves it out; both list
            every such case.
        demo: parameters of the built-in synthetic sets.
    """

    source: str = "demo-xray2d"
    path: str | None = None
    image_dir: str | None = None
    modalities: list[str] | None = None
    label_column: str = "label"
    patient_column: str = "patient_id"
    mask_column: str | None = "mask"
    split_column: str = "split"
    fold_column: str = "fold"
    classes: list[str] | None = None
    task: Task = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    fold: int | None = None
    num_folds: int = 5
    batch_size: int | Literal["auto"] = 32
    num_workers: int = 0
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: str | None = None
    cache_key: Literal["stat", "content"] = "stat"
    sampler: Literal["random", "balanced"] = "random"
    leakage: Literal["error", "warn"] = "error"
    on_bad_case: Literal["error", "skip"] = "error"
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
        nonzero: ``zscore`` statistics over non-zero voxels only (MRI with a
            zero background).
        preset: a named setting that replaces ``mode``/``a_min``/``a_max``/``clip``:
            CT windows ``ct_lung`` [-1000, 400] HU, ``ct_mediastinum`` [-160, 240],
            ``ct_soft_tissue`` [-125, 225], ``ct_bone`` [-500, 1300], ``ct_brain``
            [0, 80]; ``pet_suv`` (SUV 0..15 -> 0..1, not clipped); ``mri`` (z-score
            over non-zero voxels).
    """

    mode: Literal["range", "percentile", "zscore", "none"] = "percentile"
    a_min: float | None = None
    a_max: float | None = None
    lower: float = 0.5
    upper: float = 99.5
    clip: bool = True
    nonzero: bool = False
    preset: str | None = None


@dataclass
class PreprocessConfig:
    """Deterministic preprocessing (computed once and cached).

    The steps run in this order: modalities resampled onto the reference
    modality's grid (3D), ``orientation``, ``spacing``, ``crop_foreground``,
    intensity scaling, then ``spatial_size``.

    Attributes:
        spatial_size: target size of every image, ``[H, W]`` or ``[D, H, W]``;
            ``None`` keeps the files' size (which must then agree across cases).
        size_mode: how ``spatial_size`` is reached: ``resize`` (interpolate) or
            ``pad_crop`` (centred zero-padding and cropping, no interpolation).
        spacing: resample to this voxel size (mm per spatial axis) using the
            files' geometry; ``None`` keeps each file's spacing.
        orientation: reorient 3D volumes to these axis codes (e.g. ``RAS``);
            ``None`` keeps the stored voxel order.
        reference_modality: 3D multimodal cases: the modality whose grid the others
            are resampled onto, through their affines (PET onto CT);
            ``None`` = the first modality.
        crop_foreground: crop every modality to the bounding box of ``mask`` (the
            case's mask file) or of a modality's voxels above
            ``foreground_threshold``; ``None`` = no crop.
        foreground_threshold: intensity (in file units, before scaling) above
            which a voxel is foreground (e.g. -500 HU for the body in CT).
        crop_margin: voxels kept around the foreground box.
        intensity: per-modality intensity scaling; a modality not listed gets
            the default :class:`IntensityConfig` (percentile scaling).
    """

    spatial_size: list[int] | None = None
    size_mode: Literal["resize", "pad_crop"] = "resize"
    spacing: list[float] | None = None
    orientation: str | None = None
    reference_modality: str | None = None
    crop_foreground: str | None = None
    foreground_threshold: float = 0.0
    crop_margin: int = 0
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
        elastic_prob: probability of a random elastic deformation.
        elastic_magnitude: largest displacement of the elastic deformation, in voxels.
        elastic_spacing: distance between the deformation's control points, in voxels.
        blur_prob: probability of a Gaussian blur (per modality).
        blur_sigma: largest blur sigma in voxels (drawn from ``[0.25, blur_sigma]``).
        bias_field_prob: probability of a smooth multiplicative bias field (MRI).
        bias_field_coeff: largest coefficient of the bias field's polynomial.
        preset: ``ct``, ``mri`` or ``xray``: sensible values for every key left at
            its default (see docs/data.md); ``none`` = the keys as given.
        on_device: run flips, affine, intensity jitter and noise batched on the
            training device after the batch is transferred (elastic, blur and bias
            field stay in the loader workers).
        mixup_alpha: mixup: each training batch is blended with a shuffled copy of
            itself, ``lam ~ Beta(alpha, alpha)``, labels mixed alike; 0 = off.
        cutmix_alpha: cutmix: a box (a cuboid in 3D) of a shuffled copy is pasted,
            labels mixed by the box's volume share; 0 = off.
        mix_prob: probability that a training batch is mixed at all.
        mix_switch_prob: with both mixup and cutmix on, the chance a mixed batch
            uses cutmix rather than mixup.
    """

    preset: Literal["none", "ct", "mri", "xray"] = "none"
    flip_prob: float = 0.0
    flip_axes: list[int] | None = None
    affine_prob: float = 0.0
    rotate_deg: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    noise_std: float = 0.0
    intensity_scale: float = 0.0
    intensity_shift: float = 0.0
    elastic_prob: float = 0.0
    elastic_magnitude: float = 4.0
    elastic_spacing: float = 16.0
    blur_prob: float = 0.0
    blur_sigma: float = 1.0
    bias_field_prob: float = 0.0
    bias_field_coeff: float = 0.1
    on_device: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        for key in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, key) < 0:
                raise ConfigError(f"augment.{key}={getattr(self, key)}: expected a value >= 0")
        for key in ("mix_prob", "mix_switch_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"augment.{key}={getattr(self, key)}: expected a value in [0, 1]")


@dataclass
class RestructureConfig:
    """Changes made to the model after it is built (see docs/restructure.md).

    Attributes:
        in_chans_mode: how the first layer of pretrained weights (``pretrained`` or
            ``checkpoint_path``) is fitted to the data's channels: ``auto`` (the
            library's own rule for ``pretrained``, ``mean`` for a checkpoint),
            ``mean`` (every channel gets the summed kernel divided by the new channel
            count) or ``repeat`` (the old channels cycle, scaled by old / new count).
        inflate: for 3D data, build the 2D version of ``name`` (with its 2D weights)
            and inflate it to 3D: ``none``, ``centre`` (2D kernel on the central depth
            slice) or ``mean`` (I3D: repeated along depth and divided by it).
        norm: replace every batch norm over spatial maps by ``batch``, ``instance`` or
            ``group`` norms (affine parameters copied); ``None`` keeps them.
        act: replace every hidden-layer activation (ReLU, GELU, SiLU, ...) by
            ``relu``, ``relu6``, ``gelu``, ``silu`` or ``hardswish``; ``None`` keeps them.
        padding: how every padded convolution module pads its input: ``zeros``
            or ``replicate`` (border voxels continued: no artificial edge where anatomy
            reaches the border of the volume); ``None`` keeps the model's own (zeros).
        head_drop_rate: a new classifier with dropout before its linear layer(s), in
            ``[0, 1)``.
        head_hidden: width of a hidden layer in a new classifier; ``None``: none.
        freeze: parameters left untrained: ``all-but-head``, a count of leading
            stages (stem included), or module names; ``None`` trains everything.
        freeze_norm_stats: batch norms in the frozen part keep their running
            statistics during training.
        reparameterize: when a trained run's model is loaded (evaluate, predict,
            benchmarks), switch re-parameterisable blocks to their inference form.
        fold_bn: with ``reparameterize``, also fold batch norms into the
            convolutions that feed them.
    """

    in_chans_mode: Literal["auto", "mean", "repeat"] = "auto"
    inflate: Literal["none", "centre", "mean"] = "none"
    norm: Literal["batch", "instance", "group"] | None = None
    act: Literal["relu", "relu6", "gelu", "silu", "hardswish"] | None = None
    padding: Literal["zeros", "replicate"] | None = None
    head_drop_rate: float = 0.0
    head_hidden: int | None = None
    freeze: str | int | list[str] | None = None
    freeze_norm_stats: bool = True
    reparameterize: bool = False
    fold_bn: bool = False

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        key = "model.restructure."
        if not 0.0 <= self.head_drop_rate < 1.0:
            raise ConfigError(
                f"{key}head_drop_rate={self.head_drop_rate}: expected a value in [0, 1)"
            )
        if self.head_hidden is not None and self.head_hidden < 1:
            raise ConfigError(f"{key}head_hidden={self.head_hidden}: expected an integer >= 1")
        freeze = self.freeze
        if isinstance(freeze, int) and freeze < 0:
            raise ConfigError(f"{key}freeze={freeze}: expected a stage count >= 0")
        if freeze == "all":
            raise ConfigError(f"{key}freeze='all' would leave nothing to train; use 'all-but-head'")
        names = [freeze] if isinstance(freeze, str) else freeze
        if isinstance(names, list) and (not names or any(not n.strip() for n in names)):
            raise ConfigError(
                f"{key}freeze={freeze!r}: expected 'all-but-head', a stage count or "
                "non-empty module names"
            )
        if self.fold_bn and not self.reparameterize:
            raise ConfigError(f"{key}fold_bn needs {key}reparameterize: true")


@dataclass
class ModelConfig:
    """Which network to train: a registry name and its arguments.

    Attributes:
        name: a name from ``medcls models`` (``timm:resnet18``,
            ``timm3d:resnet18``, ``monai:densenet121``, a medcls model, ...).
        pretrained: load the library's pretrained weights (needs them cached locally).
        checkpoint_path: a local weights file (safetensors or a torch state dict).
        kwargs: further keyword arguments of the model's constructor.
        fusion: how several modalities (``data.modalities``) enter the model: ``none``
            (channels concatenated into one network), ``early`` (the same behind a
            modality-dict interface), ``late`` (one backbone per modality, pooled
            features concatenated) or ``cross_attention`` (one backbone per modality,
            their features attend to each other before pooling); see
            :mod:`medcls.models.fusion`.
        restructure: changes made to the built model (input channels, 2D-to-3D
            inflation, norm/activation swaps, head, frozen parts, inference fusion).
        drop_path_rate: stochastic depth: the largest rate of dropping a residual
            block (passed to models that take ``drop_path_rate``: timm, timm_3d and
            medcls's Transformers; an error for a model without it). ``None`` = the
            model's default.
        drop_rate: dropout before the classifier (models taking ``drop_rate``).
    """

    name: str = "timm:resnet10t"
    pretrained: bool = False
    checkpoint_path: str | None = None
    kwargs: dict[str, object] = field(default_factory=dict)
    fusion: Literal["none", "early", "late", "cross_attention"] = "none"
    restructure: RestructureConfig = field(default_factory=RestructureConfig)
    drop_path_rate: float | None = None
    drop_rate: float | None = None

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        for key in ("drop_path_rate", "drop_rate"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{key}={value}: expected a value in [0, 1)")


@dataclass
class LossConfig:
    """Training loss.

    Attributes:
        name: ``auto`` (cross-entropy for single-label tasks, BCE for
            multi-label), ``cross_entropy``, ``bce``, ``focal`` (focal loss; sigmoid
            focal for multi-label) or ``balanced_focal`` (LDTransformer's class-balanced
            focal loss, single-label).
        label_smoothing: label smoothing for cross-entropy.
        class_weights: ``None``, ``balanced`` (inverse class frequency on the
            training split), ``class_balanced`` (effective number of samples with
            ``beta``) or one weight per class.
        gamma: focusing parameter of ``focal`` and ``balanced_focal`` (0 = cross-entropy).
        alpha: ``focal`` only: one factor per class, or for a binary task the
            positive-class factor ``a`` (negative class ``1 - a``); multi-label: the
            weight of positive labels.
        beta: ``beta`` of ``class_weights: class_balanced``, in ``[0, 1)``.
    """

    name: Literal["auto", "cross_entropy", "bce", "focal", "balanced_focal"] = "auto"
    label_smoothing: float = 0.0
    class_weights: str | list[float] | None = None
    gamma: float = 2.0
    alpha: float | list[float] | None = None
    beta: float = 0.999


@dataclass
class OptimizerConfig:
    """Optimiser.

    Attributes:
        name: ``adamw``, ``adam`` or ``sgd`` (with ``momentum`` and ``nesterov``).
        lr: base learning rate (the classifier's, with ``layer_decay``).
        weight_decay: decoupled weight decay (AdamW) or L2 (Adam, SGD); biases and
            normalisation weights get none.
        layer_decay: layer-wise learning-rate decay in ``(0, 1]``: the parameters of
            the ``i``-th of ``L`` depth groups (stem 0, each feature stage, head ``L``)
            learn at ``lr * layer_decay ** (L - i)``; ``None`` = one learning rate.
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr={self.lr}: expected a value > 0")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(
                f"optimizer.layer_decay={self.layer_decay}: expected a value in (0, 1]"
            )


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped every optimiser step.

    Attributes:
        name: ``cosine`` (linear warm-up, then cosine decay), ``cosine_restarts``
            (warm restarts, SGDR: cosine cycles of ``restart_epochs``, each
            ``restart_mult`` times longer than the last) or ``constant``.
        warmup_epochs: length of the linear warm-up (fractions allowed).
        min_lr_ratio: lowest learning rate as a fraction of ``optimizer.lr``.
        restart_epochs: ``cosine_restarts``: length of the first cycle, in epochs.
        restart_mult: ``cosine_restarts``: growth of each following cycle (>= 1).
    """

    name: Literal["cosine", "cosine_restarts", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    restart_epochs: float = 5.0
    restart_mult: float = 1.0

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        if self.restart_epochs <= 0:
            raise ConfigError(f"scheduler.restart_epochs={self.restart_epochs}: expected > 0")
        if self.restart_mult < 1:
            raise ConfigError(f"scheduler.restart_mult={self.restart_mult}: expected >= 1")


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
        compile: run the model through ``torch.compile``: ``on`` (its default mode),
            ``reduce-overhead`` (adds CUDA graphs: for small models whose GPU step is
            bound by per-operation launch cost, see docs/models_paper.md "Training
            speed"), ``max-autotune``; ``off`` = eager. The first steps are slow
            while it compiles; the checkpoints are the same either way.
        sync_batchnorm: synchronise batch-norm statistics across DDP processes
            (CUDA only: PyTorch's SyncBatchNorm does not run on CPU).
        progress: show a progress bar.
        log_every_n_steps: how often training loss is logged.
        limit_train_batches: use only this many (int) or this share (float) of
            the training batches per epoch (quick checks).
        ema_decay: keep an exponential moving average of the weights with this
            decay (e.g. 0.999); validation, the saved checkpoints and the final
            evaluation then use the averaged weights. ``None`` = off.
        ema_warmup: ramp the EMA decay up as ``min(decay, (1 + n) / (10 + n))`` over
            the first optimiser steps ``n``, so early weights fade fast.
        effective_batch_size: samples per optimiser step over all devices; gradients
            are accumulated over ``ceil(effective / (batch_size * devices))``
            batches (overrides ``accumulate_grad_batches``). ``None`` = off.
        memory_limit_gb: memory that ``data.batch_size: auto`` may fill per device;
            ``None`` = the GPU's free memory, or half the free RAM on a CPU.
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
    compile: Literal["off", "on", "reduce-overhead", "max-autotune"] = "off"
    sync_batchnorm: bool = True
    progress: bool = True
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None
    ema_decay: float | None = None
    ema_warmup: bool = True
    effective_batch_size: int | None = None
    memory_limit_gb: float | None = None

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"trainer.ema_decay={self.ema_decay}: expected a value in (0, 1)")
        if self.effective_batch_size is not None and self.effective_batch_size < 1:
            raise ConfigError(
                f"trainer.effective_batch_size={self.effective_batch_size}: expected >= 1"
            )
        if self.memory_limit_gb is not None and self.memory_limit_gb <= 0:
            raise ConfigError(f"trainer.memory_limit_gb={self.memory_limit_gb}: expected > 0")


@dataclass
class TuneConfig:
    """Hyperparameter search by ``medcls tune`` (see docs/tuning.md).

    Attributes:
        space: the search space: dotted config keys mapped to a distribution,
            ``{type: float, low: 1e-4, high: 1e-2, log: true}``,
            ``{type: int, low: 8, high: 64, step: 8}`` or
            ``{type: categorical, choices: [adamw, sgd]}`` (a plain list is read as
            categorical choices). Any key of this file can be searched, model
            arguments included (``model.kwargs.depth``).
        trials: finished trials (complete or pruned) the study runs to, counted over
            every worker sharing the storage.
        timeout: stop starting new trials after this many seconds (this worker).
        metric: validation metric to optimise (``val_auc``, ``val_loss``, ...); it is
            also each trial's ``trainer.monitor``.
        direction: ``maximize``, ``minimize`` or ``auto`` (``minimize`` for losses).
        folds: ``None``: one training per trial on the configured split; ``k``: the
            mean of the metric over cross-validation folds ``0 .. k-1``
            (``data.num_folds`` must be at least ``k``).
        sampler: ``tpe`` (Bayesian, Optuna's default) or ``random``.
        pruner: ``median`` (stop a trial whose epoch metric falls below the median
            of earlier trials at that epoch), ``hyperband`` or ``none``.
        startup_trials: trials finished before the pruner may stop one (and before
            TPE models the space).
        warmup_epochs: epochs of each trial that are never pruned.
        include_default: queue the configuration's own values as the first trial,
            so the study measures the untuned baseline in the same run.
        storage: an Optuna storage URL; ``None`` = ``sqlite:///RUN/study.db`` (a
            PostgreSQL/MySQL URL lets workers on several machines share the study).
        study_name: ``None`` = the experiment's name.
        heartbeat_seconds: each running trial's heartbeat interval; a trial whose
            heartbeat stops for ``grace_seconds`` (its worker was killed) is marked
            failed and queued again with the same parameters.
        grace_seconds: see ``heartbeat_seconds``.
    """

    space: dict[str, object] = field(default_factory=dict)
    trials: int = 20
    timeout: float | None = None
    metric: str = "val_auc"
    direction: Literal["auto", "maximize", "minimize"] = "auto"
    folds: int | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = 4
    warmup_epochs: int = 1
    include_default: bool = True
    storage: str | None = None
    study_name: str | None = None
    heartbeat_seconds: int = 30
    grace_seconds: int = 120

    def __post_init__(self) -> None:
        from medcls.errors import ConfigError

        if self.trials < 1:
            raise ConfigError(f"tune.trials={self.trials}: expected >= 1")
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"tune.folds={self.folds}: expected >= 2 (or null for one split)")
        if self.heartbeat_seconds < 1 or self.grace_seconds <= self.heartbeat_seconds:
            raise ConfigError(
                f"tune.heartbeat_seconds={self.heartbeat_seconds}, tune.grace_seconds="
                f"{self.grace_seconds}: expected 1 <= heartbeat < grace"
            )


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
    tune: TuneConfig = field(default_factory=TuneConfig)
