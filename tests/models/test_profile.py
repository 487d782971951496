"""Model profiles: exact parameters, MACs against an independent hook count, memory, CLI.

The independent count adds, per call of a module (forward hooks, not the
dispatch-level FlopCounterMode that medcls uses): ``out.numel() * in/groups * kernel``
for a convolution, ``out.numel() * in_features`` for a linear layer, and the two
attention products ``q k^T`` and ``attn v`` (``2 * N^2 * dim`` per sample) for an
attention module.
"""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch
from torch import nn

from medcls.cli.main import main
from medcls.errors import ConfigError
from medcls.models import create_model
from medcls.models.profile import (
    count_macs,
    count_params,
    example_input,
    parse_input_size,
    peak_activation_memory,
    profile_by_name,
    profile_model,
)


def hook_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """``(total MACs, attention-product MACs)`` of one forward pass, counted by module hooks."""
    counts = {"total": 0, "attention": 0}

    def conv(m, inputs, out):
        counts["total"] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m, inputs, out):
        counts["total"] += out.numel() * m.in_features

    def timm_attention(m, inputs, out):  # (B, N, C) tokens; q k^T and attn v
        b, n, _ = inputs[0].shape
        products = 2 * b * n * n * m.num_heads * m.head_dim
        counts["total"] += products
        counts["attention"] += products

    def torch_mha(m, inputs, out):  # batch_first; projections are functional (no module call)
        b, n, e = inputs[0].shape
        products = 2 * b * n * n * e
        counts["total"] += b * n * 4 * e * e + products
        counts["attention"] += products

    handles = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(torch_mha))
        elif isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif type(module).__name__ == "Attention" and hasattr(module, "qkv"):
            handles.append(module.register_forward_hook(timm_attention))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return counts["total"], counts["attention"]


class Tiny3DTransformer(nn.Module):
    """A 3D ViT in miniature: 4^3 patch embedding, one torch encoder layer, linear head."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Conv3d(1, dim, 4, stride=4)
        self.block = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, batch_first=True)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.block(tokens).mean(1))


class Fusion(nn.Module):
    """Takes a dict of modalities, like medcls's PET/CT models."""

    modalities = ("pet", "ct")
    modality_chans = 1

    def __init__(self) -> None:
        super().__init__()
        self.pet = nn.Conv3d(1, 2, 1)  # 2 x 1 x 4^3 = 128 MACs
        self.ct = nn.Conv3d(1, 2, 1)

    def forward(self, x):
        return (self.pet(x["pet"]) + self.ct(x["ct"])).mean((2, 3, 4))


ZOO_CASES = [
    ("timm:test_resnet", (1, 32, 32)),
    ("timm:test_vit", (1, 32, 32)),
    ("timm:test_vit", (1, 128, 128)),  # 65 tokens: the attention products matter
    ("timm3d:resnet10t", (1, 32, 32, 32)),  # its avg-pool downsampling needs >= 32^3
    ("monai:resnet10", (1, 16, 16, 16)),
]


@pytest.mark.parametrize(("name", "size"), ZOO_CASES, ids=lambda v: str(v))
def test_macs_agree_with_an_independent_hook_count(name, size):
    kwargs = {"img_size": size[1:]} if name == "timm:test_vit" else {}
    model = create_model(
        name, in_chans=size[0], num_classes=2, spatial_dims=len(size) - 1, **kwargs
    )
    x = torch.zeros(1, *size)
    expected, attention = hook_macs(model, x)
    row = profile_model(model, x, latency=False, memory=False)
    assert row["macs"] == pytest.approx(expected, rel=0.02)
    assert row["flops"] == 2 * row["macs"]
    if size == (1, 128, 128):  # without the attention products the count would be off
        assert attention / expected > 0.05


def test_macs_of_a_3d_transformer_include_attention_without_the_fused_fast_path():
    model = Tiny3DTransformer()
    x = torch.zeros(1, 1, 16, 16, 16)  # 64 tokens
    expected, attention = hook_macs(model, x)
    assert attention / expected > 0.1
    assert count_macs(model, x) == pytest.approx(expected, rel=0.02)
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_parameter_counts_are_exact_and_trainable_follows_requires_grad():
    model = create_model("timm:test_resnet", in_chans=1, num_classes=2)
    total = sum(p.numel() for p in model.parameters())
    assert count_params(model) == (total, total)
    frozen = sum(p.numel() for p in model.get_submodule("conv1").parameters())
    model.get_submodule("conv1").requires_grad_(False)
    row = profile_model(model, torch.zeros(1, 1, 32, 32), latency=False, memory=False)
    assert (row["params"], row["trainable_params"]) == (total, total - frozen)


def test_timm_resnet50_reproduces_the_published_size():
    # published: 25.56 M parameters and 4.1 GMACs at 3x224x224, 1000 classes
    row = profile_by_name("timm:resnet50", (3, 224, 224), num_classes=1000, device="meta")
    assert row["params"] == 25_557_032
    assert 4.05e9 < row["macs"] < 4.15e9


def test_monai_3d_resnet50_reproduces_the_papers_parameter_count():
    # Light-3Dformer's and 3D-CConvFormer's tables: 3D-ResNet50 46.203M (PET/CT, 2 classes)
    for in_chans, expected in ((1, 46_163_010), (2, 46_184_962)):
        with torch.device("meta"):
            model = create_model("monai:resnet50", in_chans=in_chans, num_classes=2, spatial_dims=3)
        total, _ = count_params(model)
        assert total == expected
        assert abs(total - 46.203e6) / 46.203e6 < 0.002


def test_peak_activation_memory_counts_live_and_saved_tensors():
    model = nn.Sequential(
        nn.Linear(8, 1000), nn.ReLU(), nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10)
    )
    x = torch.zeros(1, 8)
    # inference: at most two 1000-float tensors alive at once
    assert peak_activation_memory(model, x, grad=False) == {
        "bytes": 2 * 4000,
        "method": "tensor_tracker",
    }
    # autograd keeps the first ReLU output for backward while the second layer runs
    assert peak_activation_memory(model, x)["bytes"] == 3 * 4000
    assert model.training and all(p.grad is None for p in model.parameters())


def test_dict_input_for_models_with_modalities():
    model = Fusion()
    x = example_input(model, (2, 4, 4, 4))
    assert sorted(x) == ["ct", "pet"] and x["pet"].shape == (1, 1, 4, 4, 4)
    row = profile_model(model, x, repeats=2, warmup=0)
    assert row["macs"] == 2 * 128 and row["input_shape"]["ct"] == [1, 1, 4, 4, 4]
    assert row["activation_bytes"] > 0 and row["latency_ms"] > 0


def test_input_spec_parsing_names_the_argument():
    assert parse_input_size("1x224x224") == (1, 224, 224)
    assert parse_input_size("2X64x64x64") == (2, 64, 64, 64)
    for bad in ("224x224", "1x0x4", "1x2x3x4x5", "ax4x4", ""):
        with pytest.raises(ConfigError, match="--model-input"):
            parse_input_size(bad, arg="--model-input")


def test_cli_compares_models_as_csv(capsys):
    argv = ["profile", "timm:test_resnet", "timm:test_vit", "--input", "1x32x32"]
    assert main([*argv, "--no-latency", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == ["timm:test_resnet", "timm:test_vit"]
    for row in rows:
        kwargs = {"img_size": 32} if row["name"] == "timm:test_vit" else {}
        model = create_model(row["name"], in_chans=1, num_classes=2, **kwargs)
        assert int(row["params"]) == sum(p.numel() for p in model.parameters())
        assert int(row["flops"]) == 2 * int(row["macs"]) > 0
        assert row["input"] == "1x32x32" and int(row["activation_bytes"]) > 0
        assert row["latency_ms"] == ""


def test_cli_markdown_file_with_a_per_model_input(tmp_path, capsys):
    out = tmp_path / "sizes.md"
    argv = ["profile", "timm:test_resnet", "timm3d:resnet10t@1x32x32x32", "--input", "1x32x32"]
    assert main([*argv, "--repeats", "2", "--warmup", "0", "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| model | input | params |") and "latency (cpu, ms)" in lines[0]
    assert "| timm3d:resnet10t | 1x32x32x32 |" in lines[3]


def test_cli_default_input_is_the_models_own_size(capsys):
    assert (
        main(["profile", "timm:test_resnet", "--in-chans", "3", "--no-latency", "--format", "csv"])
        == 0
    )
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    size = create_model("timm:test_resnet", in_chans=3, num_classes=2).model_cfg.input_size
    assert row["input"] == "x".join(map(str, size)) and size[0] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["timm:test_resnet", "--input", "32x32"], "--input '32x32'"),
        (["timm:test_resnet", "--input", "1x32x32", "--in-chans", "3"], "--in-chans 3"),
        (["timm:test_resnet@1x8"], "timm:test_resnet@"),
        (["timm:no_such_model", "--input", "1x32x32"], "no_such_model"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(["profile", *argv, "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_comes_from_the_allocator():
    row = profile_by_name("timm:test_resnet", (1, 32, 32), device="cuda", latency=False)
    assert row["activation_method"] == "cuda_allocator" and row["activation_bytes"] > 0
