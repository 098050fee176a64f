"""Paired comparison of two encoding models (--compare): calibrated on equally good models, powerful when one is better."""

import numpy as np
import pytest

from bids_encoding.models.voxelwise import compare_models, encode_runs

from .test_models_significance import ar1, event_features, preprocess


def compare(n_runs, n, rho, weights, n_voxels=2000, repeats=20, seed=0, alternative="greater"):
    """p-values of A vs B where the data are weights[0] * A's signal + weights[1] * B's signal + AR(1) noise.

    A and B are two different sets of HRF-convolved event features, each carrying its own signal;
    equal weights make the two models equally good (the null of the comparison). Features are
    drawn anew for every 1/repeats of the voxels: the rate then varies with the noise, not with
    one draw of the features.
    """
    ps, deltas = [], []
    for rep in range(repeats):
        rng = np.random.default_rng([seed, n_runs, n, rep, int(rho[0] * 100)])
        rhos = rng.uniform(*rho, size=n_voxels // repeats)
        runs = [(preprocess(event_features(n, rng, n_features=2)), preprocess(event_features(n, rng, n_features=2)))
                for _ in range(n_runs)]
        X_a = np.concatenate([a for a, _ in runs])
        X_b = np.concatenate([b for _, b in runs])
        signal = weights[0] * X_a.sum(1, keepdims=True) + weights[1] * X_b.sum(1, keepdims=True)
        Y = np.concatenate([preprocess(ar1(n, rhos, rng)) for _ in range(n_runs)]) + signal
        lengths = [n] * n_runs
        a, b = (encode_runs(X, Y, lengths, keep_predictions=True) for X in (X_a, X_b))
        delta, p = compare_models(Y, a, b, np.hstack([X_a, X_b]), lengths, alternative)
        ps.append(p)
        deltas.append(delta)
    return np.concatenate(ps), np.concatenate(deltas)


@pytest.mark.parametrize("n_runs, n, rho", [(1, 200, (0.3, 0.6)), (3, 100, (0.3, 0.6)), (1, 300, (0.6, 0.6)),
                                            (3, 80, (0.6, 0.6))])
def test_equally_good_models_are_calibrated(n_runs, n, rho):
    p, _ = compare(n_runs, n, rho, (0.4, 0.4))
    assert np.isfinite(p).mean() > 0.95
    rate = float(np.mean(p[np.isfinite(p)] < 0.05))
    print(f"null comparison, {n_runs} run(s) x {n} volumes, AR(1) rho {rho}: fraction p < 0.05 = {rate:.3f}")
    assert 0.02 <= rate <= 0.08


@pytest.mark.parametrize("n_runs, n", [(1, 200), (3, 100)])
def test_a_better_model_is_found(n_runs, n):
    p, delta = compare(n_runs, n, (0.3, 0.6), (0.5, 0.0), n_voxels=400)
    power = float(np.mean(p < 0.05))
    print(f"A better than B, {n_runs} run(s) x {n} volumes: fraction p < 0.05 = {power:.3f}")
    assert np.mean(delta > 0) > 0.9
    assert power > 0.6
    reverse, _ = compare(n_runs, n, (0.3, 0.6), (0.5, 0.0), n_voxels=400, alternative="less")
    assert np.mean(reverse < 0.05) < 0.01  # one-sided: B is never found better
