"""The core's own brain embedder, ``pca``: the baseline every learned embedder is compared with.

It is registered through the same hook as a third party's embedder (the plugin
manager registers this module as the plugin ``builtin``), so the embedding stage
never special-cases it.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from .hookspecs import hookimpl
from .types import BrainEmbedder, Option


class PCAEmbedder(BrainEmbedder):
    """Principal components of the training samples (scikit-learn ``PCA``, exact SVD)."""

    name = "pca"
    description = "Principal component analysis of the region's samples (the baseline of learned embedders)"
    options = {"latents": Option(16, "number of principal components kept")}

    def fit(self, X: np.ndarray, X_val: np.ndarray | None = None, *, seed: int = 0) -> "PCAEmbedder":
        """Components of ``X``; ``X_val`` is not needed (PCA has nothing to stop early)."""
        self.pca_ = PCA(n_components=int(self.latents), svd_solver="full", random_state=seed).fit(X)
        self.info_ = {"ExplainedVarianceRatio": float(self.pca_.explained_variance_ratio_.sum())}
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.pca_.transform(X)

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        return self.pca_.inverse_transform(Z)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"components": self.pca_.components_.astype(np.float32), "mean": self.pca_.mean_.astype(np.float32)}

    def set_weights(self, weights: dict[str, np.ndarray]) -> "PCAEmbedder":
        components, mean = np.asarray(weights["components"]), np.asarray(weights["mean"])
        self.pca_ = PCA(n_components=components.shape[0])
        self.pca_.components_, self.pca_.mean_ = components.astype(np.float64), mean.astype(np.float64)
        self.pca_.n_components_, self.pca_.n_features_in_ = components.shape[0], components.shape[1]
        self.pca_.whiten = False
        return self


@hookimpl
def register_brain_embedders(register):
    register(PCAEmbedder)
