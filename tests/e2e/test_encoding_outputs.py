"""Optional outputs of the encoding stage on real runs: region summaries, noise ceiling, FIR design, confounds."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd

from bids_encoding.cli import main
from bids_encoding.example import load_truth

SPACE = "MNI152NLin2009cAsym"


def run(bids, out, *options):
    status = main([str(bids), str(out), "participant", "--skip-bids-validation", "--task", "lpp",
                   "-d", str(bids / "derivatives/fmriprep"), "-w", str(out.parent / "work"), *options])
    assert status == 0


def test_region_summary_from_an_atlas(small_dataset, tmp_path):
    truth = load_truth(small_dataset, "01", "lpp")
    reference = nib.load(next((small_dataset / "sourcedata/groundtruth").glob("sub-01_task-lpp_desc-wordrate_mask.nii.gz")))
    labels = truth["wordrate"] * 1 + truth["wordlength"] * 2
    atlas = tmp_path / "atlas_dseg.nii.gz"
    nib.Nifti1Image(labels.astype(np.int16), reference.affine).to_filename(atlas)
    pd.DataFrame({"index": [1, 2], "name": ["temporal", "ventral"]}).to_csv(tmp_path / "atlas_dseg.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    run(small_dataset, out, "--features", "wordrate", "--atlas", str(atlas))
    table = pd.read_csv(out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-wordrate_regions.tsv", sep="\t")
    assert table["name"].tolist() == ["temporal", "ventral"]
    temporal, ventral = table.set_index("name").loc[["temporal", "ventral"], "mean_r2"]
    assert temporal > 0.05 and temporal > 10 * abs(ventral)
    assert table.set_index("name").loc["temporal", "fraction_significant"] > 0.5
    sidecar = json.loads((out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-wordrate_regions.json").read_text())
    assert "mean_r2" in sidecar and sidecar["Atlas"] == str(atlas)


def test_noise_ceiling_when_runs_repeat_their_stimuli(broken_dataset, tmp_path):
    func = broken_dataset / "sub-01/func"
    shutil.copy(func / "sub-01_task-lpp_run-1_events.tsv", func / "sub-01_task-lpp_run-3_events.tsv")
    out = tmp_path / "out"
    run(broken_dataset, out, "--features", "wordrate")
    path = out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-repeats_stat-explainableVariance_statmap.nii.gz"
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["RepeatedRuns"] == [[0, 2]]
    ev = nib.load(path).get_fdata()
    truth = load_truth(broken_dataset, "01", "lpp")["wordrate"]
    # run 3's BOLD followed its own words, not run 1's, so little is repeatable anywhere
    assert abs(np.median(ev[truth])) < 0.2


def test_fir_design_and_confounds_run_and_are_recorded(small_dataset, tmp_path):
    out = tmp_path / "out"
    run(small_dataset, out, "--features", "wordrate", "--design", "fir", "--delays", "1", "2", "3", "4",
        "--confounds", "trans_x", "rot_z", "csf", "--trim", "2", "2")
    path = out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-wordrate_stat-rSquare_statmap.nii.gz"
    model = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())["Model"]
    assert "FIR delays [1, 2, 3, 4]" in model["Design"] and model["FeatureSpaces"] == {"wordrate": 4}
    assert model["Confounds"] == {"Columns": ["trans_x", "rot_z", "csf"], "Mode": "regress"}
    assert model["NSamples"] == 3 * (200 - 4)
    r2 = nib.load(path).get_fdata()
    truth = load_truth(small_dataset, "01", "lpp")["wordrate"]
    assert np.median(r2[truth]) > 0.05


def test_confounds_as_their_own_band(small_dataset, tmp_path):
    out = tmp_path / "out"
    run(small_dataset, out, "--features", "wordrate", "--confounds", "trans_x", "trans_y", "--confounds-mode", "band")
    path = out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-wordrate_stat-rSquare_statmap.nii.gz"
    model = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())["Model"]
    assert "banded" in model["Estimator"]


def test_unknown_confound_column_is_explained(small_dataset, tmp_path, capsys):
    status = main([str(small_dataset), str(tmp_path / "out"), "participant", "--skip-bids-validation", "--task", "lpp",
                   "-d", str(small_dataset / "derivatives/fmriprep"), "--features", "wordrate", "--confounds", "nope"])
    assert status == 2
    err = capsys.readouterr().err
    assert "no column nope" in err and "desc-confounds_timeseries.tsv" in err
