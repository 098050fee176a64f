"""Continuous signals (features sampled in time) brought to another time grid.

Continuous features come at their extractor's rate (an audio envelope at 100 Hz, a speech
model's frames at 50 Hz, a movie's frames at 2 Hz); the data come at theirs (fMRI volumes,
M/EEG samples). Pure numerics of arrays, shared by :mod:`..fmri.design` and :mod:`..meeg`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import fftconvolve, resample_poly


def regular_grid(times: np.ndarray, values: np.ndarray, rate: float, n_samples: int) -> np.ndarray:
    """Samples taken at ``times`` (s) placed on a regular grid at ``rate`` Hz starting at 0: ``n_samples x n_features``,
    zero where no sample falls (between clips); samples outside the grid are dropped."""
    values = np.asarray(values, dtype=np.float64).reshape(len(times), -1)
    grid = np.zeros((n_samples, values.shape[1]))
    index = np.round(np.asarray(times, dtype=np.float64) * rate).astype(np.int64)
    inside = (index >= 0) & (index < n_samples)
    grid[index[inside]] = values[inside]
    return grid


def resample_signal(times: np.ndarray, values: np.ndarray, rate: float, n_out: int, out_rate: float,
                    chunk: int = 64) -> np.ndarray:
    """A signal sampled at ``rate`` Hz (samples at ``times``) on the grid ``k / out_rate``, ``k < n_out``.

    Polyphase filtering (scipy's ``resample_poly``, a Kaiser-windowed low-pass at the lower of the two
    Nyquist frequencies) to the nearest simple ratio of the rates, then linear interpolation at the exact
    output times, so that timing stays exact over long recordings whatever the ratio. Columns in chunks,
    to bound memory on long, wide features."""
    values = np.asarray(values).reshape(len(times), -1)
    n_in = max(int(np.ceil(n_out / out_rate * rate)) + 2, 1)
    ratio = Fraction(out_rate / rate).limit_denominator(100)
    out = np.zeros((n_out, values.shape[1]))
    for start in range(0, values.shape[1], chunk):
        grid = regular_grid(times, values[:, start:start + chunk], rate, n_in)
        if abs(rate - out_rate) < 1e-9 * rate:
            out[:min(n_in, n_out), start:start + chunk] = grid[:n_out]
            continue
        resampled = resample_poly(grid, ratio.numerator, ratio.denominator, axis=0)
        source = np.arange(len(resampled)) / (rate * ratio.numerator / ratio.denominator)
        wanted = np.arange(n_out) / out_rate
        out[:, start:start + chunk] = np.stack([np.interp(wanted, source, column, right=0.0)
                                                for column in resampled.T], axis=1)
    return out


def lanczos_resample(times: np.ndarray, values: np.ndarray, rate: float, n_out: int, out_step: float,
                     window: int = 3, chunk: int = 64) -> np.ndarray:
    """A signal sampled at ``rate`` Hz, Lanczos-filtered (low-pass at ``1 / out_step``) and read at ``k * out_step``:
    the time-average of the signal around each output time, as voxelwise modelling downsamples continuous features
    to the TR grid. One FFT convolution at the signal's rate, columns in chunks to bound memory."""
    values = np.asarray(values).reshape(len(times), -1)
    n_in = int(np.ceil(n_out * out_step * rate)) + 2
    half = int(np.ceil(window * out_step * rate))
    kernel = lanczos_kernel(np.arange(-half, half + 1) / rate, 1.0 / out_step, window) / (rate * out_step)
    picks = np.clip(np.round(np.arange(n_out) * out_step * rate).astype(np.int64), 0, n_in - 1)
    out = np.empty((n_out, values.shape[1]))
    for start in range(0, values.shape[1], chunk):
        grid = regular_grid(times, values[:, start:start + chunk], rate, n_in)
        out[:, start:start + chunk] = fftconvolve(grid, kernel[:, None], mode="same", axes=0)[picks]
    return out


def lanczos_kernel(t: np.ndarray, cutoff: float, window: int = 3) -> np.ndarray:
    """Lanczos-windowed sinc at times ``t`` (seconds) for a low-pass ``cutoff`` (Hz)."""
    x = np.asarray(t, dtype=np.float64) * cutoff
    with np.errstate(divide="ignore", invalid="ignore"):
        value = window * np.sin(np.pi * x) * np.sin(np.pi * x / window) / (np.pi ** 2 * x ** 2)
    value[x == 0] = 1.0
    value[np.abs(x) > window] = 0.0
    return value
