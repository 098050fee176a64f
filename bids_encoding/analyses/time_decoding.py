"""EEG/MEG decoding over time: a contrast decoded at every time point of the epochs, with time clusters.

Epochs around the contrast's trials (:mod:`..meeg.preprocessing`), baseline corrected,
with peak-to-peak amplitude rejection; mne.decoding's ``SlidingEstimator`` (or
``GeneralizingEstimator`` with ``generalize``) scores a scaled linear classifier at every
time point by ROC AUC in stratified k-fold cross-validation. Time clusters are tested by
permutation (Maris & Oostenveld 2007): the labels are shuffled and the whole
cross-validation repeated; a cluster is a run of time points whose AUC exceeds the 95th
percentile of all null AUCs, its mass the sum of AUC - 0.5 over it, and its p-value the
fraction of permutations whose largest cluster mass is at least as large (corrected over
time). The evoked response of each condition and their difference are written as ``_ave.fif``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..bids_io.meeg import MEEGRun
from ..contrasts import contrast_label, parse_contrast
from ..derivatives import Output, bids_label, column_descriptions, save_tsv_gz, write_tsv
from ..errors import UserError
from ..meeg.preprocessing import describe_epochs, preprocess, run_epochs
from ..models.classifiers import CLASSIFIERS, make_classifier, sliding_auc
from ..options import DecodingOptions, MEEGOptions, StatsOptions


CHANCE_AUC = 0.5
N_FOLDS = 5
CLUSTER_PERCENTILE = 95.0
DECODING_COLUMNS = {
    "time": "time from the trials' onset (s)",
    "roc_auc": "held-out area under the ROC curve, averaged over folds",
    "sd": "standard deviation of the AUC across folds",
    "cluster": "index of the significant-or-not time cluster the time point belongs to (n/a: none)",
    "p_value": "permutation p-value of that cluster, corrected over time (n/a: outside clusters or no permutations)",
}


def time_clusters(curve: np.ndarray, threshold: float, chance: float = CHANCE_AUC) -> list[tuple[int, int, float]]:
    """Runs of consecutive points above ``threshold``: (start, stop, mass = sum of curve - chance)."""
    above = np.concatenate([[False], curve > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(int)))
    return [(int(a), int(b), float(np.sum(curve[a:b] - chance))) for a, b in zip(edges[::2], edges[1::2])]


def cluster_test(observed: np.ndarray, null: np.ndarray) -> list[Output]:
    """Time clusters of ``observed`` with permutation p-values corrected over time (see the module doc)."""
    if not len(null):
        return []
    threshold = float(np.percentile(null, CLUSTER_PERCENTILE))
    largest = np.array([max((mass for *_, mass in time_clusters(curve, threshold)), default=0.0) for curve in null])
    return [{"Start": a, "Stop": b, "Mass": mass, "Threshold": threshold,
             "p": float((1 + np.sum(largest >= mass)) / (1 + len(null)))}
            for a, b, mass in time_clusters(observed, threshold)]


def decode_over_time(X: np.ndarray, y: np.ndarray, options: MEEGOptions, decoding: DecodingOptions,
                     stats: StatsOptions) -> tuple[np.ndarray, np.ndarray]:
    """Fold scores (folds x times, or folds x train times x test times when generalizing) by mne.decoding's
    estimators, and the permutation null of the mean curve (permutations x times; the diagonal when
    generalizing) by the batched solver that gives the same scores (:func:`~..models.classifiers.sliding_auc`)."""
    from mne.decoding import GeneralizingEstimator, SlidingEstimator, cross_val_multiscore
    from sklearn.model_selection import StratifiedKFold

    n_folds = int(min(N_FOLDS, np.bincount(y).min()))
    if n_folds < 2:
        raise UserError(f"decoding needs at least 2 trials of each condition after rejection, found {np.bincount(y).tolist()}",
                        fix="Relax the rejection (--reject-eeg) or give more runs")
    cv = StratifiedKFold(n_folds, shuffle=True, random_state=stats.seed)
    kind = GeneralizingEstimator if options.generalize else SlidingEstimator
    estimator = kind(make_classifier(decoding.classifier, stats.seed), scoring="roc_auc", n_jobs=options.n_jobs,
                     verbose=False)
    with threadpool_limits(limits=1):
        scores = cross_val_multiscore(estimator, X, y, cv=cv, verbose=False)
        rng = np.random.default_rng(stats.seed)
        null = []
        for _ in range(int(stats.n_permutations)):
            shuffled = rng.permutation(y)
            null.append(sliding_auc(X, shuffled, list(cv.split(X, shuffled)), decoding.classifier).mean(axis=0))
    return scores, np.array(null).reshape(-1, X.shape[2])


def fit_time_decoding(runs: Sequence[MEEGRun], out_dir: Path, options: MEEGOptions = MEEGOptions(),
                      decoding: DecodingOptions = DecodingOptions(),
                      stats: StatsOptions = StatsOptions()) -> list[Output]:
    """Decode the contrast at every time point; returns the decoding table and the evoked responses written."""
    import mne

    if not decoding.decode:
        raise UserError("decoding needs a contrast to decode", fix="Give one as --decode COLUMN=A,B")
    column, values = parse_contrast(decoding.decode)
    label = contrast_label(values)
    raws, record = preprocess(runs, options)
    per_run = [run_epochs(raw, run, column, values, options) for raw, run in zip(raws, runs)]
    epochs = mne.concatenate_epochs(per_run, on_mismatch="ignore", verbose=False)
    counts = {v: int(np.sum(epochs.events[:, 2] == code)) for code, v in enumerate(values, start=1)}
    n_total = sum(len(run.drop_log) for run in per_run)  # one entry per trial given, kept or not
    X, y = epochs.get_data(copy=True), (epochs.events[:, 2] == 2).astype(int)
    scores, null = decode_over_time(X, y, options, decoding, stats)
    curve = np.diagonal(scores, axis1=1, axis2=2) if options.generalize else scores
    mean = curve.mean(axis=0)
    clusters = cluster_test(mean, null)
    times = epochs.times
    cluster_of, p_of = np.full(len(times), np.nan), np.full(len(times), np.nan)
    for index, cluster in enumerate(clusters):
        cluster_of[cluster["Start"]:cluster["Stop"]], p_of[cluster["Start"]:cluster["Stop"]] = index, cluster["p"]
        cluster.update(Start=float(times[cluster["Start"]]), Stop=float(times[cluster["Stop"] - 1]))
    out_dir = Path(out_dir)
    table = pd.DataFrame({"time": times, "roc_auc": mean, "sd": curve.std(axis=0), "cluster": cluster_of,
                          "p_value": p_of})
    path = out_dir / f"desc-{label}_decoding.tsv"
    write_tsv(table, path)
    sources = [str(r.recording) for r in runs] + [str(r.events) for r in runs]
    datatype = runs[0].datatype
    peak = int(np.argmax(mean))
    metadata = {**column_descriptions(DECODING_COLUMNS), **record,
                **describe_epochs(options, datatype),
                "Contrast": {"Column": column, "Values": list(values)}, "PositiveClass": values[1],
                "Metric": "roc_auc", "ChanceLevel": CHANCE_AUC,
                "Classifier": f"{CLASSIFIERS[decoding.classifier]}, mne.decoding."
                              f"{'GeneralizingEstimator' if options.generalize else 'SlidingEstimator'}",
                "CrossValidation": f"StratifiedKFold({scores.shape[0]}, shuffle=True, random_state={stats.seed})",
                "Permutations": {"N": int(stats.n_permutations), "Scheme": "labels shuffled, whole cross-validation "
                                 "repeated; cluster threshold: 95th percentile of all null AUCs; p corrected over time "
                                 "by the largest null cluster mass"},
                "Clusters": clusters, "Peak": {"Time": float(times[peak]), "RocAuc": float(mean[peak])},
                "NTrials": counts, "NRejected": n_total - sum(counts.values()), "Seed": stats.seed,
                "Sources": sources}
    outputs = [Output(in_file=str(path), suffix="decoding", datatype=datatype, entities={"desc": label},
                      metadata=metadata)]
    if options.generalize:
        generalization = out_dir / f"desc-{label}Generalization_decoding.tsv.gz"
        save_tsv_gz(scores.mean(axis=0), generalization)
        outputs.append(Output(in_file=str(generalization), suffix="decoding", datatype=datatype,
                              entities={"desc": label + "Generalization"},
                              metadata={"Description": "ROC AUC of the classifier trained at each time (rows) and tested "
                                                       "at each time (columns), averaged over folds", "Times": times.tolist(),
                                        **{k: metadata[k] for k in ("Metric", "ChanceLevel", "Classifier", "CrossValidation")},
                                        "Sources": sources}))
    evokeds = {value: epochs[value].average() for value in values}
    evokeds[label.replace("Vs", "Minus")] = mne.combine_evoked([evokeds[values[0]], evokeds[values[1]]], [1, -1])
    for name, evoked in evokeds.items():
        ave = out_dir / f"desc-{bids_label(name)}_ave.fif"
        evoked.save(ave, overwrite=True, verbose=False)
        outputs.append(Output(in_file=str(ave), suffix="ave", datatype=datatype, entities={"desc": bids_label(name)},
                              metadata={"Description": f"evoked response: {name} (mean over trials; the difference wave "
                                                       "for 'Minus')", "NAverage": int(evoked.nave), **record,
                                        **describe_epochs(options, datatype), "Sources": sources}))
    return outputs

