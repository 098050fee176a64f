"""Layer sweeps: which layer of a feature extractor predicts each location best, and whether regions differ.

Numerics only. The participant level fits one encoding model per layer; from the per-fold
held-out R² of those fits come the best layer per location (:func:`best_layer`), each
region's R² by layer with a confidence interval across outer folds (:func:`region_layer_r2`;
folds share training data, so this interval is approximate, somewhat too narrow), and at
the group level the interval across subjects (:func:`mean_ci`) and a test of whether the
layer that predicts best differs between regions (:func:`layer_difference_test`), on each
subject's R²-weighted mean layer per region (:func:`preferred_layer`).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def best_layer(r2: np.ndarray, layers: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The layer (from ``layers``) with the highest R² per location, and that R²; ``r2`` is layers x locations.

    A location whose R² is NaN in every layer gets NaN for both; ties go to the first (shallowest listed) layer.
    """
    r2 = np.asarray(r2, dtype=np.float64)
    finite = np.isfinite(r2).any(axis=0)
    index = np.argmax(np.where(np.isfinite(r2), r2, -np.inf), axis=0)
    layer = np.where(finite, np.asarray(layers, dtype=np.float64)[index], np.nan)
    best = np.where(finite, np.take_along_axis(r2, index[None], axis=0)[0], np.nan)
    return layer, best


def mean_ci(values: np.ndarray, confidence: float = CONFIDENCE, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean along ``axis`` and its t-based confidence interval (mean ± t(n-1) x sd / sqrt(n)); NaN bounds for n < 2."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def region_layer_r2(fold_r2: np.ndarray, labels: np.ndarray, confidence: float = CONFIDENCE) -> dict[int, dict]:
    """Per region (label > 0) of ``labels`` (locations): each layer's R² averaged over the region's locations, with
    its confidence interval across outer folds. ``fold_r2`` is layers x folds x locations.

    Returns ``{label: {"n_locations", "fold_r2" (layers x folds), "mean", "ci_low", "ci_high"}}``.
    """
    fold_r2 = np.asarray(fold_r2, dtype=np.float64)
    out = {}
    for label in sorted(set(np.unique(labels).tolist()) - {0}):
        inside = labels == label
        per_fold = fold_r2[:, :, inside].mean(axis=2)  # layers x folds
        mean, low, high = mean_ci(per_fold, confidence, axis=1)
        out[int(label)] = {"n_locations": int(inside.sum()), "fold_r2": per_fold, "mean": mean, "ci_low": low,
                           "ci_high": high}
    return out


def preferred_layer(r2: np.ndarray, layers: list[int]) -> np.ndarray:
    """The R²-weighted mean layer along the last axis (weights max(R², 0)); NaN where no layer has R² > 0.

    A continuous summary of where in depth a region is predicted: less noisy across subjects than the
    arg-max layer, which jumps between neighbouring layers of similar R².
    """
    weights = np.clip(np.nan_to_num(np.asarray(r2, dtype=np.float64), nan=0.0), 0, None)
    total = weights.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * np.asarray(layers, dtype=np.float64)).sum(axis=-1) / total, np.nan)


def layer_difference_test(preferred: np.ndarray) -> list[dict]:
    """Does the preferred layer differ between regions? ``preferred`` is subjects x regions (no NaN).

    Two regions: a paired t-test across subjects (two-sided). More: Friedman's test over the regions
    (ranks within each subject; chi-square approximation, rough for few subjects), then a paired t-test
    of every pair (two-sided, uncorrected; Holm-adjusted p in ``p_holm``). Each result is a dict with
    ``regions`` (column indices), ``test``, ``statistic``, ``df``, ``p_value``, ``mean_difference``
    (second region minus first; NaN for Friedman) and ``p_holm``.
    """
    preferred = np.asarray(preferred, dtype=np.float64)
    n_subjects, n_regions = preferred.shape
    if n_regions < 2 or n_subjects < 2:
        return []
    pairs = []
    for a, b in combinations(range(n_regions), 2):
        difference = preferred[:, b] - preferred[:, a]
        if np.allclose(difference, difference[0]):  # no variance: no t (a constant nonzero shift is not tested)
            t, p = 0.0, 1.0
        else:
            t, p = stats.ttest_rel(preferred[:, b], preferred[:, a])
        pairs.append({"regions": (a, b), "test": "paired t", "statistic": float(t), "df": n_subjects - 1,
                      "p_value": float(p), "mean_difference": float(difference.mean())})
    if n_regions == 2:
        return [{**pairs[0], "p_holm": pairs[0]["p_value"]}]
    holm = _holm([pair["p_value"] for pair in pairs])
    pairs = [{**pair, "p_holm": float(h)} for pair, h in zip(pairs, holm)]
    if np.ptp(preferred, axis=1).max() == 0:
        statistic, p = 0.0, 1.0
    else:
        statistic, p = stats.friedmanchisquare(*preferred.T)
    omnibus = {"regions": tuple(range(n_regions)), "test": "Friedman", "statistic": float(statistic),
               "df": n_regions - 1, "p_value": float(p), "mean_difference": float("nan"), "p_holm": float(p)}
    return [omnibus, *pairs]


def _holm(p: list[float]) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error)."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    out = np.empty_like(p)
    out[order] = adjusted
    return out
