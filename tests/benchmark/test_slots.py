"""Slot claiming: several processes on one folder never run the same (model, seed, fold)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medcls.benchmark.slots import atomic_write_json, claim_slot, read_claim
from medcls.benchmark.spec import BenchmarkSpec, parse_models
from medcls.benchmark.sweep import Benchmark, run_sweep

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from medcls.benchmark.sweep import Benchmark, run_sweep

    folder, start_at = Path(sys.argv[1]), float(sys.argv[2])
    while time.time() < start_at:  # start all workers together
        time.sleep(0.005)
    bench = Benchmark.open(folder)

    def runner(bench, slot):
        marker = folder / "ran" / f"{slot.key}.{os.getpid()}"
        marker.parent.mkdir(exist_ok=True)
        marker.write_text("x")
        time.sleep(0.03)
        return {"worker": os.getpid()}

    stats = run_sweep(bench, runner=runner, log=lambda text: None, heartbeat=0.5)
    print(len(stats.ran))
    """
)


def _bench(folder: Path, models: str = "a,b,c,d", folds: int = 3, seeds=(0, 1)) -> Benchmark:
    spec = BenchmarkSpec(config={}, models=parse_models(models), folds=folds, seeds=list(seeds))
    bench = Benchmark(folder, spec)
    folder.mkdir(parents=True, exist_ok=True)
    bench.save_spec()
    return bench


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_concurrent_processes_run_each_slot_exactly_once(tmp_path):
    bench = _bench(tmp_path / "bench")
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(bench.folder), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    markers = [p.name for p in (bench.folder / "ran").iterdir()]
    keys = [m.rsplit(".", 1)[0] for m in markers]
    expected = {s.key for s in bench.spec.slots()}
    assert len(expected) == 24
    assert sorted(keys) == sorted(expected)  # every slot once: no slot run twice, none missed
    assert sum(int(out.strip()) for out, _ in outputs) == 24
    for slot in bench.spec.slots():
        done = bench.done(slot)
        assert done is not None and f"{slot.key}.{done['worker']}" in markers
        assert not list(bench.claim_dir(slot).glob("claim-*"))  # released
    # a second sweep finds everything done and runs nothing
    again = run_sweep(bench, runner=lambda b, s: pytest.fail("ran a finished slot"), log=print)
    assert again.ran == [] and len(again.already_done) == 24


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_claim(folder: Path, number: int, owner: dict, age: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"claim-{number:06d}"
    path.write_text(json.dumps(owner))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_claim_of_a_dead_local_process_is_taken_over_at_once(tmp_path):
    folder = tmp_path / "slot"
    _write_claim(folder, 0, {"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"})
    seen = []
    claim = claim_slot(folder, is_done=lambda: False, on_takeover=seen.append)
    assert claim is not None and claim.number == 1
    assert "gone" in seen[0].reason
    # while held, nobody else gets it
    assert claim_slot(folder, is_done=lambda: False) is None
    claim.release()
    assert not (folder / "claim-000001").exists()


def test_remote_claims_are_respected_until_their_heartbeat_stops(tmp_path):
    folder = tmp_path / "slot"
    owner = {"host": "another-machine", "pid": 1, "token": "y"}
    _write_claim(folder, 3, owner, age=5.0)
    assert claim_slot(folder, is_done=lambda: False, stale_after=60) is None
    _write_claim(folder, 3, owner, age=120.0)
    info = read_claim(folder / "claim-000003", stale_after=60)
    assert info.stale and "heartbeat" in info.reason
    claim = claim_slot(folder, is_done=lambda: False, stale_after=60)
    assert claim is not None and claim.number == 4
    claim.release()


def test_done_slot_is_never_claimed_and_heartbeat_refreshes(tmp_path):
    folder = tmp_path / "slot"
    assert claim_slot(folder, is_done=lambda: True) is None
    claim = claim_slot(folder, is_done=lambda: False, heartbeat=0.1)
    first = claim.path.stat().st_mtime
    time.sleep(0.45)
    assert claim.path.stat().st_mtime > first
    assert claim.still_owned()
    claim.release()


TAKEOVER = textwrap.dedent(
    """
    import sys, time
    from medcls.benchmark.slots import claim_slot
    folder, start_at = sys.argv[1], float(sys.argv[2])
    while time.time() < start_at:
        time.sleep(0.001)
    claim = claim_slot(folder, is_done=lambda: False, stale_after=60, heartbeat=0.2)
    print(1 if claim is not None else 0, flush=True)
    time.sleep(1.5)  # hold it while the others try
    """
)


def test_only_one_of_many_processes_takes_over_a_stale_claim(tmp_path):
    folder = tmp_path / "slot"
    _write_claim(folder, 0, {"host": "gone-machine", "pid": 1, "token": "z"}, age=3600.0)
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKEOVER, str(folder), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(4)
    ]
    wins = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert sum(wins) == 1


def test_failed_slot_is_recorded_and_retried_by_the_next_sweep(tmp_path):
    bench = _bench(tmp_path / "bench", models="a", folds=2, seeds=(0,))

    def flaky(bench, slot):
        if slot.fold == 1:
            raise RuntimeError("out of memory")
        return {}

    stats = run_sweep(bench, runner=flaky, log=lambda text: None)
    assert len(stats.ran) == 1 and len(stats.failed) == 1
    slot = bench.spec.slots()[1]
    assert "out of memory" in bench.failed(slot)["error"]
    assert [s.key for s in bench.status()["failed"]] == [slot.key]
    stats = run_sweep(bench, runner=lambda b, s: {}, log=lambda text: None)
    assert stats.ran == [slot.key] and bench.failed(slot) is None
    assert len(bench.status()["done"]) == 2


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "x.json", {"v": 1})
    atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
