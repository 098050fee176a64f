import json

import pytest

from bids_encoding.derivatives import (
    atomic_write,
    bids_label,
    dataset_description,
    derivative_path,
    parse_entities,
    staging,
    write_json,
)


def test_statmap_names_follow_the_design():
    path = derivative_path({"subject": "01", "task": "lpp", "space": "MNI152NLin2009cAsym", "desc": "gpt2L6",
                            "stat": "rSquare"}, "statmap", ".nii.gz")
    assert str(path) == "sub-01/func/sub-01_task-lpp_space-MNI152NLin2009cAsym_desc-gpt2L6_stat-rSquare_statmap.nii.gz"


def test_session_folder_and_group_folder():
    assert str(derivative_path({"subject": "01", "session": "a", "task": "x", "desc": "y"}, "statmap", ".nii.gz")) == \
        "sub-01/ses-a/func/sub-01_ses-a_task-x_desc-y_statmap.nii.gz"
    assert str(derivative_path({"task": "x", "desc": "y", "stat": "t"}, "statmap", ".nii.gz")) == \
        "group/task-x_desc-y_stat-t_statmap.nii.gz"


def test_labels_are_alphanumeric_and_parse_back():
    assert bids_label("gpt2", "L6") == "gpt2L6"
    assert bids_label("my_plugin-v2") == "mypluginv2"
    ents = parse_entities("sub-01_task-lpp_space-MNI_desc-gpt2L6_stat-rSquare_statmap.nii.gz")
    assert ents == {"subject": "01", "task": "lpp", "space": "MNI", "desc": "gpt2L6", "stat": "rSquare", "suffix": "statmap"}


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "a.json"

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert list(tmp_path.iterdir()) == []


def test_staging_commits_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with staging(out) as stage:
        write_json(stage / "sub-01" / "x.json", {"a": 1})
    assert json.loads((out / "sub-01" / "x.json").read_text()) == {"a": 1}

    with pytest.raises(KeyError):
        with staging(out) as stage:
            write_json(stage / "sub-02" / "y.json", {"a": 2})
            raise KeyError("boom")
    assert not (out / "sub-02").exists()
    assert not [p for p in (out / ".bids-encoding").iterdir()]  # staging removed


def test_dataset_description_is_a_derivative(tmp_path, monkeypatch):
    monkeypatch.setenv("BIDS_ENCODING_CONTAINER", "bids-encoding:0.1.0")
    desc = dataset_description(tmp_path, {"Name": "LPP", "BIDSVersion": "1.9.0"})
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids-encoding"
    assert desc["GeneratedBy"][0]["Container"]["Tag"] == "bids-encoding:0.1.0"
    assert desc["SourceDatasets"][0]["URL"].startswith("file://")
