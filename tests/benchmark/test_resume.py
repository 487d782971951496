"""A sweep killed with SIGKILL continues where it stopped, without repeating finished runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medcls.benchmark.spec import BenchmarkSpec, parse_models
from medcls.benchmark.sweep import Benchmark, run_sweep

ROOT = Path(__file__).resolve().parents[2]

SWEEP = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from medcls.benchmark.sweep import Benchmark, run_sweep

    folder = Path(sys.argv[1])

    def runner(bench, slot):
        with (folder / "executions.log").open("a") as log:
            log.write(f"{slot.key} {os.getpid()}\\n")
        time.sleep(0.4)  # "training"
        return {"pid": os.getpid()}

    run_sweep(Benchmark.open(folder), runner=runner, log=lambda text: None, heartbeat=0.2)
    """
)


def _bench(folder: Path) -> Benchmark:
    spec = BenchmarkSpec(config={}, models=parse_models("a,b"), folds=3, seeds=[0])
    folder.mkdir(parents=True)
    bench = Benchmark(folder, spec)
    bench.save_spec()
    return bench


def test_killed_sweep_resumes_without_repeating_finished_runs(tmp_path):
    bench = _bench(tmp_path / "bench")
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP, str(bench.folder)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while len(list(bench.folder.glob("runs/*/*/done.json"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "the sweep did not finish two runs"
        time.sleep(0.02)
    # kill in the middle of the third run: its claim stays behind, its done.json never comes
    log = bench.folder / "executions.log"
    while len(log.read_text().splitlines()) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.read_text() for p in bench.folder.glob("runs/*/*/done.json")}
    interrupted = [line.split()[0] for line in log.read_text().splitlines()][-1]
    assert len(finished) in (2, 3)

    executed = []

    def runner(b, slot):
        executed.append(slot.key)
        return {"pid": os.getpid()}

    stats = run_sweep(bench, runner=runner, log=lambda text: None)
    assert len(finished) + len(executed) == 6  # every run exactly once in all
    for path, text in finished.items():
        assert path.read_text() == text  # finished runs untouched
        assert json.loads(text)["slot"] not in executed
    if len(finished) == 2:  # killed during the run: it was taken over at once (dead local pid)
        assert interrupted in stats.taken_over and interrupted in executed
        done = json.loads((bench.run_dir(bench.spec.slots()[2]) / "done.json").read_text())
        assert done["claim"] == 1
    assert len(bench.status()["done"]) == 6
    assert run_sweep(bench, runner=lambda b, s: pytest.fail("redone"), log=print).ran == []
