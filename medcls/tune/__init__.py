"""Hyperparameter search (``medcls tune``): the search space and the Optuna study driver."""

from medcls.tune.space import SearchParam, parse_space
from medcls.tune.study import TuneResult, tune, tune_dir

__all__ = ["SearchParam", "TuneResult", "parse_space", "tune", "tune_dir"]
