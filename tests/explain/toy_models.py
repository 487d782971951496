"""Small models with known evidence, following the medcls model contract.

``SpotNet``: class 1's score is the mean of a ReLU'd positive filter response, so
every faithful map of class 1 peaks on the bright blob of the input. ``TokenNet``
is the same idea with a patch embedding and a class token (a ViT layout), and
``ChannelsLastNet`` returns its features channels-last (a Swin layout). All three
work for 2D and 3D; the contract attributes are attached with ``attach_contract``,
so the CAM layer is derived the same way as for zoo models.
"""

from __future__ import annotations

import torch
from torch import nn

from medcls.models.contract import CamLayer, ModelCfg, attach_contract

CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def _cfg(name: str, dims: int, in_chans: int, size: int) -> ModelCfg:
    return ModelCfg(
        name=name,
        source="medcls",
        spatial_dims=dims,
        input_size=(in_chans, *(size,) * dims),
        mean=(0.0,) * in_chans,
        std=(1.0,) * in_chans,
        first_conv="stem",
        classifier=("head",),
        family="cnn",
    )


class SpotNet(nn.Module):
    """``(B, in_chans, *S)`` -> 2 logits; class 1 = how much bright blob there is.

    Only channel ``evidence_channel`` feeds the features (the other channels are
    ignored), so per-modality maps can be checked.
    """

    def __init__(self, dims: int, in_chans: int = 1, evidence_channel: int = 0, width: int = 4):
        super().__init__()
        self.stem = CONV[dims](in_chans, width, 3, padding=1)
        self.act = nn.ReLU()
        self.down = CONV[dims](width, width, 2, stride=2)
        self.act2 = nn.ReLU6()
        self.head = nn.Linear(width, 2)
        self.num_features, self.num_classes = width, 2
        with torch.no_grad():
            self.stem.weight.zero_()
            self.stem.weight[:, evidence_channel] = 1.0 / 3**dims
            self.stem.bias.fill_(-0.05)
            self.down.weight.fill_(1.0 / (2**dims * width))
            self.down.bias.zero_()
            self.head.weight.copy_(torch.tensor([[-1.0] * width, [1.0] * width]))
            self.head.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.down(self.act(self.stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.flatten(2).mean(-1) * 10.0
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes


class TokenNet(nn.Module):
    """A ViT layout: patch embedding, a class token, per-token blocks, a mean-pooled head.

    The blocks mix no tokens, so the patch token of the blob carries the evidence:
    a wrong token-to-grid reshape moves the map's peak away from the blob.
    """

    def __init__(self, dims: int, in_chans: int = 1, patch: int = 4, width: int = 8):
        super().__init__()
        self.stem = CONV[dims](in_chans, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(
            *[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(2)]
        )
        self.head = nn.Linear(width, 2)
        self.num_features, self.num_classes, self.num_prefix_tokens = width, 2, 1
        self.global_pool = "avg"
        with torch.no_grad():
            self.stem.weight.fill_(1.0 / patch**dims)
            self.stem.bias.fill_(-0.05)
            for block in self.blocks:
                block[0].weight.copy_(torch.eye(width))
                block[0].bias.zero_()
            self.head.weight.copy_(torch.tensor([[-1.0] * width, [1.0] * width]))
            self.head.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # (B, N, C), row-major grid order
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.blocks(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x[:, self.num_prefix_tokens :].mean(1) * 10.0
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes


class ChannelsLastNet(SpotNet):
    """SpotNet whose features come out channels-last ``(B, *grid, C)`` (a Swin layout)."""

    def __init__(self, dims: int, in_chans: int = 1, width: int = 5):
        super().__init__(dims, in_chans, width=width)
        self.norm = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward_features(x).movedim(1, -1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return super().forward_head(x.movedim(-1, 1), pre_logits)


class DictInputNet(nn.Module):
    """A two-modality model taking ``{"ct": ..., "pet": ...}`` (like fusion wrappers)."""

    modalities = ("ct", "pet")

    def __init__(self, dims: int):
        super().__init__()
        self.body = SpotNet(dims, in_chans=2, evidence_channel=1)
        self.num_classes, self.num_features = 2, self.body.num_features
        self.cam_layer = CamLayer("body.act2", "channels_first", 0, 2)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.body(torch.cat([x["ct"], x["pet"]], dim=1))


def with_contract(model: nn.Module, name: str, dims: int, in_chans: int, size: int) -> nn.Module:
    """Attaches the contract attributes (CAM layer derived from a meta trace at ``size``)."""
    return attach_contract(model, cfg=_cfg(name, dims, in_chans, size), in_chans=in_chans).eval()


def spot_model(
    dims: int, in_chans: int = 1, evidence_channel: int = 0, size: int = 32
) -> nn.Module:
    return with_contract(SpotNet(dims, in_chans, evidence_channel), "spotnet", dims, in_chans, size)


def token_model(dims: int, size: int = 32) -> nn.Module:
    return with_contract(TokenNet(dims), "tokennet", dims, 1, size)


def channels_last_model(dims: int, size: int = 32) -> nn.Module:
    return with_contract(ChannelsLastNet(dims), "clnet", dims, 1, size)


def blob_input(
    dims: int,
    size: int,
    centre: tuple[int, ...],
    *,
    radius: float = 2.5,
    in_chans: int = 1,
    channel: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of one dark image with a bright ball at ``centre``; returns ``(x, mask)``.

    ``x`` is ``(1, in_chans, *S)`` with the ball in ``channel`` (faint noise elsewhere);
    ``mask`` is ``(1, 1, *S)``.
    """
    grids = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij")
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    ball = (dist2 <= radius**2).float()
    gen = torch.Generator().manual_seed(0)
    x = 0.02 * torch.rand(1, in_chans, *(size,) * dims, generator=gen)
    x[0, channel] += ball
    return x, ball[None, None]
