"""EEG through the real CLI on the example dataset (BrainVision, written by mne-bids): time-resolved
decoding finds the planted N170 and nothing before the stimulus, the TRF of word rate recovers the planted
kernel's latency, the outputs pass the BIDS validator, and bad requests are clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bids_encoding.example.meeg import BAD_CHANNEL, EEG_CHANNELS as EEG_CHANNELS_ORDER
from bids_encoding.example.meeg import ENVELOPE_TRF, ERP, TRF, spatial_weights

from ..conftest import run_cli, snapshot, validator_errors

pytestmark = pytest.mark.slow


def eeg(dataset, out, task, *options):
    return run_cli(dataset, out, "participant", "--participant-label", "01", "--datatype", "eeg", "--task", task,
                   "--skip-bids-validation", *options)


@pytest.fixture(scope="module")
def decoded(example_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eeg-decoding") / "out"
    before = snapshot(example_dataset)
    result = eeg(example_dataset, out, "faces", "--analysis", "decoding", "--decode", "trial_type=face,scrambled",
                 "--n-permutations", "100")
    assert result.returncode == 0, result.stderr
    assert snapshot(example_dataset) == before
    return out / "sub-01" / "eeg"


@pytest.fixture(scope="module")
def trf(example_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eeg-trf") / "out"
    result = eeg(example_dataset, out, "lpp", "--features", "wordrate", "envelope")
    assert result.returncode == 0, result.stderr
    return out / "sub-01" / "eeg"


def test_decoding_peaks_at_the_n170_and_is_at_chance_before_the_stimulus(decoded):
    table = pd.read_csv(decoded / "sub-01_task-faces_desc-faceVsScrambled_decoding.tsv", sep="\t")
    sidecar = json.loads((decoded / "sub-01_task-faces_desc-faceVsScrambled_decoding.json").read_text())
    peak = table.loc[table["roc_auc"].idxmax()]
    assert 0.13 <= peak["time"] <= 0.22 and peak["roc_auc"] > 0.75
    before = table[table["time"] < 0]
    assert abs(before["roc_auc"].mean() - 0.5) < 0.05
    significant = [c for c in sidecar["Clusters"] if c["p"] < 0.05]
    assert significant and all(0.1 <= c["Start"] and c["Stop"] <= 0.3 for c in significant)
    assert sidecar["ChanceLevel"] == 0.5 and sidecar["NTrials"] == {"face": 80, "scrambled": 80}
    assert sidecar["Preprocessing"]["DroppedBadChannels"] == [BAD_CHANNEL]


def test_the_evoked_difference_is_most_negative_over_occipito_temporal_channels_at_170_ms(decoded):
    import mne

    evoked = mne.read_evokeds(decoded / "sub-01_task-faces_desc-faceMinusScrambled_ave.fif", verbose=False)[0]
    channel, latency = evoked.get_peak(mode="neg", tmin=0.0, tmax=0.4)
    deflection = ERP["N170"][0]
    assert channel in deflection.centres and abs(latency - deflection.latency) <= 0.02


def test_the_trf_recovers_the_planted_latency(trf):
    scores = pd.read_csv(trf / "sub-01_task-lpp_desc-wordrate_encoding.tsv", sep="\t").set_index("channel")
    sidecar = json.loads((trf / "sub-01_task-lpp_desc-wordrate_trf.json").read_text())
    weights = pd.read_csv(trf / "sub-01_task-lpp_desc-wordrate_trf.tsv.gz", sep="\t", header=None,
                          names=sidecar["Columns"])
    deflection, _ = TRF
    best = scores["r"].idxmax()
    assert best in ("Cz", "FCz", "FC1", "FC2") and scores.loc[best, "r"] > 0.03
    assert (scores.filter(like="r_fold").loc[best] > 0).all()  # held out in every run
    lag = weights.loc[weights[best].idxmax(), "lag"]
    assert abs(lag - deflection.latency) <= 0.02
    assert BAD_CHANNEL not in scores.index


def test_the_envelope_trf_recovers_the_planted_temporal_response_from_the_sound_track(trf):
    """The classic speech-envelope TRF: the envelope plugin's continuous features of the story's WAV, resampled to the
    EEG's rate, predict the temporal channels, with the planted 100 ms latency."""
    scores = pd.read_csv(trf / "sub-01_task-lpp_desc-envelope_encoding.tsv", sep="\t").set_index("channel")
    sidecar = json.loads((trf / "sub-01_task-lpp_desc-envelope_trf.json").read_text())
    weights = pd.read_csv(trf / "sub-01_task-lpp_desc-envelope_trf.tsv.gz", sep="\t", header=None,
                          names=sidecar["Columns"])
    deflection, _ = ENVELOPE_TRF
    near = pd.Series(spatial_weights(deflection.centres), index=EEG_CHANNELS_ORDER).drop(BAD_CHANNEL)
    top = scores["r"].nlargest(5).index
    assert all(near[c] > 0.5 for c in top), scores["r"].nlargest(8)
    # far channels carry the response only through the average reference, weaker
    assert scores["r"].nlargest(5).min() > max(0.1, 1.5 * scores.loc[near[near < 0.1].index, "r"].median())
    assert (scores.filter(like="r_fold").loc[top] > 0).all().all()
    best = top[0]
    lag = weights.loc[weights[best].idxmax(), "lag"]
    assert abs(lag - deflection.latency) <= 0.02
    assert sidecar["Features"]["Provenance"]["Plugin"]["Name"] == "envelope"


def test_the_report_shows_decoding_over_time_and_the_trf(decoded, trf):
    for folder, figure in ((decoded, "sub-01_task-faces_desc-faceVsScrambled_decoding_timecourse.png"),
                           (trf, "sub-01_task-lpp_desc-wordrate_trf_kernel.png")):
        out = folder.parent.parent
        assert (out / "sub-01" / "figures" / figure).exists()
        assert f"sub-01/figures/{figure}" in (out / "sub-01.html").read_text()


def test_eeg_outputs_pass_the_bids_validator(decoded, trf):
    for folder in (decoded, trf):
        errors = validator_errors(folder.parent.parent)
        assert not errors, errors[:5]


@pytest.mark.parametrize("options,message", [
    (["--analysis", "decoding", "--decode", "trial_type=face,house"], "no event of this run has 'house'"),
    (["--analysis", "embedding"], "works on fMRI only"),
    (["--analysis", "decoding", "--decode", "trial_type=face,scrambled", "--filter", "1", "60"],
     "half the resampling rate"),
])
def test_bad_eeg_requests_are_clear_errors(example_dataset, tmp_path, options, message):
    result = eeg(example_dataset, tmp_path / "out", "faces", *options)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out" / "sub-01").exists()
