"""On-disk cache of preprocessed cases, safe to share between processes and runs.

A case's entry is one ``.safetensors`` file (its preprocessed tensors, plus a JSON
record of facts about the raw images in the metadata) named by a key that hashes

* every input file of the case: its absolute path, size and modification time
  (``key_mode="stat"``) or a hash of its bytes (``key_mode="content"``); a DICOM
  series folder counts every file in it, an ``.npz`` member its file and member;
* the preprocessing configuration (any change gives new keys);
* the cache format and the medcls version.

So a changed file or a changed configuration never reads a stale entry; old
entries are simply not used again (delete the folder to reclaim the space).
Entries are written to a temporary file and renamed into place, which is atomic
on POSIX file systems: concurrent processes (loader workers, DDP ranks, two runs)
may compute the same entry, and a reader sees either a whole entry or none.
A damaged entry (e.g. after a crash of the machine) is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medcls.data.cases import Case
from medcls.errors import ConfigError

__all__ = ["CACHE_FORMAT", "DiskCache", "default_cache_root", "file_fingerprint"]

CACHE_FORMAT = 1
_CHUNK = 1 << 20


def default_cache_root() -> Path:
    """``$MEDCLS_CACHE/preprocessed``, else ``~/.cache/medcls/preprocessed``."""
    root = os.environ.get("MEDCLS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "medcls"
    return base / "preprocessed"


def _content_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _one_file(path: Path, key_mode: str) -> str:
    stat = path.stat()
    if key_mode == "content":
        return f"{stat.st_size}:{_content_hash(path)}"
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def file_fingerprint(path: str, key_mode: str = "stat") -> str:
    """A string that changes whenever the input at ``path`` changes.

    Args:
        path: a file, a folder (every file below it counts) or an ``.npz`` member
            locator (``file.npz::key/index``).
        key_mode: ``stat`` (path, size, modification time) or ``content`` (bytes).

    Returns:
        The fingerprint; ``"missing"`` for a path that does not exist (so a file
        that appears later gets a new key).
    """
    from medcls.data.sources import parse_locator

    if key_mode not in ("stat", "content"):
        raise ConfigError(f"data.cache_key: expected 'stat' or 'content', got {key_mode!r}")
    located = parse_locator(path)
    if located is not None:
        file, key, index = located
        return f"{file_fingerprint(file, key_mode)}#{key}/{index}"
    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        parts = [f"{f.relative_to(p).as_posix()}={_one_file(f, key_mode)}" for f in files]
        return f"{p.resolve()}/[" + ";".join(parts) + "]"
    return _one_file(p, key_mode)


class DiskCache:
    """Preprocessed cases on disk, keyed by their files and the configuration.

    Args:
        root: the cache folder (created on first write).
        config: everything that determines the preprocessing output (the
            ``preprocess`` section, modalities, spatial dims, ...), JSON-serialisable.
        key_mode: ``stat`` or ``content`` (see :func:`file_fingerprint`).
    """

    def __init__(
        self, root: str | Path, config: Mapping[str, Any], *, key_mode: str = "stat"
    ) -> None:
        from medcls import __version__

        self.root = Path(root).expanduser()
        self.key_mode = key_mode
        payload = {"format": CACHE_FORMAT, "medcls": __version__, "config": config}
        text = json.dumps(payload, sort_keys=True, default=str)
        self.salt = hashlib.sha256(text.encode()).hexdigest()

    def key(
        self, case: Case, modalities: Sequence[str], *, with_mask: bool = False, tag: str = ""
    ) -> str:
        """The entry name of ``case`` (hex).

        Args:
            case: the case.
            modalities: the modalities read.
            with_mask: the case's mask file is an input too.
            tag: anything else that changes the entry's content (e.g. whether the
                mask is stored).
        """
        parts = [self.salt, tag]
        for name in modalities:
            path = case.modalities.get(name, "")
            parts.append(f"{name}={path}|{file_fingerprint(path, self.key_mode) if path else ''}")
        if with_mask and case.mask:
            parts.append(f"mask={case.mask}|{file_fingerprint(case.mask, self.key_mode)}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        """Where the entry ``key`` lives."""
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The entry's tensors and record, or None when absent or unreadable."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                record = json.loads((fh.metadata() or {}).get("record", "{}"))
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
        except Exception:  # a damaged entry is recomputed, never trusted
            return None
        return tensors, record

    def save(self, key: str, tensors: Mapping[str, torch.Tensor], record: Mapping) -> Path:
        """Write an entry atomically (temporary file, then rename)."""
        from safetensors.torch import save_file

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        data = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
        try:
            save_file(data, str(tmp), metadata={"record": json.dumps(record)})
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path
