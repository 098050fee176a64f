"""RSA's numerics against their definitions and against rsatoolbox, the field's reference implementation:
crossvalidated distances, comparisons, the permutation test's calibration and the noise ceiling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bids_encoding.models import rsa


def responses(n_runs=3, n_conditions=6, n_voxels=30, seed=0, signal=1.0):
    """Trials x voxels: one fixed pattern per condition plus independent noise in every run (2 trials each)."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((n_conditions, n_voxels)) * signal
    conditions = np.tile(np.repeat(np.arange(n_conditions), 2), n_runs).astype(str)
    runs = np.repeat(np.arange(n_runs), 2 * n_conditions)
    X = truth[conditions.astype(int)] + rng.standard_normal((len(conditions), n_voxels))
    return X, conditions, runs, truth


def test_crossnobis_is_the_mean_over_run_pairs_of_the_product_of_differences():
    X, conditions, runs, _ = responses()
    rdm, labels = rsa.brain_rdm(X, conditions, runs, "crossnobis")
    patterns = np.stack([[X[(runs == r) & (conditions == c)].mean(axis=0) for c in labels] for r in range(3)])
    expected = np.zeros_like(rdm)
    for i in range(len(labels)):
        for j in range(len(labels)):
            products = [(patterns[a, i] - patterns[a, j]) @ (patterns[b, i] - patterns[b, j])
                        for a in range(3) for b in range(3) if a != b]
            expected[i, j] = np.mean(products) / X.shape[1]
    np.testing.assert_allclose(rdm, expected, atol=1e-12)


def test_crossnobis_is_unbiased_where_the_plain_distance_is_not():
    """Pure noise: the crossvalidated distances average 0, the squared Euclidean ones 2 (noise variance 1)."""
    X, conditions, runs, _ = responses(n_runs=4, n_conditions=8, n_voxels=400, signal=0.0)
    rdm, _ = rsa.brain_rdm(X, conditions, runs, "crossnobis")
    assert abs(rsa.upper(rdm).mean()) < 0.05
    means = np.stack([X[conditions == c].mean(axis=0) for c in sorted(set(conditions))])
    naive = ((means[:, None] - means[None]) ** 2).mean(axis=2)
    assert rsa.upper(naive).mean() > 0.2


def test_crossrun_correlation_distance_by_its_definition():
    X, conditions, runs, _ = responses(n_runs=2)
    rdm, labels = rsa.brain_rdm(X, conditions, runs, "correlation")
    a = [X[(runs == 0) & (conditions == c)].mean(axis=0) for c in labels]
    b = [X[(runs == 1) & (conditions == c)].mean(axis=0) for c in labels]
    i, j = 1, 4
    expected = 1 - (np.corrcoef(a[i], b[j])[0, 1] + np.corrcoef(a[j], b[i])[0, 1]) / 2
    assert rdm[i, j] == pytest.approx(expected) and rdm[j, i] == pytest.approx(expected) and rdm[i, i] == 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # rsatoolbox casts NaN into its descriptors
def test_the_rdms_and_comparisons_equal_rsatoolbox():
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import RDMs, calc_rdm, compare

    X, conditions, runs, _ = responses(n_conditions=9)
    data = Dataset(X, obs_descriptors={"conds": conditions, "runs": runs})
    reference = calc_rdm(data, method="crossnobis", descriptor="conds", cv_descriptor="runs").get_matrices()[0]
    mine, _ = rsa.brain_rdm(X, conditions, runs, "crossnobis")
    np.testing.assert_allclose(mine, reference, atol=1e-10)
    a, b = rsa.upper(mine), np.random.default_rng(1).standard_normal(36)
    for theirs, ours in (("spearman", "spearman"), ("tau-a", "tau-a"), ("corr_cov", "whitened")):
        for other in (b, np.round(b)):  # np.round: ties, where tau-a and tau-b differ
            expected = compare(RDMs(a[None]), RDMs(other[None]), method=theirs)[0, 0]
            assert rsa.compare(a, other, ours) == pytest.approx(expected, abs=1e-10), theirs


def test_tau_a_by_its_definition_and_equal_to_scipys_tau_b_without_ties():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(30), rng.integers(0, 3, 30).astype(float)
    pairs = [(i, j) for i in range(30) for j in range(i + 1, 30)]
    direct = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs) / len(pairs)
    assert rsa.compare(a, b, "tau-a") == pytest.approx(direct)
    c = rng.standard_normal(30)
    assert rsa.compare(a, c, "tau-a") == pytest.approx(stats.kendalltau(a, c).statistic)


def test_correlation_rdm_is_one_minus_pearson():
    features = np.random.default_rng(3).standard_normal((5, 12))
    rdm = rsa.correlation_rdm(features)
    assert rdm[1, 3] == pytest.approx(1 - np.corrcoef(features[1], features[3])[0, 1]) and rdm[2, 2] == 0


@pytest.mark.parametrize("method", ["spearman", "tau-a", "whitened"])
def test_permutation_p_values_are_calibrated_on_null_rdms(method):
    """Independent random RDMs share no geometry: about 5 % of their p-values fall below 0.05."""
    rng = np.random.default_rng(4)
    n_pairs, p_values = 300, []
    for k in range(n_pairs):
        brain = rsa.correlation_rdm(rng.standard_normal((12, 5)))
        model = rsa.correlation_rdm(rng.standard_normal((12, 5)))
        p_values.append(rsa.permutation_test(brain, model, method, n_permutations=99, seed=k)[1])
    assert 0.02 <= np.mean(np.asarray(p_values) < 0.05) <= 0.09


def test_a_planted_geometry_is_found_and_its_permutation_p_is_small():
    X, conditions, runs, truth = responses(n_runs=3, n_conditions=10, n_voxels=50, signal=0.5)
    brain, _ = rsa.brain_rdm(X, conditions, runs)
    model = ((truth[:, None] - truth[None]) ** 2).mean(axis=2)  # labels '0'..'9' sort as the truth's rows
    score, p = rsa.permutation_test(brain, model, "spearman", n_permutations=200, seed=0)
    assert score > 0.5 and p < 0.01
    assert rsa.permutation_test(brain, model, n_permutations=0)[1] is None


def test_noise_ceiling_bounds_bracket_the_true_geometry():
    """Subjects share a true RDM plus their own noise: the true RDM's mean comparison with them lies between the
    lower and upper bounds (Nili et al. 2014), and noisier subjects lower both bounds."""
    rng = np.random.default_rng(5)
    true = rsa.correlation_rdm(rng.standard_normal((12, 6)))
    for noise, previous in ((0.1, None), (0.4, None)):
        subjects = np.stack([true + noise * rsa.correlation_rdm(rng.standard_normal((12, 6))) for _ in range(8)])
        lower, upper = rsa.noise_ceiling(subjects)
        achieved = np.mean([rsa.compare(s, true) for s in subjects])
        assert lower <= achieved <= upper
    quiet = rsa.noise_ceiling(np.stack([true + 0.1 * rsa.correlation_rdm(rng.standard_normal((12, 6)))
                                        for _ in range(8)]))
    assert quiet[0] > lower


def test_tau_a_of_large_rdms_rescales_scipys_tau_b_as_the_sign_products_do(monkeypatch):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((3, 200)), rng.integers(0, 4, 200).astype(float)
    products = rsa.tau_a(a, b)
    monkeypatch.setattr(rsa, "SIGN_PRODUCTS", 100)  # the scipy path
    np.testing.assert_allclose(rsa.tau_a(a, b), products, atol=1e-12)


# --------------------------------------------------------------------------- searchlight


def searchlight_data(seed=7, n_runs=3, n_conditions=7):
    """A small irregular mask on a 3 mm grid, trials x voxels responses, and one run lacking one condition."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    inside = rng.random((6, 5, 5)) < 0.7
    mask = nib.Nifti1Image(inside.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    X, conditions, runs, _ = responses(n_runs=n_runs, n_conditions=n_conditions, n_voxels=int(inside.sum()),
                                       seed=seed, signal=0.7)
    keep = ~((runs == 1) & (conditions == "2"))  # run 1 lacks condition 2: fewer run pairs for its distances
    return X[keep], conditions[keep], runs[keep], mask


@pytest.mark.parametrize("distance", ["crossnobis", "correlation"])
@pytest.mark.parametrize("method", ["spearman", "whitened", "tau-a"])
def test_searchlight_rsa_equals_the_region_functions_on_each_sphere(distance, method):
    from bids_encoding.spheres import mask_index, neighbours, sphere_offsets

    X, conditions, runs, mask = searchlight_data()
    rng = np.random.default_rng(8)
    models = {name: rsa.correlation_rdm(rng.standard_normal((7, 4))) for name in ("a", "b")}
    patterns, labels = rsa.condition_patterns(X, conditions, runs)
    scores, p_values = rsa.searchlight_rsa(patterns, mask, models, distance=distance, method=method, radius=5.0,
                                           n_permutations=50, seed=3, memory_mb=0.05)  # several blocks
    _, index, voxels = mask_index(mask)
    spheres = neighbours(voxels, sphere_offsets(mask.affine, 5.0), index)
    assert (p_values is None) == (method == "tau-a")
    for seed in (0, 5, len(voxels) - 1):
        sphere = spheres[seed][spheres[seed] >= 0]
        brain, _ = rsa.brain_rdm(X[:, sphere], conditions, runs, distance)
        for name, model in models.items():
            score, p = rsa.permutation_test(brain, model, method, n_permutations=50, seed=3)
            assert scores[name][seed] == pytest.approx(score, abs=1e-5)
            if p_values is not None:
                assert p_values[name][seed] == pytest.approx(p, abs=1e-6)


def test_searchlight_rsa_only_scores_the_process_mask_and_finds_a_planted_sphere():
    """Conditions differ only in the voxels near one corner, by a low-dimensional code that any few of them carry: the
    model of that code's geometry scores highest there."""
    import nibabel as nib

    rng = np.random.default_rng(9)
    inside = np.ones((8, 8, 8), bool)
    mask = nib.Nifti1Image(inside.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    coords = np.argwhere(inside)
    planted = np.linalg.norm(coords - 1.5, axis=1) < 2.5
    code = rng.standard_normal((8, 3))
    truth = code @ rng.standard_normal((3, planted.sum()))
    conditions = np.tile(np.arange(8), 6).astype(str)
    runs = np.repeat(np.arange(3), 16)
    X = rng.standard_normal((len(conditions), inside.sum()))
    X[:, planted] += truth[conditions.astype(int)]
    patterns, _ = rsa.condition_patterns(X, conditions, runs)
    model = ((code[:, None] - code[None]) ** 2).sum(axis=2)
    scores, p = rsa.searchlight_rsa(patterns, mask, {"truth": model}, radius=4.0, n_permutations=200)
    assert np.median(scores["truth"][planted]) > 0.5 > np.percentile(scores["truth"][~planted], 90)
    assert np.median(p["truth"][planted]) < 0.01
    centres = np.zeros(len(coords), bool)
    centres[:10] = True
    some, p = rsa.searchlight_rsa(patterns, mask, {"truth": model}, radius=4.0, process_mask=centres)
    assert p is None and np.all(some["truth"][~centres] == 0)
    np.testing.assert_allclose(some["truth"][centres], scores["truth"][centres])
