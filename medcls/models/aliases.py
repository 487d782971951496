"""Aliases: the seed papers' table names for the zoo models that provide them (issue #8).

The six seed papers compare their models with baselines in one table each
(:mod:`medcls.models.paper_tables`). The baselines the zoos provide are registered here
under the names the tables use, so that a table's model list can be pasted into a
benchmark config (``--models resnet101,densenet121,swin_b``). Baselines the zoos lack
are native models (:mod:`medcls.models.baselines`: ``nextvit_s``, ``swin_s``, ...);
an alias never shadows one of them.

``create_model(alias, ...)`` builds the target; ``medcls models show ALIAS`` says what
it points to; ``medcls models --aliases`` lists them. Aliases are not listed by
``list_models()`` (unless ``aliases=True``), so no model is counted twice.

Why each target (evidence: parameter counts measured on the ``meta`` device, at
``in_chans=3`` and 2 classes unless a 1,000-class count is named; the tables' units
are explained in :mod:`medcls.models.paper_tables`; "f32 MiB" = parameters x 4 bytes
/ 2^20, "f64 MiB" = x 8 bytes / 2^20):

- the table names a size that exists (``ResNet101``, ``ConvNeXt-B``): that model, and
  where the table's figure can be converted to a parameter count, the count is
  checked against it (``docs/models.md``, section "Every model of the papers' tables");
- the table leaves the size open (``MobileNetV3``, ``GhostNet``, ``ConViT``,
  ``MobileNet``, ``Swin Transformer``) or names one that does not exist
  (``PoolFormer-B``): the size whose parameters (and MACs, where the table has them)
  are nearest to the table's figures; the comment at each entry gives the numbers.
"""

from __future__ import annotations

from medcls.models.registry import register_alias

__all__ = ["ALIASES"]

# (alias, target, dims, note); the note is what `medcls models show` prints
ALIASES: tuple[tuple[str, str, tuple[int, ...], str], ...] = (
    # --- 2D, chest X-ray and CT-slice tables (LDTransformer, DRLTransformer, MADenseNet,
    # DDSF-Net) ---
    # EfficientNet-B0: DDSF-Net's 30.59 = 4,010,110 params in f64 MiB (exact).
    ("efficientnet_b0", "timm:efficientnet_b0", (2,), "EfficientNet-B0"),
    # EfficientNet-B4: DRLTransformer's 66.96 = 17,552,202 params in f32 MiB and
    # DDSF-Net's 133.91 the same in f64 MiB (both exact).
    ("efficientnet_b4", "timm:efficientnet_b4", (2,), "EfficientNet-B4"),
    # LDTransformer's "MobileNetV3" (1.66e6 params, 6.24e7 MACs) gives no size. Small 1.0
    # has 1.52 M params and 55 M MACs at 224^2, Large 1.0 4.21 M and 215 M, Small 0.75
    # 1.02 M and 42 M: Small 1.0 is nearest on both.
    (
        "mobilenetv3",
        "timm:mobilenetv3_small_100",
        (2,),
        "MobileNetV3 (size not stated; Small 1.0: nearest to the LDTransformer table's "
        "1.66e6 params, 6.24e7 MACs)",
    ),
    # DRLTransformer's "MobileNet" (12.26 f32 MiB = 3.21 M params): MobileNet v1 1.0 has
    # 3,209,026 (12.24 MiB); v2 1.0 2.23 M (8.5 MiB), v3 Large 4.21 M (16.0 MiB).
    (
        "mobilenet",
        "timm:mobilenetv1_100",
        (2,),
        "MobileNet (version not stated; v1 1.0 matches the DRLTransformer table's "
        "12.26 MiB of weights to 0.2 %)",
    ),
    # GhostNet 1.0: 3,904,070 params at 2 classes = LDTransformer's 3.90e6 and
    # DRLTransformer's 14.89 f32 MiB (exact); 140 M MACs vs the tables' 148 M.
    ("ghostnet", "timm:ghostnet_100", (2,), "GhostNet (1.0: matches the tables' parameters)"),
    ("deit_s", "timm:deit_small_patch16_224", (2,), "DeiT-S (patch 16, 224^2)"),
    # XCiT-S24/16 at 224^2: 47.67 M params at 1,000 classes = LDTransformer's 4.76e7.
    ("xcit_s24_16", "timm:xcit_small_24_p16_224", (2,), "XCiT-S24/16 (224^2)"),
    # LDTransformer's "ConvViT" (4.22e5 params, 9.08e7 MACs) is read as ConViT; every
    # ConViT is larger (Tiny: 5.52 M, 1.25 G MACs at 224^2), Tiny is the nearest.
    (
        "convit",
        "timm:convit_tiny",
        (2,),
        "ConViT (the table's 'ConvViT'; size not stated, Tiny is the nearest to its "
        "figures, which are below every ConViT)",
    ),
    # MobileViT-S: 5.58 M params at 1,000 classes vs LDTransformer's 5.63e6 (XS: 2.32 M).
    ("mobilevit_s", "timm:mobilevit_s", (2,), "MobileViT-S"),
    # EdgeNeXt-S: 5.59 M params at 1,000 classes and 0.96 G MACs = LDTransformer's
    # 5.58e6 and 9.57e8.
    ("edgenext_s", "timm:edgenext_small", (2,), "EdgeNeXt-S"),
    ("edgenext_b", "timm:edgenext_base", (2,), "EdgeNeXt-B"),
    # Next-ViT-S is native (nextvit_s, 2D and 3D); Next-ViT-B only exists in timm. The
    # MADenseNet table's 238.18 f64 MiB (31.2 M params) is nearer Next-ViT-S (30.7 M)
    # than B (43.8 M); we keep the size the table names.
    ("nextvit_b", "timm:nextvit_base", (2,), "Next-ViT-B"),
    # ResNet-101: DRLTransformer's 162.14 = 42,504,258 params in f32 MiB, MADenseNet's
    # and DDSF-Net's 324.28 the same in f64 MiB (exact).
    ("resnet101", "timm:resnet101", (2,), "ResNet-101"),
    # DenseNet-121: DDSF-Net's 60.88 = 7.98 M params (1,000 classes) in f64 MiB.
    ("densenet121", "timm:densenet121", (2,), "DenseNet-121"),
    # RegNetX-3.2GF: DRLTransformer's 58.35 = 15.30 M params (1,000 classes) in f32 MiB
    # and 3.176 G MACs (exact).
    ("regnetx_032", "timm:regnetx_032", (2,), "RegNetX-3.2GF"),
    # SE-ResNet-101: DDSF-Net's 360.47 vs 47.28 M params = 360.73 f64 MiB (-0.07 %).
    ("seresnet101", "timm:seresnet101", (2,), "SE-ResNet-101"),
    # VGG-19 without batch norm: MADenseNet's and DDSF-Net's 1,096.09 = 143.67 M params
    # (1,000 classes) in f64 MiB (exact); 19.63 G MACs = DDSF-Net's 39.294 GFLOPs / 2.
    ("vgg19", "timm:vgg19", (2,), "VGG-19 (no batch norm)"),
    # The tables' "Swin Transformer" gives no size. DRLTransformer's 330.66 f32 MiB
    # (86.7 M params) and 15.126 G MACs are Swin-B's (86.75 M, 15.4 G). MADenseNet's
    # table compares B sizes throughout (ConvNeXt-B, PoolFormer-B, Conformer-B,
    # Next-ViT-B). DDSF-Net's figures are nearer Swin-S: that row uses the native swin_s.
    (
        "swin_b",
        "timm:swin_base_patch4_window7_224",
        (2,),
        "Swin-B (patch 4, window 7, 224^2); the DRLTransformer and MADenseNet tables' "
        "'SwinTransformer'",
    ),
    # ConvNeXt-B: DRLTransformer's 333.98 vs 87.57 M params = 334.05 f32 MiB (-0.02 %).
    ("convnext_b", "timm:convnext_base", (2,), "ConvNeXt-B"),
    # There is no PoolFormer-B (sizes S12/S24/S36/M36/M48). MADenseNet's 389.88 f64 MiB
    # is 51.1 M params: M36 (55.4 M) is the nearest (S36 30.4 M, M48 72.7 M).
    (
        "poolformer_b",
        "timm:poolformer_m36",
        (2,),
        "PoolFormer 'B' (no such size; M36 is nearest to the MADenseNet table's figure)",
    ),
    # --- 3D, PET/CT tables (Light-3Dformer, 3D-CConvFormer), 2 channels, 2 classes ---
    # 3D-ResNet50 (46.203 M): MONAI's resnet50 has 46,184,962 params at 2 x 64^3 and
    # 46.3 G MACs (its stem keeps the full resolution, conv1_t_stride 1); timm3d's has
    # the same parameters but 5.8 G MACs (stride-2 stem and max pool, as in 2D). The
    # Light-3Dformer table gives 39.98 G MACs: only MONAI's is in that range at a volume
    # near 64^3 (timm3d's would need about 122^3).
    ("resnet50_3d", "monai:resnet50", (3,), "3D-ResNet50 (MONAI, Med3D layout)"),
    # 3D-EfficientNet-b3 (1.624 M, 205.7 M MACs): MONAI's efficientnet-b3 and timm3d's
    # efficientnet_b3 both have 12.06 M params and 0.785 G MACs at 2 x 64^3; no
    # EfficientNet-b3 comes near 1.624 M (3D kernels make it larger than in 2D, not 7x
    # smaller). MONAI's, as for 3D-ResNet50 in the same tables.
    (
        "efficientnet_b3_3d",
        "monai:efficientnet-b3",
        (3,),
        "3D-EfficientNet-b3 (MONAI; the tables' 1.624 M is 7x below any EfficientNet-b3)",
    ),
    # 3D-ConvNeXt-S (54.954 M): timm3d's convnext_small, 54.99 M params at 2 x 64^3.
    ("convnext_s_3d", "timm3d:convnext_small", (3,), "3D-ConvNeXt-S (timm_3d)"),
)

for _name, _target, _dims, _note in ALIASES:
    register_alias(_name, _target, dims=_dims, note=_note)
