"""The ridge solvers: exactness, chunking, backends, penalty choice, banded ridge and split R²."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from bids_encoding.models.ridge import (BandedRidgeCV, RidgeCV, band_candidates, r2_score_columns, ridge_weights,
                                       split_r2_score)


def data(n=400, p=30, v=60, noise=3.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    Y = (X @ rng.normal(size=(p, v)) + noise * rng.normal(size=(n, v))).astype(np.float32)
    return X, Y


def test_agrees_with_scikit_learn_ridge_at_a_fixed_alpha():
    X, Y = data()
    for alpha in (0.1, 10.0, 1000.0):
        ours = RidgeCV(alphas=[alpha]).fit(X, Y)
        theirs = Ridge(alpha=alpha, fit_intercept=False).fit(X.astype(np.float64), Y.astype(np.float64))
        assert np.allclose(ours.coef_, theirs.coef_.T, atol=1e-4)


def test_chunked_equals_unchunked():
    X, Y = data(v=101)
    whole = RidgeCV(chunk_size=1000).fit(X, Y)
    chunked = RidgeCV(chunk_size=7).fit(X, Y)
    assert np.array_equal(whole.best_alphas_, chunked.best_alphas_)
    assert np.allclose(whole.coef_, chunked.coef_, atol=1e-6)


def test_numpy_and_torch_backends_agree():
    pytest.importorskip("torch")
    X, Y = data()
    a = RidgeCV().fit(X, Y)
    b = RidgeCV(backend="torch").fit(X, Y)
    assert np.array_equal(a.best_alphas_, b.best_alphas_)
    assert np.allclose(a.coef_, b.coef_, atol=1e-4)


def test_chosen_alpha_tracks_the_noise_level():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 20)).astype(np.float32)
    signal = X @ rng.normal(size=(20, 1))
    noise_levels = [0.1, 1.0, 10.0, 100.0]
    Y = np.hstack([signal + s * rng.normal(size=(500, 1)) for s in noise_levels]).astype(np.float32)
    alphas = RidgeCV(alphas=np.logspace(-3, 7, 41)).fit(X, Y).best_alphas_
    assert np.all(np.diff(np.log10(alphas)) > 0.5), alphas  # noisier voxels, clearly larger penalties


def test_run_groups_give_leave_one_run_out_inner_folds():
    X, Y = data(n=300)
    groups = np.repeat([0, 1, 2], 100)
    model = RidgeCV().fit(X, Y, groups=groups)
    assert model.coef_.shape == (30, 60) and model.score(X, Y) > 0.5


def test_band_candidates_are_weightings():
    gammas = band_candidates(3, 10, seed=1)
    assert gammas.shape == (10, 3) and np.allclose(gammas.sum(1), 1) and np.all(gammas > 0)
    assert np.allclose(gammas[0], 1 / 3)  # the uniform weighting is always tried


def test_banded_ridge_attributes_each_voxel_to_its_band():
    rng = np.random.default_rng(5)
    n = 600
    Xa, Xb = rng.normal(size=(n, 10)), rng.normal(size=(n, 40))
    ya = Xa @ rng.normal(size=(10, 20))
    yb = Xb @ rng.normal(size=(40, 20)) * 0.5
    Y = np.hstack([ya, yb]) + 2 * rng.normal(size=(n, 40))
    X = np.hstack([Xa, Xb]).astype(np.float32)
    model = BandedRidgeCV(bands=[10, 40], n_candidates=10).fit(X[:400], Y[:400].astype(np.float32))
    split = split_r2_score(Y[400:], model.predict_split(X[400:]))
    assert np.allclose(split.sum(0), r2_score_columns(Y[400:] - Y[400:].mean(0),
                                                      model.predict(X[400:]) - model.predict(X[400:]).mean(0)), atol=1e-4)
    assert np.all(split[0, :20] > 0.2) and np.all(np.abs(split[1, :20]) < 0.05)
    assert np.all(split[1, 20:] > 0.2) and np.all(np.abs(split[0, 20:]) < 0.05)
    # the band a voxel does not use gets a small weight (a large penalty)
    assert np.median(model.best_gammas_[:20, 0]) > 0.5 and np.median(model.best_gammas_[20:, 1]) > 0.5


def test_mismatched_shapes_are_refused():
    X, Y = data()
    with pytest.raises(ValueError):
        RidgeCV().fit(X, Y[:-1])
    with pytest.raises(ValueError, match="bands"):
        BandedRidgeCV(bands=[10, 10]).fit(X, Y)


def test_weights_with_one_penalty_per_voxel_equal_a_direct_solve():
    """A planted problem; each voxel's weights equal (X'X + alpha_v I)^-1 X'y_v solved on its own, chunk by chunk."""
    X, Y = data(n=300, p=12, v=25, noise=2.0)
    alphas = np.logspace(-2, 4, Y.shape[1])
    weights = ridge_weights(X, Y, alphas, chunk_size=7)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    direct = np.column_stack([np.linalg.solve(X64.T @ X64 + a * np.eye(X.shape[1]), X64.T @ Y64[:, v])
                              for v, a in enumerate(alphas)])
    assert weights.shape == (12, 25) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, direct, rtol=1e-4, atol=1e-5)
    # the refit at the penalty RidgeCV chose gives RidgeCV's own weights
    fitted = RidgeCV().fit(X, Y)
    np.testing.assert_allclose(ridge_weights(X, Y, fitted.best_alphas_), fitted.coef_, atol=1e-5)
    with pytest.raises(ValueError):
        ridge_weights(X, Y, alphas[:-1])
    with pytest.raises(ValueError):
        ridge_weights(X, Y, np.zeros(Y.shape[1]))


def test_weights_backends_agree():
    pytest.importorskip("torch")
    X, Y = data(v=30)
    alphas = np.logspace(0, 3, 30)
    np.testing.assert_allclose(ridge_weights(X, Y, alphas, backend="torch"), ridge_weights(X, Y, alphas), atol=1e-4)
