"""The explainer base class: inputs, targets, batching, scaling and resizing of maps.

Every explanation method is an :class:`Explainer` that overrides one method
(:meth:`Explainer._explain_batch`; CAM methods override a narrower hook in
:class:`medcls.explain.cam.BaseCAM`). The base class owns everything else:

- inputs: one tensor ``(B, C, *spatial)`` (modalities concatenated along channels,
  split back into one map per modality by ``modalities``), or a dict of modality
  tensors for models that take one (those with a ``modalities`` attribute);
- targets: the predicted class by default, or a class per sample;
- batching (``batch_size`` samples per pass), the device (the model's);
- resizing with the interpolation mode of the number of spatial axes
  (``linear``/``bilinear``/``trilinear``, derived from the tensor's ``ndim``) and
  scaling of every map to ``[0, 1]`` per sample, NaN-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ConfigError, ModelError

__all__ = [
    "Explainer",
    "Explanation",
    "InputSpec",
    "normalize_maps",
    "resize_maps",
]

TargetLike = int | Sequence[int] | torch.Tensor | None
_RELATIVE_SPREAD = 1e-5


def _interp_mode(spatial_dims: int) -> str:
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    if spatial_dims not in modes:
        raise ModelError(f"maps with {spatial_dims} spatial axes cannot be resized (expected 1-3)")
    return modes[spatial_dims]


def resize_maps(maps: torch.Tensor, size: Sequence[int], *, nearest: bool = False) -> torch.Tensor:
    """Resizes maps ``(B, *grid)`` to ``(B, *size)``.

    The mode follows the number of spatial axes (``linear``, ``bilinear``,
    ``trilinear``; ``nearest`` for masks), so 1D, 2D and 3D share one code path.
    The cells of the grid are taken to tile the output (``align_corners=False``):
    right for resampling an image between grids of the same extent. A CAM is
    resized with :func:`medcls.explain.centres.resize_to_input` instead, on its
    layer's measured cell centres.
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    x = maps[:, None].float()
    if nearest:
        out = F.interpolate(x, size=size, mode="nearest")
    else:
        out = F.interpolate(x, size=size, mode=_interp_mode(len(size)), align_corners=False)
    return out[:, 0]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scales each map of ``(B, *spatial)`` to ``[0, 1]`` (min to 0, max to 1).

    NaN and infinite values become 0 first. A map whose spread is below ``1e-5`` of
    its largest magnitude (constant up to rounding) becomes all zeros; tiny but
    structured maps (gradients of 1e-9 in a randomly initialised model) are kept.
    """
    maps = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    span = high - low
    scale = torch.maximum(high.abs(), low.abs())
    varies = (span > _RELATIVE_SPREAD * scale) & (span > 0)
    scaled = torch.where(
        varies, (flat - low) / torch.where(varies, span, 1.0), torch.zeros_like(flat)
    )
    return scaled.reshape(maps.shape)


@dataclass
class Explanation:
    """Maps of one explanation method for a batch.

    Attributes:
        method: the canonical method name.
        maps: modality -> maps ``(B, *spatial)`` scaled to ``[0, 1]`` per sample, on
            the grid of the input that was explained.
        raw: modality -> the same maps before scaling (CAM: after the ReLU; gradient
            maps: summed absolute attributions), for comparisons across samples.
        targets: the explained class of each sample ``(B,)``.
        logits: the model's output ``(B, num_classes)``.
        layers: the hooked layers (CAM methods), else empty.
        shared: True if every modality has the same map (a CAM of a layer that sees
            all modalities, or occlusion of all channels at once).
        notes: findings worth telling the user (e.g. a layer that received no
            gradient), one sentence each.
    """

    method: str
    maps: dict[str, torch.Tensor]
    raw: dict[str, torch.Tensor]
    targets: torch.Tensor
    logits: torch.Tensor
    layers: tuple[str, ...] = ()
    shared: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        """The modality names, in input order."""
        return list(self.maps)

    def map(self, modality: str | None = None) -> torch.Tensor:
        """Maps ``(B, *spatial)`` of ``modality`` (default: the mean over modalities)."""
        if modality is None:
            if len(self.maps) == 1 or self.shared:
                return next(iter(self.maps.values()))
            return torch.stack(list(self.maps.values())).mean(0)
        if modality not in self.maps:
            raise ConfigError(f"modality {modality!r} not explained; have {self.modalities}")
        return self.maps[modality]

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass(frozen=True)
class InputSpec:
    """How the model's input is split into modalities.

    Attributes:
        names: modality names, in input order.
        channels: channels of each modality (for a concatenated tensor input).
        as_dict: True if the model takes a dict ``{modality: tensor}``.
    """

    names: tuple[str, ...]
    channels: tuple[int, ...]
    as_dict: bool = False


def _input_spec(
    model: nn.Module, x: torch.Tensor | Mapping[str, torch.Tensor], modalities: Any
) -> InputSpec:
    if isinstance(x, Mapping):
        names = tuple(getattr(model, "modalities", None) or x.keys())
        missing = [n for n in names if n not in x]
        if missing:
            raise ConfigError(
                f"inputs: modality {missing[0]!r} missing; the model takes {list(names)}"
            )
        return InputSpec(names, tuple(int(x[n].shape[1]) for n in names), as_dict=True)
    if not isinstance(x, torch.Tensor):
        raise ConfigError(
            f"inputs: expected a tensor (B, C, *spatial) or a dict, got {type(x).__name__}"
        )
    channels = int(x.shape[1])
    if modalities is None:
        return InputSpec(("image",), (channels,))
    if isinstance(modalities, Mapping):
        names, counts = tuple(modalities), tuple(int(v) for v in modalities.values())
    else:
        names = tuple(str(m) for m in modalities)
        if not names or channels % len(names):
            raise ConfigError(
                f"modalities: {len(names)} modalities {list(names)} do not split the input's "
                f"{channels} channels evenly; pass a mapping modality -> channels"
            )
        counts = (channels // len(names),) * len(names)
    if sum(counts) != channels:
        raise ConfigError(
            f"modalities: {dict(zip(names, counts))} add up to {sum(counts)} channels, "
            f"but the input has {channels}"
        )
    return InputSpec(names, counts)


class Explainer:
    """Base class of every explanation method.

    Args:
        model: a classifier ``(B, C, *spatial) -> (B, num_classes)`` (or a dict of
            modality tensors for models with a ``modalities`` attribute). It is put
            in eval mode; its parameters and their ``.grad`` are not changed.
        modalities: names of the modalities concatenated along the input's channels
            (equal split), or a mapping modality -> channels. Default: one
            modality called ``image``.
        batch_size: samples explained per pass (methods that run many forward
            passes per sample use it for those passes instead).

    Call it as ``explainer(x, target=None)`` -> :class:`Explanation`.
    """

    method: ClassVar[str] = ""
    #: True if the method's map is one spatial map for all modalities
    shared_map: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        *,
        modalities: Sequence[str] | Mapping[str, int] | None = None,
        batch_size: int = 16,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError(f"explain: expected a torch.nn.Module, got {type(model).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.model = model.eval()
        self.modalities = modalities
        self.batch_size = batch_size

    # ----------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter (CPU for parameter-free models)."""
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Runs the model on the packed inputs (one tensor per modality for dict models)."""
        spec = self._spec
        if spec.as_dict:
            return self.model(dict(zip(spec.names, inputs)))
        return self.model(inputs[0])

    def split_channels(self, attributions: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-input attributions ``(B, C_i, *S)`` -> modality -> ``(B, C_m, *S)``."""
        spec = self._spec
        if spec.as_dict:
            return dict(zip(spec.names, attributions))
        parts = torch.split(attributions[0], list(spec.channels), dim=1)
        return dict(zip(spec.names, parts))

    @staticmethod
    def resolve_targets(target: TargetLike, logits: torch.Tensor) -> torch.Tensor:
        """Class index per sample ``(B,)``: the argmax of ``logits`` when ``target`` is None."""
        batch, num_classes = logits.shape[0], logits.shape[-1]
        if target is None:
            return logits.detach().argmax(dim=-1)
        t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ConfigError(f"target: {t.numel()} classes given for a batch of {batch}")
        bad = t[(t < 0) | (t >= num_classes)]
        if bad.numel():
            raise ConfigError(
                f"target: class index {int(bad[0])} out of range for a model with "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
        return t.clone()

    def _pack(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self._spec = _input_spec(self.model, x, self.modalities)
        tensors = [x[n] for n in self._spec.names] if self._spec.as_dict else [x]
        shapes = {tuple(t.shape[2:]) for t in tensors}
        if len(shapes) != 1 or tensors[0].ndim < 3:
            raise ConfigError(
                "inputs: expected tensors (B, C, *spatial) sharing one spatial grid, got "
                f"shapes {[tuple(t.shape) for t in tensors]}"
            )
        device = self.device
        return tuple(t.detach().to(device=device, dtype=torch.float32) for t in tensors)

    # ------------------------------------------------------------------ driver
    def __call__(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], target: TargetLike = None
    ) -> Explanation:
        """Explains a batch.

        Args:
            x: ``(B, C, *spatial)`` or a dict of modality tensors ``(B, C_m, *spatial)``.
            target: class to explain: None (the predicted class), one index for all
                samples, or one per sample.

        Returns:
            an :class:`Explanation` whose maps have the input's spatial shape.
        """
        inputs = self._pack(x)
        batch = inputs[0].shape[0]
        if target is not None and not isinstance(target, int):
            target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
            if target.numel() == 1:
                target = int(target)
        raw: dict[str, list[torch.Tensor]] = {}
        logits, targets, notes, layers = [], [], [], ()
        shared = self.shared_map
        for start in range(0, batch, self.batch_size):
            chunk = tuple(t[start : start + self.batch_size] for t in inputs)
            t = (
                target
                if target is None or isinstance(target, int)
                else target[start : start + self.batch_size]
            )
            out = self._explain_batch(chunk, t)
            for name, m in out["maps"].items():
                raw.setdefault(name, []).append(m.detach().float().cpu())
            logits.append(out["logits"].detach().float().cpu())
            targets.append(out["targets"].detach().cpu())
            notes += [n for n in out.get("notes", []) if n not in notes]
            layers = out.get("layers", layers)
            shared = shared and bool(out.get("shared", True))
        raw_maps = {n: torch.nan_to_num(torch.cat(v)) for n, v in raw.items()}
        for name, m in raw_maps.items():
            if not m.abs().amax(dim=tuple(range(1, m.ndim))).gt(0).all():
                note = (
                    f"{self.method}: some {name} maps are zero everywhere (nothing in the "
                    "input raises the target score at this layer)"
                )
                if note not in notes:
                    notes.append(note)
        return Explanation(
            method=self.method,
            maps={n: normalize_maps(m) for n, m in raw_maps.items()},
            raw=raw_maps,
            targets=torch.cat(targets),
            logits=torch.cat(logits),
            layers=tuple(layers),
            shared=shared and len(raw_maps) > 1,
            notes=notes,
        )

    def _explain_batch(
        self, inputs: tuple[torch.Tensor, ...], target: TargetLike
    ) -> dict[str, Any]:
        """Explains one chunk; the one method every explainer overrides.

        Args:
            inputs: one tensor per input ``(b, C_i, *S)`` on the model's device.
            target: None, one class index, or ``(b,)`` class indices.

        Returns:
            ``{"maps": modality -> (b, *S) unscaled maps, "logits": (b, K),
            "targets": (b,), "layers": names, "notes": [...]}``, and optionally
            ``"shared": False`` when a method whose maps are normally shared by all
            modalities gave each its own (CAMs of one branch per modality).
        """
        raise NotImplementedError

    # -------------------------------------------------------------- utilities
    def _logits_no_grad(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(*inputs)

    def _shared(self, cam: torch.Tensor) -> dict[str, torch.Tensor]:
        """One spatial map for every modality."""
        return dict.fromkeys(self._spec.names, cam)


def spatial_numel(shape: Sequence[int]) -> int:
    """Number of cells of a spatial shape."""
    return math.prod(int(s) for s in shape)
