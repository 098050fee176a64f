"""pybids queries on the example dataset: selection, derivatives, TR, and the checks behind clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bids_encoding.bids_io import check_dataset, check_same_grid, collect_bold_runs, load_layout
from bids_encoding.errors import UserError


@pytest.fixture(scope="module")
def layout(example_dataset):
    return load_layout(example_dataset, (example_dataset / "derivatives" / "fmriprep",))


def test_raw_runs_with_events_tr_and_modalities(layout):
    runs = collect_bold_runs(layout, "01")
    assert sorted((r.task, r.run or "") for r in runs) == [("blocks", ""), ("faces", "1"), ("faces", "2"), ("lpp", "1"),
                                                            ("lpp", "2"), ("lpp", "3"), ("movie", "1"), ("movie", "2")]
    lpp = next(r for r in runs if r.task == "lpp")
    assert lpp.tr == 2.0 and lpp.n_volumes == 200 and lpp.modalities == ("text", "audio")
    assert next(r for r in runs if r.task == "movie").modalities == ("video",)
    assert lpp.events.name == "sub-01_task-lpp_run-1_events.tsv" and lpp.mask is None
    faces = next(r for r in runs if r.task == "faces")
    assert set(faces.modalities) == {"image", "trials"}
    blocks = next(r for r in runs if r.task == "blocks")  # one run, no run- entity
    assert blocks.run is None and blocks.n_volumes == 84 and blocks.events.name == "sub-01_task-blocks_events.tsv"


def test_selection_by_task_run_and_filter_file(layout):
    runs = collect_bold_runs(layout, "02", tasks=("lpp",), runs=("2", "3"))
    assert [r.run for r in runs] == ["2", "3"]
    runs = collect_bold_runs(layout, "02", filters={"bold": {"task": "faces", "run": 1}})
    assert [(r.task, r.run) for r in runs] == [("faces", "1")]


def test_preprocessed_runs_come_with_masks_and_confounds(layout):
    runs = collect_bold_runs(layout, "01", tasks=("lpp",), space="MNI152NLin2009cAsym", use_derivatives=True)
    assert len(runs) == 3
    for run in runs:
        assert "desc-preproc" in run.bold.name and run.space == "MNI152NLin2009cAsym"
        assert run.mask is not None and "desc-brain_mask" in run.mask.name
        assert run.confounds is not None and run.raw_bold.name.endswith("_bold.nii.gz")


def test_a_space_without_preprocessed_data_is_explained(layout):
    with pytest.raises(UserError, match="space 'MNI152NLin6Asym'"):
        collect_bold_runs(layout, "01", space="MNI152NLin6Asym", use_derivatives=True)


def test_dataset_description_checks(tmp_path):
    with pytest.raises(UserError, match="not a BIDS dataset"):
        check_dataset(tmp_path)
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x"}))
    with pytest.raises(UserError, match="BIDSVersion"):
        check_dataset(tmp_path)


def test_derivatives_folder_must_be_a_dataset(example_dataset, tmp_path):
    with pytest.raises(UserError, match="no dataset_description.json"):
        load_layout(example_dataset, (tmp_path,))


# --------------------------------------------------------------------------- derivatives as people have them

def derivatives_copy(dataset, tmp_path, rename):
    """A copy of the small example whose fMRIPrep file names pass through ``rename`` (None deletes the file)."""
    import shutil

    root = shutil.copytree(dataset, tmp_path / "bids")
    func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    for path in sorted(func.iterdir()):
        new = rename(path.name)
        if new is None:
            path.unlink()
        elif new != path.name:
            path.rename(func / new)
    return root


def test_derivatives_without_a_space_entity_are_found_without_naming_a_space(small_dataset, tmp_path):
    root = derivatives_copy(small_dataset, tmp_path, lambda name: name.replace("_space-MNI152NLin2009cAsym", ""))
    runs = collect_bold_runs(load_layout(root, (root / "derivatives" / "fmriprep",)), "01", tasks=("lpp",),
                             use_derivatives=True)
    assert len(runs) == 3 and all("desc-preproc" in r.bold.name and r.space is None for r in runs)
    assert all(r.mask is not None and "desc-brain_mask" in r.mask.name for r in runs)


def test_two_spaces_need_space_and_the_error_lists_them(small_dataset, tmp_path):
    import shutil

    root = derivatives_copy(small_dataset, tmp_path, lambda name: name)
    func = root / "derivatives" / "fmriprep" / "sub-01" / "func"
    for path in list(func.glob("*space-MNI152NLin2009cAsym*")):  # the same runs in native space as well
        shutil.copy(path, func / path.name.replace("space-MNI152NLin2009cAsym", "space-T1w"))
    layout = load_layout(root, (root / "derivatives" / "fmriprep",))
    with pytest.raises(UserError, match="several versions") as error:
        collect_bold_runs(layout, "01", tasks=("lpp",), use_derivatives=True)
    assert "space-MNI152NLin2009cAsym_res-6" in str(error.value) and "space-T1w_res-6" in str(error.value)
    runs = collect_bold_runs(layout, "01", tasks=("lpp",), space="T1w", use_derivatives=True)
    assert all(r.space == "T1w" and "space-T1w" in r.bold.name and "space-T1w" in r.mask.name for r in runs)
    with pytest.raises(UserError, match="no desc-preproc BOLD in space 'fsnative'") as error:
        collect_bold_runs(layout, "01", tasks=("lpp",), space="fsnative", use_derivatives=True)
    assert "space-T1w_res-6" in str(error.value)


def test_derivatives_holding_only_masks_pair_them_with_the_raw_bold(small_dataset, tmp_path):
    root = derivatives_copy(small_dataset, tmp_path, lambda name: None if "desc-preproc" in name else name)
    runs = collect_bold_runs(load_layout(root, (root / "derivatives" / "fmriprep",)), "01", tasks=("lpp",),
                             use_derivatives=True)
    assert all(r.bold == r.raw_bold and r.space is None for r in runs)
    # the masks are in MNI space and the raw BOLD is not: they do not belong to it
    assert all(r.mask is None for r in runs)


def test_runs_on_different_voxel_grids_are_a_clear_error_naming_the_odd_run(small_dataset):
    runs = collect_bold_runs(load_layout(small_dataset), "01", tasks=("lpp",))
    check_same_grid(runs)  # the example's runs share one grid
    assert len({r.grid for r in runs}) == 1 and runs[0].grid[0] == (34, 40, 33)
    shape, affine, unit = runs[0].grid
    moved = dataclasses.replace(runs[1], grid=(shape, (affine[0] + 6.0, *affine[1:]), unit))
    with pytest.raises(UserError, match="another position") as error:
        check_same_grid([runs[0], moved, runs[2]])
    assert error.value.path == str(moved.bold)  # the run off the grid the others share
    smaller = dataclasses.replace(runs[0], grid=((8735, 1, 1), affine, unit))
    with pytest.raises(UserError, match="8735 x 1 x 1 voxels, where .*run-2_bold.nii.gz has 34 x 40 x 33"):
        check_same_grid([smaller, *runs[1:]])
