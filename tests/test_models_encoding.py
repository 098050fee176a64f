import numpy as np
import pytest
from sklearn.linear_model import Ridge

from bids_encoding.models.encoding import cross_validated_encoding, heldout_r2, outer_folds, pearson_r


def simulate(n_runs=3, n=150, p=5, v=40, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(p, v))
    W[:, v // 2:] = 0  # the second half of the voxels carries no signal
    X_runs = [rng.normal(size=(n, p)) for _ in range(n_runs)]
    Y_runs = [x @ W + noise * rng.normal(size=(n, v)) for x in X_runs]
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
        distance = np.min(np.abs(train[:, None] - test[None, :]))
        assert distance > 4


def test_planted_voxels_score_and_noise_voxels_do_not():
    X_runs, Y_runs = simulate()
    scores = cross_validated_encoding(X_runs, Y_runs)
    assert scores.r2[:20].min() > 0.5
    assert scores.r2[20:].max() < 0.05
    assert scores.r[:20].min() > 0.7


def test_heldout_r2_equals_sklearn_ridge_score_at_fixed_alpha():
    X_runs, Y_runs = simulate(n_runs=2)
    model = Ridge(alpha=10.0).fit(X_runs[0], Y_runs[0])
    pred = model.predict(X_runs[1])
    ours = heldout_r2(Y_runs[1], pred)
    from sklearn.metrics import r2_score

    assert np.allclose(ours, r2_score(Y_runs[1], pred, multioutput="raw_values"))
    assert np.allclose(pearson_r(Y_runs[1], pred)[0], np.corrcoef(Y_runs[1][:, 0], pred[:, 0])[0, 1])


def test_noisier_voxels_get_larger_alphas():
    rng = np.random.default_rng(1)
    X_runs = [rng.normal(size=(200, 10)) for _ in range(3)]
    w = rng.normal(size=(10, 1))
    Y_runs = [np.hstack([x @ w + 0.1 * rng.normal(size=(200, 1)), x @ w + 10 * rng.normal(size=(200, 1))]) for x in X_runs]
    scores = cross_validated_encoding(X_runs, Y_runs)
    assert scores.alpha[1] > 10 * scores.alpha[0]


def test_mismatched_runs_are_rejected():
    X_runs, Y_runs = simulate()
    with pytest.raises(ValueError):
        cross_validated_encoding(X_runs, Y_runs[:2])
