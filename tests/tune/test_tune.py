"""medcls tune: search space checks, a study end to end, resume after a kill, two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medcls.config import load_config
from medcls.errors import ConfigError
from medcls.tune import parse_space, tune
from medcls.tune.space import to_override
from tests.conftest import tiny_xray_overrides

ROOT = Path(__file__).resolve().parents[2]


def _base(tmp_path: Path, *, epochs: int = 2) -> dict:
    """A tiny demo experiment (as a mapping) with a two-key search space."""
    cfg = load_config(None, tiny_xray_overrides(tmp_path / "unused", epochs=epochs))
    raw = json.loads(json.dumps(yaml.safe_load(yaml.safe_dump(_to_dict(cfg)))))
    raw.pop("run_dir")
    raw["name"] = "tiny"
    raw["output_dir"] = str(tmp_path)
    raw["tune"] = {
        "trials": 3,
        "startup_trials": 1,
        "pruner": "none",
        "space": {
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "optimizer.name": ["adamw", "sgd"],
        },
    }
    return raw


def _to_dict(cfg):
    from medcls.config import config_to_dict

    return config_to_dict(cfg)


# ----------------------------------------------------------------- space


def test_space_parses_every_kind_and_yaml_strings():
    params = parse_space(
        {
            "optimizer.lr": {"type": "float", "low": "1e-4", "high": "1e-2", "log": True},
            "data.batch_size": {"type": "int", "low": 8, "high": 32, "step": 8},
            "optimizer.name": ["adamw", "sgd"],
        },
        _to_dict(load_config(None)),
    )
    lr, batch, name = params
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    assert batch.contains(16) and not batch.contains(20) and not batch.contains(40)
    assert name.choices == ("adamw", "sgd") and name.contains("sgd") and not name.contains("adam")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "tune.space is empty"),
        ({"optimizer.lrr": [0.1, 0.01]}, "tune.space.optimizer.lrr"),
        ({"optimizer.name": ["adamw", "lion"]}, "tune.space.optimizer.name: the value 'lion'"),
        ({"optimizer.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale"),
        (
            {"optimizer.lr": {"type": "uniform", "low": 0, "high": 1}},
            "tune.space.optimizer.lr.type",
        ),
        ({"optimizer.lr": {"type": "float", "low": 1, "high": 0.1}}, "low < high"),
        ({"optimizer.lr": {"type": "float", "low": 0.1}}, "tune.space.optimizer.lr.high"),
        ({"tune.trials": [1, 2]}, "tune section cannot be searched"),
    ],
)
def test_space_errors_name_the_key(space, message):
    with pytest.raises(ConfigError) as info:
        parse_space(space, _to_dict(load_config(None)))
    assert message in str(info.value)


def test_to_override_round_trips_through_the_loader():
    for key, value in [
        ("optimizer.lr", 1e-5),
        ("optimizer.name", "sgd"),
        ("model.drop_rate", None),
    ]:
        cfg = load_config(None, [to_override(key, value)])
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value


# ----------------------------------------------------------------- study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    raw = _base(tmp)
    return raw, tune(raw)


def test_study_runs_the_default_first_and_writes_outputs(study):
    raw, result = study
    folder = result.tune_dir
    assert folder == Path(raw["output_dir"]) / "tiny-tune"
    assert result.finished == 3
    rows = (folder / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(",")))
    # trial 0 is the configuration as written
    assert first["default"] == "True"
    assert float(first["optimizer.lr"]) == raw["optimizer"]["lr"]
    assert first["optimizer.name"] == raw["optimizer"]["name"]
    assert result.default_value is not None and result.best_value >= result.default_value
    for name in ("best.yaml", "report.html", "study.db", "figures/history.png"):
        assert (folder / name).is_file(), name
    # each trial is an ordinary run folder
    for n in range(3):
        assert (folder / "trials" / f"{n:04d}" / "metrics.json").is_file()


def test_best_yaml_is_runnable_and_holds_the_best_values(study):
    raw, result = study
    best = load_config(result.tune_dir / "best.yaml")
    assert best.name == "tiny-tuned"
    assert best.optimizer.lr == pytest.approx(result.best_params["optimizer.lr"])
    assert best.optimizer.name == result.best_params["optimizer.name"]
    assert best.model.name == raw["model"]["name"]
    assert best.trainer.max_epochs == raw["trainer"]["max_epochs"]


def test_rerun_continues_and_a_changed_config_is_refused(study, capsys):
    raw, result = study
    again = tune(raw, report=False)  # already finished: nothing new runs
    assert again.finished == 3 and again.best_value == result.best_value
    changed = json.loads(json.dumps(raw))
    changed["model"]["name"] = "timm:resnet10t"
    with pytest.raises(ConfigError, match="different configuration"):
        tune(changed, report=False)


def test_bad_metric_is_a_clear_error(tmp_path):
    raw = _base(tmp_path)
    raw["tune"]["metric"] = "auc"
    with pytest.raises(ConfigError, match=r"tune\.metric='auc'"):
        tune(raw)


# ------------------------------------------------------ kill and resume


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "medcls.cli.main", "tune", str(config), *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _study_trials(db: Path) -> list:
    import optuna

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False)


def test_killed_study_resumes_without_losing_finished_trials(tmp_path):
    raw = _base(tmp_path, epochs=4)
    raw["tune"].update(trials=3, heartbeat_seconds=1, grace_seconds=2)
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "tiny-tune"
    proc = subprocess.Popen(
        _cli(config), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # kill it inside trial 1, once that trial has checkpointed an epoch
    victim = folder / "trials" / "0001" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not victim.is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "trial 1 never checkpointed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    trial0 = (folder / "trials" / "0000" / "metrics.json").read_bytes()
    time.sleep(3)  # past the grace period: the dead trial's heartbeat is stale
    done = subprocess.run(_cli(config), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _study_trials(folder / "study.db")
    states = {t.number: t.state.name for t in trials}
    assert states[0] == "COMPLETE" and states[1] == "FAIL"
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    # the killed trial ran again with its parameters, resuming from its checkpoint
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == next(t for t in trials if t.number == 1).params
    assert "(resuming)" in done.stdout + done.stderr
    retry_dir = folder / "trials" / f"{retry.number:04d}"
    assert any(p.name.startswith("csv-resume") for p in (retry_dir / "logs").iterdir())
    # finished work is untouched
    assert (folder / "trials" / "0000" / "metrics.json").read_bytes() == trial0


def test_two_workers_split_the_trials(tmp_path):
    raw = _base(tmp_path)
    raw["tune"].update(trials=4, include_default=False)
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "tiny-tune"
    start = lambda: subprocess.Popen(  # noqa: E731
        _cli(config), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    workers = [start()]
    # the second worker joins once the first has created the study and started a trial
    deadline = time.time() + 120
    while not (folder / "trials" / "0000").exists():
        assert workers[0].poll() is None, workers[0].stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    workers.append(start())
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read().decode()[-3000:]
    trials = _study_trials(folder / "study.db")
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(finished) <= 5  # a worker may start one more while the other finishes
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both took part
    for t in finished:
        logs = folder / "trials" / f"{t.number:04d}" / "logs"
        # each trial trained once, by one worker: one log folder, no resumed copy
        assert sorted(p.name for p in logs.iterdir()) == ["csv", "tensorboard"]


# ------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a Unix socket, where the machine has one."""
    import shutil
    import tempfile

    pytest.importorskip("psycopg2")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    prefix: list[str] = []
    root = tempfile.mkdtemp(prefix="mcpg", dir="/tmp")  # short: socket paths are limited
    if os.geteuid() == 0:  # the server refuses to run as root
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if not runuser:
            pytest.skip("running as root without a 'postgres' user to start the server as")
        prefix = [runuser, "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, sock = f"{root}/data", root
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True)  # noqa: E731
    run(initdb, "-D", data, "-A", "trust", "-U", "medcls")
    run(
        pg_ctl,
        "-D",
        data,
        "-w",
        "-o",
        f"-k {sock} -c listen_addresses=''",
        "-l",
        f"{root}/log",
        "start",
    )
    try:
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", user="medcls", host=sock)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE tune")
        conn.close()
        yield f"postgresql+psycopg2://medcls@/tune?host={sock}"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", data, "-w", "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(tmp_path, postgres_url):
    raw = _base(tmp_path)
    raw["tune"].update(trials=3, include_default=False, storage=postgres_url)
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    workers = [
        subprocess.Popen(
            _cli(config),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read().decode()[-3000:]
    import optuna

    trials = optuna.load_study(study_name="tiny", storage=postgres_url).get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 3 <= len(finished) <= 4
    assert len({t.number for t in trials}) == len(trials)
    assert not (tmp_path / "tiny-tune" / "study.db").exists()  # nothing went to SQLite
