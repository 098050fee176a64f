"""Naturalistic stimuli on the example: the story's sound track and the movie themselves as features.

One participant run models the story with the audio plugin's envelope and log-mel spectrogram and a (tiny, local)
speech model, and the movie with motion energy and a CNN on its frames (the host's ``fps``). Their features are
continuous, at their own rates, and reach the TR grid through the same designs as event features. Planted truths:
the ``envelope`` sphere follows the sound track's loudness, the ``motion`` sphere the movie's motion.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.example import load_truth, planted_regressor

from ..conftest import SPACE, run_cli, snapshot, statmap, validator_errors

STORY_FEATURES = ("envelope", "melspectrogram")
MOVIE_FEATURES = ("motionenergy", "cnnL8")


@pytest.fixture(scope="module")
def speech_model(tmp_path_factory) -> Path:
    """A tiny wav2vec2 with random weights and its feature extractor, saved as a model folder (nothing downloaded)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def naturalistic(example_dataset, speech_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("naturalistic")
    before = snapshot(example_dataset)
    result = run_cli(example_dataset, root / "out", "participant", "--participant-label", "01",
                     "-d", example_dataset / "derivatives/fmriprep", "--task", "lpp", "movie", "--run", "1", "2",
                     "--features", *STORY_FEATURES, f"speech:model={speech_model},layers=-1", "motionenergy:fps=10",
                     "cnn:fps=2,layers=-1", "-w", root / "work", "--n-cpus", "2")
    assert result.returncode == 0, result.stderr
    assert snapshot(example_dataset) == before
    return root / "out"


def _map(out: Path, task: str, desc: str, stat: str = "rSquare") -> np.ndarray:
    return nib.load(statmap(out, "01", task, desc, stat)).get_fdata()


@pytest.mark.slow
def test_the_envelope_sphere_follows_the_sound_track_s_envelope_and_nothing_else_does(naturalistic, example_dataset):
    truth = load_truth(example_dataset, "01", "lpp")
    r2, q = _map(naturalistic, "lpp", "envelope"), _map(naturalistic, "lpp", "envelope", "q")
    sphere, rest = truth["envelope"], ~np.any(list(truth.values()), axis=0) & (r2 != 0)
    print(f"envelope: median R2 {np.median(r2[sphere]):.3f} in its sphere, q < 0.05 in {np.mean(q[sphere] < 0.05):.2f}; "
          f"99th percentile outside {np.percentile(r2[rest], 99):.3f}")
    assert np.median(r2[sphere]) > 0.1 and np.mean(q[sphere] < 0.05) > 0.8
    assert np.all(np.isin(np.argsort(r2, axis=None)[-10:], np.flatnonzero(sphere)))
    assert np.median(r2[truth["wordrate"]]) < 0.02  # the words are quiet: word rate's sphere is not the envelope's
    # the log-mel spectrogram holds the loudness too
    assert np.median(_map(naturalistic, "lpp", "melspectrogram")[sphere]) > 0.05


@pytest.mark.slow
def test_the_motion_sphere_follows_motion_energy_not_the_frames_contents(naturalistic, example_dataset):
    truth = load_truth(example_dataset, "01", "movie")
    sphere = truth["motion"]
    motion, q = _map(naturalistic, "movie", "motionenergy"), _map(naturalistic, "movie", "motionenergy", "q")
    frames = _map(naturalistic, "movie", "cnnL8")
    print(f"motion sphere: motionenergy median R2 {np.median(motion[sphere]):.3f} (q < 0.05 in "
          f"{np.mean(q[sphere] < 0.05):.2f}), cnn frames at 2 fps {np.median(frames[sphere]):.3f}")
    # two runs of 90 volumes: held-out folds are short, so p-values are modest; the best voxels are the sphere's
    assert np.mean(q[sphere] < 0.05) > 0.4 and np.median(motion[sphere]) > 0.1
    assert np.all(np.isin(np.argsort(motion, axis=None)[-3:], np.flatnonzero(sphere)))
    assert np.median(motion[sphere]) > np.median(frames[sphere]) + 0.05


@pytest.mark.slow
def test_continuous_features_reach_the_tr_grid_as_stim_files(naturalistic, example_dataset):
    func = naturalistic / "sub-01" / "func"
    stim = func / "sub-01_task-lpp_run-1_recording-envelope_stim.tsv.gz"
    sidecar = json.loads(stim.with_name(stim.name.replace(".tsv.gz", ".json")).read_text())
    assert sidecar["SamplingFrequency"] == 0.5 and sidecar["Columns"] == ["envelope"]
    assert "continuous, sampled at 100 Hz" in sidecar["Description"]
    # the plugin's envelope on the TR grid is the planted one (RMS of the same sound, HRF-convolved)
    events = pd.read_csv(example_dataset / "sub-01/func/sub-01_task-lpp_run-1_events.tsv", sep="\t")
    planted = planted_regressor("envelope", events, 200, example_dataset / "stimuli")
    assert np.corrcoef(np.loadtxt(stim), planted)[0, 1] > 0.95
    for name, rate in (("speechL2", 50), ("motionenergy", None), ("cnnL8", 2)):
        task = "movie" if name in MOVIE_FEATURES else "lpp"
        found = json.loads((func / f"sub-01_task-{task}_run-2_recording-{name}_stim.json").read_text())
        assert "continuous" in found["Description"] and (rate is None or f"at {rate:g} Hz" in found["Description"])
    cnn = json.loads((func / "sub-01_task-movie_run-1_recording-cnnL8_stim.json").read_text())
    assert cnn["Features"]["Options"]["fps"] == 2.0


@pytest.mark.slow
def test_naturalistic_outputs_validate_and_the_report_shows_them(naturalistic):
    assert validator_errors(naturalistic) == []
    report = (naturalistic / "sub-01.html").read_text()
    for name in (*STORY_FEATURES, "speechL2", *MOVIE_FEATURES):
        assert name in report
