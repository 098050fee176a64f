"""Representational similarity analysis: dissimilarity matrices, their comparison, permutation and noise ceiling.

Numbers only (no BIDS, no Nipype). A representational dissimilarity matrix (RDM) is a
symmetric conditions x conditions array with a zero diagonal; comparisons use its
upper triangle (:func:`upper`), as rsatoolbox stores it.

* Brain RDMs are crossvalidated across runs (Walther et al. 2016), so that noise,
  which is independent between runs, adds no bias: ``crossnobis`` is the squared
  Euclidean distance of two conditions' patterns, the difference taken in one run
  times the difference in another (per voxel, without noise whitening: rsatoolbox's
  crossnobis with an identity noise precision); ``correlation`` is one minus the
  correlation of a condition's pattern in one run with the other condition's in
  another. Both average over every pair of runs.
* Model RDMs are the correlation distance of each condition's features
  (:func:`correlation_rdm`).
* :data:`COMPARISONS`: Spearman's rho, Kendall's tau-a (for models with many tied
  dissimilarities, Nili et al. 2014) and the whitened Pearson correlation of
  Diedrichsen et al. (2021) (rsatoolbox ``corr_cov``).
* :func:`permutation_test` permutes the conditions of one RDM (rows and columns
  together), the exchangeable unit under the null of no shared geometry.
* :func:`searchlight_rsa`: the same RDMs in a sphere around every voxel, many spheres at
  once (batched matrix products), each compared with every model; its permutation p-values
  permute the model's conditions instead, the same null, scored for every sphere by one
  matrix product per batch of permutations.
* :func:`noise_ceiling`: across subjects' RDMs, Nili et al.'s (2014) bounds on the
  comparison a true model could reach.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist, squareform

from ..progress import track
from ..spheres import as_spheres

DISTANCES = {
    "crossnobis": "crossvalidated squared Euclidean distance per voxel (crossnobis with an identity noise "
                  "precision): the difference of two conditions' mean patterns in one run times their difference in "
                  "another, averaged over every pair of runs (Walther et al. 2016)",
    "correlation": "crossvalidated correlation distance: 1 - Pearson r of one condition's mean pattern in one run "
                   "and the other's in another run, averaged over both orders and every pair of runs",
}
COMPARISONS = {
    "spearman": "Spearman's rank correlation of the RDMs' upper triangles",
    "tau-a": "Kendall's tau-a of the RDMs' upper triangles (ties count as neither concordant nor discordant)",
    "whitened": "whitened Pearson correlation of the RDMs' upper triangles (Diedrichsen et al. 2021; rsatoolbox "
                "corr_cov: covariance of the distances under independent, equal noise)",
}
PERMUTATION_DESCRIPTION = ("the brain RDM's conditions permuted (rows and columns together); p = (1 + #{null >= "
                           "observed}) / (1 + n_permutations), one-sided")
NOISE_CEILING_DESCRIPTION = ("across subjects (Nili et al. 2014): upper bound, the mean comparison of each subject's "
                             "RDM with the mean RDM of all subjects; lower bound, with the mean RDM of the others")


def upper(rdm: np.ndarray) -> np.ndarray:
    """The upper triangle of a square RDM, row by row (rsatoolbox's and scipy's ``squareform`` order)."""
    rdm = np.asarray(rdm, dtype=float)
    return rdm[np.triu_indices(len(rdm), k=1)]


def condition_patterns(X: np.ndarray, conditions: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each run's mean pattern of each condition: runs x conditions x voxels (NaN where a run lacks a condition),
    and the conditions in sorted order."""
    labels = sorted(set(map(str, conditions)))
    conditions = np.asarray(conditions).astype(str)
    run_ids = np.unique(runs)
    patterns = np.full((len(run_ids), len(labels), X.shape[1]), np.nan)
    for r, run in enumerate(run_ids):
        for c, label in enumerate(labels):
            rows = (runs == run) & (conditions == label)
            if rows.any():
                patterns[r, c] = X[rows].mean(axis=0)
    return patterns, labels


def _run_pairs(patterns: np.ndarray, pair: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """The mean over every pair of runs of ``pair(A, B)`` (... x conditions x conditions), where both runs hold both
    conditions; NaN where no pair of runs does. ``patterns``: ... x runs x conditions x voxels, leading axes (e.g.
    searchlight spheres) computed at once; which conditions a run holds is read from the first voxel of the first."""
    n_runs, n_conditions = patterns.shape[-3:-1]
    if n_runs < 2:
        raise ValueError("a crossvalidated RDM needs at least two runs")
    present = ~np.isnan(patterns.reshape(-1, n_runs, n_conditions, patterns.shape[-1])[0, :, :, 0])
    total = np.zeros(patterns.shape[:-3] + (n_conditions, n_conditions))
    count = np.zeros((n_conditions, n_conditions))
    patterns = np.nan_to_num(patterns)  # once for every pair (a run's missing conditions are NaN)
    for a in range(n_runs):
        for b in range(a + 1, n_runs):
            both = np.outer(present[a] & present[b], present[a] & present[b])
            value = pair(patterns[..., a, :, :], patterns[..., b, :, :])
            total += np.where(both, value, 0.0)
            count += both
    with np.errstate(invalid="ignore"):
        rdm = total / count
    diagonal = np.arange(n_conditions)
    rdm[..., diagonal, diagonal] = 0.0
    return rdm


def _voxel_counts(patterns: np.ndarray, n_voxels: np.ndarray | None) -> np.ndarray:
    """Voxels of each pattern set (... of ``patterns``' leading axes) as a broadcastable array: every column, or
    ``n_voxels`` where padded columns (zeros) follow the real ones."""
    counts = np.full(patterns.shape[:-3], patterns.shape[-1]) if n_voxels is None else np.asarray(n_voxels)
    return counts[..., None, None].astype(float)


def crossnobis_rdm(patterns: np.ndarray, n_voxels: np.ndarray | None = None) -> np.ndarray:
    """Crossvalidated squared Euclidean distances per voxel (see :data:`DISTANCES`) of ... x runs x conditions x
    voxels; ``n_voxels``: each pattern set's real voxels when the rest are zero padding (searchlight spheres)."""
    counts = _voxel_counts(patterns, n_voxels)

    def pair(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        G = A @ np.swapaxes(B, -1, -2)  # (a_i - a_j).(b_i - b_j) = G_ii + G_jj - G_ij - G_ji
        d = np.diagonal(G, axis1=-2, axis2=-1)
        return (d[..., :, None] + d[..., None, :] - G - np.swapaxes(G, -1, -2)) / counts

    return _run_pairs(patterns, pair)


def crossrun_correlation_rdm(patterns: np.ndarray, n_voxels: np.ndarray | None = None) -> np.ndarray:
    """Crossvalidated correlation distances (see :data:`DISTANCES`) of ... x runs x conditions x voxels;
    ``n_voxels`` as in :func:`crossnobis_rdm`."""
    counts = _voxel_counts(patterns, n_voxels)
    padded = None if n_voxels is None else np.arange(patterns.shape[-1]) < counts  # ... x 1 x voxels

    def pair(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        r = _standardized(A, counts, padded) @ np.swapaxes(_standardized(B, counts, padded), -1, -2) / counts
        return 1.0 - (r + np.swapaxes(r, -1, -2)) / 2

    return _run_pairs(patterns, pair)


def _standardized(A: np.ndarray, counts: np.ndarray, real: np.ndarray | None = None) -> np.ndarray:
    """Each pattern (last axis) minus its mean over its ``counts`` real voxels, over its standard deviation; 0 in
    the padding (``real`` False)."""
    centred = A - A.sum(axis=-1, keepdims=True) / counts
    if real is not None:
        centred = centred * real
    sd = np.sqrt((centred * centred).sum(axis=-1, keepdims=True) / counts)
    return centred / np.where(sd > 0, sd, np.inf)


BRAIN_RDMS = {"crossnobis": crossnobis_rdm, "correlation": crossrun_correlation_rdm}


def brain_rdm(X: np.ndarray, conditions: np.ndarray, runs: np.ndarray,
              distance: str = "crossnobis") -> tuple[np.ndarray, list[str]]:
    """The crossvalidated RDM of samples x voxels responses (``distance`` of :data:`DISTANCES`), and its
    conditions' labels (sorted)."""
    patterns, labels = condition_patterns(np.asarray(X, dtype=float), conditions, runs)
    return BRAIN_RDMS[distance](patterns), labels


def correlation_rdm(features: np.ndarray) -> np.ndarray:
    """1 - Pearson r between the rows (conditions x features) of a model: its RDM."""
    return squareform(pdist(np.asarray(features, dtype=float), metric="correlation"), checks=False)


# --------------------------------------------------------------------------- comparison


def _pearson_rows(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``A`` with ``b``."""
    A = A - A.mean(axis=1, keepdims=True)
    b = b - b.mean()
    denominator = np.sqrt((A * A).sum(axis=1) * (b @ b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, A @ b / denominator, 0.0)


def spearman(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``A`` with ``b``: Pearson r of their ranks (mid-ranks for ties)."""
    return _pearson_rows(stats.rankdata(A, axis=1), stats.rankdata(b))


def _tied_pairs(values: np.ndarray) -> int:
    _, counts = np.unique(values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


SIGN_PRODUCTS = 2_000_000  # tau-a of RDMs with up to this many pairs of dissimilarities: sign products, batched
SIGN_PRODUCT_PAIRS = 50_000
"""Above this many pairs of dissimilarities scipy's tau-b per row is faster than sign products (measured: 40
conditions, 303,810 pairs, 0.75 against 5 ms a row), which matters for searchlights' thousands of rows."""


def tau_a(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-a of each row of ``A`` with ``b``: (concordant - discordant pairs) / all pairs.

    Small RDMs sum the products of the pairs' signs, many rows at once; larger ones rescale scipy's
    O(n log n) tau-b, which divides by the geometric mean of each vector's untied pairs instead.
    """
    n = A.shape[1]
    n0 = n * (n - 1) / 2
    if n0 <= min(SIGN_PRODUCTS, SIGN_PRODUCT_PAIRS):
        i, j = np.triu_indices(n, k=1)
        signs = np.sign(b[i] - b[j])
        step = max(1, SIGN_PRODUCTS // max(len(i), 1))
        return np.concatenate([np.sign(A[k:k + step, i] - A[k:k + step, j]) @ signs / n0
                               for k in range(0, len(A), step)])
    scores = []
    for a in A:
        tau_b = stats.kendalltau(a, b, variant="b").statistic
        # a constant vector has no concordant or discordant pair
        scores.append(0.0 if not np.isfinite(tau_b) else
                      tau_b * np.sqrt((n0 - _tied_pairs(a)) * (n0 - _tied_pairs(b))) / n0)
    return np.asarray(scores)


@functools.lru_cache(maxsize=8)
def _whitening(n_conditions: int) -> np.ndarray:
    """V^-1 for the distances of ``n_conditions`` conditions: V = (C C')∘(C C'), C the pairwise contrasts
    (Diedrichsen et al. 2021, eq. 5 with independent, equal noise; rsatoolbox ``_get_v``)."""
    i, j = np.triu_indices(n_conditions, k=1)
    C = np.zeros((len(i), n_conditions))
    C[np.arange(len(i)), i], C[np.arange(len(i)), j] = 1.0, -1.0
    xi = C @ C.T
    return np.linalg.inv(xi * xi)


def _n_conditions(n_pairs: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs:
        raise ValueError(f"{n_pairs} is not the length of an RDM's upper triangle")
    return n


def whitened(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The whitened Pearson r (rsatoolbox ``corr_cov``) of each row of ``A`` with ``b``: centred vectors, inner
    products through V^-1."""
    W = _whitening(_n_conditions(len(b)))
    A = A - A.mean(axis=1, keepdims=True)
    Wb = W @ (b - b.mean())
    denominator = np.sqrt(np.einsum("ij,ij->i", A @ W, A) * ((b - b.mean()) @ Wb))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, A @ Wb / denominator, 0.0)


COMPARE = {"spearman": spearman, "tau-a": tau_a, "whitened": whitened}
"""Each comparison of :data:`COMPARISONS`, of many RDM vectors (rows) with one: permutations are scored in batches."""


def compare(a: np.ndarray, b: np.ndarray, method: str = "spearman") -> float:
    """Similarity of two RDMs (square, or their upper triangles) by ``method`` of :data:`COMPARISONS`."""
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = (upper(x) if x.ndim == 2 else x for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"RDMs of different sizes ({len(a)} and {len(b)} dissimilarities)")
    return float(COMPARE[method](a[None], b)[0])


def permutation_test(brain: np.ndarray, model: np.ndarray, method: str = "spearman", n_permutations: int = 1000,
                     seed: int = 0, batch: int = 100) -> tuple[float, float | None]:
    """The comparison of two square RDMs and its one-sided p-value from permuting the conditions of ``brain``
    (None without permutations)."""
    brain, model = np.asarray(brain, dtype=float), np.asarray(model, dtype=float)
    observed = compare(brain, model, method)
    if not n_permutations:
        return observed, None
    rng = np.random.default_rng(seed)
    target = upper(model)
    rows, columns = np.triu_indices(len(brain), k=1)
    exceed, left = 0, int(n_permutations)
    while left:
        orders = np.stack([rng.permutation(len(brain)) for _ in range(min(batch, left))])
        null = COMPARE[method](brain[orders[:, rows], orders[:, columns]], target)
        exceed += int((null >= observed - 1e-12).sum())
        left -= len(orders)
    return observed, (1 + exceed) / (1 + int(n_permutations))


def noise_ceiling(rdms: np.ndarray, method: str = "spearman") -> tuple[float, float]:
    """Lower and upper bounds (see :data:`NOISE_CEILING_DESCRIPTION`) of subjects x conditions x conditions RDMs."""
    vectors = np.stack([upper(r) for r in rdms])
    if len(vectors) < 2:
        raise ValueError("a noise ceiling across subjects needs at least two subjects")
    mean = vectors.mean(axis=0)
    upper_bound = np.mean(COMPARE[method](vectors, mean))
    lower_bound = np.mean([compare(v, np.delete(vectors, s, axis=0).mean(axis=0), method)
                           for s, v in enumerate(vectors)])
    return float(lower_bound), float(upper_bound)


# --------------------------------------------------------------------------- searchlight

SEARCHLIGHT_DESCRIPTION = ("searchlight RSA: the crossvalidated RDM of the conditions' patterns on the voxels of a "
                           "sphere centred on each voxel (the region RDMs' distance), compared with the model's RDM "
                           "(0 where not computed)")
LINEAR_COMPARISONS = ("spearman", "whitened")
"""Comparisons that are a product of a brain-side and a model-side transform, so that the permutation p-values of
every sphere are matrix products; tau-a is not (no p-map for it)."""


def _linear_forms(method: str, vectors: np.ndarray, side: str) -> np.ndarray:
    """Rows such that ``compare(a, b) = brain_form(a) @ model_form(b)`` for a comparison of
    :data:`LINEAR_COMPARISONS` (``side``: "brain" or "model"); zero rows where the comparison is 0 (constant)."""
    if method == "spearman":
        vectors = stats.rankdata(vectors, axis=1)
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    W = _whitening(_n_conditions(vectors.shape[1])) if method == "whitened" else None
    weighted = centred if W is None else centred @ W
    norm = np.sqrt(np.einsum("ij,ij->i", weighted, centred))
    form = centred if side == "brain" else weighted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm[:, None] > 0, form / norm[:, None], 0.0)


def permuted_models(model: np.ndarray, n_permutations: int, seed: int = 0) -> np.ndarray:
    """``n_permutations`` upper triangles of a square model RDM with its conditions permuted: the inverse of each
    permutation :func:`permutation_test` applies to the brain RDM with the same seed (the same null)."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(model)) for _ in range(int(n_permutations))]
    rows, columns = np.triu_indices(len(model), k=1)
    inverse = np.argsort(np.asarray(orders).reshape(-1, len(model)), axis=1)
    return np.asarray(model, dtype=float)[inverse[:, rows], inverse[:, columns]]


def searchlight_rsa(patterns: np.ndarray, mask: Any, models: dict[str, np.ndarray], *, distance: str = "crossnobis",
                    method: str = "spearman", radius: float = 8.0, process_mask: np.ndarray | None = None,
                    n_permutations: int = 0, seed: int = 0, memory_mb: float = 256.0
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Each model's comparison with the brain RDM of a sphere around each voxel, and its permutation p-value.

    Parameters
    ----------
    patterns : runs x conditions x voxels of ``mask`` (:func:`condition_patterns`).
    mask : the neighbourhoods (:class:`.searchlight.VoxelSpheres` or ``GraphSpheres``), or the brain mask image,
        whose voxels within ``radius`` mm form each sphere.
    models : square model RDMs, their conditions in the order of ``patterns``.
    distance, method : of :data:`DISTANCES` and :data:`COMPARISONS`, as for region RDMs.
    process_mask : boolean over the mask's voxels, the sphere centres (default: all).
    n_permutations : permutations of the conditions for the p-values (0, or ``method`` tau-a: none).
    memory_mb : rough bound on the working memory of one block of spheres.

    Returns
    -------
    Per model, the scores per mask voxel (float32, 0 where not computed), and the one-sided p-values (1 where not
    computed), or None without permutations. A sphere's values equal :func:`brain_rdm` and
    :func:`permutation_test` on its voxels (the unit tests check it).
    """
    if not radius > 0:
        raise ValueError(f"the searchlight radius must be positive, not {radius}")
    patterns = np.asarray(patterns, dtype=float)
    n_runs, n_conditions, n_voxels = patterns.shape
    spheres = as_spheres(mask, radius)
    if spheres.n_locations != n_voxels:
        raise ValueError(f"the patterns have {n_voxels} voxels but the mask {spheres.n_locations}")
    seeds = np.flatnonzero(np.ones(n_voxels, bool) if process_mask is None else np.asarray(process_mask, bool))
    targets = {name: upper(model) for name, model in models.items()}
    tested = bool(n_permutations) and method in LINEAR_COMPARISONS
    nulls = {name: _linear_forms(method, permuted_models(model, n_permutations, seed), "model")
             for name, model in models.items()} if tested else {}
    forms = ({name: _linear_forms(method, target[None], "model")[0] for name, target in targets.items()}
             if method in LINEAR_COMPARISONS else {})
    n_pairs = n_conditions * (n_conditions - 1) // 2
    # per sphere: float64 patterns (gathered and padded), a pair's products, the RDM, its forms and the nulls
    per_sphere = 8 * (3 * n_runs * n_conditions * spheres.max_size + 6 * n_conditions ** 2 + 3 * n_pairs
                      + 2 * n_permutations)
    block = int(max(1, min(len(seeds), memory_mb * 2 ** 20 // per_sphere)))
    scores = {name: np.zeros(n_voxels, np.float32) for name in models}
    p_values = {name: np.ones(n_voxels, np.float32) for name in models} if tested else None
    rdm = BRAIN_RDMS[distance]
    rows, columns = np.triu_indices(n_conditions, k=1)
    desc = f"RSA searchlight ({len(seeds)} spheres of up to {spheres.max_size} locations)"
    for start in track(range(0, len(seeds), block), desc, unit="blocks"):
        chunk = seeds[start:start + block]
        found = spheres.columns(chunk)
        real = found >= 0
        data = np.moveaxis(patterns[:, :, np.where(real, found, 0)], 2, 0)  # spheres x runs x conditions x size
        data = np.where(real[:, None, None, :], data, 0.0)
        vectors = rdm(data, real.sum(axis=1))[:, rows, columns]
        linear = method in LINEAR_COMPARISONS  # then one ranking (spearman) per sphere serves every model
        brain = _linear_forms(method, vectors, "brain") if linear else None
        for name, target in targets.items():
            observed = brain @ forms[name] if linear else COMPARE[method](vectors, target)
            scores[name][chunk] = observed
            if tested:
                exceed = np.zeros(len(chunk))
                for first in range(0, n_permutations, 1024):
                    exceed += (brain @ nulls[name][first:first + 1024].T >= observed[:, None] - 1e-12).sum(axis=1)
                p_values[name][chunk] = (1 + exceed) / (1 + n_permutations)
    return scores, p_values
