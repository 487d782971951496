"""``medcls data check`` and bad input through the CLI: one line per problem, no traceback."""

from __future__ import annotations

import json

import pytest

from medcls.cli.main import main

try:
    from tests.data.data_utils import bad_dataset_2d, bad_dataset_3d, good_pngs, write_manifest
except ImportError:  # pragma: no cover
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from data_utils import bad_dataset_2d, bad_dataset_3d, good_pngs, write_manifest


def _config(tmp_path, manifest, *extra: str):
    path = tmp_path / "exp.yaml"
    lines = [
        "data:",
        "  source: csv",
        f"  path: {manifest}",
        "  classes: [a, b]",
        *extra,
        "trainer:",
        "  progress: false",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("medcls data: error: ")]


def _assert_one_line_per_file(lines: list[str], bad: dict[str, str], root) -> None:
    assert len(lines) == len(bad)
    for name, words in bad.items():
        (line,) = [line for line in lines if line.startswith(f"medcls data: error: {root / name}")]
        assert words in line


def test_check_lists_each_bad_2d_input_on_one_line(tmp_path, capsys):
    manifest, bad = bad_dataset_2d(tmp_path)
    config = _config(tmp_path, manifest)
    code = main(
        [
            "data",
            "check",
            str(config),
            "preprocess.spatial_size=[8, 8]",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out + err
    _assert_one_line_per_file(_error_lines(err), bad, tmp_path)
    assert "Cases per split" in out and "Images" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["problems"]) == len(bad)
    assert report["summary"]["images"]["image"]["range"] == [0.0, 63.0 + 7 * 19]


def test_check_lists_each_bad_3d_input_on_one_line(tmp_path, capsys):
    manifest, bad = bad_dataset_3d(tmp_path)
    config = _config(tmp_path, manifest, "  modalities: [ct, pet]")
    code = main(["data", "check", str(config), "preprocess.spatial_size=[4, 4, 4]"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    _assert_one_line_per_file(_error_lines(err), bad, tmp_path)


def test_skip_policy_lists_what_is_skipped_and_passes(tmp_path, capsys):
    manifest, bad = bad_dataset_2d(tmp_path)
    config = _config(tmp_path, manifest, "  on_bad_case: skip")
    code = main(["data", "check", str(config), "preprocess.spatial_size=[8, 8]"])
    out, err = capsys.readouterr()
    assert code == 0 and not _error_lines(err)
    assert len(
        [line for line in err.splitlines() if line.startswith("medcls data: skipped: ")]
    ) == len(bad)
    assert "train" in out


def test_source_level_errors_are_one_line(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", [{"ct": "a.nii.gz", "label": "a"}])
    config = _config(tmp_path, manifest, "  modalities: [ct, pet]")
    assert main(["data", "check", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"medcls data: error: {manifest}: missing column(s) ['pet']; the manifest has columns "
        "['ct', 'label']"
    ]
    assert main(["data", "check", str(config), "data.on_bad_cas=skip"]) == 2
    assert "did you mean 'data.on_bad_case'?" in capsys.readouterr().err


@pytest.mark.parametrize("bad_name", ["truncated.png", "nan.npy"])
def test_train_stops_before_training_with_one_line_naming_the_file(tmp_path, capsys, bad_name):
    rows = good_pngs(tmp_path, per_class=8)
    manifest, _ = bad_dataset_2d(tmp_path / "bad")
    (tmp_path / bad_name).write_bytes((tmp_path / "bad" / bad_name).read_bytes())
    rows.append({"id": "bad", "image": bad_name, "label": "a", "patient_id": "bad"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    config = _config(tmp_path, manifest)
    code = main(
        [
            "train",
            str(config),
            "preprocess.spatial_size=[8, 8]",
            f"run_dir={tmp_path / 'run'}",
            "model.name=timm:test_resnet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"medcls train: error: {tmp_path / bad_name}: ")
    assert line.endswith("(set data.on_bad_case=skip to leave bad cases out)")
    assert not (tmp_path / "run" / "checkpoints").exists()
