import numpy as np
from nilearn.glm.first_level import compute_regressor

from bids_encoding.fmri.design import events_on_grid, hrf_design
from bids_encoding.models.standardize import zscore


def test_boxcars_cover_each_event_duration():
    grid = events_on_grid(np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.0, 0.25]), np.array([1.0, 2.0, 3.0]), 12, 0.25)
    assert grid.ravel().tolist() == [1, 1, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]


def test_overlapping_events_add_up():
    grid = events_on_grid(np.array([0.0, 0.0]), np.array([1.0, 0.5]), np.array([1.0, 1.0]), 4, 0.25)
    assert grid.ravel().tolist() == [2, 2, 1, 1]


def test_hrf_design_matches_nilearn_compute_regressor():
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 300, 40))
    durations = rng.uniform(0.2, 3, 40)
    amplitudes = rng.normal(size=40)
    tr, n_scans = 2.0, 160
    ours = hrf_design(onsets, durations, amplitudes, n_scans, tr, hrf_model="glover", oversampling=16)[:, 0]
    theirs, _ = compute_regressor(np.vstack([onsets, durations, amplitudes]), "glover", np.arange(n_scans) * tr,
                                  oversampling=16)
    # nilearn interpolates the fine grid; agreement up to that and the boxcar rounding
    assert np.corrcoef(ours, theirs[:, 0])[0, 1] > 0.995


def test_hrf_peaks_about_five_seconds_after_an_impulse():
    design = hrf_design(np.array([20.0]), np.array([0.0]), np.array([1.0]), 40, 1.0)
    assert 24 <= int(np.argmax(design[:, 0])) <= 26


def test_zscore_leaves_constant_columns_at_zero():
    x = np.column_stack([np.arange(10.0), np.ones(10)])
    z = zscore(x)
    assert np.allclose(z[:, 0].mean(), 0) and np.isclose(z[:, 0].std(), 1)
    assert np.all(z[:, 1] == 0)


def test_delays_shift_copies_later_without_wrapping():
    x = np.arange(1.0, 6.0)[:, None]
    from bids_encoding.fmri.design import add_delays

    assert add_delays(x, (0, 2)).tolist() == [[1, 0], [2, 0], [3, 1], [4, 2], [5, 3]]


def test_lanczos_downsampling_preserves_a_slow_signal():
    from bids_encoding.fmri.design import lanczos_downsample

    times = np.arange(0, 400, 0.25)
    slow = np.sin(2 * np.pi * times / 100)
    down = lanczos_downsample(times, slow, 200, 2.0)[:, 0]
    expected = np.sin(2 * np.pi * np.arange(200) * 2.0 / 100) * 8  # 8 samples per TR are summed
    assert np.corrcoef(down[5:-5], expected[5:-5])[0, 1] > 0.999


def test_fir_design_shape():
    from bids_encoding.fmri.design import fir_design

    design = fir_design(np.array([1.0, 5.0]), np.array([0.5, 0.5]), np.ones((2, 3)), 20, 2.0, delays=(1, 2, 3, 4))
    assert design.shape == (20, 12)
