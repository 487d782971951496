"""Loading model weights from a local file, safely.

Only tensors are read: ``.safetensors`` files with :mod:`safetensors`, anything else
with ``torch.load(weights_only=True)``, which refuses pickled code. A checkpoint whose
first convolution has another number of input channels is adapted; a classifier
whose number of classes differs is skipped (and reported).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medcls.errors import CheckpointError

__all__ = ["LoadReport", "adapt_input_conv_weight", "load_checkpoint", "read_state_dict"]

logger = logging.getLogger(__name__)

# dict keys under which trainers nest the weights (Lightning, plain torch scripts)
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        path: the checkpoint file.
        loaded: keys copied into the model.
        adapted: first-conv keys whose input channels were adapted, with how.
        skipped: classifier keys not loaded (other number of classes, or absent).
        prefix_removed: a prefix stripped from every checkpoint key (e.g. ``"model."``).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    prefix_removed: str = ""

    def summary(self) -> str:
        """One line for logs."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.prefix_removed:
            parts.append(f"stripped key prefix {self.prefix_removed!r}")
        if self.adapted:
            parts.append("adapted " + "; ".join(self.adapted))
        if self.skipped:
            parts.append("skipped classifier " + ", ".join(self.skipped))
        return ", ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a ``name -> tensor`` mapping from a safetensors or torch file.

    Args:
        path: ``.safetensors`` file, or a torch file (``.pt``/``.pth``/``.ckpt``/``.bin``)
            holding a state dict, possibly nested under ``state_dict``/``model``/...

    Returns:
        the state dict, on CPU.

    Raises:
        CheckpointError: missing or unreadable file, a file that would need to unpickle
            code (refused), or no tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: refused: the file holds pickled objects other than tensors and "
                "plain containers, which could run code when loaded (torch.load with "
                f"weights_only=True rejected it: {str(exc).splitlines()[0]}). Re-save only "
                "the state_dict, or convert it to .safetensors."
            ) from exc
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable torch checkpoint: {exc}") from exc
    for _ in range(3):  # unwrap {"state_dict": {...}} style nesting
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (keys: {sorted(obj)[:8]})")
    return tensors


def adapt_input_conv_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapts a first-conv weight ``(O, C, *k)`` to ``in_chans`` input channels.

    Every new channel gets the kernel summed over the ``C`` old channels, divided by
    ``in_chans``. An image whose channels are all equal (a grey image, or one
    modality repeated) then gets exactly the response the original model gave to
    it; for ``in_chans=1`` this is the sum of the RGB kernels (3 x their average).
    Medical channels (modalities, sequences) have no RGB order, so no channel is
    favoured.

    Args:
        weight: ``(out_channels, C, *kernel)``.
        in_chans: target input channels.

    Returns:
        ``(out_channels, in_chans, *kernel)``, same dtype.
    """
    if in_chans == weight.shape[1]:
        return weight
    summed = weight.float().sum(dim=1, keepdim=True) / in_chans
    return summed.expand(-1, in_chans, *weight.shape[2:]).contiguous().to(weight.dtype)


def _strip_common_prefix(
    state: dict[str, torch.Tensor], target_keys: set[str]
) -> tuple[dict[str, torch.Tensor], str]:
    removed = ""
    for _ in range(3):
        if any(k in target_keys for k in state):
            break
        heads = {k.split(".", 1)[0] for k in state}
        if len(heads) != 1 or not all("." in k for k in state):
            break
        head = heads.pop() + "."
        state = {k[len(head) :]: v for k, v in state.items()}
        removed += head
    return state, removed


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Loads weights from ``path`` into ``model`` (in place).

    Keys may carry one common prefix (``module.``, ``model.``, ...), which is removed.
    The first conv (``model.model_cfg.first_conv``) is adapted with
    :func:`adapt_input_conv_weight` when its input channels differ. Classifier keys
    (``model.model_cfg.classifier``) with another shape, or absent, are skipped. Any
    other missing, unexpected or mis-shaped key is an error.

    Args:
        model: a model following the medcls contract (``model_cfg`` is optional).
        path: checkpoint file (see :func:`read_state_dict`).

    Returns:
        a :class:`LoadReport`.

    Raises:
        CheckpointError: unreadable/unsafe file or weights that do not fit the model.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    state, prefix = _strip_common_prefix(state, set(target))
    cfg = getattr(model, "model_cfg", None)
    first_conv = getattr(cfg, "first_conv", None)
    classifiers = tuple(getattr(cfg, "classifier", ()) or ())

    def is_classifier(key: str) -> bool:
        return any(key == c or key.startswith(c + ".") for c in classifiers)

    report = LoadReport(str(path), prefix_removed=prefix)
    to_load: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    skip_heads = {
        c
        for c in classifiers
        for k, v in state.items()
        if (k == c or k.startswith(c + "."))
        and (k not in target or tuple(target[k].shape) != tuple(v.shape))
    }
    for key, value in state.items():
        if any(key == c or key.startswith(c + ".") for c in skip_heads):
            report.skipped.append(key)
            continue
        if key not in target:
            problems.append(f"unexpected key {key!r}")
            continue
        want = tuple(target[key].shape)
        if tuple(value.shape) != want:
            same_but_channels = (
                value.ndim == len(want) >= 3
                and value.shape[0] == want[0]
                and value.shape[2:] == want[2:]
            )
            if first_conv and key == f"{first_conv}.weight" and same_but_channels:
                value = adapt_input_conv_weight(value, want[1])
                report.adapted.append(f"{key}: {state[key].shape[1]} -> {want[1]} input channels")
            else:
                problems.append(f"{key!r} has shape {tuple(value.shape)}, model expects {want}")
                continue
        to_load[key] = value
    for key in target:
        if key in to_load or key in report.skipped:
            continue
        if is_classifier(key):
            report.skipped.append(key)
        elif not key.endswith(_OPTIONAL_SUFFIXES):
            problems.append(f"missing key {key!r}")
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; ... {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise CheckpointError(
            f"{path}: weights do not fit {getattr(cfg, 'name', type(model).__name__)}: {shown}"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    if report.adapted or report.skipped:
        logger.warning(report.summary())
    else:
        logger.info(report.summary())
    return report
