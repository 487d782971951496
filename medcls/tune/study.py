"""``medcls tune``: hyperparameter search with Optuna over the training engine.

A tuning run lives in one folder (``output_dir/<name>-tune`` or ``run_dir``)::

    TUNE_DIR/
      study.db                 the Optuna study (SQLite; unless tune.storage names another)
      trials/0000/ ...         one ordinary medcls run folder per trial (fold0/... with folds)
      best.yaml                the best configuration, runnable with ``medcls train``
      trials.csv               one row per trial: state, value, parameters, test metrics
      figures/                 optimisation history, parameter importances, parallel coordinates
      report.html              all of the above on one page

Each trial trains with :func:`medcls.engine.api.train` on the configuration plus its
sampled values, and reports its validation metric after every epoch so the pruner
can stop it early. The study is the state: running the same command again (after a
crash, or on another machine with the same ``tune.storage``) continues it until
``tune.trials`` trials have finished. A trial whose worker died is failed once its
heartbeat is ``tune.grace_seconds`` old and queued again with the same parameters;
the new attempt resumes from the dead one's last checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medcls.config import ExperimentConfig, config_to_dict, load_config
from medcls.errors import ConfigError, DataError
from medcls.tune.space import SearchParam, config_value, parse_space, to_override

__all__ = ["TuneResult", "tune", "tune_dir"]

SCALARS = ("auc", "accuracy", "balanced_accuracy", "f1", "precision", "recall", "specificity")
# settings that may change between invocations of one study without changing what it searches
_RUNTIME_KEYS = ("trials", "timeout", "storage", "heartbeat_seconds", "grace_seconds")


@dataclass
class TuneResult:
    """What :func:`tune` returns."""

    tune_dir: Path
    study_name: str
    storage: str
    best_value: float | None
    best_params: dict[str, Any]
    default_value: float | None
    finished: int
    files: dict[str, Path] = field(default_factory=dict)


def tune_dir(cfg: ExperimentConfig) -> Path:
    """The tuning folder: ``run_dir`` if set, else ``output_dir/<name>-tune``."""
    return Path(cfg.run_dir) if cfg.run_dir else Path(cfg.output_dir) / f"{cfg.name}-tune"


def _metric_key(metric: str) -> str:
    name = metric.removeprefix("val_")
    if not metric.startswith("val_") or name not in (*SCALARS, "loss"):
        choices = ", ".join(f"val_{m}" for m in (*SCALARS, "loss"))
        raise ConfigError(f"tune.metric={metric!r}: expected one of {choices}")
    return name


def _direction(cfg: ExperimentConfig) -> str:
    if cfg.tune.direction != "auto":
        return cfg.tune.direction
    return "minimize" if cfg.tune.metric.endswith("loss") else "maximize"


def _fingerprint(raw: dict[str, Any]) -> str:
    """Hash of what defines the study (the configuration minus run-time settings)."""
    data = json.loads(json.dumps(raw, default=str))
    for key in _RUNTIME_KEYS:
        data.get("tune", {}).pop(key, None)
    for key in ("run_dir", "output_dir", "resume"):
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _storage(cfg: ExperimentConfig, folder: Path):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = cfg.tune.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    if "://" not in url:
        raise ConfigError(
            f"tune.storage={url!r}: expected a database URL such as sqlite:///study.db or "
            "postgresql://user:password@host/db"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(5):
        try:
            storage = RDBStorage(
                url,
                heartbeat_interval=cfg.tune.heartbeat_seconds,
                grace_period=cfg.tune.grace_seconds,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs={"connect_args": {"timeout": 60}}
                if url.startswith("sqlite")
                else None,
            )
            break
        except Exception as exc:  # sqlalchemy raises many kinds (driver missing, refused, ...)
            # workers started together race to create the tables: the loser retries
            if attempt == 4 or "already exists" not in str(exc):
                raise ConfigError(
                    f"tune.storage={url!r}: cannot open the study storage ({exc})"
                ) from None
            time.sleep(1.0 + attempt)
    return storage, url


def _pruner(cfg: ExperimentConfig):
    import optuna

    t = cfg.tune
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(
            # steps are 1-based epochs; a step below n_warmup_steps is never pruned
            n_startup_trials=t.startup_trials,
            n_warmup_steps=t.warmup_epochs + 1,
        )
    if t.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, t.warmup_epochs))
    return optuna.pruners.NopPruner()


def _sampler(cfg: ExperimentConfig):
    import optuna

    if cfg.tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    # a seeded sampler: the same study on one worker proposes the same trials
    return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.tune.startup_trials)


def _pruning_callback(trial: Any, metric: str):
    import lightning.pytorch as pl
    import optuna

    class PruneOnValidation(pl.Callback):
        """Reports the validation metric of every epoch; stops a trial the pruner rejects."""

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking or metric not in trainer.callback_metrics:
                return
            value = float(trainer.callback_metrics[metric])
            epoch = trainer.current_epoch + 1
            if math.isfinite(value):
                trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric}={value:.4f} at epoch {epoch}")

    return PruneOnValidation()


def _default_params(params: list[SearchParam], raw: dict[str, Any]) -> dict[str, Any]:
    """The configuration's own value of each searched key that the space contains."""
    out = {}
    for p in params:
        found, value = config_value(raw, p.key)
        if found and p.contains(value):
            out[p.key] = value
    return out


def _trial_dir(folder: Path, number: int) -> Path:
    return folder / "trials" / f"{number:04d}"


def _adopt_previous_attempt(folder: Path, trial: Any) -> bool:
    """Moves a failed attempt's run folder to ``trial``'s, so it resumes; True if done."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    previous = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if previous is None:
        return False
    old, new = _trial_dir(folder, previous), _trial_dir(folder, trial.number)
    if not old.is_dir() or new.exists():
        return False
    old.rename(new)
    return True


def _scalars(results: dict[str, Any]) -> dict[str, float]:
    return {k: float(results[k]) for k in (*SCALARS, "loss") if k in results}


class _Objective:
    """Trains one trial (one run per fold) and returns its mean validation metric."""

    def __init__(self, cfg: ExperimentConfig, raw: dict, params: list[SearchParam], folder: Path):
        self.cfg, self.raw, self.params, self.folder = cfg, raw, params, folder
        self.metric = cfg.tune.metric
        self.key = _metric_key(self.metric)

    def __call__(self, trial: Any) -> float:
        from medcls.engine.api import train
        from medcls.progress import console

        fixed = set(trial.user_attrs.get("default_keys", []))
        default = bool(trial.user_attrs.get("default"))
        # the default trial runs the configuration as it is: only its fixed values
        values = {p.key: p.suggest(trial) for p in self.params if not default or p.key in fixed}
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        resumed = _adopt_previous_attempt(self.folder, trial)
        folds = list(range(self.cfg.tune.folds)) if self.cfg.tune.folds else [None]
        label = (
            "default configuration"
            if default
            else ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        )
        console().print(
            f"[bold]trial {trial.number}[/bold]: {label}" + (" (resuming)" if resumed else ""),
            highlight=False,
            soft_wrap=True,
        )
        scores, per_fold = [], []
        for fold in folds:
            run_dir = _trial_dir(self.folder, trial.number)
            if fold is not None:
                run_dir = run_dir / f"fold{fold}"
            overrides = [to_override(k, v) for k, v in values.items()]
            overrides += [
                to_override("name", f"{self.cfg.name}-trial{trial.number}"),
                to_override("run_dir", str(run_dir)),
                to_override("trainer.monitor", self.metric),
                to_override("trainer.monitor_mode", "min" if self.key == "loss" else "max"),
            ]
            if fold is not None:
                overrides.append(to_override("data.fold", fold))
            started = (run_dir / "checkpoints" / "last.ckpt").is_file()
            finished = (run_dir / "metrics.json").is_file()
            if finished:
                metrics = json.loads((run_dir / "metrics.json").read_text())
            else:
                overrides.append(to_override("resume", started))
                callbacks = [_pruning_callback(trial, self.metric)] if fold in (None, 0) else []
                metrics = train(self.raw, overrides, callbacks=callbacks, overwrite=not started)
                metrics = metrics.metrics
            value = float(metrics["val"][self.key])
            scores.append(value)
            per_fold.append(
                {
                    "fold": fold,
                    "run_dir": str(run_dir),
                    "best_epoch": metrics.get("best_epoch"),
                    "val": _scalars(metrics["val"]),
                    "test": _scalars(metrics.get("test", {})),
                }
            )
        trial.set_user_attr("runs", per_fold)
        mean = sum(scores) / len(scores)
        if not math.isfinite(mean):
            raise ConfigError(f"trial {trial.number}: {self.metric} is not finite ({scores})")
        return mean


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _check_study(study: Any, fingerprint: str, storage_url: str) -> None:
    known = study.user_attrs.get("config_fingerprint")
    if known is None:
        study.set_user_attr("config_fingerprint", fingerprint)
    elif known != fingerprint:
        raise ConfigError(
            f"study {study.study_name!r} in {storage_url} was started with a different "
            "configuration (data, model, recipe or search space changed); use --overwrite to "
            "start it again, or another tune.study_name"
        )


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def tune(
    config: ExperimentConfig | str | Path | dict,
    overrides: Iterable[str] = (),
    *,
    trials: int | None = None,
    timeout: float | None = None,
    overwrite: bool = False,
    report: bool = True,
) -> TuneResult:
    """Runs (or continues) the hyperparameter search a configuration declares.

    Args:
        config: an experiment YAML, mapping or :class:`ExperimentConfig` with a
            ``tune`` section.
        overrides: ``dotted.key=value`` overrides (``tune.trials=12`` ...).
        trials: overrides ``tune.trials``.
        timeout: overrides ``tune.timeout`` (seconds; this worker starts no trial after).
        overwrite: delete an existing study of this name (and the tuning folder) first.
        report: write ``best.yaml``, ``trials.csv``, the figures and ``report.html``.

    Returns:
        The tuning folder, best value and parameters, the default configuration's value
        and the files written.

    Raises:
        ConfigError: an invalid search space, metric or storage, or a study of the same
            name started with another configuration.
    """
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from medcls.progress import console

    # heartbeats and retries are marked experimental in Optuna; they are what resumes
    # a study after a crash, so their notice is not news to the user
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    extra = list(overrides)
    if trials is not None:
        extra.append(f"tune.trials={trials}")
    if timeout is not None:
        extra.append(f"tune.timeout={timeout}")
    if isinstance(config, ExperimentConfig):
        config = config_to_dict(config)
    cfg = load_config(config, extra)
    raw = config_to_dict(cfg)
    _metric_key(cfg.tune.metric)
    params = parse_space(cfg.tune.space, raw)
    folder = tune_dir(cfg)
    study_name = cfg.tune.study_name or cfg.name
    if overwrite:
        _delete_study(cfg, folder, study_name)
    folder.mkdir(parents=True, exist_ok=True)
    storage, url = _storage(cfg, folder)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=_direction(cfg),
        sampler=_sampler(cfg),
        pruner=_pruner(cfg),
        load_if_exists=True,
    )
    _check_study(study, _fingerprint(raw), url)
    if cfg.tune.include_default and not study.get_trials(deepcopy=False):
        defaults = _default_params(params, raw)
        study.enqueue_trial(
            defaults, user_attrs={"default": True, "default_keys": sorted(defaults)}
        )
    base = {k: v for k, v in raw.items() if k != "tune"}
    objective = _Objective(cfg, base, params, folder)
    done = _finished(study)
    console().print(
        f"[bold]medcls tune[/bold] {study_name}: {len(params)} searched key(s), "
        f"{done}/{cfg.tune.trials} trials finished, objective {_direction(cfg)} "
        f"{cfg.tune.metric}"
        + (f" (mean over {cfg.tune.folds} folds)" if cfg.tune.folds else "")
        + f"; storage {url}",
        highlight=False,
        soft_wrap=True,
    )
    if done < cfg.tune.trials:
        logging.getLogger("optuna").setLevel(logging.WARNING)
        started = time.perf_counter()
        study.optimize(
            objective,
            timeout=cfg.tune.timeout,
            callbacks=[
                MaxTrialsCallback(cfg.tune.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                _TrialLine(cfg.tune.trials, cfg.tune.metric),
            ],
            # a failed trial (diverged, invalid combination) is recorded and the search
            # goes on; _TrialLine stops a study whose trials all fail
            catch=(ConfigError, DataError),
            gc_after_trial=True,
        )
        console().print(f"tuning took {time.perf_counter() - started:.0f} s", highlight=False)
    result = _result(study, folder, url)
    if report:
        from medcls.reports.tuning import write_tuning_outputs

        result.files = write_tuning_outputs(study, cfg, base, folder)
        _summary(result, cfg)
    return result


def _delete_study(cfg: ExperimentConfig, folder: Path, study_name: str) -> None:
    import optuna

    if cfg.tune.storage:
        with contextlib.suppress(KeyError):  # no such study yet
            optuna.delete_study(study_name=study_name, storage=cfg.tune.storage)
    if folder.exists():
        shutil.rmtree(folder)


class _TrialLine:
    """Prints one line per finished trial: state, value, best so far."""

    def __init__(self, total: int, metric: str) -> None:
        self.total, self.metric = total, metric

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        from medcls.progress import console

        states = [t.state for t in study.get_trials(deepcopy=False)]
        if TrialState.COMPLETE not in states and states.count(TrialState.FAIL) >= 3:
            console().print(
                "[red]three trials failed and none completed: stopping (see the errors above)",
            )
            study.stop()
        state = trial.state.name.lower()
        value = f"{self.metric} {trial.value:.4f}" if trial.value is not None else ""
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            step = max(trial.intermediate_values)
            value = f"at epoch {step}: {self.metric} {trial.intermediate_values[step]:.4f}"
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        console().print(
            f"  trial {trial.number} {state} {value}; {_finished(study)}/{self.total} "
            f"finished; {best}",
            highlight=False,
            soft_wrap=True,
        )


def _result(study: Any, folder: Path, url: str) -> TuneResult:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    best = study.best_trial if complete else None
    return TuneResult(
        tune_dir=folder,
        study_name=study.study_name,
        storage=url,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        default_value=default.value if default else None,
        finished=_finished(study),
    )


def _summary(result: TuneResult, cfg: ExperimentConfig) -> None:
    from medcls.progress import console

    lines = [f"finished trials: {result.finished}"]
    if result.default_value is not None:
        lines.append(f"default configuration: {cfg.tune.metric} {result.default_value:.4f}")
    if result.best_value is not None:
        lines.append(f"best: {cfg.tune.metric} {result.best_value:.4f} with {result.best_params}")
    for key in ("best_yaml", "report"):
        if key in result.files:
            lines.append(f"{key.replace('_', ' ')}: {result.files[key]}")
    console().print("\n".join(lines), highlight=False, soft_wrap=True)


def best_config(base: dict[str, Any], params: dict[str, Any], name: str) -> dict[str, Any]:
    """The base configuration with ``params`` applied, named ``name``, as a mapping."""
    cfg = load_config(base, [to_override(k, v) for k, v in params.items()])
    raw = config_to_dict(cfg)
    raw["name"] = name
    raw.pop("tune", None)
    raw["run_dir"] = None
    raw["resume"] = False
    return raw


def dump_yaml(raw: dict[str, Any], header: str) -> str:
    return header + yaml.safe_dump(raw, sort_keys=False)
