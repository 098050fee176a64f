"""Outer cross-validation: folds, no leakage, planted recovery, split R², significance, backends."""

import numpy as np
import pytest

from bids_encoding.models import voxelwise as enc
from bids_encoding.models.voxelwise import circular_shift_r, cross_validated_encoding, outer_folds, pearson_r


def simulate(n_runs=3, n=150, p=5, v=40, noise=1.0, seed=0, rho=0.0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(p, v))
    W[:, v // 2:] = 0  # the second half of the voxels carries no signal
    X_runs = [rng.normal(size=(n, p)) for _ in range(n_runs)]
    Y_runs = []
    for x in X_runs:
        e = rng.normal(size=(n, v))
        for t in range(1, n):  # AR(1) noise, as BOLD has
            e[t] += rho * e[t - 1]
        Y_runs.append(x @ W + noise * e)
    return X_runs, Y_runs


def test_leave_one_run_out_folds_never_train_on_the_test_run():
    folds, cv = outer_folds([100, 80, 120])
    assert cv == "leave-one-run-out" and len(folds) == 3
    for train, test in folds:
        assert not set(train) & set(test)
        assert len(train) + len(test) == 300


def test_single_run_uses_blocks_with_a_gap():
    folds, cv = outer_folds([200], n_blocks=5, gap=4)
    assert "blocks" in cv
    for train, test in folds:
        assert np.min(np.abs(train[:, None] - test[None, :])) > 4


def test_the_solver_never_sees_the_test_run(monkeypatch):
    """A spy on the solver: every row it may read, for fitting or for choosing alphas, is a training row."""
    X_runs, Y_runs = simulate()
    seen = []
    real = enc.solve_ridge_path

    def spy(X, Y, folds, alphas, scales, backend, chunk_size, rows=None, **kwargs):
        seen.append((rows.copy(), [(tr.copy(), va.copy()) for tr, va in folds], len(X)))
        return real(X, Y, folds, alphas, scales, backend, chunk_size, rows=rows, **kwargs)

    monkeypatch.setattr(enc, "solve_ridge_path", spy)
    cross_validated_encoding(X_runs, Y_runs)
    tests = [np.arange(i * 150, (i + 1) * 150) for i in range(3)]
    assert len(seen) == 3
    for (rows, inner, n_rows), test in zip(seen, tests):
        assert not set(rows) & set(test) and n_rows == len(rows) == 300
        for train, val in inner:  # inner folds index the training rows only, and leave one training run out
            assert max(train.max(), val.max()) < 300 and len(val) == 150


def test_a_leak_would_show_as_positive_r2_on_pure_noise():
    rng = np.random.default_rng(2)
    X_runs = [rng.normal(size=(60, 50)) for _ in range(3)]  # nearly as many features as samples
    Y_runs = [rng.normal(size=(60, 200)) for _ in range(3)]
    scores = cross_validated_encoding(X_runs, Y_runs)
    assert scores.r2.mean() < 0.0 and np.mean(scores.r > 0.3) < 0.01


def test_planted_voxels_score_and_noise_voxels_do_not():
    scores = cross_validated_encoding(*simulate())
    assert scores.r2[:20].min() > 0.5 and scores.r2[20:].max() < 0.05
    assert scores.r[:20].min() > 0.7


def test_noisier_voxels_get_larger_alphas():
    rng = np.random.default_rng(1)
    X_runs = [rng.normal(size=(200, 10)) for _ in range(3)]
    w = rng.normal(size=(10, 1))
    Y_runs = [np.hstack([x @ w + 0.1 * rng.normal(size=(200, 1)), x @ w + 10 * rng.normal(size=(200, 1))]) for x in X_runs]
    scores = cross_validated_encoding(X_runs, Y_runs)
    assert scores.alpha[1] > 10 * scores.alpha[0]


def test_significance_is_calibrated_on_null_voxels_and_finds_planted_ones():
    X_runs, Y_runs = simulate(n=200, v=400, noise=6.0, rho=0.5, seed=4)
    scores = cross_validated_encoding(X_runs, Y_runs)
    null_p = scores.p[200:]
    assert 0.01 < np.mean(null_p < 0.05) < 0.10  # about 5% false positives at p < 0.05, AR(1) noise included
    assert np.mean(null_p < 0.01) < 0.03
    discovered = scores.q < 0.05
    assert np.mean(discovered[:200]) > 0.9
    assert discovered[200:].sum() / discovered.sum() < 0.1  # the false discovery rate stays controlled
    assert "effective-df t test" in scores.methods["Significance"]  # was "circular shifts": the null changed


def test_circular_shift_r_row_zero_is_pearson():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    shifted = circular_shift_r(a, b)
    assert np.allclose(shifted[0], pearson_r(a, b))
    assert np.allclose(shifted[5], pearson_r(a, np.roll(b, 5, axis=0)))


def test_split_r2_attributes_planted_bands():
    rng = np.random.default_rng(7)
    X_runs, Y_runs = [], []
    for _ in range(3):
        a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 6))
        X_runs.append(np.hstack([a, b]))
        Y_runs.append(np.hstack([a @ np.ones((4, 10)), b @ np.ones((6, 10)) * 0.7]) + 3 * rng.normal(size=(200, 20)))
    scores = cross_validated_encoding(X_runs, Y_runs, bands=[4, 6], n_candidates=8)
    assert scores.split_r2.shape == (2, 20) and scores.gammas.shape == (20, 2)
    assert np.all(scores.split_r2[0, :10] > scores.split_r2[1, :10] + 0.1)
    assert np.all(scores.split_r2[1, 10:] > scores.split_r2[0, 10:] + 0.1)


def test_chunking_and_backends_give_the_same_scores():
    X_runs, Y_runs = simulate(v=50)
    whole = cross_validated_encoding(X_runs, Y_runs, chunk_size=1000)
    chunked = cross_validated_encoding(X_runs, Y_runs, chunk_size=7)
    # float32 products of other shapes round differently: a voxel whose two best alphas tie may flip
    assert np.allclose(whole.r2, chunked.r2, atol=1e-5)
    assert np.mean(whole.alpha == chunked.alpha) > 0.95
    pytest.importorskip("torch")
    torch_scores = cross_validated_encoding(X_runs, Y_runs, backend="torch")
    assert np.allclose(whole.r2, torch_scores.r2, atol=1e-4)


def test_mismatched_runs_are_rejected():
    X_runs, Y_runs = simulate()
    with pytest.raises(ValueError):
        cross_validated_encoding(X_runs, Y_runs[:2])


def test_feature_pca_is_fitted_on_training_rows_and_keeps_fir_delays_aligned():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(120, 30))
    fir = np.hstack([np.roll(features, d, axis=0) for d in (1, 2, 3)])  # three delayed copies
    confounds = rng.normal(size=(120, 4))
    X = np.hstack([fir, confounds])
    train = np.arange(80)
    reduced, widths = enc.reduce_bands(X, train, [90, 4], [3, 0], n_components=5)
    assert widths == [15, 4] and reduced.shape == (120, 19)
    np.testing.assert_allclose(reduced[:, 15:], confounds, rtol=1e-6)  # confounds are never reduced
    changed = X.copy()
    changed[80:] = rng.normal(size=(40, 94))  # whatever the test rows hold, the projection is the same
    again, _ = enc.reduce_bands(changed, train, [90, 4], [3, 0], n_components=5)
    np.testing.assert_allclose(again[:80], reduced[:80], rtol=1e-5, atol=1e-6)
    # each delay block is projected with the same components: delayed copies stay delayed copies
    np.testing.assert_allclose(reduced[5:, 5:10], np.roll(reduced[:, 0:5], 1, axis=0)[5:], atol=1e-5)


def test_feature_pca_recovers_a_signal_living_in_the_leading_components():
    rng = np.random.default_rng(4)
    latent = [rng.normal(size=(150, 4)) for _ in range(3)]
    mixing = rng.normal(size=(4, 60))
    X_runs = [z @ mixing + 0.1 * rng.normal(size=(150, 60)) for z in latent]
    W = rng.normal(size=(4, 20))
    Y_runs = [z @ W + rng.normal(size=(150, 20)) for z in latent]
    reduced = cross_validated_encoding(X_runs, Y_runs, pca=4)
    full = cross_validated_encoding(X_runs, Y_runs)
    assert np.median(reduced.r2) > 0.5 and np.median(reduced.r2) >= np.median(full.r2) - 0.02
    assert "4 components" in reduced.methods["FeaturePCA"] and full.methods["FeaturePCA"] is None


def test_refit_weights_recover_planted_weights_and_map_pca_back_to_the_features():
    """The refit on all samples at given penalties: planted weights recovered; with PCA, the weights live in the
    original features and, with the intercept, predict exactly what the reduced model predicts."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    W = rng.normal(size=(8, 6))
    Y = (X @ W + 0.1 * rng.normal(size=(400, 6))).astype(np.float32)
    weights, intercept = enc.refit_weights(X, Y, np.full(6, 1e-3))
    np.testing.assert_allclose(weights, W, atol=0.02)
    assert not intercept.any()
    # FIR-like: 3 delayed copies of 20 features, reduced to 4 components per delay
    features = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 20)) + 0.05 * rng.normal(size=(300, 20)) + 1.0
    fir = np.hstack([np.roll(features, d, axis=0) for d in (1, 2, 3)]).astype(np.float32)
    Y = (fir @ rng.normal(size=(60, 5)) + rng.normal(size=(300, 5))).astype(np.float32)
    alphas = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
    weights, intercept = enc.refit_weights(fir, Y, alphas, pca=4, blocks=3)
    reduced, widths = enc.reduce_bands(fir, np.arange(300), [60], [3], n_components=4)
    assert weights.shape == (60, 5) and widths == [12]
    reduced_weights = enc.ridge_weights(reduced, Y, alphas)
    np.testing.assert_allclose(fir @ weights + intercept, reduced @ reduced_weights, rtol=1e-3, atol=1e-3)
    assert np.abs(intercept).max() > 1e-3  # the features were not centred: the projection's centring matters
