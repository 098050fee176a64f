"""Ridge regression with one penalty per target (voxel), chosen by cross-validation.

The solvers follow himalaya's shape: one SVD per training set, after which
every candidate penalty costs only small matrix products, so a whole alpha
path is nearly as cheap as one fit. Targets are processed in chunks, so memory
stays bounded whatever the number of voxels, and every operation runs through
a backend (numpy, or torch on CPU or GPU).

``RidgeCV``: one alpha per voxel. ``BandedRidgeCV``: several feature spaces
(bands), each with its own penalty per voxel (alpha / gamma_band), found by
searching band weightings; its predictions split by band give split R².
Both follow scikit-learn's estimator conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from .backend import get_backend

DEFAULT_ALPHAS = np.logspace(-2, 6, 17)


def r2_score_columns(y_true, y_pred):
    """R² per column (works on numpy arrays and torch tensors alike)."""
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    centred = y_true - y_true.mean(0)
    ss_tot = (centred ** 2).sum(0)
    return 1.0 - ss_res / (ss_tot + (ss_tot == 0) * 1.0)


def contiguous_folds(n_samples: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K contiguous blocks (no shuffling: time series)."""
    samples = np.arange(n_samples)
    edges = np.linspace(0, n_samples, n_folds + 1).astype(int)
    return [(np.concatenate([samples[:a], samples[b:]]), samples[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def group_folds(groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave one group (run) out."""
    groups = np.asarray(groups)
    samples = np.arange(len(groups))
    return [(samples[groups != g], samples[groups == g]) for g in np.unique(groups)]


def inner_folds(n_samples: int, groups: np.ndarray | None, cv: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-run-out when the training data holds 2+ runs, else ``cv`` contiguous blocks."""
    if groups is not None and len(np.unique(groups)) >= 2:
        return group_folds(groups)
    return contiguous_folds(n_samples, cv)


@dataclass
class _Decomposition:
    """One training set's thin SVD (X = U S Vt), and the evaluation rows projected on V."""

    Ut: object
    s: object
    Vt: object
    projected: object | None


def _thin_svd(X: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD through an eigendecomposition of the smaller Gram matrix, in float64.

    Several times faster than LAPACK's SVD for the tall or wide matrices of encoding
    models; directions with singular values below ``rtol`` of the largest are dropped
    (ridge would shrink them to nothing anyway).
    """
    X64 = np.asarray(X, dtype=np.float64)
    wide = X64.shape[0] < X64.shape[1]
    eigenvalues, vectors = np.linalg.eigh(X64 @ X64.T if wide else X64.T @ X64)
    keep = eigenvalues > rtol ** 2 * eigenvalues.max()
    s = np.sqrt(eigenvalues[keep])
    vectors = vectors[:, keep]
    if wide:
        U, V = vectors, (X64.T @ vectors) / s
    else:
        U, V = (X64 @ vectors) / s, vectors
    return U, s, V.T


def _decompose(B, X_train: np.ndarray, X_eval: np.ndarray | None = None) -> _Decomposition:
    U, s, Vt = _thin_svd(X_train)
    projected = None if X_eval is None else np.asarray(X_eval, dtype=np.float64) @ Vt.T
    return _Decomposition(B.asarray(np.ascontiguousarray(U.T)), B.asarray(s), B.asarray(Vt),
                          None if projected is None else B.asarray(projected))


def _blocks(rows: np.ndarray) -> list[slice]:
    """Sorted row indices as contiguous slices, so that training rows are read as views, not copies."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [slice(int(block[0]), int(block[-1]) + 1) for block in np.split(rows, breaks)]


def _rows(B, Y, rows: np.ndarray):
    """``Y[rows]``, a view when the rows are contiguous."""
    blocks = _blocks(rows)
    if len(blocks) == 1:
        return Y[blocks[0]]
    return Y[rows] if B.name == "numpy" else Y[B.asarray(rows).long()]


def _project(B, Ut, Y, rows: np.ndarray):
    """``Ut @ Y[rows]`` summed over contiguous blocks of rows (Ut's columns follow ``rows``)."""
    total, start = None, 0
    for block in _blocks(rows):
        n = block.stop - block.start
        part = Ut[:, start:start + n] @ Y[block]
        total = part if total is None else total + part
        start += n
    return total


def _validation_predictor(B, dec: _Decomposition, alphas):
    """``[X_val V diag(s / (s² + alpha)) U^T for each alpha]`` stacked: (alphas x n_val) x n_train, or None.

    Multiplying it by the training responses gives every alpha's validation predictions in one
    matrix product. That beats rotating the responses by U^T first and then predicting per alpha
    when the rank is large next to the validation rows (many features, leave-one-run-out);
    with few features the rotation is cheaper and None says so.
    """
    rank, n_val, n_train = len(dec.s), dec.projected.shape[0], dec.Ut.shape[1]
    if len(alphas) * n_val * n_train >= rank * n_train + len(alphas) * n_val * rank:
        return None
    return B.concatenate([(dec.projected * (dec.s / (dec.s ** 2 + alpha))) @ dec.Ut for alpha in alphas])


@dataclass
class ChunkFit:
    """What the solver learned for one chunk of voxels."""

    voxels: slice
    coef: np.ndarray | None  # n_features x n_voxels_in_chunk (in the unscaled feature space)
    prediction: np.ndarray | None  # n_predict x n_voxels_in_chunk, when X_predict was given
    best_alpha: np.ndarray
    best_candidate: np.ndarray
    cv_score: np.ndarray


def solve_ridge_path(X: np.ndarray, Y: np.ndarray, folds, alphas: Sequence[float], scales: np.ndarray,
                     backend="numpy", chunk_size: int = 10000, rows: np.ndarray | None = None,
                     X_predict: np.ndarray | None = None, return_coef: bool = True) -> Iterator[ChunkFit]:
    """Choose, per voxel, the (scaling, alpha) pair with the least inner-fold squared error, then refit on all of X.

    (Squared error pooled over folds, as himalaya's default ``l2_neg_loss``: unlike a mean of
    per-fold R², it does not over-weight folds where a voxel happens to vary little.)

    ``scales`` is ``n_candidates x n_features``: each candidate multiplies the columns
    of X (banded ridge); plain ridge passes a single row of ones. With ``rows``, X holds
    those samples of Y only (the training rows of an outer fold), read chunk by chunk
    so that Y is never copied whole. With ``X_predict`` it also predicts those rows; with
    ``return_coef=False`` it skips the weights and predicts straight from the decomposition
    (cheaper when there are more features than rows to predict). Each chunk's temporaries
    are freed before it is yielded, so what a chunk holds is what :func:`ridge_memory` counts.
    """
    B = get_backend(backend) if isinstance(backend, str) else backend
    alphas = np.asarray(alphas, dtype=np.float64)
    n_alphas = len(alphas)
    scales = np.atleast_2d(np.asarray(scales, dtype=np.float64))
    candidates = []
    for scale in scales:
        Xc = X * scale
        inner = [(_decompose(B, Xc[train], Xc[val]), np.sort(train), np.sort(val)) for train, val in folds]
        candidates.append((inner, _decompose(B, Xc, None if X_predict is None else X_predict * scale)))
        del Xc
    alpha_b = B.asarray(alphas)
    # Validation predictions for every alpha at once: one (alphas x val) x train matrix per inner fold,
    # applied to the training responses directly, so U^T Y is never formed for the inner folds.
    predictors = [[_validation_predictor(B, dec, alpha_b) for dec, _, _ in inner] for inner, _ in candidates]
    test_predictors: dict[tuple[int, int], object] = {}
    for start in range(0, Y.shape[1], chunk_size):
        voxels = slice(start, min(start + chunk_size, Y.shape[1]))
        Yc = B.asarray(np.ascontiguousarray(Y[:, voxels] if rows is None else Y[rows, voxels]))
        scores = _chunk_scores(B, Yc, candidates, predictors, alpha_b) / len(folds)
        best = np.argmax(scores, axis=0)
        cv_score = scores[best, np.arange(len(best))]
        del scores
        coef, prediction = _refit(B, Yc, best, candidates, alpha_b, scales, X.shape[1], X_predict, return_coef,
                                  test_predictors)
        del Yc
        yield ChunkFit(voxels, coef, prediction, alphas[best % n_alphas], best // n_alphas, cv_score)


def _chunk_scores(B, Yc, candidates, predictors, alpha_b) -> np.ndarray:
    """Minus the squared validation error of every (candidate, alpha) pair, summed over inner folds (pairs x voxels)."""
    n_alphas, n_vox = len(alpha_b), Yc.shape[1]
    scores = np.zeros((len(candidates) * n_alphas, n_vox))
    for c, (inner, _) in enumerate(candidates):
        for predictor, (dec, train, val) in zip(predictors[c], inner):
            Y_val = _rows(B, Yc, val)
            if predictor is not None:
                error = _project(B, predictor, Yc, train).reshape(n_alphas, len(val), n_vox)
                error -= Y_val[None]  # in place: this array is alphas x val x voxels
                error *= error
                scores[c * n_alphas:(c + 1) * n_alphas] -= B.to_numpy(error.sum(1)) / len(val)
                continue
            UtY = _project(B, dec.Ut, Yc, train)
            for a in range(n_alphas):
                error = (dec.projected * (dec.s / (dec.s ** 2 + alpha_b[a]))) @ UtY - Y_val
                scores[c * n_alphas + a] -= B.to_numpy((error * error).sum(0)) / len(val)
    return scores


def _refit(B, Yc, best: np.ndarray, candidates, alpha_b, scales: np.ndarray, n_features: int,
           X_predict: np.ndarray | None, return_coef: bool, test_predictors: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Weights (features x voxels) and/or predictions of one chunk, each voxel with its chosen (candidate, alpha)."""
    n_alphas, n_vox = len(alpha_b), Yc.shape[1]
    all_rows = np.arange(Yc.shape[0])
    coef = np.zeros((n_features, n_vox), dtype=np.float32) if return_coef else None
    prediction = None if X_predict is None else np.zeros((len(X_predict), n_vox), dtype=np.float32)
    for index in np.unique(best):
        c, a = divmod(int(index), n_alphas)
        group = np.flatnonzero(best == index)
        full = candidates[c][1]
        Y_group = B.take_columns(Yc, group)
        d = full.s / (full.s ** 2 + alpha_b[a])
        if return_coef:
            UtY = _project(B, full.Ut, Y_group, all_rows)
            coef[:, group] = B.to_numpy(full.Vt.T @ (d[:, None] * UtY)) * scales[c][:, None]
            if prediction is not None:
                prediction[:, group] = B.to_numpy((full.projected * d) @ UtY)
        elif prediction is not None and len(full.s) > len(X_predict):  # many features: skip U^T Y
            if (c, a) not in test_predictors:
                test_predictors[(c, a)] = (full.projected * d) @ full.Ut
            prediction[:, group] = B.to_numpy(_project(B, test_predictors[(c, a)], Y_group, all_rows))
        elif prediction is not None:
            prediction[:, group] = B.to_numpy((full.projected * d) @ _project(B, full.Ut, Y_group, all_rows))
    return coef, prediction


def ridge_weights(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, backend="numpy",
                  chunk_size: int = 10000) -> np.ndarray:
    """Ridge weights (features x targets) with each target's own, given penalty: ``(X'X + alpha_t I)^-1 X' y_t``.

    One SVD of X serves every target (``V diag(s / (s² + alpha_t)) U' y_t``); targets go through in chunks, so only
    the weights are held whole. This is the refit of a cross-validated model on all its data with the penalties
    it chose (:func:`.voxelwise.refit_weights`).
    """
    B = get_backend(backend) if isinstance(backend, str) else backend
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if len(alphas) != Y.shape[1] or len(X) != len(Y):
        raise ValueError(f"X ({len(X)} rows), Y ({Y.shape[0]} x {Y.shape[1]}) and alphas ({len(alphas)}) disagree")
    if not np.all(alphas > 0):
        raise ValueError("every penalty must be positive")
    full = _decompose(B, X)
    coef = np.zeros((X.shape[1], Y.shape[1]), dtype=np.float32)
    for start in range(0, Y.shape[1], chunk_size):
        voxels = slice(start, min(start + chunk_size, Y.shape[1]))
        UtY = full.Ut @ B.asarray(np.ascontiguousarray(Y[:, voxels]))
        d = full.s[:, None] / (full.s[:, None] ** 2 + B.asarray(alphas[voxels])[None, :])
        coef[:, voxels] = B.to_numpy(full.Vt.T @ (d * UtY))
        del UtY, d
    return coef


def ridge_memory(n_samples: int, n_features: int, folds, n_alphas: int, n_candidates: int = 1,
                 n_predict: int = 0, return_coef: bool = True, itemsize: int = 4) -> tuple[int, int]:
    """Bytes that :func:`solve_ridge_path` holds: ``(fixed, per_voxel)``, an upper estimate.

    ``fixed``: the decompositions of every candidate and fold, the stacked validation
    predictors, the cached test predictors, and the float64 Gram matrices while decomposing.
    ``per_voxel``: what one more voxel in a chunk adds: the chunk's responses, scores,
    weights and predictions, plus the largest temporary of the scoring or refitting phase
    (a sum over two row blocks holds three arrays at once). Chunk sizes come from these.
    """
    n, p, A, C, m, f = n_samples, n_features, n_alphas, n_candidates, n_predict, itemsize
    R = min(n, p)
    fixed, score_peak = C * f * (R * (n + p + m) + R), 0
    transient = 8 * (2 * n * p + 3 * R * R + 2 * max(n, p) * R)  # float64 copies while decomposing
    for train, val in folds:
        t, v = len(train), len(val)
        r = min(t, p)
        fixed += C * f * r * (t + p + v + 1)
        if A * v * t < r * t + A * v * r:  # _validation_predictor stacks the alphas (its parts, then their concatenation)
            fixed += C * f * A * v * t
            transient = max(transient, f * A * v * t)
            score_peak = max(score_peak, 3 * f * A * v)
        else:
            score_peak = max(score_peak, f * (3 * r + 3 * v))
    if not return_coef and m and R > m:
        fixed += C * A * f * m * n  # every (candidate, alpha) may get its cached test predictor
    refit_peak = f * n + 3 * f * R + 3 * f * p + 2 * f * m
    held = f * n + 8 * C * A + (f * p if return_coef else 0) + f * m
    return fixed + transient, held + max(score_peak, refit_peak)


def band_candidates(n_bands: int, n_candidates: int, seed: int = 0) -> np.ndarray:
    """Band weightings to search (each row sums to 1): uniform, each band dominant, then Dirichlet draws."""
    if n_bands == 1:
        return np.ones((1, 1))
    rows = [np.full(n_bands, 1.0 / n_bands)]
    for b in range(n_bands):
        row = np.full(n_bands, 0.05 / (n_bands - 1))
        row[b] = 0.95
        rows.append(row)
    rng = np.random.default_rng(seed)
    while len(rows) < n_candidates:
        rows.append(rng.dirichlet(np.ones(n_bands)))
    return np.array(rows[:max(n_candidates, n_bands + 1)])


class RidgeCV(RegressorMixin, BaseEstimator):
    """Ridge with one alpha per target, chosen by inner cross-validation (least squared error).

    ``fit(X, Y, groups=None)``: with ``groups`` (run labels) the inner folds leave one run
    out; otherwise ``cv`` contiguous blocks. Fitted: ``coef_`` (features x targets),
    ``best_alphas_``, ``cv_scores_`` (negative mean squared error over inner folds).
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, cv: int = 5, backend: str = "numpy", chunk_size: int = 10000):
        self.alphas = alphas
        self.cv = cv
        self.backend = backend
        self.chunk_size = chunk_size

    def _scales(self, n_features: int) -> np.ndarray:
        return np.ones((1, n_features))

    def fit(self, X, Y, groups=None):
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but Y has {Y.shape[0]}")
        folds = inner_folds(len(X), groups, self.cv)
        scales = self._scales(X.shape[1])
        self.coef_ = np.zeros((X.shape[1], Y.shape[1]), dtype=np.float32)
        self.best_alphas_ = np.zeros(Y.shape[1])
        self.best_candidates_ = np.zeros(Y.shape[1], dtype=int)
        self.cv_scores_ = np.zeros(Y.shape[1])
        for fit in solve_ridge_path(X, Y, folds, self.alphas, scales, self.backend, self.chunk_size):
            self.coef_[:, fit.voxels] = fit.coef
            self.best_alphas_[fit.voxels] = fit.best_alpha
            self.best_candidates_[fit.voxels] = fit.best_candidate
            self.cv_scores_[fit.voxels] = fit.cv_score
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return np.asarray(X, dtype=np.float32) @ self.coef_

    def score(self, X, Y):
        """Mean R² over targets (scikit-learn's convention); per-target scores: ``r2_score_columns``."""
        return float(np.mean(r2_score_columns(np.asarray(Y, dtype=np.float32), self.predict(X))))


class BandedRidgeCV(RidgeCV):
    """Banded ridge: each feature space (band) gets its own penalty per voxel.

    ``bands`` gives the number of features of each band, in column order. The search
    covers ``n_candidates`` band weightings gamma (see :func:`band_candidates`) times
    ``alphas``; a voxel's penalty on band b is alpha / gamma_b. Fitted in addition:
    ``best_gammas_`` (targets x bands). ``predict_split(X)`` gives each band's part of
    the prediction, for split R².
    """

    def __init__(self, bands: Sequence[int] = (), alphas=DEFAULT_ALPHAS, cv: int = 5, n_candidates: int = 12,
                 backend: str = "numpy", chunk_size: int = 10000, random_state: int = 0):
        super().__init__(alphas=alphas, cv=cv, backend=backend, chunk_size=chunk_size)
        self.bands = bands
        self.n_candidates = n_candidates
        self.random_state = random_state

    def _band_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.bands)), self.bands)

    def _scales(self, n_features: int) -> np.ndarray:
        if sum(self.bands) != n_features:
            raise ValueError(f"bands {list(self.bands)} add up to {sum(self.bands)} features, X has {n_features}")
        self.gammas_ = band_candidates(len(self.bands), self.n_candidates, self.random_state)
        return np.sqrt(self.gammas_)[:, self._band_index()]

    def fit(self, X, Y, groups=None):
        super().fit(X, Y, groups)
        self.best_gammas_ = self.gammas_[self.best_candidates_]
        return self

    def predict_split(self, X) -> np.ndarray:
        """``n_bands x n_samples x n_targets``: the prediction of each band alone (they sum to ``predict``)."""
        X = np.asarray(X, dtype=np.float32)
        index = self._band_index()
        return np.stack([X[:, index == b] @ self.coef_[index == b] for b in range(len(self.bands))])


def split_r2_score(y_true: np.ndarray, y_pred_split: np.ndarray) -> np.ndarray:
    """Split R² per band (bands x targets); the bands sum to the R² of the (centred) full prediction.

    With centred data, R² = (2 y·ŷ − ŷ·ŷ) / y·y and ŷ = Σ_b ŷ_b, so band b's share is
    (2 y·ŷ_b − ŷ_b·ŷ) / y·y (as himalaya's ``r2_score_split``).
    """
    y = y_true - y_true.mean(0)
    parts = y_pred_split - y_pred_split.mean(1, keepdims=True)
    total = parts.sum(0)
    ss_tot = (y ** 2).sum(0)
    ss_tot = np.where(ss_tot > 0, ss_tot, 1.0)
    return np.stack([(2 * (y * p).sum(0) - (p * total).sum(0)) / ss_tot for p in parts])
