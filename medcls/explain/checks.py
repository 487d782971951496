"""Checks of the maps themselves: localisation, faithfulness and sanity.

- **Pointing game** (Zhang et al., ECCV 2016): is the map's peak inside the lesion?
- **Energy inside the lesion** (the energy-based pointing game of Score-CAM): the
  share of the map's total inside the mask.
- **Peak on the border**: is the map's peak outside the lesion and next to the border
  of the input? An early layer of a zero-padded network answers the edge that the
  padding makes where anatomy reaches the border (see
  :func:`medcls.models.restructure.set_padding_mode`).
- **Deletion / insertion** (Petsiuk et al., BMVC 2018, RISE): the target probability
  as the most salient voxels are removed (set to 0) or inserted into a blurred copy;
  a faithful map gives a low deletion and a high insertion area under the curve.
- **Model-randomisation sanity check** (Adebayo et al., NeurIPS 2018): the maps of a
  model with re-initialised weights must differ clearly from the trained model's;
  measured with the Spearman rank correlation per sample (the pass criterion) and,
  beside it, the overlap of the two maps' most salient voxels (:func:`top_overlap`),
  which the background of a volume does not dominate.

All functions take maps ``(B, *spatial)`` and work for 2D and 3D alike.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ConfigError
from medcls.explain.base import Explanation, resize_maps

__all__ = [
    "CurveResult",
    "RandomizationResult",
    "deletion_insertion",
    "energy_in_mask",
    "peak_on_border",
    "pointing_game",
    "randomization_check",
    "randomized_copy",
    "spearman",
    "top_overlap",
]


def _masks_like(masks: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Masks ``(B, *S)`` or ``(B, 1, *S)`` as booleans on the maps' grid."""
    m = masks.detach().float().cpu()
    if m.ndim == maps.ndim + 1 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != maps.ndim or m.shape[0] != maps.shape[0]:
        raise ConfigError(
            f"masks of shape {tuple(masks.shape)} do not match maps of shape {tuple(maps.shape)}"
        )
    if m.shape[1:] != maps.shape[1:]:
        m = resize_maps(m, maps.shape[1:], nearest=True)
    return m > 0.5


def _dilate(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Grows boolean masks ``(B, *S)`` by ``tolerance`` cells (a cube / square element)."""
    if tolerance <= 0:
        return mask
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[mask.ndim - 1]
    k = 2 * tolerance + 1
    return pool(mask[:, None].float(), kernel_size=k, stride=1, padding=tolerance)[:, 0] > 0


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Whether each map's maximum lies inside its mask.

    Args:
        maps: ``(B, *S)``.
        masks: ``(B, *S)`` or ``(B, 1, *S)`` (resized by nearest neighbour if needed).
        tolerance: cells the mask is grown by first (the original game uses 15 px).

    Returns:
        ``(B,)`` booleans. A map with several maxima hits if any maximum is inside.
    """
    m = maps.detach().float().cpu()
    inside = _dilate(_masks_like(masks, m), tolerance)
    flat = torch.nan_to_num(m, nan=-math.inf).reshape(m.shape[0], -1)
    peak = flat == flat.max(dim=1, keepdim=True).values
    return (peak & inside.reshape(m.shape[0], -1)).any(dim=1)


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each (non-negative) map's sum inside its mask ``(B,)`` (0 for an all-zero map)."""
    m = torch.nan_to_num(maps.detach().float().cpu()).clamp_min(0)
    inside = _masks_like(masks, m)
    total = m.reshape(m.shape[0], -1).sum(1)
    within = (m * inside).reshape(m.shape[0], -1).sum(1)
    return torch.where(total > 0, within / total.clamp_min(1e-12), torch.zeros_like(total))


def border_margin(size: int) -> int:
    """How far from the outermost voxel a peak counts as "on the border": 1/16 of the axis.

    At least 1. At 48 voxels it is 3, which takes in the centres of the first and last
    cells of a stride-4 layer (voxels 0 and 44).
    """
    return max(1, round(size / 16))


def peak_on_border(
    maps: torch.Tensor, masks: torch.Tensor | None = None, *, margin: int | None = None
) -> torch.Tensor:
    """Whether each map's maximum lies next to the border of the input (and off the lesion).

    Args:
        maps: ``(B, *S)``.
        masks: ``(B, *S)`` or ``(B, 1, *S)``; a maximum inside the mask does not count
            (None: every maximum counts).
        margin: distance in voxels from the outermost voxel of an axis; default
            :func:`border_margin` of each axis.

    Returns:
        ``(B,)`` booleans: every maximum of the map is outside the mask and within
        ``margin`` of the outermost voxel along some axis.
    """
    m = maps.detach().float().cpu()
    flat = torch.nan_to_num(m, nan=-math.inf).reshape(m.shape[0], -1)
    peak = (flat == flat.max(dim=1, keepdim=True).values).reshape(m.shape)
    near = torch.zeros(m.shape[1:], dtype=torch.bool)
    for axis, size in enumerate(m.shape[1:]):
        k = border_margin(size) if margin is None else int(margin)
        index = torch.arange(size)
        edge = (index <= k) | (index >= size - 1 - k)
        shape = [1] * (m.ndim - 1)
        shape[axis] = size
        near |= edge.reshape(shape)
    if masks is not None:
        near = near & ~_masks_like(masks, m)
    on_border = (peak & near).reshape(m.shape[0], -1).any(1)
    elsewhere = (peak & ~near).reshape(m.shape[0], -1).any(1)
    return on_border & ~elsewhere


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last axis (ties share their mean rank)."""
    order = x.argsort(dim=-1)
    ranks = torch.empty_like(x)
    n = x.shape[-1]
    ranks.scatter_(
        -1, order, torch.arange(n, dtype=x.dtype, device=x.device).expand_as(x).contiguous()
    )
    out = torch.empty_like(ranks)
    for i in range(x.shape[0]):
        values, inverse = torch.unique(x[i], return_inverse=True)
        sums = torch.zeros(values.numel(), dtype=x.dtype).index_add_(0, inverse, ranks[i])
        counts = torch.zeros(values.numel(), dtype=x.dtype).index_add_(
            0, inverse, torch.ones_like(ranks[i])
        )
        out[i] = (sums / counts)[inverse]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``(B, *S)`` -> ``(B,)``.

    A constant map has no ranking; its correlation is reported as 0.
    """
    x = torch.nan_to_num(a.detach().double().cpu()).reshape(a.shape[0], -1)
    y = torch.nan_to_num(b.detach().double().cpu()).reshape(b.shape[0], -1)
    rx, ry = _ranks(x), _ranks(y)
    rx = rx - rx.mean(1, keepdim=True)
    ry = ry - ry.mean(1, keepdim=True)
    denom = rx.norm(dim=1) * ry.norm(dim=1)
    return torch.where(
        denom > 0, (rx * ry).sum(1) / denom.clamp_min(1e-30), torch.zeros_like(denom)
    ).float()


def top_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.05) -> torch.Tensor:
    """Intersection over union of the top ``fraction`` of voxels of each pair of maps.

    ``(B, *S)`` and ``(B, *S)`` -> ``(B,)``. A rank correlation over a whole volume is
    dominated by how both maps rank the background against the body (any two maps of a
    chest that are low in the air outside it correlate); this asks only whether both
    maps point at the same place. Two unrelated maps overlap by about
    ``fraction / (2 - fraction)`` (0.026 for the top 5 %); equal maps by 1. Ties at
    the threshold are all included.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top_overlap: fraction={fraction} must be in (0, 1]")
    x = torch.nan_to_num(a.detach().float().cpu()).reshape(a.shape[0], -1)
    y = torch.nan_to_num(b.detach().float().cpu()).reshape(b.shape[0], -1)
    k = max(1, round(fraction * x.shape[1]))
    top_x = x >= x.topk(k, dim=1).values[:, -1:]
    top_y = y >= y.topk(k, dim=1).values[:, -1:]
    union = (top_x | top_y).sum(1).float()
    return (top_x & top_y).sum(1).float() / union


@dataclass
class CurveResult:
    """Deletion and insertion curves.

    Attributes:
        fractions: share of voxels removed/inserted at each step ``(steps + 1,)``.
        deletion: target probability per sample and step ``(B, steps + 1)``.
        insertion: same for insertion.
        deletion_auc: area under each deletion curve ``(B,)`` (lower is better).
        insertion_auc: area under each insertion curve ``(B,)`` (higher is better).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor


def _blur(x: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """A strongly blurred copy ``(B, C, *S)``: average-pool by ``factor``, resize back."""
    size = x.shape[2:]
    k = [max(1, s // factor) for s in size]
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(size)]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    small = pool(x, kernel_size=k, stride=k, ceil_mode=True)
    return F.interpolate(small, size=size, mode=mode, align_corners=False)


def _probabilities(logits: torch.Tensor, targets: torch.Tensor, activation: str) -> torch.Tensor:
    p = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=-1)
    return p.gather(1, targets[:, None])[:, 0]


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    steps: int = 20,
    batch_size: int = 32,
    activation: str = "softmax",
) -> CurveResult:
    """Deletion and insertion curves of maps ``(B, *S)`` for inputs ``x`` ``(B, C, *S)``.

    Voxels are ranked by the map (all channels of a voxel together). Deletion sets the
    top ``f`` share to 0; insertion starts from a blurred copy of the input and puts
    back the top ``f`` share of the original. The model sees ``steps + 1`` versions
    per sample, ``batch_size`` at a time.

    Args:
        model: the classifier (taking a tensor ``(B, C, *S)``).
        x: inputs.
        maps: maps on the inputs' grid.
        targets: class per sample.
        steps: number of steps from 0 to 100 %.
        batch_size: versions per forward pass.
        activation: ``softmax`` (single-label) or ``sigmoid`` (multi-label).

    Returns:
        a :class:`CurveResult`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps: expected an integer >= 1, got {steps!r}")
    if activation not in ("softmax", "sigmoid"):
        raise ConfigError(f"activation: expected 'softmax' or 'sigmoid', got {activation!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = x.detach().float().to(device)
    maps = maps.detach().float().to(device)
    if tuple(maps.shape) != (x.shape[0], *x.shape[2:]):
        raise ConfigError(
            f"maps of shape {tuple(maps.shape)} do not fit inputs of shape {tuple(x.shape)}"
        )
    t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    b, n = x.shape[0], math.prod(x.shape[2:])
    fractions = torch.linspace(0, 1, steps + 1)
    order = torch.nan_to_num(maps).reshape(b, -1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=device).expand(b, n).contiguous())
    blurred = _blur(x)
    curves = {"deletion": torch.zeros(b, steps + 1), "insertion": torch.zeros(b, steps + 1)}
    model = model.eval()
    with torch.no_grad():
        for i in range(b):
            for kind in curves:
                versions = []
                for f in fractions:
                    keep = (rank[i] < round(float(f) * n)).reshape(1, *x.shape[2:])
                    if kind == "deletion":
                        versions.append(torch.where(keep, torch.zeros_like(x[i]), x[i]))
                    else:
                        versions.append(torch.where(keep, x[i], blurred[i]))
                stacked = torch.stack(versions)
                probs = []
                for s in range(0, stacked.shape[0], batch_size):
                    logits = model(stacked[s : s + batch_size]).float()
                    probs.append(_probabilities(logits, t[i].expand(logits.shape[0]), activation))
                curves[kind][i] = torch.cat(probs).cpu()

    def auc(curve: torch.Tensor) -> torch.Tensor:
        return torch.trapezoid(curve, fractions, dim=1)

    return CurveResult(
        fractions,
        curves["deletion"],
        curves["insertion"],
        auc(curves["deletion"]),
        auc(curves["insertion"]),
    )


def randomized_copy(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every weight re-initialised (the model is untouched).

    Modules with ``reset_parameters`` use it (their own initialisation; normalisation
    layers also reset their running statistics); the other parameters (class tokens,
    position embeddings, layer scales, ...) are drawn from N(0, 0.02²).
    """
    clone = copy.deepcopy(model)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        covered: set[int] = set()
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in module.parameters(recurse=False))
        with torch.no_grad():
            for p in clone.parameters():
                if id(p) not in covered:
                    p.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(generator_state)
    return clone.eval()


@dataclass
class RandomizationResult:
    """Outcome of the model-randomisation sanity check.

    Attributes:
        correlation: Spearman rank correlation of trained vs randomised maps per sample.
        mean: their mean.
        overlap: per sample, the overlap of the two maps' top 5 % of voxels
            (:func:`top_overlap`), reported beside the correlation; not part of the
            pass criterion.
        threshold: the check passes when ``mean < threshold``.
        passed: whether it passed.
        explanation_random: the randomised model's explanation.
    """

    correlation: torch.Tensor
    mean: float
    threshold: float
    passed: bool
    explanation_random: Explanation | None = field(default=None, repr=False)
    overlap: torch.Tensor | None = None


def randomization_check(
    model: nn.Module,
    x: torch.Tensor | Mapping[str, torch.Tensor],
    method: str,
    *,
    explanation: Explanation | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    **options: Any,
) -> RandomizationResult:
    """Model-parameter randomisation test (Adebayo et al. 2018).

    Args:
        model: the trained classifier.
        x: inputs.
        method: explanation method.
        explanation: the trained model's explanation of ``x`` (computed if None).
        threshold: largest mean rank correlation that still counts as "clearly
            different".
        seed: seed of the re-initialisation.
        **options: passed to :func:`~medcls.explain.api.explain` for both models; the
            target class is the trained model's (``target`` may be given).

    Returns:
        a :class:`RandomizationResult`. Maps of the two models are compared per
        modality and averaged.
    """
    from medcls.explain.api import explain

    trained = explanation if explanation is not None else explain(model, x, method, **options)
    random_model = randomized_copy(model, seed=seed)
    param = next(model.parameters(), None)
    if param is not None:
        random_model = random_model.to(param.device)
    opts = dict(options)
    opts["target"] = trained.targets
    randomised = explain(random_model, x, method, **opts)
    corr = torch.stack([spearman(trained.maps[m], randomised.maps[m]) for m in trained.maps]).mean(
        0
    )
    overlap = torch.stack(
        [top_overlap(trained.maps[m], randomised.maps[m]) for m in trained.maps]
    ).mean(0)
    mean = float(corr.mean())
    return RandomizationResult(
        corr, mean, float(threshold), mean < threshold, randomised, overlap=overlap
    )
