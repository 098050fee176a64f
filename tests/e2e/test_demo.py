"""`bids-encoding demo` (what `make demo` runs): the example dataset, participant and group levels, reports."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.cli.commands import DEMO_SUBJECTS
from bids_encoding.example import load_truth

from ..conftest import SPACE, run_cli


@pytest.mark.slow
def test_demo_runs_both_levels_and_the_group_finds_each_planted_sphere_significant(tmp_path):
    result = run_cli("demo", tmp_path / "demo", "--features", "wordrate", "trialtype")
    assert result.returncode == 0, result.stderr
    assert "Demo finished." in result.stdout
    out = tmp_path / "demo" / "derivatives" / "bids-encoding"
    subjects = [f"sub-{i:02d}" for i in range(1, DEMO_SUBJECTS + 1)]
    assert {p.name for p in out.glob("*.html")} == {f"{s}.html" for s in subjects} | {"group.html"}
    # every trial drives the face sphere (by category) and the latent sphere (one factor each), not the edges one
    # and the one short drifting run of the blocks task drives the sound sphere
    # (the ratelength sphere follows word rate and word length alike)
    for task, desc, spheres in (("lpp", "wordrate", {"wordrateSphere", "ratelengthSphere"}), ("faces", "trialtype", {"faceSphere", "latentSphere"}),
                                ("blocks", "trialtype", {"soundSphere"})):
        regions = pd.read_csv(out / "group" / f"task-{task}_space-{SPACE}_desc-{desc}_regions.tsv", sep="\t")
        assert {*subjects, "p_value", "p_fwe"} <= set(regions.columns) and (regions["n_subjects"] == DEMO_SUBJECTS).all()
        ranked = regions.sort_values("mean", ascending=False)
        assert set(ranked["name"][: len(spheres)]) == spheres
        assert (ranked["mean"][: len(spheres)] > 0.05).all() and (ranked["mean"][len(spheres):] < 0.01).all()
        # the planted spheres survive the max-t correction over the regions; the others do not
        by_name = regions.set_index("name")
        assert (by_name.loc[sorted(spheres), "p_fwe"] < 0.05).all(), by_name[["mean", "t", "p_fwe"]]
        assert (by_name.drop(sorted(spheres))["p_fwe"] > 0.05).all(), by_name[["mean", "t", "p_fwe"]]
    # and voxel by voxel: the max-t correction over ~8,700 voxels leaves, of six subjects, the sphere's peak voxels
    bids = tmp_path / "demo" / "bids"
    truth = load_truth(bids, "01", "lpp")
    prefix = out / "group" / f"task-lpp_space-{SPACE}_desc-wordrate_stat-"
    p_fwe, t = (nib.load(f"{prefix}{stat}_statmap.nii.gz").get_fdata() for stat in ("pFWE", "t"))
    significant = p_fwe < 0.05
    driven = truth["wordrate"] | truth["ratelength"]  # word rate drives both
    assert significant[truth["wordrate"]].sum() >= 1 and not significant[~driven].any()
    assert np.argmax(t) in np.flatnonzero(truth["wordrate"])
    assert np.abs(t).max() < 1e3  # no t from a variance of ~0
    sidecar = json.loads((out / "group" / f"task-lpp_space-{SPACE}_desc-wordrate_stat-pFWE_statmap.json").read_text())
    assert sidecar["NSubjects"] == DEMO_SUBJECTS and sidecar["Test"] == "permutation" and "NConstant" in sidecar
