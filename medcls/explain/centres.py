"""Where the cells of a feature map lie on the input grid.

A CAM is computed on a layer's grid and resized to the input. Resizing with
``align_corners=False`` assumes that cell ``i`` of a grid ``s`` times coarser than
the input is centred at input voxel ``s * i + (s - 1) / 2``. That holds for patch
embeddings (kernel = stride, no padding: ViT, Swin, ConvNeXt stems), but not for
the "same"-padded strided convolutions and poolings of ResNets, EfficientNets and
most 3D CNNs: a 3x3 convolution of stride 2 and padding 1 centres its output ``i``
on input ``2 i``, so after a few such stages a ResNet's stride-8 cell ``i`` is
centred near ``8 i``, 3.5 voxels before where ``align_corners=False`` puts it. On
small lesions that shift decides whether the map's peak is inside them.

:class:`CentreTracker` measures the centres instead of assuming them: during the
forward pass it follows every tensor's grid in input coordinates (cell ``i`` of
axis ``a`` at ``offset[a] + stride[a] * i``) through the operations that move it
(convolutions, poolings, padding, interpolation, axis permutations), passes it
through everything that keeps the shape (activations, norms, residual sums: the
mean of the inputs' offsets), and drops it where the layout changes otherwise
(reshapes into tokens). :func:`resize_to_input` then resizes a map so each cell's
value sits on its own centre. Without a measured grid (token layers, unknown
operations) the ``align_corners=False`` convention is used, which is right for
patch embeddings.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["UPSAMPLE_MODES", "CellCentres", "CentreTracker", "resize_to_input"]

# (stride, offset) of one axis of a tensor in input voxel coordinates; None: unknown
_Axis = tuple[float, float] | None
_Frame = tuple[_Axis, ...]


@dataclass(frozen=True)
class CellCentres:
    """Cell ``i`` of grid axis ``a`` is centred at input voxel ``offset[a] + stride[a] * i``.

    Attributes:
        stride: input voxels per cell, one per grid axis.
        offset: input position of cell 0's centre, one per grid axis.
    """

    stride: tuple[float, ...]
    offset: tuple[float, ...]

    @classmethod
    def align_corners_false(cls, grid: Sequence[int], size: Sequence[int]) -> CellCentres:
        """The convention of ``F.interpolate(..., align_corners=False)``: cells tile the input."""
        stride = tuple(int(n) / int(g) for g, n in zip(grid, size))
        return cls(stride, tuple((s - 1) / 2 for s in stride))


#: how :func:`resize_to_input` fills the voxels between cell centres
UPSAMPLE_MODES = ("bspline", "linear")


def _linear_taps(t: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    return [(0, 1 - t), (1, t)]


def _bspline_taps(t: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """The cubic B-spline's weights of the cells ``i-1 .. i+2`` at ``i + t`` (they sum to 1)."""
    s = 1 - t
    return [
        (-1, s**3 / 6),
        (0, (3 * t**3 - 6 * t**2 + 4) / 6),
        (1, (3 * s**3 - 6 * s**2 + 4) / 6),
        (2, t**3 / 6),
    ]


def resize_to_input(
    maps: torch.Tensor,
    size: Sequence[int],
    centres: CellCentres | None = None,
    *,
    mode: str = "bspline",
) -> torch.Tensor:
    """Resizes maps ``(B, *grid)`` to ``(B, *size)``, each cell's value on its centre.

    One axis at a time (so any number of axes), with ``mode``:

    - ``"bspline"``: a cubic B-spline through the cell values (weights ``1/6, 2/3,
      1/6`` at the centres; non-negative, so a non-negative map stays non-negative).
      Between two strong neighbouring cells the peak lies between them, nearer the
      stronger: on a lesion smaller than a cell the peak can land inside it.
    - ``"linear"``: linear interpolation (bilinear/trilinear), the classic CAM
      resize. Its maximum is always on a cell centre, so on a grid coarser than
      the lesion the peak can only hit it when a centre falls inside it.

    Voxels beyond the first or last centre take the border cells' values.
    ``centres=None`` is the ``align_corners=False`` convention (cells tile the input).
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample: expected one of {UPSAMPLE_MODES}, got {mode!r}")
    taps = _bspline_taps if mode == "bspline" else _linear_taps
    size = tuple(int(s) for s in size)
    if centres is None:
        centres = CellCentres.align_corners_false(maps.shape[1:], size)
    if len(centres.stride) != len(size) or maps.ndim != len(size) + 1:
        raise ValueError(
            f"maps of shape {tuple(maps.shape)}, cell centres for {len(centres.stride)} axes "
            f"and an output size {size} do not match"
        )
    out = maps.float()
    for axis, (n, stride, offset) in enumerate(zip(size, centres.stride, centres.offset), 1):
        cells = out.shape[axis]
        position = torch.arange(n, dtype=torch.float32, device=out.device)
        u = ((position - offset) / stride).clamp(0, cells - 1)
        low = u.floor().clamp(max=cells - 1)
        shape = [1] * out.ndim
        shape[axis] = n
        acc = None
        for shift, weight in taps(u - low):
            index = (low.long() + shift).clamp(0, cells - 1)
            term = out.index_select(axis, index) * weight.reshape(shape)
            acc = term if acc is None else acc + term
        out = acc
    return out


# ----------------------------------------------------------------- argument parsing


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _per_axis(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(int(v) for v in value)
    return values * dims if len(values) == 1 else values


def _conv(args, kwargs, frame: _Frame, ndim: int) -> _Frame:
    weight = _arg(args, kwargs, 1, "weight", None)
    dims = weight.ndim - 2
    kernel = tuple(weight.shape[2:])
    stride = _per_axis(_arg(args, kwargs, 3, "stride", 1), dims)
    dilation = _per_axis(_arg(args, kwargs, 5, "dilation", 1), dims)
    padding = _arg(args, kwargs, 4, "padding", 0)
    if padding == "valid":
        left = (0,) * dims
    elif padding == "same":
        left = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        left = _per_axis(padding, dims)
    return _window(frame, ndim, kernel, stride, left, dilation)


def _pool(with_dilation: bool):
    def rule(args, kwargs, frame: _Frame, ndim: int, dims: int) -> _Frame:
        kernel = _per_axis(_arg(args, kwargs, 1, "kernel_size", 1), dims)
        stride = _arg(args, kwargs, 2, "stride", None)
        stride = (
            kernel if stride is None or stride == [] or stride == () else _per_axis(stride, dims)
        )
        left = _per_axis(_arg(args, kwargs, 3, "padding", 0), dims)
        dilation = (
            _per_axis(_arg(args, kwargs, 4, "dilation", 1), dims) if with_dilation else (1,) * dims
        )
        return _window(frame, ndim, kernel, stride, left, dilation)

    return rule


def _window(
    frame: _Frame,
    ndim: int,
    kernel: Sequence[int],
    stride: Sequence[int],
    left: Sequence[int],
    dilation: Sequence[int],
) -> _Frame:
    """A sliding window over the last ``len(kernel)`` axes: output ``i`` is centred on
    input ``stride * i + dilation * (kernel - 1) / 2 - left``."""
    dims = len(kernel)
    out = list(frame)
    for j in range(dims):
        axis = ndim - dims + j
        if frame[axis] is None:
            continue
        s, o = frame[axis]
        out[axis] = (s * stride[j], o + s * (dilation[j] * (kernel[j] - 1) / 2 - left[j]))
    return tuple(out)


def _resample(frame: _Frame, in_shape, out_shape, dims: int, align_corners: bool) -> _Frame:
    """Output cell ``i`` of a resampling of ``n`` cells to ``m`` (adaptive pooling,
    interpolation) centred on input cell ``(i + 0.5) n / m - 0.5`` (``i (n-1)/(m-1)``
    with aligned corners)."""
    out = list(frame)
    ndim = len(in_shape)
    for axis in range(ndim - dims, ndim):
        if frame[axis] is None:
            continue
        s, o = frame[axis]
        n, m = int(in_shape[axis]), int(out_shape[axis])
        if align_corners and m > 1:
            ratio, shift = (n - 1) / (m - 1), 0.0
        else:
            ratio = n / m
            shift = (ratio - 1) / 2
        out[axis] = (s * ratio, o + s * shift)
    return tuple(out)


def _pad(args, kwargs, frame: _Frame, ndim: int) -> _Frame:
    pad = tuple(int(p) for p in _arg(args, kwargs, 1, "pad", ()))
    out = list(frame)
    for j in range(len(pad) // 2):
        axis = ndim - 1 - j
        if frame[axis] is not None:
            s, o = frame[axis]
            out[axis] = (s, o - s * pad[2 * j])
    return tuple(out)


def _permutation(func, args, kwargs, ndim: int) -> list[int] | None:
    """``order`` with output axis ``k`` = input axis ``order[k]``, for permute/transpose/movedim."""

    def norm(a: int) -> int:
        return int(a) % ndim

    name = getattr(func, "__name__", "")
    rest = list(args[1:])
    if name == "permute":
        dims = rest[0] if len(rest) == 1 and not isinstance(rest[0], int) else rest
        dims = kwargs.get("dims", dims)
        return [norm(d) for d in dims]
    if name in ("transpose", "swapaxes", "swapdims"):
        a, b = [*rest, kwargs.get("dim0"), kwargs.get("dim1")][:2]
        order = list(range(ndim))
        order[norm(a)], order[norm(b)] = order[norm(b)], order[norm(a)]
        return order
    if name in ("movedim", "moveaxis"):
        src = rest[0] if rest else kwargs.get("source")
        dst = rest[1] if len(rest) > 1 else kwargs.get("destination")
        src = [norm(s) for s in ([src] if isinstance(src, int) else src)]
        dst = [norm(d) for d in ([dst] if isinstance(dst, int) else dst)]
        order: list[int | None] = [None] * ndim
        for s, d in zip(src, dst):
            order[d] = s
        remaining = iter(a for a in range(ndim) if a not in src)
        return [o if o is not None else next(remaining) for o in order]
    return None


def _build_rules() -> dict[Any, tuple[str, Any]]:
    rules: dict[Any, tuple[str, Any]] = {}
    for dims in (1, 2, 3):
        rules[getattr(F, f"conv{dims}d")] = ("conv", _conv)
        for name in (f"max_pool{dims}d", f"max_pool{dims}d_with_indices"):
            for owner in (F, torch):
                fn = getattr(owner, name, None)
                if fn is not None:
                    rules[fn] = ("pool", (dims, _pool(True)))
        for owner in (F, torch):
            fn = getattr(owner, f"avg_pool{dims}d", None)
            if fn is not None:
                rules[fn] = ("pool", (dims, _pool(False)))
        for name in (f"adaptive_avg_pool{dims}d", f"adaptive_max_pool{dims}d"):
            for owner in (F, torch):
                fn = getattr(owner, name, None)
                if fn is not None:
                    rules[fn] = ("resample", dims)
    rules[F.interpolate] = ("interpolate", None)
    rules[F.pad] = ("pad", _pad)
    rules[torch.constant_pad_nd] = ("pad", _pad)
    for name in ("permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis"):
        for owner in (torch, torch.Tensor):
            fn = getattr(owner, name, None)
            if fn is not None:
                rules[fn] = ("permute", None)
    for name in ("flip", "fliplr", "flipud", "roll", "rot90"):
        for owner in (torch, torch.Tensor):
            fn = getattr(owner, name, None)
            if fn is not None:
                rules[fn] = ("drop", None)
    return rules


_RULES: dict[Any, tuple[str, Any]] | None = None


def _tensors(values: Any) -> list[torch.Tensor]:
    found = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found += [t for t in v if isinstance(t, torch.Tensor)]
    return found


class CentreTracker(TorchFunctionMode):
    """Follows where each tensor's cells lie on the input grid during a forward pass.

    Use it as a context manager around the forward pass, after registering the
    input(s) (``(B, C, *S)``, channels first)::

        with CentreTracker() as tracker:
            tracker.register_input(x)
            model(x)
        tracker.centres(activation, grid_axes=(2, 3, 4))   # CellCentres or None

    It never changes a result: every operation runs as it would without it.
    """

    def __init__(self) -> None:
        super().__init__()
        global _RULES
        if _RULES is None:
            _RULES = _build_rules()
        self._rules = _RULES
        self._frames: dict[int, tuple[weakref.ref, _Frame]] = {}

    # ----------------------------------------------------------------- public
    def register_input(self, x: torch.Tensor) -> None:
        """Marks ``x`` ``(B, C, *S)`` as the input grid (stride 1, offset 0 on every axis of S)."""
        self._set(x, (None, None, *((1.0, 0.0),) * (x.ndim - 2)))

    def centres(self, tensor: torch.Tensor, grid_axes: Sequence[int]) -> CellCentres | None:
        """The cell centres of ``tensor``'s ``grid_axes``, or None if they are not known."""
        frame = self._get(tensor)
        if frame is None or not grid_axes:
            return None
        axes = [frame[a] if -tensor.ndim <= a < tensor.ndim else None for a in grid_axes]
        if any(a is None for a in axes):
            return None
        return CellCentres(tuple(a[0] for a in axes), tuple(a[1] for a in axes))

    # ------------------------------------------------------------- internals
    def _set(self, tensor: torch.Tensor, frame: _Frame) -> None:
        key = id(tensor)
        frames = self._frames
        if all(a is None for a in frame):
            frames.pop(key, None)
            return
        frames[key] = (weakref.ref(tensor, lambda _ref, key=key: frames.pop(key, None)), frame)

    def _get(self, tensor: torch.Tensor) -> _Frame | None:
        entry = self._frames.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = _tensors([out])
        if not outputs or not self._frames:
            return out
        inputs = _tensors(args) + _tensors(kwargs.values())
        framed = [(t, f) for t in inputs if (f := self._get(t)) is not None]
        if not framed:
            return out
        # an argument form the rules do not know leaves the output's grid unknown
        with contextlib.suppress(TypeError, ValueError, IndexError, AttributeError):
            self._propagate(func, args, kwargs, framed, outputs)
        return out

    def _propagate(self, func, args, kwargs, framed, outputs) -> None:
        kind, rule = self._rules.get(func, ("same", None))
        first = outputs[0]
        source, frame = framed[0]
        if kind == "same":
            for t in outputs:
                self._set(t, _inherit(framed, t))
            return
        if source is not args[0]:
            return
        ndim = source.ndim
        if kind == "conv":
            new = rule(args, kwargs, frame, ndim)
        elif kind == "pool":
            dims, fn = rule
            new = fn(args, kwargs, frame, ndim, dims)
        elif kind == "resample":
            new = _resample(frame, source.shape, first.shape, rule, False)
        elif kind == "interpolate":
            dims = source.ndim - 2
            mode = _arg(args, kwargs, 3, "mode", "nearest")
            aligned = bool(_arg(args, kwargs, 4, "align_corners", False)) and mode != "nearest"
            new = _resample(frame, source.shape, first.shape, dims, aligned)
        elif kind == "pad":
            new = rule(args, kwargs, frame, ndim)
        elif kind == "permute":
            order = _permutation(func, args, kwargs, ndim)
            new = tuple(frame[o] for o in order) if order is not None else ()
        else:  # drop
            new = ()
        if first.ndim == ndim and len(new) == ndim:
            self._set(first, new)


def _inherit(framed: list[tuple[torch.Tensor, _Frame]], out: torch.Tensor) -> _Frame:
    """An output's frame from the inputs of the same rank whose axes it keeps
    (same size): per axis, the mean offset of those that agree on the stride."""
    frame: list[_Axis] = []
    for axis in range(out.ndim):
        found = [
            f[axis]
            for t, f in framed
            if t.ndim == out.ndim and f[axis] is not None and t.shape[axis] == out.shape[axis]
        ]
        strides = {round(s, 6) for s, _ in found}
        if not found or len(strides) != 1:
            frame.append(None)
            continue
        frame.append((found[0][0], math.fsum(o for _, o in found) / len(found)))
    return tuple(frame)
