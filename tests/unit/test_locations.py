"""Locations on surfaces: fMRIPrep's GIFTI and CIFTI names and files found, read, written back and checked.

Small real files written with nibabel: per-hemisphere ``.func.gii`` series of fsaverage5's 10,242 vertices, CIFTI-2
``.dtseries.nii`` over conte69's cortex and a few subcortical voxels; every surface error a user can cause.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2

from bids_encoding.bids_io import collect_bold_runs, load_layout
from bids_encoding.errors import UserError
from bids_encoding.fmri.masks import atlas_labels, brain_mask, roi_mask
from bids_encoding.locations import (GrayordinatesLayout, HemispheresLayout, Locations, VolumeLayout, read_map,
                                     series_layout)
from bids_encoding.surface_io import expected_vertices, file_kind, hemisphere_files, series_length
from bids_encoding.meshes import template_medial_wall

N_FS5 = 10242
N_TIME = 12


def write_gifti_series(path: Path, data: np.ndarray) -> Path:
    """A .func.gii file as fMRIPrep writes it: one float32 data array per volume."""
    img = nib.GiftiImage()
    for row in np.asarray(data, np.float32):
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_TIME_SERIES"))
    nib.save(img, str(path))
    return path


def cifti_axis(n_subcortical: int = 20) -> cifti2.BrainModelAxis:
    """fsLR's cortex (conte69 32k without its medial wall) and a few thalamic voxels, as in a 91k file."""
    axis = None
    for hemi, name in (("L", "CortexLeft"), ("R", "CortexRight")):
        cortex = ~template_medial_wall("fsLR", hemi, "32k")
        part = cifti2.BrainModelAxis.from_mask(cortex, name=name)
        axis = part if axis is None else axis + part
    voxels = np.zeros((10, 10, 10), bool)
    voxels.flat[:n_subcortical] = True
    return axis + cifti2.BrainModelAxis.from_mask(voxels, name="thalamus_left", affine=np.diag([2.0, 2.0, 2.0, 1.0]))


def write_cifti_series(path: Path, data: np.ndarray, axis: cifti2.BrainModelAxis, tr: float = 2.0) -> Path:
    header = cifti2.Cifti2Header.from_axes((cifti2.SeriesAxis(0, tr, len(data)), axis))
    nib.save(cifti2.Cifti2Image(np.asarray(data, np.float32), header), str(path))
    return path


@pytest.fixture(scope="module")
def surface_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("surfaces")
    rng = np.random.default_rng(0)
    data = {h: rng.standard_normal((N_TIME, N_FS5)).astype(np.float32) for h in "LR"}
    for h in "LR":
        write_gifti_series(folder / f"sub-01_task-x_run-1_hemi-{h}_space-fsaverage5_bold.func.gii", data[h])
    axis = cifti_axis()
    grayordinates = rng.standard_normal((N_TIME, len(axis))).astype(np.float32)
    cifti = write_cifti_series(folder / "sub-01_task-x_run-1_space-fsLR_den-91k_bold.dtseries.nii", grayordinates, axis)
    return {"folder": folder, "gifti": folder / "sub-01_task-x_run-1_hemi-L_space-fsaverage5_bold.func.gii",
            "data": data, "cifti": cifti, "grayordinates": grayordinates, "axis": axis}


def test_file_kinds_and_hemisphere_partners(surface_files):
    assert file_kind("a_bold.nii.gz") == "volume" and file_kind("a_bold.dtseries.nii") == "cifti"
    assert file_kind("a_hemi-L_bold.func.gii") == "gifti" and file_kind("x_stat-t_statmap.dscalar.nii") == "cifti"
    files = hemisphere_files(surface_files["gifti"])
    assert files["R"].name == "sub-01_task-x_run-1_hemi-R_space-fsaverage5_bold.func.gii"
    assert hemisphere_files(files["R"]) == files


def test_vertices_expected_of_fmriprep_spaces():
    """fMRIPrep names fsaverage5 also space-fsaverage_den-10k; 91k grayordinates lie on fsLR's 32k meshes."""
    assert expected_vertices("fsaverage5", None) == expected_vertices("fsaverage", "10k") == N_FS5
    assert expected_vertices("fsaverage6", None) == expected_vertices("fsaverage", "41k") == 40962
    assert expected_vertices("fsLR", "91k") == 32492 and expected_vertices("fsnative", None) is None


def test_gifti_series_read_left_then_right(surface_files):
    layout, n = series_layout(surface_files["gifti"], {"space": "fsaverage5"})
    assert isinstance(layout, HemispheresLayout) and n == N_TIME and layout.vertices == (N_FS5, N_FS5)
    assert series_length(surface_files["gifti"]) == series_length(surface_files["cifti"]) == N_TIME
    selected = np.zeros(layout.size, bool)
    selected[[0, 5, N_FS5 + 7]] = True
    data = Locations(layout, selected).read(surface_files["gifti"])
    expected = np.column_stack([surface_files["data"]["L"][:, 0], surface_files["data"]["L"][:, 5],
                                surface_files["data"]["R"][:, 7]])
    np.testing.assert_array_equal(data, expected)


def test_cifti_series_read_in_grayordinate_order(surface_files):
    layout, n = series_layout(surface_files["cifti"], {"space": "fsLR", "den": "91k"})
    assert isinstance(layout, GrayordinatesLayout) and n == N_TIME and layout.size == len(surface_files["axis"])
    assert [hemi for hemi, _, _ in layout.parts()] == ["L", "R"]
    assert layout.describe()["Structures"] == {"CORTEX_LEFT": 29271, "CORTEX_RIGHT": 29287, "THALAMUS_LEFT": 20}
    selected = np.zeros(layout.size, bool)
    selected[::97] = True
    np.testing.assert_array_equal(Locations(layout, selected).read(surface_files["cifti"]),
                                  surface_files["grayordinates"][:, selected])


@pytest.mark.parametrize("kind", ["gifti", "cifti"])
def test_maps_round_trip_on_the_same_locations(surface_files, tmp_path, kind):
    """What is written reads back on the same vertices / grayordinates, NaN-free where selected, fill elsewhere."""
    layout, _ = series_layout(surface_files[kind], {"space": "fsaverage5" if kind == "gifti" else "fsLR",
                                                    "den": None if kind == "gifti" else "91k"})
    rng = np.random.default_rng(1)
    selected = rng.random(layout.size) > 0.3
    values = rng.standard_normal(int(selected.sum())).astype(np.float32)
    space = "space-fsaverage5" if kind == "gifti" else "space-fsLR_den-91k"
    outputs = Locations(layout, selected).map_outputs(values, tmp_path / f"sub-01_{space}_desc-x_stat-t",
                                                      {"stat": "t"}, {}, fill=-1)
    if kind == "gifti":
        assert [o.entities["hemi"] for o in outputs] == ["L", "R"]
        assert all(o.in_file.endswith(".shape.gii") for o in outputs)
    else:
        assert len(outputs) == 1 and outputs[0].in_file.endswith(".dscalar.nii")
    back_layout, back = read_map(outputs[0].in_file)
    assert back_layout.same_as(layout)
    np.testing.assert_allclose(back[selected], values)
    assert np.all(back[~selected] == -1)


def test_volume_maps_round_trip(tmp_path):
    layout = VolumeLayout((4, 5, 6), np.diag([3.0, 3.0, 3.0, 1.0]))
    selected = np.arange(layout.size) % 3 == 0
    values = np.arange(selected.sum(), dtype=np.float32)
    path, extra = Locations(layout, selected).write(values, tmp_path / "desc-x_stat-r")[0]
    assert path.name == "desc-x_stat-r.nii.gz" and extra == {}
    back_layout, back = read_map(path)
    assert back_layout.same_as(layout) and np.array_equal(back[selected], values)


def test_searchlight_spheres_follow_the_mesh(surface_files):
    """On fsaverage5, a vertex's sphere holds it first and its mesh neighbours nearest first, within one hemisphere."""
    layout, _ = series_layout(surface_files["gifti"], {"space": "fsaverage5"})
    brain = Locations(layout, np.ones(layout.size, bool))
    spheres = brain.spheres(8.0)
    columns = spheres.columns(np.array([0, N_FS5 + 3]))
    assert columns[0, 0] == 0 and columns[1, 0] == N_FS5 + 3
    left, right = columns[0][columns[0] >= 0], columns[1][columns[1] >= 0]
    assert len(left) > 3 and np.all(left < N_FS5) and np.all(right >= N_FS5)
    mesh = layout.mesh("L")
    distance = np.linalg.norm(mesh.coordinates[left] - mesh.coordinates[0], axis=1)
    assert distance.max() <= 8.0 + 1e-6  # a path along the mesh is never shorter than the straight line
    adjacency = brain.adjacency()
    assert adjacency.shape == (layout.size, layout.size) and (adjacency != adjacency.T).nnz == 0
    assert adjacency[: N_FS5, N_FS5:].nnz == 0  # no edge between the hemispheres


def test_cifti_spheres_cover_cortex_and_subcortical_voxels(surface_files):
    layout, _ = series_layout(surface_files["cifti"], {"space": "fsLR", "den": "91k"})
    spheres = Locations(layout, np.ones(layout.size, bool)).spheres(4.5)
    last = layout.size - 1  # a thalamic voxel: its neighbours within 4.5 mm are voxels of the 2 mm grid
    found = spheres.columns(np.array([last]))[0]
    found = found[found >= 0]
    assert found[0] == last and len(found) > 1 and np.all(found >= layout.size - 20)


def test_surface_masks_regions_and_atlases(surface_files, tmp_path):
    """--mask, --roi and --atlas on surfaces are hemi-L/hemi-R GIFTI files (label names from the label table)."""
    bold = surface_files["gifti"]
    labels = {h: np.zeros(N_FS5, np.int32) for h in "LR"}
    labels["L"][:100], labels["R"][:50] = 1, 2
    for h in "LR":
        img = nib.GiftiImage(labeltable=nib.gifti.GiftiLabelTable())
        for key, name in ((0, "unknown"), (1, "leftPatch"), (2, "rightPatch")):
            label = nib.gifti.GiftiLabel(key)
            label.label = name
            img.labeltable.labels.append(label)
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(labels[h], intent="NIFTI_INTENT_LABEL"))
        nib.save(img, str(tmp_path / f"atlas_hemi-{h}.label.gii"))
    mask = brain_mask([bold], [None], tmp_path / "atlas_hemi-L.label.gii")
    assert mask.size == 150 and mask.unit == "vertices"
    brain = brain_mask([bold], [None])
    assert brain.size == 2 * N_FS5 and "finite, non-constant" in brain.method
    found, names = atlas_labels(str(tmp_path / "atlas_hemi-R.label.gii"), brain)
    assert (found == 1).sum() == 100 and (found == 2).sum() == 50 and names == {1: "leftPatch", 2: "rightPatch"}
    assert roi_mask(tmp_path / "atlas_hemi-L.label.gii", brain).sum() == 150
    with pytest.raises(UserError, match="not in the data's format"):
        roi_mask(surface_files["cifti"], brain)


def _copy_pair(surface_files, folder: Path) -> Path:
    for h in "LR":
        name = f"sub-01_task-x_run-1_hemi-{h}_space-fsaverage5_bold.func.gii"
        shutil.copy(surface_files["folder"] / name, folder / name)
    return folder / "sub-01_task-x_run-1_hemi-L_space-fsaverage5_bold.func.gii"


def test_surface_errors_name_the_file_and_the_fix(surface_files, tmp_path):
    left = _copy_pair(surface_files, tmp_path)
    right = left.with_name(left.name.replace("hemi-L", "hemi-R"))
    write_gifti_series(right, np.zeros((N_TIME, 40962)))  # the other hemisphere at fsaverage6's density
    with pytest.raises(UserError, match="40962 vertices per volume, but space fsaverage5 has 10242") as error:
        series_layout(left, {"space": "fsaverage5"})
    assert right.name in str(error.value)
    with pytest.raises(UserError, match="different numbers of vertices"):
        series_layout(left, {"space": "unknownspace"})
    write_gifti_series(right, np.zeros((N_TIME - 2, N_FS5)))
    with pytest.raises(UserError, match="different numbers of volumes"):
        series_layout(left, {"space": "fsaverage5"})
    right.unlink()
    with pytest.raises(UserError, match="right hemisphere's file is missing") as error:
        series_layout(left, {"space": "fsaverage5"})
    assert right.name in str(error.value)
    parcels = cifti2.ParcelsAxis.from_brain_models([("V1", surface_files["axis"][:10])])
    bad = tmp_path / "sub-01_task-x_space-fsLR_den-91k_bold.dtseries.nii"
    header = cifti2.Cifti2Header.from_axes((cifti2.SeriesAxis(0, 2.0, N_TIME), parcels))
    nib.save(cifti2.Cifti2Image(np.zeros((N_TIME, 1), np.float32), header), str(bad))
    with pytest.raises(UserError, match="no brain-model axis"):
        series_layout(bad, {"space": "fsLR"})


def _surface_dataset(root: Path, surface_files) -> Path:
    """A raw dataset with fMRIPrep-style surface derivatives: fsaverage5 GIFTI and fsLR CIFTI, sidecars with TR."""
    (root / "sub-01" / "func").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "s", "BIDSVersion": "1.10.0"}))
    raw = root / "sub-01" / "func" / "sub-01_task-x_run-1_bold.nii.gz"
    img = nib.Nifti1Image(np.random.default_rng(0).standard_normal((3, 3, 3, N_TIME)).astype(np.float32), np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 2.0))
    nib.save(img, str(raw))
    raw.with_name("sub-01_task-x_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    (root / "sub-01" / "func" / "sub-01_task-x_run-1_events.tsv").write_text("onset\tduration\ttrial_type\n2\t1\ta\n")
    deriv = root / "derivatives" / "fmriprep"
    func = deriv / "sub-01" / "func"
    func.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps({"Name": "f", "BIDSVersion": "1.10.0",
                                                                "DatasetType": "derivative",
                                                                "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    _copy_pair(surface_files, func)
    shutil.copy(surface_files["cifti"], func / surface_files["cifti"].name)
    for name in ("sub-01_task-x_run-1_hemi-L_space-fsaverage5_bold.json",
                 "sub-01_task-x_run-1_hemi-R_space-fsaverage5_bold.json",
                 "sub-01_task-x_run-1_space-fsLR_den-91k_bold.json"):
        (func / name).write_text(json.dumps({"RepetitionTime": 2.0}))
    return root


def test_fmriprep_surface_names_found_by_space_and_density(surface_files, tmp_path):
    root = _surface_dataset(tmp_path / "ds", surface_files)
    layout = load_layout(root, (root / "derivatives" / "fmriprep",))
    with pytest.raises(UserError, match="several versions.*space-fsLR_den-91k.*space-fsaverage5"):
        collect_bold_runs(layout, "01", use_derivatives=True)
    (run,) = collect_bold_runs(layout, "01", space="fsaverage5", use_derivatives=True)
    assert run.bold.name.endswith("_hemi-L_space-fsaverage5_bold.func.gii") and run.n_volumes == N_TIME
    assert run.space == "fsaverage5" and run.mask is None
    (run,) = collect_bold_runs(layout, "01", space="fsLR", den="91k", use_derivatives=True)
    assert run.bold.name.endswith("_space-fsLR_den-91k_bold.dtseries.nii") and run.den == "91k"
    with pytest.raises(UserError, match="no desc-preproc BOLD in space 'fsLR'"):
        collect_bold_runs(layout, "01", space="fsLR", den="32k", use_derivatives=True)
    (tmp_path / "ds" / "derivatives" / "fmriprep" / "sub-01" / "func" / "sub-01_task-x_run-1_space-fsLR_den-91k_bold.json"
     ).write_text(json.dumps({"RepetitionTime": 1.5}))
    layout = load_layout(root, (root / "derivatives" / "fmriprep",))
    with pytest.raises(UserError, match="does not match the CIFTI series axis' step"):
        collect_bold_runs(layout, "01", space="fsLR", use_derivatives=True)
