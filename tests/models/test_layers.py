"""medcls.models.layers: 2D/3D blocks, per-sample convolution, re-parameterisation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from medcls.errors import ModelError
from medcls.models.layers import (
    ClassifierHead,
    ConvNormAct,
    DirectionalConv,
    DynamicConv,
    RepConv,
    SpatialReductionAttention,
    TransformerBlock,
    adaptive_avg_pool,
    avg_pool,
    conv_type,
    make_act,
    make_norm,
    reparameterize_model,
    sum_outputs,
    to_tuple,
)

DIMS = [2, 3]


def _x(dims: int, channels: int, size: int = 8, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, channels, *(size,) * dims)


def _randomise_norms(module: nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine parameters, so folding is tested."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))


class _CountOps(TorchDispatchMode):
    """Counts the calls of one aten operation (default: convolution, forward only)."""

    def __init__(self, op=torch.ops.aten.convolution) -> None:
        super().__init__()
        self.op = op
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is self.op:
            self.calls += 1
        return func(*args, **(kwargs or {}))


# ----------------------------------------------------------------------- factories


@pytest.mark.parametrize("dims", DIMS)
def test_factories_pick_the_dimension(dims):
    assert conv_type(dims) is {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    assert isinstance(make_norm("batch", dims, 4), {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims])
    assert isinstance(make_norm("none", dims, 4), nn.Identity)
    x = _x(dims, 2, size=7)
    assert avg_pool(x, 2).shape[2:] == (4,) * dims  # odd sizes keep their border
    assert adaptive_avg_pool(x, 3).shape[2:] == (3,) * dims


def test_factories_reject_bad_arguments():
    with pytest.raises(ModelError, match="spatial_dims=4"):
        conv_type(4)
    with pytest.raises(ModelError, match="norm 'layers' unknown"):
        make_norm("layers", 2, 4)
    with pytest.raises(ModelError, match="activation 'swish2' unknown"):
        make_act("swish2")
    with pytest.raises(ModelError, match=r"kernel_size=.*expected 3"):
        to_tuple((3, 3), 3, "kernel_size")


@pytest.mark.parametrize("dims", DIMS)
def test_conv_norm_act_reparameterize_folds_batch_norm(dims):
    block = ConvNormAct(dims, 4, 6, 3, stride=2, groups=2, act="relu")
    _randomise_norms(block)
    block.eval()
    x = _x(dims, 4)
    with torch.no_grad():
        ref = block(x)
        block.reparameterize()
        out = block(x)
    assert isinstance(block.norm, nn.Identity) and block.conv.bias is not None
    assert out.shape == (3, 6, *(4,) * dims)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------- per-sample convolution


@pytest.mark.parametrize(
    ("dims", "in_chans", "out_chans", "kernel", "stride", "dilation", "groups", "chunks"),
    [
        (2, 8, 8, 3, 1, 1, 8, 4),  # depthwise, 4 chunks with their own mixtures
        (2, 8, 12, (1, 5), 2, 1, 4, 3),  # chunked grouped conv, lateral line kernel
        (2, 6, 4, 3, 1, 2, 1, 1),  # dense dilated
        (3, 4, 4, (3, 1, 1), 1, 1, 4, 2),  # 3D line kernel along depth
        (3, 4, 8, 3, 2, 2, 2, 2),  # 3D dilated, strided, grouped
    ],
)
def test_dynamic_conv_batched_equals_per_sample_loop(
    dims, in_chans, out_chans, kernel, stride, dilation, groups, chunks
):
    torch.manual_seed(0)
    conv = DynamicConv(
        dims,
        in_chans,
        out_chans,
        kernel,
        stride,
        dilation,
        groups,
        num_experts=3,
        num_chunks=chunks,
        bias=True,
    )
    with torch.no_grad():
        conv.bias.normal_()
        conv.router.fc2.weight.normal_()  # routing far from uniform: kernels differ per sample
    x = _x(dims, in_chans, size=9, batch=4)
    routing = conv.route(x)
    assert routing.shape == (4, chunks, 3)
    torch.testing.assert_close(routing.sum(-1), torch.ones(4, chunks))
    kernels = conv.sample_kernels(routing)
    assert kernels.shape == (4, out_chans, in_chans // groups, *to_tuple(kernel, dims))
    assert not torch.allclose(kernels[0], kernels[1]), "every sample gets its own kernel"
    fn = {2: F.conv2d, 3: F.conv3d}[dims]
    loop = torch.cat(
        [
            fn(
                x[b : b + 1],
                kernels[b],
                conv.bias,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                groups=groups,
            )
            for b in range(4)
        ]
    )
    batched = conv(x, routing)
    torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(x), loop, atol=1e-5, rtol=1e-5)


def test_dynamic_conv_runs_one_convolution_for_the_whole_batch():
    conv = DynamicConv(2, 8, 8, 3, groups=8, num_experts=4, num_chunks=2)
    for batch in (1, 16):
        with _CountOps() as counter:
            conv(_x(2, 8, batch=batch))
        assert counter.calls == 1, f"batch {batch}: {counter.calls} convolutions"


def test_dynamic_conv_gradients_reach_experts_and_router():
    conv = DynamicConv(2, 4, 4, 3, groups=4, num_experts=3, num_chunks=2)
    conv(_x(2, 4)).square().mean().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.router.parameters())


@pytest.mark.parametrize("dims", DIMS)
def test_dynamic_conv_folds_a_following_batch_norm(dims):
    torch.manual_seed(0)
    conv = DynamicConv(dims, 4, 6, 3, groups=2, num_experts=3, num_chunks=3)
    norm = make_norm("batch", dims, 6)
    _randomise_norms(norm)
    norm.eval()
    x = _x(dims, 4, size=6)
    with torch.no_grad():
        ref = norm(conv(x))
        conv.fold_batch_norm(norm)
        out = conv(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_dynamic_conv_rejects_bad_chunks_and_missing_router():
    with pytest.raises(ModelError, match="num_chunks=3 must divide out_chans=8"):
        DynamicConv(2, 8, 8, 3, num_chunks=3)
    conv = DynamicConv(2, 4, 4, 3, router=False)
    with pytest.raises(ModelError, match="router=False"):
        conv(_x(2, 4))


# ------------------------------------------------------------ directional convolution


@pytest.mark.parametrize("dims", DIMS)
def test_directional_conv_branch_shapes_and_stride(dims):
    conv = DirectionalConv(dims, 6, kernel_size=5, dilation=2, stride=2)
    kernels = {name: tuple(b.weight.shape[2:]) for name, b in conv.branches.items()}
    if dims == 2:  # vertical k x 1, lateral 1 x k, dilated k x k
        assert kernels == {"line0": (5, 1), "line1": (1, 5), "dilated": (5, 5)}
    else:  # k x 1 x 1, 1 x k x 1, 1 x 1 x k, dilated k^3
        assert kernels == {
            "line0": (5, 1, 1),
            "line1": (1, 5, 1),
            "line2": (1, 1, 5),
            "dilated": (5, 5, 5),
        }
    assert conv.branches["dilated"].dilation == (2,) * dims
    assert all(b.groups == 6 for b in conv.branches.values())  # depthwise by default
    assert conv(_x(dims, 6, size=9)).shape == (3, 6, *(5,) * dims)


def test_directional_conv_lines_see_their_direction():
    """A vertical line kernel reacts to a vertical neighbour, a lateral one does not."""
    conv = DirectionalConv(2, 1, kernel_size=3, dilation=0, norm=None)
    with torch.no_grad():
        for branch in conv.branches.values():
            branch.weight.fill_(1.0)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1, 2] = 1.0  # one pixel above the centre
    vertical = conv.branches["line0"](x)[0, 0, 2, 2]
    lateral = conv.branches["line1"](x)[0, 0, 2, 2]
    assert (vertical.item(), lateral.item()) == (1.0, 0.0)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("dynamic", [False, True])
def test_directional_conv_reparameterize_is_exact(dims, dynamic):
    torch.manual_seed(0)
    conv = DirectionalConv(dims, 4, 8, kernel_size=3, stride=2, dynamic=dynamic, num_chunks=2)
    _randomise_norms(conv)
    conv.eval()
    x = _x(dims, 4, size=7)
    with torch.no_grad():
        ref = conv(x)
        conv.reparameterize()
        out = conv(x)
    assert isinstance(conv.norm, nn.Identity) and conv.bias is not None
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_dynamic_directional_conv_one_convolution_per_branch_at_any_batch():
    conv = DirectionalConv(2, 8, dynamic=True, num_chunks=4)
    for batch in (1, 8):
        with _CountOps() as counter:
            conv(_x(2, 8, batch=batch))
        assert counter.calls == len(conv.branches) == 3


def test_sum_outputs_adds_each_branch_once():
    parts = [torch.randn(2, 3) for _ in range(3)]
    with _CountOps(torch.ops.aten.add) as counter:
        total = sum_outputs(iter(parts))
    assert counter.calls == 2  # Python's sum() would also add the starting 0
    torch.testing.assert_close(total, parts[0] + parts[1] + parts[2])
    assert sum_outputs([parts[0]]) is parts[0]
    with pytest.raises(ValueError, match="no outputs"):
        sum_outputs([])


@pytest.mark.parametrize("dynamic", [False, True])
def test_directional_conv_sums_its_branches_without_a_starting_zero(dynamic):
    conv = DirectionalConv(2, 4, dynamic=dynamic, norm=None)
    with _CountOps(torch.ops.aten.add) as counter:
        conv(_x(2, 4))
    assert counter.calls == len(conv.branches) - 1


# ------------------------------------------------------------ re-parameterisable conv


@pytest.mark.parametrize(
    ("dims", "in_chans", "out_chans", "stride", "groups", "axial"),
    [
        (2, 8, 8, 1, 1, True),  # identity branch present
        (2, 8, 16, 2, 4, True),  # grouped, strided, no identity
        (2, 6, 6, 1, 6, False),  # depthwise with identity
        (3, 4, 4, 1, 2, True),
        (3, 4, 8, 2, 1, False),
    ],
)
def test_rep_conv_fuses_to_one_equivalent_convolution(
    dims, in_chans, out_chans, stride, groups, axial
):
    torch.manual_seed(0)
    block = RepConv(dims, in_chans, out_chans, 3, stride=stride, groups=groups, use_axial=axial)
    block.train()
    block(_x(dims, in_chans, size=9, batch=4))  # one training step moves the running stats
    _randomise_norms(block)
    block.eval()
    x = _x(dims, in_chans, size=9)
    with torch.no_grad():
        ref = block(x)
        fused = copy.deepcopy(block)
        fused.reparameterize()
        out = fused(x)
    assert (block.identity is not None) == (in_chans == out_chans and stride == 1)
    convs = [m for m in fused.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert len(convs) == 1 and convs[0].kernel_size == (3,) * dims
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_rep_conv_rejects_an_impossible_identity():
    with pytest.raises(ModelError, match="identity branch needs"):
        RepConv(2, 4, 8, use_identity=True)


# ------------------------------------------------------------------------ attention


@pytest.mark.parametrize("dims", DIMS)
def test_spatial_reduction_attention_matches_the_formula(dims):
    torch.manual_seed(0)
    reducer = nn.AvgPool2d(2) if dims == 2 else nn.AvgPool3d(2)
    attn = SpatialReductionAttention(dims, 8, num_heads=2, kv_reducer=reducer)
    x = _x(dims, 8, size=4, batch=2)
    out = attn(x)
    assert out.shape == x.shape
    # by hand: heads of 4 channels, keys/values from the pooled map
    q = attn.q(x).flatten(2)  # (B, 8, N)
    kv = attn.kv(reducer(x)).flatten(2)  # (B, 16, M)
    k, v = kv[:, :8], kv[:, 8:]
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        scores = q[:, sl].transpose(1, 2) @ k[:, sl] / 2.0  # sqrt(head_dim) = 2
        heads.append((scores.softmax(-1) @ v[:, sl].transpose(1, 2)).transpose(1, 2))
    ref = attn.proj(torch.cat(heads, 1).reshape(x.shape))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", DIMS)
def test_transformer_block_keeps_shape_with_directional_reducer(dims):
    reducer = DirectionalConv(dims, 8, kernel_size=3, stride=2)
    block = TransformerBlock(dims, 8, num_heads=2, mlp_ratio=2.0, kv_reducer=reducer)
    x = _x(dims, 8, size=6)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_reparameterize_model_fuses_nested_blocks():
    model = nn.Sequential(
        ConvNormAct(2, 3, 8, 3),
        nn.Sequential(RepConv(2, 8, 8, 3), DirectionalConv(2, 8, dynamic=True)),
    )
    _randomise_norms(model)
    model.eval()
    x = _x(2, 3)
    with torch.no_grad():
        ref = model(x)
        out = reparameterize_model(model)(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_classifier_head_pools_and_resets():
    head = ClassifierHead(6, 3)
    x = _x(3, 6, size=2)
    assert head(x).shape == (3, 3)
    torch.testing.assert_close(head(x, pre_logits=True), x.mean(dim=(2, 3, 4)))
    head.reset(0)
    assert head(x).shape == (3, 6)
    with pytest.raises(ModelError, match="num_classes=-1"):
        head.reset(-1)
