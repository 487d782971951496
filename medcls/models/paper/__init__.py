"""The paper models: one module per paper, each registering its variants.

Every public module here is imported by the registry on its first query
(``medcls.models.registry._load_native``), so a model is available by name as soon
as its file exists:

- :mod:`~medcls.models.paper.ldtransformer`: LDTransformer (pneumonia X-ray),
  ``ldtransformer_s``, ``ldtransformer_tiny``;
- :mod:`~medcls.models.paper.drltransformer`: DRLTransformer (COVID-19 CT),
  ``drltransformer_s``, ``drltransformer_tiny``.

Each module's docstring cites its paper and maps the paper's components to classes.
Blocks shared between papers live in :mod:`medcls.models.layers`.
"""

from __future__ import annotations
