"""First use: without --features the app picks a model for each task from its events (trialtype where the events
have a trial_type column, wordrate where they hold words), says so, records it, and recovers the planted spheres."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.example import load_truth

from ..conftest import SPACE, run_cli, snapshot


def _map(out, task: str, desc: str) -> np.ndarray:
    return nib.load(out / f"sub-01/func/sub-01_task-{task}_space-{SPACE}_desc-{desc}_stat-rSquare_statmap.nii.gz").get_fdata()


@pytest.mark.slow
def test_without_features_each_task_gets_the_default_its_events_allow(example_dataset, tmp_path):
    out = tmp_path / "out"
    before = snapshot(example_dataset)
    result = run_cli(example_dataset, out, "participant", "--participant-label", "01", "-d",
                     example_dataset / "derivatives/fmriprep", "-w", tmp_path / "work", "--skip-bids-validation")
    assert result.returncode == 0, result.stderr
    assert "no --features given: using trialtype for tasks blocks, faces, wordrate for task lpp" in result.stderr
    assert snapshot(example_dataset) == before
    maps = {p.name.split("_desc-")[1].split("_")[0] + "@" + p.name.split("_task-")[1].split("_")[0]
            for p in (out / "sub-01/func").glob("*_stat-rSquare_statmap.nii.gz")}
    assert maps == {"trialtype@blocks", "trialtype@faces", "wordrate@lpp"}  # each default only where it applies

    mask = {task: nib.load(out / f"sub-01/func/sub-01_task-{task}_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
            for task in ("lpp", "faces")}
    for task, desc, planted in (("lpp", "wordrate", "wordrate"), ("faces", "trialtype", "face")):
        r2, truth = _map(out, task, desc), load_truth(example_dataset, "01", task)
        rest = mask[task] & ~np.any(list(truth.values()), axis=0)
        means = {name: r2[voxels & mask[task]].mean() for name, voxels in truth.items()}
        if task == "lpp":  # of the story's five spheres, the word rate explains its own best
            assert max(means, key=means.get) == "wordrate", means
        assert means[planted] > 0.05 and np.median(r2[truth[planted] & mask[task]]) > np.percentile(r2[rest], 99)
        assert abs(np.median(r2[rest])) < 0.01

    sidecar = json.loads((out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-wordrate_stat-rSquare_statmap.json")
                         .read_text())
    assert sidecar["bids-encoding"]["Config"]["features"] == ["trialtype", "wordrate"]  # provenance names the defaults


def test_without_features_and_events_that_hold_neither_the_error_names_the_events(broken_dataset, tmp_path):
    for events in (broken_dataset / "sub-01/func").glob("*_events.tsv"):  # onsets and durations only
        table = pd.read_csv(events, sep="\t")
        table[["onset", "duration"]].to_csv(events, sep="\t", index=False)
    result = run_cli(broken_dataset, tmp_path / "out", "participant", "-d", broken_dataset / "derivatives/fmriprep",
                     "-w", tmp_path / "work", "--skip-bids-validation")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"bids-encoding: error: {broken_dataset / 'sub-01/func'}")
    assert "no --features given" in error and "trial_type" in error and "words" in error
    assert "--features" in error and "installed: " in error and "wordrate" in error and "glove" in error
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("sub-*"))
