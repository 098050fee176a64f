"""RSA through the real CLI on the example dataset, against its planted geometry.

The ``faces`` task's ``latent`` sphere holds voxel patterns driven by four latent factors, each image
driving one (``latent_code``); the ``face`` sphere responds more to faces than to scrambled faces. So the
latent sphere's RDM matches the model "same factor = 0, different = 1" (given with ``--rdm``), the face
sphere's matches the trial types' features (``--features trialtype``), and spheres planted for another task
match neither. Outputs are BIDS-valid; user mistakes are one-paragraph errors that write nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_encoding.example import PLANTED, atlas_path, latent_code

from ..conftest import run_cli, snapshot, validator_errors
from .test_cli_errors import fails
from .test_end_to_end import SPACE

pytestmark = pytest.mark.slow
PREFIX = f"sub-01/func/sub-01_task-faces_space-{SPACE}"


def conditions(dataset: Path) -> list[str]:
    """The faces task's conditions: its images (the stim_file values), as the app sorts them."""
    events = sorted((dataset / "sub-01" / "func").glob("*task-faces*_events.tsv"))
    return sorted(set().union(*(pd.read_csv(e, sep="\t")["stim_file"] for e in events)))


def write_rdm(path: Path, labels: list[str], values: np.ndarray) -> Path:
    pd.DataFrame(values, columns=labels).to_csv(path, sep="\t", index=False)
    return path


def latent_rdm(dataset: Path, path: Path) -> Path:
    """The planted geometry: images driving the same latent factor are alike (0), the others not (1)."""
    labels = conditions(dataset)
    factor = np.array([latent_code(label)[0] for label in labels])
    return write_rdm(path, labels, (factor[:, None] != factor[None, :]).astype(float))


def rsa(dataset, out, *options):
    return run_cli(dataset, out, "participant", "--participant-label", "01", "--task", "faces", "-d",
                   dataset / "derivatives" / "fmriprep", "--analysis", "rsa", "--n-permutations", "200",
                   "--skip-bids-validation", *options)


@pytest.fixture(scope="module")
def analysed(example_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rsa")
    before = snapshot(example_dataset)
    result = rsa(example_dataset, folder / "out", "--atlas", atlas_path(example_dataset), "--rdm",
                 f"latent={latent_rdm(example_dataset, folder / 'latent.tsv')}", "--features", "trialtype")
    assert result.returncode == 0, result.stderr
    assert snapshot(example_dataset) == before
    return folder / "out"


def scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / f"{PREFIX}_desc-rsa_scores.tsv", sep="\t").set_index(["region", "model"])


def test_the_latent_sphere_has_the_planted_geometry_and_other_spheres_do_not(analysed):
    table = scores(analysed)
    latent = table.loc[("latentSphere", "latent")]
    print(f"latent sphere vs latent model: rho {latent['score']:.3f}, p {latent['p_value']:.4f}")
    assert latent["score"] > 0.3 and latent["p_value"] < 0.05
    assert latent["n_conditions"] == 40  # one per image
    others = table.xs("latent", level="model").drop(index="latentSphere")
    assert (others["score"] < latent["score"]).all()
    # spheres planted for the story task carry no signal in this one
    for region in ("wordrateSphere", "semanticSphere"):
        assert table.loc[(region, "latent"), "p_value"] > 0.05, region
    faces = table.loc[("faceSphere", "trialtype")]  # faces drive the face sphere more than scrambled faces
    assert faces["p_value"] < 0.05 and faces["score"] > table.loc[("wordrateSphere", "trialtype"), "score"]


def test_each_region_has_its_rdm_with_the_condition_labels(analysed, example_dataset):
    rdm = pd.read_csv(analysed / f"{PREFIX}_desc-latentSphere_rdm.tsv", sep="\t")
    assert list(rdm.columns) == conditions(example_dataset) and rdm.shape == (40, 40)
    values = rdm.to_numpy()
    np.testing.assert_allclose(values, values.T, atol=1e-5)
    assert np.all(np.diag(values) == 0)
    regions = {p.name.split("desc-")[1].split("_")[0] for p in (analysed / "sub-01" / "func").glob("*_rdm.tsv")}
    assert regions == {f"{p.name}Sphere" for planted in PLANTED.values() for p in planted}  # every atlas region


def test_the_sidecars_record_the_method(analysed):
    sidecar = json.loads((analysed / f"{PREFIX}_desc-rsa_scores.json").read_text())
    assert sidecar["Distance"]["Name"] == "crossnobis" and sidecar["Comparison"]["Name"] == "spearman"
    assert sidecar["Permutations"]["N"] == 200 and sidecar["Seed"] == 0 and sidecar["ConditionColumn"] == "stim_file"
    assert set(sidecar["Models"]) == {"latent", "trialtype"}
    assert {"score", "p_value", "n_conditions"} <= set(sidecar) and "Description" in sidecar["score"]


def test_rsa_outputs_pass_the_bids_validator(analysed):
    errors = validator_errors(analysed)
    assert not errors, errors[:5]


def test_the_report_shows_the_rdms_and_scores(analysed):
    report = (analysed / "sub-01.html").read_text()
    assert "Representational similarity" in report and "latentSphere" in report
    assert list((analysed / "sub-01" / "figures").glob("*latentSphere_rdm*.png"))


def test_the_planted_region_given_as_roi_with_correlation_distance_and_tau_a(example_dataset, tmp_path):
    roi = example_dataset / "sourcedata" / "groundtruth" / "sub-01_task-faces_desc-latent_mask.nii.gz"
    result = rsa(example_dataset, tmp_path / "out", "--roi", roi, "--distance", "correlation", "--comparison", "tau-a",
                 "--rdm", f"latent={latent_rdm(example_dataset, tmp_path / 'latent.tsv')}")
    assert result.returncode == 0, result.stderr
    row = scores(tmp_path / "out").loc[("roi", "latent")]
    print(f"latent mask (--roi), correlation distance, tau-a: {row['score']:.3f}, p {row['p_value']:.4f}")
    assert row["score"] > 0 and row["p_value"] < 0.05
    sidecar = json.loads((tmp_path / "out" / f"{PREFIX}_desc-roi_rdm.json").read_text())
    assert sidecar["Distance"]["Name"] == "correlation" and sidecar["RegionOfInterest"] == str(roi)


# --------------------------------------------------------------------------- user errors


def test_model_rdm_labels_that_are_not_the_conditions(example_dataset, tmp_path, capsys):
    labels = conditions(example_dataset)
    wrong = write_rdm(tmp_path / "wrong.tsv", ["faces/face01.png"] + labels[1:-1] + ["faces/other.png"],
                      np.ones((40, 40)) - np.eye(40))
    message = fails(capsys, example_dataset, tmp_path / "out", "--task", "faces", "--analysis", "rsa", "--roi",
                    str(atlas_path(example_dataset)), "--rdm", f"wrong={wrong}", "--skip-bids-validation")
    assert "do not match the task's conditions" in message and "faces/other.png" in message and str(wrong) in message


def test_fewer_than_three_conditions(example_dataset, tmp_path, capsys):
    two = write_rdm(tmp_path / "two.tsv", ["face", "scrambled"], np.array([[0.0, 1.0], [1.0, 0.0]]))
    message = fails(capsys, example_dataset, tmp_path / "out", "--task", "faces", "--analysis", "rsa", "--roi",
                    str(atlas_path(example_dataset)), "--conditions", "trial_type", "--rdm", f"two={two}",
                    "--skip-bids-validation")
    assert "at least 3 conditions" in message and "--conditions" in message


def test_no_region(example_dataset, tmp_path, capsys):
    model = latent_rdm(example_dataset, tmp_path / "latent.tsv")
    message = fails(capsys, example_dataset, tmp_path / "out", "--task", "faces", "--analysis", "rsa", "--rdm",
                    f"latent={model}", "--skip-bids-validation")
    assert "neither --atlas nor --roi" in message


def test_no_model(example_dataset, tmp_path, capsys):
    message = fails(capsys, example_dataset, tmp_path / "out", "--task", "faces", "--analysis", "rsa", "--roi",
                    str(atlas_path(example_dataset)), "--skip-bids-validation")
    assert "none was given" in message and "--rdm" in message


def test_the_group_level_finds_the_planted_geometry_across_subjects(three_subject_dataset, tmp_path):
    """Three subjects: the latent sphere's scores are above 0 across subjects (a t-test: three subjects' sign flips
    cannot reach 0.05), and its noise ceiling across their RDMs is positive."""
    out = tmp_path / "out"
    model = latent_rdm(three_subject_dataset, tmp_path / "latent.tsv")
    result = run_cli(three_subject_dataset, out, "participant", "--task", "faces", "-d",
                     three_subject_dataset / "derivatives" / "fmriprep", "--analysis", "rsa", "--n-permutations", "0",
                     "--atlas", atlas_path(three_subject_dataset), "--rdm", f"latent={model}",
                     "--skip-bids-validation", "--n-cpus", "2")
    assert result.returncode == 0, result.stderr
    result = run_cli(three_subject_dataset, out, "group", "--group-test", "parametric")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "group" / f"task-faces_space-{SPACE}_desc-rsa_scores.tsv", sep="\t")
    table = table.set_index(["region", "model"])
    latent = table.loc[("latentSphere", "latent")]
    print(f"group: latent sphere mean rho {latent['mean']:.3f}, p_fdr {latent['p_fdr']:.4f}, noise ceiling "
          f"{latent['noise_ceiling_lower']:.3f}-{latent['noise_ceiling_upper']:.3f}")
    assert latent["p_fdr"] < 0.05 and latent["n_subjects"] == 3
    assert 0 < latent["noise_ceiling_lower"] <= latent["noise_ceiling_upper"]
    assert table.loc[("wordrateSphere", "latent"), "p_fdr"] > 0.05
    assert not validator_errors(out)
