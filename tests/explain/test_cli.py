"""``medcls explain``: run folders, the seed's flags, 3D NIfTI output, ``--check``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medcls.cli.main import main
from tests.conftest import tiny_xray_overrides


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, medcls_cache):
    from medcls.engine.api import train

    run_dir = tmp_path_factory.mktemp("explain") / "run"
    train(None, tiny_xray_overrides(run_dir, epochs=1))
    return run_dir


def _manifest_rows(run_dir: Path) -> tuple[Path, list[dict]]:
    from medcls.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    from medcls.data.synthetic import demo_dataset

    manifest = demo_dataset(
        cfg.data.source,
        seed=cfg.data.demo.seed,
        num_cases=cfg.data.demo.num_cases,
        size=cfg.data.demo.size,
    )
    with open(manifest, newline="") as fh:
        return manifest, list(csv.DictReader(fh))


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_explain_run_folder_images(tiny_run, tmp_path, capsys):
    manifest, rows = _manifest_rows(tiny_run)
    images = [str(manifest.parent / r["image"]) for r in rows[:2]]
    out = tmp_path / "out"
    rc = main(["explain", str(tiny_run), *images, "--method", "gradcam", "-o", str(out)])
    assert rc == 0
    table = _read_csv(out / "explain.csv")
    assert len(table) == 2
    assert {r["target"] for r in table} <= {"normal", "pneumonia"}
    assert all(r["predicted"] in ("normal", "pneumonia") for r in table)
    stems = [Path(i).stem for i in images]
    for stem in stems:
        assert (out / f"{stem}_image_overlay.png").is_file()
        assert (out / f"{stem}_panel.png").is_file()
    # the overlay is on the original image's grid
    from PIL import Image

    with Image.open(images[0]) as original, Image.open(out / f"{stems[0]}_image_overlay.png") as ov:
        assert ov.size == original.size
    assert "gradcam" in capsys.readouterr().err


def test_explain_manifest_with_masks_scores_the_maps(tiny_run, tmp_path):
    manifest, rows = _manifest_rows(tiny_run)
    positive = [r for r in rows if r["label"] == "pneumonia"][:3]
    sub = tmp_path / "cases.csv"
    with open(sub, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "mask"])
        writer.writeheader()
        for r in positive:
            writer.writerow(
                {
                    "image": str(manifest.parent / r["image"]),
                    "mask": str(manifest.parent / r["mask"]),
                }
            )
    out = tmp_path / "o"
    assert (
        main(
            [
                "explain",
                str(tiny_run),
                str(sub),
                "-m",
                "gradients",
                "--target-class",
                "pneumonia",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    table = _read_csv(out / "explain.csv")
    assert [r["target"] for r in table] == ["pneumonia"] * 3
    assert all(r["pointing_hit"] in ("True", "False") for r in table)
    assert all(0.0 <= float(r["energy_in_mask"]) <= 1.0 for r in table)


def test_seed_flags_with_a_plain_weights_file(tiny_run, tmp_path):
    from safetensors.torch import save_file

    from medcls.engine.api import load_run_model

    model, _ = load_run_model(tiny_run)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    manifest, rows = _manifest_rows(tiny_run)
    image = str(manifest.parent / rows[0]["image"])
    out = tmp_path / "seed"
    args = [
        "explain",
        "--image-path",
        image,
        "--model",
        "timm:test_resnet",
        "--weight-path",
        str(weights),
    ]
    args += [
        "--classes",
        "normal,pneumonia",
        "--spatial-size",
        "32,32",
        "-o",
        str(out),
        "-m",
        "gradcam++",
    ]
    assert main(args) == 0
    table = _read_csv(out / "explain.csv")
    assert len(table) == 1 and table[0]["method"] == "gradcam++"
    assert table[0]["target"] in ("normal", "pneumonia")
    # a medcls checkpoint brings its own classes and preprocessing
    out2 = tmp_path / "seed2"
    best = tiny_run / "checkpoints" / "best.safetensors"
    assert (
        main(
            [
                "explain",
                "--image-path",
                image,
                "--model",
                "timm:test_resnet",
                "--weight-path",
                str(best),
                "-o",
                str(out2),
            ]
        )
        == 0
    )
    assert (out2 / "explain.csv").is_file()


def test_check_writes_per_method_numbers(tiny_run, tmp_path):
    out = tmp_path / "check"
    rc = main(
        [
            "explain",
            str(tiny_run),
            "--check",
            "-m",
            "gradcam,gradients",
            "--max-cases",
            "4",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads((out / "explain_check.json").read_text())
    assert set(report["methods"]) == {"gradcam", "gradients"}
    for entry in report["methods"].values():
        assert 0.0 <= entry["pointing"] <= 1.0 and 0.0 <= entry["energy"] <= 1.0
        assert entry["pointing"] <= entry["pointing_near"] <= 1.0  # a grown lesion hits more
        assert 0.0 <= entry["peak_on_border"] <= 1.0 - entry["pointing"]  # a hit is not on it
        assert "randomization" in entry and "deletion_auc" in entry
        assert 0.0 <= entry["randomization"]["top5_overlap"] <= 1.0
    assert "| gradcam |" in (out / "explain_check.md").read_text()


def test_3d_multimodal_nifti_on_the_input_grid(tmp_path):
    import nibabel as nib

    from medcls.models import create_model

    torch.manual_seed(0)
    model = create_model("timm3d:mnasnet_small", in_chans=2, num_classes=2)
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    shape = (20, 18, 14)
    affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.5, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        paths = {}
        for name in ("ct", "pet"):
            data = rng.normal(size=shape).astype(np.float32)
            data[10:14, 5:9, 6:9] += 4.0
            paths[name] = tmp_path / f"case{i}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(data, affine), str(paths[name]))
        mask = np.zeros(shape, dtype=np.uint8)
        mask[10:14, 5:9, 6:9] = 1
        paths["mask"] = tmp_path / f"case{i}_mask.nii.gz"
        nib.save(nib.Nifti1Image(mask, affine), str(paths["mask"]))
        rows.append({"id": f"case{i}", **{k: str(v) for k, v in paths.items()}})
    manifest = tmp_path / "cases.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "ct", "pet", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out3d"
    args = ["explain", "timm3d:mnasnet_small", str(manifest), "--weight-path", str(weights)]
    args += [
        "--modalities",
        "ct,pet",
        "--spatial-size",
        "16,16,16",
        "-m",
        "gradients",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    for i in range(2):
        for name in ("ct", "pet"):
            heat = nib.load(str(out / f"case{i}_{name}_heatmap.nii.gz"))
            assert heat.shape == shape
            np.testing.assert_allclose(heat.affine, affine)
            data = np.asarray(heat.dataobj)
            assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1
            assert (out / f"case{i}_{name}_planes.png").is_file()
            assert (out / f"case{i}_{name}_montage.png").is_file()
    table = _read_csv(out / "explain.csv")
    assert len(table) == 2 and "pointing_hit" in table[0]
    assert len(table[0]["peak_ct"].split()) == 3


def test_errors_exit_with_code_2(tmp_path, capsys):
    assert main(["explain"]) == 2
    assert "missing the model" in capsys.readouterr().err
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    assert main(["explain", "timm:resnet10t", str(image)]) == 2
    assert "--weight-path" in capsys.readouterr().err
    assert main(["explain", str(tmp_path), str(image), "-m", "nope"]) == 2


def test_method_options_from_the_command_line(tiny_run, tmp_path, capsys):
    manifest, rows = _manifest_rows(tiny_run)
    image = str(manifest.parent / rows[0]["image"])
    out = tmp_path / "opt"
    args = ["explain", str(tiny_run), image, "-m", "scorecam", "--option", "max_channels=4"]
    assert main([*args, "-o", str(out)]) == 0
    assert _read_csv(out / "explain.csv")[0]["method"] == "scorecam"
    assert main([*args, "--option", "bogus", "-o", str(out)]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["explain", str(tiny_run), image, "-m", "gradients", "--option", "samples=3"]) == 2
    assert "unsupported option" in capsys.readouterr().err
