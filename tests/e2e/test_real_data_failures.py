"""What real recordings bring that the simulated example did not: constant and NaN voxels outside the brain,
integer data with scaling, a single-volume run, a region stored as an x by 1 by 1 image. Each ends in a working
run or one clear paragraph, through the real CLI on raw BOLD (no derivatives, so the mask is computed)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.example import load_truth
from bids_encoding.fmri.design import hrf_design

from ..conftest import run_cli, snapshot
from .test_cli_errors import fails

FACES = ("--task", "faces", "--features", "trialtype", "--skip-bids-validation", "--n-permutations", "0")


def raw_bold(bids: Path, run: int) -> Path:
    return bids / f"sub-01/func/sub-01_task-faces_run-{run}_bold.nii.gz"


def rewrite(path: Path, change, dtype=None) -> None:
    """Rewrite a BOLD file with its data changed, stored as float32 or as ``dtype`` (for an integer type, nibabel
    scales the float values into its range and writes the slope and intercept that undo it)."""
    img = nib.load(path)
    data = change(np.asarray(img.dataobj, dtype=np.float64))
    out = nib.Nifti1Image(data, img.affine)  # a fresh header: its scaling is computed on saving
    out.header.set_data_dtype(dtype or np.float32)
    out.header.set_zooms(img.header.get_zooms())
    out.header.set_xyzt_units(*img.header.get_xyzt_units())
    out.to_filename(path)


def brain_sidecar(out: Path) -> dict:
    (path,) = out.glob("sub-01/func/*task-faces*desc-brain_mask.json")
    return json.loads(path.read_text())


def face_r2(out: Path, dataset: Path) -> tuple[float, float]:
    """Mean held-out R² of trialtype in the planted face sphere, and elsewhere in the brain."""
    (r2_file,) = out.glob("sub-01/func/*task-faces*desc-trialtype_stat-rSquare_statmap.nii.gz")
    r2 = np.asarray(nib.load(r2_file).dataobj)
    truth = load_truth(dataset, "01", "faces")["face"]
    brain = np.asarray(nib.load(next(out.glob("sub-01/func/*task-faces*desc-brain_mask.nii.gz"))).dataobj) > 0
    return float(r2[truth & brain].mean()), float(r2[brain & ~truth].mean())


@pytest.mark.slow
def test_nan_and_constant_voxels_outside_the_brain_are_left_out_of_the_computed_mask(broken_dataset, tmp_path):
    """Raw BOLD is 0 outside the head; here one corner voxel is NaN throughout and one brain voxel is constant."""
    truth = load_truth(broken_dataset, "01", "faces")["face"]
    inside = tuple(np.argwhere(truth)[0])
    for run in (1, 2):
        def change(data):
            data[0, 0, 0, :] = np.nan
            data[inside] = 1000.0
            return data
        rewrite(raw_bold(broken_dataset, run), change)
    before = snapshot(broken_dataset)
    out = tmp_path / "out"
    result = run_cli(broken_dataset, out, "participant", *FACES, "-w", tmp_path / "work")
    assert result.returncode == 0, result.stderr
    assert snapshot(broken_dataset) == before
    mask = np.asarray(nib.load(next(out.glob("sub-01/func/*desc-brain_mask.nii.gz"))).dataobj) > 0
    assert not mask[0, 0, 0] and not mask[inside], "NaN and constant voxels belong to no computed mask"
    assert "EPI mask computed" in brain_sidecar(out)["Method"]
    planted, elsewhere = face_r2(out, broken_dataset)
    assert planted > 0.05 > elsewhere


@pytest.mark.slow
def test_integer_bold_with_scaling_reads_as_its_scaled_values(broken_dataset, tmp_path):
    for run in (1, 2):
        rewrite(raw_bold(broken_dataset, run), lambda data: data * 100.0, dtype=np.int16)  # beyond int16: scaled
    stored = nib.load(raw_bold(broken_dataset, 1))
    assert stored.get_data_dtype() == np.int16 and stored.dataobj.slope != 1.0, "stored as scaled integers"
    out = tmp_path / "out"
    result = run_cli(broken_dataset, out, "participant", *FACES, "-w", tmp_path / "work")
    assert result.returncode == 0, result.stderr
    planted, elsewhere = face_r2(out, broken_dataset)
    assert planted > 0.05 > elsewhere


def test_a_single_volume_run_is_a_clear_error(broken_dataset, tmp_path, capsys):
    rewrite(raw_bold(broken_dataset, 2), lambda data: data[..., :1])
    err = fails(capsys, broken_dataset, tmp_path / "out", *FACES)
    assert "sub-01_task-faces_run-2_bold.nii.gz" in err and "1 volume" in err and "at least 3" in err


def write_roi_dataset(root: Path, n_volumes: int = 150, tr: float = 2.0) -> tuple[Path, np.ndarray]:
    """A tiny BIDS dataset whose BOLD is six regions stored as a 6 x 1 x 1 image (as ROI time series often are);
    the first two follow a planted face-vs-house block design, the others are noise with a slow drift."""
    rng = np.random.default_rng(0)
    (root / "sub-01" / "func").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "six regions", "BIDSVersion": "1.10.0"}))
    (root / "task-blocks_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": "blocks"}))
    planted = np.array([True, True, False, False, False, False])
    for run in (1, 2, 3):
        onsets = np.arange(10.0, n_volumes * tr - 30, 30.0)
        kinds = np.resize(["face", "house"], len(onsets))
        events = pd.DataFrame({"onset": onsets, "duration": 15.0, "trial_type": kinds})
        events.to_csv(root / f"sub-01/func/sub-01_task-blocks_run-{run}_events.tsv", sep="\t", index=False)
        signal = hrf_design(onsets, np.full(len(onsets), 15.0), (kinds == "face").astype(float)[:, None], n_volumes,
                            tr)[:, 0]
        drift = np.linspace(-1, 1, n_volumes) ** 2 * 5
        data = 100 + rng.standard_normal((n_volumes, 6)) + drift[:, None]
        data[:, planted] += 3 * signal[:, None] / signal.std()
        img = nib.Nifti1Image(data.T.reshape(6, 1, 1, n_volumes).astype(np.float32), np.eye(4))
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
        img.to_filename(root / f"sub-01/func/sub-01_task-blocks_run-{run}_bold.nii.gz")
    return root, planted


@pytest.mark.slow
def test_regions_stored_as_an_x_by_1_by_1_image_are_modelled(tmp_path):
    bids, planted = write_roi_dataset(tmp_path / "bids")
    out = tmp_path / "out"
    result = run_cli(bids, out, "participant", "--features", "trialtype", "--skip-bids-validation",
                     "--n-permutations", "0", "-w", tmp_path / "work")
    assert result.returncode == 0, result.stderr
    (r2_file,) = out.glob("sub-01/func/*desc-trialtype_stat-rSquare_statmap.nii.gz")
    r2 = np.asarray(nib.load(r2_file).dataobj).reshape(6)
    assert r2[planted].min() > 0.3 and r2[~planted].max() < 0.1, r2
    (sidecar,) = out.glob("sub-01/func/*desc-brain_mask.json")
    about = json.loads(sidecar.read_text())
    assert "finite, non-constant" in about["Method"], about  # nilearn's EPI mask cannot be computed on 6 voxels
