"""Decoding through the real CLI on the example dataset: brain and feature decoding, a searchlight map
that peaks at the planted face region, BIDS-valid outputs, and clear errors for a bad contrast."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.example import load_truth

from ..conftest import run_cli, snapshot, validator_errors
from .test_end_to_end import SPACE

pytestmark = pytest.mark.slow
CONTRAST = ["--analysis", "decoding", "--decode", "trial_type=face,scrambled"]


@pytest.fixture(scope="module")
def decoded(example_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("decoding") / "out"
    before = snapshot(example_dataset)
    result = run_cli(example_dataset, out, "participant", "--participant-label", "01", "-d",
                     example_dataset / "derivatives/fmriprep", *CONTRAST, "--n-permutations", "50",
                     "--features", "trialtype")
    assert result.returncode == 0, result.stderr
    assert snapshot(example_dataset) == before
    return out


def test_faces_are_decoded_from_the_brain_and_from_the_features(decoded):
    table = pd.read_csv(decoded / f"sub-01/func/sub-01_task-faces_space-{SPACE}_desc-faceVsScrambled_decoding.tsv",
                        sep="\t").set_index("source")
    assert set(table.index) == {"brain", "trialtype"}
    brain = table.loc["brain"]
    assert brain["balanced_accuracy"] > 0.6 and brain["p_value"] < 0.05 and brain["chance"] == 0.5
    assert brain["n_trials"] == 80 and brain["n_folds"] == 2  # leave-one-run-out over the two runs
    assert table.loc["trialtype", "balanced_accuracy"] > 0.95


def test_the_searchlight_peaks_at_the_planted_face_regions(decoded, example_dataset):
    from scipy import ndimage

    score = nib.load(decoded / f"sub-01/func/sub-01_task-faces_space-{SPACE}_desc-faceVsScrambled_stat-score_statmap.nii.gz")
    values = np.nan_to_num(score.get_fdata())
    truth = load_truth(example_dataset, "01", "faces")
    # two spheres tell faces from scrambled faces: 'face' by its mean, 'latent' by its patterns
    near = {name: ndimage.binary_dilation(truth[name]) for name in ("face", "latent")}  # within one voxel
    assert (near["face"] | near["latent"])[np.unravel_index(np.argmax(values), values.shape)]
    assert values[near["face"]].max() > 0.7 and values[near["latent"]].max() > 0.7
    assert np.median(values[values != 0]) < 0.6


def test_decoding_outputs_pass_the_bids_validator(decoded):
    errors = validator_errors(decoded)
    assert not errors, errors[:5]


@pytest.mark.parametrize("options,message", [
    (["--analysis", "decoding"], "needs a contrast to decode"),
    (["--analysis", "decoding", "--decode", "trial_type=face,house"], "house"),
    (["--analysis", "decoding", "--decode", "condition=face,scrambled"], "condition"),
])
def test_a_bad_contrast_is_a_clear_error(example_dataset, tmp_path, options, message):
    result = run_cli(example_dataset, tmp_path / "out", "participant", "--participant-label", "01", "--task", "faces",
                     "--skip-bids-validation", *options)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out" / "sub-01").exists()
