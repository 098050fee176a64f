"""Image features through the real CLI: the cnn plugin's features (real EfficientNet-Lite0 weights) explain the
example's planted edge-energy sphere, which a trial-type model cannot explain."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_encoding.example import load_truth

from ..conftest import run_cli
from .test_end_to_end import SPACE, statmap

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_run(example_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("images") / "out"
    result = run_cli(example_dataset, out, "participant", "--participant-label", "01", "--task", "faces",
                     "-d", example_dataset / "derivatives/fmriprep", "--features", "cnn:layers=2", "trialtype")
    assert result.returncode == 0, result.stderr
    return out


def test_cnn_features_explain_the_planted_edge_sphere_and_trial_types_do_not(image_run, example_dataset):
    mask = nib.load(image_run / f"sub-01/func/sub-01_task-faces_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    truth = load_truth(example_dataset, "01", "faces")
    edges, rest = truth["edges"] & mask, mask & ~np.any(list(truth.values()), axis=0)
    cnn = nib.load(statmap(image_run, "01", "faces", "cnnL2")).get_fdata()
    trialtype = nib.load(statmap(image_run, "01", "faces", "trialtype")).get_fdata()
    assert np.median(cnn[edges]) > max(0.08, np.percentile(cnn[rest], 99))
    assert np.median(trialtype[edges]) < 0.02  # the category mean was taken out of the planted edge energy
    assert np.median(trialtype[truth["face"] & mask]) > 0.05


def test_image_features_are_written_as_stim_files(image_run):
    stim = image_run / "sub-01/func/sub-01_task-faces_run-1_recording-cnnL2_stim.tsv.gz"
    assert np.loadtxt(stim, delimiter="\t").shape == (120, 24)  # 120 volumes x 24 channels of stage 2
