"""The search space of ``medcls tune``, declared in the experiment YAML.

Example::

    tune:
      space:
        optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        optimizer.name: [adamw, sgd]                  # a list = categorical choices
        data.batch_size: {type: categorical, choices: [16, 32, 64]}
        model.kwargs.drop_path_rate: {type: float, low: 0.0, high: 0.3}
        augment.mixup_alpha: {type: float, low: 0.0, high: 0.4}

Every key is a dotted key of the experiment configuration (what ``medcls train``
accepts as an override), checked before the first trial: a key that does not
exist, or a value the key does not accept, is an error naming ``tune.space.<key>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from medcls.errors import ConfigError

__all__ = ["SearchParam", "config_value", "parse_space", "to_override"]

TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class SearchParam:
    """One searched key and its distribution."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draws the value of this key for an Optuna ``trial``."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def contains(self, value: Any) -> bool:
        """True if ``value`` is a value this distribution can produce."""
        if self.kind == "categorical":
            # 1 and 1.0 are the same choice; True is not 1
            return any(
                value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {list(self.choices)}"
        scale = ", log" if self.log else ""
        step = f", step {self.step:g}" if self.step else ""
        return f"{self.kind} in [{self.low:g}, {self.high:g}]{scale}{step}"

    def extremes(self) -> list[Any]:
        """Values that together exercise the distribution (for checking the key)."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _number(value: Any, where: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _parse_one(key: str, spec: Any) -> SearchParam:
    where = f"tune.space.{key}"
    if isinstance(spec, list | tuple):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where}: expected {{type: float|int|categorical, ...}} or a list of choices, "
            f"got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}.type: expected one of {TYPES}, got {kind!r}")
    allowed = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}}
    allowed["categorical"] = {"choices"}
    unknown = sorted(set(spec) - allowed[kind] - {"type"})
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} for type {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        for choice in choices:
            if not (choice is None or isinstance(choice, bool | int | float | str)):
                raise ConfigError(
                    f"{where}.choices: {choice!r} is not a number, string, boolean or null "
                    "(Optuna stores only those)"
                )
        return SearchParam(key, kind, choices=tuple(choices))
    for field in ("low", "high"):
        if field not in spec:
            raise ConfigError(f"{where}.{field}: required for type {kind!r}")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    step = _number(spec["step"], f"{where}.step") if spec.get("step") is not None else None
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{where}: int bounds must be integers, got [{low}, {high}]")
    if not low < high:
        raise ConfigError(f"{where}: expected low < high, got [{low:g}, {high:g}]")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low:g}")
    if log and step is not None:
        raise ConfigError(f"{where}: step and log cannot be combined")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.step: expected > 0, got {step:g}")
    return SearchParam(key, kind, low, high, log, step)


def to_override(key: str, value: Any) -> str:
    """``key=value`` with the value written as YAML (what ``load_config`` parses)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"  # a scalar document ends in "..."


def config_value(raw: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of dotted ``key`` in a configuration mapping."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def parse_space(raw: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> list[SearchParam]:
    """Parses and checks ``tune.space``.

    Args:
        raw: the ``tune.space`` mapping.
        base: the resolved experiment configuration as a mapping; when given, each
            key is checked by building the configuration with every extreme value.

    Raises:
        ConfigError: an empty space, a malformed distribution, an unknown key or a
            value the key does not accept.
    """
    if not raw:
        raise ConfigError(
            "tune.space is empty: declare what to search, e.g. "
            "tune.space: {optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}"
        )
    params = [_parse_one(str(key), spec) for key, spec in raw.items()]
    if base is not None:
        from medcls.config import load_config

        for param in params:
            if param.key.startswith("tune."):
                raise ConfigError(f"tune.space.{param.key}: the tune section cannot be searched")
            for value in param.extremes():
                try:
                    load_config(base, [to_override(param.key, value)])
                except ConfigError as exc:
                    raise ConfigError(
                        f"tune.space.{param.key}: the value {value!r} is not accepted: {exc}"
                    ) from None
    return params
