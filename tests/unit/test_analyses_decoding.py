"""Decoding stage: trial responses, classifiers, permutation test, searchlight, features, errors.

Runs on the built-in example (task ``faces``: 2 runs, 40 trials each, a planted face-selective
sphere), written once for the module. No mocks.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from threadpoolctl import threadpool_limits

from bids_encoding import features as feature_store
from bids_encoding.analyses.decoding import decode_features, describe, fit_decoding
from bids_encoding.contrasts import contrast_events, contrast_label, parse_contrast
from bids_encoding.errors import UserError
from bids_encoding.example import load_truth, write_example_dataset
from bids_encoding.fmri.bold import load_bold
from bids_encoding.fmri.masks import brain_mask
from bids_encoding.fmri.trials import lss_weights, peak_weights, trial_responses
from bids_encoding.models.classifiers import cross_validate_decoder, fit_linear, make_classifier, screening_size
from bids_encoding.models.searchlight import searchlight
from bids_encoding.spheres import sphere_offsets
from bids_encoding.options import DecodingOptions, FMRIOptions, StatsOptions
from bids_encoding.plugin_api import FeatureSet
from bids_encoding.stimuli import read_events

CONTRAST = "trial_type=face,scrambled"
PERMUTATIONS = 49  # smallest p-value 0.02


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict:
    """The example's faces task: BOLD, masks, events, confounds and the planted sphere."""
    root = write_example_dataset(tmp_path_factory.mktemp("d") / "bids", n_subjects=1)
    func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    prefix = "sub-01_task-faces_run-{}"
    space = "_space-MNI152NLin2009cAsym_res-6"
    runs = (1, 2)
    task = {
        "root": root,
        "bold": [func / f"{prefix.format(r)}{space}_desc-preproc_bold.nii.gz" for r in runs],
        "masks": [func / f"{prefix.format(r)}{space}_desc-brain_mask.nii.gz" for r in runs],
        "confounds": [func / f"{prefix.format(r)}_desc-confounds_timeseries.tsv" for r in runs],
        "events": [root / "sub-01" / "func" / f"{prefix.format(r)}_events.tsv" for r in runs],
        "trs": [2.0, 2.0],
        "sphere": root / "sourcedata" / "groundtruth" / "sub-01_task-faces_desc-face_mask.nii.gz",
    }
    for key in ("bold", "masks", "confounds", "events"):
        assert all(p.exists() for p in task[key]), task[key]
    task["brain"] = brain_mask(task["bold"], task["masks"])
    task["mask"] = task["brain"].img
    truth = load_truth(root, "01", "faces")
    task["truth"], task["latent"] = truth["face"], truth["latent"]
    return task


def write_features(faces: dict, folder: Path, face: float = 1.0, scrambled: float = 0.2, shift: float = 0.0) -> list[Path]:
    """A trialtype-like feature per event of each run (``face`` or ``scrambled``), saved as the app saves features."""
    paths = []
    for run, events_file in enumerate(faces["events"], 1):
        events = read_events(events_file)
        values = np.where(events["trial_type"] == "face", face, scrambled)[:, None]
        features = FeatureSet(onset=events["onset"].to_numpy(float) + shift, duration=events["duration"].to_numpy(float),
                              spaces={"": values}, columns={"": ["face"]})
        path = folder / f"run{run}_features.npz"
        feature_store.save(features, {"Plugin": {"Name": "trialtype", "Version": "test"}}, path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def decoded(faces, tmp_path_factory) -> dict:
    """The stage as the workflow runs it: LSS, logistic, permutations, searchlight, and a feature space."""
    out = tmp_path_factory.mktemp("decoding")
    feature_files = write_features(faces, out)
    outputs = fit_decoding(faces["bold"], faces["events"], faces["trs"], out, mask_files=faces["masks"],
                           feature_files=feature_files, options=DecodingOptions(decode=CONTRAST),
                           stats=StatsOptions(n_permutations=PERMUTATIONS))
    table = next(o for o in outputs if o.suffix == "decoding")
    return {"outputs": outputs, "table": pd.read_csv(table.in_file, sep="\t", na_values="n/a").set_index("source"),
            "metadata": table.metadata, "map": next(o for o in outputs if o.entities.get("stat") == "score")}


@pytest.fixture(scope="module")
def lss(faces):
    return trial_responses(faces["bold"], faces["events"], faces["trs"], "trial_type", ("face", "scrambled"),
                           faces["brain"], "lss")


# --------------------------------------------------------------------------- contrast


def test_parse_contrast():
    assert parse_contrast("trial_type=face,scrambled") == ("trial_type", ("face", "scrambled"))
    assert parse_contrast(" condition = 1 , 2 ") == ("condition", ("1", "2"))
    assert contrast_label(("face", "scrambled")) == "faceVsScrambled"
    assert contrast_label(("left hand", "right-hand")) == "lefthandVsRighthand"


@pytest.mark.parametrize("spec, words", [
    ("trial_type", "names no events column"),
    ("=face,scrambled", "names no events column"),
    ("trial_type=face", "only one class"),
    ("trial_type=face,", "empty value"),
    ("trial_type=a,b,c", "exactly two"),
    ("trial_type=face,face", "same value twice"),
])
def test_parse_contrast_errors(spec, words):
    with pytest.raises(UserError, match=words) as error:
        parse_contrast(spec)
    assert "--decode" in str(error.value) and "COLUMN=VALUE1,VALUE2" in str(error.value)


def test_contrast_events_match_numbers(tmp_path):
    path = tmp_path / "events.tsv"
    pd.DataFrame({"onset": [1.0, 5.0, 9.0, 13.0], "duration": 1.0, "level": [1.0, 2.0, 1.0, None]}).to_csv(
        path, sep="\t", index=False, na_rep="n/a")
    events = contrast_events(path, "level", ("1", "2"))
    assert events["label"].tolist() == ["1", "2", "1", ""]
    assert events["condition"].tolist() == ["1", "2", "1", "n/a"]


# --------------------------------------------------------------------------- the stage's outputs


def test_whole_brain_decoding_is_above_chance(decoded):
    brain = decoded["table"].loc["brain"]
    assert brain["classifier"] == "logistic" and brain["chance"] == 0.5
    assert brain["n_trials"] == 80 and brain["n_folds"] == 2 and brain["n_features"] > 8000
    assert brain["balanced_accuracy"] > 0.6 and brain["roc_auc"] > 0.6
    assert brain["p_value"] < 0.05


def test_outputs_and_sidecar(decoded):
    table, metadata = decoded["outputs"][0], decoded["metadata"]
    assert table.entities == {"desc": "faceVsScrambled"} and Path(table.in_file).name == "desc-faceVsScrambled_decoding.tsv"
    assert list(decoded["table"].reset_index().columns) == ["source", "classifier", "balanced_accuracy", "roc_auc",
                                                            "p_value", "chance", "n_trials", "n_folds", "n_features"]
    for column in decoded["table"].reset_index().columns:
        assert metadata[column]["Description"]
    assert metadata["Contrast"] == {"Column": "trial_type", "Values": ["face", "scrambled"]}
    assert "LeaveOneGroupOut" in metadata["CrossValidation"]
    assert metadata["Permutations"]["N"] == PERMUTATIONS and "within runs" in metadata["Permutations"]["Scheme"]
    assert metadata["Chance"] == 0.5 and metadata["ScreenedVoxels"] == 100
    json.dumps(metadata)  # a sidecar must be JSON
    assert decoded["map"].entities == {"desc": "faceVsScrambled", "stat": "score"}
    assert decoded["map"].suffix == "statmap"


def test_searchlight_peak_is_in_the_face_sphere(decoded, faces):
    scores = np.asarray(nib.load(decoded["map"].in_file).dataobj)
    assert scores.shape == faces["truth"].shape
    # two spheres tell the conditions apart: 'face' by its mean, 'latent' by its patterns (within one voxel)
    near = ndimage.binary_dilation(faces["truth"] | faces["latent"], structure=np.ones((3, 3, 3), bool))
    peak = np.unravel_index(np.argmax(scores), scores.shape)
    assert near[peak], f"searchlight peak {peak} ({scores[peak]:.3f}) is not at a planted sphere"
    inside = np.asarray(faces["mask"].dataobj) > 0
    assert scores[faces["truth"]].mean() > 0.7 > 0.55 > abs(scores[inside & ~near].mean())


def test_features_decode_their_trial_types(decoded):
    row = decoded["table"].loc["trialtype"]
    assert row["balanced_accuracy"] >= 0.95 and row["roc_auc"] >= 0.95 and row["p_value"] < 0.05
    assert row["n_trials"] == 80 and row["n_features"] == 1


# --------------------------------------------------------------------------- responses and leaks


def test_shuffled_labels_stay_at_chance(lss):
    labels = np.random.default_rng(1).permutation(lss.labels)
    scores = cross_validate_decoder(lss.X, labels, lss.runs, n_permutations=0,
                                    screening=screening_size(lss.X.shape[1], 1.0))
    assert abs(scores.balanced_accuracy - 0.5) <= 0.15 and np.isnan(scores.p_value)
    mapped = searchlight(lss.X, lss.brain.img, labels, lss.runs, radius=8.0)
    assert abs(mapped.mean() - 0.5) < 0.02


def test_trial_responses(lss, faces):
    assert lss.X.shape == (80, int((np.asarray(faces["mask"].dataobj) > 0).sum())) and lss.X.dtype == np.float32
    assert sorted(set(lss.labels)) == ["face", "scrambled"] and np.bincount(lss.runs).tolist() == [40, 40]
    assert np.all(np.diff(lss.onsets[lss.runs == 0]) > 0)
    for run in (0, 1):  # z-scored across each run's trials
        np.testing.assert_allclose(lss.X[lss.runs == run].mean(0), 0, atol=1e-4)


def test_decoding_is_deterministic(lss):
    a, b = (cross_validate_decoder(lss.X[:, :500], lss.labels, lss.runs, classifier="svm", n_permutations=5, seed=3)
            for _ in range(2))
    assert a.balanced_accuracy == b.balanced_accuracy and a.p_value == b.p_value and np.array_equal(a.null, b.null)


@pytest.mark.slow
def test_peak_responses_in_a_region(faces, tmp_path):
    """Peak samples decode the face sphere (given as the region); no searchlight, no permutations."""
    options = DecodingOptions(decode=CONTRAST, responses="peak", classifier="svm", searchlight=False)
    outputs = fit_decoding(faces["bold"], faces["events"], faces["trs"], tmp_path, mask_files=faces["masks"],
                           confound_files=faces["confounds"], options=options,
                           fmri=FMRIOptions(roi=str(faces["sphere"]), confounds=("csf", "white_matter")),
                           stats=StatsOptions(n_permutations=0))
    assert len(outputs) == 1
    row = pd.read_csv(outputs[0].in_file, sep="\t", na_values="n/a").iloc[0]
    assert row["n_features"] == faces["truth"].sum() and np.isnan(row["p_value"])
    assert row["balanced_accuracy"] > 0.65
    assert outputs[0].metadata["RegionOfInterest"] == str(faces["sphere"])


def test_peak_weights():
    weights = peak_weights(np.array([4.0, 4.3]), 120, 2.0)
    assert np.flatnonzero(weights[0]).tolist() == [4, 5] and np.allclose(weights[0, [4, 5]], 0.5)
    assert np.flatnonzero(weights[1]).tolist() == [5]
    slow = peak_weights(np.array([3.0]), 100, 3.0)  # TR 3 s: the window 7-9 s holds the volume at 9 s
    assert np.flatnonzero(slow[0]).tolist() == [3]
    between = peak_weights(np.array([2.8]), 100, 3.0)  # 6.8-8.8 s holds none: interpolated at 7.8 s
    assert np.flatnonzero(between[0]).tolist() == [2, 3] and np.allclose(between[0, [2, 3]], [0.4, 0.6])


@pytest.mark.slow
def test_lss_matches_first_level_model(faces):
    """Our LSS row of the pseudo-inverse gives the beta FirstLevelModel (OLS) fits for the trial."""
    from nilearn import masking
    from nilearn.glm.first_level import FirstLevelModel

    events = contrast_events(faces["events"][0], "trial_type", ("face", "scrambled"))
    Y = load_bold(faces["bold"][0], faces["brain"], 2.0)
    weights = lss_weights(events, len(Y), 2.0)
    trial = 7
    design_events = pd.DataFrame({"onset": events["onset"], "duration": events["duration"],
                                  "trial_type": events["condition"].to_numpy(object)})
    design_events.loc[trial, "trial_type"] = "trial"
    model = FirstLevelModel(t_r=2.0, hrf_model="glover", drift_model="cosine", high_pass=0.01, noise_model="ols",
                            signal_scaling=False, mask_img=faces["mask"], minimize_memory=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn notes that it uses the given mask rather than computing one
        model.fit(masking.unmask(Y, faces["mask"]), events=design_events)
    beta = masking.apply_mask(model.compute_contrast("trial", output_type="effect_size"), faces["mask"])
    np.testing.assert_allclose(weights[trial] @ Y, beta, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- the models


def test_fit_linear_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    y = np.where(rng.random(30) > 0.5, 1.0, -1.0)
    Z = rng.standard_normal((3, 30, 5)) + 0.7 * y[None, :, None] * (np.arange(5) < 2)
    logistic = fit_linear(Z, y, "logistic")
    hinge = fit_linear(np.concatenate([Z, np.ones((3, 30, 1))], axis=2), y, "squared_hinge", intercept=False)
    for b in range(3):
        reference = LogisticRegression(tol=1e-10, max_iter=10000).fit(Z[b], y)
        np.testing.assert_allclose(logistic[b], np.r_[reference.coef_[0], reference.intercept_], atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = LinearSVC(tol=1e-10, max_iter=100000).fit(Z[b], y)
        np.testing.assert_allclose(hinge[b], np.r_[reference.coef_[0], reference.intercept_], atol=1e-5)


def test_sphere_offsets():
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    assert len(sphere_offsets(affine, 8.0)) == 7  # the voxel and its 6 face neighbours
    assert len(sphere_offsets(affine, 10.0)) == 19  # and the 12 edge neighbours (8.5 mm)
    assert sphere_offsets(affine, 8.0)[0].tolist() == [0, 0, 0]
    assert len(sphere_offsets(np.diag([2.0, 2.0, 2.0, 1.0]), 6.0)) == 123


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_searchlight_matches_nilearn(lss, faces, classifier):
    """Same spheres, same folds, same pipeline: nilearn's SearchLight gives the same scores."""
    from nilearn import masking
    from nilearn.decoding import SearchLight
    from sklearn.model_selection import LeaveOneGroupOut

    inside = np.asarray(faces["mask"].dataobj) > 0
    process = ndimage.binary_dilation(faces["truth"], iterations=1) & inside
    ours = searchlight(lss.X, faces["mask"], lss.labels, lss.runs, radius=10.0, classifier=classifier,
                       process_mask=process[inside])
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SearchLight(mask_img=faces["mask"], process_mask_img=nib.Nifti1Image(process.astype(np.uint8),
                                                                                          faces["mask"].affine),
                                radius=10.0, estimator=make_classifier(classifier), cv=LeaveOneGroupOut(),
                                scoring="balanced_accuracy").fit(masking.unmask(lss.X, faces["mask"]), lss.labels,
                                                                 groups=lss.runs)
    theirs = reference.scores_[inside]
    difference = np.abs(ours - theirs)[process[inside]]
    # the solvers' tolerances may flip a held-out trial lying on the boundary: 1/80 of balanced accuracy
    assert difference.max() <= 1 / 80 + 1e-6 and (difference < 1e-6).mean() >= 0.9
    assert np.all(ours[~process[inside]] == 0)


# --------------------------------------------------------------------------- errors


def edited_events(faces: dict, folder: Path, run: int, edit) -> list[Path]:
    """The task's events files with one run's table changed by ``edit``."""
    paths = []
    for index, path in enumerate(faces["events"]):
        target = folder / path.name
        shutil.copyfile(path, target)
        if index == run:
            edit(pd.read_csv(target, sep="\t")).to_csv(target, sep="\t", index=False)
        paths.append(target)
    return paths


def test_error_column_does_not_exist(faces, tmp_path):
    options = DecodingOptions(decode="condition=face,scrambled", searchlight=False)
    with pytest.raises(UserError, match="no column 'condition'") as error:
        fit_decoding(faces["bold"], faces["events"], faces["trs"], tmp_path, mask_files=faces["masks"], options=options)
    assert str(faces["events"][0]) in str(error.value) and "trial_type" in str(error.value)


def test_error_value_missing_in_a_run(faces, tmp_path):
    events = edited_events(faces, tmp_path, 1, lambda t: t.assign(trial_type=t["trial_type"].replace("scrambled", "noise")))
    with pytest.raises(UserError, match="'scrambled'") as error:
        fit_decoding(faces["bold"], events, faces["trs"], tmp_path, mask_files=faces["masks"],
                     options=DecodingOptions(decode=CONTRAST))
    assert str(events[1]) in str(error.value) and "every run" in str(error.value)


def test_error_one_class_and_no_contrast(faces, tmp_path):
    with pytest.raises(UserError, match="only one class"):
        DecodingOptions(decode="trial_type=face")
    with pytest.raises(UserError, match="needs a contrast"):
        fit_decoding(faces["bold"], faces["events"], faces["trs"], tmp_path, options=DecodingOptions())


def test_error_fewer_runs_than_folds(faces, tmp_path, lss):
    with pytest.raises(UserError, match="at least 2 runs") as error:
        fit_decoding(faces["bold"][:1], faces["events"][:1], faces["trs"][:1], tmp_path,
                     options=DecodingOptions(decode=CONTRAST))
    assert str(faces["bold"][0]) in str(error.value)
    with pytest.raises(UserError, match="at least 2 runs"):
        cross_validate_decoder(lss.X[lss.runs == 0], lss.labels[lss.runs == 0], lss.runs[lss.runs == 0])
    with pytest.raises(UserError, match="both classes in every run"):
        keep = (lss.runs == 0) | (lss.labels == "face")
        cross_validate_decoder(lss.X[keep], lss.labels[keep], lss.runs[keep])


def test_error_trial_too_close_to_the_end(faces, tmp_path):
    def late_trial(table):
        table.loc[len(table)] = [236.0, 1.0, "face", "faces/face01.png"]
        return table

    events = edited_events(faces, tmp_path, 0, late_trial)
    options = DecodingOptions(decode=CONTRAST, responses="peak", searchlight=False)
    with pytest.raises(UserError, match="too close to the end") as error:
        fit_decoding(faces["bold"], events, faces["trs"], tmp_path, mask_files=faces["masks"], options=options)
    assert str(events[0]) in str(error.value) and "responses='lss'" in str(error.value)


def test_error_features_from_another_run(faces, tmp_path):
    shifted = write_features(faces, tmp_path, shift=0.5)
    with pytest.raises(UserError, match="no feature row") as error:
        decode_features(shifted, faces["events"], DecodingOptions(decode=CONTRAST), StatsOptions(n_permutations=0))
    assert str(shifted[0]) in str(error.value)


@pytest.mark.parametrize("options, words", [
    ({"responses": "betas"}, "unknown trial responses 'betas'"),
    ({"classifier": "forest"}, "unknown classifier 'forest'"),
    ({"searchlight_radius": 0}, "radius"),
    ({"screening": 0}, "screening"),
])
def test_error_bad_options(options, words):
    with pytest.raises(UserError, match=words):
        DecodingOptions.from_dict({"decode": CONTRAST, **options})
    with pytest.raises(UserError, match="permutations"):
        StatsOptions(n_permutations=-1)


def test_options_round_trip():
    options = DecodingOptions.from_dict({"decode": CONTRAST, "searchlight_radius": 10})
    fmri = FMRIOptions.from_dict({"confounds": ["csf"]})
    assert fmri.confounds == ("csf",)
    assert describe(options, fmri, StatsOptions())["Searchlight"] == {"Radius": 10, "Units": "mm"}
    assert json.dumps(describe(options, fmri, StatsOptions()))
