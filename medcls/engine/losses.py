"""Training losses, chosen by name from the ``loss`` section.

``cross_entropy`` and ``bce`` are PyTorch's; ``focal`` (Lin et al., ICCV 2017) and
``balanced_focal`` (the class-balanced focal loss of LDTransformer, Acta Optica Sinica)
are written here, as is class-balanced weighting by the effective number of samples
(Cui et al., CVPR 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.config.schema import LossConfig
from medcls.errors import ConfigError

__all__ = [
    "BalancedFocalLoss",
    "FocalLoss",
    "SigmoidFocalLoss",
    "balanced_class_weights",
    "build_loss",
    "class_balanced_weights",
    "resolve_class_weights",
]


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weights ``N / (K * n_k)`` (1.0 for an average class).

    Raises:
        ConfigError: a class has no training case.
    """
    total, k = sum(counts), len(counts)
    if any(n == 0 for n in counts):
        raise ConfigError(
            f"loss.class_weights=balanced: a class has no training case (counts {list(counts)})"
        )
    return [total / (k * n) for n in counts]


def class_balanced_weights(counts: Sequence[int], beta: float) -> list[float]:
    """Class-balanced weights by the effective number of samples (Cui et al. 2019).

    ``w_k = (1 - beta) / (1 - beta ** n_k)``, rescaled so that the weights sum to ``K``
    (1.0 for every class when all counts are equal). ``beta = 0`` gives equal weights;
    ``beta -> 1`` approaches inverse frequency.

    Raises:
        ConfigError: ``beta`` outside ``[0, 1)`` or a class without training cases.
    """
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"loss.beta={beta}: expected a value in [0, 1), e.g. 0.999")
    if any(n <= 0 for n in counts):
        raise ConfigError(
            f"loss.class_weights=class_balanced: a class has no training case (counts {list(counts)})"
        )
    raw = [(1.0 - beta) / (1.0 - beta**n) for n in counts]
    total = sum(raw)
    return [len(raw) * w / total for w in raw]


def resolve_class_weights(cfg: LossConfig, counts: Sequence[int]) -> list[float] | None:
    """Turns ``loss.class_weights`` into one weight per class.

    Args:
        cfg: the ``loss`` section; ``class_weights`` is ``None``, ``balanced`` (inverse
            frequency), ``class_balanced`` (effective number with ``loss.beta``) or a list.
        counts: training cases per class, in class order.

    Returns:
        the weights, or None when ``class_weights`` is None.

    Raises:
        ConfigError: an unknown name or a list of the wrong length.
    """
    spec = cfg.class_weights
    if spec is None:
        return None
    if spec == "balanced":
        return balanced_class_weights(counts)
    if spec == "class_balanced":
        return class_balanced_weights(counts, cfg.beta)
    if isinstance(spec, str):
        raise ConfigError(
            f"loss.class_weights: expected 'balanced', 'class_balanced' or a list, got {spec!r}"
        )
    if len(spec) != len(counts):
        raise ConfigError(f"loss.class_weights: {len(spec)} weights for {len(counts)} classes")
    return [float(w) for w in spec]


def _alpha_vector(alpha: float | Sequence[float] | None, num_classes: int) -> torch.Tensor | None:
    """Per-class focal ``alpha``: a list as given, a single ``a`` as ``[1 - a, a]`` (2 classes)."""
    if alpha is None:
        return None
    if isinstance(alpha, int | float):
        if num_classes != 2:
            raise ConfigError(
                f"loss.alpha={alpha}: a single alpha weighs the positive class of a binary task; "
                f"this task has {num_classes} classes, so give one alpha per class"
            )
        return torch.tensor([1.0 - float(alpha), float(alpha)])
    if len(alpha) != num_classes:
        raise ConfigError(f"loss.alpha: {len(alpha)} values for {num_classes} classes")
    return torch.tensor([float(a) for a in alpha])


def _focal_terms(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 - p_t) ** gamma * -log p_t`` per sample for softmax logits ``(B, K)`` and indices ``(B,)``."""
    log_pt = torch.log_softmax(logits, dim=1).gather(1, target.long()[:, None]).squeeze(1)
    pt = log_pt.exp()
    return (1.0 - pt).clamp(min=0.0).pow(gamma) * -log_pt


def _weighted_mean(terms: torch.Tensor, sample_weights: torch.Tensor | None) -> torch.Tensor:
    if sample_weights is None:
        return terms.mean()
    return (sample_weights * terms).sum() / sample_weights.sum().clamp(min=1e-12)


class FocalLoss(nn.Module):
    """Focal loss for single-label tasks (softmax over ``K`` classes).

    With ``p_i = softmax(z_i)[y_i]`` and a per-class factor ``a_k = alpha_k * w_k``
    (``alpha`` and the class weights ``w``; 1 where not given)::

        loss = sum_i a_{y_i} * (1 - p_i) ** gamma * (-log p_i) / sum_i a_{y_i}

    ``gamma = 0`` is cross-entropy (with the same weighted mean as
    ``nn.CrossEntropyLoss(weight=...)``); a larger ``gamma`` down-weights samples that
    are already classified well and focuses training on hard ones.

    Args:
        gamma: focusing parameter (>= 0).
        alpha: one factor per class, or for two classes the positive-class factor
            ``a`` (negative ``1 - a``); None: 1.
        weight: class weights ``(K,)`` (e.g. from ``loss.class_weights``).

    Shapes: logits ``(B, K)``, target class indices ``(B,)`` -> scalar.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma={gamma}: expected a value >= 0")
        self.gamma = float(gamma)
        self.alpha = alpha
        self.register_buffer("weight", weight)

    def class_factors(self, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
        """The per-class factor ``a = alpha * w`` ``(K,)``, or None when both are unset."""
        alpha = _alpha_vector(self.alpha, num_classes)
        factors = None if alpha is None else alpha.to(like)
        if self.weight is not None:
            if self.weight.numel() != num_classes:
                raise ConfigError(
                    f"loss.class_weights: {self.weight.numel()} weights for {num_classes} classes"
                )
            weight = self.weight.to(like)
            factors = weight if factors is None else factors * weight
        return factors

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits and ``(B,)`` class indices -> mean focal loss."""
        factors = self.class_factors(logits.shape[1], logits)
        sample_weights = None if factors is None else factors[target.long()]
        return _weighted_mean(_focal_terms(logits, target, self.gamma), sample_weights)


class BalancedFocalLoss(nn.Module):
    """Balanced focal loss (LDTransformer): class-balanced and focused on hard samples.

    The loss raises the weight of samples of small classes and of misclassified samples
    and lowers the weight of samples that are already classified well. With
    ``p_i = softmax(z_i)[y_i]``, ``n_k`` the training cases of class ``k``,
    ``N = sum_k n_k`` and ``K`` classes::

        a_k  = N / (K * n_k)                                  # class balance
        loss = sum_i a_{y_i} * (1 - p_i) ** gamma * (-log p_i) / sum_i a_{y_i}

    ``a_k`` is 1 for a class of average size, above 1 for small classes; the focusing
    term ``(1 - p_i) ** gamma`` goes to 0 as a sample becomes well classified
    (``p_i -> 1``) and stays near 1 for misclassified ones.

    ``a`` comes from ``weight`` when given (``loss.class_weights``); otherwise ``n_k``
    is counted from the targets of the training batches seen so far (training mode
    only, starting at one case per class), so the loss balances itself without being
    told the class counts; the counts are not saved in checkpoints.

    Args:
        gamma: focusing parameter (>= 0).
        weight: fixed class factors ``(K,)`` instead of counting.

    Shapes: logits ``(B, K)``, target class indices ``(B,)`` -> scalar.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma={gamma}: expected a value >= 0")
        self.gamma = float(gamma)
        self.register_buffer("weight", weight)
        self.register_buffer("class_counts", torch.zeros(0), persistent=False)

    def class_factors(self, num_classes: int, like: torch.Tensor) -> torch.Tensor:
        """``a_k = N / (K * n_k)`` from the counts, or the fixed ``weight``."""
        if self.weight is not None:
            if self.weight.numel() != num_classes:
                raise ConfigError(
                    f"loss.class_weights: {self.weight.numel()} weights for {num_classes} classes"
                )
            return self.weight.to(like)
        counts = self.class_counts
        if counts.numel() != num_classes:
            counts = torch.ones(num_classes, device=like.device)
        counts = counts.to(like)
        return counts.sum() / (num_classes * counts)

    @torch.no_grad()
    def update_counts(self, target: torch.Tensor, num_classes: int) -> None:
        """Adds a batch's class indices ``(B,)`` to the running class counts."""
        if self.class_counts.numel() != num_classes:
            self.class_counts = torch.ones(num_classes, device=target.device)
        self.class_counts = self.class_counts.to(target.device) + torch.bincount(
            target.long(), minlength=num_classes
        ).to(self.class_counts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits and ``(B,)`` class indices -> mean balanced focal loss."""
        num_classes = logits.shape[1]
        if self.training and self.weight is None:
            self.update_counts(target, num_classes)
        factors = self.class_factors(num_classes, logits)
        return _weighted_mean(_focal_terms(logits, target, self.gamma), factors[target.long()])


class SigmoidFocalLoss(nn.Module):
    """Focal loss for multi-label tasks (one sigmoid per class).

    With ``p = sigmoid(z)``, ``p_t = p`` where the label is 1 and ``1 - p`` where it
    is 0, ``alpha_t = alpha`` / ``1 - alpha`` alike (1 when ``alpha`` is None), and
    ``w_k`` class weights applied to positive labels (like ``pos_weight``)::

        loss = mean over (i, k) of alpha_t * w_t * (1 - p_t) ** gamma * (-log p_t)

    Args:
        gamma: focusing parameter (>= 0).
        alpha: weight of positive labels in ``[0, 1]``, or None.
        weight: class weights ``(K,)`` for positive labels.

    Shapes: logits ``(B, K)``, multi-hot targets ``(B, K)`` -> scalar.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = None, weight: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma={gamma}: expected a value >= 0")
        if alpha is not None and not (isinstance(alpha, int | float) and 0.0 <= alpha <= 1.0):
            raise ConfigError(
                f"loss.alpha={alpha!r}: multi-label focal loss takes one alpha in [0, 1]"
            )
        self.gamma = float(gamma)
        self.alpha = alpha
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits and multi-hot ``(B, K)`` targets -> mean focal loss."""
        target = target.to(logits.dtype)
        ce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        pt = (-ce).exp()
        terms = (1.0 - pt).clamp(min=0.0).pow(self.gamma) * ce
        if self.alpha is not None:
            terms = terms * (self.alpha * target + (1.0 - self.alpha) * (1.0 - target))
        if self.weight is not None:
            terms = terms * (1.0 + (self.weight.to(logits) - 1.0) * target)
        return terms.mean()


def build_loss(
    cfg: LossConfig, task: str, class_weights: Sequence[float] | None = None
) -> nn.Module:
    """The loss module for ``task`` (``binary``, ``multiclass`` or ``multilabel``).

    Args:
        cfg: the ``loss`` section.
        task: the task; ``auto`` picks cross-entropy, or BCE for multi-label.
        class_weights: one weight per class (already resolved from ``balanced`` or
            ``class_balanced``, see :func:`resolve_class_weights`).

    Returns:
        A module ``(logits (B, K), target) -> scalar``; targets are class
        indices (B,) for single-label losses and multi-hot (B, K) floats for
        ``bce`` and multi-label ``focal``.
    """
    name = cfg.name
    if name == "auto":
        name = "bce" if task == "multilabel" else "cross_entropy"
    weight = (
        None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
    )
    if name in ("focal", "balanced_focal") and cfg.label_smoothing:
        raise ConfigError(
            f"loss.label_smoothing={cfg.label_smoothing} applies to cross_entropy only; "
            f"set it to 0 for {name}"
        )
    if name == "focal":
        if task == "multilabel":
            return SigmoidFocalLoss(cfg.gamma, cfg.alpha, weight)
        return FocalLoss(cfg.gamma, cfg.alpha, weight)
    if name == "balanced_focal":
        if task == "multilabel":
            raise ConfigError(
                "loss.name: balanced_focal needs one label per case; use 'focal' with "
                "loss.alpha or loss.class_weights for multi-label tasks"
            )
        if cfg.alpha is not None:
            raise ConfigError(
                "loss.alpha: balanced_focal derives its class factors from the class "
                "counts (or loss.class_weights); use 'focal' to set alpha by hand"
            )
        return BalancedFocalLoss(cfg.gamma, weight)
    if name == "cross_entropy":
        if task == "multilabel":
            raise ConfigError(
                "loss.name: cross_entropy needs one label per case; use 'bce' for multi-label"
            )
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if task != "multilabel":
        raise ConfigError(
            f"loss.name: 'bce' is for multi-label tasks; this task is {task!r} (use cross_entropy)"
        )
    return nn.BCEWithLogitsLoss(pos_weight=weight)
