"""The demo benchmark: a CNN, a hybrid CNN-Transformer and a paper model on ``demo-xray2d``.

:func:`demo_benchmark` is what ``medcls demo`` runs to show a benchmark end to
end: three models, 3 patient-grouped folds, the comparison table, statistics,
figures and ``report.html``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from medcls.benchmark.report import run_benchmark
from medcls.benchmark.sweep import Benchmark, SweepStats
from medcls.errors import ConfigError

__all__ = ["DEMO_MODELS", "DEMO_OVERRIDES", "demo_benchmark"]

DEMO_MODELS = (
    "timm:resnet10t{label: ResNet-10t (CNN)}",
    "timm:mobilevit_xxs{label: MobileViT-XXS (hybrid)}",
    "ldtransformer_tiny{label: LDTransformer-tiny (paper)}",
)
"""A CNN, a CNN-Transformer hybrid and a paper model, all quick on a CPU at 96x96."""

DEMO_OVERRIDES = ("trainer.max_epochs=6",)
"""The single-model demo's data (800 cases at 96x96) with half its epochs: nine runs."""


def demo_benchmark(
    output_dir: str | Path = "runs",
    *,
    dataset: str = "demo-xray2d",
    models: Sequence[str] | None = None,
    folds: int = 3,
    overrides: Sequence[str] = (),
    fresh: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[Benchmark, SweepStats, dict[str, Path] | None]:
    """Run the demo benchmark into ``<output_dir>/benchmark-<dataset>``.

    Args:
        output_dir: parent folder of the benchmark folder.
        dataset: ``demo-xray2d`` (the default models are 2D; give ``models`` for
            ``demo-petct3d``).
        models: model specs (default :data:`DEMO_MODELS`).
        folds: cross-validation folds.
        overrides: further configuration overrides (after :data:`DEMO_OVERRIDES`).
        fresh: replace an existing demo benchmark folder (as ``medcls demo`` replaces
            its run); ``False`` continues it.
        log: where progress lines go (default: the medcls console).

    Returns:
        ``(benchmark, sweep statistics, written files)``; ``files["report"]`` is
        the HTML report.
    """
    from medcls.cli.common import resolve_config_path

    if models is None:
        if dataset != "demo-xray2d":
            raise ConfigError(
                f"demo_benchmark: the default models are 2D; give models=... for {dataset!r}"
            )
        models = DEMO_MODELS
    output = Path(output_dir) / f"benchmark-{dataset}"
    if fresh and output.exists():
        shutil.rmtree(output)
    return run_benchmark(
        resolve_config_path(dataset),
        list(models),
        output,
        folds=folds,
        seeds=[0],
        overrides=[*DEMO_OVERRIDES, *overrides],
        report={"n_bootstrap": 1000},
        log=log,
    )
