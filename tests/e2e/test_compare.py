"""--compare on the example: word rate predicts its own sphere better than word length, and the reverse; where both
drive a sphere alike (``ratelength``) the paired test finds a tie, though each model alone is significant there."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.example import atlas_path, load_truth

from ..conftest import SPACE, group_level, run_cli, snapshot, statmap, validator_errors

DESC = "wordrateVsWordlength"


@pytest.fixture(scope="module")
def example_dataset(three_subject_dataset):
    """The group level needs three subjects (sub-01 is the two-subject example's)."""
    return three_subject_dataset


@pytest.fixture(scope="module")
def compared(example_dataset, tmp_path_factory):
    """One participant run of the story task with the comparison, all three subjects (slow: run once)."""
    root = tmp_path_factory.mktemp("compare")
    out = root / "out"
    result = run_cli(example_dataset, out, "participant", "-d", example_dataset / "derivatives/fmriprep",
                     "--task", "lpp", "--features", "wordrate", "wordlength", "--compare", "wordrate:wordlength",
                     "--atlas", atlas_path(example_dataset), "-w", root / "work", "--n-cpus", "2")
    assert result.returncode == 0, result.stderr
    return out


def test_delta_r2_and_paired_q_find_the_planted_spheres(compared, example_dataset):
    out = compared
    delta, p, q = (nib.load(statmap(out, "01", "lpp", DESC, stat)).get_fdata() for stat in ("deltaRSquare", "p", "q"))
    mask = nib.load(out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    truth = load_truth(example_dataset, "01", "lpp")
    rate, length = truth["wordrate"] & mask, truth["wordlength"] & mask
    rest = mask & ~np.any(list(truth.values()), axis=0)
    assert np.median(delta[rate]) > 0 > np.median(delta[length])
    assert np.mean(q[rate] < 0.05) > 0.2
    outside = float(np.mean(p[rest] < 0.05))
    print(f"example sub-01 lpp: wordrate sphere q < 0.05 in {np.mean(q[rate] < 0.05):.2f}, wordlength sphere p < 0.05 "
          f"in {np.mean(p[length] < 0.05):.2f}, voxels outside the spheres p < 0.05 in {outside:.3f}, "
          f"q < 0.05 in {int(np.sum(q[rest] < 0.05))} of {int(rest.sum())}")
    assert outside < 0.08
    assert np.sum(q[rest] < 0.05) <= max(2, 0.005 * rest.sum())
    # the tie: both models predict the sphere (each alone is significant in most of it), neither better
    tie = truth["ratelength"] & mask
    singles = {name: nib.load(out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-{name}_stat-q_statmap.nii.gz")
               .get_fdata()[tie] for name in ("wordrate", "wordlength")}
    print(f"tie sphere ({tie.sum()} voxels): wordrate q < 0.05 in {np.mean(singles['wordrate'] < 0.05):.2f}, wordlength "
          f"in {np.mean(singles['wordlength'] < 0.05):.2f}; paired p < 0.05 in {np.mean(p[tie] < 0.05):.2f}, "
          f"q < 0.05 in {np.mean(q[tie] < 0.05):.2f}, median delta R2 {np.median(delta[tie]):.4f} (wordrate sphere "
          f"{np.median(delta[rate]):.4f})")
    assert all(np.mean(values < 0.05) > 0.5 for values in singles.values())
    assert np.mean(p[tie] < 0.05) < 0.15 and not np.any(q[tie] < 0.05)
    assert np.mean(p[tie] > 0.95) < 0.15  # nor B better than A: p > 0.95 one-sided is p < 0.05 the other way
    assert abs(np.median(delta[tie])) < 0.35 * np.median(delta[rate])
    sidecar = json.loads(statmap(out, "01", "lpp", DESC, "p").with_suffix("").with_suffix(".json").read_text())
    assert sidecar["ComparedModels"] == {"A": "wordrate", "B": "wordlength"}
    assert "Williams" in sidecar["Model"]["SignificanceNull"] and sidecar["Model"]["Alternative"] == "greater"


def test_the_subject_report_shows_the_comparison_and_its_methods(compared):
    report = (compared / "sub-01.html").read_text()
    assert f"desc-{DESC}_stat-deltaRSquare_statmap_map.png" in report
    assert "Feature spaces were compared in pairs (wordrate with wordlength (task lpp))" in report


def test_comparison_outputs_pass_the_bids_validator(compared):
    assert validator_errors(compared) == []


def test_group_level_tests_the_delta_r2_maps_and_finds_the_wordrate_sphere(compared, example_dataset, tmp_path):
    out = group_level(example_dataset, compared, tmp_path, "--group-test", "parametric")
    prefix = out / "group" / f"task-lpp_space-{SPACE}_desc-{DESC}_stat-"
    delta, t = (nib.load(f"{prefix}{stat}_statmap.nii.gz").get_fdata() for stat in ("deltaRSquare", "t"))
    mask = nib.load(out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    truth = load_truth(example_dataset, "01", "lpp")  # the same spheres in every subject
    rate, rest = truth["wordrate"] & mask, mask & ~np.any(list(truth.values()), axis=0)
    assert np.median(delta[rate]) > 0 and np.median(t[rate]) > np.percentile(t[rest], 95)
    assert Path(f"{prefix}pFDR_statmap.nii.gz").exists()
    # the region tables (--atlas): word rate beats word length in its sphere, the reverse in the other, a tie between
    regions = pd.read_csv(out / "group" / f"task-lpp_space-{SPACE}_desc-{DESC}_regions.tsv", sep="\t").set_index("name")
    print(regions[["mean", "t", "p_value", "p_fdr"]])
    # (three subjects: FDR over the eight regions is out of reach; the uncorrected p and the ranking are not)
    assert regions.loc["wordrateSphere", "p_value"] < 0.05 and regions["t"].idxmax() == "wordrateSphere"
    # the tie is not a win, and whatever difference there is stays small beside the planted one
    assert regions.loc["wordlengthSphere", "t"] < 0 and regions.loc["ratelengthSphere", "p_value"] > 0.05
    assert abs(regions.loc["ratelengthSphere", "mean"]) < 0.25 * regions.loc["wordrateSphere", "mean"]
    assert json.loads((out / "group" / f"task-lpp_space-{SPACE}_desc-{DESC}_regions.json").read_text())[
        "Alternative"] == "greater"


def test_comparing_a_feature_space_that_was_not_requested_is_a_user_error(example_dataset, tmp_path):
    before = snapshot(example_dataset)
    result = run_cli(example_dataset, tmp_path / "out", "participant", "-d", example_dataset / "derivatives/fmriprep",
                     "--participant-label", "01", "--task", "lpp", "--features", "wordrate", "wordlength",
                     "--compare", "wordrate:glove", "-w", tmp_path / "work")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "glove" in message and "wordrate" in message and "wordlength" in message and "--features" in message
    assert "Traceback" not in message and "\n\n" not in message
    assert not (tmp_path / "out" / "sub-01").exists()
    assert snapshot(example_dataset) == before
