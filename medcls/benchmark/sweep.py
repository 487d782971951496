"""The benchmark folder and the sweep over its runs: resumable, shared by many processes.

Layout of a benchmark folder::

    BENCH/
      benchmark.json            the spec: base config, models, folds, seeds, report options
      config.yaml               the resolved base configuration
      splits/folds-seed<S>.csv  case -> test or its cross-validation fold (one split
                                for every model; one file per seed with --resplit)
      runs/<model>/seed<S>-fold<K>/
                                a medcls run folder (see medcls.engine.api) plus
                                done.json (finished: timing, size, speed) or
                                failed.json (the error; retried by the next sweep)
      claims/<slot>/claim-NNNNNN
                                who runs a slot now (see medcls.benchmark.slots)
      results/, figures/, report.html   written by medcls.benchmark.report

Every process started with the same command (on one machine or many sharing the
folder) walks the slots in the same order and runs those it can claim. A
finished slot (``done.json``) is never run again; a slot whose process died is
taken over and continues from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcls.benchmark.slots import atomic_write_json, claim_slot, read_claim, read_json
from medcls.benchmark.spec import (
    BenchmarkSpec,
    ModelSpec,
    ReportOptions,
    Slot,
    parse_models,
    parse_seeds,
)
from medcls.errors import ConfigError, DataError

__all__ = [
    "SLOT_ENV",
    "Benchmark",
    "SweepStats",
    "ddp_worker_slot",
    "detach_from_torchrun",
    "is_ddp_worker",
    "prepare_benchmark",
    "run_sweep",
    "train_slot",
]

SPEC_FILE = "benchmark.json"

SLOT_ENV = "MEDCLS_BENCHMARK_SLOT"
"""Set while a slot trains, so the DDP workers Lightning starts (``trainer.devices > 1``)
re-running the command know which run they belong to."""

_TORCHRUN_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_NAME",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_ERROR_FILE",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING",
)


def is_ddp_worker() -> bool:
    """True in a DDP worker process that Lightning started for one slot's training."""
    return bool(os.environ.get(SLOT_ENV)) and os.environ.get("LOCAL_RANK", "0") != "0"


def detach_from_torchrun(environ: dict[str, str] | None = None) -> str | None:
    """Turn a ``torchrun --nproc-per-node N medcls benchmark ...`` process into a sweep worker.

    Each of the N processes becomes an independent worker that claims whole runs:
    it keeps GPU number ``LOCAL_RANK`` (of ``CUDA_VISIBLE_DEVICES``, if set) and drops
    torchrun's rendezvous variables, so that its runs train on one device each
    instead of joining one distributed job. Call before torch initialises CUDA.

    Returns:
        a description of what was done, or ``None`` outside torchrun.
    """
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" not in env:
        return None
    local = int(env.get("LOCAL_RANK", "0"))
    visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    device = visible[local % len(visible)] if visible else str(local)
    env["CUDA_VISIBLE_DEVICES"] = device
    rank = env.get("RANK", str(local))
    for key in _TORCHRUN_VARIABLES:
        env.pop(key, None)
    return f"torchrun rank {rank}: an independent sweep worker on GPU {device} (if any)"


@contextlib.contextmanager
def _folder_lock(path: Path, *, timeout: float = 120.0, stale: float = 60.0):
    """A short exclusive section (``O_EXCL`` lock file) for updating ``benchmark.json``."""
    deadline = time.time() + timeout
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > stale:
                    path.unlink()  # left by a killed process
                    continue
            if time.time() > deadline:
                raise ConfigError(
                    f"{path}: another process has held this lock for over {timeout:.0f} s; "
                    "delete the file if no benchmark process is running"
                ) from None
            time.sleep(0.05)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class Benchmark:
    """A benchmark folder and its spec.

    Args:
        folder: the benchmark folder.
        spec: its :class:`BenchmarkSpec` (read from ``benchmark.json`` by :meth:`open`).
    """

    def __init__(self, folder: str | Path, spec: BenchmarkSpec) -> None:
        self.folder = Path(folder)
        self.spec = spec

    # ------------------------------------------------------------ paths
    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    @property
    def claims_dir(self) -> Path:
        return self.folder / "claims"

    @property
    def results_dir(self) -> Path:
        return self.folder / "results"

    @property
    def figures_dir(self) -> Path:
        return self.folder / "figures"

    @property
    def report_path(self) -> Path:
        return self.folder / "report.html"

    def run_dir(self, slot: Slot) -> Path:
        return self.runs_dir / slot.model.slug / slot.run_name

    def claim_dir(self, slot: Slot) -> Path:
        return self.claims_dir / slot.key

    def done(self, slot: Slot) -> dict[str, Any] | None:
        """The ``done.json`` of a finished slot, else ``None``."""
        return read_json(self.run_dir(slot) / "done.json")

    def is_done(self, slot: Slot) -> bool:
        return (self.run_dir(slot) / "done.json").is_file()

    def failed(self, slot: Slot) -> dict[str, Any] | None:
        return read_json(self.run_dir(slot) / "failed.json")

    # ------------------------------------------------------------ open / create
    @classmethod
    def open(cls, folder: str | Path) -> Benchmark:
        """Open an existing benchmark folder.

        Raises:
            ConfigError: no ``benchmark.json`` in ``folder``.
        """
        folder = Path(folder)
        data = read_json(folder / SPEC_FILE)
        if data is None:
            raise ConfigError(
                f"{folder}: not a benchmark folder (no readable {SPEC_FILE}); "
                "run `medcls benchmark CONFIG --models ... --output FOLDER` first"
            )
        return cls(folder, BenchmarkSpec.from_dict(data))

    def save_spec(self) -> None:
        atomic_write_json(self.folder / SPEC_FILE, self.spec.to_dict())

    # ------------------------------------------------------------ splits
    def split_seed_of(self, seed: int) -> int:
        return seed if self.spec.resplit else self.spec.split_seed

    def folds_path(self, seed: int) -> Path:
        return self.folder / "splits" / f"folds-seed{self.split_seed_of(seed)}.csv"

    def read_folds(self, seed: int) -> list[dict[str, str]]:
        """Rows ``id, patient_id, label, split (test|cv), fold`` of the split used by ``seed``."""
        path = self.folds_path(seed)
        if not path.is_file():
            raise DataError("split file not found; run the benchmark to create it", path=path)
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def ensure_splits(self) -> list[Path]:
        """Compute and save the folds once (the same for every model and process).

        An existing split file is kept (it defines the benchmark); it must still
        list every case of the data.

        Raises:
            DataError: the data gained cases since the split was saved.
        """
        from medcls.config import load_config
        from medcls.data.cases import load_cases

        cfg = load_config(self.spec.config)
        table = load_cases(cfg.data, on_bad="collect")
        if table.task not in ("binary", "multiclass"):
            raise ConfigError(
                f"medcls benchmark compares binary and multiclass classifiers; the data of "
                f"{cfg.data.source!r} is {table.task} (train such models with medcls train)"
            )
        written = []
        for split_seed in sorted({self.split_seed_of(s) for s in self.spec.seeds}):
            path = self.folder / "splits" / f"folds-seed{split_seed}.csv"
            if path.is_file():
                with path.open(newline="", encoding="utf-8") as handle:
                    known = {row["id"] for row in csv.DictReader(handle)}
                missing = [c.id for c in table.cases if c.id not in known]
                if missing:
                    raise DataError(
                        f"the saved split does not list case {missing[0]!r} ({len(missing)} "
                        "missing); the data changed since this benchmark started",
                        path=path,
                    )
                continue
            rows = self._fold_rows(table, cfg, split_seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, ["id", "patient_id", "label", "split", "fold"])
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, path)
            written.append(path)
        return written

    def _fold_rows(self, table, cfg, split_seed: int) -> list[dict[str, Any]]:
        from medcls.data.cases import CaseTable
        from medcls.data.splits import assign_splits, grouped_stratified_folds

        folds = self.spec.folds
        base = self.spec.split_seed
        fold_of: dict[str, int] = {}
        test: set[str] = set()
        for k in range(folds):
            assignment = assign_splits(
                table,
                val_fraction=cfg.data.val_fraction,
                test_fraction=cfg.data.test_fraction,
                seed=base,
                fold=k,
                num_folds=folds,
            )
            test = {i for i, s in assignment.items() if s == "test"}
            fold_of.update({i: k for i, s in assignment.items() if s == "val"})
        if split_seed != base:  # --resplit: new folds, the same test cases
            pool = [c for c in table.cases if c.id not in test]
            if any(c.fold is not None for c in pool):
                raise ConfigError(
                    "--resplit: the manifest gives each case a fold (column "
                    f"{cfg.data.fold_column!r}); drop --resplit or the fold column"
                )
            sub = CaseTable(pool, table.classes, table.task, table.modalities, source=table.source)
            fold_of = grouped_stratified_folds(sub, folds=folds, seed=split_seed)
        rows = []
        for case in table.cases:
            rows.append(
                {
                    "id": case.id,
                    "patient_id": case.patient_id or case.id,
                    "label": "|".join(case.labels),
                    "split": "test" if case.id in test else "cv",
                    "fold": "" if case.id in test else fold_of[case.id],
                }
            )
        return rows

    def write_run_split(self, slot: Slot, path: Path) -> Path:
        """The run's ``splits.csv``: fold ``slot.fold`` is ``val``, the other folds ``train``."""
        rows = self.read_folds(slot.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "split", "patient_id", "label"])
            for row in rows:
                if row["split"] == "test":
                    split = "test"
                else:
                    split = "val" if int(row["fold"]) == slot.fold else "train"
                writer.writerow([row["id"], split, row["patient_id"], row["label"]])
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------ runs
    def slot_config(self, slot: Slot):
        """The :class:`~medcls.config.ExperimentConfig` of one run."""
        from medcls.config import load_config

        raw = copy.deepcopy(self.spec.config)
        model = dict(raw.get("model") or {})
        model.update(name=slot.model.name, kwargs=dict(slot.model.kwargs), checkpoint_path=None)
        raw["model"] = model
        raw["seed"] = slot.seed
        raw["name"] = f"{slot.model.slug}-{slot.run_name}"
        raw["run_dir"] = str(self.run_dir(slot))
        raw["resume"] = True
        data = dict(raw.get("data") or {})
        data.update(fold=slot.fold, num_folds=self.spec.folds)
        raw["data"] = data
        return load_config(raw)

    def slots(
        self, models: Iterable[ModelSpec] | None = None, seeds: Iterable[int] | None = None
    ) -> list[Slot]:
        """The slots of the given models and seeds (default: all), in sweep order."""
        wanted_models = {m.slug for m in models} if models is not None else None
        wanted_seeds = set(seeds) if seeds is not None else None
        return [
            s
            for s in self.spec.slots()
            if (wanted_models is None or s.model.slug in wanted_models)
            and (wanted_seeds is None or s.seed in wanted_seeds)
        ]

    def status(self, *, stale_after: float = 600.0) -> dict[str, list[Slot]]:
        """Slots by state: ``done``, ``running`` (a live claim), ``failed``, ``pending``."""
        states: dict[str, list[Slot]] = {"done": [], "running": [], "failed": [], "pending": []}
        for slot in self.spec.slots():
            if self.is_done(slot):
                states["done"].append(slot)
                continue
            claims = sorted(self.claim_dir(slot).glob("claim-*"))
            live = False
            if claims:
                info = read_claim(claims[-1], stale_after=stale_after)
                live = info is not None and not info.stale
            if live:
                states["running"].append(slot)
            elif (self.run_dir(slot) / "failed.json").is_file():
                states["failed"].append(slot)
            else:
                states["pending"].append(slot)
        return states


def prepare_benchmark(
    config: str | Path | dict,
    models: str | Sequence[str | ModelSpec],
    output: str | Path,
    *,
    folds: int = 5,
    seeds: str | Sequence[int] = (0,),
    overrides: Iterable[str] = (),
    resplit: bool = False,
    report: ReportOptions | dict | None = None,
) -> tuple[Benchmark, list[ModelSpec], list[int]]:
    """Create (or join) a benchmark folder and save its split.

    A folder that already holds a benchmark is joined when its configuration,
    folds and split agree; models and seeds given here are added to it.

    Args:
        config: the experiment YAML (or a preset name resolved by the CLI), or a mapping.
        models: ``"a,b{k: v}"`` or a list of names/specs.
        output: the benchmark folder.
        folds: cross-validation folds.
        seeds: training seeds.
        overrides: ``key=value`` configuration overrides.
        resplit: new folds per seed (repeated cross-validation).
        report: report options (threshold rule, reference model, table preset, ...).

    Returns:
        ``(benchmark, models, seeds)``: the folder, and the models and seeds this
        call asked for (the folder may hold more).

    Raises:
        ConfigError: an invalid configuration or model name, or a folder whose
            benchmark differs (the differing fields are named).
    """
    from medcls.config import config_to_dict, load_config, save_config
    from medcls.models import is_model
    from medcls.models.registry import unknown_model_error

    cfg = load_config(config, overrides)
    specs = parse_models(models)
    base_model = cfg.model.name
    specs = [
        ModelSpec(s.name, dict(cfg.model.kwargs), s.label, s.slug)
        if s.name == base_model and not s.kwargs and cfg.model.kwargs
        else s
        for s in specs
    ]
    for spec in specs:
        if not is_model(spec.name):
            raise unknown_model_error(spec.name)
    seed_list = parse_seeds(seeds if not isinstance(seeds, int) else [seeds])
    options = (
        report
        if isinstance(report, ReportOptions)
        else ReportOptions.from_dict(report)
        if report
        else ReportOptions()
    ).validate()
    spec = BenchmarkSpec(
        config=config_to_dict(cfg),
        models=specs,
        folds=folds,
        seeds=seed_list,
        split_seed=cfg.seed,
        resplit=resplit,
        report=options,
    )
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder / f"{SPEC_FILE}.lock"):
        existing = read_json(folder / SPEC_FILE)
        if existing is not None:
            old = BenchmarkSpec.from_dict(existing)
            mine, theirs = spec.identity(), old.identity()
            if mine != theirs:
                keys = _diff_keys(theirs, mine)
                raise ConfigError(
                    f"{folder} holds a benchmark with other settings ({', '.join(keys[:6])}"
                    f"{' ...' if len(keys) > 6 else ''} differ); use another --output folder "
                    "or the same configuration, --folds and split"
                )
            known = {m.slug for m in old.models}
            for m in old.models:
                mine_m = next((s for s in specs if s.slug == m.slug), None)
                if mine_m is not None and mine_m.label != m.label:
                    raise ConfigError(
                        f"{m.name}: labelled {m.label!r} in {folder}, {mine_m.label!r} now"
                    )
            merged_models = old.models + [m for m in specs if m.slug not in known]
            merged_seeds = old.seeds + [s for s in seed_list if s not in old.seeds]
            spec = BenchmarkSpec(
                config=old.config,
                models=merged_models,
                folds=old.folds,
                seeds=merged_seeds,
                split_seed=old.split_seed,
                resplit=old.resplit,
                report=options if report is not None else old.report,
            )
        bench = Benchmark(folder, spec)
        bench.save_spec()
        if not (folder / "config.yaml").is_file():
            save_config(load_config(spec.config), folder / "config.yaml")
    bench.ensure_splits()
    return bench, specs, seed_list


# ---------------------------------------------------------------- one run


def _latency_device(cfg) -> str:
    import torch

    wants_cuda = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return "cuda" if wants_cuda and torch.cuda.is_available() else "cpu"


def train_slot(bench: Benchmark, slot: Slot) -> dict[str, Any]:
    """Train one slot with :func:`medcls.engine.api.train`, then measure the model.

    The run continues from its last checkpoint if an earlier process was
    interrupted. Returns what goes into ``done.json``.
    """
    import torch

    from medcls.benchmark.profile import profile_model
    from medcls.benchmark.samples import load_run_samples
    from medcls.engine.api import load_run_model, train

    run_dir = bench.run_dir(slot)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "splits.csv").is_file():
        bench.write_run_split(slot, run_dir / "splits.csv")
    cfg = bench.slot_config(slot)
    os.environ[SLOT_ENV] = slot.key  # inherited by DDP workers Lightning may start
    try:
        result = train(cfg)
    finally:
        os.environ.pop(SLOT_ENV, None)
    timing = read_json(run_dir / "timing.json") or {}
    model, meta = load_run_model(run_dir)
    if getattr(model, "modalities", None):
        x = load_run_samples(run_dir, split="train", per_class=1, max_cases=1).input_for(model, 1)
    else:
        x = torch.zeros(1, int(meta["model"]["in_chans"]), *[int(s) for s in meta["spatial_size"]])
    profile = profile_model(model, x, device=_latency_device(cfg))
    epochs = int(timing.get("epochs_run") or 0)
    fit_seconds = timing.get("fit_seconds")
    return {
        "best_epoch": result.best_epoch,
        "fit_seconds": fit_seconds,
        "epochs_run": epochs,
        "seconds_per_epoch": (fit_seconds / epochs) if fit_seconds and epochs else None,
        **profile,
        "family": getattr(getattr(model, "model_cfg", None), "family", None),
        "spatial_dims": meta["model"]["spatial_dims"],
        "in_chans": meta["model"]["in_chans"],
        "classes": meta["classes"],
        "task": meta["task"],
    }


def ddp_worker_slot(bench: Benchmark) -> Slot | None:
    """In a DDP worker (see :func:`is_ddp_worker`): the slot its launcher is training."""
    if not is_ddp_worker():
        return None
    key = os.environ[SLOT_ENV]
    for slot in bench.spec.slots():
        if slot.key == key:
            return slot
    raise ConfigError(f"{SLOT_ENV}={key!r} names no run of the benchmark in {bench.folder}")


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepStats:
    """What one process did in :func:`run_sweep`."""

    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)


def run_sweep(
    bench: Benchmark,
    *,
    models: Iterable[ModelSpec] | None = None,
    seeds: Iterable[int] | None = None,
    runner: Callable[[Benchmark, Slot], dict[str, Any]] = train_slot,
    max_runs: int | None = None,
    stale_after: float = 600.0,
    heartbeat: float = 20.0,
    log: Callable[[str], None] | None = None,
) -> SweepStats:
    """Run every slot of ``models`` x ``seeds`` x folds that no other process runs or ran.

    A slot whose run raises is recorded in its ``failed.json`` (with the
    traceback) and skipped by this process; the next sweep retries it. Ctrl-C
    (``KeyboardInterrupt``) releases the slot at once and stops the sweep.

    Args:
        bench: the benchmark folder.
        models: the models to run (default all of the folder's).
        seeds: the seeds to run (default all).
        runner: trains one slot and returns the facts for ``done.json``
            (default :func:`train_slot`).
        max_runs: stop after this many runs (a cluster job's share).
        stale_after: seconds without heartbeat after which another machine's
            claim is taken over.
        heartbeat: seconds between claim refreshes.
        log: where progress lines go (default: the medcls console).

    Returns:
        The slots this process ran, failed, found done, or left to others.
    """
    if log is None:
        from medcls.progress import console

        def log(text: str) -> None:
            console().print(text, highlight=False, soft_wrap=True)

    stats = SweepStats()
    todo = bench.slots(models, seeds)
    total = len(todo)
    for index, slot in enumerate(todo, start=1):
        if max_runs is not None and len(stats.ran) + len(stats.failed) >= max_runs:
            break
        if bench.is_done(slot):
            stats.already_done.append(slot.key)
            continue
        takeover: list[Any] = []
        claim = claim_slot(
            bench.claim_dir(slot),
            is_done=lambda slot=slot: bench.is_done(slot),
            stale_after=stale_after,
            heartbeat=heartbeat,
            on_takeover=takeover.append,
        )
        if claim is None:
            (stats.already_done if bench.is_done(slot) else stats.busy).append(slot.key)
            continue
        run_dir = bench.run_dir(slot)
        try:
            if takeover:
                stats.taken_over.append(slot.key)
                log(f"[{index}/{total}] {slot.describe()}: taking over ({takeover[0].reason})")
            with contextlib.suppress(FileNotFoundError):
                (run_dir / "failed.json").unlink()
            log(f"[bold][{index}/{total}][/bold] {slot.describe()}")
            started = time.time()
            try:
                facts = runner(bench, slot)
            except Exception as exc:  # one broken model must not stop the sweep; recorded
                atomic_write_json(
                    run_dir / "failed.json",
                    {
                        "slot": slot.key,
                        "model": slot.model.name,
                        "label": slot.model.label,
                        "seed": slot.seed,
                        "fold": slot.fold,
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "at": time.time(),
                    },
                )
                stats.failed.append(slot.key)
                log(f"[red]{slot.describe()} failed:[/red] {type(exc).__name__}: {exc}")
                continue
            if not claim.still_owned():
                log(f"[yellow]{slot.describe()}: the claim was taken over meanwhile; not recorded")
                continue
            record = {
                "slot": slot.key,
                "model": slot.model.name,
                "label": slot.model.label,
                "slug": slot.model.slug,
                "seed": slot.seed,
                "fold": slot.fold,
                "run_dir": str(run_dir.relative_to(bench.folder)),
                "started_at": started,
                "finished_at": time.time(),
                "wall_seconds": time.time() - started,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "claim": claim.number,
                **facts,
            }
            atomic_write_json(run_dir / "done.json", record)
            stats.ran.append(slot.key)
        finally:
            claim.release()
    return stats
