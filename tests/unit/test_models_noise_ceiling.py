import numpy as np
import pytest

from bids_encoding.models.noise_ceiling import explainable_variance


def test_explainable_variance_recovers_the_signal_share():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(1, 2000, 3))
    noise_sd = np.array([0.0, 1.0, 3.0])  # signal share 1, 0.5, 0.1
    repeats = signal + noise_sd * rng.normal(size=(4, 2000, 3))
    ev = explainable_variance(repeats)
    assert np.allclose(ev, [1.0, 0.5, 0.1], atol=0.04)


def test_pure_noise_has_no_explainable_variance():
    ev = explainable_variance(np.random.default_rng(1).normal(size=(3, 3000, 50)))
    assert abs(ev.mean()) < 0.01


def test_one_repeat_is_refused():
    with pytest.raises(ValueError):
        explainable_variance(np.zeros((1, 10, 2)))
