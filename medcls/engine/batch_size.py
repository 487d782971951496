"""The largest training batch that fits a device's memory (``data.batch_size: auto``).

The search doubles the batch until a training step no longer fits, then bisects
between the last size that fitted and the first that did not, so it needs about
``2 * log2(answer)`` trial steps. Whether a batch *fits* is decided by
:func:`training_step_bytes` against a limit:

- on a GPU, a real forward and backward pass is run and the allocator's peak is
  read (an out-of-memory error counts as "does not fit");
- on a CPU, where nothing runs out until the machine swaps, the memory of one
  training step is estimated: the tensors a forward pass keeps alive for backward
  (measured by :func:`medcls.models.profile.peak_activation_memory`), doubled for
  the gradients backward creates, plus the weights, their gradients and two AdamW
  moments (four times the parameters' bytes).

Gradient accumulation then keeps a requested effective batch
(:func:`accumulation_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medcls.errors import ConfigError

__all__ = ["accumulation_plan", "default_memory_limit", "largest_batch_size", "training_step_bytes"]


def largest_batch_size(fits: Callable[[int], bool], max_batch: int) -> int:
    """The largest ``b <= max_batch`` with ``fits(b)``, assuming ``fits`` is monotone.

    Raises:
        ConfigError: not even a batch of one fits.
    """
    if max_batch < 1:
        raise ConfigError(f"batch size search: max_batch={max_batch}, expected >= 1")
    if not fits(1):
        raise ConfigError(
            "data.batch_size=auto: not even one sample fits the memory limit "
            "(trainer.memory_limit_gb); use a smaller input or model"
        )
    good = 1
    while good < max_batch:
        nxt = min(2 * good, max_batch)
        if not fits(nxt):
            bad = nxt
            break
        good = nxt
    else:
        return good
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def _repeat(example: Any, batch: int) -> Any:
    if isinstance(example, dict):
        return {k: _repeat(v, batch) for k, v in example.items()}
    return example[:1].expand(batch, *example.shape[1:]).contiguous()


def training_step_bytes(model: nn.Module, example: Any, batch: int) -> int | None:
    """Memory one training step of ``batch`` samples takes where ``model`` lives.

    Args:
        model: the model (on its training device).
        example: one input sample ``(1, C, *spatial)`` or a dict of such tensors.
        batch: the batch size to try.

    Returns:
        Bytes (measured on CUDA, estimated on CPU; see the module doc), or ``None``
        when CUDA ran out of memory.
    """
    from medcls.models.profile import peak_activation_memory

    param = next(model.parameters())
    x = _repeat(example, batch)
    x = {k: v.to(param.device) for k, v in x.items()} if isinstance(x, dict) else x.to(param)
    if param.device.type == "cuda":
        device = param.device
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            model.train()
            model(x).float().sum().backward()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        return int(peak + 2 * params)  # + the optimiser's two moments, not yet allocated
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = peak_activation_memory(model, x, grad=True)["bytes"]
    return int(2 * activations + 4 * weights)


def default_memory_limit(device: torch.device) -> int:
    """Bytes ``data.batch_size: auto`` may fill: 90% of the GPU's free memory, or half
    of the free RAM on a CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.9 * free)
    return int(_available_ram() // 2)


def _available_ram() -> int:
    """Available RAM in bytes (Linux ``MemAvailable``; else free pages)."""
    import os

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def accumulation_plan(batch_size: int, effective: int | None, devices: int = 1) -> tuple[int, int]:
    """Batch size and accumulation steps that reach an effective batch.

    With ``effective`` set, the accumulation is the fewest steps with which batches of
    at most ``batch_size`` reach it, and the batch is then shrunk to
    ``ceil(effective / (steps * devices))`` so the effective batch overshoots least.

    Returns:
        ``(batch_size, accumulate_grad_batches)``.
    """
    if effective is None:
        return batch_size, 1
    per_device = max(1, math.ceil(effective / devices))
    steps = max(1, math.ceil(per_device / batch_size))
    return math.ceil(per_device / steps), steps
