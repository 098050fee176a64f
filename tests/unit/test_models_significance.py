"""Significance of held-out scores: calibrated on null data of any run length, powered on a short block design,
NaN (never 1) where no p-value can be computed. Full table: bench/calibration.py."""

import logging

import numpy as np
import pytest
from scipy import signal, stats

from bids_encoding.models import significance
from bids_encoding.models.voxelwise import circular_shift_r, encode_runs, outer_folds, shift_null_p

DT = 0.1


def hrf():
    t = np.arange(0, 32, DT)
    h = stats.gamma.pdf(t, 6) - stats.gamma.pdf(t, 16) / 6
    return h / h.sum()


def preprocess(a):
    """Linear detrend and z-score within the run, as the pipeline does."""
    a = signal.detrend(a, axis=0)
    return (a - a.mean(0)) / a.std(0)


def event_features(n, rng, tr=2.0, n_features=6):
    """Random events (mean 6 s apart, random amplitudes) convolved with the canonical HRF: autocorrelated."""
    steps = int(round(n * tr / DT))
    events = np.zeros((steps, n_features))
    for j in range(n_features):
        onsets = np.cumsum(rng.exponential(6.0 / DT, size=steps // 10 + 10)).astype(int)
        for onset in onsets[onsets < steps]:
            events[onset:onset + 10, j] += rng.normal()
    return signal.fftconvolve(events, hrf()[:, None], axes=0)[:steps][::int(round(tr / DT))][:n]


def ar1(n, rho, rng):
    e = rng.normal(size=(n, len(rho)))
    e[0] /= np.sqrt(1 - rho ** 2)
    for t in range(1, n):
        e[t] += rho * e[t - 1]
    return e


def null_p(n_runs, n, n_voxels=2000, repeats=4, seed=0):
    """p-values of null voxels (AR(1) noise, rho 0.3-0.6, independent of HRF-convolved event features)."""
    ps = []
    for rep in range(repeats):
        rng = np.random.default_rng([seed, n_runs, n, rep])
        rho = rng.uniform(0.3, 0.6, size=n_voxels // repeats)
        X = np.concatenate([preprocess(event_features(n, rng)) for _ in range(n_runs)])
        Y = np.concatenate([preprocess(ar1(n, rho, rng)) for _ in range(n_runs)])
        ps.append(encode_runs(X, Y, [n] * n_runs).p)
    return np.concatenate(ps)


@pytest.mark.parametrize("n_runs, n", [(1, 80), (3, 100), (4, 40)])
def test_null_p_values_are_calibrated_on_short_and_multi_run_data(n_runs, n):
    p = null_p(n_runs, n)
    assert np.all(np.isfinite(p))
    assert 0.02 <= np.mean(p < 0.05) <= 0.08
    assert np.mean(p < 0.01) <= 0.025


@pytest.mark.slow
def test_null_p_values_are_calibrated_on_a_long_run():
    p = null_p(1, 600)
    assert 0.02 <= np.mean(p < 0.05) <= 0.08
    assert np.mean(p < 0.01) <= 0.025


def test_the_former_circular_shift_null_had_no_p_on_short_folds(monkeypatch):
    """What this module replaces: on an 80-volume run every test block has 16 samples, no shift of >= 10
    samples on both sides, and shift_null_p returned 1 for every voxel, so the calibration test above
    fails with it (no voxel under 0.05)."""
    def former(y, prediction, phi):
        shifted = circular_shift_r(y, prediction)
        return shift_null_p(shifted, 10), shifted[0]

    with monkeypatch.context() as patch:
        patch.setattr(significance, "fold_p_values", former)
        p = null_p(1, 80, n_voxels=400)
    assert np.all(p > 0.999) and not 0.02 <= np.mean(p < 0.05) <= 0.08

    rng = np.random.default_rng(0)
    folds, _ = outer_folds([80])
    for _, test in folds:
        y, prediction = rng.normal(size=(len(test), 200)), rng.normal(size=(len(test), 200))
        y[:, :100] += 3 * prediction[:, :100]  # even a strong effect
        assert np.all(shift_null_p(circular_shift_r(y, prediction), 10) == 1.0)
        p, _ = significance.fold_p_values(y, prediction, np.zeros((200, 2)))
        assert np.all(p[:100] < 1e-3) and 0.0 < np.median(p[100:]) < 1.0


def test_a_strong_effect_in_a_short_block_design_run_is_found():
    """The auditory case of issue 16: one run of 84 volumes at TR 7 s, 6-on / 6-off blocks."""
    rng = np.random.default_rng(1)
    n, tr = 84, 7.0
    steps = int(round(n * tr / DT))
    boxcar = ((np.arange(steps) * DT / tr) // 6 % 2 == 1).astype(float)
    x = preprocess(np.convolve(boxcar, hrf())[:steps][::int(round(tr / DT))][:n, None])
    beta = np.zeros(2000)
    beta[:200] = rng.uniform(1.5, 2.5, size=200)  # R² 0.7-0.86
    Y = preprocess(x * beta + ar1(n, rng.uniform(0.3, 0.6, size=2000), rng))
    scores = encode_runs(x, Y, [n])
    discovered = scores.q < 0.05
    assert np.median(scores.r2[:200]) > 0.6
    assert np.mean(discovered[:200]) > 0.9
    assert np.mean(discovered[200:]) < 0.01
    assert 0.02 < np.mean(scores.p[200:] < 0.05) < 0.08


def test_no_computable_p_is_nan_with_a_warning_never_one(caplog):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 5))
    Y = rng.normal(size=(300, 50))
    Y[:, 40:] = 0.0  # constant voxels: no correlation exists
    Y[:, :20] += X @ rng.normal(size=(5, 20))
    with caplog.at_level(logging.WARNING, logger="bids_encoding"):
        scores = encode_runs(X, Y, [100, 100, 100])
    assert np.all(np.isnan(scores.p[40:])) and np.all(np.isnan(scores.q[40:]))
    assert np.all(np.isfinite(scores.p[:40])) and np.all(scores.q[:20] < 0.05)
    # q is taken over the 40 finite p-values only
    np.testing.assert_allclose(scores.q[:40], stats.false_discovery_control(scores.p[:40]))
    assert "10 of 50 voxels" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bids_encoding"):  # test runs of 3 volumes: under one df
        short = encode_runs(X[:12], Y[:12, :40], [3, 3, 3, 3])
    assert np.all(np.isnan(short.p)) and np.all(np.isnan(short.q)) and not np.any(short.p == 1)
    assert "40 of 40 voxels" in caplog.text


def test_the_sidecar_names_the_null_and_its_resolution():
    rng = np.random.default_rng(3)
    scores = encode_runs(rng.normal(size=(100, 3)), rng.normal(size=(100, 10)), [50, 50])
    assert "effective-df t test" in scores.methods["Significance"]
    assert "Benjamini-Hochberg" in scores.methods["Significance"]
    assert scores.methods["SignificanceNull"] == significance.NAME
    assert "continuous" in scores.methods["SignificanceResolution"]


def test_min_shift_is_accepted_but_deprecated():
    rng = np.random.default_rng(4)
    with pytest.warns(DeprecationWarning, match="min_shift"):
        encode_runs(rng.normal(size=(100, 3)), rng.normal(size=(100, 10)), [50, 50], min_shift=10)


def test_white_noise_gives_the_classical_partial_correlation_test():
    rng = np.random.default_rng(5)
    y, prediction = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    p, r = significance.fold_p_values(y, prediction, np.zeros((3, 2)))
    basis = significance.fold_basis(40)
    yc, pc = y - basis @ (basis.T @ y), prediction - basis @ (basis.T @ prediction)
    partial = (yc * pc).sum(0) / np.sqrt((yc ** 2).sum(0) * (pc ** 2).sum(0))
    np.testing.assert_allclose(p, stats.t.sf(partial * np.sqrt(37 / (1 - partial ** 2)), 37))
    np.testing.assert_allclose(r, [stats.pearsonr(y[:, i], prediction[:, i])[0] for i in range(3)])


def test_the_noise_model_is_unbiased_on_short_runs():
    """Raw residual autocorrelations of 60-sample runs are biased towards 0; the corrected AR fit is not."""
    rng = np.random.default_rng(6)
    X = event_features(120, rng)
    Y = np.concatenate([ar1(60, np.full(4000, 0.5), rng) for _ in range(2)])
    phi = significance.noise_model(X, Y, [60, 60])
    rho1 = significance.ar_autocorrelation(phi, 2)[1]
    design = significance.noise_design(X[:60])
    raw = significance.residual_lag_products(Y[:60], design)
    assert np.mean(raw[1] / raw[0]) < 0.45  # biased
    assert abs(np.mean(rho1) - 0.5) < 0.02  # corrected


def test_ar_autocorrelation_matches_a_long_simulation():
    phi = np.array([[0.5, 0.25]])
    x = signal.lfilter([1], [1, -0.5, -0.25], np.random.default_rng(7).normal(size=400000))[1000:]
    x -= x.mean()
    empirical = [1.0] + [np.mean(x[:-k] * x[k:]) / x.var() for k in range(1, 6)]
    np.testing.assert_allclose(significance.ar_autocorrelation(phi, 6)[:, 0], empirical, atol=0.01)
    np.testing.assert_allclose(significance.levinson(significance.ar_autocorrelation(phi, 3)[1:].T), phi)


def test_bias_matrix_matches_its_dense_definition():
    rng = np.random.default_rng(8)
    for n in (3, 17, 90):
        design = significance.noise_design(rng.normal(size=(n, 7)))
        R = np.eye(n) - design @ design.T
        offsets = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        dense = []
        for j in range(3):
            lag = np.eye(n, k=j)  # L_j: ones at (t, t + j)
            dense.append(np.bincount(offsets.ravel(), weights=(R @ lag @ R).ravel(), minlength=n))
        np.testing.assert_allclose(significance.bias_matrix(design, 2), dense, atol=1e-10)
