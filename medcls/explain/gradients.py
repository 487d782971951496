"""Gradient and perturbation maps on the input's own grid, one map per modality.

captum does the attribution for vanilla gradients (``Saliency``), SmoothGrad
(``NoiseTunnel``), integrated gradients and occlusion: its implementations take
inputs of any rank, so 5-D volumes work as they are. Guided backpropagation is
written here: captum's only changes ``nn.ReLU`` modules, so on models with ReLU6,
SiLU, GELU, ... it silently returns plain gradients.

Each attribution ``(B, C, *S)`` becomes one map per modality: the sum of absolute
values over the modality's channels (occlusion: the positive score drop).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medcls.errors import ConfigError
from medcls.explain.base import Explainer, TargetLike

__all__ = [
    "GradientExplainer",
    "GuidedBackprop",
    "IntegratedGradients",
    "Occlusion",
    "SmoothGrad",
    "VanillaGradients",
    "guided_activation_types",
]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


class GradientExplainer(Explainer):
    """Base of the input-attribution methods: override :meth:`attributions` only."""

    def attributions(
        self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Attributions with the shape of each input ``(b, C_i, *S)``."""
        raise NotImplementedError

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        """One modality's attribution ``(b, C_m, *S)`` -> map ``(b, *S)``."""
        return attribution.abs().sum(dim=1)

    def _explain_batch(
        self, inputs: tuple[torch.Tensor, ...], target: TargetLike
    ) -> dict[str, Any]:
        logits = self._logits_no_grad(inputs)
        targets = self.resolve_targets(target, logits)
        with warnings.catch_warnings():
            # captum warns that inputs did not require gradients / about hooks
            warnings.simplefilter("ignore", UserWarning)
            attrs = self.attributions(tuple(t.detach() for t in inputs), targets)
        per_modality = self.split_channels([a.detach().float() for a in attrs])
        return {
            "maps": {name: self.reduce(a) for name, a in per_modality.items()},
            "logits": logits,
            "targets": targets,
        }

    def _captum_target(self, targets: torch.Tensor) -> list[int]:
        return [int(t) for t in targets]


class VanillaGradients(GradientExplainer):
    """Vanilla gradients (Simonyan et al., 2014): ``|d score / d input|`` (captum ``Saliency``)."""

    method = "gradients"

    def attributions(
        self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from captum.attr import Saliency

        out = Saliency(self.forward).attribute(
            inputs, target=self._captum_target(targets), abs=True
        )
        return tuple(out)


class SmoothGrad(GradientExplainer):
    """SmoothGrad (Smilkov et al., 2017): ``|gradient|`` averaged over noisy copies.

    Args:
        samples: noisy copies per input.
        noise: noise standard deviation as a fraction of each input's value range.
        **kwargs: see :class:`~medcls.explain.base.Explainer`.
    """

    method = "smoothgrad"

    def __init__(
        self, model: nn.Module, *, samples: int = 16, noise: float = 0.15, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.samples = _positive_int(samples, "samples")
        if not 0 < float(noise) < 10:
            raise ConfigError(
                f"noise: expected a fraction of the value range in (0, 10), got {noise!r}"
            )
        self.noise = float(noise)

    def attributions(
        self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from captum.attr import NoiseTunnel, Saliency

        stdevs = tuple(max(float(x.max() - x.min()), 1e-6) * self.noise for x in inputs)
        per_pass = max(1, self.batch_size // max(1, inputs[0].shape[0]))
        out = NoiseTunnel(Saliency(self.forward)).attribute(
            inputs,
            nt_type="smoothgrad",
            nt_samples=self.samples,
            nt_samples_batch_size=min(per_pass, self.samples),
            stdevs=stdevs,
            target=self._captum_target(targets),
            abs=True,
        )
        return tuple(out)


class IntegratedGradients(GradientExplainer):
    """Integrated gradients (Sundararajan et al., 2017) from a zero baseline (captum).

    Args:
        steps: integration steps (Gauss-Legendre).
        **kwargs: see :class:`~medcls.explain.base.Explainer`.
    """

    method = "integrated-gradients"

    def __init__(self, model: nn.Module, *, steps: int = 32, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.steps = _positive_int(steps, "steps")

    def attributions(
        self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from captum.attr import IntegratedGradients as CaptumIG

        out = CaptumIG(self.forward).attribute(
            inputs,
            baselines=tuple(torch.zeros_like(x) for x in inputs),
            target=self._captum_target(targets),
            n_steps=self.steps,
            internal_batch_size=max(self.batch_size, inputs[0].shape[0]),
        )
        return tuple(out)


# activation modules through which guided backpropagation lets only positive gradients
_GUIDED_NAMES = frozenset(
    {
        "relu",
        "relu6",
        "leakyrelu",
        "prelu",
        "rrelu",
        "elu",
        "celu",
        "selu",
        "gelu",
        "gelutanh",
        "quickgelu",
        "silu",
        "swish",
        "swishme",
        "hardswish",
        "hardswishme",
        "mish",
        "mishme",
        "softplus",
    }
)


def guided_activation_types(model: nn.Module) -> list[str]:
    """Names of the activation-module classes of ``model`` that guided backprop modifies."""
    return sorted(
        {type(m).__name__ for m in model.modules() if type(m).__name__.lower() in _GUIDED_NAMES}
    )


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class GuidedBackprop(GradientExplainer):
    """Guided backpropagation (Springenberg et al., ICLR-W 2015).

    At every activation module (ReLU and its smooth relatives: ReLU6, LeakyReLU,
    ELU, GELU, SiLU/Swish, Hardswish, Mish, ...) the gradient is clamped to its
    positive part *after* the activation; together with the activation's own
    derivative this is exactly guided backprop for ReLU. Activations called as
    functions (``F.relu``) cannot be hooked and pass plain gradients.
    """

    method = "guided-backprop"

    def attributions(
        self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                return _PositiveGradient.apply(output)
            return None

        handles = [
            m.register_forward_hook(hook)
            for m in self.model.modules()
            if type(m).__name__.lower() in _GUIDED_NAMES
        ]
        try:
            with torch.enable_grad():
                ins = tuple(x.detach().requires_grad_(True) for x in inputs)
                logits = self.forward(*ins)
                score = logits.gather(1, targets[:, None].to(logits.device)).sum()
                grads = torch.autograd.grad(score, ins, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads))

    def _explain_batch(
        self, inputs: tuple[torch.Tensor, ...], target: TargetLike
    ) -> dict[str, Any]:
        out = super()._explain_batch(inputs, target)
        if not guided_activation_types(self.model):
            out["notes"] = [
                "guided-backprop: the model has no activation modules to guide; the map "
                "equals vanilla gradients"
            ]
        return out


class Occlusion(GradientExplainer):
    """Occlusion sensitivity (Zeiler & Fergus, ECCV 2014) with captum's ``Occlusion``.

    A window of zeros slides over the input; each voxel's value is the mean drop of
    the target score over the windows covering it. Each modality is occluded on its
    own (per-modality maps); its map is the positive part of the drop.

    Args:
        window: window size per spatial axis (one int for all); default: 1/8 of the
            input per axis (at least 1).
        stride: step per axis; default: the window (non-overlapping).
        per_pass: occluded copies of the input per forward pass.
        **kwargs: see :class:`~medcls.explain.base.Explainer`.
    """

    method = "occlusion"

    def __init__(
        self,
        model: nn.Module,
        *,
        window: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        per_pass: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.window = window
        self.stride = stride
        self.per_pass = _positive_int(per_pass, "per_pass")

    @staticmethod
    def _per_axis(
        value: int | Sequence[int] | None, size: Sequence[int], name: str
    ) -> tuple[int, ...] | None:
        if value is None:
            return None
        values = (value,) * len(size) if isinstance(value, int) else tuple(value)
        if len(values) != len(size) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
        ):
            raise ConfigError(
                f"{name}: expected one integer >= 1 or {len(size)} of them, got {value!r}"
            )
        return tuple(min(v, s) for v, s in zip(values, size))

    def attributions(
        self, inputs: tuple[torch.Tensor, ...], targets: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from captum.attr import Occlusion as CaptumOcclusion

        size = tuple(inputs[0].shape[2:])
        window = self._per_axis(self.window, size, "window") or tuple(max(1, s // 8) for s in size)
        stride = self._per_axis(self.stride, size, "stride") or window
        per_pass = max(1, self.per_pass // max(1, inputs[0].shape[0]))
        out = CaptumOcclusion(self.forward).attribute(
            inputs,
            sliding_window_shapes=tuple((1, *window) for _ in inputs),
            strides=tuple((1, *stride) for _ in inputs),
            baselines=0.0,
            target=self._captum_target(targets),
            perturbations_per_eval=per_pass,
        )
        return tuple(out)

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return torch.relu(attribution).sum(dim=1)
