"""Layer sweeps' numerics: best layer per location, CIs across folds or subjects, the between-region layer test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bids_encoding.models.layers import (best_layer, layer_difference_test, mean_ci, preferred_layer,
                                         region_layer_r2)


def test_best_layer_takes_the_layer_of_the_highest_r2_and_leaves_nan_where_every_layer_is_nan():
    r2 = np.array([[0.1, 0.5, np.nan, -0.2],
                   [0.3, 0.2, np.nan, np.nan],
                   [0.2, 0.5, np.nan, -0.1]])
    layer, best = best_layer(r2, [0, 3, 6])
    np.testing.assert_array_equal(layer[[0, 1, 3]], [3, 0, 6])  # a tie goes to the first listed layer
    np.testing.assert_allclose(best[[0, 1, 3]], [0.3, 0.5, -0.1])
    assert np.isnan(layer[2]) and np.isnan(best[2])


def test_mean_ci_is_the_t_interval_and_covers_the_mean_at_its_nominal_rate():
    values = np.array([1.0, 2.0, 4.0])
    mean, low, high = mean_ci(values)
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert mean == pytest.approx(7 / 3) and low == pytest.approx(7 / 3 - half) and high == pytest.approx(7 / 3 + half)
    samples = np.random.default_rng(0).normal(0.3, 1.0, (4000, 5))
    _, low, high = mean_ci(samples, axis=1)
    assert 0.93 < np.mean((low <= 0.3) & (0.3 <= high)) < 0.97
    _, low, high = mean_ci(np.ones((1, 3)))
    assert np.isnan(low).all() and np.isnan(high).all()


def test_region_layer_r2_averages_each_region_per_fold_then_over_folds():
    rng = np.random.default_rng(1)
    fold_r2 = rng.normal(size=(3, 4, 10))  # layers x folds x locations
    labels = np.array([0, 1, 1, 1, 2, 2, 0, 1, 2, 2])
    regions = region_layer_r2(fold_r2, labels)
    assert set(regions) == {1, 2} and regions[1]["n_locations"] == 4
    np.testing.assert_allclose(regions[2]["mean"], fold_r2[:, :, labels == 2].mean(axis=(1, 2)))
    assert (regions[1]["ci_low"] < regions[1]["mean"]).all() and (regions[1]["mean"] < regions[1]["ci_high"]).all()


def test_preferred_layer_weights_layers_by_positive_r2():
    r2 = np.array([[0.0, 0.2, 0.2], [0.4, -1.0, 0.0], [-0.1, -0.2, 0.0]])
    np.testing.assert_allclose(preferred_layer(r2, [0, 3, 6])[:2], [4.5, 0.0])
    assert np.isnan(preferred_layer(r2, [0, 3, 6])[2])


def _profiles(rng, n_subjects: int, peaks: list[float], layers=np.arange(7), noise: float = 0.02) -> np.ndarray:
    """Subjects x regions x layers of R²: a bump at each region's peak layer, plus subject noise."""
    bumps = np.array([0.2 * np.exp(-0.5 * ((layers - peak) / 1.5) ** 2) for peak in peaks])
    return bumps[None] + rng.normal(0, noise, (n_subjects, len(peaks), len(layers)))


def test_the_layer_test_finds_a_planted_difference_between_two_regions():
    rng = np.random.default_rng(2)
    preferred = preferred_layer(_profiles(rng, 6, [1.0, 5.0]), list(range(7)))
    (result,) = layer_difference_test(preferred)
    assert result["test"] == "paired t" and result["df"] == 5 and result["regions"] == (0, 1)
    assert result["mean_difference"] > 1.5 and result["p_value"] < 0.01


def test_with_more_regions_friedman_comes_first_then_every_pair_holm_adjusted():
    rng = np.random.default_rng(3)
    preferred = preferred_layer(_profiles(rng, 8, [1.0, 3.0, 5.0]), list(range(7)))
    results = layer_difference_test(preferred)
    assert [r["test"] for r in results] == ["Friedman", "paired t", "paired t", "paired t"]
    assert results[0]["df"] == 2 and results[0]["p_value"] < 0.01
    assert all(r["p_holm"] >= r["p_value"] for r in results[1:])


@pytest.mark.parametrize("n_regions", [2, 3])
def test_the_layer_test_is_calibrated_when_regions_share_their_layer(n_regions):
    """Under the null (every region peaks at the same layer) p < 0.05 in about 5 % of simulated studies."""
    rng = np.random.default_rng(4)
    p = np.array([layer_difference_test(preferred_layer(_profiles(rng, 8, [3.0] * n_regions), list(range(7))))[0]
                  ["p_value"] for _ in range(800)])
    rate = np.mean(p < 0.05)
    print(f"{n_regions} regions, null: p < 0.05 in {rate:.3f} of 800 studies of 8 subjects")
    assert 0.025 < rate < 0.08
