"""Layer sweep on the example: the shallow sphere follows minilm's L0, the deep sphere its L5 (the planted layer
gradient); the subject level maps the best layer and tabulates R² by layer per region, the group level finds that
the preferred layer differs between the two regions."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_encoding.example import LAYER_OF, load_truth

from ..conftest import SPACE, run_cli, validator_errors

pytestmark = pytest.mark.slow
LAYERS = "0,3,5"  # the planted layers and one between them: 3 fits per subject instead of 7
REGIONS = {1: "shallow", 2: "deep"}


def func(out: Path, sub: str, name: str) -> Path:
    return out / f"sub-{sub}/func/sub-{sub}_task-lpp_space-{SPACE}_{name}"


@pytest.fixture(scope="module")
def example_dataset(three_subject_dataset):
    """The group level needs three subjects."""
    return three_subject_dataset


@pytest.fixture(scope="module")
def images(example_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """The two spheres of the layer gradient as an atlas (labels 1 and 2, names in the TSV beside it), and a mask
    of the brain around them (18 mm), so that the fits take seconds: the whole brain adds nothing to this test."""
    truth = load_truth(example_dataset, "01", "lpp")
    brain = nib.load(example_dataset / f"derivatives/fmriprep/sub-01/func/sub-01_task-lpp_run-1_space-{SPACE}_res-6_"
                                       "desc-brain_mask.nii.gz")
    labels = np.zeros(truth["shallow"].shape, dtype=np.int16)
    for index, name in REGIONS.items():
        labels[truth[name]] = index
    folder = tmp_path_factory.mktemp("images")
    atlas, mask = folder / "layers_dseg.nii.gz", folder / "around_mask.nii.gz"
    nib.save(nib.Nifti1Image(labels, brain.affine), atlas)
    pd.DataFrame({"index": list(REGIONS), "name": [f"{n}Sphere" for n in REGIONS.values()]}).to_csv(
        folder / "layers_dseg.tsv", sep="\t", index=False)
    around = ndimage.binary_dilation(labels > 0, iterations=3) & (brain.get_fdata() > 0)
    nib.save(nib.Nifti1Image(around.astype(np.uint8), brain.affine), mask)
    return atlas, mask


@pytest.fixture(scope="module")
def swept(example_dataset, images, tmp_path_factory):
    """One participant run of the story task with a minilm layer sweep (three subjects), then the group level."""
    root = tmp_path_factory.mktemp("layers")
    out = root / "out"
    atlas, mask = images
    result = run_cli(example_dataset, out, "participant", "-d", example_dataset / "derivatives/fmriprep",
                     "--task", "lpp", "--features", f"minilm:layers={LAYERS}", "--atlas", atlas, "--mask", mask,
                     "-w", root / "work", "--n-cpus", "2")
    assert result.returncode == 0, result.stderr
    result = run_cli(example_dataset, out, "group", "-w", root / "work")
    assert result.returncode == 0, result.stderr
    return out


def test_the_planted_layers_are_what_the_spheres_follow():
    assert LAYER_OF == {"shallow": "L0", "deep": "L5"}


def test_the_best_layer_map_finds_the_shallow_sphere_shallower_than_the_deep_one(swept, example_dataset):
    truth = load_truth(example_dataset, "01", "lpp")
    for sub in ("01", "02", "03"):
        best = nib.load(func(swept, sub, "desc-minilm_stat-bestLayer_statmap.nii.gz")).get_fdata()
        best_r2 = nib.load(func(swept, sub, "desc-minilm_stat-bestLayerRSquare_statmap.nii.gz")).get_fdata()
        mask = nib.load(func(swept, sub, "desc-brain_mask.nii.gz")).get_fdata() > 0
        assert np.isnan(best[~mask]).all() and np.isin(best[mask], [0, 3, 5]).all()
        shallow, deep = np.median(best[truth["shallow"] & mask]), np.median(best[truth["deep"] & mask])
        print(f"sub-{sub}: median best layer {shallow:g} in the shallow sphere, {deep:g} in the deep sphere")
        assert shallow < deep
        assert np.median(best_r2[truth["shallow"] & mask]) > 0.05 and np.median(best_r2[truth["deep"] & mask]) > 0.05
    sidecar = json.loads(func(swept, "01", "desc-minilm_stat-bestLayer_statmap.json").read_text())
    assert sidecar["Layers"] == [0, 3, 5] and "highest held-out R²" in sidecar["Description"]


def test_the_region_table_gives_each_sphere_its_own_layer_with_fold_intervals(swept):
    table = pd.read_csv(func(swept, "01", "desc-minilm_layers.tsv"), sep="\t")
    assert len(table) == 6 and (table["n_folds"] == 3).all()
    assert ((table["ci_low"] <= table["mean_r2"]) & (table["mean_r2"] <= table["ci_high"])).all()
    best = table[table["best"] == 1].set_index("name")["layer"]
    assert best.to_dict() == {"shallowSphere": 0, "deepSphere": 5}
    sidecar = json.loads(func(swept, "01", "desc-minilm_layers.json").read_text())
    assert {"mean_r2", "ci_low", "ci_high", "layer"} <= set(sidecar)


def test_the_group_level_finds_that_the_preferred_layer_differs_between_the_spheres(swept):
    prefix = swept / "group" / f"task-lpp_space-{SPACE}_desc-minilm_"
    table = pd.read_csv(f"{prefix}layers.tsv", sep="\t")
    assert (table["n_subjects"] == 3).all() and {"sub-01", "sub-02", "sub-03"} <= set(table.columns)
    assert table[table["best"] == 1].set_index("name")["layer"].to_dict() == {"shallowSphere": 0, "deepSphere": 5}
    (row,) = pd.read_csv(f"{prefix}layertest.tsv", sep="\t").to_dict("records")
    print(f"group: {row}")
    assert row["test"] == "paired t" and row["regions"] == "shallowSphere vs deepSphere" and row["df"] == 2
    assert row["mean_difference"] > 1 and row["p_value"] < 0.05
    sidecar = json.loads(Path(f"{prefix}layertest.json").read_text())
    assert sidecar["LayerTest"].startswith("paired t-test")
    assert set(sidecar["PreferredLayers"]) == {"shallowSphere", "deepSphere"}


def test_the_reports_show_the_layer_sweep(swept):
    report = (swept / "sub-01.html").read_text()
    assert "desc-minilm_stat-bestLayer_statmap_map.png" in report and "desc-minilm_layers_regions.png" in report
    assert "the layer with the highest held-out R² was mapped per voxel" in report
    group = (swept / "group.html").read_text()
    assert f"task-lpp_space-{SPACE}_desc-minilm_layers_regions.png" in group and "preferred layer" in group


def test_layer_sweep_outputs_pass_the_bids_validator(swept):
    assert validator_errors(swept) == []
