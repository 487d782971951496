"""Benchmarks: every model over the same folds and seeds, compared with statistics.

``medcls benchmark CONFIG --models a,b,c --folds 5 --seeds 0,1,2`` runs the sweep
(:mod:`medcls.benchmark.sweep`, resumable and shared safely by several processes
through :mod:`medcls.benchmark.slots`), then :mod:`medcls.benchmark.aggregate`
summarises the runs and :mod:`medcls.benchmark.report` writes the tables, figures
and the HTML report. Heavy modules are imported on first access::

    from medcls.benchmark import prepare_benchmark, run_sweep, build_report
    bench, models, seeds = prepare_benchmark("demo-xray2d.yaml", "timm:resnet18,ldtransformer_s",
                                             "benchmarks/demo", folds=3)
    run_sweep(bench)
    build_report(bench.folder)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Benchmark": "medcls.benchmark.sweep",
    "SweepStats": "medcls.benchmark.sweep",
    "prepare_benchmark": "medcls.benchmark.sweep",
    "run_sweep": "medcls.benchmark.sweep",
    "train_slot": "medcls.benchmark.sweep",
    "BenchmarkSpec": "medcls.benchmark.spec",
    "ModelSpec": "medcls.benchmark.spec",
    "ReportOptions": "medcls.benchmark.spec",
    "Slot": "medcls.benchmark.spec",
    "parse_models": "medcls.benchmark.spec",
    "claim_slot": "medcls.benchmark.slots",
    "summarize": "medcls.benchmark.aggregate",
    "build_report": "medcls.benchmark.report",
    "run_benchmark": "medcls.benchmark.report",
    "demo_benchmark": "medcls.benchmark.demo",
    "profile_model": "medcls.benchmark.profile",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medcls.benchmark' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
