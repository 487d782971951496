"""Zoo health sweep: every listed model is built, run forward and backward, and checked.

For each model name (``in_chans=1``, ``num_classes=2``, random weights, batch 2, train
mode), :func:`check_model`:

1. builds it with :func:`medcls.models.create_model` for every spatial dims it supports
   and checks that ``in_chans``, ``num_classes`` and ``model_cfg.input_size`` are honoured;
2. runs forward and backward (cross-entropy) at its standard input: 2D 224² (or the
   model's own ``model_cfg.input_size`` when it is fixed or 224² fails), 3D 64³ (or the
   model's own size when 64³ fails);
3. checks the logits' shape ``(2, 2)`` and that they and the gradients are finite;
4. checks that every trainable parameter receives a gradient (the unused ones are listed);
5. checks that ``model.cam_layer`` names a submodule that runs in the forward pass.

:func:`run_sweep` checks many models in worker processes (a model that runs longer than
the per-model limit is stopped and recorded as failed; a crash of the worker is recorded
too), appends one JSON line per model to a results file and skips names already there,
so an interrupted sweep resumes where it stopped. :func:`write_report` turns the results
into ``docs/zoo.md``. The command line is ``medcls models check`` (or
``python -m medcls.models.zoo.health``, the same arguments); ``make zoo-check`` runs the
whole sweep.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_REPORT",
    "DEFAULT_RESULTS",
    "STATUSES",
    "SweepSummary",
    "check_model",
    "load_records",
    "run_sweep",
    "sweep_names",
    "write_report",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RESULTS = Path("benchmarks/results/zoo_health.jsonl")
DEFAULT_REPORT = Path("docs/zoo.md")
CONTINUE_COMMAND = "make zoo-check"
STATUSES = ("pass", "fail", "excluded", "skipped")
STANDARD_SIZE = {2: 224, 3: 64}
KILL_GRACE_S = 30.0  # a check still running this long after its deadline is killed
BATCH = 2
NUM_CLASSES = 2
IN_CHANS = 1


class _Timeout(Exception):
    """The per-model wall-clock budget ran out between two steps of a check."""


class _OutOfMemory(Exception):
    """The check needs more memory than this machine allows (not the model's fault)."""


# --------------------------------------------------------------------------- one model


def _dims_of(name: str) -> tuple[int, ...]:
    from medcls.models.registry import NATIVE, get_entry, get_source, parse_model_name

    source, arch = parse_model_name(name)
    return get_entry(arch).dims if source == NATIVE else get_source(source).dims(arch)


_OOM_TEXT = ("can't allocate memory", "bad_alloc", "out of memory")


def _is_oom(exc: BaseException | None) -> bool:
    """True if ``exc`` (or the error it wraps) is an allocation failure."""
    for _ in range(5):  # ModelError wraps the library's error
        if exc is None:
            return False
        if isinstance(exc, MemoryError) or any(t in str(exc) for t in _OOM_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:limit]}"


def _candidate_sizes(
    spatial_dims: int, cfg_size: Sequence[int], fixed: bool, size: int | None
) -> list[tuple[int, ...]]:
    """Input sizes to try, in order: the standard (or requested) size, then the model's."""
    own = tuple(int(s) for s in cfg_size)
    standard = (size or STANDARD_SIZE[spatial_dims],) * spatial_dims
    sizes = [own] if fixed else [standard, own]
    return list(dict.fromkeys(sizes))


def _forward_backward(
    model: Any, spatial: tuple[int, ...], deadline: float, in_chans: int = IN_CHANS
) -> tuple[list[str], dict[str, Any]]:
    """One forward + backward pass at ``spatial``; returns ``(problems, facts)``.

    Raises:
        _Timeout: the deadline passed after the forward pass.
        Exception: whatever the model raises for this input size (the caller decides
            whether to try another size).
    """
    import torch
    from torch import nn

    from medcls.models.contract import CamLayer

    problems: list[str] = []
    facts: dict[str, Any] = {}
    cam = getattr(model, "cam_layer", None)
    modules = dict(model.named_modules())
    cam_seen: list[bool] = []
    handle = None
    if not isinstance(cam, CamLayer):
        problems.append(f"cam_layer is {type(cam).__name__}, expected CamLayer")
    elif cam.module not in modules:
        problems.append(f"cam_layer module {cam.module!r} is not a submodule")
    else:
        facts["cam_layer"] = cam.module

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            first = out[0] if isinstance(out, (tuple, list)) and out else out
            cam_seen.append(isinstance(first, torch.Tensor))

        handle = modules[cam.module].register_forward_hook(hook)
    model.train()
    model.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, in_chans, *spatial, generator=generator)
    target = torch.arange(BATCH) % NUM_CLASSES
    try:
        out = model(x)
    finally:
        if handle is not None:
            handle.remove()
    if time.monotonic() > deadline:
        raise _Timeout("after the forward pass")
    if not isinstance(out, torch.Tensor):
        problems.append(f"forward returned {type(out).__name__}, expected a tensor")
        return problems, facts
    if tuple(out.shape) != (BATCH, NUM_CLASSES):
        problems.append(f"output shape {tuple(out.shape)}, expected {(BATCH, NUM_CLASSES)}")
        return problems, facts
    if not torch.isfinite(out).all():
        problems.append("non-finite logits")
        return problems, facts
    if handle is not None and not any(cam_seen):
        problems.append(f"cam_layer module {cam.module!r} did not run in the forward pass")
    nn.functional.cross_entropy(out.float(), target).backward()
    unused, nonfinite = [], []
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:
            unused.append(pname)
        elif not torch.isfinite(param.grad).all():
            nonfinite.append(pname)
    facts["unused_params"] = unused
    if unused:
        shown = ", ".join(unused[:8]) + (f" (+{len(unused) - 8} more)" if len(unused) > 8 else "")
        problems.append(f"{len(unused)} trainable parameter(s) get no gradient: {shown}")
    if nonfinite:
        problems.append(f"non-finite gradients in {', '.join(nonfinite[:5])}")
    model.zero_grad(set_to_none=True)
    return problems, facts


def _check_dims(
    name: str, spatial_dims: int | None, size: int | None, deadline: float
) -> dict[str, Any]:
    """Builds and checks ``name`` for one spatial dims; returns a per-dims result."""
    from medcls.models.factory import create_model

    out: dict[str, Any] = {"status": "fail", "reason": ""}
    in_chans = IN_CHANS

    def build(chans: int) -> Any:
        return create_model(
            name, in_chans=chans, num_classes=NUM_CLASSES, spatial_dims=spatial_dims
        )

    try:
        model = build(in_chans)
    except Exception as exc:
        if _is_oom(exc):
            raise _OutOfMemory(_first_line(exc)) from exc
        # a model of several modalities (PET + CT) takes one channel per modality
        model, modalities = None, ()
        with contextlib.suppress(Exception):
            model = build(2)
            modalities = tuple(getattr(model, "modalities", None) or ())
        if model is None or len(modalities) < 2:
            out["reason"] = f"build failed: {_first_line(exc)}"
            return out
        in_chans = len(modalities)
        if in_chans != 2:
            model = build(in_chans)
        out["modalities"] = list(modalities)
    cfg = model.model_cfg
    out["spatial_dims"] = int(cfg.spatial_dims)
    out["family"] = cfg.family
    out["in_chans"] = in_chans
    out["params"] = sum(p.numel() for p in model.parameters())
    contract = []
    if getattr(model, "in_chans", None) != in_chans or cfg.input_size[0] != in_chans:
        contract.append(f"in_chans {model.in_chans} / cfg {cfg.input_size[0]}, expected {in_chans}")
    if getattr(model, "num_classes", None) != NUM_CLASSES:
        contract.append(f"num_classes {model.num_classes}, expected {NUM_CLASSES}")
    if contract:
        out["reason"] = "; ".join(contract)
        return out
    if time.monotonic() > deadline:
        raise _Timeout("after building the model")
    tried: list[str] = []
    sizes = _candidate_sizes(cfg.spatial_dims, cfg.input_size[1:], cfg.fixed_input_size, size)
    for spatial in sizes:
        label = "x".join(map(str, spatial))
        try:
            problems, facts = _forward_backward(model, spatial, deadline, in_chans)
        except _Timeout:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise _OutOfMemory(f"at {label}: {_first_line(exc)}") from exc
            tried.append(f"{label}: {_first_line(exc, 200)}")
            model.zero_grad(set_to_none=True)
            if time.monotonic() > deadline:
                raise _Timeout(f"after trying {label}") from exc
            continue
        out.update(facts)
        out["input_size"] = list(spatial)
        if tried:
            out["fallback"] = "; ".join(tried)
        if problems:
            out["reason"] = f"at {label}: " + "; ".join(problems)
        else:
            out["status"] = "pass"
        return out
    out["reason"] = "forward/backward failed at every size tried: " + " | ".join(tried)
    return out


def check_model(
    name: str, *, timeout: float | None = None, size: int | None = None
) -> dict[str, Any]:
    """Checks one registry name; returns its health record.

    Args:
        name: a registry name (``"timm:resnet18"``, ``"timm3d:resnet18"``,
            ``"monai:densenet121"``, ``"ldtransformer_s"``).
        timeout: seconds; when the budget runs out between two steps the check stops and
            fails (a single step that never returns is stopped by :func:`run_sweep`).
        size: the side of the first input size tried instead of 224 (2D) / 64 (3D),
            e.g. 32 for a fast test; the model's own size is tried when it fails.

    Returns:
        ``{"name", "status" ("pass"/"fail"/"excluded"/"skipped"), "reason", "seconds",
        "source", "dims", "family", "params", "input_size", "unused_params",
        "cam_layer", "checks"}``; ``params``, ``input_size`` and ``cam_layer`` are keyed
        by spatial dims (``"2"``, ``"3"``), ``checks`` holds one result per dims.
        ``skipped`` means the check needs more memory than the machine allows. A model
        of several modalities (e.g. PET + CT cross-modal models, which need two) is
        checked with one channel per modality and its record lists ``modalities``.
    """
    from medcls.models.registry import parse_model_name
    from medcls.models.zoo import broken_models

    start = time.monotonic()
    deadline = start + (timeout if timeout else math.inf)
    source, _arch = parse_model_name(name)
    record: dict[str, Any] = {
        "name": name,
        "status": "fail",
        "reason": "",
        "seconds": 0.0,
        "source": source,
        "dims": [],
        "family": None,
        "params": {},
        "input_size": {},
        "unused_params": [],
        "cam_layer": {},
        "checks": [],
    }
    excluded = broken_models().get(name)
    if excluded is not None:
        record.update(status="excluded", reason=excluded)
        with contextlib.suppress(Exception):
            static = _static_info(name)
            record.update(dims=static.get("dims") or [], family=static.get("family"))
        return record
    try:
        dims = _dims_of(name)
    except Exception as exc:
        record["reason"] = f"unknown model: {_first_line(exc)}"
        return record
    record["dims"] = list(dims)
    explicit = source not in ("timm", "timm3d")  # those take no spatial_dims argument
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for d in dims:
            try:
                result = _check_dims(name, d if explicit else None, size, deadline)
            except _Timeout as exc:
                record.update(
                    status="fail",
                    timeout=True,
                    reason=f"timeout: over {timeout:g} s ({d}D, stopped {exc})",
                )
                break
            except _OutOfMemory as exc:
                record.update(status="skipped", reason=f"out of memory on this machine ({exc})")
                break
            result.setdefault("spatial_dims", d)
            record["checks"].append(result)
            key = str(result["spatial_dims"])
            record["family"] = record["family"] or result.get("family")
            if "params" in result:
                record["params"][key] = result["params"]
            if "input_size" in result:
                record["input_size"][key] = result["input_size"]
            if "cam_layer" in result:
                record["cam_layer"][key] = result["cam_layer"]
            record["unused_params"] += [f"{key}D:{p}" for p in result.get("unused_params", [])]
            if result.get("modalities"):
                record["modalities"] = result["modalities"]
        else:
            failed = [c for c in record["checks"] if c["status"] != "pass"]
            if failed:
                record["reason"] = "; ".join(
                    f"{c['spatial_dims']}D: {c['reason']}" if len(dims) > 1 else c["reason"]
                    for c in failed
                )
            else:
                record["status"] = "pass"
                notes = [c["fallback"] for c in record["checks"] if c.get("fallback")]
                if notes:
                    record["reason"] = "passes at its own size; standard size failed: " + (
                        "; ".join(notes)
                    )
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


# --------------------------------------------------------------------------- the sweep


def sweep_names(
    patterns: Sequence[str] = ("*",), *, include_excluded: bool = True, order: str = "size"
) -> list[str]:
    """The names a sweep visits: listed models plus (optionally) the excluded ones.

    Args:
        patterns: fnmatch patterns over full names.
        include_excluded: add the known-broken / excluded zoo models (recorded as
            ``excluded`` with their reason, not built).
        order: ``"size"`` (fewest parameters first, from the zoo index, so a partial
            sweep covers as many models as possible) or ``"name"``.
    """
    import fnmatch

    from medcls.models.registry import list_models
    from medcls.models.zoo import broken_models
    from medcls.models.zoo.families import index_entry

    names = list_models(list(patterns))
    if include_excluded:
        names += [n for n in broken_models() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    names = sorted(set(names))
    if order == "size":
        names.sort(key=lambda n: ((index_entry(n) or {}).get("params") or 0, n))
    elif order != "name":
        raise ValueError(f"order={order!r}, expected 'size' or 'name'")
    return names


def load_records(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Reads a results file: name -> its latest record (unreadable lines are skipped)."""
    records: dict[str, dict[str, Any]] = {}
    path = Path(path)
    if not path.is_file():
        return records
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a hard kill: that model is checked again
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                records[record["name"]] = record
    return records


def _file_state(path: Path) -> tuple[int, int]:
    with contextlib.suppress(OSError):
        st = path.stat()
        return st.st_size, st.st_mtime_ns
    return (0, 0)


def _append(path: Path, record: dict[str, Any]) -> None:
    """Appends one record as one line with a single write (so lines stay whole).

    A last line cut short by a hard kill (no newline) is closed first, so the new record
    starts a line of its own; :func:`load_records` skips the cut one.
    """
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)


def _worker_main(conn: Connection, threads: int, memory_gb: float | None) -> None:
    """Worker process: receives ``(name, timeout, size)``, sends back the record."""
    if memory_gb:
        with contextlib.suppress(Exception):
            import resource

            limit = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        name, timeout, size = task
        try:
            record = check_model(name, timeout=timeout, size=size)
        except BaseException as exc:  # report, never die silently
            record = {"name": name, "status": "fail", "reason": f"check crashed: {exc!r}"}
        conn.send(record)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    name: str | None = None
    started: float = 0.0


@dataclass
class SweepSummary:
    """What one :func:`run_sweep` call did."""

    checked: int
    skipped_done: int
    counts: dict[str, int]
    interrupted: bool = False


def run_sweep(
    out: str | os.PathLike[str] = DEFAULT_RESULTS,
    *,
    patterns: Sequence[str] = ("*",),
    names: Sequence[str] | None = None,
    limit: int | None = None,
    timeout: float = 900.0,
    size: int | None = None,
    jobs: int = 1,
    threads: int = 1,
    memory_gb: float | None = None,
    retry_failed: bool = False,
    order: str = "size",
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> SweepSummary:
    """Checks models in worker processes and appends their records to ``out``.

    Names already recorded in ``out`` are skipped (with ``retry_failed``, names whose
    latest record failed or was skipped are checked again), so the sweep resumes after an interruption.
    A name recorded as excluded that is listed again (an adapter now fixes it) is
    checked again.

    Args:
        out: the JSON-lines results file (created with its folder if missing).
        patterns: fnmatch patterns selecting the models (ignored when ``names`` given).
        names: exact names to check instead of a pattern.
        limit: check at most this many models in this call.
        timeout: seconds per model; a model still running then is stopped (its worker
            is killed and replaced) and recorded as ``fail`` with ``timeout: true``.
        size: first input side tried instead of 224/64 (tests use 32).
        jobs: worker processes run at once; 0 checks in this process (no hard time
            limit, no protection from crashes: for debugging and tests).
        threads: torch threads per worker.
        memory_gb: address-space limit per worker; a check that runs out of it is
            recorded ``skipped`` (a limit of this machine, not of the model).
        retry_failed: check again the names whose latest record is ``fail`` or
            ``skipped`` (after a fix, or on a machine with more memory).
        order: ``"size"`` or ``"name"`` (see :func:`sweep_names`).
        progress: show a rich progress bar.
        on_record: called with each new record.

    Returns:
        a :class:`SweepSummary`.
    """
    from medcls.progress import console, track

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    todo = list(names) if names is not None else sweep_names(patterns, order=order)
    seen, done = _file_state(path), load_records(path)
    from medcls.models.zoo import broken_models

    broken = broken_models()
    pending = [
        n
        for n in todo
        if n not in done
        or (retry_failed and done[n].get("status") in ("fail", "skipped"))
        # recorded as excluded, but an adapter fix has listed it since
        or (done[n].get("status") == "excluded" and n not in broken)
    ]
    skipped_done = len(todo) - len(pending)
    if limit is not None:
        pending = pending[: max(0, limit)]
    counts: Counter[str] = Counter()
    ctx = mp.get_context("spawn")
    workers: list[_Worker] = []
    if jobs < 0:
        raise ValueError(f"jobs={jobs}, expected >= 0 (0: check in this process)")

    def start_worker() -> _Worker:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, threads, memory_gb), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def stop_worker(worker: _Worker) -> None:
        with contextlib.suppress(Exception):
            worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)

    def finish(record: dict[str, Any]) -> None:
        record["checked_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        _append(path, record)
        written.add(record["name"])
        counts[record.get("status", "fail")] += 1
        if on_record is not None:
            on_record(record)
        advance(1)

    def lost(worker: _Worker, why: str, **extra: Any) -> dict[str, Any]:
        """The record of a check whose process was killed or died; a new one replaces it."""
        seconds = round(time.monotonic() - worker.started, 2)
        return {"name": worker.name, "status": "fail", "reason": why, "seconds": seconds, **extra}

    def drop_done_elsewhere() -> None:
        """Another sweep appending to the same file: leave it the names it recorded."""
        nonlocal seen, done, queue
        state = _file_state(path)
        if state == seen:
            return
        seen, others = state, load_records(path)
        fresh = {n for n in others if others[n] != done.get(n)} - written
        done = others
        kept = [n for n in queue if n not in fresh]
        advance(len(queue) - len(kept))
        queue = kept

    queue = list(reversed(pending))  # popped from the end
    written: set[str] = set()
    interrupted = False
    advance: Callable[[int], None] = lambda n=1: None  # noqa: E731
    try:
        description = f"zoo health ({skipped_done} already done)"
        with track(description, len(pending), enabled=progress) as advance:
            if jobs == 0:  # in this process: no hard time limit, easy to debug
                while queue:
                    drop_done_elsewhere()
                    if queue:
                        finish(check_model(queue.pop(), timeout=timeout, size=size))
            n_workers = min(jobs, len(queue))
            workers = [start_worker() for _ in range(n_workers)]
            while queue or any(w.name for w in workers):
                drop_done_elsewhere()
                for worker in workers:
                    if worker.name is None and queue:
                        worker.name, worker.started = queue.pop(), time.monotonic()
                        worker.conn.send((worker.name, timeout, size))
                busy = [w for w in workers if w.name]
                # the check stops itself at its deadline between steps; a step that
                # never returns is killed a grace period later
                hard = min(w.started for w in busy) + timeout + KILL_GRACE_S
                ready = wait([w.conn for w in busy], timeout=max(0.1, hard - time.monotonic()))
                for i, worker in enumerate(workers):
                    if worker.name is None:
                        continue
                    record, replace = None, True
                    if worker.conn in ready:
                        try:
                            record, replace = worker.conn.recv(), False
                        except (EOFError, OSError):
                            worker.process.join(timeout=5)
                            code = worker.process.exitcode
                            record = lost(
                                worker,
                                f"the check process died (exit code {code}: a crash or "
                                "the out-of-memory killer)",
                            )
                    elif time.monotonic() > worker.started + timeout + KILL_GRACE_S:
                        record = lost(
                            worker, f"timeout: still running after {timeout:g} s", timeout=True
                        )
                    if record is None:
                        continue
                    # killed, dead, or out of memory (which can leave a process unusable:
                    # a segfault in the next model was seen): a fresh process takes its place
                    replace = replace or record.get("status") == "skipped"
                    if replace:
                        stop_worker(worker)
                        if queue:
                            workers[i] = worker = start_worker()
                    worker.name = None
                    finish(record)
    except KeyboardInterrupt:
        interrupted = True
        console().print(
            "zoo health: interrupted; the results so far are kept (run again to resume)"
        )
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                if worker.name is None:
                    worker.conn.send(None)
                    worker.process.join(timeout=5)
            stop_worker(worker)
    return SweepSummary(sum(counts.values()), skipped_done, dict(counts), interrupted)


# --------------------------------------------------------------------------- the report


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {"python": platform.python_version()}
    for package in ("torch", "timm", "timm-3d", "monai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _rate(passed: int, tried: int) -> str:
    return f"{100 * passed / tried:.1f}%" if tried else "n/a"


def write_report(
    records: dict[str, dict[str, Any]] | Iterable[dict[str, Any]],
    path: str | os.PathLike[str] = DEFAULT_REPORT,
    *,
    listed: Sequence[str] | None = None,
    excluded: dict[str, str] | None = None,
    info: dict[str, Any] | None = None,
    results_path: str | os.PathLike[str] | None = DEFAULT_RESULTS,
    command: str = CONTINUE_COMMAND,
) -> str:
    """Writes the zoo health report (Markdown) from sweep records; returns its text.

    Args:
        records: the latest record per model (as :func:`load_records` returns) or an
            iterable of records.
        path: where to write (``None``: only return the text).
        listed: the names ``list_models()`` lists (default: asked from the registry).
        excluded: excluded / known-broken names -> reason (default:
            :func:`medcls.models.zoo.broken_models`), shown even if the sweep did not
            record them.
        info: ``{name: {"source", "dims", "family"}}`` for models whose record lacks
            them or that have none yet (default: from the registry and the zoo index).
        results_path: the results file named in the report.
        command: the command that continues / repeats the sweep.

    The report is marked *partial* while some listed model has no record.
    """
    if not isinstance(records, dict):
        records = {r["name"]: r for r in records}
    if listed is None:
        from medcls.models.registry import list_models

        listed = list_models()
    if excluded is None:
        from medcls.models.zoo import broken_models

        excluded = broken_models()
    listed_set = set(listed)
    if info is None:
        info = {n: _static_info(n) for n in listed_set | set(excluded)}
    rows: dict[str, dict[str, Any]] = {}
    for name in sorted(listed_set | set(excluded) | set(records)):
        rec = records.get(name)
        meta = dict(info.get(name) or {})
        if rec is not None:
            meta.update({k: rec.get(k) for k in ("source", "dims", "family") if rec.get(k)})
        if name in excluded and (rec is None or rec.get("status") != "excluded"):
            status, reason = "excluded", excluded[name]
        elif rec is not None and (name in listed_set or rec.get("status") == "excluded"):
            status, reason = rec.get("status", "fail"), rec.get("reason", "")
        elif rec is not None:  # recorded, but no longer listed nor excluded (renamed?)
            continue
        else:
            status, reason = "unchecked", ""
        source = meta.get("source") or (name.split(":", 1)[0] if ":" in name else "medcls")
        dims = [int(d) for d in (meta.get("dims") or [])]
        rows[name] = {
            "status": status,
            "reason": reason,
            "source": source,
            "dims": dims,
            "family": meta.get("family") or "unknown",
            "listed": name in listed_set,
            "seconds": (rec or {}).get("seconds"),
            "timeout": bool((rec or {}).get("timeout")),
        }
    statuses = Counter(r["status"] for r in rows.values())
    tried = statuses["pass"] + statuses["fail"]
    unchecked = statuses["unchecked"]
    partial = unchecked > 0
    listed_rows = [r for r in rows.values() if r["listed"]]
    passing = [r for r in listed_rows if r["status"] == "pass"]

    def group(keys: Callable[[dict[str, Any]], Iterable[str]]) -> list[list[Any]]:
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for r in rows.values():
            for key in keys(r):
                table[key][r["status"]] += 1
                table[key]["listed"] += int(r["listed"])
        out = []
        for key in sorted(table):
            c = table[key]
            t = c["pass"] + c["fail"]
            out.append(
                [
                    key,
                    c["listed"],
                    t,
                    c["pass"],
                    c["fail"],
                    c["skipped"],
                    c["excluded"],
                    c["unchecked"],
                    _rate(c["pass"], t),
                ]
            )
        return out

    header = [
        "",
        "listed",
        "tried",
        "pass",
        "fail",
        "skipped",
        "excluded",
        "not yet checked",
        "pass rate",
    ]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    hours = sum(float(r.get("seconds") or 0) for r in records.values()) / 3600
    lines = ["# Model zoo health", ""]
    if partial:
        lines += [
            f"> **Partial results.** The sweep has tried {tried} of the {len(listed_rows)} "
            f"listed models so far ({unchecked} not yet checked). Continue it (it resumes "
            f"where it stopped) with `{command}`, which also rewrites this page.",
            "",
        ]
    lines += [
        "Every model that `medcls.models.list_models()` lists is built with `in_chans=1`, "
        "`num_classes=2` and random weights, run forward and backward (cross-entropy, batch "
        f"{BATCH}, train mode) at its standard input (2D 224², or the model's own "
        "`model_cfg.input_size` when it is fixed or 224² fails; 3D 64³, or the model's own "
        "size when 64³ fails), and checked for: logits of shape (2, 2), finite logits and "
        "gradients, a gradient for every trainable parameter, and a `cam_layer` that names "
        "a submodule which runs in the forward pass. Models that take 2D and 3D are checked "
        "in both.",
        "",
        f"Written {now} by `medcls models check` from `{results_path}` ({versions}; "
        f"{hours:.1f} h of checks, on {os.cpu_count()} {platform.machine()} CPU core(s), "
        "random inputs, no GPU). "
        f"Run the whole sweep (resuming) with `{command}`; "
        "`medcls models check --pattern 'timm3d:*'` checks a subset.",
        "",
        "## Summary",
        "",
    ]
    passing_3d = sum(3 in r["dims"] for r in passing)
    passing_hybrid = sum(r["family"] == "hybrid" for r in passing)
    summary = [
        ["listed models (`medcls models --count`)", len(listed_rows)],
        ["tried (pass + fail)", tried],
        ["pass", statuses["pass"]],
        ["fail", statuses["fail"]],
        ["**pass rate over everything tried**", f"**{_rate(statuses['pass'], tried)}**"],
        ["skipped (more memory than this machine has; not tried)", statuses["skipped"]],
        ["excluded from the listing (reasons below)", statuses["excluded"]],
        ["listed, not yet checked", unchecked],
        ["listed and passing", len(passing)],
        ["listed and passing, 3D", passing_3d],
        ["listed and passing, CNN-Transformer hybrids", passing_hybrid],
        [
            "listed and passing, 3D CNN-Transformer hybrids",
            sum(r["family"] == "hybrid" and 3 in r["dims"] for r in passing),
        ],
    ]
    lines += _table(["", "models"], summary)
    lines += ["", "## Per source", ""]
    lines += _table(["source", *header[1:]], group(lambda r: [r["source"]]))
    lines += ["", "## Per spatial dims (a model that takes 2D and 3D counts in both)", ""]
    lines += _table(["dims", *header[1:]], group(lambda r: [f"{d}D" for d in r["dims"]]))
    lines += ["", "## Per family (3D hybrids also counted separately)", ""]
    lines += _table(
        ["family", *header[1:]],
        group(
            lambda r: (
                [r["family"]]
                + (["hybrid, 3D"] if r["family"] == "hybrid" and 3 in r["dims"] else [])
            )
        ),
    )
    for status, title, note in (
        (
            "fail",
            "Failed",
            "Timeouts (marked) depend on the machine's load and are not exclusions; "
            "`medcls models check --retry-failed` checks failed models again.",
        ),
        (
            "skipped",
            "Skipped",
            "Not tried: the check needs more memory than the machine that "
            "ran the sweep allows (run on a larger machine).",
        ),
        (
            "excluded",
            "Excluded",
            "Left out of `list_models()` (`medcls models --broken`), with the reason measured.",
        ),
    ):
        items = sorted((n, r) for n, r in rows.items() if r["status"] == status)
        lines += ["", f"## {title} models ({len(items)})", ""]
        if note:
            lines += [note, ""]
        if items:
            lines += _table(
                ["model", "reason"],
                [(n, ("[timeout] " if r["timeout"] else "") + r["reason"]) for n, r in items],
            )
        else:
            lines += ["None."]
    own_size = sorted(
        n
        for n, r in rows.items()
        if r["status"] == "pass" and "standard size failed" in r["reason"]
    )
    lines += ["", f"## Passing only at their own input size ({len(own_size)})", ""]
    lines += [", ".join(f"`{n}`" for n in own_size) or "None."]
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text


def _static_info(name: str) -> dict[str, Any]:
    """Source, dims and family of a name without building it (registry and zoo index)."""
    from medcls.models import registry
    from medcls.models.zoo.families import index_entry

    source, arch = registry.parse_model_name(name)
    if source == registry.NATIVE:
        registry._load_native()
        native = registry._ENTRIES.get(arch)  # excluded ones too (get_entry refuses them)
        if native is None:
            return {"source": source}
        return {"source": source, "dims": list(native.dims), "family": native.family}
    entry = index_entry(name) or {}
    dims = {"timm": [2], "timm3d": [3], "monai": [2, 3]}.get(source, [])
    return {"source": source, "dims": dims, "family": entry.get("family")}


if __name__ == "__main__":  # python -m medcls.models.zoo.health [medcls models check args]
    from medcls.cli.main import main

    sys.exit(main(["models", "check", *sys.argv[1:]]))
