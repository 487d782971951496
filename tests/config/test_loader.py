from __future__ import annotations

import pytest
import yaml

from medcls.config import ExperimentConfig, config_to_dict, load_config, save_config
from medcls.errors import ConfigError


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["trainer.max_epochs=3", "optimizer.lr=1e-4", "data.classes=[a, b]"])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.trainer.max_epochs == 3
    assert cfg.optimizer.lr == pytest.approx(1e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.data.classes == ["a", "b"]
    assert cfg.trainer.devices == "auto"
    assert load_config(None, ["trainer.devices=2"]).trainer.devices == 2
    assert load_config(None, ["trainer.devices=[0, 1]"]).trainer.devices == [0, 1]


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "preprocess": {
                    "spatial_size": [32, 32],
                    "intensity": {"ct": {"mode": "range", "a_min": -1000, "a_max": 400}},
                },
                "trainer": {"max_epochs": 7},
            }
        )
    )
    cfg = load_config(path, ["trainer.max_epochs=2"])
    assert cfg.name == "x" and cfg.trainer.max_epochs == 2
    assert cfg.preprocess.intensity["ct"].a_min == -1000.0
    assert cfg.preprocess.intensity["ct"].mode == "range"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "trainer.max_epoch=3",
            "unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?",
        ),
        ("optimiser.lr=1", "unknown key 'optimiser'; did you mean 'optimizer'?"),
        ("trainer.max_epochs=three", "trainer.max_epochs: expected int, got 'three'"),
        ("data.task=binar", "did you mean 'binary'?"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs: expected int"),
        ("model=resnet", "model: expected a mapping"),
        ("seed=", "seed: a value is required"),
        ("data.batch_size=true", "data.batch_size: expected int | 'auto', got True"),
        ("noequals", "expected KEY=VALUE"),
    ],
)
def test_invalid_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(
        None, ["name=round", "preprocess.spatial_size=[8, 8, 8]", "loss.class_weights=[1, 2]"]
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert again.loss.class_weights == [1.0, 2.0]


def test_every_key_is_documented():
    """docs/configuration.md names every key of the schema (docs stay true to the code)."""
    import dataclasses
    import re
    from pathlib import Path
    from typing import get_args, get_type_hints

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    pending = [ExperimentConfig]
    while pending:
        schema = pending.pop()
        for name, tp in get_type_hints(schema).items():
            if dataclasses.is_dataclass(tp):
                pending.append(tp)
                continue
            pending += [arg for arg in get_args(tp) if dataclasses.is_dataclass(arg)]
            assert re.search(rf"`[^`\n]*\b{name}\b[^`\n]*`", text), f"{schema.__name__}.{name}"


def test_bare_on_off_switches_read_as_words(tmp_path):
    """YAML 1.1 reads ``on``/``off`` as booleans; the auto/on/off switches accept them."""
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  channels_last: off\n  cudnn_benchmark: on\n")
    cfg = load_config(path, ["trainer.channels_last=on"])
    assert (cfg.trainer.channels_last, cfg.trainer.cudnn_benchmark) == ("on", "on")
    assert load_config(path).trainer.channels_last == "off"
    with pytest.raises(ConfigError, match=r"trainer\.monitor_mode"):
        load_config(None, ["trainer.monitor_mode=true"])  # no on/off choice: still an error
