"""EEG/MEG temporal response functions: each feature space mapped to every channel over a range of lags.

Each feature space's word-level (or event-level) features are placed at their onsets'
samples, continuous features (an audio envelope) are resampled to the recording's rate
(:func:`..meeg.preprocessing.feature_design`), and each is mapped to every channel by
mne.decoding's ``ReceptiveField`` (``TimeDelayingRidge``) over ``trf_lags``. Features and
channels are z-scored within each run; training runs are concatenated with zero gaps
longer than the lags, so no delay crosses runs. The ridge penalty is chosen by
leave-one-run-out inside the training runs, and each channel's held-out correlation
comes from leave-one-run-out (contiguous thirds of a single run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import features as feature_store
from ..bids_io.meeg import MEEGRun
from ..derivatives import Output, bids_label, column_descriptions, save_tsv_gz, write_tsv
from ..errors import UserError
from ..meeg.preprocessing import feature_design, preprocess
from ..models.standardize import zscore
from ..options import MEEGOptions


TRF_ALPHAS = np.logspace(-2, 5, 8)  # times the number of training samples (features and channels are z-scored)
ENCODING_COLUMNS = {
    "channel": "channel name",
    "r": "held-out correlation between the recorded and the predicted signal, averaged over folds",
}


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

    rf = ReceptiveField(options.trf_lags[0], options.trf_lags[1], sfreq, estimator=alpha, scoring="corrcoef")
    with mne.use_log_level("error"):
        rf.fit(_stack(X, gap), _stack(Y, gap))
    return rf


def _held_out_r(rf, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    prediction = rf.predict(X)[rf.valid_samples_]
    observed = Y[rf.valid_samples_]
    p, o = zscore(prediction), zscore(observed)
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
    gap = int(np.ceil((options.trf_lags[1] - options.trf_lags[0]) * sfreq)) + 2
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
            options: MEEGOptions = MEEGOptions()) -> list[Output]:
    """One TRF per feature space of one extractor (one features file per run); returns the tables written."""
    if len(feature_files) != len(runs):
        raise UserError(f"{len(feature_files)} feature files for {len(runs)} runs",
                        fix="Give one feature file per run, in the order of the runs")
    raws, record = preprocess(runs, options)
    sfreq = raws[0].info["sfreq"]
    channels = raws[0].ch_names
    Y_runs = [zscore(raw.get_data().T) for raw in raws]
    loaded = [feature_store.load(Path(f)) for f in feature_files]
    extractor = (loaded[0][1].get("Plugin") or {}).get("Name") or "features"
    out_dir, datatype = Path(out_dir), runs[0].datatype
    sources = [str(r.recording) for r in runs] + [str(r.events) for r in runs]
    outputs = []
    for space, columns in loaded[0][0].columns.items():
        name = bids_label(extractor, space)
        X_runs = [feature_design(features, space, len(Y), sfreq) for (features, _), Y in zip(loaded, Y_runs)]
        fit = cross_validated_trf(X_runs, Y_runs, options, sfreq)
        table = pd.DataFrame({"channel": channels, "r": fit["r"],
                              **{f"r_fold{i + 1}": r for i, r in enumerate(fit["fold_r"])}})
        scores_path = out_dir / f"desc-{name}_encoding.tsv"
        write_tsv(table, scores_path)
        coef = fit["coef"]  # channels x features x lags
        rows = [np.concatenate([[f, lag], coef[:, f, k]]) for f in range(coef.shape[1])
                for k, lag in enumerate(fit["lags"])]
        trf_path = out_dir / f"desc-{name}_trf.tsv.gz"
        save_tsv_gz(np.array(rows), trf_path)
        model = {"Model": "mne.decoding.ReceptiveField (TimeDelayingRidge), features and channels z-scored per run",
                 "Lags": {"TMin": options.trf_lags[0], "TMax": options.trf_lags[1], "Units": "s"},
                 "CrossValidation": "leave-one-run-out (contiguous thirds of a single run)",
                 "RidgePenalty": {"Grid": (TRF_ALPHAS).tolist(), "Scale": "times the number of training samples",
                                  "ChosenPerFold": fit["alphas"], "Final": fit["alpha"],
                                  "Selection": "leave-one-run-out inside the training runs, mean held-out r over channels"},
                 "Features": {"Extractor": extractor, "Space": space, "Columns": list(columns),
                              "Provenance": loaded[0][1]},
                 **record}
        outputs.append(Output(in_file=str(scores_path), suffix="encoding", datatype=datatype,
                              entities={"desc": name},
                              metadata={**column_descriptions(ENCODING_COLUMNS), **model,
                                        "Sources": sources}))
        outputs.append(Output(in_file=str(trf_path), suffix="trf", datatype=datatype, entities={"desc": name},
                              metadata={"Columns": ["feature", "lag"] + list(channels),
                                        "Description": "TRF weights fitted on every run: one row per feature (index into "
                                                       "Features.Columns) and lag (s), one column per channel",
                                        **model, "Sources": sources}))
    return outputs

