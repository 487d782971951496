"""Mobile-Former: MobileNet and transformer bridged both ways, one implementation for 2D and 3D.

Paper: Y. Chen, X. Dai, D. Chen, M. Liu, X. Dong, L. Yuan, Z. Liu, "Mobile-Former:
Bridging MobileNet and Transformer", CVPR 2022, https://arxiv.org/abs/2108.05895.

Written from the paper and its public description; paper component -> class:

- a handful of learnable global tokens (4 of width 128 in Mobile-Former-96M) ->
  ``MobileFormer.tokens``;
- Mobile -> Former bridge: lightweight cross attention, the tokens query the feature
  map, which serves as keys and values without projection (dynamic: a token-computed
  channel gate) -> :class:`MobileToFormer`;
- Former: multi-head attention among the tokens (keys/values unprojected) and an FFN,
  post-norm -> :class:`Former`;
- Mobile: inverted bottleneck (``1^n`` - depthwise ``3^n`` - ``1^n``) or, in the
  strided blocks, depthwise - pointwise - depthwise - pointwise, with dynamic ReLU
  whose coefficients the first token computes -> :class:`InvertedBottleneck`,
  :class:`DualDepthwiseBottleneck`, :class:`DynamicReLU`, :class:`TokenHyper`;
- Former -> Mobile bridge: the map queries the tokens (keys and values projected) ->
  :class:`FormerToMobile`;
- head: ``1^n`` convolution (x6), pooled, concatenated with the first token, a
  1280-wide hidden layer (batch norm, h-swish), linear.

Parameters (measured with this module; paper):

================  ========  ========  ======  ======================  ========
model             paper 2D  ours 2D   diff    3D table                ours 3D
================  ========  ========  ======  ======================  ========
mobileformer_96m  4.6 M     4.585 M   -0.3 %  (not in the 3D table)   3.368 M
================  ========  ========  ======  ======================  ========

(2D at 1,000 classes and 3 input channels; 3D at 2 classes and 2 input channels: the
1000-class classifier is 1.28 M of the 2D count.) MACs (``medcls.models.profile.count_macs``,
which leaves out element-wise products): 92 M at 224² (paper 96 M), 112 M at 64³.

The head within the contract: ``forward_features`` returns the ``1^n``-convolution map
with the first token broadcast over the grid as extra channels, ``(B, 768 + 128,
*grid)``; ``forward_head`` averages it (the token channels average to the token
itself), applies h-swish to the map part, and runs the hidden layer and the
classifier, which is the paper's head exactly (``head_hidden_size`` 1280). The CAM
layer is the ``1^n`` convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import build_variant
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import ClassifierHead, ConvNormAct, check_spatial_dims
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.token_blocks import check_heads, map_heads, merge_heads, split_heads
from medcls.models.layers.tokens import DropPath, Mlp
from medcls.models.registry import register_model

__all__ = [
    "TINY",
    "DualDepthwiseBottleneck",
    "DynamicReLU",
    "Former",
    "FormerToMobile",
    "InvertedBottleneck",
    "MobileFormer",
    "MobileFormerBlock",
    "MobileToFormer",
    "TokenHyper",
]

PAPER = (
    "Chen et al., Mobile-Former: Bridging MobileNet and Transformer, CVPR 2022, "
    "https://arxiv.org/abs/2108.05895"
)


class TokenHyper(nn.Module):
    """Dynamic-ReLU coefficients from the first global token: ``hsigmoid(W2 relu(W1 t_0))``.

    Shapes: tokens ``(B, T, token_dim)`` -> ``(B, out_features)``.
    """

    def __init__(self, token_dim: int, out_features: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, token_dim // reduction)
        self.fc1 = nn.Linear(token_dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, out_features)
        self.gate = nn.Hardsigmoid()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, token_dim)`` -> ``(B, out_features)``."""
        return self.gate(self.fc2(self.act(self.fc1(tokens[:, 0]))))


class DynamicReLU(nn.Module):
    """Dynamic ReLU: ``max(a_1 x, a_2 x)`` per channel, the slopes computed from the tokens.

    ``a_1 = 2 (h_1 - 0.5) + 1`` in ``[0, 2]``, ``a_2 = 2 (h_2 - 0.5)`` in ``[-1, 1]`` with
    ``(h_1, h_2)`` from a :class:`TokenHyper`.

    Shapes: ``(B, C, *S)`` and tokens ``(B, T, token_dim)`` -> ``(B, C, *S)``.
    """

    def __init__(self, chans: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.hyper = TokenHyper(token_dim, 2 * chans, reduction)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, C, *S)``."""
        coeffs = self.hyper(tokens).reshape(x.shape[0], 2, x.shape[1], *(1,) * (x.ndim - 2))
        a1 = (coeffs[:, 0] - 0.5) * 2.0 + 1.0
        a2 = (coeffs[:, 1] - 0.5) * 2.0
        return torch.maximum(x * a1, x * a2)


class MobileToFormer(nn.Module):
    """Mobile -> Former bridge: the tokens attend to the map (keys = values = the map).

    ``t = LN(t + drop_path(W_o (gate(t) * attn(W_q t, x, x))))`` with ``gate =
    2 hsigmoid(W_a t)`` when dynamic.

    Shapes: map ``(B, C, *S)`` and tokens ``(B, T, token_dim)`` -> ``(B, T, token_dim)``.
    """

    def __init__(
        self,
        chans: int,
        token_dim: int,
        num_heads: int = 2,
        dynamic: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        check_heads(chans, num_heads, "MobileToFormer")
        self.num_heads = num_heads
        self.alpha = (
            nn.Sequential(nn.Linear(token_dim, chans), nn.Hardsigmoid()) if dynamic else None
        )
        self.q = nn.Linear(token_dim, chans)
        self.proj = nn.Linear(chans, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)``, ``(B, T, D)`` -> ``(B, T, D)``."""
        kv = map_heads(x, self.num_heads)
        out = F.scaled_dot_product_attention(split_heads(self.q(tokens), self.num_heads), kv, kv)
        out = merge_heads(out)
        if self.alpha is not None:
            out = out * (2.0 * self.alpha(tokens))
        return self.norm(tokens + self.drop_path(self.proj(out)))


class Former(nn.Module):
    """Token transformer: multi-head attention (keys = values = the tokens) and an FFN, post-norm.

    ``t = LN(t + drop_path(W_o attn(W_q t, t, t)))``; ``t = LN(t + FFN(t))``.

    Shapes: ``(B, T, dim)`` -> ``(B, T, dim)``.
    """

    def __init__(
        self, dim: int, num_heads: int = 2, ffn_ratio: float = 2.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads, "Former")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, round(dim * ffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> ``(B, T, dim)``."""
        kv = split_heads(tokens, self.num_heads)
        out = F.scaled_dot_product_attention(split_heads(self.q(tokens), self.num_heads), kv, kv)
        tokens = self.norm(tokens + self.drop_path(self.proj(merge_heads(out))))
        return self.ffn_norm(tokens + self.ffn(tokens))


class FormerToMobile(nn.Module):
    """Former -> Mobile bridge: the map (unprojected) queries the tokens.

    ``x = x + drop_path(attn(x, W_k t, W_v t))``.

    Shapes: map ``(B, C, *S)`` and tokens ``(B, T, token_dim)`` -> ``(B, C, *S)``.
    """

    def __init__(
        self, chans: int, token_dim: int, num_heads: int = 2, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        check_heads(chans, num_heads, "FormerToMobile")
        self.num_heads = num_heads
        self.k = nn.Linear(token_dim, chans)
        self.proj = nn.Linear(token_dim, chans)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)``, ``(B, T, D)`` -> ``(B, C, *S)``."""
        k = split_heads(self.k(tokens), self.num_heads)
        v = split_heads(self.proj(tokens), self.num_heads)
        out = F.scaled_dot_product_attention(map_heads(x, self.num_heads), k, v)
        return x + self.drop_path(out.transpose(-1, -2).reshape(x.shape))


class InvertedBottleneck(nn.Module):
    """Mobile sub-block: ``1^n`` expansion, depthwise ``3^n`` (stride), ``1^n`` projection.

    Dynamic ReLU after the expansion and after the depthwise convolution.

    Shapes: ``(B, in_chans, *S)`` and tokens -> ``(B, out_chans, *S / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int,
        expand: float,
        token_dim: int,
    ) -> None:
        super().__init__()
        hidden = round(in_chans * expand)
        n = spatial_dims
        self.conv1 = ConvNormAct(n, in_chans, hidden, 1, act=None)
        self.act1 = DynamicReLU(hidden, token_dim)
        self.conv2 = ConvNormAct(n, hidden, hidden, 3, stride, groups=hidden, act=None)
        self.act2 = DynamicReLU(hidden, token_dim)
        self.conv3 = ConvNormAct(n, hidden, out_chans, 1, act=None)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        x = self.act1(self.conv1(x), tokens)
        return self.conv3(self.act2(self.conv2(x), tokens))


class DualDepthwiseBottleneck(nn.Module):
    """Strided Mobile sub-block: depthwise (stride), ``1^n``, depthwise, ``1^n``, with expansions.

    Dynamic ReLU after each depthwise convolution; the second pair is residual:
    ``h = pw1(dyrelu(dw1(x)))``; ``out = h + drop_path(pw2(dyrelu(dw2(h))))``.

    Shapes: ``(B, in_chans, *S)`` and tokens -> ``(B, out_chans, *S / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int,
        expand: Sequence[float],
        token_dim: int,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        n = spatial_dims
        hidden1, hidden2 = round(in_chans * expand[0]), round(out_chans * expand[1])
        if hidden1 % in_chans or hidden2 % out_chans:
            raise ModelError(
                f"DualDepthwiseBottleneck: expansions {tuple(expand)} must be whole numbers "
                "(depthwise convolutions multiply the channels)"
            )
        self.conv1 = ConvNormAct(n, in_chans, hidden1, 3, stride, groups=in_chans, act=None)
        self.act1 = DynamicReLU(hidden1, token_dim)
        self.conv2 = ConvNormAct(n, hidden1, out_chans, 1, act=None)
        self.conv3 = ConvNormAct(n, out_chans, hidden2, 3, groups=out_chans, act=None)
        self.act3 = DynamicReLU(hidden2, token_dim)
        self.conv4 = ConvNormAct(n, hidden2, out_chans, 1, act=None)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, out_chans, *S')``."""
        h = self.conv2(self.act1(self.conv1(x), tokens))
        return h + self.drop_path(self.conv4(self.act3(self.conv3(h), tokens)))


class MobileFormerBlock(nn.Module):
    """One Mobile-Former block: Mobile -> Former, Former, Mobile, Former -> Mobile.

    ``kind`` selects the Mobile sub-block: ``"inverted"`` (:class:`InvertedBottleneck`),
    ``"dual"`` (:class:`DualDepthwiseBottleneck`, the strided blocks) or ``"conv"``
    (depthwise + pointwise only, no bridges: the first block). A block that keeps the
    width and the grid adds its input (with stochastic depth).

    Shapes: ``(B, in_chans, *S)``, tokens ``(B, T, D)`` -> ``(B, out_chans, *S')``, tokens.

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        out_chans: output channels.
        stride: stride of the Mobile sub-block.
        expand: expansion ratio(s) (``"dual"``: two ratios).
        kind: ``"inverted"``, ``"dual"`` or ``"conv"``.
        token_dim: width of the global tokens.
        num_heads: heads of the bridges and the Former.
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        out_chans: int,
        stride: int,
        expand: float | Sequence[float],
        kind: str,
        token_dim: int,
        num_heads: int = 2,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        n = spatial_dims
        ratios = (expand,) if isinstance(expand, (int, float)) else tuple(expand)
        self.identity = stride == 1 and in_chans == out_chans
        # the first, convolution-only block adds its input without stochastic depth
        self.drop_path = DropPath(0.0 if kind == "conv" else drop_path)
        self.local_global: MobileToFormer | None = None
        self.global_block: Former | None = None
        self.global_local: FormerToMobile | None = None
        if kind == "conv":
            hidden = round(in_chans * ratios[0])
            self.mobile: nn.Module = nn.Sequential(
                ConvNormAct(n, in_chans, hidden, 3, stride, groups=in_chans, act="relu6"),
                ConvNormAct(n, hidden, out_chans, 1, act=None),
            )
            return
        if kind == "inverted":
            self.mobile = InvertedBottleneck(n, in_chans, out_chans, stride, ratios[0], token_dim)
        elif kind == "dual":
            if len(ratios) != 2:
                raise ModelError(
                    f"MobileFormerBlock: kind 'dual' needs two expansions, got {ratios}"
                )
            self.mobile = DualDepthwiseBottleneck(
                n, in_chans, out_chans, stride, ratios, token_dim, drop_path
            )
        else:
            raise ModelError(
                f"MobileFormerBlock: kind={kind!r}, expected 'inverted', 'dual' or 'conv'"
            )
        self.local_global = MobileToFormer(in_chans, token_dim, num_heads, True, drop_path)
        self.global_block = Former(token_dim, num_heads, 2.0, drop_path)
        self.global_local = FormerToMobile(out_chans, token_dim, num_heads, drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map and tokens -> map and tokens."""
        if self.local_global is None:
            out = self.mobile(x)
        else:
            tokens = self.global_block(self.local_global(x, tokens))
            out = self.mobile(x, tokens)
        if self.identity:
            out = x + self.drop_path(out)
        if self.global_local is not None:
            out = self.global_local(out, tokens)
        return out, tokens


#: Mobile-Former-96M blocks: (kind, out_chans, stride, expansion(s))
BLOCKS_96M = (
    ("conv", 12, 1, 2),
    ("dual", 16, 2, (6, 4)),
    ("dual", 32, 2, (6, 4)),
    ("inverted", 32, 1, 3),
    ("dual", 64, 2, (6, 4)),
    ("inverted", 64, 1, 4),
    ("inverted", 88, 1, 6),
    ("dual", 128, 2, (6, 4)),
    ("inverted", 128, 1, 6),
)


class MobileFormer(NativeClassifier):
    """Mobile-Former (see the module docstring for the paper).

    Stem (stride 2) -> :class:`MobileFormerBlock` list -> a last Mobile -> Former bridge ->
    ``1^n`` convolution (ReLU6) + the first token broadcast -> head (pool, h-swish,
    concatenate the token, hidden layer, classifier).

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, head_chans + token_dim, *spatial / 32)``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        stem_chans: stem width.
        blocks: ``(kind, out_chans, stride, expansion)`` per block (see
            :class:`MobileFormerBlock`).
        num_tokens: global tokens.
        token_dim: width of the global tokens.
        num_heads: heads of the bridges and the Former.
        head_expand: width of the last ``1^n`` convolution as a multiple of the last block's.
        head_hidden: width of the hidden layer of the head.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        stem_chans: int = 12,
        blocks: Sequence[tuple] = BLOCKS_96M,
        num_tokens: int = 4,
        token_dim: int = 128,
        num_heads: int = 2,
        head_expand: int = 6,
        head_hidden: int = 1280,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "MobileFormer")
        if num_tokens < 1:
            raise ModelError(f"MobileFormer: num_tokens={num_tokens} must be >= 1")
        self.in_chans, self.spatial_dims = in_chans, n
        self.tokens = nn.Parameter(torch.randn(1, num_tokens, token_dim))
        self.stem = ConvNormAct(n, in_chans, stem_chans, 3, stride=2, act="relu6")
        layers, stages = [], {2: FeatureStage("stem", stem_chans, 2)}
        chans, reduction = stem_chans, 2
        for i, (kind, out, stride, expand) in enumerate(blocks):
            rate = drop_path_rate * (i + 1) / len(blocks)
            layers.append(
                MobileFormerBlock(n, chans, out, stride, expand, kind, token_dim, num_heads, rate)
            )
            chans, reduction = out, reduction * stride
            if kind != "conv":
                stages[reduction] = FeatureStage(f"blocks.{i}.global_local", out, reduction)
        self.blocks = nn.ModuleList(layers)
        self.local_global = MobileToFormer(chans, token_dim, num_heads, True, drop_path_rate)
        self.head_chans = chans * head_expand
        self.head_conv = ConvNormAct(n, chans, self.head_chans, 1, act="relu6")
        self.num_features = self.head_chans + token_dim
        self.head_hidden_size = head_hidden
        self.pre_logits = nn.Sequential(
            nn.Linear(self.num_features, head_hidden), nn.BatchNorm1d(head_hidden), nn.Hardswish()
        )
        self.num_classes = num_classes
        self.head = ClassifierHead(head_hidden, num_classes, drop_rate)
        stages[reduction] = FeatureStage("head_conv", self.head_chans, reduction)
        self.feature_stages = [stages[k] for k in sorted(stages)]
        self.cam_layer = CamLayer("head_conv", "channels_first", 0, reduction)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, num_features, *spatial / 32)``."""
        # a copy, not a view: a view of a parameter made under no_grad has no grad_fn
        tokens = self.tokens.repeat(x.shape[0], 1, 1)
        x = self.stem(x)
        for block in self.blocks:
            x, tokens = block(x, tokens)
        tokens = self.local_global(x, tokens)
        x = self.head_conv(x)
        first = tokens[:, 0].reshape(*tokens.shape[::2], *(1,) * (x.ndim - 2))
        return torch.cat([x, first.expand(-1, -1, *x.shape[2:])], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features ``(B, num_features, *grid)`` -> logits (``pre_logits``: the hidden layer)."""
        if x.ndim > 2:
            x = x.mean(dim=tuple(range(2, x.ndim)))
        local, token = x.split([self.head_chans, x.shape[1] - self.head_chans], dim=1)
        hidden = self.pre_logits(torch.cat([F.hardswish(local), token], dim=1))
        return self.head(hidden, pre_logits=pre_logits)


_VARIANTS: dict[str, dict] = {"mobileformer_96m": {}}

#: tiny constructor arguments per entrypoint (2-4 blocks, widths 16-32) for tests
TINY: dict[str, dict] = {
    "mobileformer_96m": {
        "stem_chans": 8,
        "blocks": (("conv", 8, 1, 2), ("dual", 16, 2, (2, 2)), ("inverted", 16, 1, 2)),
        "num_tokens": 3,
        "token_dim": 16,
        "head_expand": 2,
        "head_hidden": 32,
    },
}


@register_model(dims=(2, 3), family="hybrid", paper=PAPER)
def mobileformer_96m(
    *, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs
) -> MobileFormer:
    """Mobile-Former-96M: 4 tokens of 128, stem 12, 9 blocks to 128 channels (4.6 M in 2D)."""
    return build_variant(
        MobileFormer, _VARIANTS["mobileformer_96m"], in_chans, num_classes, spatial_dims, kwargs
    )
