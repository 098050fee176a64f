"""Cross-validated voxelwise ridge encoding.

Each voxel gets its own ridge penalty, chosen by efficient leave-one-out
(generalised) cross-validation inside the training runs (scikit-learn's
``RidgeCV(alpha_per_target=True)``); the model is scored on held-out runs only.
With several runs the outer loop leaves one run out; with a single run it
holds out contiguous blocks and drops ``gap`` samples on each side of the test
block from training, so the HRF's autocorrelation does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import RidgeCV

DEFAULT_ALPHAS = np.logspace(-2, 6, 17)


@dataclass(frozen=True)
class EncodingScores:
    """Held-out scores per voxel, averaged over outer folds."""

    r2: np.ndarray
    r: np.ndarray
    alpha: np.ndarray
    n_folds: int
    cv: str


def outer_folds(run_lengths: list[int], n_blocks: int = 5, gap: int = 5) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Train/test sample indices: leave-one-run-out, or contiguous blocks with a gap for one run."""
    bounds = np.cumsum([0] + list(run_lengths))
    samples = np.arange(bounds[-1])
    if len(run_lengths) > 1:
        folds = [(np.setdiff1d(samples, samples[a:b]), samples[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return folds, "leave-one-run-out"
    edges = np.linspace(0, len(samples), n_blocks + 1).astype(int)
    folds = []
    for a, b in zip(edges[:-1], edges[1:]):
        train = samples[(samples < a - gap) | (samples >= b + gap)]
        folds.append((train, samples[a:b]))
    return folds, f"{n_blocks} contiguous blocks, {gap}-sample gap"


def heldout_r2(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column (can be negative)."""
    ss_res = ((y_true - y_pred) ** 2).sum(axis=0)
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)


def pearson_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per column."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a ** 2).sum(axis=0) * (b ** 2).sum(axis=0))
    return (a * b).sum(axis=0) / np.where(denom > 0, denom, 1.0)


def cross_validated_encoding(X_runs: list[np.ndarray], Y_runs: list[np.ndarray], alphas=DEFAULT_ALPHAS) -> EncodingScores:
    """Fit ridge on training runs and score on held-out runs, for every voxel (column of Y)."""
    if len(X_runs) != len(Y_runs) or any(len(x) != len(y) for x, y in zip(X_runs, Y_runs)):
        raise ValueError("X_runs and Y_runs must hold the same runs with the same number of samples")
    X = np.concatenate(X_runs).astype(np.float64)
    Y = np.concatenate(Y_runs).astype(np.float64)
    folds, cv = outer_folds([len(x) for x in X_runs])
    r2, r, log_alpha = [], [], []
    for train, test in folds:
        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X[train], Y[train])
        prediction = model.predict(X[test])
        r2.append(heldout_r2(Y[test], prediction))
        r.append(pearson_r(Y[test], prediction))
        log_alpha.append(np.log10(np.broadcast_to(model.alpha_, (Y.shape[1],))))
    return EncodingScores(
        r2=np.mean(r2, axis=0), r=np.mean(r, axis=0), alpha=10 ** np.mean(log_alpha, axis=0), n_folds=len(folds), cv=cv
    )
