"""Target layers for class activation maps, and reading their output as a grid.

The default layer comes from the model contract (``model.cam_layer``, see
:mod:`medcls.models.contract`), so no user has to name one. Two things are decided
here, from the model and the *actual* input, never from a hard-coded grid:

- **Which layer.** The contract's layer, unless its grid at the given input size has
  fewer than ``min_cells`` cells (default: 7 per axis, the 7x7 map of classic
  Grad-CAM at 224², so 49 in 2D and 7x7x7 = 343 in 3D; a 3D CNN's last map is
  2x2x2 at 64³ and 1 cell at 32³): then the deepest feature stage whose grid has at
  least ``min_cells`` cells.
- **How to read its output.** A layer returns a channels-first map
  ``(B, C, *grid)``, a channels-last map ``(B, *grid, C)`` (Swin, Hiera) or tokens
  ``(B, N, C)``. :func:`read_layer_output` turns any of them into
  ``(B, C, *grid)``: prefix (class, register, distillation) tokens are dropped and
  the grid is derived from the number of patch tokens and the input's size. For a
  layer the contract does not describe (one named by the user), the layout is
  inferred from the output shape and the input size.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import CamLayer

__all__ = [
    "DEFAULT_CELLS_PER_AXIS",
    "LayerSpec",
    "LayerView",
    "default_layers",
    "default_min_cells",
    "read_layer_output",
    "resolve_layers",
    "token_grid",
]

#: the default layer is moved to an earlier stage when its grid has fewer cells than
#: this many per axis, to the power of the number of axes: the 7x7 map of classic
#: Grad-CAM (ResNet at 224²); 7x7x7 in 3D, where a 4x4x4 grid (64 cells) is as coarse
#: along each axis as a 4x4 map in 2D
DEFAULT_CELLS_PER_AXIS = 7
_MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class LayerSpec:
    """A module whose output an explainer hooks.

    Attributes:
        module: module name, as in ``model.named_modules()``.
        hint: the contract's description of the module's output, when known; the
            layout is inferred from the output shape otherwise.
        modality: the modality whose branch the layer belongs to (multimodal models
            with one branch per modality), or None for a layer that sees all inputs.
    """

    module: str
    hint: CamLayer | None = None
    modality: str | None = None


@dataclass(frozen=True)
class LayerView:
    """How one layer output of one forward pass is laid out.

    Attributes:
        layout: ``"channels_first"``, ``"channels_last"`` or ``"tokens"``.
        grid: the spatial grid of the layer (tokens: the patch-token grid).
        num_prefix_tokens: tokens before the patch tokens (``"tokens"`` only).
    """

    layout: str
    grid: tuple[int, ...]
    num_prefix_tokens: int = 0

    def grid_axes(self, ndim: int) -> tuple[int, ...]:
        """The axes of the layer's native output (of ``ndim`` axes) that form the grid
        (none for tokens, whose grid is a reshape)."""
        if self.layout == "channels_first":
            return tuple(range(2, ndim))
        if self.layout == "channels_last":
            return tuple(range(1, ndim - 1))
        return ()

    def to_channels_first(self, out: torch.Tensor) -> torch.Tensor:
        """The layer output as ``(B, C, *grid)``."""
        if self.layout == "channels_first":
            return out
        if self.layout == "channels_last":
            return out.movedim(-1, 1)
        patches = out[:, self.num_prefix_tokens :, :]
        return patches.reshape(out.shape[0], *self.grid, out.shape[-1]).movedim(-1, 1)

    def scale_channels(self, out: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Multiplies each channel of ``out`` (native layout) by ``scale`` ``(B, C)``.

        Prefix tokens are left unchanged (only the patch tokens form the map).
        """
        if self.layout == "channels_first":
            return out * scale.reshape(*scale.shape, *(1,) * (out.ndim - 2))
        if self.layout == "channels_last":
            return out * scale.reshape(scale.shape[0], *(1,) * (out.ndim - 2), scale.shape[1])
        p = self.num_prefix_tokens
        patches = out[:, p:, :] * scale[:, None, :]
        return torch.cat([out[:, :p, :], patches], dim=1) if p else patches


def token_grid(
    num_tokens: int, spatial_size: Sequence[int], reduction: int | None = None
) -> tuple[int, ...] | None:
    """The grid of ``num_tokens`` patch tokens of an input of ``spatial_size``.

    Tries the stride ``reduction`` first, then the strides near
    ``(prod(spatial_size) / num_tokens) ** (1 / D)``, each with ceil and floor
    rounding (padded or cropped borders), and returns the first grid whose cell
    count is ``num_tokens``.

    Returns:
        the grid (one entry per spatial axis) or None if no stride fits.
    """
    size = [int(s) for s in spatial_size]
    if num_tokens < 1 or not size:
        return None
    estimate = (math.prod(size) / num_tokens) ** (1 / len(size))
    strides: list[float] = [reduction] if reduction else []
    base = max(1, math.floor(estimate))
    strides += [estimate, *range(max(1, base - 2), base + 4)]
    for stride in strides:
        for rounding in (math.ceil, math.floor, round):
            grid = tuple(max(1, int(rounding(s / stride))) for s in size)
            if math.prod(grid) == num_tokens:
                return grid
    return None


def _grid_fits(grid: Sequence[int], spatial_size: Sequence[int]) -> bool:
    """True if ``grid`` is the input downsampled by one stride on every axis."""
    if len(grid) != len(spatial_size) or min(grid) < 1:
        return False
    if any(g > s for g, s in zip(grid, spatial_size)):
        return False
    strides = [s / g for s, g in zip(spatial_size, grid)]
    return max(strides) / min(strides) <= 1.5


def _first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def read_layer_output(
    out: torch.Tensor,
    spatial_size: Sequence[int],
    *,
    hint: CamLayer | None = None,
    model: nn.Module | None = None,
    name: str = "layer",
) -> LayerView:
    """Works out how a layer output ``out`` maps onto the input's grid.

    Args:
        out: the layer's output for an input of spatial size ``spatial_size``.
        spatial_size: the input's spatial shape ``(*S)``.
        hint: the contract's description of this layer, if it has one (its layout
            and prefix-token count are used; the grid always comes from ``out``).
        model: the model (its ``num_prefix_tokens`` and ``cam_layer`` layout break
            ties when the layout is inferred).
        name: the layer's name, for error messages.

    Returns:
        a :class:`LayerView`.

    Raises:
        ModelError: the output is not a spatial map or a token sequence of this input.
    """
    dims = len(spatial_size)
    shape = tuple(out.shape)
    if hint is not None and hint.layout == "tokens" and out.ndim == 3:
        n = shape[1] - hint.num_prefix_tokens
        grid = token_grid(n, spatial_size, hint.reduction)
        if grid is not None:
            return LayerView("tokens", grid, hint.num_prefix_tokens)
    if (
        hint is not None
        and out.ndim == dims + 2
        and hint.layout in ("channels_first", "channels_last")
    ):
        grid = shape[2:] if hint.layout == "channels_first" else shape[1:-1]
        return LayerView(hint.layout, tuple(grid))
    if out.ndim == dims + 2:
        first = _grid_fits(shape[2:], spatial_size)
        last = _grid_fits(shape[1:-1], spatial_size)
        prefer_last = getattr(getattr(model, "cam_layer", None), "layout", "") == "channels_last"
        if last and (prefer_last or not first):
            return LayerView("channels_last", tuple(shape[1:-1]))
        if first or not last:
            # a map that fits no stride (e.g. odd padding) is read channels first
            return LayerView("channels_first", tuple(shape[2:]))
    if out.ndim == 3:
        declared = int(getattr(model, "num_prefix_tokens", 0) or 0)
        order = [declared, *(p for p in range(_MAX_PREFIX_TOKENS + 1) if p != declared)]
        for prefix in order:
            if prefix >= shape[1]:
                continue
            grid = token_grid(shape[1] - prefix, spatial_size)
            if grid is not None:
                return LayerView("tokens", grid, prefix)
    raise ModelError(
        f"layer {name!r} outputs shape {shape} for an input of spatial size "
        f"{tuple(spatial_size)}: not a spatial map (B, C, *grid) / (B, *grid, C) or a "
        f"token sequence (B, N, C) with {dims} spatial axes; choose another --layer"
    )


def default_min_cells(spatial_dims: int) -> int:
    """The automatic layer choice's fewest grid cells: 7 per axis (49 in 2D, 343 in 3D)."""
    return DEFAULT_CELLS_PER_AXIS**spatial_dims


def default_layers(
    model: nn.Module,
    spatial_size: Sequence[int] | None = None,
    *,
    min_cells: int | None = None,
) -> list[LayerSpec]:
    """The layer(s) a CAM method hooks when the user names none.

    The contract's ``cam_layer``; when its grid at ``spatial_size`` has fewer than
    ``min_cells`` cells, the deepest of ``model.feature_stages`` whose grid has at
    least ``min_cells`` cells, or, if none has, the finest stage. A model with one branch per modality
    may declare ``cam_layers`` (modality -> :class:`CamLayer`): each branch then gets
    its own layer, chosen by the same rule among the feature stages of its branch
    (those whose module name shares the longest dotted prefix with the branch's layer).

    Args:
        model: a model following the medcls contract.
        spatial_size: the input's spatial shape (None: use the contract's layer as is).
        min_cells: the fewest grid cells a useful map needs (None:
            :func:`default_min_cells` of the input's number of axes).

    Raises:
        ModelError: the model declares no ``cam_layer``.
    """
    if min_cells is None and spatial_size is not None:
        min_cells = default_min_cells(len(spatial_size))
    stages = list(getattr(model, "feature_stages", []) or [])
    branches = getattr(model, "cam_layers", None)
    if isinstance(branches, dict) and branches:
        specs = []
        for modality, cam in branches.items():
            own = [s for s in stages if _branch_of(s.module, branches) == modality]
            spec = _default_layer(cam, own, spatial_size, min_cells)
            specs.append(LayerSpec(spec.module, spec.hint, str(modality)))
        return specs
    cam = getattr(model, "cam_layer", None)
    if not isinstance(cam, CamLayer):
        raise ModelError(
            f"{type(model).__name__} has no cam_layer (see medcls.models.contract); "
            "pass layer= / --layer to name the module to explain"
        )
    return [_default_layer(cam, stages, spatial_size, min_cells)]


def _branch_of(module: str, branches: dict) -> object | None:
    """The key of ``branches`` whose layer shares the longest dotted prefix with ``module``."""

    def shared(a: str, b: str) -> int:
        n = 0
        for x, y in zip(a.split("."), b.split(".")):
            if x != y:
                break
            n += 1
        return n

    scores = {key: shared(module, cam.module) for key, cam in branches.items()}
    best = max(scores.values())
    winners = [key for key, score in scores.items() if score == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def _default_layer(
    cam: CamLayer,
    stages: Sequence,
    spatial_size: Sequence[int] | None,
    min_cells: int | None,
) -> LayerSpec:
    """``cam``, or the deepest of ``stages`` with at least ``min_cells`` cells if it has
    fewer; when no stage has that many (a small input), the finest of ``stages`` that is
    finer than ``cam``, so the map is as detailed as the model allows."""
    if spatial_size is None or min_cells is None or not cam.reduction:
        return LayerSpec(cam.module, cam)

    def cells(reduction: int) -> int:
        return math.prod(max(1, math.ceil(s / reduction)) for s in spatial_size)

    if cells(cam.reduction) >= min_cells:
        return LayerSpec(cam.module, cam)
    finer = [
        stage
        for stage in stages
        if stage.reduction < cam.reduction and cells(stage.reduction) >= min_cells
    ]
    if not finer:
        finer = [stage for stage in stages if stage.reduction < cam.reduction]
        if not finer:
            return LayerSpec(cam.module, cam)
        finest = max(range(len(finer)), key=lambda i: (-finer[i].reduction, i))
        return LayerSpec(finer[finest].module)
    deepest = max(range(len(finer)), key=lambda i: (finer[i].reduction, i))
    return LayerSpec(finer[deepest].module)


def resolve_layers(
    model: nn.Module,
    layer: str | Sequence[str] | None = None,
    spatial_size: Sequence[int] | None = None,
    *,
    min_cells: int | None = None,
) -> list[LayerSpec]:
    """The layers to hook: the user's (names, or one comma-separated string) or the default.

    ``"auto"`` (or None) is :func:`default_layers`; ``"contract"`` is the contract's
    ``cam_layer`` exactly as declared.

    Raises:
        ModelError: a name that is not a submodule of ``model`` (the nearest names are
            suggested).
    """
    if layer is None or layer == "auto":
        return default_layers(model, spatial_size, min_cells=min_cells)
    if layer == "contract":
        return default_layers(model, None)
    names = [n.strip() for n in layer.split(",")] if isinstance(layer, str) else list(layer)
    names = [n for n in names if n]
    if not names:
        raise ModelError("layer: expected a module name, got an empty string")
    modules = dict(model.named_modules())
    cam = getattr(model, "cam_layer", None)
    specs = []
    for name in names:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelError(
                f"layer {name!r} is not a module of {type(model).__name__}{hint} "
                "(list them with model.named_modules())"
            )
        hint_layer = cam if isinstance(cam, CamLayer) and cam.module == name else None
        specs.append(LayerSpec(name, hint_layer))
    return specs


def first_tensor(out: object) -> torch.Tensor | None:
    """The output tensor of a module (the first element of a tuple output)."""
    return _first_tensor(out)
