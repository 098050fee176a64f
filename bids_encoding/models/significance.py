"""Significance of held-out correlations between autocorrelated series, on folds of any length.

Why not circular shifts: a shift null needs folds much longer than the shifts it must
exclude (a 17-volume test block has no shift of 10 or more on both sides, so its p was 1),
its spread comes from few, strongly dependent shifts when folds are short, and under a
periodic (block) design the shifted predictions realign with the data, so real effects
look null.

The null used here is parametric: an effective-degrees-of-freedom t test of the held-out
correlation (Bartlett 1935; Bayley & Hammersley 1946; Dutilleul 1993; Pyper & Peterman
1998). Within each test fold the mean and linear trend are removed from data and
prediction (drift is no evidence, and detrended BOLD has less variance than the stationary
model says, which would make short folds liberal). Given the held-out prediction u (fitted
without the fold) and data whose noise has autocorrelation rho, the null variance of their
correlation is, to first order,

    var(r) = u'Ru / tr(MR) = sum_k rho(k) s_u(k) / (n - 2 - trend terms)

with s_u the prediction's own sample autocorrelation (known exactly: nothing is estimated on
the prediction side), R the noise correlation matrix and M the fold's detrending; r is
referred to Student t with df = 1 / var(r) - 1 (white noise gives the classical n - 3).
Only the noise autocorrelation is estimated, once per voxel from all of its runs (not from
the short fold), as an AR(2) model of the residuals of the data on a small in-sample design
(per-run intercept, trend and leading principal components of the features, so that a
strong effect does not pass for autocorrelated noise). Residual autocorrelations of short
series are biased towards zero, which would make the test liberal; the bias is removed
exactly in expectation (Worsley 2002, as in fmristat), iterating on the full AR
autocorrelation rather than truncating it. AR(2) rather than AR(1): it stays calibrated
when the noise is not AR(1) (AR(1) plus white noise, AR(2)), at a small cost on short runs.

The p-value is continuous (no Monte Carlo or shift-count floor). Where it cannot be
computed (a constant series, or a fold under one effective degree of freedom) it is NaN,
never 1; folds without p are left out of the combination, and the FDR is taken over finite
p-values only. Calibration and power: bench/calibration.py.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft, stats

log = logging.getLogger("bids_encoding")

AR_ORDER = 2  # AR(1) misses the slower decay fMRI noise often has; higher orders are noisy on short runs
MAX_PACF = 0.98  # partial autocorrelations are clipped here, so every fitted model is stationary
MIN_DF = 1.0  # folds with fewer effective degrees of freedom get no p-value
SMALLEST_P = 1e-300  # the Cauchy combination clips p-values here

NAME = "effective-df t test of the held-out r (Bartlett / Bayley-Hammersley variance)"
RESOLUTION = (f"continuous: parametric Student t tail, no Monte Carlo or shift-count floor; "
              f"smallest p {SMALLEST_P:g} (Cauchy combination clipping)")


def describe(order: int = AR_ORDER) -> str:
    """The ``Significance`` methods text."""
    return (f"per fold, the held-out r (fold mean and linear trend removed) against a parametric null: {NAME}, "
            f"from the prediction's own autocorrelation and the voxel's AR({order}) noise autocorrelation, estimated "
            "over all its runs from residuals on an in-sample design (intercept, trend, leading feature components) "
            "with exact bias correction (Worsley 2002); Student t tail with 1/var(r) - 1 df; no p (NaN) where it "
            "cannot be computed (constant series, or under one effective df); folds combined by the Cauchy "
            "combination test (valid under their dependence), leaving out folds without p; Benjamini-Hochberg FDR "
            "over the finite p-values")


def noise_design(X_run: np.ndarray, n_components: int | None = None, block: int = 1024) -> np.ndarray:
    """Orthonormal in-sample design of one run: intercept, linear trend, leading feature components.

    Removing what the features can explain keeps a strong effect out of the noise model; the
    number of components stays small (one per 20 volumes) so little noise goes with it. The
    components come from the samples' Gram matrix, built ``block`` columns at a time, so wide
    feature spaces are never copied whole.
    """
    n = len(X_run)
    base = np.linalg.qr(np.column_stack([np.ones(n), np.linspace(-1, 1, n)])[:, :min(2, n)])[0]
    if n_components is None:
        n_components = max(1, n // 20)
    n_components = min(n_components, max(n - 4, 0))
    wide = X_run.shape[1] > n  # then the n x n Gram matrix is the smaller object
    gram, columns = np.zeros((n, n) if wide else (0, 0)), []
    for start in range(0, X_run.shape[1] if n_components else 0, block):
        X = np.asarray(X_run[:, start:start + block], dtype=np.float64)
        X = X - base @ (base.T @ X)
        sd = np.sqrt((X ** 2).mean(axis=0))
        keep = sd > 1e-8 * np.abs(X_run[:, start:start + block]).max(axis=0, initial=0)
        X = X[:, keep] / sd[keep]
        if wide:
            gram += X @ X.T
        else:
            columns.append(X)
    if wide:
        values, vectors = np.linalg.eigh(gram)
        values, vectors = values[::-1], vectors[:, ::-1]
    elif columns and sum(c.shape[1] for c in columns):
        vectors, values, _ = np.linalg.svd(np.hstack(columns), full_matrices=False)
        values = values ** 2
    else:
        return base
    count = min(n_components, int(np.sum(values > 1e-10 * max(values[0], 1e-300))))
    return np.linalg.qr(np.column_stack([base, vectors[:, :count]]))[0]


def _lagged_cross_sums(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """c[d] = sum_a sum_t A[t + d, a] B[t, a] for d = 0..n-1, then d = -(n-1)..-1 (FFT order), by FFT."""
    n = len(A)
    size = fft.next_fast_len(2 * n - 1, real=True)
    c = fft.irfft((fft.rfft(A, n=size, axis=0) * np.conj(fft.rfft(B, n=size, axis=0))).sum(axis=1), n=size)
    return np.concatenate([c[:n], c[size - n + 1:]])


def bias_matrix(design: np.ndarray, order: int = AR_ORDER) -> np.ndarray:
    """m[j, k] = tr(R L_j R T_k): E[sum_t e_t e_{t+j}] = gamma_0 sum_k m[j, k] rho(k) for residuals e = R y.

    R = I - QQ' is the residual-forming matrix of the orthonormal ``design`` Q, L_j the lag-j
    shift, T_k = L_k + L_k' (T_0 = I); rows j = 0..order, columns k = 0..n-1 (all lags: nothing
    is truncated). m[j, k] sums the entries of R L_j R at offsets +-k; R L_j R = L_j - QQ'L_j -
    L_jQQ' + Q(Q'L_jQ)Q' has each term of low rank, so the sums come from cross-correlations of
    the design's columns (O(n log n) per column, no n x n matrix).
    """
    n, q = design.shape
    m = np.zeros((order + 1, n))
    for j in range(order + 1):
        down = np.zeros_like(design)  # L_j' Q: rows shifted down by j
        up = np.zeros_like(design)  # L_j Q: rows shifted up by j
        if j < n:
            down[j:], up[:n - j] = design[:n - j], design[j:]
        offsets = np.zeros(2 * n - 1)  # sum of entries with row - column = d, FFT order
        if j < n:
            offsets[-j if j else 0] += n - j  # L_j: ones at (t, t + j)
        if q:
            offsets -= _lagged_cross_sums(design, down)  # QQ'L_j = Q (L_j'Q)'
            offsets -= _lagged_cross_sums(up, design)  # L_jQQ'
            offsets += _lagged_cross_sums(design @ (design.T @ up), design)  # Q (Q'L_jQ) Q'
        m[j, 0] = offsets[0]
        m[j, 1:] = offsets[1:n] + offsets[:n - 1:-1]  # offsets +k and -k
    return m


def residual_lag_products(Y_run: np.ndarray, design: np.ndarray, order: int = AR_ORDER) -> np.ndarray:
    """sum_t e_t e_{t+j} (j = 0..order) per column, for the residuals e of Y on ``design``."""
    Y = np.asarray(Y_run, dtype=np.float64)
    e = Y - design @ (design.T @ Y)
    return np.stack([(e[:len(e) - j] * e[j:]).sum(axis=0) for j in range(order + 1)])


def ar_autocorrelation(phi: np.ndarray, n_lags: int) -> np.ndarray:
    """Autocorrelation (lags 0..n_lags-1 x voxels) of stationary AR models, one per row of ``phi`` (voxels x order)."""
    phi = np.atleast_2d(phi)
    v, order = phi.shape
    rho = np.zeros((max(n_lags, order + 1), v))
    rho[0] = 1.0
    if order:
        # Yule-Walker in reverse: rho_k = sum_i phi_i rho_|k-i| for k = 1..order
        A = np.tile(np.eye(order), (v, 1, 1))
        for k in range(1, order + 1):
            for i in range(1, order + 1):
                if k != i:
                    A[:, k - 1, abs(k - i) - 1] -= phi[:, i - 1]
        rho[1:order + 1] = np.linalg.solve(A, phi[..., None])[..., 0].T
        # further lags: the state (rho_k, ..., rho_k-order+1) moves by the companion matrix C; applying
        # C, C^2, C^4, ... to all the states found so far doubles them each time (log2(n) steps, not n).
        # Orders are small: loops over matrix entries, vectorised over voxels, beat batched tiny products.
        power = np.zeros((order, order, v))
        power[0] = phi.T
        for i in range(1, order):
            power[i, i - 1] = 1.0
        states = rho[order:0:-1][None]  # found states x order x voxels
        while len(states) < len(rho) - order:
            moved = np.zeros_like(states)
            for i in range(order):
                for j in range(order):
                    moved[:, i] += power[i, j] * states[:, j]
            states = np.concatenate([states, moved])
            power = np.stack([np.stack([sum(power[i, k] * power[k, j] for k in range(order)) for j in range(order)])
                              for i in range(order)])
        rho[order:] = states[:len(rho) - order, 0]
    return rho[:n_lags]


def levinson(rho: np.ndarray, max_pacf: float = MAX_PACF) -> np.ndarray:
    """AR coefficients (voxels x order) from autocorrelations at lags 1..order, partial ones clipped (stationary)."""
    v, order = rho.shape
    phi = np.zeros((v, 0))
    err = np.ones(v)
    for k in range(1, order + 1):
        kappa = (rho[:, k - 1] - np.einsum("vi,vi->v", phi, rho[:, k - 2::-1] if k > 1 else np.zeros((v, 0)))) / err
        kappa = np.clip(np.nan_to_num(kappa), -max_pacf, max_pacf)
        phi = np.column_stack([phi - kappa[:, None] * phi[:, ::-1], kappa])
        err = err * (1 - kappa ** 2)
    return phi


def fit_noise_ar(products: np.ndarray, m: np.ndarray, n_iter: int = 30) -> np.ndarray:
    """AR coefficients (voxels x order) whose expected residual autocorrelations match the observed ones.

    ``products`` (order+1 x voxels) are residual lag products summed over runs and ``m`` the
    matching sum of :func:`bias_matrix`. Raw ratios products[j] / products[0] are biased
    towards zero (more so on short runs, or with a larger design); the fixed-point iteration
    corrects the target until the model's expected ratios equal the observed ones. Columns
    without residual variance get NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = (products[1:] / products[0]).T
    bad = ~np.all(np.isfinite(observed), axis=1) | (products[0] <= 0)
    observed = np.where(bad[:, None], 0.0, observed)
    target = observed.copy()
    for _ in range(n_iter):
        phi = levinson(target)
        rho = ar_autocorrelation(phi, m.shape[1])  # lags x voxels
        expected = ((m[1:] @ rho) / (m[0] @ rho)).T
        step = observed - expected
        target = target + step
        if np.max(np.abs(step), initial=0) < 1e-6:
            break
    phi = levinson(target)
    phi[bad] = np.nan
    return phi


def noise_model(X: np.ndarray, Y: np.ndarray, run_lengths: list[int], order: int = AR_ORDER,
                chunk_size: int = 10000) -> np.ndarray:
    """Per-voxel AR(order) noise coefficients (voxels x order), pooled over runs (consecutive rows)."""
    bounds = np.cumsum([0] + list(run_lengths))
    designs = [noise_design(X[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    n_max = max(run_lengths)
    m = np.zeros((order + 1, n_max))
    for d in designs:
        m[:, :len(d)] += bias_matrix(d, order)
    phi = np.full((Y.shape[1], order), np.nan)
    for start in range(0, Y.shape[1], chunk_size):
        cols = slice(start, start + chunk_size)
        products = sum(residual_lag_products(Y[a:b, cols], d, order)
                       for (a, b), d in zip(zip(bounds[:-1], bounds[1:]), designs))
        phi[cols] = fit_noise_ar(products, m)
    return phi


def lagged_autocorrelation(x: np.ndarray) -> np.ndarray:
    """Sample autocorrelation of each centred column at lags 0..n-1 (sum_t x_t x_{t+k} / sum_t x_t^2), by FFT."""
    n = len(x)
    size = fft.next_fast_len(2 * n - 1, real=True)  # zero padding: no wrap-around
    spectrum = fft.rfft(x, n=size, axis=0)
    power = spectrum.real ** 2
    power += spectrum.imag ** 2
    del spectrum
    acov = fft.irfft(power, n=size, axis=0)[:n]
    with np.errstate(divide="ignore", invalid="ignore"):
        return acov / acov[:1]


def fold_basis(n: int) -> np.ndarray:
    """Orthonormal intercept and linear trend of a fold of ``n`` samples (what each fold's test removes)."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), np.linspace(-1, 1, n)])[:, :min(2, n)])
    return q


def null_variance(prediction: np.ndarray, phi: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """var(r) under the null of r between ``prediction`` (already residual on ``basis``) and data with AR noise.

    var(r) = u'Ru / tr(M R), u the unit prediction, R the noise correlation (Toeplitz in the AR
    autocorrelation), M the residual-forming matrix of ``basis``: sum_k rho(k) s_u(k) over all lags,
    divided by n - sum_a sum_k rho(k) s_a(k) for the q basis vectors a. White noise gives 1 / (n - q):
    the classical partial-correlation variance.
    """
    n = len(prediction)
    rho = ar_autocorrelation(np.nan_to_num(phi), n)  # lags x voxels
    s = lagged_autocorrelation(prediction)
    quadratic = s[0] + 2 * np.einsum("kv,kv->v", rho[1:], s[1:])
    del s
    sb = lagged_autocorrelation(basis) * (basis ** 2).sum(axis=0)  # lags x basis vectors, unit norm
    trace = n - sb[0].sum() - 2 * (sb[1:].sum(axis=1) @ rho[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.all(np.isfinite(phi), axis=1), quadratic / trace, np.nan)


def fold_p_values(y: np.ndarray, prediction: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p of the held-out r per column (NaN where undefined), and the plain Pearson r.

    ``y`` and ``prediction`` are one test fold (samples x voxels), ``phi`` the voxels' AR noise
    coefficients (see :func:`noise_model`). The test removes the fold's mean and linear trend from
    both series first (a drift is no evidence of prediction, and BOLD is usually detrended, which
    shrinks its variance on short runs: without this the test would be liberal there); it refers
    r / sqrt(1 - r^2) * sqrt(df) to Student t with df = 1 / var(r) - 1 (white noise: the classical test).
    """
    n = len(y)
    scale = np.maximum(np.abs(y).max(axis=0, initial=0), np.abs(prediction).max(axis=0, initial=0)).astype(float) ** 2
    y = np.array(y, dtype=np.float64)
    prediction = np.array(prediction, dtype=np.float64)
    y -= y.mean(axis=0)
    prediction -= prediction.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.einsum("tv,tv->v", y, prediction) / np.sqrt(np.einsum("tv,tv->v", y, y) *
                                                            np.einsum("tv,tv->v", prediction, prediction))
    basis = fold_basis(n)
    for trend in basis.T[1:]:  # the first column is the mean, already removed
        y -= np.outer(trend, trend @ y)
        prediction -= np.outer(trend, trend @ prediction)
    ss_y, ss_p = np.einsum("tv,tv->v", y, y), np.einsum("tv,tv->v", prediction, prediction)
    defined = (ss_y > 1e-20 * n * scale) & (ss_p > 1e-20 * n * scale) & (scale > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        partial = np.where(defined, np.einsum("tv,tv->v", y, prediction) / np.sqrt(ss_y * ss_p), np.nan)
        del y
        df = 1 / null_variance(prediction, phi, basis) - 1
        ok = defined & (df >= MIN_DF)
        t = partial * np.sqrt(df / np.maximum(1 - partial ** 2, 1e-300))
        p = np.where(ok, stats.t.sf(np.where(ok, t, 0.0), np.where(ok, df, 1.0)), np.nan)
    return p, np.nan_to_num(r)


def cauchy_combination(p: np.ndarray) -> np.ndarray:
    """Cauchy combination (Liu & Xie 2020) over axis 0 of the finite p-values only; NaN where none is finite.

    Folds share training data: each fold's score is a sum of (test data) x (training data of another
    fold) terms and two folds share one such term, so on null data their z-scores correlate by up to
    1 / (K - 1) (0.17-0.33 measured for 5 blocks of one run, or 2-4 runs). The Cauchy combination stays
    valid under such dependence (exactly so as p -> 0, within 0.03-0.07 at p < 0.05 in bench/calibration.py).
    A Stouffer sum scaled for the worst case of that dependence (variance 2K) was measured too: too
    conservative on single runs (0.02 at p < 0.05), where folds correlate less than the bound.
    """
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    terms = np.where(finite, np.tan((0.5 - np.clip(np.where(finite, p, 0.5), SMALLEST_P, 1 - 1e-16)) * np.pi), 0.0)
    count = finite.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = terms.sum(axis=0) / count
    return np.where(count > 0, np.clip(0.5 - np.arctan(statistic) / np.pi, 0.0, 1.0), np.nan)


def fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q over the finite p-values only (NaN stays NaN)."""
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite])
    return q


def warn_missing(p: np.ndarray, what: str = "voxels") -> None:
    """Log how many p-values could not be computed (they are NaN, not 1)."""
    missing = int(np.sum(~np.isfinite(p)))
    if missing:
        log.warning("no p-value could be computed for %d of %d %s (constant data or prediction, or a test fold "
                    "under one effective degree of freedom): p and q are NaN there", missing, p.size, what)


COMPARISON_NAME = ("Williams' t test of two dependent held-out correlations sharing the data (r(y, A) vs r(y, B)), "
                   "with an effective sample size for autocorrelated noise")


def describe_comparison(alternative: str, order: int = AR_ORDER) -> str:
    """The ``Significance`` methods text of a paired model comparison."""
    sides = {"greater": "one-sided, A better than B", "less": "one-sided, A worse than B",
             "two-sided": "two-sided: twice the smaller of the two one-sided combined p-values"}[alternative]
    return (f"per outer fold, the two models' held-out predictions of the same test samples (fold mean and linear "
            f"trend removed) are compared: {COMPARISON_NAME} (Williams 1959; Steiger 1980), its sample size replaced "
            f"by 1 / var + 1, var the null variance of a correlation with the difference of the two unit "
            f"predictions under the voxel's AR({order}) noise (as for the single-model p, see "
            f"bids_encoding.models.significance); folds combined by the Cauchy combination test; {sides}; no p (NaN) "
            f"where it cannot be computed (identical or constant predictions, or under one effective df); "
            f"Benjamini-Hochberg FDR over the finite p-values")


def _detrended(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float64)
    return x - basis @ (basis.T @ x)


def fold_comparison_t(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                      phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Williams' t of r(y, A) - r(y, B) on one test fold, and its effective df (NaN where undefined).

    Both correlations share y, so their difference is tested with Williams' formula for
    dependent correlations; autocorrelation enters through the sample size, n_eff = 1 / var + 1,
    var being the null variance (:func:`null_variance`) of a correlation of the noise with the
    difference of the unit predictions: that difference is the direction the test looks along
    (white noise gives n - 1 with the fold's mean and trend removed).
    """
    n = len(y)
    basis = fold_basis(n)
    y, a, b = (_detrended(x, basis) for x in (y, pred_a, pred_b))
    ss = [np.einsum("tv,tv->v", x, x) for x in (y, a, b)]
    scale = max(float(np.max(s, initial=0)) for s in ss)
    defined = np.all([s > 1e-20 * max(scale, 1e-300) for s in ss], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        norms = [np.sqrt(s) for s in ss]
        r_a = np.einsum("tv,tv->v", y, a) / (norms[0] * norms[1])
        r_b = np.einsum("tv,tv->v", y, b) / (norms[0] * norms[2])
        r_ab = np.einsum("tv,tv->v", a, b) / (norms[1] * norms[2])
        difference = a / norms[1] - b / norms[2]
        defined &= np.einsum("tv,tv->v", difference, difference) > 1e-12  # identical predictions: no test
        n_eff = 1 / null_variance(np.where(defined, difference, 0.0), phi, basis) + 1
        det = 1 - r_a ** 2 - r_b ** 2 - r_ab ** 2 + 2 * r_a * r_b * r_ab
        mean = (r_a + r_b) / 2
        t = (r_a - r_b) * np.sqrt((n_eff - 1) * (1 + r_ab)
                                  / (2 * (n_eff - 1) / (n_eff - 3) * det + mean ** 2 * (1 - r_ab) ** 3))
    df = n_eff - 3
    ok = defined & np.isfinite(t) & (df >= MIN_DF)
    return np.where(ok, t, np.nan), np.where(ok, df, np.nan)


def comparison_p(t: np.ndarray, df: np.ndarray, alternative: str = "greater") -> np.ndarray:
    """Combined p over folds (axis 0) of per-fold comparison t's: Cauchy combination of one-sided p-values.

    Two-sided: twice the smaller of the two one-sided combinations (folds that disagree in sign
    do not add up to evidence either way).
    """
    finite = np.isfinite(t) & np.isfinite(df)
    safe_t, safe_df = np.where(finite, t, 0.0), np.where(finite, df, 1.0)
    greater = cauchy_combination(np.where(finite, stats.t.sf(safe_t, safe_df), np.nan))
    less = cauchy_combination(np.where(finite, stats.t.cdf(safe_t, safe_df), np.nan))
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    return np.minimum(1.0, 2 * np.minimum(greater, less))
