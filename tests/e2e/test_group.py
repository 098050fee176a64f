"""The group level: each test recovers a planted group effect and keeps the null quiet, and the real CLI runs it
on participant outputs of the example dataset."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.derivatives import derivative_path, save_nifti, write_json
from bids_encoding.errors import UserError
from bids_encoding.analyses.group_stats import group_test
from bids_encoding.bids_io.outputs import check_group_inputs, collect_participant_outputs
from bids_encoding.options import GroupOptions, StatsOptions

from ..conftest import run_cli, snapshot, validator_errors

SPACE = "MNI152NLin2009cAsym"
N_SUBJECTS = 8


def _write(root: Path, subject: str, datatype: str, suffix: str, extension: str, entities: dict, write, sidecar: dict):
    relative = derivative_path({"subject": subject, **entities}, suffix, extension, datatype)
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    write_json(path.with_name(path.name.split(".")[0] + ".json"), sidecar)
    return path


@pytest.fixture
def planted_outputs(tmp_path):
    """Participant outputs of eight simulated subjects: searchlight maps with a block above chance, EEG decoding
    curves with a bump at 0.1-0.2 s, and whole-pattern decoding where the brain beats chance and a feature does not."""
    rng = np.random.default_rng(0)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    effect = np.zeros((10, 10, 10), bool)
    effect[2:5, 2:5, 2:5] = True
    times = np.round(np.arange(-0.1, 0.5, 0.01), 3)
    bump = (times >= 0.1) & (times <= 0.2)
    for index in range(N_SUBJECTS):
        subject = f"{index + 1:02d}"
        score = 0.5 + rng.normal(0, 0.03, effect.shape) + 0.15 * effect
        _write(tmp_path, subject, "func", "statmap", ".nii.gz",
               {"task": "faces", "space": SPACE, "desc": "faceVsScrambled", "stat": "score"},
               lambda p: save_nifti(nib.Nifti1Image(score.astype(np.float32), affine), p), {"Chance": 0.5})
        auc = 0.5 + rng.normal(0, 0.02, times.size) + 0.12 * bump
        _write(tmp_path, subject, "eeg", "decoding", ".tsv", {"task": "faces", "desc": "faceVsScrambled"},
               lambda p: pd.DataFrame({"time": times, "roc_auc": auc, "sd": 0.05}).to_csv(p, sep="\t", index=False),
               {"ChanceLevel": 0.5})
        table = pd.DataFrame({"source": ["brain", "wordrate"], "balanced_accuracy": [0.75 + rng.normal(0, 0.05),
                                                                                     0.5 + rng.normal(0, 0.05)],
                              "roc_auc": [0.8 + rng.normal(0, 0.05), 0.5 + rng.normal(0, 0.05)], "chance": 0.5})
        _write(tmp_path, subject, "func", "decoding", ".tsv", {"task": "faces", "space": SPACE, "desc": "faceVsScrambled"},
               lambda p: table.to_csv(p, sep="\t", index=False), {"Chance": 0.5})
    return tmp_path, effect, times, bump


def _inputs(root: Path) -> dict[str, object]:
    inputs = collect_participant_outputs(root)
    check_group_inputs(inputs, root)
    return {group.kind: group for group in inputs}


@pytest.mark.parametrize("test,corrected", [("permutation", "pFWE"), ("parametric", "pFDR")])
def test_map_test_finds_the_planted_block_and_little_else(planted_outputs, tmp_path, test, corrected):
    root, effect, _, _ = planted_outputs
    group = _inputs(root)["map"]
    out = tmp_path / "group-maps"
    out.mkdir()
    outputs = group_test(group, out, GroupOptions(group_test=test), StatsOptions(n_permutations=500))
    by_stat = {o.entities["stat"]: Path(o.in_file) for o in outputs}
    assert set(by_stat) == {"score", "t", "p", corrected}
    p = nib.load(by_stat[corrected]).get_fdata()
    assert np.mean(p[effect] < 0.05) > 0.95
    assert np.mean(p[~effect] < 0.05) < 0.02
    mean = nib.load(by_stat["score"]).get_fdata()
    assert abs(mean[effect].mean() - 0.65) < 0.02 and abs(mean[~effect].mean() - 0.5) < 0.01
    metadata = outputs[-1].metadata
    assert metadata["Test"] == test and metadata["NSubjects"] == N_SUBJECTS and metadata["ChanceLevel"] == 0.5


def test_time_test_finds_the_planted_interval(planted_outputs, tmp_path):
    root, _, times, bump = planted_outputs
    group = _inputs(root)["time"]
    (output,) = group_test(group, tmp_path, GroupOptions(), StatsOptions(n_permutations=200))
    table = pd.read_csv(output.in_file, sep="\t", na_values="n/a")
    assert np.allclose(table["time"], times)
    assert (table["ci_low"] <= table["roc_auc"]).all() and (table["roc_auc"] <= table["ci_high"]).all()
    significant = [c for c in output.metadata["Clusters"] if c["p"] < 0.05]
    assert len(significant) == 1
    assert abs(significant[0]["Start"] - 0.1) <= 0.03 and abs(significant[0]["Stop"] - 0.2) <= 0.03
    assert 0.1 <= output.metadata["Peak"]["Time"] <= 0.2


@pytest.mark.parametrize("test,corrected", [("permutation", "p_fwe"), ("parametric", "p_fdr")])
def test_table_test_separates_a_decodable_source_from_chance(planted_outputs, tmp_path, test, corrected):
    root, _, _, _ = planted_outputs
    group = _inputs(root)["table"]
    (output,) = group_test(group, tmp_path, GroupOptions(group_test=test), StatsOptions(n_permutations=500))
    table = pd.read_csv(output.in_file, sep="\t").set_index(["source", "measure"])
    assert table.loc[("brain", "balanced_accuracy"), corrected] < 0.01
    assert table.loc[("wordrate", "balanced_accuracy"), corrected] > 0.05
    assert table.loc[("brain", "roc_auc"), "n_subjects"] == N_SUBJECTS
    assert [c for c in table.columns if c.startswith("sub-")] == [f"sub-{i + 1:02d}" for i in range(N_SUBJECTS)]


def test_a_subject_without_an_output_is_named(planted_outputs):
    root, _, _, _ = planted_outputs
    for path in (root / "sub-03").rglob("*_decoding.tsv"):
        if "/eeg/" in str(path):
            path.unlink()
    with pytest.raises(UserError, match="sub-03 have no 'task-faces_desc-faceVsScrambled' output"):
        check_group_inputs(collect_participant_outputs(root), root)


def test_subjects_in_different_spaces_are_named(planted_outputs):
    root, _, _, _ = planted_outputs
    for path in (root / "sub-02" / "func").glob("*"):
        path.rename(path.with_name(path.name.replace(SPACE, "MNI152NLin6Asym")))
    with pytest.raises(UserError, match="different spaces.*MNI152NLin6Asym: sub-02"):
        check_group_inputs(collect_participant_outputs(root), root)


def test_maps_on_different_grids_are_refused(planted_outputs, tmp_path):
    root, _, _, _ = planted_outputs
    path = next((root / "sub-04" / "func").glob("*_statmap.nii.gz"))
    save_nifti(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4)), path)
    with pytest.raises(UserError, match="sub-04's map is on other voxels than sub-01's"):
        group_test(_inputs(root)["map"], tmp_path, GroupOptions(group_test="parametric"))


def test_two_subjects_are_refused_naming_them_and_the_fix(planted_outputs, small_dataset, tmp_path_factory):
    root, _, _, _ = planted_outputs
    for index in range(3, N_SUBJECTS + 1):
        shutil.rmtree(root / f"sub-{index:02d}")
    with pytest.raises(UserError, match=r"at least 3 subjects, and found only 2 \(sub-01, sub-02\)"):
        check_group_inputs(collect_participant_outputs(root), root)
    before = snapshot(root)
    result = run_cli(small_dataset, root, "group", "-w", tmp_path_factory.mktemp("work"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"bids-encoding: error: {root}: the group level needs at least 3 subjects"), error
    assert "sub-01, sub-02" in error and "Run the participant level for more subjects" in error
    assert snapshot(root) == before and not (root / "group").exists()


def _same_in_every_subject(files: dict[str, Path], where: np.ndarray, rng: np.random.Generator) -> None:
    """Give the maps sub-01's values at ``where`` in every subject, up to float32 rounding (1e-7 relative)."""
    first = nib.load(files["01"]).get_fdata()
    for path in files.values():
        img = nib.load(path)
        data = img.get_fdata()
        data[where] = first[where] * (1 + 1e-7 * rng.standard_normal(int(where.sum())))
        save_nifti(nib.Nifti1Image(data.astype(np.float32), img.affine), path)


@pytest.mark.parametrize("test,corrected", [("permutation", "pFWE"), ("parametric", "pFDR")])
def test_voxels_identical_across_subjects_get_no_t_are_counted_and_the_planted_block_is_still_found(
        planted_outputs, tmp_path, test, corrected):
    root, effect, _, _ = planted_outputs
    group = _inputs(root)["map"]
    identical = np.zeros(effect.shape, bool)
    identical[6:] = True  # a slab away from the planted block
    _same_in_every_subject(group.files, identical, np.random.default_rng(1))
    out = tmp_path / "group-maps"
    out.mkdir()
    outputs = group_test(group, out, GroupOptions(group_test=test), StatsOptions(n_permutations=500))
    maps = {o.entities["stat"]: nib.load(o.in_file).get_fdata() for o in outputs}
    assert np.abs(maps["t"]).max() < 1e3  # before: mean / (rounding-sized sd), t of about 1e6
    assert (maps["t"][identical] == 0).all() and (maps["p"][identical] == 1).all()
    assert (maps[corrected][identical] == 1).all()
    assert np.mean(maps[corrected][effect] < 0.05) > 0.95
    assert np.mean(maps[corrected][~effect & ~identical] < 0.05) < 0.02
    for output in outputs:
        assert output.metadata["NConstant"] == identical.sum() == 400
        assert output.metadata["NVoxels"] == effect.size - identical.sum()


def test_identical_maps_in_every_subject_give_no_t_at_all(planted_outputs, tmp_path):
    root, effect, _, _ = planted_outputs
    group = _inputs(root)["map"]
    _same_in_every_subject(group.files, np.ones(effect.shape, bool), np.random.default_rng(2))
    outputs = group_test(group, tmp_path, GroupOptions(), StatsOptions(n_permutations=100))
    maps = {o.entities["stat"]: nib.load(o.in_file).get_fdata() for o in outputs}
    assert (maps["t"] == 0).all() and (maps["p"] == 1).all() and (maps["pFWE"] == 1).all()
    assert outputs[0].metadata["NConstant"] == effect.size and outputs[0].metadata["NVoxels"] == 0


def test_rows_and_times_identical_across_subjects_are_not_tested_and_are_counted(planted_outputs, tmp_path):
    root, _, times, bump = planted_outputs
    inputs = _inputs(root)
    for path in inputs["table"].files.values():  # a source at ceiling in everyone: no variance to test against
        table = pd.read_csv(path, sep="\t")
        ceiling = pd.DataFrame({"source": ["ceiling"], "balanced_accuracy": [1.0], "roc_auc": [1.0], "chance": [0.5]})
        pd.concat([table, ceiling]).to_csv(path, sep="\t", index=False)
    before = times < 0
    for path in inputs["time"].files.values():  # exactly at chance before the onset, in everyone
        table = pd.read_csv(path, sep="\t")
        table.loc[before, "roc_auc"] = 0.5
        table.to_csv(path, sep="\t", index=False)
    for test, column in (("permutation", "p_fwe"), ("parametric", "p_fdr")):
        (output,) = group_test(inputs["table"], tmp_path, GroupOptions(group_test=test), StatsOptions(n_permutations=500))
        table = pd.read_csv(output.in_file, sep="\t").set_index(["source", "measure"])
        assert (table.loc["ceiling", "t"] == 0).all() and (table.loc["ceiling", ["p_value", column]] == 1).all().all()
        assert table.loc[("brain", "balanced_accuracy"), column] < 0.01 and output.metadata["NConstant"] == 2
    (output,) = group_test(inputs["time"], tmp_path, GroupOptions(), StatsOptions(n_permutations=200))
    curve = pd.read_csv(output.in_file, sep="\t", na_values="n/a")
    assert (curve["t"][before] == 0).all() and output.metadata["NConstant"] == before.sum()
    significant = [c for c in output.metadata["Clusters"] if c["p"] < 0.05]
    assert len(significant) == 1 and abs(significant[0]["Start"] - 0.1) <= 0.03


# --------------------------------------------------------------------------- the real CLI


def _planted_atlas(bids: Path, truth: dict[str, np.ndarray], folder: Path) -> Path:
    """An atlas whose regions are the planted word-rate sphere, the planted word-length sphere and the rest."""
    reference = next((bids / "derivatives/fmriprep/sub-01/func").glob("*_desc-brain_mask.nii.gz"))
    rest = ~truth["wordrate"] & ~truth["wordlength"] & (nib.load(reference).get_fdata() > 0)
    labels = truth["wordrate"] * 1 + truth["wordlength"] * 2 + rest * 3
    atlas = folder / "atlas_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels.astype(np.int16), nib.load(reference).affine), atlas)
    pd.DataFrame({"index": [1, 2, 3], "name": ["wordrateSphere", "wordlengthSphere", "rest"]}).to_csv(
        folder / "atlas_dseg.tsv", sep="\t", index=False)
    return atlas


@pytest.fixture(scope="module")
def five_subjects(tmp_path_factory):
    """The example dataset with five subjects, their participant-level encoding (wordrate, lpp) and EEG decoding."""
    from bids_encoding.example import write_example_dataset

    from bids_encoding.example import load_truth

    root = tmp_path_factory.mktemp("group")
    bids = write_example_dataset(root / "bids", n_subjects=5, seed=3)
    out, work = root / "out", root / "work"
    atlas = _planted_atlas(bids, load_truth(bids, "01", "lpp"), root)
    common = [bids, out, "participant", "-d", bids / "derivatives/fmriprep", "-w", work, "--skip-bids-validation",
              "--n-cpus", "2"]
    fmri = run_cli(*common, "--task", "lpp", "--features", "wordrate", "--atlas", atlas)
    assert fmri.returncode == 0, fmri.stderr
    eeg = run_cli(*common, "--datatype", "eeg", "--task", "faces", "--analysis", "decoding", "--decode",
                  "trial_type=face,scrambled", "--n-permutations", "0")
    assert eeg.returncode == 0, eeg.stderr
    return bids, out, work


@pytest.mark.slow
@pytest.mark.parametrize("test,corrected", [("parametric", "pFDR"), ("permutation", "pFWE")])
def test_group_level_recovers_the_planted_voxels_across_subjects(five_subjects, tmp_path, test, corrected):
    from bids_encoding.example import load_truth

    bids, participant_out, work = five_subjects
    out = tmp_path / "out"
    shutil.copytree(participant_out, out)
    before = snapshot(out / "sub-01")
    result = run_cli(bids, out, "group", "-w", tmp_path / "work", "--group-test", test, "--n-permutations", "200")
    assert result.returncode == 0, result.stderr
    assert snapshot(out / "sub-01") == before, "the group level rewrote participant outputs"
    prefix = out / "group" / f"task-lpp_space-{SPACE}_desc-wordrate_stat-"
    truth = load_truth(bids, "01", "lpp")  # the planted regions are the same in every subject
    mask = nib.load(participant_out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    planted, rest = truth["wordrate"] & mask, mask & ~np.any(list(truth.values()), axis=0)
    p = nib.load(f"{prefix}p_statmap.nii.gz").get_fdata()
    assert np.mean(p[planted] < 0.01) > 0.9 and np.mean(p[rest] < 0.01) < 0.02
    # five subjects cannot survive correction over ~9,000 voxels, but the planted ones come first
    corrected_p = nib.load(f"{prefix}{corrected}_statmap.nii.gz").get_fdata()
    assert np.median(corrected_p[planted]) < np.percentile(corrected_p[rest], 5)
    assert corrected_p[planted].min() >= p[planted].min()
    sidecar = json.loads(Path(f"{prefix}{corrected}_statmap.json").read_text())
    assert sidecar["Test"] == test and sidecar["NSubjects"] == 5 and sidecar["bids-encoding"]["Seed"] == 0
    regions = pd.read_csv(f"{prefix.parent}/task-lpp_space-{SPACE}_desc-wordrate_regions.tsv", sep="\t").set_index("name")
    column = "p_fwe" if test == "permutation" else "p_fdr"
    assert regions.loc["wordrateSphere", "p_value"] < 0.01 and regions.loc["rest", column] > 0.05
    assert regions.loc["wordrateSphere", column] == regions[column].min()
    if test == "parametric":  # (five subjects give 32 sign flips: a max-t p cannot go far below 0.05)
        assert regions.loc["wordrateSphere", column] < 0.05
    else:  # and the log says so
        assert "5 subjects give a sign-flip test only 32 distinct sign patterns" in result.stderr
        assert "run more subjects (6 or more), or use --group-test parametric" in result.stderr
    assert regions.loc["wordrateSphere", "mean"] > 10 * abs(regions.loc["rest", "mean"])
    curve = pd.read_csv(out / "group" / "task-faces_desc-faceVsScrambled_decoding.tsv", sep="\t", na_values="n/a")
    assert 0.12 <= curve.loc[curve["roc_auc"].idxmax(), "time"] <= 0.25  # the planted N170
    assert not any(p.name.startswith("sub-") for p in (out / "group").iterdir())
    assert (out / "group.html").exists()


@pytest.mark.slow
def test_group_level_names_the_subject_whose_outputs_are_missing(five_subjects, tmp_path):
    bids, participant_out, _ = five_subjects
    out = tmp_path / "out"
    shutil.copytree(participant_out, out)
    for path in (out / "sub-04" / "eeg").glob("*_decoding.*"):
        path.unlink()
    before = snapshot(out)
    result = run_cli(bids, out, "group", "-w", tmp_path / "work")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sub-04 have no 'task-faces_desc-faceVsScrambled' output" in result.stderr
    assert "--participant-label" in result.stderr
    assert snapshot(out) == before
    leaving_out = run_cli(bids, out, "group", "-w", tmp_path / "work", "--participant-label", "01", "02", "03", "05",
                          "--group-test", "parametric")
    assert leaving_out.returncode == 0, leaving_out.stderr
    sidecar = json.loads((out / "group" / "task-faces_desc-faceVsScrambled_decoding.json").read_text())
    assert sidecar["Subjects"] == ["01", "02", "03", "05"]


@pytest.mark.slow
def test_group_level_tfce_writes_the_tfce_and_its_fwe_maps_and_the_report_names_it(five_subjects, tmp_path):
    """--group-test tfce through the real CLI: the TFCE and pFWE maps beside t and p, sidecars that say how, tables
    and time courses tested as before (and the log says so), a report that shows TFCE, valid BIDS."""
    from bids_encoding.example import load_truth

    bids, participant_out, _ = five_subjects
    out = tmp_path / "out"
    shutil.copytree(participant_out, out)
    start = time.perf_counter()
    result = run_cli(bids, out, "group", "-w", tmp_path / "work", "--group-test", "tfce", "--n-permutations", "100",
                     "--seed", "7")
    print(f"group level with --group-test tfce: {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stderr
    prefix = out / "group" / f"task-lpp_space-{SPACE}_desc-wordrate_stat-"
    for stat in ("rSquare", "t", "p", "tfce", "pFWE"):
        assert Path(f"{prefix}{stat}_statmap.nii.gz").exists() and Path(f"{prefix}{stat}_statmap.json").exists()
    sidecar = json.loads(Path(f"{prefix}pFWE_statmap.json").read_text())
    assert sidecar["Test"] == "tfce" and sidecar["Correction"] == "FWE" and "maximum TFCE" in sidecar["TestDescription"]
    assert sidecar["Permutations"] == 100 and sidecar["Seed"] == 7 and sidecar["NSubjects"] == 5
    assert (sidecar["TFCE"]["E"], sidecar["TFCE"]["H"]) == (0.5, 2) and "face" in sidecar["TFCE"]["Connectivity"]
    # the planted voxels lead the TFCE map and its corrected p (32 sign patterns: p cannot go far below 0.05)
    truth = load_truth(bids, "01", "lpp")
    mask = nib.load(participant_out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    planted, rest = truth["wordrate"] & mask, mask & ~np.any(list(truth.values()), axis=0)
    tfce = nib.load(f"{prefix}tfce_statmap.nii.gz").get_fdata()
    p_fwe = nib.load(f"{prefix}pFWE_statmap.nii.gz").get_fdata()
    assert np.median(tfce[planted]) > np.percentile(tfce[rest], 99)
    assert np.median(p_fwe[planted]) < np.percentile(p_fwe[rest], 5)
    regions = pd.read_csv(f"{prefix.parent}/task-lpp_space-{SPACE}_desc-wordrate_regions.tsv", sep="\t")
    assert "p_fwe" in regions.columns
    assert "this table is tested with the max-t sign-flip test" in result.stderr
    assert "this time course keeps its cluster permutation test" in result.stderr
    report = (out / "group.html").read_text()
    assert "TFCE" in report and "threshold-free cluster enhancement" in report
    assert "E = 0.5, H = 2" in report  # the methods paragraph
    errors = validator_errors(out)
    assert not errors, errors[:5]
