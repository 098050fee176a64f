"""Sparse autoencoders for bids-encoding: a brain embedder and a feature extractor, both called ``sae``.

* ``--embedder sae:latents=64,k=8``: :class:`SAEEmbedder`, a sparse code of a region's brain samples;
* ``--features sae:source=glove,latents=256,k=16``: :class:`SAEFeatures`, sparse codes of another
  extractor's features, from a dictionary learned once on a corpus.

Both train the same model with the same function (:mod:`bids_encoding_sae.model`). torch is
imported only when something is trained or encoded.
"""

from __future__ import annotations

from bids_encoding.plugin_api import hookimpl

from .embedder import SAEEmbedder
from .features import SAEFeatures

__all__ = ["SAEEmbedder", "SAEFeatures"]


@hookimpl
def register_brain_embedders(register):
    register(SAEEmbedder)


@hookimpl
def register_feature_extractors(register):
    register(SAEFeatures)
