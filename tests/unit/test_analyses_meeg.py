"""EEG/MEG: reading BrainVision, EDF and FIF written by mne-bids, the fast permutation scorer against
mne.decoding's SlidingEstimator, time clusters, TRF designs, and clear errors for bad recordings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bids_encoding.bids_io import collect_meeg_runs, load_layout, read_recording
from bids_encoding.errors import UserError
from bids_encoding.example.meeg import (BAD_CHANNEL, EEG_CHANNELS, EEG_FORMATS, EEG_SFREQ, MEG_SCALE, eeg_noise,
                                       write_eeg_run)
from bids_encoding.analyses.time_decoding import cluster_test, fit_time_decoding, time_clusters
from bids_encoding.meeg.preprocessing import impulse_design
from bids_encoding.options import DecodingOptions, MEEGOptions
from bids_encoding.models.classifiers import make_classifier, sliding_auc

N_TIMES = 300


def eeg_dataset(root, eeg_format="BrainVision", runs=((1, EEG_SFREQ, EEG_CHANNELS),), seed=0):
    """A small EEG-only BIDS dataset: one subject, task 'faces', with the given runs (run, rate, channels)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.10.0"}))
    rng = np.random.default_rng(seed)
    written = {}
    for run, sfreq, channels in runs:
        n_times = int(N_TIMES * sfreq / EEG_SFREQ)
        data = eeg_noise(rng, n_times)[:len(channels)]
        events = pd.DataFrame({"onset": [0.5, 1.0, 1.5], "duration": 0.5, "trial_type": ["face", "scrambled", "face"]})
        write_eeg_run(root, "01", "faces", run, data, events, eeg_format, sfreq=sfreq, channels=channels)
        written[run] = data
    return root, written


@pytest.mark.parametrize("eeg_format", ["BrainVision", "EDF", "FIF"])
def test_recordings_written_by_mne_bids_are_read_back_with_their_bad_channels(tmp_path, eeg_format):
    root, written = eeg_dataset(tmp_path / "bids", eeg_format)
    datatype = EEG_FORMATS[eeg_format]  # FIF is written as MEG (magnetometers)
    (run,) = collect_meeg_runs(load_layout(root), "01", datatype)
    assert run.sfreq == EEG_SFREQ and run.task == "faces" and run.modalities == ("trials",)
    assert run.recording.name.endswith({"BrainVision": ".vhdr", "EDF": ".edf", "FIF": "_meg.fif"}[eeg_format])
    raw = read_recording(run)
    assert raw.ch_names == list(EEG_CHANNELS) and raw.info["bads"] == [BAD_CHANNEL]
    assert set(raw.get_channel_types()) == {"eeg" if datatype == "eeg" else "mag"}
    good = [i for i, c in enumerate(EEG_CHANNELS) if c != BAD_CHANNEL]
    expected = written[1][good] * (1.0 if datatype == "eeg" else MEG_SCALE)
    np.testing.assert_allclose(raw.get_data()[good], expected, atol=np.abs(expected).max() * 1e-3)


def test_runs_sampled_at_different_rates_are_a_clear_error(tmp_path):
    root, _ = eeg_dataset(tmp_path / "bids", runs=((1, 100.0, EEG_CHANNELS), (2, 200.0, EEG_CHANNELS)))
    with pytest.raises(UserError, match="different rates \\(100, 200 Hz\\)") as err:
        collect_meeg_runs(load_layout(root), "01", "eeg")
    assert "run-2" in str(err.value)


def test_runs_with_missing_channels_are_a_clear_error(tmp_path):
    fewer = tuple(c for c in EEG_CHANNELS if c not in ("O1", "O2"))
    root, _ = eeg_dataset(tmp_path / "bids", runs=((1, EEG_SFREQ, EEG_CHANNELS), (2, EEG_SFREQ, fewer)))
    runs = collect_meeg_runs(load_layout(root), "01", "eeg")
    with pytest.raises(UserError, match="missing O1, O2") as err:
        fit_time_decoding(runs, tmp_path, decoding=DecodingOptions(decode="trial_type=face,scrambled"))
    assert "run-2" in str(err.value)


def test_no_trial_of_a_requested_type_is_a_clear_error(tmp_path):
    root, _ = eeg_dataset(tmp_path / "bids")
    runs = collect_meeg_runs(load_layout(root), "01", "eeg")
    with pytest.raises(UserError, match="no event of this run has 'house'"):
        fit_time_decoding(runs, tmp_path, decoding=DecodingOptions(decode="trial_type=face,house"))


def test_the_fast_scorer_gives_the_scores_of_mne_sliding_estimator():
    from mne.decoding import SlidingEstimator, cross_val_multiscore
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    X = rng.standard_normal((60, 6, 8))
    X[y == 1, 0, 4:] += 1.0  # the classes differ on one channel in the second half
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    for classifier in ("logistic", "svm"):
        expected = cross_val_multiscore(SlidingEstimator(make_classifier(classifier), scoring="roc_auc"), X, y, cv=cv)
        np.testing.assert_allclose(sliding_auc(X, y, list(cv.split(X, y)), classifier), expected, atol=1e-6)
    assert expected[:, 4:].mean() > 0.7 and abs(expected[:, :4].mean() - 0.5) < 0.15


def test_time_clusters_and_their_permutation_p_values():
    curve = np.array([0.5, 0.7, 0.8, 0.5, 0.65, 0.5])
    assert time_clusters(curve, 0.6) == [(1, 3, pytest.approx(0.5)), (4, 5, pytest.approx(0.15))]
    null = np.full((19, 6), 0.5)
    null[:, 0] = np.linspace(0.4, 0.62, 19)  # the 95th percentile of all null values is 0.5; a few reach 0.62
    clusters = cluster_test(curve, null)
    assert [c["p"] for c in clusters] == [pytest.approx(1 / 20)] * 2
    assert cluster_test(curve, np.zeros((0, 6))) == []


def test_impulse_design_places_each_event_at_its_sample():
    design = impulse_design(np.array([0.0, 0.104, 0.104, 9.0]), np.array([[1.0], [2.0], [3.0], [7.0]]), 50, 100.0)
    raw = np.zeros(50)
    raw[[0, 10]] = [1.0, 5.0]  # two events sharing a sample add; one after the end is dropped
    np.testing.assert_allclose(design[:, 0], (raw - raw.mean()) / raw.std())


@pytest.mark.parametrize("options,message", [
    ({"epochs": (0.5, 0.1)}, "must start before it ends"),
    ({"filter": (40.0, 1.0)}, "below its high edge"),
    ({"filter": (0.1, 60.0), "resample": 100.0}, "half the resampling rate"),
])
def test_inconsistent_options_are_explained(options, message):
    with pytest.raises(UserError, match=message):
        MEEGOptions(**options)
