"""Conformer: local features coupled with global representations, one implementation for 2D and 3D.

Paper: Z. Peng, W. Huang, S. Gu, L. Xie, Y. Wang, J. Jiao, Q. Ye, "Conformer: Local
Features Coupling Global Representations for Visual Recognition", ICCV 2021,
https://arxiv.org/abs/2105.03889.

Written from the paper and its public description; paper component -> class:

- stem: ``7^n`` convolution of stride 2, batch norm, ReLU, ``3^n`` max pool of stride 2;
- CNN branch: ResNet bottlenecks (width ``base_channel * channel_ratio``, doubled at
  strides 8 and 16, the last block of stride 2) -> :class:`BottleneckBlock`;
- transformer branch: patch embedding (``4^n`` convolution on the stem output, i.e.
  patches of 16), class token, ViT blocks -> ``Conformer.trans_patch``, ``trans_1`` and
  the ``trans_block`` of each :class:`ConvTransBlock`;
- feature coupling units: CNN -> transformer (``1^n`` convolution, average pooling to
  the token grid, layer norm, GELU) and transformer -> CNN (``1^n`` convolution, batch
  norm, ReLU, nearest upsampling, added inside the next bottleneck) ->
  :class:`FCUDown`, :class:`FCUUp`.

Parameters (measured with this module; paper):

===========  ========  ========  ======  ======================  =========
model        paper 2D  ours 2D   diff    3D table                ours 3D
===========  ========  ========  ======  ======================  =========
conformer_b  83.3 M    83.288 M  -0.0 %  (not in the 3D table)   110.687 M
===========  ========  ========  ======  ======================  =========

(2D at 1,000 classes and 3 input channels; 3D at 2 classes and 2 input channels.)
MACs (``medcls.models.profile.count_macs``): 23.33 G at 224² (paper 23.3 G), 23.29 G at 64³.

The two heads: Conformer trains a linear classifier on each branch (the pooled CNN map,
the transformer's class token) and sums their logits at inference. Here the feature map
is the CNN branch's last map concatenated with the transformer's normalised patch
tokens, average-pooled onto the CNN grid (:class:`BranchMerge`), and one linear layer
classifies its average: a linear layer on a concatenation *is* the sum of one linear
layer per part, so the logits are the sum of a CNN head and a transformer head, with
one bias instead of two (1,000 parameters fewer at 1,000 classes). As in the other
token models here, the transformer head reads the average of the patch tokens rather
than the class token (the contract's head pools a channel-first map); the class token
is kept and takes part in every attention. Training uses one loss on the summed
logits instead of one loss per head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import build_variant
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import ClassifierHead, ConvNormAct, adaptive_avg_pool, check_spatial_dims
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.token_blocks import ConvTokenEmbed, PrefixTokens, TokenBlock, split_prefix
from medcls.models.layers.tokens import (
    Mlp,
    MultiHeadAttention,
    drop_path_rates,
    grid_to_tokens,
    tokens_to_grid,
)
from medcls.models.registry import register_model

__all__ = [
    "TINY",
    "BottleneckBlock",
    "BranchMerge",
    "Conformer",
    "ConvTransBlock",
    "FCUDown",
    "FCUUp",
]

PAPER = (
    "Peng et al., Conformer: Local Features Coupling Global Representations for Visual "
    "Recognition, ICCV 2021, https://arxiv.org/abs/2105.03889"
)


def vit_block(dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float):
    """A pre-norm ViT block on tokens ``(B, L, dim)`` (layer-norm epsilon 1e-6)."""
    return TokenBlock(
        dim,
        MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias),
        Mlp(dim, round(dim * mlp_ratio)),
        drop_path=drop_path,
    )


class BottleneckBlock(nn.Module):
    """ResNet bottleneck of the CNN branch; the transformer's map may join before the ``3^n`` conv.

    ``mid = act(BN(conv3(act(BN(conv1(x))) + side)))``;
    ``out = act(BN(conv1x1(mid)) + shortcut(x))``.

    Shapes: ``(B, in_chans, *S)`` (and ``side`` ``(B, out_chans / 4, *S)``) ->
    ``(B, out_chans, *S / stride)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels (the bottleneck width is a quarter).
        stride: stride of the ``3^n`` convolution.
        res_conv: a ``1^n`` convolution + batch norm on the shortcut.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int = 1,
        res_conv: bool = False,
    ) -> None:
        super().__init__()
        if out_chans % 4:
            raise ModelError(f"BottleneckBlock: out_chans={out_chans} must be divisible by 4")
        med = out_chans // 4
        self.conv1 = ConvNormAct(spatial_dims, in_chans, med, 1)
        self.conv2 = ConvNormAct(spatial_dims, med, med, 3, stride)
        self.conv3 = ConvNormAct(spatial_dims, med, out_chans, 1, act=None)
        self.shortcut: nn.Module = nn.Identity()
        if res_conv:
            self.shortcut = ConvNormAct(spatial_dims, in_chans, out_chans, 1, stride, act=None)
        elif stride != 1 or in_chans != out_chans:
            raise ModelError("BottleneckBlock: a stride or width change needs res_conv=True")
        self.act = nn.ReLU(inplace=True)

    def forward_with_mid(
        self, x: torch.Tensor, side: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out, mid)``: the block output and the activation after the ``3^n`` convolution."""
        h = self.conv1(x)
        mid = self.conv2(h if side is None else h + side)
        return self.act(self.conv3(mid) + self.shortcut(x)), mid

    def forward(self, x: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        return self.forward_with_mid(x, side)[0]


class FCUDown(nn.Module):
    """Feature coupling, CNN -> transformer: ``GELU(LN(pool(conv1x1(x))))`` as patch tokens.

    The map is average-pooled onto the token grid; the class token of ``x_t`` is
    prepended.

    Shapes: ``(B, in_chans, *S)`` and tokens ``(B, 1 + N, dim)`` on ``grid`` ->
    ``(B, 1 + N, dim)``.
    """

    def __init__(self, spatial_dims: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = ConvNormAct(spatial_dims, in_chans, dim, 1, norm=None, act=None)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, x_t: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, C, *S)``, ``(B, 1 + N, dim)`` -> ``(B, 1 + N, dim)``."""
        tokens, _ = grid_to_tokens(adaptive_avg_pool(self.proj(x), tuple(grid)))
        return torch.cat([x_t[:, :1], self.act(self.norm(tokens))], dim=1)


class FCUUp(nn.Module):
    """Feature coupling, transformer -> CNN: ``ReLU(BN(conv1x1(patches)))``, upsampled (nearest).

    Shapes: tokens ``(B, 1 + N, dim)`` on ``grid`` -> ``(B, out_chans, *size)``.
    """

    def __init__(self, spatial_dims: int, dim: int, out_chans: int) -> None:
        super().__init__()
        self.proj = ConvNormAct(spatial_dims, dim, out_chans, 1, bias=True)

    def forward(self, x_t: torch.Tensor, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        """``(B, 1 + N, dim)`` -> ``(B, out_chans, *size)``."""
        feat = self.proj(tokens_to_grid(split_prefix(x_t, 1)[1], grid))
        return nn.functional.interpolate(feat, size=tuple(size), mode="nearest")


class ConvTransBlock(nn.Module):
    """One Conformer block: a CNN bottleneck and a ViT block exchanging features both ways.

    ``x, mid = cnn_block(x)``; ``x_t = trans_block(fcu_down(mid, x_t) + x_t)``;
    ``x = fusion_block(x, side=fcu_up(x_t))``.

    Shapes: ``(B, in_chans, *S)``, tokens ``(B, 1 + N, dim)`` on ``grid`` ->
    ``(B, out_chans, *S')``, ``(B, 1 + N, dim)``.

    Args:
        spatial_dims: 2 or 3.
        in_chans: CNN input channels.
        out_chans: CNN output channels.
        res_conv: shortcut convolution in the first bottleneck.
        stride: stride of the first bottleneck.
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP width as a multiple of ``dim``.
        qkv_bias: biases of the q/k/v projection.
        drop_path: stochastic-depth rate of the ViT block.
        last_fusion: the fusion bottleneck halves the grid (the network's last block).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        res_conv: bool,
        stride: int,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        last_fusion: bool = False,
    ) -> None:
        super().__init__()
        n = spatial_dims
        self.cnn_block = BottleneckBlock(n, in_chans, out_chans, stride, res_conv)
        self.fusion_block = BottleneckBlock(
            n, out_chans, out_chans, 2 if last_fusion else 1, res_conv=last_fusion
        )
        self.squeeze_block = FCUDown(n, out_chans // 4, dim)
        self.expand_block = FCUUp(n, dim, out_chans // 4)
        self.trans_block = vit_block(dim, num_heads, mlp_ratio, qkv_bias, drop_path)

    def forward(
        self, x: torch.Tensor, x_t: torch.Tensor, grid: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CNN map and tokens -> CNN map and tokens."""
        x, mid = self.cnn_block.forward_with_mid(x)
        x_t = self.trans_block(self.squeeze_block(mid, x_t, grid) + x_t)
        side = self.expand_block(x_t, grid, mid.shape[2:])
        return self.fusion_block(x, side), x_t


class BranchMerge(nn.Module):
    """The CNN map and the transformer's normalised patch tokens on one grid.

    The tokens are layer-normalised, reshaped to their grid and average-pooled onto the
    CNN grid; the two are concatenated along the channels.

    Shapes: ``(B, C, *S)`` and tokens ``(B, 1 + N, dim)`` on ``grid`` -> ``(B, C + dim, *S)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, C, *S)``, ``(B, 1 + N, dim)`` -> ``(B, C + dim, *S)``."""
        tokens = tokens_to_grid(self.norm(split_prefix(x_t, 1)[1]), grid)
        return torch.cat([x, adaptive_avg_pool(tokens, tuple(x.shape[2:]))], dim=1)


class Conformer(NativeClassifier):
    """Conformer (see the module docstring for the paper).

    Stem (stride 4) -> first bottleneck + patch embedding (patches of 16) and ViT block ->
    :class:`ConvTransBlock` (CNN strides 4, 8, 16, the last one 32) ->
    :class:`BranchMerge` -> global average pool -> linear (the sum of a CNN head and a
    transformer head).

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, 1024 * channel_ratio / 4 + embed_dim, *spatial / 32)``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        base_channel: CNN base width (stage widths ``4, 8, 16 x base_channel x
            channel_ratio / 4``).
        channel_ratio: CNN width multiplier.
        embed_dim: token width.
        depth: blocks (a multiple of 3: one third per CNN stage).
        num_heads: attention heads.
        mlp_ratio: MLP width as a multiple of ``embed_dim``.
        qkv_bias: biases of the q/k/v projection.
        drop_path_rate: stochastic depth of the ViT blocks, rising linearly.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        base_channel: int = 64,
        channel_ratio: int = 6,
        embed_dim: int = 576,
        depth: int = 12,
        num_heads: int = 9,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "Conformer")
        if depth < 3 or depth % 3:
            raise ModelError(f"Conformer: depth={depth} must be a positive multiple of 3")
        self.in_chans, self.spatial_dims = in_chans, n
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[n]
        self.stem = nn.Sequential(
            ConvNormAct(n, in_chans, 64, 7, stride=2), pool(3, stride=2, padding=1)
        )
        rates = drop_path_rates(drop_path_rate, [depth])[0]
        width = base_channel * channel_ratio
        self.conv_1 = BottleneckBlock(n, 64, width, 1, res_conv=True)
        self.trans_patch = ConvTokenEmbed(n, 64, embed_dim, 4, 4, norm=False)
        self.cls_token = PrefixTokens(embed_dim)
        self.trans_1 = vit_block(embed_dim, num_heads, mlp_ratio, qkv_bias, rates[0])
        blocks, info = [], [FeatureStage("stem", 64, 4)]
        chans, reduction, last = width, 4, "conv_1"
        per_stage = depth // 3
        for stage in range(3):
            out = width * 2**stage
            first = 2 if stage == 0 else 1 + stage * per_stage
            for i in range(first, 1 + (stage + 1) * per_stage):
                start = i == first and stage > 0
                blocks.append(
                    ConvTransBlock(
                        n,
                        chans,
                        out,
                        res_conv=start,
                        stride=2 if start else 1,
                        dim=embed_dim,
                        num_heads=num_heads,
                        mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias,
                        drop_path=rates[i - 1],
                        last_fusion=i == depth,
                    )
                )
                chans, last = out, f"blocks.{len(blocks) - 1}.fusion_block"
            reduction = 4 * 2**stage
            if stage < 2:
                info.append(FeatureStage(last, chans, reduction))
        self.blocks = nn.ModuleList(blocks)
        self.merge = BranchMerge(embed_dim)
        self.num_features, self.num_classes = chans + embed_dim, num_classes
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        self.feature_stages = [*info, FeatureStage("merge", self.num_features, 32)]
        self.cam_layer = CamLayer("merge", "channels_first", 0, 32)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_features, *spatial / 32)``."""
        base = self.stem(x)
        x = self.conv_1(base)
        x_t, grid = grid_to_tokens(self.trans_patch(base))
        x_t = self.trans_1(self.cls_token(x_t))
        for block in self.blocks:
            x, x_t = block(x, x_t, grid)
        return self.merge(x, x_t, grid)


_VARIANTS: dict[str, dict] = {"conformer_b": {}}

#: tiny constructor arguments per entrypoint (2-4 blocks, widths 16-32) for tests
TINY: dict[str, dict] = {
    "conformer_b": {
        "base_channel": 8,
        "channel_ratio": 2,
        "embed_dim": 16,
        "depth": 3,
        "num_heads": 2,
    },
}


@register_model(dims=(2, 3), family="hybrid", paper=PAPER)
def conformer_b(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> Conformer:
    """Conformer-B: CNN width ratio 6, tokens of 576, 12 blocks, 9 heads (83.3 M in 2D)."""
    return build_variant(
        Conformer, _VARIANTS["conformer_b"], in_chans, num_classes, spatial_dims, kwargs
    )
