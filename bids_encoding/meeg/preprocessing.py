"""EEG/MEG data access: recordings pooled across runs, preprocessed, cut into epochs or placed on the sample grid.

Every run is read with mne-bids (:func:`..bids_io.meeg.read_recording`; bad channels
from ``channels.tsv``), then, in this order and with every parameter recorded in the
sidecars (:func:`describe`): the channels marked bad in any run are dropped from all
runs (so that runs can be pooled), EEG is re-referenced to the average of the
remaining channels, the data are band-pass filtered (MNE's default FIR, ``firwin``)
and resampled.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..bids_io.meeg import MEEGRun, read_recording
from ..contrasts import contrast_events
from ..errors import UserError
from ..models.signal import resample_signal
from ..models.standardize import zscore
from ..options import MEEGOptions
from ..plugins.types import FeatureSet


def describe(options: MEEGOptions, datatype: str) -> dict[str, Any]:
    """The preprocessing, for every sidecar."""
    return {"Preprocessing": {
        "BadChannels": "channels marked bad in any run's channels.tsv are dropped from every run",
        "Reference": "average of the remaining EEG channels" if datatype == "eeg" else None,
        "BandPass": {"Low": options.l_freq, "High": options.h_freq, "Units": "Hz",
                     "Filter": "mne.io.Raw.filter, FIR (firwin), zero-phase, MNE's default transition bands"},
        "ResamplingFrequency": options.resample}}


def describe_epochs(options: MEEGOptions, datatype: str) -> dict[str, Any]:
    """The epochs' window, baseline and rejection, for every sidecar."""
    return {"Epochs": {"TMin": options.epochs[0], "TMax": options.epochs[1],
                       "Baseline": list(options.baseline_window), "PeakToPeakRejection": options.rejection(datatype)}}


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
    record = describe(options, datatype)
    record["Preprocessing"]["DroppedBadChannels"] = bads
    record["Preprocessing"]["NChannels"] = len(channels[0]) - len(bads)
    return raws, record


def run_epochs(raw, run: MEEGRun, column: str, values: Sequence[str], options: MEEGOptions):
    """Epochs of one run's contrast trials (event codes 1 and 2 for the two values)."""
    import mne

    events = contrast_events(run.events, column, values)
    trials = events[events["label"] != ""]
    samples = raw.first_samp + np.round(trials["onset"].to_numpy(float) * raw.info["sfreq"]).astype(int)
    codes = {value: index + 1 for index, value in enumerate(values)}
    array = np.column_stack([samples, np.zeros(len(samples), int), trials["label"].map(codes).to_numpy(int)])
    return mne.Epochs(raw, array, codes, tmin=options.epochs[0], tmax=options.epochs[1], baseline=options.baseline_window,
                      reject=options.rejection(run.datatype), preload=True, event_repeated="drop", on_missing="ignore",
                      verbose=False)


def feature_design(features: FeatureSet, space: str, n_times: int, sfreq: float) -> np.ndarray:
    """One feature space on the recording's sample grid, z-scored: event features as impulses at their onsets
    (:func:`impulse_design`), continuous features (an audio envelope, a speech model's frames) resampled to the
    recording's rate, anti-aliased (:func:`..models.signal.resample_signal`)."""
    values = np.asarray(features.spaces[space], float)
    if features.rate is None:
        return impulse_design(features.onset, values, n_times, sfreq)
    return zscore(resample_signal(features.onset, values, features.rate, n_times, sfreq))


def impulse_design(onsets: np.ndarray, values: np.ndarray, n_times: int, sfreq: float) -> np.ndarray:
    """Features placed at their onsets' samples (summed where two share a sample), zero elsewhere; z-scored."""
    design = np.zeros((n_times, values.shape[1]))
    samples = np.round(np.asarray(onsets) * sfreq).astype(int)
    inside = (samples >= 0) & (samples < n_times)
    np.add.at(design, samples[inside], values[inside])
    return zscore(design)

