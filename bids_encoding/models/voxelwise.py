"""Cross-validated voxelwise encoding: held-out scores, split R² per feature space, significance.

The outer loop leaves one run out (or, for a single run, holds out contiguous
blocks and drops ``gap`` samples on each side of the test block from training,
so the HRF's autocorrelation does not leak). Inside each outer fold, penalties
are chosen by an inner cross-validation on the training runs only
(:mod:`.ridge`), and voxels stream through in chunks: the whole brain never has
to sit in memory twice.

Significance (:mod:`.significance`): for each held-out fold, the correlation
between prediction and data is tested against a parametric null that holds on
folds of any length, even a 12-volume block: an effective-degrees-of-freedom t
test (fold mean and trend removed) whose variance comes from the prediction's
own autocorrelation and the voxel's AR noise autocorrelation, estimated
(bias-corrected) over all of the voxel's runs rather than within the short fold. Folds share training data, so
their scores are positively dependent (about 1 / (folds - 1) on null data): the
fold p-values are combined by the Cauchy combination test, which stays valid
under such dependence, and then corrected with Benjamini-Hochberg FDR. Where no
p-value can be computed it is NaN (with a warning), never 1, and the FDR is
taken over the finite p-values only. (The former circular-shift null,
:func:`shift_null_p`, had no shifts to use on short folds and returned 1.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import os
import resource
import sys
import warnings

import numpy as np
from scipy import stats

from ..errors import UserError
from ..progress import Step
from . import significance
from .standardize import zscore
from .ridge import (DEFAULT_ALPHAS, band_candidates, inner_folds, r2_score_columns, ridge_memory, ridge_weights,
                    solve_ridge_path)

GB = 2 ** 30
MIN_CHUNK = 100  # voxels: smaller chunks would spend their time in Python rather than in matrix products


@dataclass(frozen=True)
class EncodingScores:
    """Held-out scores per voxel, averaged over outer folds."""

    r2: np.ndarray
    r: np.ndarray
    alpha: np.ndarray
    p: np.ndarray
    q: np.ndarray
    n_folds: int
    cv: str
    split_r2: np.ndarray | None = None  # bands x voxels
    gammas: np.ndarray | None = None  # voxels x bands
    methods: dict = field(default_factory=dict)
    predictions: np.ndarray | None = None  # samples x voxels: each sample's held-out prediction (keep_predictions)
    fold_r2: np.ndarray | None = None  # folds x voxels: each outer fold's held-out R² (r2 is their mean)


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
    return r2_score_columns(y_true, y_pred)


def pearson_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per column."""
    return (zscore(a) * zscore(b)).mean(axis=0)


def circular_shift_r(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """r between y and pred circularly shifted by every lag (lags x columns); row 0 is the plain r."""
    n = len(y)
    spectrum = np.fft.rfft(zscore(y), axis=0) * np.conj(np.fft.rfft(zscore(pred), axis=0))
    return np.fft.irfft(spectrum, n=n, axis=0) / n


def shift_null_p(shifted: np.ndarray, min_shift: int) -> np.ndarray:
    """One-sided p of the plain r (row 0) against the spread of r over shifts of at least ``min_shift``."""
    usable = shifted[min_shift:len(shifted) - min_shift + 1]
    sd = usable.std(axis=0) if len(usable) > 1 else np.zeros(shifted.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(np.where(sd > 0, stats.norm.sf(shifted[0] / sd), 1.0), nan=1.0)


def cross_validated_encoding(X_runs: list[np.ndarray], Y_runs: list[np.ndarray], **options) -> EncodingScores:
    """Outer cross-validation of (banded) ridge for every voxel, from per-run arrays (see :func:`encode_runs`)."""
    if len(X_runs) != len(Y_runs) or any(len(x) != len(y) for x, y in zip(X_runs, Y_runs)):
        raise ValueError("X_runs and Y_runs must hold the same runs with the same number of samples")
    return encode_runs(np.concatenate(X_runs), np.concatenate(Y_runs), [len(x) for x in X_runs], **options)


def reduce_bands(X: np.ndarray, train: np.ndarray, bands: list[int], blocks: list[int],
                 n_components: int) -> tuple[np.ndarray, list[int]]:
    """Each band projected on its first principal components, fitted on the training rows only.

    A band made of ``blocks`` delayed copies of the same features (an FIR design) is
    reduced by one projection, fitted on its first copy and applied to every copy, so the
    delays keep their meaning. Bands with ``blocks == 0`` (confounds) or already narrow
    enough are left as they are.
    """
    projections = band_projections(X, train, bands, blocks, n_components)
    return project_bands(X, bands, blocks, projections), reduced_widths(bands, blocks, n_components)


def band_projections(X: np.ndarray, train: np.ndarray, bands: list[int], blocks: list[int],
                     n_components: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per band, the ``(mean, components)`` (features x components) that :func:`reduce_bands` applies to each of
    its delayed copies, fitted on the training rows of its first copy; None for a band left as it is."""
    projections, start = [], 0
    for width, n_blocks, new_width in zip(bands, blocks, reduced_widths(bands, blocks, n_components)):
        if new_width == width:
            projections.append(None)
        else:
            first = X[train, start:start + width // n_blocks].astype(np.float64)
            mean = first.mean(axis=0)
            projections.append((mean, np.linalg.svd(first - mean, full_matrices=False)[2][:n_components].T))
        start += width
    return projections


def project_bands(X: np.ndarray, bands: list[int], blocks: list[int],
                  projections: list[tuple[np.ndarray, np.ndarray] | None]) -> np.ndarray:
    """X with each band's delayed copies projected by :func:`band_projections`' ``(mean, components)``."""
    reduced, start = [], 0
    for width, n_blocks, projection in zip(bands, blocks, projections):
        band = X[:, start:start + width]
        start += width
        if projection is None:
            reduced.append(band)
            continue
        mean, components = projection
        block = width // n_blocks
        reduced += [(band[:, b * block:(b + 1) * block] - mean) @ components for b in range(n_blocks)]
    return np.hstack(reduced).astype(np.float32)


def refit_weights(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, pca: int = 0, blocks: int = 1,
                  backend: str = "numpy", chunk_size: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """A single-band model refitted on all its samples with each voxel's penalty: ``(weights, intercept)``.

    The prediction of a design ``X`` is ``X @ weights + intercept``. Without ``pca`` the intercept is 0 (designs
    are z-scored). With ``pca``, the principal components are fitted on all of ``X`` (per delay: ``blocks`` copies,
    as :func:`reduce_bands`), the ridge is solved on the components, and the weights are mapped back to the
    original features (``components @ w``), the projection's centring becoming the intercept: the model applies
    to designs of the original width.
    """
    X = np.asarray(X, dtype=np.float32)
    if not pca:
        return ridge_weights(X, Y, alphas, backend, chunk_size), np.zeros(Y.shape[1], dtype=np.float32)
    (projection,) = band_projections(X, np.arange(len(X)), [X.shape[1]], [blocks], pca)
    if projection is None:
        return ridge_weights(X, Y, alphas, backend, chunk_size), np.zeros(Y.shape[1], dtype=np.float32)
    reduced = ridge_weights(project_bands(X, [X.shape[1]], [blocks], [projection]), Y, alphas, backend, chunk_size)
    mean, components = projection
    width, k = components.shape
    weights = np.zeros((X.shape[1], Y.shape[1]), dtype=np.float32)
    intercept = np.zeros(Y.shape[1], dtype=np.float64)
    for b in range(blocks):
        weights[b * width:(b + 1) * width] = components @ reduced[b * k:(b + 1) * k]
        intercept -= mean @ weights[b * width:(b + 1) * width]
    return weights, intercept.astype(np.float32)


def reduced_widths(bands: list[int], blocks: list[int], n_components: int) -> list[int]:
    """Each band's width after :func:`reduce_bands` (known before any data is reduced)."""
    if not n_components:
        return list(bands)
    return [width if n_blocks == 0 or width // n_blocks <= n_components else n_components * n_blocks
            for width, n_blocks in zip(bands, blocks)]


def resident_bytes() -> int:
    """This process's resident memory now (from /proc on Linux; elsewhere its peak so far, an upper bound)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def chunk_for_budget(budget: int, fixed: int, per_voxel: int, n_voxels: int, chunk_size: int, mem_gb: float) -> int:
    """The largest voxel chunk (at most ``chunk_size``) whose fit stays within ``budget`` bytes, or a UserError."""
    fits = (budget - fixed) // per_voxel
    smallest = min(MIN_CHUNK, n_voxels)
    if fits < smallest:
        needed = mem_gb + (fixed + smallest * per_voxel - budget) / GB
        raise UserError(
            f"--mem-gb {mem_gb:g} is too small for this encoding model: the data already held and the model's "
            f"decompositions leave no room for a chunk of {smallest} voxels",
            fix=f"Give --mem-gb {np.ceil(needed * 10) / 10:.1f} or more (or fewer features, e.g. --feature-pca)")
    return int(max(smallest, min(chunk_size, fits, n_voxels)))


def encode_runs(X: np.ndarray, Y: np.ndarray, run_lengths: list[int], bands: list[int] | None = None,
                alphas=DEFAULT_ALPHAS, backend: str = "numpy", chunk_size: int = 10000, n_candidates: int = 12,
                inner_cv: int = 5, gap: int = 5, min_shift: int | None = None, seed: int = 0, pca: int = 0,
                band_blocks: list[int] | None = None, mem_gb: float | None = None,
                label: str = "ridge fit", keep_predictions: bool = False) -> EncodingScores:
    """Outer cross-validation of (banded) ridge for every voxel (column of Y); runs are consecutive rows.

    Y is read chunk by chunk and never copied whole. With ``pca > 0`` every band is reduced
    to that many components per delay within each outer fold (see :func:`reduce_bands`).
    With ``mem_gb``, voxel chunks are sized so that this process's resident memory (what it
    already holds, the data included, plus the fit's estimated needs) stays within that many
    GiB; a cap too small for a chunk of ``MIN_CHUNK`` voxels is a :class:`UserError`. Chunking
    does not change the results. ``label`` names the fit in progress lines. ``keep_predictions``
    keeps every sample's held-out prediction (one more array the size of Y) for paired
    comparisons (:func:`compare_models`). ``min_shift`` is
    deprecated and ignored (it belonged to the circular-shift null, see :mod:`.significance`).
    """
    if min_shift is not None:
        warnings.warn("min_shift is ignored: significance no longer uses circular shifts", DeprecationWarning,
                      stacklevel=2)
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if len(X) != len(Y) or sum(run_lengths) != len(Y):
        raise ValueError(f"X ({len(X)} rows), Y ({len(Y)} rows) and run lengths ({sum(run_lengths)}) disagree")
    run_of = np.repeat(np.arange(len(run_lengths)), run_lengths)
    bands = list(bands) if bands else [X.shape[1]]
    band_blocks = list(band_blocks) if band_blocks else [1] * len(bands)
    gammas = band_candidates(len(bands), n_candidates, seed)
    folds, cv = outer_folds(list(run_lengths), gap=gap)
    X_all = X
    n_vox = Y.shape[1]
    banded = len(bands) > 1
    n_features = sum(reduced_widths(bands, band_blocks, pca))
    held = resident_bytes()
    chunks = []
    for train, test in folds:
        inner = inner_folds(len(train), run_of[train], inner_cv)
        fixed, per_voxel = ridge_memory(len(train), n_features, inner, len(alphas), len(gammas),
                                        n_predict=len(test), return_coef=banded)
        if mem_gb is None:
            chunks.append(chunk_size)
            continue
        results = 8 * len(folds) * n_vox * (4 + 2 * len(bands))  # the per-fold score arrays below
        results += 8 * n_vox * (3 * len(folds) + 4)  # combining them after the loop (Cauchy's temporaries, means)
        results += 4 * Y.size if keep_predictions else 0  # every held-out prediction, kept for a paired comparison
        data = 4 * (len(train) + len(test) + (len(X_all) if pca else 0)) * n_features  # X[train], X[test], reduced X
        per_voxel += 128 * len(test) + (16 * len(bands) * len(test) + 4 * n_features if banded else 0)  # scoring a chunk
        chunks.append(chunk_for_budget(int(mem_gb * GB) - held - results - data, fixed, per_voxel, n_vox, chunk_size,
                                       mem_gb))
    r2, r, fold_p = (np.ones((len(folds), n_vox)) for _ in range(3))
    log_alpha = np.zeros((len(folds), n_vox))
    kept = np.zeros(Y.shape, dtype=np.float32) if keep_predictions else None
    split = np.zeros((len(folds), len(bands), n_vox))
    best_gammas = np.zeros((len(folds), n_vox, len(bands)))
    total = sum(-(-n_vox // size) for size in chunks)
    noise_ar = significance.noise_model(X_all, Y, list(run_lengths), chunk_size=min(chunks))  # voxels x AR order
    with Step(f"{label} ({n_vox} voxels x {n_features} features, {len(folds)} folds, chunks of {min(chunks)} voxels)",
              total=total, unit="chunks") as progress:
        for f, (train, test) in enumerate(folds):
            X, widths = reduce_bands(X_all, train, bands, band_blocks, pca) if pca else (X_all, bands)
            band_of = np.repeat(np.arange(len(bands)), widths)
            scales = np.sqrt(gammas)[:, band_of]
            inner = inner_folds(len(train), run_of[train], inner_cv)
            for chunk in solve_ridge_path(X[train], Y, inner, alphas, scales, backend, chunks[f], rows=train,
                                          X_predict=None if banded else X[test], return_coef=banded):
                y_test = Y[test, chunk.voxels]
                if banded:
                    parts = np.stack([X[np.ix_(test, band_of == b)] @ chunk.coef[band_of == b] for b in range(len(bands))])
                    prediction = parts.sum(0)
                else:
                    prediction = chunk.prediction
                r2[f, chunk.voxels] = r2_score_columns(y_test, prediction)
                if kept is not None:
                    kept[test, chunk.voxels] = prediction
                fold_p[f, chunk.voxels], r[f, chunk.voxels] = significance.fold_p_values(
                    y_test, prediction, noise_ar[chunk.voxels])
                log_alpha[f, chunk.voxels] = np.log10(chunk.best_alpha)
                best_gammas[f, chunk.voxels] = gammas[chunk.best_candidate]
                if banded:
                    split[f, :, chunk.voxels] = _split_r2(y_test, parts)
                    del parts
                del chunk, y_test, prediction  # before the next chunk is computed
                progress.update()
    r_mean = r.mean(axis=0)
    p = significance.cauchy_combination(fold_p)  # over each voxel's folds with a p-value; NaN if none has
    significance.warn_missing(p)
    return EncodingScores(
        r2=r2.mean(axis=0), r=r_mean, alpha=10 ** log_alpha.mean(axis=0), p=p, q=significance.fdr(p),
        n_folds=len(folds), cv=cv,
        split_r2=split.mean(axis=0) if len(bands) > 1 else None,
        gammas=best_gammas.mean(axis=0) if len(bands) > 1 else None,
        predictions=kept, fold_r2=r2,
        methods={
            "InnerCrossValidation": "leave-one-run-out within the training runs, or contiguous blocks for one run",
            "PenaltySelection": "least squared error over inner folds",
            "Significance": significance.describe(),
            "SignificanceNull": significance.NAME,
            "SignificanceResolution": significance.RESOLUTION,
            "Backend": backend,
            "FeaturePCA": (f"{pca} components per feature space (and delay), fitted within each outer fold on the "
                           "training samples' features only") if pca else None,
        },
    )


def compare_models(Y: np.ndarray, a: EncodingScores, b: EncodingScores, X: np.ndarray, run_lengths: list[int],
                   alternative: str = "greater", gap: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Paired comparison of two models fitted with ``keep_predictions`` on the same data: delta R² and its p.

    Both models used the same outer folds (they depend on the run lengths only), so their
    fold-averaged R² differ by the average of the per-fold differences. The p-value compares
    the two held-out predictions of the same test samples fold by fold
    (:func:`.significance.fold_comparison_t`) under a noise model fitted on both models'
    features ``X``, and combines the folds (:func:`.significance.comparison_p`).
    """
    if a.predictions is None or b.predictions is None:
        raise ValueError("compare_models needs both models fitted with keep_predictions=True")
    folds, _ = outer_folds(list(run_lengths), gap=gap)
    phi = significance.noise_model(np.asarray(X, dtype=np.float32), Y, list(run_lengths))
    t, df = (np.full((len(folds), Y.shape[1]), np.nan) for _ in range(2))
    for f, (_, test) in enumerate(folds):
        t[f], df[f] = significance.fold_comparison_t(Y[test], a.predictions[test], b.predictions[test], phi)
    p = significance.comparison_p(t, df, alternative)
    significance.warn_missing(p)
    return a.r2 - b.r2, p


def _split_r2(y_true: np.ndarray, parts: np.ndarray) -> np.ndarray:
    from .ridge import split_r2_score

    return split_r2_score(y_true, parts)
