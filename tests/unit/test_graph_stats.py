"""Graph TFCE and sign-flip tests against their references: nilearn's volume TFCE and permutation inference on
the same data (a grid is a graph), the components at every height computed directly on an irregular graph, and
a planted truth on a ring (an extended effect outranks an isolated spike of the same t)."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from bids_encoding.models.graph_stats import grid_adjacency, sign_flip_test, tfce

SHAPE = (10, 11, 9)


def _mask(rng: np.random.Generator) -> np.ndarray:
    """An irregular mask inside the grid (never all of it: nilearn's grid then has zeros around the map)."""
    mask = np.zeros(SHAPE, bool)
    mask[1:-1, 1:-2, 1:-1] = True
    return mask & (rng.random(SHAPE) > 0.15)


def _smooth(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    maps = ndimage.gaussian_filter(rng.normal(size=(n, *SHAPE)), (0, 1.5, 1.5, 1.5))
    return maps / maps.std(axis=(1, 2, 3), keepdims=True)


@pytest.mark.parametrize("two_sided", [False, True])
def test_tfce_on_a_grid_equals_nilearns_volume_tfce(two_sided):
    from nilearn.mass_univariate._utils import calculate_tfce

    rng = np.random.default_rng(1)
    mask = _mask(rng)
    adjacency = grid_adjacency(mask)
    for scale in (3.0, 0.7):  # strong and weak maps, so the 100 heights cut clusters differently
        volume = scale * _smooth(rng)[0] + 0.5
        volume[~mask] = 0
        expected = calculate_tfce(volume[..., None], ndimage.generate_binary_structure(3, 1),
                                  two_sided_test=two_sided)[..., 0]
        enhanced = tfce(volume[mask], adjacency, two_sided=two_sided)
        assert np.abs(expected).max() > 0 and np.all(expected[~mask] == 0)
        np.testing.assert_allclose(enhanced, expected[mask], rtol=1e-6, atol=1e-9 * np.abs(expected).max())
        assert two_sided or np.all(enhanced[volume[mask] <= 0] == 0)


def _per_height_tfce(t: np.ndarray, adjacency: sparse.csr_matrix, top: float, n_steps: int = 100) -> np.ndarray:
    """The definition, one height at a time: the components of the graph induced by the locations >= h."""
    enhanced = np.zeros_like(t)
    for height in np.linspace(0, top, n_steps + 1)[1:]:
        above = np.flatnonzero(t >= height)
        _, labels = connected_components(adjacency[above][:, above], directed=False)
        enhanced[above] += np.bincount(labels)[labels] ** 0.5 * height ** 2
    return enhanced


def test_tfce_on_an_irregular_graph_sums_the_components_above_each_height():
    rng = np.random.default_rng(2)
    n = 400
    points = rng.random((n, 2))
    near = np.linalg.norm(points[:, None] - points[None], axis=-1) < 0.08  # a random geometric graph
    adjacency = sparse.csr_matrix(np.triu(near, 1))  # one triangle is enough
    t = 3 * np.sin(6 * points[:, 0]) * np.cos(4 * points[:, 1]) + rng.normal(0, 0.3, n)
    full = adjacency + adjacency.T
    np.testing.assert_allclose(tfce(t, adjacency), _per_height_tfce(t, full, t.max()), rtol=1e-12)
    top = np.abs(t).max()  # two-sided: positive and negative clusters apart, at the heights of |t|
    np.testing.assert_allclose(tfce(t, adjacency, two_sided=True),
                               _per_height_tfce(t, full, top) - _per_height_tfce(-t, full, top), rtol=1e-12)


def test_grid_adjacency_links_face_neighbours_in_nileans_column_order():
    from nilearn.masking import apply_mask

    mask = _mask(np.random.default_rng(3))
    affine = np.eye(4)
    coordinates = np.stack(np.indices(SHAPE), axis=-1).astype(np.float32)
    columns = np.stack([apply_mask(nib.Nifti1Image(coordinates[..., axis], affine),
                                   nib.Nifti1Image(mask.astype(np.uint8), affine)) for axis in range(3)], axis=1)
    graph = grid_adjacency(mask).tocoo()
    distance = np.abs(columns[graph.row] - columns[graph.col]).sum(axis=1)
    assert np.all(distance == 1)  # every link joins voxels one step apart along one axis
    expected = sum(int((mask[tuple(slice(None, -1) if a == ax else slice(None) for a in range(3))]
                        & mask[tuple(slice(1, None) if a == ax else slice(None) for a in range(3))]).sum())
                   for ax in range(3))
    assert graph.nnz == 2 * expected and (abs(grid_adjacency(mask) - grid_adjacency(mask).T)).nnz == 0


@pytest.mark.parametrize("two_sided", [False, True])
def test_max_t_p_equals_nilearns_permuted_ols_flip_for_flip(two_sided):
    """Six subjects have 64 sign patterns, so the 300 flips repeat the data's own (and its negation) several
    times: ties with the observed t must count as nilearn counts them."""
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(4)
    effects = rng.normal(size=(6, 250))
    effects[:, :20] += 1.5
    expected = permuted_ols(np.ones((6, 1)), effects, n_perm=300, two_sided_test=two_sided, random_state=7,
                            n_jobs=1, verbose=0)
    p_fwe, enhanced = sign_flip_test(effects, None, 300, seed=7, tfce=False, two_sided=two_sided)
    np.testing.assert_allclose(p_fwe, 10.0 ** -expected["logp_max_t"][0], rtol=1e-9)
    assert p_fwe.min() < 0.05 and np.all(enhanced == 0)


@pytest.mark.parametrize("two_sided", [False, True])
def test_tfce_p_equals_nilearns_non_parametric_inference_on_a_volume(two_sided):
    """The group level's volume test (group_stats._sign_flip_fwe: float32 maps, intercept-only design) on a
    small grid with a planted blob, against the graph test of the same values."""
    from nilearn.glm.second_level import non_parametric_inference

    rng = np.random.default_rng(5)
    mask = _mask(rng)
    blob = np.exp(-np.sum((np.indices(SHAPE).T - np.array([4, 4, 4])).T ** 2, axis=0) / 6.0)
    maps = (2.0 * blob + _smooth(rng, 10)).astype(np.float32)
    maps[:, ~mask] = 0
    affine = np.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = non_parametric_inference([nib.Nifti1Image(m, affine) for m in maps],
                                          design_matrix=pd.DataFrame({"intercept": np.ones(len(maps))}),
                                          mask=nib.Nifti1Image(mask.astype(np.uint8), affine), n_perm=150,
                                          two_sided_test=two_sided, random_state=11, n_jobs=1, verbose=0, tfce=True)
    p_fwe, enhanced = sign_flip_test(maps[:, mask].astype(np.float64), grid_adjacency(mask), 150, seed=11, tfce=True,
                                     two_sided=two_sided)
    expected_p = 10.0 ** -np.asarray(result["logp_max_tfce"].dataobj, dtype=np.float64)[mask]
    expected_tfce = np.asarray(result["tfce"].dataobj, dtype=np.float64)[mask]
    np.testing.assert_allclose(enhanced, expected_tfce, rtol=1e-5, atol=1e-6 * np.abs(expected_tfce).max())
    np.testing.assert_allclose(p_fwe, expected_p, rtol=1e-9)
    assert np.mean(p_fwe[blob[mask] > 0.5] < 0.05) > 0.6  # most of the blob is found


def test_an_extended_effect_outranks_an_isolated_spike_of_the_same_t_on_a_ring():
    """Both have the same subjects' values at their centre, so the same t (4) and max-t p; TFCE credits the
    effect its 20 neighbours share, not the lone vertex (with seeds 6 to 9 of the data: centre p 0.005 to 0.012,
    spike 0.23 to 0.40)."""
    rng = np.random.default_rng(6)
    n, subjects = 300, 14
    ring = sparse.csr_matrix((np.ones(n), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    effects = rng.normal(size=(subjects, n))
    unit = rng.normal(size=subjects)
    shared = (unit - unit.mean()) / unit.std(ddof=1) + 4.0 / np.sqrt(subjects)  # t = 4 exactly
    centre, spike = 70, 220
    effects[:, 60:81] = shared[:, None] + 0.3 * rng.normal(size=(subjects, 21))
    effects[:, centre] = effects[:, spike] = shared
    p_tfce, enhanced = sign_flip_test(effects, ring, 400, seed=0, tfce=True)
    p_max_t, _ = sign_flip_test(effects, None, 400, seed=0)
    print(f"centre: TFCE {enhanced[centre]:.1f}, p {p_tfce[centre]:.3f}; spike: TFCE {enhanced[spike]:.1f}, "
          f"p {p_tfce[spike]:.3f}; max-t p of both {p_max_t[centre]:.3f}")
    assert p_max_t[centre] == p_max_t[spike] > 0.05  # t = 4 alone is not significant among 300 vertices
    assert enhanced[centre] > 2 * enhanced[spike]
    assert p_tfce[centre] < 0.05 < p_tfce[spike]


def test_shapes_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="3 x 3 but there are 4"):
        tfce(np.ones(4), sparse.eye(3))
    with pytest.raises(ValueError, match="adjacency"):
        sign_flip_test(np.ones((3, 4)), None, 10, seed=0, tfce=True)
