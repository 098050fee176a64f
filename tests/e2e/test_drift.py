"""The example's `blocks` task, one short run (84 volumes, no run- entity) with the slow drift of a real scanner:
the real-data case that held-out R² and significance got wrong before drift removal and the effective-df null.
Without drift removal (--high-pass 0) held-out blocks are predicted worse than by their mean; with the default
0.01 Hz the planted auditory sphere is found, and is significant after FDR correction, from one short run."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_encoding.example import load_truth

from ..conftest import SPACE, run_cli


def _fit(dataset, tmp_path_factory, high_pass: str) -> dict[str, np.ndarray]:
    root = tmp_path_factory.mktemp(f"blocks-{high_pass}")
    result = run_cli(dataset, root / "out", "participant", "--participant-label", "01", "--task", "blocks",
                     "--features", "trialtype", "-d", dataset / "derivatives/fmriprep", "--high-pass", high_pass,
                     "-w", root / "work", "--skip-bids-validation")
    assert result.returncode == 0, result.stderr
    prefix = root / "out/sub-01/func" / f"sub-01_task-blocks_space-{SPACE}_desc-"  # one run: no run- entity, no run
    maps = {stat: nib.load(f"{prefix}trialtype_stat-{stat}_statmap.nii.gz").get_fdata() for stat in ("rSquare", "q")}
    maps["mask"] = nib.load(f"{prefix}brain_mask.nii.gz").get_fdata() > 0
    maps["sidecar"] = json.loads(open(f"{prefix}trialtype_stat-rSquare_statmap.json").read())
    return maps


@pytest.fixture(scope="module")
def fits(example_dataset, tmp_path_factory):
    return {hp: _fit(example_dataset, tmp_path_factory, hp) for hp in ("0.01", "0")}


@pytest.fixture(scope="module")
def planted(example_dataset):
    return load_truth(example_dataset, "01", "blocks")["sound"]


@pytest.mark.slow
def test_without_drift_removal_held_out_r2_of_the_planted_sphere_is_negative(fits, planted):
    # measured on sub-01: median R² of the planted voxels -0.19 without, 0.83 with drift removal (the published GLM
    # peak of the auditory block-design run the issue reported reached 0.83 too); elsewhere -3.1 without, -0.06 with
    without, with_ = fits["0"], fits["0.01"]
    assert np.median(without["rSquare"][planted]) < 0
    assert np.median(with_["rSquare"][planted]) > 0.6
    rest = with_["mask"] & ~planted
    assert np.median(without["rSquare"][rest]) < -1 < -0.2 < np.median(with_["rSquare"][rest]) < 0
    assert with_["sidecar"]["Model"]["HighPass"]["Frequency"] == 0.01
    assert without["sidecar"]["Model"]["HighPass"]["Frequency"] == 0


@pytest.mark.slow
def test_one_short_run_finds_the_planted_sphere_after_fdr_correction(fits, planted):
    # measured: q < 0.05 in 76 % of the planted voxels (33, the sphere's edge at half amplitude) and in none of the
    # other 8,702
    with_ = fits["0.01"]
    q, rest = with_["q"], with_["mask"] & ~planted
    assert np.isfinite(q[with_["mask"]]).all()  # a p-value for every voxel of a 17-volume test fold: never NaN, never 1
    assert (q[planted] < 0.05).mean() > 0.5
    assert (q[rest] < 0.05).mean() < 0.001
