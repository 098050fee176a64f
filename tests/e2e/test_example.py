"""The built-in example dataset: layout, BIDS validity, determinism and the planted signal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout
from nilearn.glm.first_level.hemodynamic_models import glover_hrf

from bids_encoding import __version__
from bids_encoding.errors import UserError
from bids_encoding.example import PLANTED, TASKS, TR, atlas_path, load_truth, read_story, write_example_dataset

SUBJECTS = ("01", "02")
SPACE = "space-MNI152NLin2009cAsym_res-6"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return write_example_dataset(tmp_path_factory.mktemp("example") / "ds", n_subjects=len(SUBJECTS), seed=0)


@pytest.fixture(scope="session")
def layout(dataset) -> BIDSLayout:
    return BIDSLayout(dataset, validate=False, derivatives=True)


def runs():
    """(subject, task, run) of every run in the default dataset."""
    return [(s, t.name, r) for s in SUBJECTS for t in TASKS.values() for r in range(1, t.n_runs + 1)]


def stem(sub: str, task: str, run: int) -> str:
    """A run's file name stem: a task of one run has no run- entity, as in many real datasets."""
    return f"sub-{sub}_task-{task}" + (f"_run-{run}" if TASKS[task].n_runs > 1 else "")


def events(dataset: Path, sub: str, task: str, run: int, words: bool = True) -> pd.DataFrame:
    """A run's events; of the story, its words alone (without the sound track's row) unless ``words`` is false."""
    table = pd.read_csv(dataset / f"sub-{sub}" / "func" / f"{stem(sub, task, run)}_events.tsv", sep="\t")
    return table[table["word"].notna()].reset_index(drop=True) if words and task == "lpp" else table


def bold(dataset: Path, sub: str, task: str, run: int) -> nib.Nifti1Image:
    return nib.load(dataset / f"sub-{sub}" / "func" / f"{stem(sub, task, run)}_bold.nii.gz")


def hrf_regressor(onsets: np.ndarray, heights: np.ndarray, n_volumes: int, oversampling: int = 50) -> np.ndarray:
    """Impulses at the onsets convolved with the glover HRF, sampled at k * TR (written independently of the module)."""
    dt = TR / oversampling
    fine = np.zeros(n_volumes * oversampling)
    np.add.at(fine, np.round(onsets / dt).astype(int), heights)
    return np.convolve(fine, glover_hrf(TR, oversampling))[: len(fine)][::oversampling]


def correlations(x: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Correlation of ``x`` with each row of ``series``."""
    xs = (x - x.mean()) / x.std()
    ys = (series - series.mean(axis=1, keepdims=True)) / series.std(axis=1, keepdims=True)
    return ys @ xs / len(x)


def letters(word: str) -> int:
    return sum(c.isascii() and c.isalpha() for c in word)


def test_layout_files_exist(dataset):
    description = json.loads((dataset / "dataset_description.json").read_text())
    assert description["BIDSVersion"] == "1.10.0" and description["DatasetType"] == "raw"
    generated_by = description["GeneratedBy"][0]
    assert (generated_by["Name"], generated_by["Version"]) == ("bids-encoding example", __version__)
    deriv = dataset / "derivatives" / "fmriprep"
    assert json.loads((deriv / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    for name in ("README", "participants.tsv", "participants.json", "task-lpp_bold.json", "task-faces_bold.json"):
        assert (dataset / name).is_file(), name
    for sub, task, run in runs():
        s = stem(sub, task, run)
        for path in (f"sub-{sub}/func/{s}_bold.nii.gz", f"sub-{sub}/func/{s}_events.tsv"):
            assert (dataset / path).is_file(), path
        for suffix in (f"{SPACE}_desc-preproc_bold.nii.gz", f"{SPACE}_desc-preproc_bold.json",
                       f"{SPACE}_desc-brain_mask.nii.gz", "desc-confounds_timeseries.tsv",
                       "desc-confounds_timeseries.json"):
            assert (deriv / f"sub-{sub}" / "func" / f"{s}_{suffix}").is_file(), suffix
    for sub in SUBJECTS:
        for task, planted in PLANTED.items():
            truth = json.loads((dataset / "sourcedata" / "groundtruth" / f"sub-{sub}_task-{task}_truth.json").read_text())
            assert set(truth["features"]) == {p.name for p in planted} and truth["seed"] == 0
    faces = sorted(p.name for p in (dataset / "stimuli" / "faces").iterdir())
    assert faces == [f"{k}{i:02d}.png" for k in ("face", "scrambled") for i in range(1, 21)]


def test_pybids_finds_subjects_tasks_and_runs(layout):
    assert layout.get_subjects() == list(SUBJECTS)
    assert layout.get_tasks() == sorted(TASKS)
    for task in TASKS.values():
        assert layout.get_runs(task=task.name) == (list(range(1, task.n_runs + 1)) if task.n_runs > 1 else [])
        assert layout.get_RepetitionTime(task=task.name) == [TR]
        files = layout.get(scope="raw", task=task.name, suffix="bold", extension=".nii.gz")
        assert len(files) == len(SUBJECTS) * task.n_runs
        preproc = layout.get(scope="derivatives", task=task.name, desc="preproc", suffix="bold", extension=".nii.gz")
        assert len(preproc) == len(files)
        assert all(layout.get_metadata(f.path)["RepetitionTime"] == TR for f in preproc)
        confounds = layout.get(scope="derivatives", task=task.name, desc="confounds", suffix="timeseries",
                               extension=".tsv")
        assert len(confounds) == len(files)


def test_bold_headers_data_and_confounds(dataset):
    mask = None
    for sub, task, run in runs():
        img = bold(dataset, sub, task, run)
        assert img.get_data_dtype() == np.int16
        assert img.shape[3] == TASKS[task].n_volumes
        assert img.header.get_zooms() == (6.0, 6.0, 6.0, TR)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        deriv = dataset / "derivatives" / "fmriprep" / f"sub-{sub}" / "func" / stem(sub, task, run)
        mask = nib.load(f"{deriv}_{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
        assert mask.shape == img.shape[:3]
        confounds = pd.read_csv(f"{deriv}_desc-confounds_timeseries.tsv", sep="\t")
        assert list(confounds.columns) == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                                           "csf", "white_matter"]
        assert len(confounds) == img.shape[3] and confounds.notna().all().all()
        assert confounds.filter(like="trans").abs().max().max() < 2.0  # mm: small motion
    data = np.asarray(img.dataobj)
    preproc = np.asarray(nib.load(f"{deriv}_{SPACE}_desc-preproc_bold.nii.gz").dataobj)
    np.testing.assert_array_equal(data, preproc)
    assert np.all(data[~mask] == 0) and 800 < data[mask].mean() < 1200


def test_events_stay_inside_the_run(dataset):
    for sub, task, run in runs():
        ev = events(dataset, sub, task, run, words=False)
        assert ev["onset"].min() >= 0 and (ev["onset"] + ev["duration"]).max() <= TASKS[task].duration
        assert ev["onset"].is_monotonic_increasing and (ev["duration"] > 0).all()
        if task in ("lpp", "movie"):  # the sound track or the movie first, from 0 s for the whole run
            track = ev.iloc[0]
            assert track["onset"] == 0 and track["duration"] == TASKS[task].duration
            assert track["stim_file"] == f"{'story' if task == 'lpp' else 'movie'}/{task}_run-{run}.{'wav' if task == 'lpp' else 'mp4'}"
            assert (dataset / "stimuli" / track["stim_file"]).is_file()
        if task == "lpp":
            assert list(ev.columns) == ["onset", "duration", "word", "stim_file"]
            assert ev["word"].iloc[1:].map(letters).min() >= 1 and ev["stim_file"].iloc[1:].isna().all()
        elif task == "movie":
            assert list(ev.columns) == ["onset", "duration", "stim_file"] and len(ev) == 1
        elif task == "blocks":  # 16 s of sound after every 16 s of silence
            assert list(ev.columns) == ["onset", "duration", "trial_type"] and set(ev["trial_type"]) == {"sound"}
            assert (ev["duration"] == 16).all() and (np.diff(ev["onset"]) == 32).all() and ev["onset"].iloc[0] == 16
        else:
            assert list(ev.columns) == ["onset", "duration", "trial_type", "stim_file"]
            assert ev["trial_type"].value_counts().to_dict() == {"face": 20, "scrambled": 20}
            assert ev["onset"].iloc[0] == pytest.approx(4.0) and (ev["duration"] == 1.0).all()
            assert all((dataset / "stimuli" / f).is_file() for f in ev["stim_file"])
            assert all(Path(f).name.startswith(t) for f, t in zip(ev["stim_file"], ev["trial_type"]))


def test_story_runs_tell_the_whole_story_with_varied_timing(dataset):
    story = read_story().split()
    assert 1000 <= len(story) <= 1500
    words = [events(dataset, "01", "lpp", run) for run in range(1, 4)]
    assert [w for ev in words for w in ev["word"]] == story  # consecutive parts, punctuation kept
    assert any(w.endswith(".") for w in story)
    for ev in words:
        speed = ev["duration"] / (0.25 + 0.04 * ev["word"].map(letters))
        assert speed.min() > 0.69 and speed.max() < 1.61 and speed.std() > 0.1
        gaps = ev["onset"].to_numpy()[1:] - (ev["onset"] + ev["duration"]).to_numpy()[:-1]
        assert ((gaps > 6) & (gaps < 23)).sum() >= 2  # long silences (plus a sentence pause)
        assert gaps.min() >= -1e-3 and gaps.max() < 23
    pd.testing.assert_frame_equal(words[0], events(dataset, "02", "lpp", 1))  # everyone hears the same story


def _validator() -> str | None:
    return shutil.which("bids-validator-deno", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                       os.environ.get("PATH", "")]))


def test_bids_validator_reports_no_errors(dataset):
    validator = _validator()
    if validator is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bids-validator-deno is not installed; it is required on CI (pip install bids-validator-deno)")
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    for folder in (dataset, dataset / "derivatives" / "fmriprep"):
        result = subprocess.run([validator, "--format", "json", str(folder)], capture_output=True, text=True,
                                timeout=120)
        issues = json.loads(result.stdout)["issues"]["issues"]
        errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
        assert errors == [], errors[:5]


def test_planted_signal_is_recoverable(dataset):
    truth = load_truth(dataset, "01", "lpp")
    planted = np.any(list(truth.values()), axis=0)  # word rate and length drive the ratelength sphere too
    ev = events(dataset, "01", "lpp", 1)
    img = bold(dataset, "01", "lpp", 1)
    data = np.asarray(img.dataobj, dtype=float)
    mask = data.mean(axis=3) > 0
    n_letters = ev["word"].map(letters).to_numpy(float)
    for name, heights in (("wordrate", np.ones(len(ev))), ("wordlength", n_letters - n_letters.mean())):
        x = hrf_regressor(ev["onset"].to_numpy(), heights, img.shape[3])
        voxels = data[truth[name]]
        per_voxel = correlations(x, voxels)
        assert np.corrcoef(x, voxels.mean(axis=0))[0, 1] > 0.7, name
        assert 0.3 < np.median(per_voxel) < 0.7, name
        others = data[mask & ~planted]
        r_others = correlations(x, others)
        assert abs(np.median(r_others)) < 0.05 and np.percentile(np.abs(r_others), 99) < 0.3, name
        assert abs(np.corrcoef(x, others.mean(axis=0))[0, 1]) < 0.3, name


def test_the_layer_gradient_spheres_follow_their_minilm_layer(dataset):
    """The shallow and deep spheres follow their layer's per-word values (story_layers.tsv, one row per word of each
    run, in the events' order), minus the run's mean, each in its own sphere only."""
    from importlib import resources

    table = pd.read_csv(resources.files("bids_encoding").joinpath("data/story_layers.tsv"), sep="\t",
                        keep_default_na=False)
    truth = load_truth(dataset, "01", "lpp")
    ev = pd.read_csv(dataset / "sub-01" / "func" / f"{stem('01', 'lpp', 2)}_events.tsv", sep="\t",
                     keep_default_na=False).iloc[1:]  # the words, after the sound track
    of_run = table[table["run"] == 2]
    assert of_run["word"].tolist() == ev["word"].astype(str).tolist()
    img = bold(dataset, "01", "lpp", 2)
    data = np.asarray(img.dataobj, dtype=float)
    for name, layer, other in (("shallow", "L0", "deep"), ("deep", "L5", "shallow")):
        values = of_run[layer].to_numpy(float)
        x = hrf_regressor(ev["onset"].to_numpy(), values - values.mean(), img.shape[3])
        assert np.corrcoef(x, data[truth[name]].mean(axis=0))[0, 1] > 0.7, name
        assert np.corrcoef(x, data[truth[name]].mean(axis=0))[0, 1] > np.corrcoef(x, data[truth[other]].mean(axis=0))[0, 1]


def test_the_envelope_and_motion_spheres_follow_the_sound_track_and_the_movie(dataset):
    """Recomputed from the stimuli as a user would (soundfile, PyAV): the sound track's RMS in 10 ms frames and the
    movie's frame-to-frame change, HRF-convolved, follow their spheres and only them."""
    import av
    import soundfile

    for task, name in (("lpp", "envelope"), ("movie", "motion")):
        truth = load_truth(dataset, "01", task)
        track = dataset / "stimuli" / events(dataset, "01", task, 1, words=False)["stim_file"].iloc[0]
        if task == "lpp":
            samples, rate = soundfile.read(track)
            assert rate == 16000 and len(samples) == TASKS[task].duration * rate
            values, step = np.sqrt((samples.reshape(-1, 160) ** 2).mean(axis=1)), 0.01
        else:
            with av.open(str(track)) as movie:
                grey = np.array([f.to_ndarray(format="gray") / 255.0 for f in movie.decode(video=0)])
            assert len(grey) == TASKS[task].duration * 10
            values, step = np.concatenate([[0.0], np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))]), 0.1
        times = np.arange(len(values)) * step
        inside = times < TASKS[task].duration - TR / 100
        x = hrf_regressor(times[inside], values[inside], TASKS[task].n_volumes)  # an impulse per sample
        data = np.asarray(bold(dataset, "01", task, 1).dataobj, dtype=float)
        r_sphere = np.corrcoef(x, data[truth[name]].mean(axis=0))[0, 1]
        others = correlations(x, data[(data.mean(axis=3) > 0) & ~np.any(list(truth.values()), axis=0)])
        # slow swells of the sound share some of the run's drifts (removed by the app's high-pass, not here)
        assert r_sphere > 0.7 and abs(np.median(others)) < 0.1 and np.percentile(np.abs(others), 99) < r_sphere / 2, name


def test_planted_face_signal_is_recoverable(dataset):
    truth = load_truth(dataset, "sub-02", "faces")
    ev = events(dataset, "02", "faces", 2)
    data = np.asarray(bold(dataset, "02", "faces", 2).dataobj, dtype=float)
    # 1 s boxcars, built from impulses every fine sample
    fine_onsets = np.concatenate([o + np.arange(0, 1.0, TR / 50) for o in ev["onset"]])
    heights = np.repeat(np.where(ev["trial_type"] == "face", 1.0, 0.2), 25)
    x = hrf_regressor(fine_onsets, heights, data.shape[3])
    assert np.corrcoef(x, data[truth["face"]].mean(axis=0))[0, 1] > 0.6
    others = data[(data.mean(axis=3) > 0) & ~truth["face"]]
    assert abs(np.median(correlations(x, others))) < 0.05


def test_load_truth_masks_are_nonempty_and_disjoint(dataset):
    for sub in SUBJECTS:
        masks = {name: m for task in TASKS for name, m in load_truth(dataset, sub, task).items()}
        assert set(masks) == {p.name for planted in PLANTED.values() for p in planted}
        shape = bold(dataset, sub, "lpp", 1).shape[:3]
        for name, m in masks.items():
            assert m.dtype == bool and m.shape == shape and 10 <= m.sum() <= 40, name
        assert sum(m.astype(int) for m in masks.values()).max() == 1
    with pytest.raises(UserError):
        load_truth(dataset, "09", "lpp")


def _run_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*_events.tsv"))}


def test_the_atlas_labels_each_planted_sphere(dataset):
    atlas = atlas_path(dataset)
    labels = np.asarray(nib.load(atlas).dataobj)
    names = pd.read_csv(str(atlas).replace(".nii.gz", ".tsv"), sep="\t").set_index("name")["index"]
    for task in TASKS:
        for name, planted in load_truth(dataset, "01", task).items():
            assert np.array_equal(labels == names[f"{name}Sphere"], planted), name
    assert json.loads((dataset / "derivatives/atlas/dataset_description.json").read_text())["DatasetType"] == "derivative"


def test_same_seed_same_dataset_and_overwrite(dataset, tmp_path):
    again = write_example_dataset(tmp_path / "again", n_subjects=1, seed=0)
    assert _run_files(again) == {k: v for k, v in _run_files(dataset).items() if k.startswith("sub-01")}
    first = np.asarray(bold(dataset, "01", "faces", 2).dataobj)
    np.testing.assert_array_equal(np.asarray(bold(again, "01", "faces", 2).dataobj), first)
    with pytest.raises(UserError, match="not empty"):
        write_example_dataset(again, n_subjects=1)
    write_example_dataset(again, n_subjects=1, seed=1, overwrite=True)
    assert not np.array_equal(np.asarray(bold(again, "01", "faces", 2).dataobj), first)
    assert json.loads((again / "sourcedata" / "groundtruth" / "sub-01_task-lpp_truth.json").read_text())["seed"] == 1


def test_refuses_non_empty_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty") as error:
        write_example_dataset(tmp_path)
    assert error.value.path == str(tmp_path) and error.value.fix
    with pytest.raises(UserError, match="does not hold an example dataset"):
        write_example_dataset(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError):
        write_example_dataset(tmp_path / "new", n_subjects=0)
    assert not (tmp_path / "new").exists()
