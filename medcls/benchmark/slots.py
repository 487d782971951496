"""Safe claiming of benchmark runs by several processes or machines sharing one folder.

Each run (model, seed, fold) is a *slot*. A process that wants to run a slot
creates a claim file with ``O_CREAT | O_EXCL``, which the file system grants to
exactly one process, also over NFS v3+ and other shared file systems that honour
exclusive creation. While the run lasts, a heartbeat thread refreshes the claim
file's modification time.

Claims are numbered: ``claims/<slot>/claim-000000``, ``claim-000001``, ... and the
highest number is the current claim. A claim is *stale* when its owner is gone:
the owner was on this machine and its process no longer exists, or (any machine)
its heartbeat is older than ``stale_after`` seconds. A stale claim is taken over by
creating the *next* number, again with ``O_EXCL``: if two processes find the same
stale claim, only one of them can create the next file, so a slot never has two
live owners. A finished slot has a ``done.json``, written atomically (temporary
file + rename) by its owner; it is never claimed again.

The module needs only the standard library, so many worker processes start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Claim",
    "ClaimInfo",
    "atomic_write_json",
    "claim_slot",
    "read_claim",
    "read_json",
]

_CLAIM = re.compile(r"^claim-(\d{6})$")


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path``, or ``None`` when it is missing or unreadable."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; fields after it are space separated
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _process_start_time(pid),
        "token": uuid.uuid4().hex,
        "claimed_at": time.time(),
    }


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says about its owner, and whether that owner is gone."""

    path: Path
    number: int
    owner: dict[str, Any]
    heartbeat: float
    stale: bool
    reason: str


def _claim_files(folder: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), folder / name) for name in names if (m := _CLAIM.match(name))]
    return sorted(found)


def read_claim(path: Path, *, stale_after: float, now: float | None = None) -> ClaimInfo | None:
    """Inspect one claim file; ``None`` when it vanished meanwhile."""
    try:
        heartbeat = path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text) if text.strip() else {}
    except ValueError:
        owner = {}
    now = time.time() if now is None else now
    number = int(_CLAIM.match(path.name).group(1))
    age = now - heartbeat
    if not owner:
        # created but not yet written by its owner (a moment) or its owner died right then
        stale = age > min(stale_after, 60.0)
        return ClaimInfo(path, number, owner, heartbeat, stale, f"empty claim, {age:.0f} s old")
    if owner.get("host") == socket.gethostname():
        pid = int(owner.get("pid", -1))
        alive = _pid_alive(pid)
        start = owner.get("pid_start")
        if alive and start is not None and _process_start_time(pid) not in (None, start):
            alive = False  # the pid was reused by another process
        if not alive:
            return ClaimInfo(path, number, owner, heartbeat, True, f"process {pid} is gone")
    if age > stale_after:
        return ClaimInfo(
            path,
            number,
            owner,
            heartbeat,
            True,
            f"no heartbeat for {age:.0f} s (> {stale_after:.0f} s)",
        )
    return ClaimInfo(path, number, owner, heartbeat, False, "alive")


class Claim:
    """A slot held by this process; refreshes its heartbeat until released.

    Use :func:`claim_slot` to obtain one. ``release()`` (or leaving the ``with``
    block) stops the heartbeat and removes the claim file.
    """

    def __init__(self, path: Path, owner: dict[str, Any], heartbeat: float) -> None:
        self.path = path
        self.owner = owner
        self.number = int(_CLAIM.match(path.name).group(1))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat,
            args=(heartbeat,),
            name=f"medcls-claim-{path.parent.name}",
            daemon=True,
        )
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def still_owned(self) -> bool:
        """True while this claim is the slot's newest one and still names this process."""
        files = _claim_files(self.path.parent)
        if not files or files[-1][1] != self.path:
            return False
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return owner.get("token") == self.owner["token"]

    def release(self) -> None:
        """Stop the heartbeat and delete the claim file (if it is still ours)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.still_owned():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create_exclusive(path: Path, content: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, content.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def claim_slot(
    folder: str | Path,
    *,
    is_done: Callable[[], bool],
    stale_after: float = 600.0,
    heartbeat: float = 20.0,
    on_takeover: Callable[[ClaimInfo], None] | None = None,
) -> Claim | None:
    """Try to become the one process that runs a slot.

    Args:
        folder: the slot's claim folder (created if needed).
        is_done: tells whether the slot has finished; checked before claiming and
            again once the claim is held (another process may have finished it in
            between).
        stale_after: seconds without heartbeat after which a claim of another
            machine is considered abandoned. Claims of this machine are abandoned
            as soon as their process is gone.
        heartbeat: seconds between refreshes of the claim's modification time.
        on_takeover: called with the abandoned claim when this process takes it over.

    Returns:
        a :class:`Claim` held by this process, or ``None`` when the slot is done
        or alive in another process.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_done():
        return None
    owner = _owner_identity()
    for _ in range(8):  # a few rounds: claims may appear and vanish meanwhile
        files = _claim_files(folder)
        abandoned = None
        if files:
            info = read_claim(files[-1][1], stale_after=stale_after)
            if info is None:
                continue  # released right now: look again
            if not info.stale:
                return None
            abandoned = info
            number = info.number + 1
        else:
            number = 0
        path = folder / f"claim-{number:06d}"
        if not _create_exclusive(path, json.dumps(owner)):
            return None  # another process took it in the same moment
        claim = Claim(path, owner, heartbeat)
        if not claim.still_owned() or is_done():
            claim.release()
            return None
        if abandoned is not None and on_takeover is not None:
            on_takeover(abandoned)
        return claim
    return None
