"""Class activation maps, written once for 2D and 3D (and token/channels-last layers).

:class:`BaseCAM` owns the pipeline: it hooks the target layer(s), runs the forward
pass, takes the gradient of the target class score with respect to the layer
output, reads the output as ``(B, C, *grid)`` (:mod:`medcls.explain.layers`),
applies the ReLU, resizes to the input grid (each cell's value on the cell's
centre, measured during the forward pass: :mod:`medcls.explain.centres`) and
averages layers. Each method overrides one thing: :meth:`BaseCAM.channel_weights` (Grad-CAM, Grad-CAM++,
XGrad-CAM, Score-CAM, Ablation-CAM) or :meth:`BaseCAM.layer_map` (HiRes-CAM,
Layer-CAM, Eigen-CAM).

Why not pytorch-grad-cam itself: its Score-CAM (``UpsamplingBilinear2d``) and
Ablation-CAM (``repeat`` of 4-D tensors) fail on 5-D inputs, every map makes a
NumPy round trip through the CPU and is resized with OpenCV/SciPy, and token or
channels-last layers need a hand-written reshape. The weight formulas here follow
the papers and are checked against pytorch-grad-cam's in the tests.

Everything runs on the model's device, in batches; the model's parameters and
their ``.grad`` are left untouched (gradients are taken with ``torch.autograd.grad``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from medcls.errors import ConfigError, ModelError
from medcls.explain.base import Explainer, TargetLike, normalize_maps
from medcls.explain.centres import UPSAMPLE_MODES, CellCentres, CentreTracker, resize_to_input
from medcls.explain.layers import (
    LayerSpec,
    LayerView,
    first_tensor,
    read_layer_output,
    resolve_layers,
)

__all__ = [
    "AblationCAM",
    "BaseCAM",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "LayerContext",
    "ScoreCAM",
    "XGradCAM",
]

_EPS = 1e-7


def _spatial_axes(t: torch.Tensor) -> tuple[int, ...]:
    """The grid axes of a channels-first tensor ``(B, C, *grid)``."""
    return tuple(range(2, t.ndim))


def _expand_weights(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` -> ``(B, C, 1, ...)`` broadcastable against ``like`` ``(B, C, *grid)``."""
    return weights.reshape(*weights.shape, *(1,) * (like.ndim - 2))


def _replace_first(output: Any, tensor: torch.Tensor) -> Any:
    """A module output with its (first) tensor replaced by ``tensor``."""
    if isinstance(output, torch.Tensor):
        return tensor
    return (
        type(output)([tensor, *output[1:]]) if isinstance(output, list) else (tensor, *output[1:])
    )


@dataclass
class LayerContext:
    """What a CAM method may need besides the activations and gradients of one layer.

    Attributes:
        explainer: the running explainer (for ``forward`` and ``batch_size``).
        inputs: the inputs ``(b, C_i, *S)``.
        targets: the target class per sample ``(b,)``.
        logits: the model output for ``inputs`` ``(b, K)``.
        spec: the layer.
        view: how the layer's output is laid out.
        module: the layer's module.
        centres: where the layer's cells lie on the input grid, as measured during
            the forward pass (None: not measured; the cells are assumed to tile the
            input, as a patch embedding's do).
    """

    explainer: BaseCAM
    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    logits: torch.Tensor
    spec: LayerSpec
    view: LayerView
    module: nn.Module
    centres: CellCentres | None = None

    @property
    def spatial_size(self) -> tuple[int, ...]:
        return tuple(self.inputs[0].shape[2:])


class BaseCAM(Explainer):
    """A class activation map of the target layer(s); see the module docstring.

    Args:
        model: the classifier (follows the medcls model contract for the default layer).
        layer: module name(s) to explain (a list, or one comma-separated string);
            None / ``"auto"``: the contract's CAM layer, moved to an earlier stage when
            its grid has fewer than ``min_cells`` cells; ``"contract"``: the contract's
            layer as is.
        min_cells: fewest grid cells the automatic layer choice accepts (default 7
            per axis: 49 in 2D, 343 in 3D).
        upsample: how the layer's map is resized to the input, each cell's value on
            the cell's centre as measured in the forward pass (see
            :mod:`medcls.explain.centres`): ``"bspline"`` (default; the peak can lie
            between cell centres) or ``"linear"`` (bilinear/trilinear, the classic
            resize; the peak is always on a cell centre).
        modalities: see :class:`~medcls.explain.base.Explainer`.
        batch_size: samples per pass (forward passes per pass for Score-/Ablation-CAM).
    """

    uses_gradients: ClassVar[bool] = True
    shared_map: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str | Sequence[str] | None = None,
        min_cells: int | None = None,
        upsample: str = "bspline",
        modalities: Sequence[str] | Mapping[str, int] | None = None,
        batch_size: int = 16,
    ) -> None:
        super().__init__(model, modalities=modalities, batch_size=batch_size)
        if min_cells is not None and (
            isinstance(min_cells, bool) or not isinstance(min_cells, int) or min_cells < 1
        ):
            raise ConfigError(f"min_cells: expected None or an integer >= 1, got {min_cells!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample: expected one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
        self.layer = layer
        self.min_cells = min_cells
        self.upsample = upsample

    # --------------------------------------------------------- method hooks
    def channel_weights(
        self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        """Weight of each channel ``(B, C)`` from activations and gradients ``(B, C, *grid)``."""
        raise NotImplementedError

    def layer_map(self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """The map of one layer ``(B, *grid)`` before the ReLU: weighted sum of channels."""
        weights = self.channel_weights(acts, grads, ctx)
        return (_expand_weights(weights, acts) * acts).sum(dim=1)

    # --------------------------------------------------------------- driver
    def _explain_batch(
        self, inputs: tuple[torch.Tensor, ...], target: TargetLike
    ) -> dict[str, Any]:
        spatial = tuple(inputs[0].shape[2:])
        specs = resolve_layers(self.model, self.layer, spatial, min_cells=self.min_cells)
        modules = dict(self.model.named_modules())
        captured: dict[str, torch.Tensor] = {}
        calls: dict[str, int] = {}

        def make_hook(name: str):
            def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
                tensor = first_tensor(output)
                if tensor is None:
                    return None
                captured[name] = tensor
                calls[name] = calls.get(name, 0) + 1
                # later in-place ops then change the copy, not the captured activation
                return _replace_first(output, tensor.clone())

            return hook

        names = list(dict.fromkeys(s.module for s in specs))
        handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
        tracker = CentreTracker()
        try:
            with torch.set_grad_enabled(self.uses_gradients), tracker:
                ins = tuple(t.requires_grad_(self.uses_gradients) for t in inputs)
                for t in ins:
                    tracker.register_input(t)
                logits = self.forward(*ins)
        finally:
            for h in handles:
                h.remove()
        if logits.ndim != 2:
            raise ModelError(
                f"explain: the model returned shape {tuple(logits.shape)}, expected (B, num_classes)"
            )
        targets = self.resolve_targets(target, logits)
        notes: list[str] = []
        missing = [n for n in names if n not in captured]
        if missing:
            raise ModelError(
                f"layer {missing[0]!r} did not run (or returned no tensor) in the forward pass; "
                "choose another --layer"
            )
        notes += [
            f"layer {n!r} ran {c} times in one forward pass; the last call is explained"
            for n, c in calls.items()
            if c > 1
        ]
        grads: dict[str, torch.Tensor | None] = dict.fromkeys(names)
        if self.uses_gradients:
            score = logits.gather(1, targets[:, None]).sum()
            got = torch.autograd.grad(score, [captured[n] for n in names], allow_unused=True)
            grads = dict(zip(names, got))
        maps_by_modality: dict[str | None, list[torch.Tensor]] = {}
        for spec in specs:
            act = captured[spec.module].detach()
            view = read_layer_output(
                act, spatial, hint=spec.hint, model=self.model, name=spec.module
            )
            acts = view.to_channels_first(act).float()
            grad = grads[spec.module]
            if grad is None:
                grad = torch.zeros_like(act)
            g = view.to_channels_first(grad.detach()).float()
            if self.uses_gradients and not bool(g.abs().amax() > 0):
                notes.append(
                    f"layer {spec.module!r} received no gradient from the class score (a "
                    "Transformer's last block when the head reads only the class token?); "
                    "choose an earlier --layer"
                )
            centres = tracker.centres(captured[spec.module], view.grid_axes(act.ndim))
            ctx = LayerContext(
                self, inputs, targets, logits.detach(), spec, view, modules[spec.module], centres
            )
            cam = torch.relu(self.layer_map(acts, g, ctx))
            maps_by_modality.setdefault(spec.modality, []).append(
                resize_to_input(cam, spatial, centres, mode=self.upsample)
            )
        maps = self._combine(maps_by_modality)
        return {
            "maps": maps,
            "logits": logits.detach(),
            "targets": targets,
            "layers": tuple(s.module for s in specs),
            "notes": notes,
            "shared": set(maps_by_modality) == {None},
        }

    def _combine(
        self, by_modality: dict[str | None, list[torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        def mean_of(maps: list[torch.Tensor]) -> torch.Tensor:
            if len(maps) == 1:
                return maps[0]
            return torch.stack([normalize_maps(m) for m in maps]).mean(0)

        names = self._spec.names
        if set(by_modality) == {None}:
            return self._shared(mean_of(by_modality[None]))
        shared = by_modality.get(None, [])
        out = {}
        for name in names:
            own = by_modality.get(name, [])
            if not own and not shared:
                raise ModelError(f"no CAM layer covers modality {name!r}")
            out[name] = mean_of(own + shared)
        return out


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017): weights are the mean gradient per channel."""

    method = "gradcam"

    def channel_weights(
        self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        return grads.mean(dim=_spatial_axes(grads))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018), with the exponential-score closed form
    (its Eq. 19): ``alpha = g² / (2 g² + sum(A) g³)``, weights ``sum(alpha relu(g))``."""

    method = "gradcam++"

    def channel_weights(
        self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        axes = _spatial_axes(grads)
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_acts = acts.sum(dim=axes, keepdim=True)
        alpha = g2 / (2 * g2 + sum_acts * g3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (alpha * torch.relu(grads)).sum(dim=axes)


class XGradCAM(BaseCAM):
    """XGrad-CAM (Fu et al., BMVC 2020): gradients weighted by normalised activations."""

    method = "xgradcam"

    def channel_weights(
        self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        axes = _spatial_axes(grads)
        sum_acts = acts.sum(dim=axes, keepdim=True)
        return (grads * acts / (sum_acts + _EPS)).sum(dim=axes)


class HiResCAM(BaseCAM):
    """HiRes-CAM (Draelos & Carin, 2020): element-wise gradient x activation, summed over channels."""

    method = "hirescam"

    def layer_map(self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return (grads * acts).sum(dim=1)


class LayerCAM(BaseCAM):
    """Layer-CAM (Jiang et al., IEEE TIP 2021): positive gradients x activation per cell."""

    method = "layercam"

    def layer_map(self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        return (torch.relu(grads) * acts).sum(dim=1)


class EigenCAM(BaseCAM):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): the activations projected on their first
    principal component. Class-agnostic; needs no gradient.

    The sign of a principal component is arbitrary; it is chosen so that the map
    correlates positively with the mean activation over channels.
    """

    method = "eigencam"
    uses_gradients = False

    def layer_map(self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        b, c = acts.shape[:2]
        flat = acts.reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        centred = flat - flat.mean(dim=1, keepdim=True)
        if centred.shape[1] < 2:
            return torch.zeros(b, *acts.shape[2:], device=acts.device)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        proj = (centred @ vh[:, 0, :, None])[..., 0]  # (B, N)
        reference = flat.mean(dim=2)
        agreement = (
            (proj - proj.mean(1, keepdim=True)) * (reference - reference.mean(1, keepdim=True))
        ).sum(1)
        sign = torch.where(agreement < 0, -1.0, 1.0).to(proj.dtype)
        return (proj * sign[:, None]).reshape(b, *acts.shape[2:])


class _PerChannelCAM(BaseCAM):
    """Score-CAM and Ablation-CAM: one forward pass per (sample, channel).

    Args:
        max_channels: score only this many channels per sample (those with the
            largest mean activation; the others get weight 0). None: all channels.
        **kwargs: see :class:`BaseCAM`.
    """

    uses_gradients = False

    def __init__(self, model: nn.Module, *, max_channels: int | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if max_channels is not None and (
            isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1
        ):
            raise ConfigError(
                f"max_channels: expected None or an integer >= 1, got {max_channels!r}"
            )
        self.max_channels = max_channels

    def _channels(self, acts: torch.Tensor) -> torch.Tensor:
        """Channel indices to score per sample ``(B, k)``."""
        b, c = acts.shape[:2]
        if self.max_channels is None or self.max_channels >= c:
            return torch.arange(c, device=acts.device).expand(b, c)
        strength = acts.reshape(b, c, -1).mean(-1)
        return strength.topk(self.max_channels, dim=1).indices


class ScoreCAM(_PerChannelCAM):
    """Score-CAM (Wang et al., CVPR-W 2020): each channel, upsampled and scaled to
    ``[0, 1]``, masks the input; the channel's weight is the softmax over channels of
    the target score of its masked input."""

    method = "scorecam"

    def channel_weights(
        self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        b, c = acts.shape[:2]
        chosen = self._channels(acts)
        scores = torch.full((b, c), float("-inf"), device=acts.device)
        step = self.batch_size
        with torch.no_grad():
            for i in range(b):
                for start in range(0, chosen.shape[1], step):
                    idx = chosen[i, start : start + step]
                    masks = normalize_maps(
                        resize_to_input(
                            acts[i, idx], ctx.spatial_size, ctx.centres, mode=self.upsample
                        )
                    )
                    masked = tuple(x[i : i + 1] * masks[:, None] for x in ctx.inputs)
                    out = self.forward(*masked)
                    scores[i, idx] = out[:, ctx.targets[i]].float()
        return torch.softmax(scores, dim=1)


class AblationCAM(_PerChannelCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): a channel's weight is the drop of the
    target score when that channel of the layer is set to zero, ``(y - y_k) / |y|``
    (``|y|``: a negative score does not flip every weight's sign)."""

    method = "ablationcam"

    def channel_weights(
        self, acts: torch.Tensor, grads: torch.Tensor, ctx: LayerContext
    ) -> torch.Tensor:
        b, c = acts.shape[:2]
        chosen = self._channels(acts)
        drops = torch.zeros(b, c, device=acts.device)
        base = ctx.logits.gather(1, ctx.targets[:, None])[:, 0].float()
        scale_holder: dict[str, torch.Tensor] = {}

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            tensor = first_tensor(output)
            if tensor is None:
                return None
            return _replace_first(output, ctx.view.scale_channels(tensor, scale_holder["scale"]))

        handle = ctx.module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                for i in range(b):
                    for start in range(0, chosen.shape[1], self.batch_size):
                        idx = chosen[i, start : start + self.batch_size]
                        k = idx.numel()
                        scale = torch.ones(k, c, device=acts.device)
                        scale[torch.arange(k, device=acts.device), idx] = 0.0
                        scale_holder["scale"] = scale
                        repeated = tuple(
                            x[i : i + 1].expand(k, *x.shape[1:]).contiguous() for x in ctx.inputs
                        )
                        out = self.forward(*repeated)
                        drops[i, idx] = base[i] - out[:, ctx.targets[i]].float()
        finally:
            handle.remove()
        return drops / (base.abs()[:, None] + _EPS)
