"""checkpoint_path loading: safetensors, torch files, unsafe pickles, channel/class adaptation."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from medcls.errors import CheckpointError
from medcls.models import create_model, load_checkpoint
from medcls.models.weights import adapt_input_conv_weight

NAME = "timm:resnet10t"


def _model(in_chans: int = 1, num_classes: int = 2, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return create_model(NAME, in_chans=in_chans, num_classes=num_classes, **kwargs)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if not k.startswith(skip))


def test_safetensors_roundtrip(tmp_path):
    source = _model(seed=1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = _model(seed=2, checkpoint_path=str(path))
    assert _same_weights(source, loaded)
    assert not _same_weights(source, _model(seed=2))


def test_torch_file_nested_and_prefixed(tmp_path):
    source = _model(seed=1)
    path = tmp_path / "lightning.ckpt"
    nested = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}
    torch.save(nested, path)
    target = _model(seed=2)
    report = load_checkpoint(target, path)
    assert report.prefix_removed == "model."
    assert not report.skipped and not report.adapted
    assert _same_weights(source, target)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        _model(checkpoint_path=str(path))
    assert not marker.exists(), "loading the checkpoint ran pickled code"


def test_first_conv_3_to_1_channels_and_classifier_skipped(tmp_path):
    rgb = _model(in_chans=3, num_classes=5, seed=1)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    gray = _model(in_chans=1, num_classes=2, seed=2)
    report = load_checkpoint(gray, path)
    first = gray.model_cfg.first_conv + ".weight"
    w_rgb, w_gray = rgb.state_dict()[first], gray.state_dict()[first]
    assert w_gray.shape[1] == 1
    # summed RGB weights == 3 x their average: a grey image replicated on R, G and B
    # gives the same first-layer response as before
    torch.testing.assert_close(w_gray, 3 * w_rgb.mean(dim=1, keepdim=True))
    assert report.adapted and first in report.adapted[0]
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    assert gray.fc.weight.shape == (2, gray.num_features)
    assert _same_weights(rgb, gray, skip=(first, "fc."))


def test_first_conv_adaptation_keeps_grey_response():
    conv = torch.nn.Conv2d(3, 4, 3, bias=False)
    x = torch.randn(2, 1, 8, 8)
    expected = conv(x.expand(-1, 3, -1, -1))
    for chans in (1, 2, 5):
        w = adapt_input_conv_weight(conv.weight.detach(), chans)
        out = torch.nn.functional.conv2d(x.expand(-1, chans, -1, -1), w)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    w5 = adapt_input_conv_weight(conv.weight.detach(), 5)
    torch.testing.assert_close(w5[:, 3], conv.weight.detach().sum(dim=1) / 5)


def test_same_classes_loads_classifier(tmp_path):
    source = _model(num_classes=2, seed=1)
    path = tmp_path / "w.pt"
    torch.save({"model": source.state_dict()}, path)
    target = _model(num_classes=2, seed=2)
    assert not load_checkpoint(target, path).skipped
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_mismatched_body_raises(tmp_path):
    path = tmp_path / "other.pth"
    state = _model().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv1\.weight"):
        _model(checkpoint_path=str(path))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        _model(checkpoint_path=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        _model(checkpoint_path=str(bad))


def test_monai_checkpoint_from_plain_monai_net(tmp_path):
    from monai.networks.nets import resnet10

    torch.manual_seed(3)
    native = resnet10(spatial_dims=3, n_input_channels=1, num_classes=2)
    path = tmp_path / "monai.pth"
    torch.save(native.state_dict(), path)
    model = create_model("monai:resnet10", in_chans=1, num_classes=2, checkpoint_path=str(path))
    model.eval()
    native.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), native(x))
