"""Size and speed of a trained model: parameters, MACs at its input size, inference latency.

MACs are half the FLOPs that :class:`torch.utils.flop_counter.FlopCounterMode`
counts (convolutions, linear layers, matrix products; element-wise operations and
normalisation are not counted, as in the papers' tables). Attention runs with the
math kernel while counting, because the fused CPU kernel is invisible to the
counter. Latency is the median wall time of single-sample forward passes (batch 1)
after warm-up, on the device given.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["count_macs", "measure_latency", "profile_model"]


def _to(x: torch.Tensor | Mapping[str, torch.Tensor], device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def count_macs(model: nn.Module, x: torch.Tensor | Mapping[str, torch.Tensor]) -> int:
    """Multiply-accumulate operations of one forward pass of ``x`` (``(B, C, *spatial)`` or a dict).

    Returns:
        MACs for the whole batch (give a batch of 1 for per-sample MACs).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with (
            torch.no_grad(),
            sdpa_kernel(SDPBackend.MATH),
            FlopCounterMode(display=False) as counter,
        ):
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


def measure_latency(
    model: nn.Module,
    x: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 10,
    max_seconds: float = 3.0,
) -> dict[str, float]:
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
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
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
    x: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    latency: bool = True,
) -> dict[str, Any]:
    """Parameters, MACs and latency of ``model`` on one sample.

    Args:
        model: the model.
        x: one sample as a batch of 1: ``(1, C, *spatial)`` or a dict of modality tensors.
        device: where latency is measured.
        latency: measure latency (else ``latency_ms`` is ``None``).

    Returns:
        ``{"params", "trainable_params", "macs", "latency_ms", "latency_p90_ms",
        "latency_device", "input_shape"}``.
    """
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    try:  # count where the model runs fastest: a forward pass of a large 3D model is slow on CPU
        macs = count_macs(model.to(device), _to(x, torch.device(device)))
    finally:
        model.to(home)
    out: dict[str, Any] = {
        "params": int(params),
        "trainable_params": int(trainable),
        "macs": macs,
        "latency_ms": None,
        "latency_p90_ms": None,
        "latency_device": None,
        "input_shape": (
            {k: list(v.shape) for k, v in x.items()} if isinstance(x, Mapping) else list(x.shape)
        ),
    }
    if latency:
        timing = measure_latency(model, x, device=device)
        out.update(
            latency_ms=timing["median_ms"],
            latency_p90_ms=timing["p90_ms"],
            latency_device=timing["device"],
        )
    return out
