"""Explainable variance: how much of a voxel's response is repeatable across presentations of the same stimuli.

With R repeats of identical stimuli, the stimulus-driven part of the signal is what
all repeats share; the rest is noise. The explainable variance (EV) is the share of
variance in one repeat explained by the mean across repeats, corrected for the
noise left in that mean (Schoppe et al. 2016; Huth et al. 2016):

    EV = 1 - mean_r var(Y_r - mean(Y)) / mean_r var(Y_r),   then   EV - (1 - EV) / (R - 1)

It is the noise ceiling of an encoding model's R² on such data.
"""

from __future__ import annotations

import numpy as np


def explainable_variance(repeats: np.ndarray, bias_correction: bool = True) -> np.ndarray:
    """``repeats``: R x time x voxels responses to the same stimuli; returns EV per voxel."""
    repeats = np.asarray(repeats, dtype=np.float64)
    if repeats.ndim != 3 or repeats.shape[0] < 2:
        raise ValueError("explainable variance needs at least two repeats (R x time x voxels)")
    residual = repeats - repeats.mean(axis=0)
    total = repeats.var(axis=1).mean(axis=0)
    ev = 1.0 - residual.var(axis=1).mean(axis=0) / np.where(total > 0, total, 1.0)
    if bias_correction:
        ev = ev - (1.0 - ev) / (repeats.shape[0] - 1)
    return ev
