"""The medcls command: fast help, one-line errors, config validation before any work."""

from __future__ import annotations

import subprocess
import sys

from medcls.cli.main import main


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, contextlib, io\n"
        "from medcls.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'lightning', 'timm', 'monai', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_command_has_help(capsys):
    for command in ("train", "tune", "evaluate", "predict", "demo", "models"):
        try:
            main([command, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert "usage: medcls " + command in capsys.readouterr().out


def test_unknown_key_is_one_line_before_any_work(tmp_path, capsys):
    code = main(["train", "demo-xray2d", "trainer.max_epoch=3", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "medcls train: error: unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'? "
        "(valid keys here: max_epochs, accelerator, devices, strategy, num_nodes, precision, "
        "gradient_clip_val, accumulate_grad_batches, monitor, monitor_mode, early_stopping, "
        "cudnn_benchmark, channels_last, compile, sync_batchnorm, progress, log_every_n_steps, "
        "limit_train_batches, ema_decay, ema_warmup, effective_batch_size, memory_limit_gb)"
    ]
    assert not (tmp_path / "run").exists()


def test_missing_config_and_bad_manifest_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such file, and no preset" in capsys.readouterr().err
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,diagnosis\na.png,x\n")
    code = main(["train", "demo-xray2d", "data.source=csv", f"data.path={manifest}",
                 f"run_dir={tmp_path / 'r'}", "data.classes=null"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(manifest) in err[0] and "missing column(s) ['label']" in err[0]
