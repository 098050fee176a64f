"""The one z-score of the package: columns centred and scaled, constant columns set to zero."""

from __future__ import annotations

import numpy as np


def zscore(x: np.ndarray) -> np.ndarray:
    """Each column z-scored over the rows (population sd); constant columns become 0, never NaN.

    Floating input keeps its dtype (float32 data stays float32); other input becomes float64.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0).astype(x.dtype, copy=False)
