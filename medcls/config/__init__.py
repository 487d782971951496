"""Experiment configuration: typed schema and strict YAML loading."""

from medcls.config.loader import (
    config_to_dict,
    from_dict,
    load_config,
    parse_overrides,
    save_config,
)
from medcls.config.schema import (
    AugmentConfig,
    DataConfig,
    DemoDataConfig,
    EarlyStoppingConfig,
    ExperimentConfig,
    IntensityConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    PreprocessConfig,
    RestructureConfig,
    SchedulerConfig,
    TrainerConfig,
    TuneConfig,
)

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DemoDataConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "IntensityConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PreprocessConfig",
    "RestructureConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "TuneConfig",
    "config_to_dict",
    "from_dict",
    "load_config",
    "parse_overrides",
    "save_config",
]
