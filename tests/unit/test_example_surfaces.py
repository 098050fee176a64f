"""The example's surface derivatives: fMRIPrep's names and layout, vol_to_surf's values, and the planted truth."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel import cifti2
from nilearn.datasets import load_fsaverage
from nilearn.surface import vol_to_surf

from bids_encoding.errors import UserError
from bids_encoding.example import (PLANTED, TASKS, TR, load_surface_truth, planted_regressor, sphere_weights,
                                   write_example_dataset)
from bids_encoding.example.surfaces import BIDSIGNORE, DEPTHS, SUBCORTICAL, SUBCORTICAL_RADIUS_MM
from ..conftest import validator_errors

SURFACE_NAMES = ("hemi-", "space-fsaverage5", "space-fsLR", ".gii", ".dtseries.", ".dscalar.")
N_FSAVERAGE5 = 10242


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """small_dataset's subject (seed 1) with both surface spaces and no EEG."""
    return write_example_dataset(tmp_path_factory.mktemp("surf") / "bids", n_subjects=1, seed=1, eeg=False,
                                 surfaces=("fsaverage5", "fsLR"))


def func_dir(root: Path) -> Path:
    return root / "derivatives" / "fmriprep" / "sub-01" / "func"


def runs() -> list[tuple[str, str, int]]:
    """(task, file stem, run) of every fMRI run the example writes."""
    return [(t.name, f"sub-01_task-{t.name}" + (f"_run-{run}" if t.n_runs > 1 else ""), run)
            for t in TASKS.values() for run in range(1, t.n_runs + 1)]


def preproc(root: Path, stem: str) -> nib.Nifti1Image:
    return nib.load(func_dir(root) / f"{stem}_space-MNI152NLin2009cAsym_res-6_desc-preproc_bold.nii.gz")


def gifti_series(path: Path) -> np.ndarray:
    """vertices x volumes."""
    return np.column_stack([d.data for d in nib.load(path).darrays])


def conte69(hemi: str) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """brainspace's fsLR 32k midthickness mesh and its cortex (mask 1) vertices."""
    folder = Path(importlib.util.find_spec("brainspace").submodule_search_locations[0]) / "datasets" / "surfaces"
    mesh = tuple(nib.load(folder / f"conte69_32k_{hemi.lower()}h.gii").agg_data(("pointset", "triangle")))
    return mesh, np.flatnonzero(np.loadtxt(folder / f"conte69_32k_{hemi.lower()}h_mask.csv") > 0)


def test_gifti_files_have_fmripreps_names_vertices_volumes_and_tr(dataset):
    for task, stem, _ in runs():
        for hemi, structure in (("L", "CortexLeft"), ("R", "CortexRight")):
            path = func_dir(dataset) / f"{stem}_hemi-{hemi}_space-fsaverage5_bold.func.gii"
            img = nib.load(path)
            assert len(img.darrays) == TASKS[task].n_volumes
            assert {d.data.shape for d in img.darrays} == {(N_FSAVERAGE5,)}
            assert {d.data.dtype for d in img.darrays} == {np.dtype(np.float32)}
            assert {float(d.meta["TimeStep"]) for d in img.darrays} == {TR}
            assert img.meta["AnatomicalStructurePrimary"] == structure
            sidecar = json.loads(path.with_name(path.name.replace(".func.gii", ".json")).read_text())
            assert sidecar["RepetitionTime"] == TR and sidecar["TaskName"] == task


def test_a_runs_vertices_are_vol_to_surf_of_its_volume_between_white_and_pial(dataset):
    meshes = load_fsaverage("fsaverage5")
    img = preproc(dataset, "sub-01_task-faces_run-2")
    for hemi, part in (("L", "left"), ("R", "right")):
        expected = vol_to_surf(img, meshes["pial"].parts[part], inner_mesh=meshes["white_matter"].parts[part],
                               depth=DEPTHS)
        written = gifti_series(func_dir(dataset) / f"sub-01_task-faces_run-2_hemi-{hemi}_space-fsaverage5_bold"
                                                   ".func.gii")
        assert written.shape == expected.shape
        np.testing.assert_allclose(written, expected, rtol=1e-6, atol=1e-3)


def test_cifti_reads_back_with_conte69_cortex_thalamus_voxels_and_the_tr(dataset):
    img = preproc(dataset, "sub-01_task-blocks")
    mask = np.asarray(nib.load(func_dir(dataset) / "sub-01_task-blocks_space-MNI152NLin2009cAsym_res-6_desc-"
                                                   "brain_mask.nii.gz").dataobj) > 0
    cifti = nib.load(func_dir(dataset) / "sub-01_task-blocks_space-fsLR_den-91k_bold.dtseries.nii")
    series, models = cifti.header.get_axis(0), cifti.header.get_axis(1)
    assert isinstance(series, cifti2.SeriesAxis) and series.step == TR and series.size == TASKS["blocks"].n_volumes
    assert isinstance(models, cifti2.BrainModelAxis)
    first = slice(0, 12)  # vol_to_surf takes ~40 ms per volume on 32k vertices: a few volumes are enough here
    data = np.asarray(cifti.dataobj[first])
    img = img.slicer[..., first]
    volume = np.asarray(img.dataobj)
    parts = {name: (slc, bm) for name, slc, bm in models.iter_structures()}
    assert list(parts) == ["CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT", *SUBCORTICAL]
    for hemi in ("L", "R"):
        slc, bm = parts[f"CIFTI_STRUCTURE_CORTEX_{'LEFT' if hemi == 'L' else 'RIGHT'}"]
        mesh, cortex = conte69(hemi)
        assert bm.nvertices[bm.name[0]] == 32492
        np.testing.assert_array_equal(bm.vertex, cortex)
        expected = vol_to_surf(img, mesh, radius=3.0, kind="line")[cortex]
        np.testing.assert_allclose(data[:, slc].T, expected, rtol=1e-6, atol=1e-3)
    for name, point in SUBCORTICAL.items():
        slc, bm = parts[name]
        assert len(bm.voxel) > 5 and mask[tuple(bm.voxel.T)].all()
        xyz = nib.affines.apply_affine(bm.affine, bm.voxel)
        assert (np.linalg.norm(xyz - point, axis=1) <= SUBCORTICAL_RADIUS_MM).all()
        np.testing.assert_array_equal(bm.affine, img.affine)
        np.testing.assert_array_equal(data[:, slc].T, volume[tuple(bm.voxel.T)])
    assert json.loads((func_dir(dataset) / "sub-01_task-blocks_space-fsLR_den-91k_bold.json").read_text())[
        "RepetitionTime"] == TR


@pytest.mark.parametrize("space", ["fsaverage5", "fsLR"])
def test_planted_vertices_follow_their_regressor_more_than_the_others(dataset, space):
    """Every sphere reaches the cortex, and its vertices' series correlate with its regressor (latent's factors
    aside: their patterns have random signs), in each task's first run."""
    for task, stem, _ in [r for r in runs() if r[2] == 1]:
        truth = load_surface_truth(dataset, "01", task, space)
        if space == "fsaverage5":
            series = np.vstack([gifti_series(func_dir(dataset) / f"{stem}_hemi-{h}_space-fsaverage5_bold.func.gii")
                                for h in ("L", "R")])
        else:
            cifti = nib.load(func_dir(dataset) / f"{stem}_space-fsLR_den-91k_bold.dtseries.nii")
            series = np.asarray(cifti.dataobj, dtype=np.float64).T
        events = pd.read_csv(dataset / "sub-01" / "func" / f"{stem}_events.tsv", sep="\t")
        centred = series - series.mean(axis=1, keepdims=True)
        alive = centred.std(axis=1) > 0
        for p in PLANTED[task]:
            planted = truth[p.name]
            assert planted.shape == (len(series),) and planted.sum() > 0, p.name
            if p.name == "latent":
                continue
            x = planted_regressor(p.name, events, TASKS[task].n_volumes, dataset / "stimuli")
            x = x - x.mean()
            r = centred[alive] @ x / (np.linalg.norm(centred[alive], axis=1) * np.linalg.norm(x))
            inside, outside = r[planted[alive]].mean(), r[~planted[alive]].mean()
            assert inside > 0.3 and inside > outside + 0.3, (task, stem, p.name, inside, outside)


def test_surface_truth_is_the_volume_truth_sampled(dataset):
    """A sphere's planted vertices are where the sphere's weights, sampled like the BOLD, reach a quarter of the
    center's: all of them lie within the sphere's radius plus the cortex's depth and the sampling's reach."""
    meshes = load_fsaverage("fsaverage5")
    truth = load_surface_truth(dataset, "01", "lpp")
    pial = np.vstack([meshes["pial"].parts[part].coordinates for part in ("left", "right")])
    white = np.vstack([meshes["white_matter"].parts[part].coordinates for part in ("left", "right")])
    mask_img = nib.load(func_dir(dataset) / "sub-01_task-lpp_run-1_space-MNI152NLin2009cAsym_res-6_desc-brain_mask"
                                            ".nii.gz")
    mask = np.asarray(mask_img.dataobj) > 0
    weights = np.stack([sphere_weights(p.center_mm, p.radius_mm, mask, mask_img.affine) for p in PLANTED["lpp"]], -1)
    sampled = np.concatenate([vol_to_surf(nib.Nifti1Image(weights, mask_img.affine), meshes["pial"].parts[part],
                                          inner_mesh=meshes["white_matter"].parts[part], depth=DEPTHS)
                              for part in ("left", "right")])
    for k, p in enumerate(PLANTED["lpp"]):
        planted = truth[p.name]
        assert planted.dtype == bool and planted.shape == (2 * N_FSAVERAGE5,)
        nearest = np.minimum(np.linalg.norm(pial - p.center_mm, axis=1), np.linalg.norm(white - p.center_mm, axis=1))
        assert nearest[planted].max() <= p.radius_mm + 6.0  # one 6 mm voxel of interpolation
        np.testing.assert_array_equal(planted, sampled[:, k] >= 0.25)
    fslr = load_surface_truth(dataset, "01", "lpp", "fsLR")
    n_grayordinates = nib.load(func_dir(dataset) / "sub-01_task-lpp_run-1_space-fsLR_den-91k_bold.dtseries.nii"
                               ).shape[1]
    assert {name: m.shape for name, m in fslr.items()} == {p.name: (n_grayordinates,) for p in PLANTED["lpp"]}


def test_without_surfaces_the_files_are_the_same_and_no_surface_file_is_written(dataset, small_dataset):
    """small_dataset is the same seed without surfaces (and with EEG, which touches no fMRI file)."""
    def files(root: Path) -> dict[str, Path]:
        return {str(p.relative_to(root)): p for folder in ("derivatives", "sourcedata", "stimuli")
                for p in (root / folder).rglob("*") if p.is_file()}

    without, with_surfaces = files(small_dataset), files(dataset)
    assert not [name for name in without if any(s in name for s in SURFACE_NAMES)]
    added = set(with_surfaces) - set(without)
    assert added and all(any(s in name for s in SURFACE_NAMES) for name in added)
    assert set(without) <= set(with_surfaces)
    bidsignore = "derivatives/fmriprep/.bidsignore"
    for name in set(without) - {bidsignore}:
        assert without[name].read_bytes() == with_surfaces[name].read_bytes(), name
    old = without[bidsignore].read_text()
    assert with_surfaces[bidsignore].read_text() == old + "".join(f"{line}\n" for line in BIDSIGNORE)


def test_the_derivative_with_surfaces_stays_validator_clean(dataset):
    assert validator_errors(dataset / "derivatives" / "fmriprep") == []


def test_user_errors(small_dataset, tmp_path):
    with pytest.raises(UserError, match="unknown surface space"):
        write_example_dataset(tmp_path / "bids", surfaces=("fsaverage6",))
    with pytest.raises(UserError, match="unknown surface space"):
        write_example_dataset(tmp_path / "bids", surfaces="fsLR")
    assert not (tmp_path / "bids").exists()
    with pytest.raises(UserError, match="surfaces="):
        load_surface_truth(small_dataset, "01", "faces")
    with pytest.raises(UserError, match="no surface truth in space"):
        load_surface_truth(small_dataset, "01", "faces", "fsnative")
