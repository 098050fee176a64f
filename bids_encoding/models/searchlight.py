"""A searchlight: the decoders of :mod:`.classifiers` in a sphere around every voxel.

It scores the pipelines of :mod:`.classifiers` in a sphere around every voxel, with the
same folds. It gives the scores nilearn's ``SearchLight`` gives with that pipeline,
``cv=LeaveOneGroupOut()`` and ``scoring="balanced_accuracy"`` (the test suite checks
it), but it is built for whole-brain data:

* memory: nilearn masks the 4D image again into a float64 copy and holds every
  sphere's voxel list as a ``scipy.sparse.lil_matrix`` (Python lists of Python
  ints, tens of bytes per neighbour: gigabytes for a 2 mm brain). Here the trials
  x voxels array is used as given (float32), and spheres are looked up for one
  block of seeds at a time from a fixed list of voxel offsets and an index
  volume, so memory beyond the data is bounded by ``memory_mb``;
* time: instead of one scikit-learn fit per sphere and fold, every sphere of a
  block is fitted at once by a batched Newton method on the classifiers' exact
  objectives (``LogisticRegression``: ``0.5 |w|^2 + C sum log(1 + exp(-y f))``,
  unpenalised intercept; ``LinearSVC``: ``0.5 |(w, b)|^2 + C sum max(0, 1 - y f)^2``,
  liblinear's penalised intercept). Spheres with more voxels than training trials
  are first reduced to the row space of their training data (thin SVD), which
  changes nothing in the solution (representer theorem) and keeps each system no
  larger than the number of trials;
* processes: ``n_jobs > 1`` runs blocks in joblib worker processes, which map the
  data array from disk (joblib's automatic memmapping) instead of copying it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut
from threadpoolctl import threadpool_limits

from ..errors import UserError
from ..progress import track
from ..spheres import as_spheres
from .classifiers import CLASSIFIERS, balanced_accuracy_rows, check_runs, decision_values


def _block_scores(X: np.ndarray, columns: np.ndarray, y_pm: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                  loss: str, C: float) -> np.ndarray:
    """Mean balanced accuracy over folds of each sphere in one block (spheres given as padded column indices)."""
    valid = columns >= 0
    data = np.moveaxis(X[:, np.where(valid, columns, 0)], 0, 1).astype(np.float64)  # spheres x trials x voxels
    data *= valid[:, None, :]
    scores = np.zeros(len(columns))
    for train, test in folds:
        decision = decision_values(data[:, train], y_pm[train], data[:, test], loss, C)
        scores += balanced_accuracy_rows(y_pm[test], decision > 0)
    return scores / len(folds)


def searchlight(X: np.ndarray, spheres: Any, y: np.ndarray, groups: np.ndarray, *, radius: float = 8.0,
                classifier: str = "logistic", process_mask: np.ndarray | None = None, n_jobs: int = 1,
                memory_mb: float = 64.0, C: float = 1.0) -> np.ndarray:
    """Leave-one-run-out balanced accuracy of a classifier in a sphere around each voxel.

    Parameters
    ----------
    X : trials x locations (voxels in ``nilearn.masking.apply_mask`` order, or vertices), any float dtype.
    spheres : the neighbourhoods (:class:`VoxelSpheres`, :class:`GraphSpheres`), or the brain mask as a 3D image
        (its voxel spheres of ``radius``).
    y, groups : the trials' labels (two classes) and runs.
    radius : sphere radius in mm; a sphere holds the mask voxels whose centres are within it.
    classifier : ``"logistic"`` or ``"svm"``, as in :func:`make_classifier` (features scaled per fold).
    process_mask : boolean over the mask's voxels: the sphere centres to score (default: all).
    n_jobs : worker processes (joblib); 1 computes in this process.
    memory_mb : rough bound on the working memory of one block of spheres (per process).

    Returns
    -------
    Scores per mask voxel (float32): the mean over folds of the balanced accuracy; 0 where not scored.
    """
    if classifier not in CLASSIFIERS:
        raise UserError(f"unknown classifier '{classifier}'", fix=f"Use one of: {', '.join(CLASSIFIERS)}")
    if not radius > 0:
        raise UserError(f"the searchlight radius must be positive, not {radius}", fix="Give a radius in mm, e.g. 8")
    spheres = as_spheres(spheres, radius)
    X = np.asarray(X)
    if X.shape[1] != spheres.n_locations:
        raise ValueError(f"X has {X.shape[1]} columns but the mask {spheres.n_locations} locations")
    y, groups = np.asarray(y), np.asarray(groups)
    classes, _ = check_runs(y, groups)
    y_pm = np.where(y == classes[1], 1.0, -1.0)  # scikit-learn's positive class is the second in sorted order
    folds = [(train, test) for train, test in LeaveOneGroupOut().split(X, y, groups)]

    seeds = np.flatnonzero(np.ones(spheres.n_locations, bool) if process_mask is None
                           else np.asarray(process_mask, bool))
    # per sphere: float64 copies of trials x voxels (data, train, test, scaled), the SVD, Hessians
    size = spheres.max_size + 1
    per_sphere = 8 * (6 * len(y) * size + 3 * size * size + 6 * len(y) * min(size, len(y)))
    block = int(max(1, min(len(seeds), memory_mb * 2 ** 20 // per_sphere)))
    if n_jobs != 1:  # give every worker several blocks, so they finish together
        from joblib import cpu_count

        workers = cpu_count() if n_jobs < 0 else n_jobs
        block = max(1, min(block, -(-len(seeds) // (4 * workers))))
    blocks = [seeds[a:a + block] for a in range(0, len(seeds), block)]
    loss = "logistic" if classifier == "logistic" else "squared_hinge"

    columns = spheres.columns
    desc = f"searchlight ({len(seeds)} spheres of up to {spheres.max_size} locations)"
    if n_jobs == 1:
        with threadpool_limits(limits=1):
            results = [_block_scores(X, columns(chunk), y_pm, folds, loss, C)
                       for chunk in track(blocks, desc, unit="blocks")]
    else:
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_block_scores)(X, columns(chunk), y_pm, folds, loss, C) for chunk in blocks)
        results = list(track(done, desc, total=len(blocks), unit="blocks"))
    scores = np.zeros(spheres.n_locations, dtype=np.float32)
    if len(seeds):
        scores[seeds] = np.concatenate(results)
    return scores
