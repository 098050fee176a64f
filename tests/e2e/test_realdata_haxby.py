"""The real CLI on a real recording: Haxby et al. (2001) subject 1 (tests/data/haxby2001-sub1, raw BIDS,
no derivatives given). Face vs house is decoded from the ventral temporal slice as the literature has it,
encoding held-out R² ranks voxels as nilearn's first-level F-test of the 8 categories does, the 25 mm
whole-brain acquisition runs with no mask argument, and region and brain masks behave on these data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ..conftest import run_cli, snapshot

pytestmark = pytest.mark.slow

DATASET = Path(__file__).resolve().parents[1] / "data" / "haxby2001-sub1"
FUNC = DATASET / "sub-01" / "func"
PUBLISHED_SLICE_MASK = DATASET / "derivatives/masks/sub-01/sub-01_acq-1slice_desc-brain_mask.nii.gz"
PREFIX = "sub-01/func/sub-01_task-objectviewing_acq-{acq}_"
N_SLICE_VOXELS = 530  # the slice's voxels with a time series, the size of PyMVPA's slice brain mask
TR = 2.5


def cli(tmp: Path, acq: str, *options: str):
    """The app on the raw dataset, one acquisition, outputs in ``tmp``; the dataset is never written."""
    tmp.mkdir(parents=True, exist_ok=True)
    filters = tmp / "filter.json"
    filters.write_text(json.dumps({"bold": {"acquisition": acq}}))
    before = snapshot(DATASET)
    result = run_cli(DATASET, tmp / "out", "participant", "--bids-filter-file", filters, "-w", tmp / "work", *options)
    assert snapshot(DATASET) == before, "the input dataset was written to"
    return result, tmp / "out"


def encode(tmp: Path, *options: str, acq: str = "1slice") -> Path:
    result, out = cli(tmp, acq, "--features", "trialtype", *options)
    assert result.returncode == 0, result.stderr
    return out


def statmap(out: Path, stat: str = "rSquare", acq: str = "1slice") -> np.ndarray:
    return nib.load(out / (PREFIX.format(acq=acq) + f"desc-trialtype_stat-{stat}_statmap.nii.gz")).get_fdata()


def brain_mask(out: Path, acq: str = "1slice") -> np.ndarray:
    return nib.load(out / (PREFIX.format(acq=acq) + "desc-brain_mask.nii.gz")).get_fdata() > 0


# --- a. face vs house -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    result, out = cli(tmp_path_factory.mktemp("haxby-decoding"), "1slice", "--analysis", "decoding",
                      "--decode", "trial_type=face,house", "--n-permutations", "200", "--no-searchlight")
    assert result.returncode == 0, result.stderr
    return result, out / (PREFIX.format(acq="1slice") + "desc-faceVsHouse_decoding")


def test_faces_and_houses_are_told_apart_in_ventral_temporal_cortex(decoded):
    _, stem = decoded
    brain = pd.read_csv(stem.with_suffix(".tsv"), sep="\t").set_index("source").loc["brain"]
    # Haxby 2001: ~96 % pairwise identification; 0.94 with per-volume samples on this slice
    assert brain["balanced_accuracy"] >= 0.9
    assert brain["p_value"] < 0.05  # 200 label permutations within runs: the smallest p is 1/201
    assert brain["chance"] == 0.5 and brain["n_folds"] == 12 and brain["n_trials"] == 24
    assert brain["n_features"] == N_SLICE_VOXELS


def test_the_empty_epi_mask_falls_back_to_every_voxel_with_a_time_series_and_says_so(decoded):
    result, stem = decoded
    mask = json.loads(stem.with_suffix(".json").read_text())["BrainMask"]
    assert mask["NVoxels"] == N_SLICE_VOXELS
    assert "finite, non-constant" in mask["Method"] and "EPI mask" in mask["Method"]
    warning = [line for line in result.stderr.splitlines() if "WARNING" in line and "EPI mask" in line]
    assert len(warning) == 1 and f"holds 0 of the {N_SLICE_VOXELS} voxels" in warning[0], result.stderr[-2000:]


# --- b. the 25 mm whole brain -----------------------------------------------------------------------------

def test_the_whole_brain_acquisition_runs_with_no_mask_argument(tmp_path):
    out = encode(tmp_path, acq="25mm")
    mask = brain_mask(out, acq="25mm")
    assert mask.shape == (6, 10, 10) and mask.sum() > 0
    for stat in ("rSquare", "r", "alpha", "p", "q"):
        assert np.isfinite(statmap(out, stat, acq="25mm")[mask]).all(), stat
    assert not list(out.rglob("*acq-1slice*"))


# --- c. encoding against nilearn's first-level F-test ------------------------------------------------------

@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Held-out R² of the 8 categories: with the default 0.01 Hz drift removal, and with none (--high-pass 0)."""
    return {hp: encode(tmp_path_factory.mktemp(f"haxby-encoding-{hp}"), "--high-pass", hp) for hp in ("0.01", "0")}


@pytest.fixture(scope="module")
def category_f(encoded):
    """nilearn's F-test of the 8 category regressors, fixed effects over the 12 runs, in the app's mask."""
    from nilearn.glm.first_level import FirstLevelModel

    runs = sorted(FUNC.glob("*_acq-1slice_run-*_bold.nii.gz"))
    events = [pd.read_csv(str(run).replace("_bold.nii.gz", "_events.tsv"), sep="\t") for run in runs]
    mask_img = nib.load(encoded["0.01"] / (PREFIX.format(acq="1slice") + "desc-brain_mask.nii.gz"))
    glm = FirstLevelModel(t_r=TR, mask_img=mask_img, hrf_model="glover", drift_model="cosine", high_pass=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        glm.fit([str(r) for r in runs], events=events)
        columns = list(glm.design_matrices_[0].columns)
        categories = sorted(events[0]["trial_type"].unique())
        assert len(categories) == 8 and all(set(e["trial_type"]) == set(categories) for e in events)
        contrast = np.zeros((8, len(columns)))
        for row, category in enumerate(categories):
            contrast[row, columns.index(category)] = 1
        f = glm.compute_contrast(contrast, stat_type="F", output_type="stat").get_fdata()
    inside = mask_img.get_fdata() > 0
    return f[inside], inside


def top_voxels(f: np.ndarray) -> np.ndarray:
    return f >= np.quantile(f, 0.95)


def test_held_out_r2_is_positive_where_the_category_f_test_is_strongest(encoded, category_f):
    f, inside = category_f
    assert inside.sum() == N_SLICE_VOXELS
    r2 = statmap(encoded["0.01"])[inside]
    top = top_voxels(f)
    assert top.sum() >= 25
    assert r2[top].mean() > 0 and (r2[top] > 0).mean() > 0.5, (r2[top].mean(), (r2[top] > 0).mean())
    assert r2[top].mean() > r2.mean()


def test_encoding_ranks_voxels_as_the_category_f_test_does(encoded, category_f):
    from scipy.stats import spearmanr

    f, inside = category_f
    rho = spearmanr(statmap(encoded["0.01"])[inside], f)[0]
    assert rho >= 0.7, rho


def test_drift_removal_matches_nilearns_drift_model(encoded, category_f):
    """The app's 0.01 Hz cosine drift removal is the first-level model's: its R² map ranks voxels as that
    model's F-test does more closely than the map fitted with the drifts left in."""
    from scipy.stats import spearmanr

    f, inside = category_f
    rho = {hp: spearmanr(statmap(out)[inside], f)[0] for hp, out in encoded.items()}
    assert rho["0.01"] > rho["0"], rho


@pytest.mark.xfail(strict=True, reason=(
    "not on these events: each category is one 22.5 s block per 302.5 s run, so the 0.01 Hz cosine basis takes "
    "~30 % of every category regressor's variance, and PyMVPA's onsets sit ~5 s later than the BOLD fits best "
    "(shifted 5 s earlier, drift removal does raise held-out R²). Measured: 0.157 without, 0.151 with."))
def test_drift_removal_raises_held_out_r2_in_the_best_voxels(encoded, category_f):
    f, inside = category_f
    top = top_voxels(f)
    mean = {hp: statmap(out)[inside][top].mean() for hp, out in encoded.items()}
    assert mean["0"] < mean["0.01"], mean


# --- d. region and brain masks ----------------------------------------------------------------------------

def test_a_region_outside_the_brain_mask_is_a_clear_error(tmp_path):
    published = nib.load(PUBLISHED_SLICE_MASK)
    outside = (np.asarray(published.dataobj) == 0).astype(np.uint8)
    assert outside.sum() > 0
    roi = tmp_path / "outside_roi.nii.gz"
    nib.save(nib.Nifti1Image(outside, published.affine), roi)
    result, out = cli(tmp_path, "1slice", "--analysis", "decoding", "--decode", "trial_type=face,house",
                      "--n-permutations", "0", "--roi", roi)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bids-encoding: error:")]
    assert len(errors) == 1, result.stderr
    assert str(roi) in errors[0] and "brain mask" in errors[0] and f"{N_SLICE_VOXELS} voxels" in errors[0]
    assert not (out / "sub-01").exists()


def test_the_published_slice_mask_given_with_mask_is_the_fallback(encoded, tmp_path):
    out = encode(tmp_path, "--mask", PUBLISHED_SLICE_MASK)
    mask = brain_mask(out)
    assert mask.sum() == N_SLICE_VOXELS
    assert np.array_equal(mask, brain_mask(encoded["0.01"]))
    assert np.array_equal(mask, np.asarray(nib.load(PUBLISHED_SLICE_MASK).dataobj) > 0)
    sidecar = json.loads((out / (PREFIX.format(acq="1slice") + "desc-brain_mask.json")).read_text())
    assert sidecar["Method"] == "given with --mask"
    np.testing.assert_allclose(statmap(out)[mask], statmap(encoded["0.01"])[mask], rtol=1e-5, atol=1e-6)
