"""Saved encoding models (--save-weights) and `bids-encoding predict` on the example's story task.

The prediction for a training run's events must be the model's own fitted prediction of that run (its design,
built by the library's functions, times its weights), follow the planted word-rate regressor in the planted
sphere and be about 0 where nothing was planted; a new events file gets its own in-silico prediction.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from bids_encoding import features
from bids_encoding.analyses.encoding import run_design
from bids_encoding.example import load_truth, planted_regressor
from bids_encoding.fmri.design import remove_drifts
from bids_encoding.models.standardize import zscore
from bids_encoding.options import EncodingOptions

from ..conftest import SPACE, run_cli, snapshot, validator_errors

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("predict")]

FUNC = "sub-01/func"
WEIGHTS = f"{FUNC}/sub-01_task-lpp_space-{SPACE}_desc-wordrate_weights"
N_VOLUMES = 200  # of every story run
TR = 2.0


@pytest.fixture(scope="module")
def saved(example_dataset, tmp_path_factory) -> Path:
    """The word-rate model of sub-01's story runs, fitted with --save-weights (run once)."""
    root = tmp_path_factory.mktemp("predict")
    out = root / "out"
    result = run_cli(example_dataset, out, "participant", "-d", example_dataset / "derivatives/fmriprep",
                     "--participant-label", "01", "--task", "lpp", "--features", "wordrate", "--save-weights",
                     "-w", root / "work")
    assert result.returncode == 0, result.stderr
    return out


def events_file(dataset: Path, run: int) -> Path:
    return dataset / FUNC / f"sub-01_task-lpp_run-{run}_events.tsv"


def predicted(out: Path, name: str) -> tuple[np.ndarray, dict, nib.Nifti1Image]:
    img = nib.load(out / f"{name}.nii.gz")
    return img.get_fdata(dtype=np.float32), json.loads((out / f"{name}.json").read_text()), img


def in_model_voxels(data: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """Volumes x voxels, in the weights' column order."""
    return data[tuple(voxels.T)].T


def test_weights_pass_the_validator_and_hold_everything_to_apply_them(saved):
    assert validator_errors(saved) == []
    tensors = load_file(str(saved / f"{WEIGHTS}.safetensors"))
    sidecar = json.loads((saved / f"{WEIGHTS}.json").read_text())
    mask_img = nib.load(saved / f"{FUNC}/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz")
    mask = np.asarray(mask_img.dataobj) > 0
    alpha_map = nib.load(saved / f"{FUNC}/sub-01_task-lpp_space-{SPACE}_desc-wordrate_stat-alpha_statmap.nii.gz")
    assert tensors["weights"].shape == (1, mask.sum()) and tensors["intercept"].shape == (mask.sum(),)
    np.testing.assert_array_equal(tensors["voxels"], np.argwhere(mask))  # the masker's column order
    np.testing.assert_allclose(tensors["alpha"], alpha_map.get_fdata()[mask], rtol=1e-6)  # the alphas the maps report
    assert not tensors["intercept"].any()
    assert sidecar["Extractor"]["Spec"] == "wordrate" and sidecar["Extractor"]["Space"] == ""
    assert sidecar["Extractor"]["Distribution"] == "bids-encoding-lexical" and sidecar["Extractor"]["Version"]
    assert sidecar["Design"] | {"Description": None} == {
        "Type": "hrf", "HRFModel": "glover", "Oversampling": 16, "Delays": None, "HighPass": 0.01, "Trim": [0, 0],
        "RepetitionTime": TR, "Function": "bids_encoding.analyses.encoding.run_design", "Description": None}
    assert "z-scored within each run" in sidecar["Standardization"]["Features"]
    assert "z units" in sidecar["Standardization"]["Prediction"]
    assert sidecar["Grid"]["Shape"] == list(mask.shape)
    np.testing.assert_allclose(sidecar["Grid"]["Affine"], mask_img.affine)
    assert sidecar["Refit"]["NSamples"] == 3 * N_VOLUMES and sidecar["Columns"] == ["wordrate"]
    assert any(s.startswith("bids:raw:sub-01/func/") and s.endswith("_events.tsv") for s in sidecar["Sources"])
    assert "bids-encoding predict" in sidecar["Description"]
    report = (saved / "sub-01.html").read_text()
    assert "Saved models" in report and Path(f"{WEIGHTS}.json").name in report


def test_prediction_of_a_training_run_is_the_models_fitted_prediction(saved, example_dataset, tmp_path):
    events = events_file(example_dataset, 1)
    result = run_cli("predict", saved / f"{WEIGHTS}.json", events, tmp_path, "--n-volumes", N_VOLUMES)
    assert result.returncode == 0, result.stderr
    name = f"sub-01_task-lpp_run-1_space-{SPACE}_desc-wordratePredicted_bold"
    data, sidecar, img = predicted(tmp_path, name)
    assert data.shape[3] == N_VOLUMES and img.header.get_zooms()[3] == TR
    assert sidecar["RepetitionTime"] == TR and sidecar["Units"] == "z" and sidecar["NumberOfVolumes"] == N_VOLUMES
    tensors = load_file(str(saved / f"{WEIGHTS}.safetensors"))
    got = in_model_voxels(data, tensors["voxels"])
    # the model's fitted prediction of run 1, through the library: the run's features, its design, the weights
    found, _ = features.extract("wordrate", events, example_dataset / "stimuli")
    design = run_design(found, "", N_VOLUMES, TR, EncodingOptions(design="hrf"), "glover", 0.01)
    np.testing.assert_allclose(got, design @ tensors["weights"] + tensors["intercept"], rtol=1e-5, atol=1e-6)
    # and from what the fit itself wrote: run 1's features on the TR grid, drift-removed and z-scored as in the fit
    stim = np.loadtxt(saved / f"{FUNC}/sub-01_task-lpp_run-1_recording-wordrate_stim.tsv.gz", ndmin=2)
    np.testing.assert_allclose(got, zscore(remove_drifts(stim, TR, 0.01)) @ tensors["weights"], atol=1e-3)


def test_prediction_follows_the_planted_regressor_in_its_sphere_and_nothing_elsewhere(saved, example_dataset,
                                                                                      tmp_path):
    events = events_file(example_dataset, 2)
    result = run_cli("predict", saved / f"{WEIGHTS}.json", events, tmp_path, "--n-volumes", N_VOLUMES)
    assert result.returncode == 0, result.stderr
    data, _, _ = predicted(tmp_path, f"sub-01_task-lpp_run-2_space-{SPACE}_desc-wordratePredicted_bold")
    mask = nib.load(saved / f"{FUNC}/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    truth = load_truth(example_dataset, "01", "lpp")
    sphere, rest = truth["wordrate"] & mask, mask & ~np.any(list(truth.values()), axis=0)
    planted = planted_regressor("wordrate", pd.read_csv(events, sep="\t"), N_VOLUMES)
    r = np.array([np.corrcoef(series, planted)[0, 1] for series in data[sphere]])
    spread = data.std(axis=3)
    print(f"prediction of run 2: r with the planted regressor {r.min():.3f}-{r.max():.3f} in the sphere; sd "
          f"{np.median(spread[sphere]):.3f} there, {np.median(spread[rest]):.4f} (median) outside the spheres")
    assert sphere.sum() > 5 and r.min() > 0.8
    assert np.median(spread[rest]) < 0.02 * np.median(spread[sphere])
    assert not data[~mask].any()  # outside the model's voxels: exactly 0


def test_new_stimuli_outside_any_dataset_get_an_in_silico_prediction(saved, example_dataset, tmp_path):
    """A short new story, not in a dataset: named after its file, as long as its events (rounded up to TRs)."""
    words = pd.read_csv(events_file(example_dataset, 3), sep="\t").head(40)
    words["onset"] -= words["onset"].iloc[0] - 10.0
    story = tmp_path / "mystory_events.tsv"
    words.to_csv(story, sep="\t", index=False)
    out = tmp_path / "out"
    result = run_cli("predict", saved / f"{WEIGHTS}.json", story, out)
    assert result.returncode == 0, result.stderr
    data, sidecar, _ = predicted(out, f"sub-01_task-mystory_space-{SPACE}_desc-wordratePredicted_bold")
    expected = math.ceil((words["onset"] + words["duration"]).max() / TR)
    assert data.shape[3] == sidecar["NumberOfVolumes"] == expected
    assert sidecar["Sources"][0] == str(story) and sidecar["EncodingModel"]["Extractor"]["Spec"] == "wordrate"


def check_user_error(result, *words: str) -> str:
    message = result.stderr.strip()
    assert result.returncode == 2, result.stderr
    assert message.startswith("bids-encoding: error:") and "Traceback" not in message and "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_bad_weights_are_user_errors(saved, example_dataset, tmp_path):
    events, out = events_file(example_dataset, 1), tmp_path / "out"
    not_weights = saved / f"{FUNC}/sub-01_task-lpp_space-{SPACE}_desc-wordrate_stat-rSquare_statmap.json"
    check_user_error(run_cli("predict", not_weights, events, out), "not the sidecar of a saved encoding model",
                     "--save-weights")
    check_user_error(run_cli("predict", tmp_path / "nothing_weights.json", events, out), "does not exist")
    broken = tmp_path / "broken_weights.json"
    shutil.copy(saved / f"{WEIGHTS}.json", broken)
    broken.with_suffix(".safetensors").write_bytes(b"not a safetensors file")
    check_user_error(run_cli("predict", broken, events, out), "cannot be read as safetensors")
    broken.with_suffix(".safetensors").unlink()
    check_user_error(run_cli("predict", broken, events, out), "beside this sidecar does not exist")
    unknown = tmp_path / "unknown_weights.json"
    sidecar = json.loads((saved / f"{WEIGHTS}.json").read_text())
    sidecar["Extractor"]["Spec"] = "nosuchplugin"
    unknown.write_text(json.dumps(sidecar))
    shutil.copy(saved / f"{WEIGHTS}.safetensors", unknown.with_suffix(".safetensors"))
    check_user_error(run_cli("predict", unknown, events, out), "no feature extractor called 'nosuchplugin'")
    assert not out.exists()


def test_bad_events_and_stimuli_are_user_errors(saved, example_dataset, tmp_path):
    weights, out = saved / f"{WEIGHTS}.json", tmp_path / "out"
    no_onset = tmp_path / "noonset_events.tsv"
    pd.read_csv(events_file(example_dataset, 1), sep="\t").rename(columns={"onset": "time"}).to_csv(
        no_onset, sep="\t", index=False)
    check_user_error(run_cli("predict", weights, no_onset, out), "no onset column")
    faces = tmp_path / "faces_events.tsv"  # images named relative to a stimuli/ folder this file is not beside
    shutil.copy(example_dataset / FUNC / "sub-01_task-faces_run-1_events.tsv", faces)
    check_user_error(run_cli("predict", weights, faces, out), "stim_file", "--stimuli-dir")
    check_user_error(run_cli("predict", weights, faces, out, "--stimuli-dir", tmp_path / "none"), "--stimuli-dir")
    check_user_error(run_cli("predict", weights, events_file(example_dataset, 1), out, "--n-volumes", "1"),
                     "--n-volumes 1")
    assert not out.exists()


def test_predicting_into_the_input_dataset_is_refused(saved, example_dataset):
    before = snapshot(example_dataset)
    result = run_cli("predict", saved / f"{WEIGHTS}.json", events_file(example_dataset, 1),
                     example_dataset / "predictions")
    check_user_error(result, "inside the dataset of the events", "OUT")
    assert snapshot(example_dataset) == before and not (example_dataset / "predictions").exists()
