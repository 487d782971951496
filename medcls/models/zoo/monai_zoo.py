"""Adapters for MONAI classification networks (prefix ``monai:``), 2D or 3D.

MONAI nets have only ``forward``. Each adapter here *adopts* the submodules,
parameters and buffers of the MONAI net it is given, under the same attribute names,
and splits the net's own forward into ``forward_features`` (up to the last spatial
map) and ``forward_head`` (pooling and classifier). Nothing runs twice, and the
``state_dict`` keys are MONAI's own, so MONAI checkpoints load unchanged.

Supported nets: DenseNet-121/169/201/264, ResNet-10/18/34/50/101/152/200 (Med3D style),
SE-ResNet-50/101/152, SENet-154, SE-ResNeXt-50/101 (32x4d), EfficientNet-B0..B8 and
L2 (``EfficientNetBN``) and ViT (needs the optional ``einops`` package).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from medcls.errors import ModelError
from medcls.models.contract import ModelCfg, adapt_norm_stats, attach_contract
from medcls.models.zoo import excluded_models
from medcls.models.zoo.families import classify_family

__all__ = [
    "SOURCES_BY_PREFIX",
    "MonaiClassifier",
    "MonaiDenseNet",
    "MonaiEfficientNet",
    "MonaiResNet",
    "MonaiSENet",
    "MonaiSource",
    "MonaiViT",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MonaiClassifier(nn.Module):
    """Base adapter: adopts a MONAI net's children and provides the model contract.

    Subclasses set :attr:`classifier` (attribute path of the final ``nn.Linear``) and
    implement :meth:`forward_features` and :meth:`_pool`.

    Args:
        net: the MONAI network, built with a classifier of ``num_classes >= 1`` outputs.
        spatial_dims: 2 or 3.
    """

    classifier: ClassVar[str]
    first_conv: ClassVar[str]

    def __init__(self, net: nn.Module, *, spatial_dims: int) -> None:
        super().__init__()
        for name, param in net._parameters.items():
            self.register_parameter(name, param)
        for name, buf in net._buffers.items():
            self.register_buffer(name, buf, persistent=name not in net._non_persistent_buffers_set)
        for name, module in net._modules.items():
            self.add_module(name, module)
        self.spatial_dims = spatial_dims
        head = self.get_submodule(self.classifier)
        self.num_features = int(head.in_features)
        self.num_classes = int(head.out_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> last feature map ``(B, num_features, *grid)``."""
        raise NotImplementedError

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Features -> ``(B, num_features)``."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits ``(B, num_classes)`` (``(B, num_features)`` if ``pre_logits``)."""
        x = self._pool(x)
        return x if pre_logits else self.get_submodule(self.classifier)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *spatial)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a new ``num_classes`` one (0: identity)."""
        parent_name, _, attr = self.classifier.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        new = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        setattr(parent, attr, new)
        self.num_classes = num_classes


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).mean(-1)


class MonaiResNet(MonaiClassifier):
    """MONAI ``ResNet`` (Med3D / 3D-ResNets layout)."""

    classifier = "fc"
    first_conv = "conv1"

    def __init__(self, net: nn.Module, *, spatial_dims: int) -> None:
        super().__init__(net, spatial_dims=spatial_dims)
        self.no_max_pool = bool(net.no_max_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        if not self.no_max_pool:
            x = self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(x).flatten(1)


class MonaiDenseNet(MonaiClassifier):
    """MONAI ``DenseNet``; features end with ``class_layers.relu`` (the MONAI CAM layer)."""

    classifier = "class_layers.out"
    first_conv = "features.conv0"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_layers.relu(self.features(x))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_layers.flatten(self.class_layers.pool(x))


class MonaiSENet(MonaiClassifier):
    """MONAI ``SENet`` family (SE-ResNet, SE-ResNeXt, SENet-154)."""

    classifier = "last_linear"
    first_conv = "layer0.conv1"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer0(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adaptive_avg_pool(x)
        dropout = self._modules.get("dropout")  # MONAI sets None when dropout_prob is None
        if dropout is not None:
            x = dropout(x)
        return torch.flatten(x, 1)


class MonaiEfficientNet(MonaiClassifier):
    """MONAI ``EfficientNetBN``; the default CAM layer is ``_bn1`` (``_swish`` is shared)."""

    classifier = "_fc"
    first_conv = "_conv_stem"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(x))))
        x = self._blocks(x)
        return self._swish(self._bn1(self._conv_head(self._conv_head_padding(x))))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self._dropout(self._avg_pooling(x).flatten(1))


class MonaiViT(MonaiClassifier):
    """MONAI ``ViT`` with a class token; features are tokens ``(B, 1 + N, C)``.

    Built without MONAI's default ``Tanh`` after the classifier, so outputs are logits.
    """

    classifier = "classification_head"
    first_conv = "patch_embedding.patch_embeddings"
    num_prefix_tokens = 1
    head_reads_class_token = True

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _nets() -> Any:
    import monai.networks.nets as nets

    return nets


def _densenet(cls_name: str) -> Callable[..., nn.Module]:
    def build(*, in_chans: int, num_classes: int, spatial_dims: int, pretrained: bool, **kw: Any):
        cls = getattr(_nets(), cls_name)
        return cls(
            spatial_dims=spatial_dims,
            in_channels=in_chans,
            out_channels=num_classes,
            pretrained=pretrained,
            **kw,
        )

    return build


def _resnet(fn_name: str) -> Callable[..., nn.Module]:
    def build(*, in_chans: int, num_classes: int, spatial_dims: int, pretrained: bool, **kw: Any):
        fn = getattr(_nets(), fn_name)
        return fn(
            pretrained=pretrained,
            spatial_dims=spatial_dims,
            n_input_channels=in_chans,
            num_classes=num_classes,
            **kw,
        )

    return build


def _senet(cls_name: str) -> Callable[..., nn.Module]:
    def build(*, in_chans: int, num_classes: int, spatial_dims: int, pretrained: bool, **kw: Any):
        cls = getattr(_nets(), cls_name)
        return cls(
            spatial_dims=spatial_dims,
            in_channels=in_chans,
            num_classes=num_classes,
            pretrained=pretrained,
            **kw,
        )

    return build


def _efficientnet(variant: str) -> Callable[..., nn.Module]:
    def build(*, in_chans: int, num_classes: int, spatial_dims: int, pretrained: bool, **kw: Any):
        return _nets().EfficientNetBN(
            variant,
            pretrained=pretrained,
            spatial_dims=spatial_dims,
            in_channels=in_chans,
            num_classes=num_classes,
            **kw,
        )

    return build


def _vit(*, in_chans: int, num_classes: int, spatial_dims: int, pretrained: bool, **kw: Any):
    if pretrained:
        raise ModelError("monai:vit has no pretrained weights in MONAI; use checkpoint_path")
    kw.setdefault("img_size", 224 if spatial_dims == 2 else 96)
    kw.setdefault("patch_size", 16)
    kw.setdefault("post_activation", None)
    return _nets().ViT(
        in_channels=in_chans,
        classification=True,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        **kw,
    )


_EFFICIENTNET_SIZES = {
    "b0": 224,
    "b1": 240,
    "b2": 260,
    "b3": 300,
    "b4": 380,
    "b5": 456,
    "b6": 528,
    "b7": 600,
    "b8": 672,
    "l2": 800,
}
_PAPERS = {
    "densenet": "Huang et al., Densely Connected Convolutional Networks, CVPR 2017",
    "resnet": "Chen et al., Med3D: Transfer Learning for 3D Medical Image Analysis, 2019",
    "senet": "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
    "efficientnet": "Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs, ICML 2019",
    "vit": "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021",
}


class _Spec:
    def __init__(
        self,
        build: Callable[..., nn.Module],
        adapter: type[MonaiClassifier],
        paper: str,
        size_2d: int = 224,
        size_3d: int = 96,
        requires: tuple[str, ...] = (),
    ) -> None:
        self.build, self.adapter, self.paper = build, adapter, paper
        self.size = {2: size_2d, 3: size_3d}
        self.requires = requires


_SPECS: dict[str, _Spec] = {
    **{
        f"densenet{d}": _Spec(_densenet(f"DenseNet{d}"), MonaiDenseNet, _PAPERS["densenet"])
        for d in (121, 169, 201, 264)
    },
    **{
        f"resnet{d}": _Spec(_resnet(f"resnet{d}"), MonaiResNet, _PAPERS["resnet"])
        for d in (10, 18, 34, 50, 101, 152, 200)
    },
    "seresnet50": _Spec(_senet("SEResNet50"), MonaiSENet, _PAPERS["senet"]),
    "seresnet101": _Spec(_senet("SEResNet101"), MonaiSENet, _PAPERS["senet"]),
    "seresnet152": _Spec(_senet("SEResNet152"), MonaiSENet, _PAPERS["senet"]),
    "senet154": _Spec(_senet("SENet154"), MonaiSENet, _PAPERS["senet"]),
    "se_resnext50_32x4d": _Spec(_senet("SEResNext50"), MonaiSENet, _PAPERS["senet"]),
    "se_resnext101_32x4d": _Spec(_senet("SEResNext101"), MonaiSENet, _PAPERS["senet"]),
    **{
        f"efficientnet-{v}": _Spec(
            _efficientnet(f"efficientnet-{v}"), MonaiEfficientNet, _PAPERS["efficientnet"], size
        )
        for v, size in _EFFICIENTNET_SIZES.items()
    },
    "vit": _Spec(_vit, MonaiViT, _PAPERS["vit"], requires=("einops",)),
}


class MonaiSource:
    """MONAI classification networks as a model source (prefix ``monai:``)."""

    prefix = "monai"
    default_spatial_dims = 3

    def broken(self) -> dict[str, str]:
        """Nets that cannot be built here -> reason (a missing optional package, or an
        exclusion found by the zoo health sweep)."""
        out = {}
        excluded = excluded_models()
        for name, spec in _SPECS.items():
            missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
            if missing:
                out[name] = f"needs the optional package(s) {', '.join(missing)} (not installed)"
            elif f"{self.prefix}:{name}" in excluded:
                out[name] = excluded[f"{self.prefix}:{name}"]
        return out

    def names(self) -> list[str]:
        broken = self.broken()
        return [n for n in _SPECS if n not in broken]

    def dims(self, arch: str) -> tuple[int, ...]:
        return (2, 3)

    def create(
        self,
        arch: str,
        *,
        in_chans: int,
        num_classes: int,
        pretrained: bool = False,
        spatial_dims: int | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        """Builds the MONAI net and wraps it in its adapter (keys unchanged).

        Args:
            arch: a name of :meth:`names`.
            in_chans: input channels.
            num_classes: classes (0 = no classifier).
            pretrained: MONAI's own pretrained weights where it has them (2D DenseNet,
                SENet, EfficientNet; 3D MedicalNet ResNets); downloads when online.
            spatial_dims: 2 or 3 (default 3).
            **kwargs: passed to the MONAI constructor.

        Raises:
            ModelError: unknown net, bad spatial_dims, rejected arguments, or weights
                that could not be fetched.
        """
        name = f"{self.prefix}:{arch}"
        spec = _SPECS.get(arch)
        if spec is None:
            from medcls.models.registry import unknown_model_error

            raise unknown_model_error(name)
        reason = self.broken().get(arch)
        if reason:
            raise ModelError(f"{name} is unavailable: {reason}")
        spatial_dims = self.default_spatial_dims if spatial_dims is None else spatial_dims
        if spatial_dims not in (2, 3):
            raise ModelError(f"{name}: spatial_dims={spatial_dims!r}, expected 2 or 3")
        try:
            net = spec.build(
                in_chans=in_chans,
                num_classes=max(num_classes, 1),
                spatial_dims=spatial_dims,
                pretrained=pretrained,
                **kwargs,
            )
        except ModelError:
            raise
        except Exception as exc:  # MONAI raises many types; report them as one
            if pretrained:
                raise ModelError(
                    f"{name}: could not load MONAI's pretrained weights "
                    f"({type(exc).__name__}: {exc}). If they could not be fetched (offline) "
                    "pass checkpoint_path=<local file> or put them in the torch hub cache."
                ) from exc
            raise ModelError(
                f"{name}: MONAI could not build the net with spatial_dims={spatial_dims}, "
                f"in_chans={in_chans}, num_classes={num_classes}, kwargs={kwargs}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        model = spec.adapter(net, spatial_dims=spatial_dims)
        if num_classes == 0:
            model.reset_classifier(0)
        spatial = kwargs.get("img_size", spec.size[spatial_dims])
        spatial = (
            tuple(spatial) if isinstance(spatial, (tuple, list)) else (int(spatial),) * spatial_dims
        )
        rgb = spatial_dims == 2 and pretrained
        cfg = ModelCfg(
            name=name,
            source=self.prefix,
            spatial_dims=spatial_dims,
            input_size=(in_chans, *spatial),
            mean=adapt_norm_stats(IMAGENET_MEAN if rgb else (0.0,), in_chans),
            std=adapt_norm_stats(IMAGENET_STD if rgb else (1.0,), in_chans),
            first_conv=spec.adapter.first_conv,
            classifier=(spec.adapter.classifier,),
            family=classify_family(model),
            paper=spec.paper,
            fixed_input_size=spec.adapter is MonaiViT,
        )
        return attach_contract(model, cfg=cfg, in_chans=in_chans)


SOURCES_BY_PREFIX = {"monai": MonaiSource()}
