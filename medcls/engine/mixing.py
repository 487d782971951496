"""Mixup and CutMix of training batches, for 2D and 3D inputs and every task.

A mixed batch pairs each sample ``i`` with sample ``perm[i]`` of the same batch:

- **mixup** (Zhang et al. 2018): ``x = lam * x_i + (1 - lam) * x_perm(i)`` with
  ``lam ~ Beta(alpha, alpha)``;
- **CutMix** (Yun et al. 2019): a random box (a cuboid in 3D) of ``x_perm(i)`` is
  pasted into ``x_i``; ``lam`` becomes the share of the volume left unpasted.

The labels are mixed with the same ``lam``: :class:`MixedTargets` holds both label
sets and gives the soft targets (one-hot or multi-hot, blended), and its
:meth:`~MixedTargets.loss` is ``lam * L(y_i) + (1 - lam) * L(y_perm(i))``, which
equals the loss against the soft targets for every loss linear in the target
(cross-entropy with or without label smoothing, BCE) and extends mixing to the focal
losses. Every modality of a multimodal case gets the same permutation and box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["BatchMixer", "MixedTargets", "cutmix_box", "soft_targets"]


def soft_targets(target: torch.Tensor, num_classes: int, task: str) -> torch.Tensor:
    """Targets as float class distributions ``(B, K)``: one-hot for class indices
    (``binary``/``multiclass``), the multi-hot rows unchanged for ``multilabel``."""
    if task == "multilabel":
        return target.float()
    return torch.nn.functional.one_hot(target.long(), num_classes).float()


@dataclass
class MixedTargets:
    """The two label sets of a mixed batch and their weight ``lam``."""

    target: torch.Tensor
    target_perm: torch.Tensor
    lam: float

    def soft(self, num_classes: int, task: str) -> torch.Tensor:
        """Blended soft targets ``(B, K)``: ``lam * y + (1 - lam) * y_perm``."""
        a = soft_targets(self.target, num_classes, task)
        b = soft_targets(self.target_perm, num_classes, task)
        return self.lam * a + (1.0 - self.lam) * b

    def loss(
        self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits
    ) -> torch.Tensor:
        """``lam * criterion(logits, y) + (1 - lam) * criterion(logits, y_perm)``."""
        if self.lam >= 1.0:
            return criterion(logits, self.target)
        return self.lam * criterion(logits, self.target) + (1.0 - self.lam) * criterion(
            logits, self.target_perm
        )


def cutmix_box(
    spatial: Sequence[int], lam: float, generator: torch.Generator
) -> tuple[tuple[slice, ...], float]:
    """A random box covering about ``1 - lam`` of a grid of size ``spatial``.

    Each side is ``round(size * (1 - lam) ** (1 / ndim))`` and the box's centre is
    uniform over the grid (the box is clipped at the border, as in CutMix).

    Returns:
        ``(slices, lam_actual)``: one slice per spatial axis and the share of the
        grid left outside the clipped box.
    """
    ndim = len(spatial)
    side = (1.0 - lam) ** (1.0 / ndim)
    slices, pasted = [], 1.0
    for size in spatial:
        length = round(size * side)
        centre = int(torch.randint(0, size, (1,), generator=generator))
        lo, hi = max(0, centre - length // 2), min(size, centre + length - length // 2)
        slices.append(slice(lo, hi))
        pasted *= (hi - lo) / size
    return tuple(slices), 1.0 - pasted


class BatchMixer:
    """Mixes training batches with mixup and/or CutMix.

    Args:
        mixup_alpha: ``Beta(alpha, alpha)`` of mixup; 0 = no mixup.
        cutmix_alpha: ``Beta(alpha, alpha)`` of CutMix; 0 = no CutMix.
        prob: probability that a batch is mixed at all.
        switch_prob: with both on, the probability of CutMix for a mixed batch.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _beta(self, alpha: float, generator: torch.Generator) -> float:
        # Beta(a, a) from two Gamma draws, on the seeded generator
        g1 = torch._standard_gamma(torch.tensor([alpha]), generator=generator)
        g2 = torch._standard_gamma(torch.tensor([alpha]), generator=generator)
        return float(g1 / (g1 + g2))

    def __call__(
        self,
        inputs: dict[str, torch.Tensor],
        target: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], MixedTargets]:
        """Mixes a batch.

        Args:
            inputs: modality name -> ``(B, C, *spatial)`` (all the same ``B`` and
                spatial size).
            target: class indices ``(B,)`` or multi-hot labels ``(B, K)``.
            generator: a CPU generator for the random draws (default: torch's global one).

        Returns:
            The mixed inputs (new tensors; the given ones are not changed) and the
            :class:`MixedTargets` (``lam = 1`` when the batch was left unmixed).
        """
        gen = generator if generator is not None else torch.default_generator
        batch = target.shape[0]
        unmixed = MixedTargets(target, target, 1.0)
        if not self.enabled or batch < 2 or float(torch.rand(1, generator=gen)) >= self.prob:
            return inputs, unmixed
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or float(torch.rand(1, generator=gen)) < self.switch_prob
        )
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = self._beta(alpha, gen)
        perm = torch.randperm(batch, generator=gen).to(target.device)
        mixed: dict[str, torch.Tensor] = {}
        if use_cutmix:
            spatial = next(iter(inputs.values())).shape[2:]
            box, lam = cutmix_box(spatial, lam, gen)
            for name, x in inputs.items():
                out = x.clone()
                region = (slice(None), slice(None), *box)
                out[region] = x[perm][region]
                mixed[name] = out
        else:
            for name, x in inputs.items():
                mixed[name] = x * lam + x[perm] * (1.0 - lam)
        if math.isclose(lam, 1.0):
            return inputs, unmixed
        return mixed, MixedTargets(target, target[perm], lam)
