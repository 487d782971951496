"""`medcls models`: listing, counting, show, errors."""

from __future__ import annotations

import pytest

from medcls.cli.main import main


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells at the terminal width


def test_count_with_pattern(capsys):
    assert main(["models", "monai:densenet*", "--count"]) == 0
    assert capsys.readouterr().out.strip() == "4"


def test_table_lists_names_with_filters(capsys):
    assert main(["models", "*resnet1?", "--source", "monai", "--dims", "2"]) == 0
    out = capsys.readouterr().out
    assert "monai:resnet10" in out and "monai:resnet18" in out and "timm:" not in out


def test_show_prints_config_stages_and_cam_layer(capsys):
    assert main(["models", "show", "monai:resnet10", "--spatial-dims", "2"]) == 0
    out = capsys.readouterr().out
    for expected in ("conv1", "fc", "layer4", "channels_first", "feature stages", "Med3D"):
        assert expected in out


def test_unknown_model_is_one_line_error(capsys):
    assert main(["models", "show", "monai:resnet11"]) == 2
    err = capsys.readouterr().err
    assert "monai:resnet10" in err and "Traceback" not in err


def test_broken_lists_reasons(capsys):
    assert main(["models", "--broken"]) == 0
    out = capsys.readouterr().out
    assert "timm3d:maxvit_tiny_rw_256" in out and "relative-position" in out
