"""The brain embedder ``sae``: a sparse autoencoder of a region's samples (``--embedder sae:latents=64,k=8``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bids_encoding.plugin_api import BrainEmbedder, Option, UserError

from .options import TRAINING_OPTIONS, training_config

FEWER_LATENTS = ("Ask for fewer latents (e.g. --embedder sae:latents=16), or use more samples "
                 "(--samples trs, more runs)")


def _rows(values: np.ndarray, width: int, name: str) -> np.ndarray:
    """``values`` as float32 rows of ``width`` columns, or a ValueError naming the expected shape."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != width:
        raise ValueError(f"{name} has shape {values.shape}, expected (n_samples, {width})")
    return values


class SAEEmbedder(BrainEmbedder):
    """Sparse autoencoder of brain samples (top-k or L1), trained with Adam and early stopping.

    ``fit(X, X_val)`` stops early on the validation MSE of ``X_val`` (the host passes the
    samples of held-out runs); without ``X_val`` the last 10 % of ``X``'s rows are held out.
    ``transform`` gives the sparse latents, ``inverse_transform`` the reconstruction.
    Weights: ``W_enc`` (latents x voxels), ``b_enc``, ``W_dec`` (voxels x latents, unit-norm
    columns) and ``b_dec``.
    """

    name = "sae"
    description = "Sparse autoencoder (top-k or L1) of the region's samples, trained with Adam and early stopping"
    options = {"latents": Option(64, "dictionary size: number of latents"), **TRAINING_OPTIONS}

    def __init__(self, **options: Any):
        super().__init__(**options)
        training_config(self)  # bad options fail when the spec is read, not after the samples are loaded

    def fit(self, X: np.ndarray, X_val: np.ndarray | None = None, *, seed: int = 0) -> "SAEEmbedder":
        from .model import train_sae

        self.model_, self.info_, self.history_ = train_sae(X, X_val, training_config(self), seed,
                                                           fewer_latents_fix=FEWER_LATENTS)
        return self

    def _model(self):
        model = getattr(self, "model_", None)
        if model is None:
            raise RuntimeError("this sae embedder is not fitted: call fit() or set_weights() first")
        return model

    def transform(self, X: np.ndarray) -> np.ndarray:
        model = self._model()
        return model.encode_array(_rows(X, model.W_enc.shape[1], "X"))

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        model = self._model()
        return model.decode_array(_rows(Z, model.W_dec.shape[1], "Z"))

    def get_weights(self) -> dict[str, np.ndarray]:
        return self._model().weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> "SAEEmbedder":
        from .model import SparseAutoencoder, resolve_device

        config = training_config(self)
        n_latents = np.shape(weights.get("W_enc", np.zeros((0, 0))))[0]
        if "W_enc" in weights and n_latents != config.latents:
            raise UserError(f"the weights hold {n_latents} latents, but this sae embedder has latents={config.latents}",
                            fix="Restore with the options saved with the weights (the safetensors file's metadata)")
        self.model_ = SparseAutoencoder.from_weights(weights, config.sparsity, config.k, resolve_device(config.device))
        return self
