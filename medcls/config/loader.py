"""Load, merge, validate and save experiment configurations.

A configuration is built in three layers: the schema's defaults, a YAML file,
then ``dotted.key=value`` overrides (values parsed as YAML). Validation is strict
and happens before any work: an unknown key, a wrong type or a missing value
raises :class:`~medcls.errors.ConfigError` naming the key and, for unknown keys,
the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from medcls.config.schema import ExperimentConfig
from medcls.errors import ConfigError

__all__ = [
    "check_experiment",
    "config_to_dict",
    "from_dict",
    "load_config",
    "parse_overrides",
    "save_config",
]

T = TypeVar("T")


def load_config(
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    *,
    schema: type[T] = ExperimentConfig,
) -> T:
    """Build a validated configuration.

    Args:
        source: a YAML file, a mapping, or ``None`` for the defaults.
        overrides: ``dotted.key=value`` strings applied after ``source``; the value
            is parsed as YAML (``trainer.max_epochs=3``, ``data.classes=[a,b]``).
        schema: the dataclass to build (``ExperimentConfig``).

    Returns:
        An instance of ``schema``.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value is invalid.
    """
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        raw = _deep_copy(source)
    else:
        raw = _read_yaml(Path(source))
    for key, value in parse_overrides(overrides):
        _set_dotted(raw, key, value)
    config = from_dict(schema, raw)
    if isinstance(config, ExperimentConfig):
        check_experiment(config)
    return config


def check_experiment(cfg: ExperimentConfig) -> None:
    """Rules between sections that the types alone cannot express.

    Raises:
        ConfigError: ``model.fusion`` other than ``none`` with fewer than two
            ``data.modalities`` listed.
    """
    modalities = cfg.data.modalities
    if cfg.model.fusion != "none" and modalities is not None and len(modalities) < 2:
        raise ConfigError(
            f"model.fusion: {cfg.model.fusion!r} fuses several modalities, but "
            f"data.modalities lists {len(modalities)} ({list(modalities)}); list at least "
            "two or set model.fusion=none"
        )


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Split ``key=value`` strings; values are parsed as YAML scalars or lists."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.max_epochs=5")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        parsed.append((key, value))
    return parsed


def from_dict(schema: type[T], raw: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``schema`` from a mapping, checking every key and type."""
    if not isinstance(raw, Mapping):
        where = prefix.rstrip(".") or "configuration"
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = get_type_hints(schema)
    for key in raw:
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + str(key), str(key), list(fields)))
    values = {}
    for name in fields:
        if name in raw:
            values[name] = _convert(raw[name], hints[name], prefix + name)
    try:
        return schema(**values)
    except TypeError as exc:  # a field without default left out
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'}: {exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-serialisable dictionary of a configuration dataclass."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved configuration as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------- helpers


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _unknown_key_message(full_key: str, key: str, valid: list[str]) -> str:
    msg = f"unknown key '{full_key}'"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        parent = full_key[: -len(key)]
        msg += f"; did you mean '{parent}{close[0]}'?"
    return msg + f" (valid keys here: {', '.join(valid)})"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and return it converted (ints to floats etc.)."""
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        return from_dict(tp, value, prefix=key + ".")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: a value is required ({_type_name(tp)})")
        # try the stricter types first so that 3 stays an int in ``int | float``
        for arg in sorted((a for a in args if a is not type(None)), key=_strictness):
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        if value in choices:
            return value
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}{extra}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        _, val_tp = get_args(tp)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if value is None:
        raise ConfigError(f"{key}: a value is required ({_type_name(tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _strictness(tp: Any) -> int:
    order = {bool: 0, int: 1, float: 2, str: 4}
    if get_origin(tp) is Literal:
        return 3
    return order.get(tp, 5)
