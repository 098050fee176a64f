"""The EEG/MEG stages of one task: time-resolved decoding of a contrast, and temporal response functions.

Every run is read with mne-bids (bad channels from ``channels.tsv``), then, in this
order and with every parameter recorded in the sidecars (:meth:`MEEGOptions.describe`):
the channels marked bad in any run are dropped from all runs (so that runs can be
pooled), EEG is re-referenced to the average of the remaining channels, the data are
band-pass filtered (MNE's default FIR, ``firwin``) and resampled.

* **Decoding** (``--analysis decoding``): epochs around the contrast's trials, baseline
  corrected, with peak-to-peak amplitude rejection; mne.decoding's ``SlidingEstimator``
  (or ``GeneralizingEstimator`` with ``generalize``) scores a scaled linear classifier
  at every time point by ROC AUC in stratified k-fold cross-validation. Time clusters
  are tested by permutation (Maris & Oostenveld 2007): the labels are shuffled and the
  whole cross-validation repeated; a cluster is a run of time points whose AUC exceeds
  the 95th percentile of all null AUCs, its mass the sum of AUC - 0.5 over it, and its
  p-value the fraction of permutations whose largest cluster mass is at least as large
  (corrected over time). The evoked response of each condition and their difference
  are written as ``_ave.fif``.
* **Temporal response functions** (``--analysis encoding``): each feature space's
  word-level (or event-level) features are placed at their onsets' samples and mapped to
  every channel by mne.decoding's ``ReceptiveField`` (``TimeDelayingRidge``) over lags
  ``trf_tmin`` to ``trf_tmax``. Features and channels are z-scored within each run;
  training runs are concatenated with zero gaps longer than the lags, so no delay
  crosses runs. The ridge penalty is chosen by leave-one-run-out inside the training
  runs, and each channel's held-out correlation comes from leave-one-run-out
  (contiguous thirds of a single run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from . import features as feature_store
from .bids_io.meeg import MEEGRun, read_recording
from .decoding import contrast_events, contrast_label, parse_contrast
from .derivatives import bids_label, save_tsv_gz
from .errors import UserError
from .models.decoding import CLASSIFIERS, make_classifier, sliding_auc

CHANCE_AUC = 0.5
N_FOLDS = 5
TRF_ALPHAS = np.logspace(-2, 5, 8)  # times the number of training samples (features and channels are z-scored)
CLUSTER_PERCENTILE = 95.0
DECODING_COLUMNS = {
    "time": "time from the trials' onset (s)",
    "roc_auc": "held-out area under the ROC curve, averaged over folds",
    "sd": "standard deviation of the AUC across folds",
    "cluster": "index of the significant-or-not time cluster the time point belongs to (n/a: none)",
    "p_value": "permutation p-value of that cluster, corrected over time (n/a: outside clusters or no permutations)",
}
ENCODING_COLUMNS = {
    "channel": "channel name",
    "r": "held-out correlation between the recorded and the predicted signal, averaged over folds",
}


@dataclass(frozen=True)
class MEEGOptions:
    """Preprocessing, epoching, decoding and TRF choices (one place, recorded in every sidecar)."""

    contrast: str = ""
    l_freq: float | None = 0.1
    h_freq: float | None = 40.0
    resample: float = 100.0
    tmin: float = -0.2
    tmax: float = 0.8
    baseline: tuple[float | None, float | None] | None = (None, 0.0)
    reject_eeg: float = 150.0  # µV peak to peak; 0 turns it off
    reject_mag: float = 4000.0  # fT
    reject_grad: float = 4000.0  # fT/cm
    classifier: str = "logistic"
    n_permutations: int = 1000
    generalize: bool = False
    trf_tmin: float = -0.1
    trf_tmax: float = 0.6
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.contrast:
            parse_contrast(self.contrast)
        if not self.tmin < self.tmax or not self.trf_tmin < self.trf_tmax:
            raise UserError(f"the time window {self.tmin:g} to {self.tmax:g} s (TRF lags {self.trf_tmin:g} to "
                            f"{self.trf_tmax:g} s) must start before it ends", fix="e.g. --epochs -0.2 0.8")
        if self.l_freq and self.h_freq and not self.l_freq < self.h_freq:
            raise UserError(f"the band-pass filter's low edge ({self.l_freq} Hz) must be below its high edge "
                            f"({self.h_freq} Hz)", fix="e.g. --filter 0.1 40")
        if self.h_freq and self.resample and not self.h_freq < self.resample / 2:
            raise UserError(f"the low-pass edge ({self.h_freq} Hz) must be below half the resampling rate "
                            f"({self.resample} Hz), or the resampled data alias",
                            fix=f"Lower --filter's high edge below {self.resample / 2:g} Hz, or raise --resample")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MEEGOptions":
        values = dict(values)
        if values.get("baseline") is not None:
            values["baseline"] = tuple(values["baseline"])
        return cls(**values)

    def rejection(self, datatype: str) -> dict[str, float] | None:
        """mne's ``reject`` dict, in SI units."""
        limits = ({"eeg": self.reject_eeg * 1e-6} if datatype == "eeg"
                  else {"mag": self.reject_mag * 1e-15, "grad": self.reject_grad * 1e-13})
        limits = {k: v for k, v in limits.items() if v > 0}
        return limits or None

    def describe(self, datatype: str) -> dict[str, Any]:
        return {"Preprocessing": {
            "BadChannels": "channels marked bad in any run's channels.tsv are dropped from every run",
            "Reference": "average of the remaining EEG channels" if datatype == "eeg" else None,
            "BandPass": {"Low": self.l_freq, "High": self.h_freq, "Units": "Hz",
                         "Filter": "mne.io.Raw.filter, FIR (firwin), zero-phase, MNE's default transition bands"},
            "ResamplingFrequency": self.resample}}

    def describe_epochs(self, datatype: str) -> dict[str, Any]:
        return {"Epochs": {"TMin": self.tmin, "TMax": self.tmax,
                           "Baseline": list(self.baseline) if self.baseline else None,
                           "PeakToPeakRejection": self.rejection(datatype)}}


# --------------------------------------------------------------------------- reading and preprocessing


def data_channels(raw, datatype: str) -> list[str]:
    """The raw's EEG channels, or MEG channels (magnetometers and gradiometers), bad ones included."""
    picks = raw.copy().pick("eeg" if datatype == "eeg" else "meg", exclude=[]).ch_names
    return list(picks)


def preprocess(runs: Sequence[MEEGRun], options: MEEGOptions) -> tuple[list, dict[str, Any]]:
    """Every run read, pooled channels checked, bad channels dropped, referenced, filtered and resampled."""
    raws = [read_recording(run) for run in runs]
    datatype = runs[0].datatype
    channels = [data_channels(raw, datatype) for raw in raws]
    if not channels[0]:
        raise UserError(f"the recording has no {datatype.upper()} channels", path=runs[0].recording,
                        fix="Check the channel types in channels.tsv")
    for run, names in zip(runs[1:], channels[1:]):
        missing = [c for c in channels[0] if c not in names]
        extra = [c for c in names if c not in channels[0]]
        if missing or extra:
            raise UserError(f"this run's channels differ from those of {runs[0].recording.name}: "
                            + "; ".join(part for part in (f"missing {', '.join(missing[:8])}" if missing else "",
                                                          f"extra {', '.join(extra[:8])}" if extra else "") if part),
                            path=run.recording,
                            fix="Give runs recorded with the same channels, or mark the odd ones 'bad' in channels.tsv "
                                "of every run")
    bads = sorted(set().union(*(set(raw.info["bads"]) for raw in raws)) & set(channels[0]))
    if len(bads) >= len(channels[0]) - 1:
        raise UserError(f"{len(bads)} of the {len(channels[0])} channels are marked bad", path=runs[0].recording,
                        fix="Check the status column of channels.tsv")
    for raw in raws:
        raw.set_annotations(None)  # events come from events.tsv; annotations cannot be pooled across epochs
        raw.pick([c for c in channels[0] if c not in bads])
        if datatype == "eeg":
            raw.set_eeg_reference("average", projection=False, verbose=False)
        raw.filter(options.l_freq, options.h_freq, fir_design="firwin", verbose=False)
        if abs(raw.info["sfreq"] - options.resample) > 1e-6:
            raw.resample(options.resample, verbose=False)
    record = options.describe(datatype)
    record["Preprocessing"]["DroppedBadChannels"] = bads
    record["Preprocessing"]["NChannels"] = len(channels[0]) - len(bads)
    return raws, record


# --------------------------------------------------------------------------- time-resolved decoding


def run_epochs(raw, run: MEEGRun, column: str, values: Sequence[str], options: MEEGOptions):
    """Epochs of one run's contrast trials (event codes 1 and 2 for the two values)."""
    import mne

    events = contrast_events(run.events, column, values)
    trials = events[events["label"] != ""]
    samples = raw.first_samp + np.round(trials["onset"].to_numpy(float) * raw.info["sfreq"]).astype(int)
    codes = {value: index + 1 for index, value in enumerate(values)}
    array = np.column_stack([samples, np.zeros(len(samples), int), trials["label"].map(codes).to_numpy(int)])
    return mne.Epochs(raw, array, codes, tmin=options.tmin, tmax=options.tmax, baseline=options.baseline,
                      reject=options.rejection(run.datatype), preload=True, event_repeated="drop", on_missing="ignore",
                      verbose=False)


def time_clusters(curve: np.ndarray, threshold: float, chance: float = CHANCE_AUC) -> list[tuple[int, int, float]]:
    """Runs of consecutive points above ``threshold``: (start, stop, mass = sum of curve - chance)."""
    above = np.concatenate([[False], curve > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(int)))
    return [(int(a), int(b), float(np.sum(curve[a:b] - chance))) for a, b in zip(edges[::2], edges[1::2])]


def cluster_test(observed: np.ndarray, null: np.ndarray) -> list[dict[str, Any]]:
    """Time clusters of ``observed`` with permutation p-values corrected over time (see the module doc)."""
    if not len(null):
        return []
    threshold = float(np.percentile(null, CLUSTER_PERCENTILE))
    largest = np.array([max((mass for *_, mass in time_clusters(curve, threshold)), default=0.0) for curve in null])
    return [{"Start": a, "Stop": b, "Mass": mass, "Threshold": threshold,
             "p": float((1 + np.sum(largest >= mass)) / (1 + len(null)))}
            for a, b, mass in time_clusters(observed, threshold)]


def decode_over_time(X: np.ndarray, y: np.ndarray, options: MEEGOptions) -> tuple[np.ndarray, np.ndarray]:
    """Fold scores (folds x times, or folds x train times x test times when generalizing) by mne.decoding's
    estimators, and the permutation null of the mean curve (permutations x times; the diagonal when
    generalizing) by the batched solver that gives the same scores (:func:`~.models.decoding.sliding_auc`)."""
    from mne.decoding import GeneralizingEstimator, SlidingEstimator, cross_val_multiscore
    from sklearn.model_selection import StratifiedKFold

    n_folds = int(min(N_FOLDS, np.bincount(y).min()))
    if n_folds < 2:
        raise UserError(f"decoding needs at least 2 trials of each condition after rejection, found {np.bincount(y).tolist()}",
                        fix="Relax the rejection (--reject-eeg) or give more runs")
    cv = StratifiedKFold(n_folds, shuffle=True, random_state=options.seed)
    kind = GeneralizingEstimator if options.generalize else SlidingEstimator
    estimator = kind(make_classifier(options.classifier, options.seed), scoring="roc_auc", n_jobs=options.n_jobs,
                     verbose=False)
    with threadpool_limits(limits=1):
        scores = cross_val_multiscore(estimator, X, y, cv=cv, verbose=False)
        rng = np.random.default_rng(options.seed)
        null = []
        for _ in range(int(options.n_permutations)):
            shuffled = rng.permutation(y)
            null.append(sliding_auc(X, shuffled, list(cv.split(X, shuffled)), options.classifier).mean(axis=0))
    return scores, np.array(null).reshape(-1, X.shape[2])


def fit_time_decoding(runs: Sequence[MEEGRun], out_dir: Path, options: MEEGOptions) -> list[dict[str, Any]]:
    """Decode the contrast at every time point; returns the decoding table and the evoked responses written."""
    import mne

    if not options.contrast:
        raise UserError("decoding needs a contrast to decode", fix="Give one as --decode COLUMN=A,B")
    column, values = parse_contrast(options.contrast)
    label = contrast_label(values)
    raws, record = preprocess(runs, options)
    per_run = [run_epochs(raw, run, column, values, options) for raw, run in zip(raws, runs)]
    epochs = mne.concatenate_epochs(per_run, on_mismatch="ignore", verbose=False)
    counts = {v: int(np.sum(epochs.events[:, 2] == code)) for code, v in enumerate(values, start=1)}
    n_total = sum(len(run.drop_log) for run in per_run)  # one entry per trial given, kept or not
    X, y = epochs.get_data(copy=True), (epochs.events[:, 2] == 2).astype(int)
    scores, null = decode_over_time(X, y, options)
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
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")
    sources = [str(r.recording) for r in runs] + [str(r.events) for r in runs]
    datatype = runs[0].datatype
    peak = int(np.argmax(mean))
    metadata = {**{k: {"Description": v} for k, v in DECODING_COLUMNS.items()}, **record,
                **options.describe_epochs(datatype),
                "Contrast": {"Column": column, "Values": list(values)}, "PositiveClass": values[1],
                "Metric": "roc_auc", "ChanceLevel": CHANCE_AUC,
                "Classifier": f"{CLASSIFIERS[options.classifier]}, mne.decoding."
                              f"{'GeneralizingEstimator' if options.generalize else 'SlidingEstimator'}",
                "CrossValidation": f"StratifiedKFold({scores.shape[0]}, shuffle=True, random_state={options.seed})",
                "Permutations": {"N": int(options.n_permutations), "Scheme": "labels shuffled, whole cross-validation "
                                 "repeated; cluster threshold: 95th percentile of all null AUCs; p corrected over time "
                                 "by the largest null cluster mass"},
                "Clusters": clusters, "Peak": {"Time": float(times[peak]), "RocAuc": float(mean[peak])},
                "NTrials": counts, "NRejected": n_total - sum(counts.values()), "Seed": options.seed,
                "Sources": sources}
    outputs = [{"in_file": str(path), "suffix": "decoding", "datatype": datatype, "entities": {"desc": label},
                "metadata": metadata}]
    if options.generalize:
        generalization = out_dir / f"desc-{label}Generalization_decoding.tsv.gz"
        save_tsv_gz(scores.mean(axis=0), generalization)
        outputs.append({"in_file": str(generalization), "suffix": "decoding", "datatype": datatype,
                        "entities": {"desc": label + "Generalization"},
                        "metadata": {"Description": "ROC AUC of the classifier trained at each time (rows) and tested "
                                                    "at each time (columns), averaged over folds", "Times": times.tolist(),
                                     **{k: metadata[k] for k in ("Metric", "ChanceLevel", "Classifier", "CrossValidation")},
                                     "Sources": sources}})
    evokeds = {value: epochs[value].average() for value in values}
    evokeds[label.replace("Vs", "Minus")] = mne.combine_evoked([evokeds[values[0]], evokeds[values[1]]], [1, -1])
    for name, evoked in evokeds.items():
        ave = out_dir / f"desc-{bids_label(name)}_ave.fif"
        evoked.save(ave, overwrite=True, verbose=False)
        outputs.append({"in_file": str(ave), "suffix": "ave", "datatype": datatype,
                        "entities": {"desc": bids_label(name)},
                        "metadata": {"Description": f"evoked response: {name} (mean over trials; the difference wave "
                                                    "for 'Minus')", "NAverage": int(evoked.nave), **record,
                                     **options.describe_epochs(datatype), "Sources": sources}})
    return outputs


# --------------------------------------------------------------------------- temporal response functions


def _zscore(values: np.ndarray) -> np.ndarray:
    scale = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def impulse_design(onsets: np.ndarray, values: np.ndarray, n_times: int, sfreq: float) -> np.ndarray:
    """Features placed at their onsets' samples (summed where two share a sample), zero elsewhere; z-scored."""
    design = np.zeros((n_times, values.shape[1]))
    samples = np.round(np.asarray(onsets) * sfreq).astype(int)
    inside = (samples >= 0) & (samples < n_times)
    np.add.at(design, samples[inside], values[inside])
    return _zscore(design)


def _stack(parts: list[np.ndarray], gap: int) -> np.ndarray:
    """Runs one after the other with ``gap`` zero samples between them."""
    pad = np.zeros((gap, parts[0].shape[1]))
    return np.concatenate([p for part in parts for p in (part, pad)][:-1])


def trf_folds(n_runs: int) -> list[tuple[list[int], int]]:
    """Leave-one-run-out folds: (training runs, test run)."""
    return [([r for r in range(n_runs) if r != test], test) for test in range(n_runs)]


def _fit_rf(X: list[np.ndarray], Y: list[np.ndarray], alpha: float, options: MEEGOptions, sfreq: float, gap: int):
    import mne
    from mne.decoding import ReceptiveField

    rf = ReceptiveField(options.trf_tmin, options.trf_tmax, sfreq, estimator=alpha, scoring="corrcoef")
    with mne.use_log_level("error"):
        rf.fit(_stack(X, gap), _stack(Y, gap))
    return rf


def _held_out_r(rf, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    prediction = rf.predict(X)[rf.valid_samples_]
    observed = Y[rf.valid_samples_]
    p, o = _zscore(prediction), _zscore(observed)
    return (p * o).mean(axis=0)


def _split_single_run(X: np.ndarray, Y: np.ndarray, parts: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    bounds = np.linspace(0, len(X), parts + 1).astype(int)
    return ([X[a:b] for a, b in zip(bounds[:-1], bounds[1:])], [Y[a:b] for a, b in zip(bounds[:-1], bounds[1:])])


def _inner_alpha(X_runs: list[np.ndarray], Y_runs: list[np.ndarray], options: MEEGOptions, sfreq: float,
                 gap: int) -> float:
    """The relative penalty of :data:`TRF_ALPHAS` with the best mean held-out r over channels, leave-one-run-out
    within the training runs (1.0 when there is a single training run)."""
    if len(X_runs) < 2:
        return 1.0
    n = sum(len(x) for x in X_runs)
    scores = [np.mean([_held_out_r(_fit_rf([X_runs[i] for i in train], [Y_runs[i] for i in train], relative * n,
                                           options, sfreq, gap), X_runs[test], Y_runs[test]).mean()
                       for train, test in trf_folds(len(X_runs))])
              for relative in TRF_ALPHAS]
    return float(TRF_ALPHAS[int(np.argmax(scores))])


def cross_validated_trf(X_runs: list[np.ndarray], Y_runs: list[np.ndarray], options: MEEGOptions,
                        sfreq: float) -> dict[str, Any]:
    """Held-out correlation per channel (leave-one-run-out, penalty chosen inside the training runs) and the TRF
    fitted on every run with the median chosen penalty."""
    gap = int(np.ceil((options.trf_tmax - options.trf_tmin) * sfreq)) + 2
    if len(X_runs) == 1:
        X_runs, Y_runs = _split_single_run(X_runs[0], Y_runs[0])
    fold_r, chosen = [], []
    for train, test in trf_folds(len(X_runs)):
        best_alpha = _inner_alpha([X_runs[r] for r in train], [Y_runs[r] for r in train], options, sfreq, gap)
        chosen.append(best_alpha)
        rf = _fit_rf([X_runs[r] for r in train], [Y_runs[r] for r in train],
                     best_alpha * sum(len(X_runs[r]) for r in train), options, sfreq, gap)
        fold_r.append(_held_out_r(rf, X_runs[test], Y_runs[test]))
    final_alpha = float(np.median(chosen))
    final = _fit_rf(X_runs, Y_runs, final_alpha * sum(len(x) for x in X_runs), options, sfreq, gap)
    return {"r": np.mean(fold_r, axis=0), "fold_r": np.array(fold_r), "alphas": chosen, "alpha": final_alpha,
            "coef": final.coef_, "lags": final.delays_ / sfreq}


def fit_trf(runs: Sequence[MEEGRun], feature_files: Sequence[Path], out_dir: Path,
            options: MEEGOptions) -> list[dict[str, Any]]:
    """One TRF per feature space of one extractor (one features file per run); returns the tables written."""
    if len(feature_files) != len(runs):
        raise UserError(f"{len(feature_files)} feature files for {len(runs)} runs",
                        fix="Give one feature file per run, in the order of the runs")
    raws, record = preprocess(runs, options)
    sfreq = raws[0].info["sfreq"]
    channels = raws[0].ch_names
    Y_runs = [_zscore(raw.get_data().T) for raw in raws]
    loaded = [feature_store.load(Path(f)) for f in feature_files]
    extractor = (loaded[0][1].get("Plugin") or {}).get("Name") or "features"
    out_dir, datatype = Path(out_dir), runs[0].datatype
    sources = [str(r.recording) for r in runs] + [str(r.events) for r in runs]
    outputs = []
    for space, columns in loaded[0][0].columns.items():
        name = bids_label(extractor, space)
        X_runs = [impulse_design(features.onset, np.asarray(features.spaces[space], float), len(Y), sfreq)
                  for (features, _), Y in zip(loaded, Y_runs)]
        fit = cross_validated_trf(X_runs, Y_runs, options, sfreq)
        table = pd.DataFrame({"channel": channels, "r": fit["r"],
                              **{f"r_fold{i + 1}": r for i, r in enumerate(fit["fold_r"])}})
        scores_path = out_dir / f"desc-{name}_encoding.tsv"
        table.to_csv(scores_path, sep="\t", index=False, float_format="%.6g", lineterminator="\n")
        coef = fit["coef"]  # channels x features x lags
        rows = [np.concatenate([[f, lag], coef[:, f, k]]) for f in range(coef.shape[1])
                for k, lag in enumerate(fit["lags"])]
        trf_path = out_dir / f"desc-{name}_trf.tsv.gz"
        save_tsv_gz(np.array(rows), trf_path)
        model = {"Model": "mne.decoding.ReceptiveField (TimeDelayingRidge), features and channels z-scored per run",
                 "Lags": {"TMin": options.trf_tmin, "TMax": options.trf_tmax, "Units": "s"},
                 "CrossValidation": "leave-one-run-out (contiguous thirds of a single run)",
                 "RidgePenalty": {"Grid": (TRF_ALPHAS).tolist(), "Scale": "times the number of training samples",
                                  "ChosenPerFold": fit["alphas"], "Final": fit["alpha"],
                                  "Selection": "leave-one-run-out inside the training runs, mean held-out r over channels"},
                 "Features": {"Extractor": extractor, "Space": space, "Columns": list(columns),
                              "Provenance": loaded[0][1]},
                 **record}
        outputs.append({"in_file": str(scores_path), "suffix": "encoding", "datatype": datatype,
                        "entities": {"desc": name},
                        "metadata": {**{k: {"Description": v} for k, v in ENCODING_COLUMNS.items()}, **model,
                                     "Sources": sources}})
        outputs.append({"in_file": str(trf_path), "suffix": "trf", "datatype": datatype, "entities": {"desc": name},
                        "metadata": {"Columns": ["feature", "lag"] + list(channels),
                                     "Description": "TRF weights fitted on every run: one row per feature (index into "
                                                    "Features.Columns) and lag (s), one column per channel",
                                     **model, "Sources": sources}})
    return outputs
