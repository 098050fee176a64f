"""Decoding models: cross-validated linear classifiers, permutation tests and a searchlight.

Whole-pattern decoding is plain scikit-learn: a ``Pipeline`` of ``StandardScaler``
and ``LogisticRegression`` (or ``LinearSVC``), leave-one-run-out cross-validation
(``LeaveOneGroupOut`` with runs as groups), balanced accuracy and ROC AUC (from
``decision_function``) averaged over folds, and ``permutation_test_score`` with the
runs as groups, so that labels are permuted within runs only.

The searchlight scores the same pipeline in a sphere around every voxel, with the
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

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, log_expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, cross_validate, permutation_test_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from ..errors import UserError
from ..progress import track

CLASSIFIERS = {
    "logistic": "StandardScaler + LogisticRegression (L2, C=1, lbfgs)",
    "svm": "StandardScaler + LinearSVC (L2, squared hinge, C=1)",
}
CV_DESCRIPTION = "leave-one-run-out (sklearn LeaveOneGroupOut, runs as groups); scores averaged over folds"
PERMUTATION_DESCRIPTION = ("labels permuted within runs (sklearn permutation_test_score with the runs as groups), "
                           "the whole cross-validation repeated per permutation; p = (1 + #{null >= observed}) / "
                           "(1 + n_permutations), one-sided")


def make_classifier(classifier: str = "logistic", seed: int = 0, C: float = 1.0,
                    screening: int | None = None) -> Pipeline:
    """The scikit-learn pipeline of a classifier name: feature scaling, then the linear classifier.

    ``screening`` keeps only that many features, those with the largest ANOVA F between the
    classes in the training data (``SelectKBest(f_classif)``, first in the pipeline, so it is
    refitted within every fold and permutation).
    """
    if classifier == "logistic":
        model = LogisticRegression(C=C, max_iter=1000)
    elif classifier == "svm":
        model = LinearSVC(C=C, max_iter=10000, random_state=seed)
    else:
        raise UserError(f"unknown classifier '{classifier}'", fix=f"Use one of: {', '.join(CLASSIFIERS)}")
    steps = [("screen", SelectKBest(f_classif, k=int(screening)))] if screening else []
    return Pipeline(steps + [("scale", StandardScaler()), ("classify", model)])


def screening_size(n_features: int, percent: float, minimum: int = 100) -> int | None:
    """How many voxels ANOVA screening keeps: ``percent`` of them, but at least ``minimum``; None keeps all."""
    if percent >= 100:
        return None
    k = max(minimum, int(np.ceil(n_features * percent / 100)))
    return None if k >= n_features else k


def check_runs(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """The two classes and the number of leave-one-run-out folds; an error unless every run holds both classes."""
    y, groups = np.asarray(y), np.asarray(groups)
    if len(y) != len(groups):
        raise ValueError(f"{len(y)} labels but {len(groups)} run indices")
    classes = np.unique(y)
    if len(classes) != 2:
        raise UserError(f"decoding needs exactly two classes, and the trials hold {len(classes)} "
                        f"({', '.join(map(str, classes)) or 'none'})",
                        fix="Give a contrast of two values that both occur in every run (--decode COLUMN=A,B)")
    runs = np.unique(groups)
    lacking = [f"run {g} has no '{c}' trial" for g in runs for c in classes if not np.any((groups == g) & (y == c))]
    if lacking:
        raise UserError(f"leave-one-run-out decoding needs both classes in every run, but {'; '.join(lacking)}",
                        fix="Decode a contrast whose values occur in every run, or leave those runs out")
    if len(runs) < 2:
        raise UserError(f"leave-one-run-out decoding needs at least 2 runs with both classes, found {len(runs)}",
                        fix="Give two or more runs of the task")
    return classes, len(runs)


@dataclass(frozen=True, eq=False)
class DecodingScores:
    """Cross-validated scores of one classifier on one set of features."""

    balanced_accuracy: float
    roc_auc: float
    p_value: float  # NaN when no permutations were run
    chance: float
    n_trials: int
    n_folds: int
    n_features: int
    classifier: str
    n_permutations: int = 0
    screening: int | None = None  # features kept by ANOVA screening in each fold (None: all)
    fold_balanced_accuracy: tuple[float, ...] = ()
    null: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # permutation scores

    def row(self, source: str) -> dict[str, Any]:
        """One row of the ``_decoding.tsv`` table."""
        return {"source": source, "classifier": self.classifier, "balanced_accuracy": self.balanced_accuracy,
                "roc_auc": self.roc_auc, "p_value": self.p_value, "chance": self.chance, "n_trials": self.n_trials,
                "n_folds": self.n_folds, "n_features": self.n_features}


def cross_validate_decoder(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, classifier: str = "logistic",
                           n_permutations: int = 1000, seed: int = 0, n_jobs: int = 1,
                           screening: int | None = None) -> DecodingScores:
    """Leave-one-run-out balanced accuracy and ROC AUC of a classifier, with a within-run permutation test.

    ``X`` is trials x features, ``y`` the trials' labels (two classes), ``groups`` their runs.
    ``n_permutations=0`` skips the permutation test (``p_value`` is NaN). ``screening``: see
    :func:`make_classifier`. BLAS runs single-threaded here (the fits are small; parallelism is
    ``n_jobs`` processes): on a busy machine, threaded BLAS makes such fits many times slower.
    """
    X = np.asarray(X)
    y, groups = np.asarray(y), np.asarray(groups)
    classes, n_folds = check_runs(y, groups)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X has shape {X.shape}, expected ({len(y)}, n_features)")
    if screening is not None and not 0 < screening < X.shape[1]:
        screening = None
    estimator = make_classifier(classifier, seed, screening=screening)
    cv = LeaveOneGroupOut()
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_validate(estimator, X, y, groups=groups, cv=cv, scoring=("balanced_accuracy", "roc_auc"),
                                n_jobs=n_jobs)
        p_value, null = float("nan"), np.zeros(0)
        if n_permutations > 0:
            _, null, p_value = permutation_test_score(estimator, X, y, groups=groups, cv=cv,
                                                      n_permutations=n_permutations, random_state=seed,
                                                      scoring="balanced_accuracy", n_jobs=n_jobs)
    folds = scores["test_balanced_accuracy"]
    return DecodingScores(balanced_accuracy=float(folds.mean()), roc_auc=float(scores["test_roc_auc"].mean()),
                          p_value=float(p_value), chance=1.0 / len(classes), n_trials=len(y), n_folds=n_folds,
                          n_features=X.shape[1], classifier=classifier, n_permutations=int(n_permutations),
                          screening=screening, fold_balanced_accuracy=tuple(float(f) for f in folds),
                          null=np.asarray(null, float))


# --------------------------------------------------------------------------- batched linear classifiers


def _loss(f: np.ndarray, y: np.ndarray, loss: str) -> np.ndarray:
    """Summed data loss of each problem's decision values (problems x samples)."""
    if loss == "logistic":
        return -log_expit(y * f).sum(1)
    return (np.maximum(0.0, 1.0 - y * f) ** 2).sum(1)


def fit_linear(Z: np.ndarray, y: np.ndarray, loss: str = "logistic", C: float = 1.0, intercept: bool = True,
               max_iter: int = 100, tol: float = 1e-12) -> np.ndarray:
    """Solve many L2-penalised linear classifiers at once by Newton's method with backtracking.

    ``Z`` is problems x samples x features (float64), ``y`` the shared labels in {-1, +1}.
    ``loss="logistic"``: ``0.5 |w|^2 + C sum log(1 + exp(-y (Z w + b)))`` with an unpenalised
    intercept ``b`` when ``intercept`` (scikit-learn's ``LogisticRegression``);
    ``loss="squared_hinge"``: ``0.5 |w|^2 + C sum max(0, 1 - y Z w)^2`` (liblinear's ``LinearSVC``
    when ``Z`` ends with a column of ones, its penalised intercept), with the generalised Hessian.
    Returns the coefficients, problems x (features + 1 if ``intercept``), the intercept last.
    """
    B, n, d = Z.shape
    if intercept:
        Z = np.concatenate([Z, np.ones((B, n, 1))], axis=2)
    D = Z.shape[2]
    penalty = np.ones(D)
    if intercept:
        penalty[-1] = 0.0
    theta = np.zeros((B, D))
    todo = np.arange(B)
    for _ in range(max_iter):
        if not len(todo):
            break
        Zt, th = Z[todo], theta[todo]
        f = np.matmul(Zt, th[:, :, None])[:, :, 0]
        if loss == "logistic":
            p = expit(-y * f)  # probability of the wrong class
            residual = y * p
            weights = C * p * (1.0 - p)
        else:
            margin = np.maximum(0.0, 1.0 - y * f)
            residual = 2.0 * y * margin
            weights = 2.0 * C * (margin > 0)
        grad = penalty * th - C * np.matmul(residual[:, None, :], Zt)[:, 0]
        H = np.matmul(np.swapaxes(Zt * weights[:, :, None], 1, 2), Zt)
        H[:, np.arange(D), np.arange(D)] += penalty + 1e-12
        step = -np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        slope = (grad * step).sum(1)  # negative: a descent direction
        start = 0.5 * (penalty * th ** 2).sum(1) + C * _loss(f, y, loss)
        converged = -slope < tol * (1.0 + np.abs(start))
        moving = np.flatnonzero(~converged)
        f_step = np.matmul(Zt[moving], step[moving, :, None])[:, :, 0]
        t = np.ones(len(moving))
        for _ in range(40):  # backtracking (Armijo) line search, per problem
            new_th = th[moving] + t[:, None] * step[moving]
            value = 0.5 * (penalty * new_th ** 2).sum(1) + C * _loss(f[moving] + t[:, None] * f_step, y, loss)
            short = value > start[moving] + 1e-4 * t * slope[moving] + 1e-13 * np.abs(start[moving])
            if not short.any():
                break
            t = np.where(short, t / 2, t)
        theta[todo[moving]] = th[moving] + t[:, None] * step[moving]
        todo = todo[moving]
    return theta


def _decision_values(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, loss: str, C: float) -> np.ndarray:
    """Standardise each problem's features on its training rows, fit, and return the test decision values."""
    mean = train.mean(axis=1, keepdims=True)
    scale = train.std(axis=1, keepdims=True)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # StandardScaler leaves constant features as they are
    train = (train - mean) / scale
    test = (test - mean) / scale
    B, n, _ = train.shape
    intercept = loss == "logistic"
    if not intercept:  # liblinear: the intercept is a penalised weight on a constant feature of 1
        train = np.concatenate([train, np.ones((B, n, 1))], axis=2)
        test = np.concatenate([test, np.ones((B, test.shape[1], 1))], axis=2)
    if train.shape[2] > n:  # more features than trials: solve in the row space of the training data
        U, S, Vt = np.linalg.svd(train, full_matrices=False)
        train = U * S[:, None, :]
        test = np.matmul(test, np.swapaxes(Vt, 1, 2))
    theta = fit_linear(train, y_train, loss=loss, C=C, intercept=intercept)
    if intercept:
        return np.einsum("bnd,bd->bn", test, theta[:, :-1]) + theta[:, -1:]
    return np.einsum("bnd,bd->bn", test, theta)


def _balanced_accuracy(y_true: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Balanced accuracy per row of predictions (True = the positive class), over the classes present."""
    recalls = [positive[:, y_true > 0].mean(1)] if (y_true > 0).any() else []
    if (y_true < 0).any():
        recalls.append((~positive[:, y_true < 0]).mean(1))
    return np.mean(recalls, axis=0)


def roc_auc_rows(y_pm: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of decision values (Mann-Whitney U from average ranks, as scikit-learn's roc_auc_score)."""
    from scipy.stats import rankdata

    positive = y_pm > 0
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(decision, axis=1)
    return (ranks[:, positive].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def sliding_auc(X: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                classifier: str = "logistic", C: float = 1.0) -> np.ndarray:
    """Held-out ROC AUC at every time point of trials x channels x times data: folds x times.

    The same scores as mne.decoding's ``SlidingEstimator`` with :func:`make_classifier`'s pipeline
    and ``scoring="roc_auc"`` (the test suite checks it), with every time point's classifier
    fitted at once by the batched Newton solver above: fast enough to repeat the whole
    cross-validation for hundreds of label permutations.
    """
    classes = np.unique(y)
    y_pm = np.where(np.asarray(y) == classes[-1], 1.0, -1.0)
    data = np.moveaxis(np.asarray(X, np.float64), 2, 0)  # times x trials x channels
    loss = "logistic" if classifier == "logistic" else "squared_hinge"
    return np.array([roc_auc_rows(y_pm[test], _decision_values(data[:, train], y_pm[train], data[:, test], loss, C))
                     for train, test in folds])


# --------------------------------------------------------------------------- searchlight


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


def _neighbours(seeds: np.ndarray, offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Column indices (into the masked data) of each seed's sphere, -1 padded at the end, as seeds x size."""
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
        decision = _decision_values(data[:, train], y_pm[train], data[:, test], loss, C)
        scores += _balanced_accuracy(y_pm[test], decision > 0)
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
    mask_data = np.asarray(mask.dataobj if hasattr(mask, "dataobj") else mask) > 0
    affine = np.asarray(mask.affine)
    X = np.asarray(X)
    if X.shape[1] != mask_data.sum():
        raise ValueError(f"X has {X.shape[1]} columns but the mask {mask_data.sum()} voxels")
    y, groups = np.asarray(y), np.asarray(groups)
    classes, _ = check_runs(y, groups)
    y_pm = np.where(y == classes[1], 1.0, -1.0)  # scikit-learn's positive class is the second in sorted order
    folds = [(train, test) for train, test in LeaveOneGroupOut().split(X, y, groups)]

    index = np.full(mask_data.shape, -1, dtype=np.int64)
    index[mask_data] = np.arange(mask_data.sum())
    voxels = np.argwhere(mask_data)  # the order of apply_mask (C order)
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
        return _neighbours(voxels[chunk], offsets, index)

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
