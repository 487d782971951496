"""T2T-ViT: tokens-to-token vision transformer, one implementation for 2D and 3D.

Paper: L. Yuan, Y. Chen, T. Wang, W. Yu, Y. Shi, Z. Jiang, F. E. H. Tay, J. Feng,
S. Yan, "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet",
ICCV 2021, https://arxiv.org/abs/2101.11986.

Written from the paper and its public description; paper component -> class:

- soft split: overlapping patches unfolded into tokens (kernel 7 stride 4, then twice
  kernel 3 stride 2), for any number of spatial axes -> :func:`soft_split`;
- re-structurization: a Performer layer on the split tokens, then the tokens reshaped
  back to their grid -> :class:`TokenPerformer`, :class:`TokensToToken`;
- the ViT backbone: class token, fixed sinusoidal position encoding, pre-norm
  transformer blocks (deep-narrow: width 448, 19 blocks, 7 heads, MLP ratio 3 for
  T2T-ViT-19) -> :class:`T2TViT`.

Parameters (measured with this module; paper):

==========  ========  ========  ======  ======================  =========
model       paper 2D  ours 2D   diff    3D table                ours 3D
==========  ========  ========  ======  ======================  =========
t2t_vit_19  39.2 M    39.085 M  -0.3 %  (not in the 3D table)   39.481 M
==========  ========  ========  ======  ======================  =========

(2D at 1,000 classes and 3 input channels; 3D at 2 classes and 2 input channels. Our
count has no frozen parameters: the fixed sinusoidal encoding (197 x 448 = 88,256
frozen entries in the authors' code at 224²) is computed for the actual number of
tokens, and the Performer's fixed random features (2 x 32 x 64 = 4,096) are buffers;
with them the count would be 39.177 M, -0.06 %.)

MACs (``medcls.models.profile.count_macs``): 8.48 G at 224² (paper 8.5 G), 3.40 G at 64³.

Design choices where the contract asks for more than the paper says:

- the head: the paper classifies the final class token; the medcls contract returns a
  channel-first feature map from ``forward_features`` and pools it in the head, so the
  final patch tokens (after the last layer norm) are averaged instead. The class token
  is still prepended and takes part in every attention, so the parameters are the
  paper's;
- the attention scale is ``head_dim ** -0.5`` (the shared multi-head attention), where
  the authors' code sets ``448 ** -0.5`` for T2T-ViT-19; no parameter depends on it;
- the sinusoidal encoding runs over the flattened token index (as in the paper), for
  any grid in 2D or 3D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medcls.errors import ModelError
from medcls.models.baselines._common import build_variant
from medcls.models.contract import CamLayer, FeatureStage
from medcls.models.layers import ClassifierHead, check_spatial_dims
from medcls.models.layers.classifier_base import NativeClassifier
from medcls.models.layers.token_blocks import (
    ChannelLayerNorm,
    PrefixTokens,
    TokenBlock,
    patches_to_grid,
)
from medcls.models.layers.tokens import (
    Mlp,
    MultiHeadAttention,
    drop_path_rates,
    grid_to_tokens,
    tokens_to_grid,
)
from medcls.models.registry import register_model

__all__ = ["TINY", "T2TViT", "TokenPerformer", "TokensToToken", "sinusoid_encoding", "soft_split"]

PAPER = (
    "Yuan et al., Tokens-to-Token ViT: Training Vision Transformers from Scratch on "
    "ImageNet, ICCV 2021, https://arxiv.org/abs/2101.11986"
)


def soft_split(x: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """Unfolds overlapping patches of ``(B, C, *S)`` into channels, for any number of axes.

    The generalisation of ``nn.Unfold`` to 3D: each output cell holds the
    ``C * kernel_size^n`` values of its patch (channel-major, as ``nn.Unfold``).

    Returns:
        ``(B, C * kernel_size^n, *S')`` with ``S' = (S + 2 padding - kernel) // stride + 1``.
    """
    dims = x.ndim - 2
    x = F.pad(x, (padding,) * (2 * dims))
    for axis in range(2, 2 + dims):
        x = x.unfold(axis, kernel_size, stride)  # appends the kernel axis at the end
    batch, chans, *rest = x.shape
    grid, kernel = rest[:dims], rest[dims:]
    order = [0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims)]
    return x.permute(order).reshape(batch, chans * math.prod(kernel), *grid)


def sinusoid_encoding(num_tokens: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Fixed sinusoidal position encoding ``(1, num_tokens, dim)`` (Vaswani et al.)."""
    pos = torch.arange(num_tokens, device=like.device, dtype=torch.float32)[:, None]
    index = torch.arange(dim, device=like.device)
    freq = torch.pow(10000.0, -2.0 * torch.div(index, 2, rounding_mode="floor") / dim)
    angles = pos * freq
    table = torch.where(index % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(like.dtype)[None]


class TokenPerformer(nn.Module):
    """Single-head Performer layer of the T2T module (linear attention by random features).

    ``y = v + proj(attn(norm1(x)))`` (the value is the shortcut: the width changes from
    ``dim`` to ``emb``), then ``y = y + mlp(norm2(y))``. The softmax kernel is
    approximated with ``m = emb * kernel_ratio`` fixed orthogonal random features.

    Shapes: ``(B, N, dim)`` -> ``(B, N, emb)``.

    Args:
        dim: input token width.
        emb: output token width.
        kernel_ratio: random features per output channel.
        eps: denominator stabiliser.
    """

    def __init__(self, dim: int, emb: int, kernel_ratio: float = 0.5, eps: float = 1e-8) -> None:
        super().__init__()
        self.emb, self.eps = emb, eps
        self.norm1 = nn.LayerNorm(dim)
        self.kqv = nn.Linear(dim, 3 * emb)
        self.proj = nn.Linear(emb, emb)
        self.norm2 = nn.LayerNorm(emb)
        self.mlp = Mlp(emb, emb)
        m = max(1, int(emb * kernel_ratio))
        features = torch.empty(m, emb)
        if features.device.type != "meta":
            nn.init.orthogonal_(features)
        self.register_buffer("features", features * math.sqrt(m))

    def _feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Positive random features ``exp(w^T x - |x|^2 / 2) / sqrt(m)``: ``(B, N, m)``."""
        m = self.features.shape[0]
        sq = x.square().sum(dim=-1, keepdim=True) / 2
        return torch.exp(x @ self.features.t() - sq) / math.sqrt(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, N, emb)``."""
        k, q, v = self.kqv(self.norm1(x)).split(self.emb, dim=-1)
        kp, qp = self._feature_map(k), self._feature_map(q)
        denom = qp @ kp.sum(dim=1).unsqueeze(-1)  # (B, N, 1)
        attn = (qp @ (kp.transpose(1, 2) @ v)) / (denom + self.eps)
        y = v + self.proj(attn)
        return y + self.mlp(self.norm2(y))


class TokensToToken(nn.Module):
    """The T2T module: soft split and re-structurization, repeated, then a projection.

    Shapes: ``(B, in_chans, *S)`` -> ``(B, embed_dim, *S / 16)`` (with the default
    kernels ``7/3/3``, strides ``4/2/2``).

    Args:
        spatial_dims: 2 or 3.
        in_chans: input channels.
        embed_dim: output token width.
        token_dim: width of the intermediate tokens.
        kernels: soft-split kernel of each step.
        strides: soft-split stride of each step.
        paddings: soft-split padding of each step.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_chans: int,
        embed_dim: int,
        token_dim: int = 64,
        kernels: Sequence[int] = (7, 3, 3),
        strides: Sequence[int] = (4, 2, 2),
        paddings: Sequence[int] = (2, 1, 1),
    ) -> None:
        super().__init__()
        if not len(kernels) == len(strides) == len(paddings) >= 2:
            raise ModelError(
                "TokensToToken: kernels, strides and paddings need the same length (>= 2), got "
                f"{tuple(kernels)}, {tuple(strides)}, {tuple(paddings)}"
            )
        n = spatial_dims
        self.splits = list(zip(kernels, strides, paddings))
        chans = [in_chans] + [token_dim] * (len(kernels) - 1)
        self.attention = nn.ModuleList(
            TokenPerformer(c * k**n, token_dim) for c, k in zip(chans[:-1], kernels[:-1])
        )
        self.project = nn.Linear(token_dim * kernels[-1] ** n, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S)`` -> ``(B, embed_dim, *S')``."""
        for (k, s, p), attn in zip(self.splits, self.attention):
            tokens, grid = grid_to_tokens(soft_split(x, k, s, p))
            x = tokens_to_grid(attn(tokens), grid)
        k, s, p = self.splits[-1]
        tokens, grid = grid_to_tokens(soft_split(x, k, s, p))
        return tokens_to_grid(self.project(tokens), grid)


class T2TViT(NativeClassifier):
    """Tokens-to-token ViT (see the module docstring for the paper).

    :class:`TokensToToken` (stride 16) -> class token + sinusoidal position encoding ->
    transformer blocks -> layer norm -> patch tokens as a grid -> global average pool ->
    linear.

    Shapes: ``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``;
    ``forward_features`` returns ``(B, embed_dim, *spatial / 16)``.

    Args:
        in_chans: input channels.
        num_classes: logits (0: none).
        spatial_dims: 2 or 3.
        embed_dim: token width of the backbone.
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width as a multiple of ``embed_dim``.
        token_dim: width of the T2T module's tokens.
        qkv_bias: biases of the attention's q/k/v projection.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        drop_rate: dropout after the position encoding and before the classifier.
    """

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        embed_dim: int = 448,
        depth: int = 19,
        num_heads: int = 7,
        mlp_ratio: float = 3.0,
        token_dim: int = 64,
        qkv_bias: bool = False,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = check_spatial_dims(spatial_dims, "T2TViT")
        self.in_chans, self.spatial_dims = in_chans, n
        self.t2t = TokensToToken(n, in_chans, embed_dim, token_dim)
        self.cls_token = PrefixTokens(embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, [depth])[0]
        self.blocks = nn.ModuleList(
            TokenBlock(
                embed_dim,
                MultiHeadAttention(embed_dim, num_heads, qkv_bias=qkv_bias),
                Mlp(embed_dim, round(embed_dim * mlp_ratio)),
                drop_path=rate,
                eps=1e-5,
            )
            for rate in rates
        )
        self.norm = ChannelLayerNorm(embed_dim, eps=1e-5)
        self.num_features, self.num_classes = embed_dim, num_classes
        self.head = ClassifierHead(embed_dim, num_classes, drop_rate)
        self.feature_stages = [
            FeatureStage("t2t.attention.0", token_dim, 4),
            FeatureStage("t2t.attention.1", token_dim, 8),
            FeatureStage("norm", embed_dim, 16),
        ]
        self.cam_layer = CamLayer("norm", "channels_first", 0, 16)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> ``(B, embed_dim, *spatial / 16)``."""
        x, grid = grid_to_tokens(self.t2t(x))
        x = self.cls_token(x)
        x = self.pos_drop(x + sinusoid_encoding(x.shape[1], x.shape[2], x))
        for block in self.blocks:
            x = block(x)
        return self.norm(patches_to_grid(x, grid, 1))


_VARIANTS: dict[str, dict] = {"t2t_vit_19": {}}

#: tiny constructor arguments per entrypoint (2-4 blocks, widths 16-32) for tests
TINY: dict[str, dict] = {
    "t2t_vit_19": {"embed_dim": 32, "depth": 2, "num_heads": 2, "token_dim": 16},
}


@register_model(dims=(2, 3), family="transformer", paper=PAPER)
def t2t_vit_19(*, in_chans: int, num_classes: int, spatial_dims: int = 2, **kwargs) -> T2TViT:
    """T2T-ViT-19: Performer T2T module, width 448, 19 blocks, 7 heads (39.2 M in 2D)."""
    return build_variant(
        T2TViT, _VARIANTS["t2t_vit_19"], in_chans, num_classes, spatial_dims, kwargs
    )
