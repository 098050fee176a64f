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
from .classifiers import CLASSIFIERS, balanced_accuracy_rows, check_runs, decision_values


def sphere_offsets(affine: np.ndarray, radius: float) -> np.ndarray:
    """Voxel offsets (i, j, k) whose centres lie within ``radius`` mm of a voxel's, nearest first."""
    linear = np.asarray(affine, float)[:3, :3]
    extent = np.floor(radius / np.sqrt((linear ** 2).sum(0)).min()).astype(int) + 1
    axis = np.arange(-extent, extent + 1)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(grid @ linear.T, axis=1)
    keep = distance <= radius
    order = np.argsort(distance[keep], kind="stable")
    return grid[keep][order]


def mask_index(mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mask image (or boolean array) as its boolean data, a volume of each mask voxel's column in the masked data
    (-1 outside) and the voxels' (i, j, k) in that column order (``nilearn.masking.apply_mask``'s, C order)."""
    mask_data = np.asarray(mask.dataobj if hasattr(mask, "dataobj") else mask) > 0
    index = np.full(mask_data.shape, -1, dtype=np.int64)
    index[mask_data] = np.arange(mask_data.sum())
    return mask_data, index, np.argwhere(mask_data)


def neighbours(seeds: np.ndarray, offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Column indices (into the masked data) of each seed's sphere, -1 padded at the end, as seeds x size: the seed
    first, then its neighbours nearest first (the order of ``offsets``). Seeds are (i, j, k) voxels of ``index``
    (:func:`mask_index`)."""
    coords = seeds[:, None, :] + offsets[None]
    inside = np.all((coords >= 0) & (coords < np.asarray(index.shape)), axis=2)
    coords = np.where(inside[:, :, None], coords, 0)
    found = np.where(inside, index[coords[..., 0], coords[..., 1], coords[..., 2]], -1)
    found = np.take_along_axis(found, np.argsort(found < 0, axis=1, kind="stable"), axis=1)
    return found[:, : max(1, int((found >= 0).sum(1).max()))]


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


def searchlight(X: np.ndarray, mask: Any, y: np.ndarray, groups: np.ndarray, *, radius: float = 8.0,
                classifier: str = "logistic", process_mask: np.ndarray | None = None, n_jobs: int = 1,
                memory_mb: float = 64.0, C: float = 1.0) -> np.ndarray:
    """Leave-one-run-out balanced accuracy of a classifier in a sphere around each voxel.

    Parameters
    ----------
    X : trials x voxels of ``mask`` (in ``nilearn.masking.apply_mask`` order), any float dtype.
    mask : the brain mask, a 3D image (its ``dataobj`` and ``affine`` are used).
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
    mask_data, index, voxels = mask_index(mask)
    affine = np.asarray(mask.affine)
    X = np.asarray(X)
    if X.shape[1] != mask_data.sum():
        raise ValueError(f"X has {X.shape[1]} columns but the mask {mask_data.sum()} voxels")
    y, groups = np.asarray(y), np.asarray(groups)
    classes, _ = check_runs(y, groups)
    y_pm = np.where(y == classes[1], 1.0, -1.0)  # scikit-learn's positive class is the second in sorted order
    folds = [(train, test) for train, test in LeaveOneGroupOut().split(X, y, groups)]

    seeds = np.flatnonzero(np.ones(len(voxels), bool) if process_mask is None else np.asarray(process_mask, bool))
    offsets = sphere_offsets(affine, radius)
    # per sphere: float64 copies of trials x voxels (data, train, test, scaled), the SVD, Hessians
    size = len(offsets) + 1
    per_sphere = 8 * (6 * len(y) * size + 3 * size * size + 6 * len(y) * min(size, len(y)))
    block = int(max(1, min(len(seeds), memory_mb * 2 ** 20 // per_sphere)))
    if n_jobs != 1:  # give every worker several blocks, so they finish together
        from joblib import cpu_count

        workers = cpu_count() if n_jobs < 0 else n_jobs
        block = max(1, min(block, -(-len(seeds) // (4 * workers))))
    blocks = [seeds[a:a + block] for a in range(0, len(seeds), block)]
    loss = "logistic" if classifier == "logistic" else "squared_hinge"

    def columns(chunk: np.ndarray) -> np.ndarray:
        return neighbours(voxels[chunk], offsets, index)

    desc = f"searchlight ({len(seeds)} spheres of up to {len(offsets)} voxels)"
    if n_jobs == 1:
        with threadpool_limits(limits=1):
            results = [_block_scores(X, columns(chunk), y_pm, folds, loss, C)
                       for chunk in track(blocks, desc, unit="blocks")]
    else:
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_block_scores)(X, columns(chunk), y_pm, folds, loss, C) for chunk in blocks)
        results = list(track(done, desc, total=len(blocks), unit="blocks"))
    scores = np.zeros(len(voxels), dtype=np.float32)
    if len(seeds):
        scores[seeds] = np.concatenate(results)
    return scores
