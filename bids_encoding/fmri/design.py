"""From event-level features to a design matrix on the TR grid.

Event features live at event times (one row per word, image or trial); BOLD lives
on the TR grid. ``hrf_design`` puts each event's feature values on a fine time
grid as a boxcar over its duration, convolves with a haemodynamic response from
nilearn, and samples at acquisition times. Continuous features (a sampling rate of
their own: audio, video) take the same two routes: resampled to the fine grid and
convolved (:func:`continuous_hrf_design`), or Lanczos-filtered to the TR grid
(:func:`continuous_downsample`). :func:`tr_features` picks the route for a
feature set. Everything here is a pure function of arrays, so notebooks and tests
use it without Nipype.
"""

from __future__ import annotations

import numpy as np
from nilearn.glm.first_level.hemodynamic_models import glover_hrf, spm_hrf
from scipy.signal import fftconvolve

from ..models.signal import lanczos_kernel, lanczos_resample, resample_signal
from ..plugins.types import FeatureSet

HRF_MODELS = {"glover": glover_hrf, "spm": spm_hrf}


def frame_times(n_scans: int, tr: float) -> np.ndarray:
    """Acquisition times of the volumes, in seconds from the run's start (BIDS onsets' origin)."""
    return np.arange(n_scans) * tr


def events_on_grid(onset: np.ndarray, duration: np.ndarray, values: np.ndarray, n_samples: int, dt: float) -> np.ndarray:
    """Boxcars of height ``values`` over each event's duration (at least one sample) on a grid of step ``dt``."""
    values = np.asarray(values, dtype=np.float64).reshape(len(onset), -1)
    grid = np.zeros((n_samples, values.shape[1]))
    # clipped to the grid before casting, so that events long after the run (or absurdly long) cannot overflow
    with np.errstate(over="ignore"):
        start = np.clip(np.floor(np.asarray(onset, dtype=np.float64) / dt), 0, n_samples).astype(int)
        end = np.clip(np.ceil((np.asarray(onset, dtype=np.float64) + np.asarray(duration)) / dt), 0, n_samples + 1)
    stop = np.maximum(start + 1, end.astype(int))
    inside = start < n_samples
    # a cumulative-sum trick adds every boxcar at once: +v at start, -v at stop
    edges = np.zeros((n_samples + 1, values.shape[1]))
    np.add.at(edges, start[inside], values[inside])
    np.add.at(edges, np.minimum(stop[inside], n_samples), -values[inside])
    grid[:] = np.cumsum(edges, axis=0)[:n_samples]
    return grid


def hrf_design(onset: np.ndarray, duration: np.ndarray, values: np.ndarray, n_scans: int, tr: float,
               hrf_model: str = "glover", oversampling: int = 16) -> np.ndarray:
    """Convolve event features with an HRF and sample them at each volume: ``n_scans x n_features``."""
    dt = tr / oversampling
    return _convolve_hrf(events_on_grid(onset, duration, values, n_scans * oversampling, dt), tr, hrf_model,
                         oversampling)


def continuous_hrf_design(times: np.ndarray, values: np.ndarray, rate: float, n_scans: int, tr: float,
                          hrf_model: str = "glover", oversampling: int = 16) -> np.ndarray:
    """Continuous features (sampled at ``rate`` Hz, samples at ``times``) resampled to the fine grid of
    :func:`hrf_design`, convolved with the HRF and sampled at each volume: ``n_scans x n_features``."""
    fine = resample_signal(times, values, rate, n_scans * oversampling, oversampling / tr)
    return _convolve_hrf(fine, tr, hrf_model, oversampling)


def _convolve_hrf(fine: np.ndarray, tr: float, hrf_model: str, oversampling: int) -> np.ndarray:
    hrf = HRF_MODELS[hrf_model](tr, oversampling=oversampling)
    return fftconvolve(fine, hrf[:, None], mode="full", axes=0)[:len(fine)][::oversampling]


def lanczos_downsample(times: np.ndarray, values: np.ndarray, n_scans: int, tr: float, window: int = 3) -> np.ndarray:
    """Resample event features (at ``times``) to the TR grid with a Lanczos filter (voxelwise-modelling practice)."""
    kernel = lanczos_kernel(frame_times(n_scans, tr)[:, None] - np.asarray(times)[None, :], 1.0 / tr, window)
    return kernel @ np.asarray(values, dtype=np.float64).reshape(len(times), -1)


def add_delays(x: np.ndarray, delays: tuple[int, ...]) -> np.ndarray:
    """Finite-impulse-response design: copies of ``x`` shifted later by each delay (in samples), side by side."""
    out = []
    for d in delays:
        shifted = np.zeros_like(x)
        if d >= 0:
            shifted[d:] = x[:len(x) - d] if d else x
        else:
            shifted[:d] = x[-d:]
        out.append(shifted)
    return np.hstack(out)


def downsample_events(onset: np.ndarray, duration: np.ndarray, values: np.ndarray, n_scans: int, tr: float) -> np.ndarray:
    """Lanczos downsampling of event features placed at each event's midpoint: ``n_scans x n_features``."""
    midpoints = np.asarray(onset) + np.asarray(duration) / 2
    return lanczos_downsample(midpoints, values, n_scans, tr)


def continuous_downsample(times: np.ndarray, values: np.ndarray, rate: float, n_scans: int, tr: float) -> np.ndarray:
    """Continuous features averaged around each volume's acquisition time by a Lanczos filter (cutoff 1 / TR):
    ``n_scans x n_features``, the continuous counterpart of :func:`downsample_events`."""
    return lanczos_resample(times, values, rate, n_scans, tr)


def tr_features(features: FeatureSet, label: str, n_scans: int, tr: float, design: str = "hrf",
                hrf_model: str = "glover") -> np.ndarray:
    """One feature space on the TR grid, before delays: HRF-convolved (``design="hrf"``) or Lanczos-downsampled
    (``"fir"``), from events or from continuous samples alike."""
    values = features.spaces[label]
    if features.rate is not None:
        if design == "fir":
            return continuous_downsample(features.onset, values, features.rate, n_scans, tr)
        return continuous_hrf_design(features.onset, values, features.rate, n_scans, tr, hrf_model)
    if design == "fir":
        return downsample_events(features.onset, features.duration, values, n_scans, tr)
    return hrf_design(features.onset, features.duration, values, n_scans, tr, hrf_model=hrf_model)


def fir_design(onset: np.ndarray, duration: np.ndarray, values: np.ndarray, n_scans: int, tr: float,
               delays: tuple[int, ...] = (1, 2, 3, 4)) -> np.ndarray:
    """Lanczos downsampling at each event's midpoint, then FIR delays: ``n_scans x (n_features * n_delays)``."""
    return add_delays(downsample_events(onset, duration, values, n_scans, tr), delays)


def remove_drifts(x: np.ndarray, tr: float, high_pass: float) -> np.ndarray:
    """A run's columns with their linear trend and a cosine basis up to ``high_pass`` Hz regressed out: the same
    drift model :func:`..fmri.bold.load_bold` removes from the BOLD, so that designs and data keep the same
    frequencies (``high_pass=0`` returns ``x`` unchanged)."""
    if not high_pass:
        return x
    from nilearn import signal

    return signal.clean(np.asarray(x, dtype=np.float64), detrend=True, standardize=None, filter="cosine",
                        high_pass=high_pass, t_r=tr)
