"""Checkpoints that never execute code when loaded, written atomically.

Two kinds of file live in ``RUN_DIR/checkpoints/``:

* ``best.safetensors`` + ``best.json`` (and ``last.*``): the model's weights as
  safetensors, and a JSON file with everything needed to rebuild and use the model
  (name and arguments, classes, task, modalities, preprocessing, the full config,
  library versions, a SHA-256 of the weights).
* ``last.ckpt``: the trainer state (weights, optimiser, scheduler, loops,
  callbacks) for resuming. It is a torch file, loaded only with
  ``torch.load(weights_only=True)``, which refuses any pickled object other than
  tensors and plain containers.

Every write goes to a temporary file in the same folder and is renamed into place
(``os.replace`` is atomic), so a kill during a save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medcls.errors import CheckpointError

__all__ = [
    "atomic_write",
    "library_versions",
    "load_weights",
    "read_meta",
    "safe_torch_load",
    "save_weights",
]

FORMAT = "medcls-checkpoint"
FORMAT_VERSION = 1


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and atomically rename the result to ``path``.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def library_versions() -> dict[str, str]:
    """Versions of medcls and the libraries that shape a model's behaviour."""
    from importlib import metadata

    versions = {}
    for dist in ("medcls", "torch", "torchvision", "timm", "timm-3d", "monai", "lightning"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: torch.nn.Module, path_stem: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (meta), atomically.

    Tensors shared between several names (tied weights) are stored once; the
    aliases are recorded in the safetensors metadata and restored on load.

    Returns:
        The path of the safetensors file.
    """
    from safetensors.torch import save_file

    stem = Path(path_stem)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner: dict[tuple[int, int, tuple], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in owner:
            aliases[name] = owner[key]
            continue
        owner[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()
    weights = stem.with_suffix(".safetensors")
    atomic_write(
        weights,
        lambda tmp: save_file(
            tensors, str(tmp), metadata={"format": FORMAT, "aliases": json.dumps(aliases)}
        ),
    )
    full_meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "versions": library_versions(),
        "sha256": _sha256(weights),
    }
    atomic_write(
        stem.with_suffix(".json"),
        lambda tmp: tmp.write_text(json.dumps(full_meta, indent=2, default=str)),
    )
    return weights


def read_meta(path_stem: str | Path) -> dict[str, Any]:
    """Read ``<stem>.json``.

    Raises:
        CheckpointError: the file is missing, not JSON, or not a medcls checkpoint.
    """
    path = Path(path_stem).with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint description not found")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a medcls checkpoint description (no format {FORMAT!r})")
    return meta


def load_weights(model: torch.nn.Module, path_stem: str | Path, *, verify: bool = True) -> dict:
    """Load ``<stem>.safetensors`` into ``model`` (strictly); returns the meta.

    Raises:
        CheckpointError: a file is missing or corrupt, the hash does not match, or
            the weights do not fit the model.
    """
    from safetensors import SafetensorError, safe_open

    meta = read_meta(path_stem)
    weights = Path(path_stem).with_suffix(".safetensors")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    if verify and meta.get("sha256") and _sha256(weights) != meta["sha256"]:
        raise CheckpointError(
            f"{weights}: SHA-256 differs from {weights.with_suffix('.json').name}; "
            "the file is corrupt or was replaced"
        )
    try:
        with safe_open(str(weights), framework="pt") as fh:
            state = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
            aliases = json.loads((fh.metadata() or {}).get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    for alias, name in aliases.items():
        state[alias] = state[name]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit the model ({exc})") from None
    return meta


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (no code execution).

    Raises:
        CheckpointError: the file is missing or corrupt, or it holds other pickled
            objects (which could run code when loaded) and is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled objects other than tensors and "
            f"plain containers, which could execute code ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from None
