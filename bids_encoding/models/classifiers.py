"""Decoding models: cross-validated linear classifiers, permutation tests, batched exact solvers.

Whole-pattern decoding is plain scikit-learn: a ``Pipeline`` of ``StandardScaler``
and ``LogisticRegression`` (or ``LinearSVC``), leave-one-run-out cross-validation
(``LeaveOneGroupOut`` with runs as groups), balanced accuracy and ROC AUC (from
``decision_function``) averaged over folds, and ``permutation_test_score`` with the
runs as groups, so that labels are permuted within runs only.

The batched solvers here (:func:`fit_linear`, :func:`decision_values`) give the same decision values as
these scikit-learn pipelines; :mod:`.searchlight` and EEG/MEG decoding over time use them.
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

CLASSIFIERS = {
    "logistic": "StandardScaler + LogisticRegression (L2, C=1, lbfgs)",
    "svm": "StandardScaler + LinearSVC (L2, squared hinge, C=1)",
}
CV_DESCRIPTION = "leave-one-run-out (sklearn LeaveOneGroupOut, runs as groups); scores averaged over folds"
PERMUTATION_DESCRIPTION = ("labels permuted within runs (sklearn permutation_test_score with the runs as groups), "
                           "the whole cross-validation repeated per permutation; p = (1 + #{null >= observed}) / "
                           "(1 + n_permutations), one-sided")

SCORE_COLUMNS = {
    "source": "what was decoded: 'brain' (trial responses in the brain mask, or the region given) or a feature space",
    "classifier": "the classifier (see Classifier)",
    "balanced_accuracy": "held-out balanced accuracy (mean recall of the two classes), averaged over folds",
    "roc_auc": "held-out area under the ROC curve of the decision function, averaged over folds",
    "p_value": "one-sided permutation p-value of the balanced accuracy (n/a when no permutations were run)",
    "chance": "chance level of balanced accuracy and ROC AUC",
    "n_trials": "trials decoded (both classes, all runs)",
    "n_folds": "cross-validation folds (runs)",
    "n_features": "features per trial (voxels, or the feature space's dimensions)",
}
"""The columns of a ``_decoding.tsv`` table (:meth:`DecodingScores.row`), with their descriptions."""


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


def decision_values(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, loss: str, C: float) -> np.ndarray:
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


def balanced_accuracy_rows(y_true: np.ndarray, positive: np.ndarray) -> np.ndarray:
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
    return np.array([roc_auc_rows(y_pm[test], decision_values(data[:, train], y_pm[train], data[:, test], loss, C))
                     for train, test in folds])
