"""Size and cost of a model at one input size: parameters, MACs, FLOPs, activation memory, latency.

What is counted, and how:

- **parameters**: ``sum(p.numel())`` over ``model.parameters()`` (shared parameters
  once), and the part with ``requires_grad``.
- **FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode` over one forward pass
  of one sample (batch 1). It counts convolutions (1D/2D/3D, grouped and depthwise),
  linear layers and matrix products (``mm``, ``bmm``, ``addmm``, ``baddbmm``, so also
  ``einsum`` and ``@``), and attention: every multiply and every add counts one.
  Element-wise operations, normalisation, activations and pooling are not counted,
  as in the papers' tables. While counting, ``scaled_dot_product_attention`` runs
  with the math kernel and PyTorch's fused ``nn.MultiheadAttention`` fast path is
  off, because the fused CPU kernels are invisible to the counter.
- **MACs**: FLOPs / 2 (one multiply-accumulate = two FLOPs).
- **peak activation memory**: the most memory held at any moment by tensors that
  one forward pass of one sample creates, with autograd recording as in training
  (model in eval mode, so normalisation statistics are not updated). Parameters,
  buffers and the input are not included. On CUDA it is
  ``torch.cuda.max_memory_allocated()`` during the pass minus the memory allocated
  before it (so it includes the allocator's rounding and kernel workspaces). On
  any other device (CPU, ``meta``) a dispatch-level tracker adds the bytes of the
  storage of every tensor an operation returns and subtracts them when the storage
  is freed; tensors alive only inside one fused kernel are not seen.
- **latency**: median wall time of single-sample forward passes in inference mode
  after warm-up, on the device given.

Example::

    from medcls.models.profile import parse_input_size, profile_by_name
    row = profile_by_name("timm:resnet50", parse_input_size("3x224x224"), num_classes=1000)
    row["params"], row["macs"]            # 25557032, ~4.1e9
"""

from __future__ import annotations

import re
import statistics
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

from medcls.errors import ConfigError, ModelError

__all__ = [
    "PROFILE_FIELDS",
    "count_flops",
    "count_macs",
    "count_params",
    "example_input",
    "format_input_size",
    "measure_latency",
    "parse_input_size",
    "peak_activation_memory",
    "profile_by_name",
    "profile_model",
]

Input = torch.Tensor | Mapping[str, torch.Tensor]

# keys of a profile row (profile_by_name), in table order
PROFILE_FIELDS: tuple[str, ...] = (
    "name",
    "input_size",
    "params",
    "trainable_params",
    "macs",
    "flops",
    "activation_bytes",
    "activation_method",
    "latency_ms",
    "latency_p90_ms",
    "latency_device",
)


def parse_input_size(text: str, *, arg: str = "--input") -> tuple[int, ...]:
    """Parses an input spec ``CxHxW`` (2D) or ``CxDxHxW`` (3D).

    Args:
        text: e.g. ``"1x224x224"`` or ``"2x64x64x64"``; ``x``, ``X`` or ``*`` separate.
        arg: the argument or field the text came from, named in errors.

    Returns:
        ``(C, *spatial)`` with 2 or 3 spatial sizes.

    Raises:
        ConfigError: not 3 or 4 positive integers.
    """
    parts = [p.strip() for p in re.split(r"[xX*]", str(text).strip())]
    if len(parts) not in (3, 4) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(
            f"{arg} {text!r}: expected channels x spatial sizes as positive integers, "
            "CxHxW for 2D (e.g. 1x224x224) or CxDxHxW for 3D (e.g. 2x64x64x64)"
        )
    return tuple(int(p) for p in parts)


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts (each shared parameter once)."""
    params = list(model.parameters())
    return (
        int(sum(p.numel() for p in params)),
        int(sum(p.numel() for p in params if p.requires_grad)),
    )


def _to(x: Input, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def _tensors(x: Input) -> list[torch.Tensor]:
    return list(x.values()) if isinstance(x, Mapping) else [x]


def _home(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def example_input(
    model: nn.Module, input_size: Sequence[int], *, batch: int = 1, device: Any = "cpu"
) -> Input:
    """A zero input of ``input_size`` for ``model``.

    A model with a ``modalities`` attribute (medcls's fusion models) gets a dict
    ``{name: (batch, c, *spatial)}``; ``c`` is its ``modality_chans`` if it has one,
    else ``C`` split evenly between the modalities. Every other model gets a tensor
    ``(batch, C, *spatial)``.

    Args:
        model: the model.
        input_size: ``(C, *spatial)``; ``C`` counts all modalities together.
        batch: batch size.
        device: where the tensors are made.

    Raises:
        ModelError: ``C`` does not split evenly between the modalities.
    """
    chans, *spatial = (int(s) for s in input_size)
    modalities = getattr(model, "modalities", None)
    if not modalities:
        return torch.zeros(batch, chans, *spatial, device=device)
    names = list(modalities)
    per = getattr(model, "modality_chans", None)
    if per is None:
        if chans % len(names):
            raise ModelError(
                f"input channels {chans} do not split evenly between the modalities {names}"
            )
        per = chans // len(names)
    return {m: torch.zeros(batch, int(per), *spatial, device=device) for m in names}


def count_flops(model: nn.Module, x: Input) -> int:
    """FLOPs of one forward pass of ``x`` (``(B, C, *spatial)`` or a dict), see the module doc.

    Returns:
        FLOPs for the whole batch (give a batch of 1 for per-sample FLOPs).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    fast_path = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with (
            torch.no_grad(),
            sdpa_kernel(SDPBackend.MATH),
            FlopCounterMode(display=False) as counter,
        ):
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, x: Input) -> int:
    """Multiply-accumulate operations of one forward pass: :func:`count_flops` / 2."""
    return count_flops(model, x) // 2


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages that operations return, while they are alive, and their peak.

    Storages in ``exclude`` (parameters, buffers, the input) are never counted; a
    storage seen again (a view, an in-place result) is counted once.
    """

    def __init__(self, exclude: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self._excluded = {id(t.untyped_storage()) for t in exclude}
        self._keep = [t.untyped_storage() for t in exclude]  # ids stay unique while alive
        self._live: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int, nbytes: int) -> None:
        if self._live.pop(key, None) is not None:
            self.current -= nbytes

    def _track(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no storage (sparse, nested, ...)
            return
        key = id(storage)
        if key in self._excluded or key in self._live:
            return
        nbytes = int(storage.nbytes())
        self._live[key] = weakref.ref(storage, lambda _, k=key, n=nbytes: self._freed(k, n))
        self.current += nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in _pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        self.peak = max(self.peak, self.current)
        return out

    def close(self) -> None:
        self._live.clear()  # drops the weak references, so no callback runs later
        self._keep.clear()


def peak_activation_memory(model: nn.Module, x: Input, *, grad: bool = True) -> dict[str, Any]:
    """Peak memory of the tensors one forward pass of ``x`` creates (see the module doc).

    The pass runs where the model's parameters are (``x`` is moved there).

    Args:
        model: the model.
        x: one batch, ``(B, C, *spatial)`` or a dict of modality tensors.
        grad: record autograd as in training (saved activations stay alive until the
            end of the pass); False measures an inference pass under ``no_grad``.

    Returns:
        ``{"bytes": int, "method": "cuda_allocator" | "tensor_tracker"}``.
    """
    device = _home(model)
    inputs = _to(x, device)
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                out = model(inputs)
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device) - before
                method = "cuda_allocator"
            else:
                kept = [*model.parameters(), *model.buffers(), *_tensors(inputs)]
                tracker = _LiveBytes(kept)
                try:
                    with tracker:
                        out = model(inputs)
                    peak = tracker.peak
                finally:
                    tracker.close()
                method = "tensor_tracker"
        del out
    finally:
        model.train(was_training)
    return {"bytes": int(peak), "method": method}


def measure_latency(
    model: nn.Module,
    x: Input,
    *,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 10,
    max_seconds: float = 3.0,
) -> dict[str, Any]:
    """Median and spread of the forward time of ``x`` in inference mode.

    Args:
        model: the model (moved to ``device`` for the measurement, then back).
        x: one batch, ``(B, C, *spatial)`` or a dict of modality tensors.
        device: where to run.
        warmup: untimed passes first.
        repeats: timed passes (fewer when ``max_seconds`` is reached first).
        max_seconds: time budget of the timed passes.

    Returns:
        ``{"median_ms", "p90_ms", "repeats", "device"}``.
    """
    device = torch.device(device)
    home = _home(model)
    was_training = model.training
    model.eval().to(device)
    inputs = _to(x, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(max(0, int(warmup))):
                model(inputs)
            sync()
            budget_end = time.perf_counter() + float(max_seconds)
            for _ in range(max(1, int(repeats))):
                start = time.perf_counter()
                model(inputs)
                sync()
                times.append(time.perf_counter() - start)
                if time.perf_counter() > budget_end:
                    break
    finally:
        model.to(home).train(was_training)
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": 1000.0 * statistics.median(ordered),
        "p90_ms": 1000.0 * p90,
        "repeats": len(ordered),
        "device": str(device),
    }


def profile_model(
    model: nn.Module,
    x: Input,
    *,
    device: str | torch.device = "cpu",
    latency: bool = True,
    memory: bool = True,
    warmup: int = 2,
    repeats: int = 10,
) -> dict[str, Any]:
    """Parameters, MACs, FLOPs, peak activation memory and latency of ``model`` on ``x``.

    FLOPs and memory are measured on ``device`` (a forward pass of a large 3D model
    is slow on CPU); the model is moved back afterwards.

    Args:
        model: the model.
        x: one sample as a batch of 1: ``(1, C, *spatial)`` or a dict of modality tensors.
        device: where FLOPs, memory and latency are measured (``meta`` counts without
            computing; latency is then skipped).
        latency: measure latency (else the ``latency_*`` values are None).
        memory: measure peak activation memory (else ``activation_bytes`` is None).
        warmup: untimed passes before the latency is measured.
        repeats: timed passes.

    Returns:
        ``{"params", "trainable_params", "macs", "flops", "activation_bytes",
        "activation_method", "latency_ms", "latency_p90_ms", "latency_device",
        "input_shape"}``.
    """
    device = torch.device(device)
    params, trainable = count_params(model)
    home = _home(model)
    out: dict[str, Any] = {
        "params": params,
        "trainable_params": trainable,
        "macs": None,
        "flops": None,
        "activation_bytes": None,
        "activation_method": None,
        "latency_ms": None,
        "latency_p90_ms": None,
        "latency_device": None,
        "input_shape": (
            {k: list(v.shape) for k, v in x.items()} if isinstance(x, Mapping) else list(x.shape)
        ),
    }
    try:
        model.to(device)
        inputs = _to(x, device)
        out["flops"] = count_flops(model, inputs)
        out["macs"] = out["flops"] // 2
        if memory:
            peak = peak_activation_memory(model, inputs)
            out.update(activation_bytes=peak["bytes"], activation_method=peak["method"])
    finally:
        model.to(home)
    if latency and device.type != "meta":
        timing = measure_latency(model, x, device=device, warmup=warmup, repeats=repeats)
        out.update(
            latency_ms=timing["median_ms"],
            latency_p90_ms=timing["p90_ms"],
            latency_device=timing["device"],
        )
    return out


def _create(name: str, device: Any, **kwargs: Any) -> nn.Module:
    from medcls.models.factory import create_model

    if torch.device(device).type != "meta":
        return create_model(name, **kwargs)
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except ModelError:
        # a few constructors read tensor values (impossible on meta): build, then move
        return create_model(name, **kwargs).to("meta")


def _build(
    name: str, input_size: Sequence[int] | None, in_chans: int, num_classes: int, device: Any
) -> tuple[nn.Module, tuple[int, ...]]:
    dims = None if input_size is None else len(input_size) - 1
    chans = in_chans if input_size is None else int(input_size[0])
    args = {"in_chans": chans, "num_classes": num_classes, "spatial_dims": dims}
    model = _create(name, device, **args)
    cfg = model.model_cfg
    if input_size is None:
        return model, tuple(int(s) for s in cfg.input_size)
    spatial = tuple(int(s) for s in input_size[1:])
    if cfg.fixed_input_size and tuple(cfg.input_size[1:]) != spatial:
        # position embeddings / windows are tied to the size: build the model for this one
        if cfg.source not in ("timm", "timm3d"):
            raise ModelError(
                f"{name} only accepts inputs of {format_input_size(cfg.input_size[1:])}, "
                f"not {format_input_size(spatial)}"
            )
        model = _create(name, device, img_size=spatial, **args)
    return model, tuple(int(s) for s in input_size)


def profile_by_name(
    name: str,
    input_size: Sequence[int] | None = None,
    *,
    in_chans: int = 1,
    num_classes: int = 2,
    device: str | torch.device = "cpu",
    latency: bool = True,
    memory: bool = True,
    warmup: int = 2,
    repeats: int = 10,
) -> dict[str, Any]:
    """Builds the model ``name`` (random weights) and profiles it on one zero sample.

    Args:
        name: a registry name (``"timm:resnet50"``, ``"monai:resnet50"``, ``"ldtransformer_s"``).
        input_size: ``(C, *spatial)``; the number of spatial sizes sets ``spatial_dims``
            and ``C`` the model's ``in_chans``. None: ``in_chans`` channels at the
            model's default input size (``model_cfg.input_size``).
        in_chans: channels when ``input_size`` is None.
        num_classes: classifier outputs.
        device: ``"cpu"``, ``"cuda"`` or ``"meta"`` (count only, built without weights).
        latency: measure latency.
        memory: measure peak activation memory.
        warmup: untimed passes before the latency is measured.
        repeats: timed passes.

    Returns:
        a row with the keys in :data:`PROFILE_FIELDS`; ``input_size`` is the
        ``(C, *spatial)`` profiled.

    Raises:
        ModelError: an unknown name, arguments the model rejects, or a forward pass
            that fails at this input size.
    """
    device = torch.device(device)
    build_on = "meta" if device.type == "meta" else "cpu"
    model, size = _build(name, input_size, in_chans, num_classes, build_on)
    x = example_input(model, size, device=build_on)
    try:
        row = profile_model(
            model,
            x,
            device=device,
            latency=latency,
            memory=memory,
            warmup=warmup,
            repeats=repeats,
        )
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as exc:
        raise ModelError(
            f"{name}: forward pass at input {'x'.join(map(str, size))} failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    row.pop("input_shape")
    return {"name": name, "input_size": size, **row}


def format_input_size(size: Sequence[int]) -> str:
    """``(1, 224, 224)`` -> ``"1x224x224"``."""
    return "x".join(str(int(s)) for s in size)
