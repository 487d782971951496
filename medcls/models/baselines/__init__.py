"""Native 2D/3D versions of the comparison models the zoos lack (issue #8).

One implementation per architecture with a ``spatial_dims`` argument, following the
original paper's architecture and the medcls model contract (so CAM, fusion and
profiling work on them). Each module registers its full-size entrypoint under the name
the comparison tables use, documents its parameter counts against the paper (2D, 1,000
classes) and the 3D-CConvFormer table (3D, 2 classes), and has a ``TINY`` dict of small
constructor arguments for tests.

Modules:

- :mod:`~medcls.models.baselines.t2t_vit`: T2T-ViT-19 (tokens-to-token ViT);
- :mod:`~medcls.models.baselines.cvt`: CvT-13 (convolutional vision transformer);
- :mod:`~medcls.models.baselines.coat`: CoaT Small (co-scale conv-attentional transformer);
- :mod:`~medcls.models.baselines.cmt`: CMT-S (CNNs meet vision transformers);
- :mod:`~medcls.models.baselines.conformer`: Conformer-B (CNN and transformer branches
  coupled by feature coupling units);
- :mod:`~medcls.models.baselines.mobileformer`: Mobile-Former-96M (MobileNet and
  transformer bridged both ways);
- :mod:`~medcls.models.baselines.replknet`: RepLKNet (re-parameterised large kernels);
- :mod:`~medcls.models.baselines.nat`: NAT (neighbourhood attention transformer);
- :mod:`~medcls.models.baselines.poolformer`: PoolFormer (MetaFormer with pooling);
- :mod:`~medcls.models.baselines.nextvit`: Next-ViT;
- :mod:`~medcls.models.baselines.swin`: Swin Transformer (shifted windows);
- :mod:`~medcls.models.baselines.dsenet`: DSENet.
"""
