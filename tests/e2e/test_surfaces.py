"""Surfaces through the real CLI: the example's fMRIPrep-style fsaverage5 GIFTI and fsLR CIFTI derivatives
(simulated volumes sampled onto the meshes, the planted truth per vertex) analysed with ``--space``.

Known truths: the planted face sphere (a category effect) and latent sphere are found on the surface by encoding,
by the searchlight along the mesh and at the group level; maps round-trip onto the same vertices and
grayordinates; the outputs validate; the reports draw the surfaces and open cleanly in Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_encoding.example import load_surface_truth, write_example_dataset
from bids_encoding.locations import read_map

from ..conftest import group_level, run_cli, snapshot, validator_errors
from .test_reports import assert_opens_cleanly

pytestmark = pytest.mark.slow
FS5 = "fsaverage5"
SUBJECTS = ("01", "02", "03")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_example_dataset(tmp_path_factory.mktemp("surf") / "bids", n_subjects=3, eeg=False,
                                 surfaces=(FS5, "fsLR"))


def participant(dataset: Path, out: Path, *options: str):
    result = run_cli(dataset, out, "participant", "-d", dataset / "derivatives" / "fmriprep", "--task", "faces",
                     "--skip-bids-validation", "-w", out.parent / "work", *options)
    assert result.returncode == 0, result.stderr
    return out


def surface_map(out: Path, subject: str | None, desc: str, stat: str, space: str = FS5) -> np.ndarray:
    """A map over both hemispheres' vertices (or the CIFTI's grayordinates)."""
    stem = f"task-faces_hemi-L_space-{FS5}" if space == FS5 else "task-faces_space-fsLR_den-91k"
    folder, name = ("group", stem) if subject is None else (f"sub-{subject}/func", f"sub-{subject}_{stem}")
    extension = ".shape.gii" if space == FS5 else ".dscalar.nii"
    return read_map(out / folder / f"{name}_desc-{desc}_stat-{stat}_statmap{extension}")[1]


@pytest.fixture(scope="module")
def encoded(dataset, tmp_path_factory):
    before = snapshot(dataset)
    out = participant(dataset, tmp_path_factory.mktemp("fs5") / "out", "--space", FS5, "--features", "trialtype")
    assert snapshot(dataset) == before  # nothing written into the input
    return out


def test_encoding_on_fsaverage5_finds_the_planted_spheres(dataset, encoded):
    for subject in SUBJECTS:
        truth = load_surface_truth(dataset, subject, "faces", FS5)
        r2 = surface_map(encoded, subject, "trialtype", "rSquare")
        assert r2.shape == (20484,)
        # the face sphere follows the category: a trial-type model explains it, and little elsewhere
        planted = truth["face"]
        elsewhere = ~(truth["face"] | truth["latent"] | truth["edges"])
        assert np.median(r2[planted]) > 0.2 and np.median(r2[elsewhere]) < 0.02, subject
        best = np.argsort(r2)[-20:]
        assert (truth["face"] | truth["latent"])[best].mean() >= 0.8, subject


def test_surface_outputs_are_named_per_hemisphere_and_validate(dataset, encoded):
    func = encoded / "sub-01" / "func"
    for hemi in "LR":
        name = f"sub-01_task-faces_hemi-{hemi}_space-{FS5}_desc-trialtype_stat-rSquare_statmap"
        assert (func / f"{name}.shape.gii").exists()
        sidecar = json.loads((func / f"{name}.json").read_text())
        assert sidecar["Model"]["BrainMask"]["Layout"]["Space"] == FS5
        img = nib.load(func / f"{name}.shape.gii")
        assert len(img.darrays) == 1 and img.darrays[0].data.shape == (10242,)
    mask = read_map(func / f"sub-01_task-faces_hemi-L_space-{FS5}_desc-brain_mask.shape.gii")[1]
    assert mask.sum() > 0.9 * 20484  # every vertex with a finite, non-constant series
    assert validator_errors(encoded) == []


def test_the_subject_report_draws_the_surface_and_opens_cleanly(encoded, tmp_path):
    figures = sorted((encoded / "sub-01" / "figures").glob(f"*hemi-L_space-{FS5}*stat-rSquare*_map.png"))
    assert figures, "the R² map is drawn on the surface"
    html = (encoded / "sub-01.html").read_text()
    assert f"figures/{figures[0].name}" in html
    assert_opens_cleanly(encoded / "sub-01.html", tmp_path / "shot.png")


def test_group_level_on_the_surface_finds_the_planted_sphere(dataset, encoded, tmp_path):
    out = group_level(dataset, encoded, tmp_path, "--group-test", "parametric")
    t = surface_map(out, None, "trialtype", "t")
    truth = load_surface_truth(dataset, "01", "faces", FS5)  # the spheres are where they are in every subject
    best = np.argsort(t)[-20:]
    assert (truth["face"] | truth["latent"])[best].mean() >= 0.8
    p = surface_map(out, None, "trialtype", "p")  # three subjects: t has 2 degrees of freedom, FDR over 20,484
    # vertices cannot pass, uncorrected p can
    assert np.median(p[truth["face"]]) < 0.05 and (p[~(truth["face"] | truth["latent"] | truth["edges"])]
                                                   < 0.05).mean() < 0.1
    sidecar = json.loads((out / "group" / f"task-faces_hemi-R_space-{FS5}_desc-trialtype_stat-t_statmap.json")
                         .read_text())
    assert sidecar["NVertices"] > 0.9 * 20484
    assert any((out / "group" / "figures").glob("*hemi-L*_map.png"))
    assert validator_errors(out) == []


def test_tfce_on_the_mesh_enhances_the_planted_sphere(dataset, encoded, tmp_path):
    out = group_level(dataset, encoded, tmp_path, "--group-test", "tfce", "--n-permutations", "50")
    tfce, t = surface_map(out, None, "trialtype", "tfce"), surface_map(out, None, "trialtype", "t")
    truth = load_surface_truth(dataset, "01", "faces", FS5)
    assert (truth["face"] | truth["latent"])[np.argsort(tfce)[-20:]].mean() >= 0.8
    # clusters along the mesh: a planted vertex's TFCE exceeds an unplanted vertex's of the same t
    sidecar = json.loads((out / "group" / f"task-faces_hemi-L_space-{FS5}_desc-trialtype_stat-tfce_statmap.json")
                         .read_text())
    assert "mesh" in sidecar["TFCE"]["Connectivity"] and sidecar["TFCE"]["Extent"] == "locations"
    assert np.corrcoef(tfce[t > 0], t[t > 0])[0, 1] > 0.5


def _roi(dataset: Path, folder: Path) -> tuple[Path, np.ndarray]:
    """Searchlight centres: the planted face sphere and as many unplanted vertices far from every sphere."""
    truth = load_surface_truth(dataset, "01", "faces", FS5)
    planted = truth["face"] | truth["latent"] | truth["edges"]
    rng = np.random.default_rng(0)
    control = np.zeros_like(planted)
    control[rng.choice(np.flatnonzero(~planted), 3 * int(truth["face"].sum()), replace=False)] = True
    centres = truth["face"] | control
    for hemi, part in (("L", centres[:10242]), ("R", centres[10242:])):
        img = nib.GiftiImage()
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(part.astype(np.float32)))
        nib.save(img, folder / f"roi_hemi-{hemi}.shape.gii")
    return folder / "roi_hemi-L.shape.gii", control


def test_searchlight_along_the_mesh_finds_the_face_sphere(dataset, tmp_path):
    roi, control = _roi(dataset, tmp_path)
    out = participant(dataset, tmp_path / "out", "--space", FS5, "--participant-label", "01", "--analysis",
                      "decoding", "--decode", "trial_type=face,scrambled", "--roi", str(roi), "--n-permutations",
                      "20", "--searchlight-radius", "8")
    score = surface_map(out, "01", "faceVsScrambled", "score")
    face = load_surface_truth(dataset, "01", "faces", FS5)["face"]
    assert np.median(score[face]) > 0.75 and abs(np.median(score[control]) - 0.5) < 0.1
    assert np.all(score[~(face | control)] == 0)  # only the --roi vertices are centres
    sidecar = json.loads((out / "sub-01/func/sub-01_task-faces_hemi-L_space-fsaverage5_desc-faceVsScrambled_"
                                "stat-score_statmap.json").read_text())
    assert sidecar["Searchlight"] == {"Radius": 8.0, "Units": "mm"}


def test_embedding_of_a_surface_region(dataset, tmp_path):
    roi = dataset / "sourcedata" / "groundtruth" / f"sub-01_task-faces_hemi-L_space-{FS5}_desc-latent_mask.shape.gii"
    out = participant(dataset, tmp_path / "out", "--space", FS5, "--participant-label", "01", "--analysis",
                      "embedding", "--roi", str(roi), "--embedder", "pca:latents=4", "--n-permutations", "20")
    table = next((out / "sub-01" / "func").glob("*desc-pca4FaceVsScrambled_decoding.tsv")).read_text()
    latents = dict(line.split("\t")[:3:2] for line in table.splitlines()[1:])
    assert float(latents["latents"]) > 0.75


def test_cifti_fslr_encoding_and_decoding(dataset, tmp_path):
    out = participant(dataset, tmp_path / "out", "--space", "fsLR", "--den", "91k", "--participant-label", "01",
                      "--features", "trialtype")
    truth = load_surface_truth(dataset, "01", "faces", "fsLR")
    r2 = surface_map(out, "01", "trialtype", "rSquare", space="fsLR")
    layout, _ = read_map(out / "sub-01/func/sub-01_task-faces_space-fsLR_den-91k_desc-trialtype_stat-rSquare_"
                               "statmap.dscalar.nii")
    assert layout.size == len(truth["face"]) and "THALAMUS_LEFT" in layout.describe()["Structures"]
    assert np.median(r2[truth["face"]]) > 0.2 and np.argsort(r2)[-1] in np.flatnonzero(truth["face"] | truth["latent"])
    decoded = participant(dataset, tmp_path / "dec", "--space", "fsLR", "--participant-label", "01", "--analysis",
                          "decoding", "--decode", "trial_type=face,scrambled", "--roi",
                          str(dataset / "sourcedata/groundtruth/sub-01_task-faces_space-fsLR_den-91k_desc-face_mask"
                                        ".dscalar.nii"), "--n-permutations", "20")
    score = surface_map(decoded, "01", "faceVsScrambled", "score", space="fsLR")
    assert np.median(score[truth["face"]]) > 0.75
    assert (decoded / "sub-01" / "figures").exists() and validator_errors(decoded) == []
