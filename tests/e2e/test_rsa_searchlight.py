"""The RSA searchlight (--rsa-searchlight) through the real CLI on the example's faces task, against its planted
geometry: the ``latent`` sphere's patterns come from four latent factors, one per image (faces drive factors 0/1,
scrambled faces 2/3), so the model "same factor = 0, different = 1" matches the RDMs of spheres in and around it
and nowhere else. Three subjects (the group level's minimum), one participant run for all; outputs validate."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_encoding.example import load_truth

from ..conftest import SPACE, group_level, run_cli, statmap, validator_errors
from .test_rsa_end_to_end import latent_rdm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(three_subject_dataset, tmp_path_factory):
    """One participant run of the searchlight alone (no --atlas or --roi), all three subjects (slow: run once)."""
    root = tmp_path_factory.mktemp("rsasl")
    out = root / "out"
    result = run_cli(three_subject_dataset, out, "participant", "--task", "faces", "-d",
                     three_subject_dataset / "derivatives" / "fmriprep", "--analysis", "rsa", "--rsa-searchlight",
                     "--rdm", f"latent={latent_rdm(three_subject_dataset, root / 'latent.tsv')}",
                     "--n-permutations", "200", "-w", root / "work", "--n-cpus", "2")
    assert result.returncode == 0, result.stderr
    return out


def test_the_rsa_map_peaks_in_the_planted_latent_sphere(searched, three_subject_dataset):
    scores, p = (nib.load(statmap(searched, "01", "faces", "latentRsa", stat)).get_fdata()
                 for stat in ("rsa", "rsaP"))
    computed = scores != 0
    truth = load_truth(three_subject_dataset, "01", "faces")
    latent = truth["latent"] & computed
    rest = computed & ~np.any(list(truth.values()), axis=0)
    top = np.argsort(scores[computed])[::-1][:10]
    print(f"sub-01 searchlight, latent model: median rho {np.median(scores[latent]):.3f} in the latent sphere, "
          f"{np.median(scores[rest]):.3f} outside the planted spheres (99th percentile "
          f"{np.percentile(scores[rest], 99):.3f}); top 10 voxels in the sphere {latent[computed][top].mean():.1f}; "
          f"p < 0.05 in {np.mean(p[latent] < 0.05):.2f} of the sphere, {np.mean(p[rest] < 0.05):.3f} outside")
    assert latent[computed][top].mean() >= 0.8
    assert np.median(scores[latent]) > np.percentile(scores[rest], 99)
    assert np.mean(p[latent] < 0.05) > 0.5
    assert np.mean(p[rest] < 0.05) < 0.09  # calibrated where nothing is planted
    assert p.min() > 0 and computed.sum() > 8000  # every brain voxel is a centre; p = 1 outside the brain


def test_the_sidecars_record_the_searchlight(searched):
    sidecar_file = statmap(searched, "01", "faces", "latentRsa", "rsa").with_suffix("").with_suffix(".json")
    sidecar = json.loads(sidecar_file.read_text())
    assert sidecar["Searchlight"]["Radius"] == 8.0 and sidecar["Distance"]["Name"] == "crossnobis"
    assert sidecar["Comparison"]["Name"] == "spearman" and len(sidecar["ModelRDM"]["Conditions"]) == 40
    assert sidecar["PermutationPValues"] == "desc-latentRsa_stat-rsaP" and sidecar["Permutations"]["N"] == 200
    assert not list((searched / "sub-01" / "func").glob("*_scores.tsv"))  # no region, no score table


def test_the_report_shows_the_map_and_the_methods_describe_the_searchlight(searched):
    report = (searched / "sub-01.html").read_text()
    assert "desc-latentRsa_stat-rsa_statmap_map.png" in report
    assert "searchlight mapped each model&#x27;s comparison: the RDM of the voxels within 8 mm" in report


def test_searchlight_outputs_pass_the_bids_validator(searched):
    assert validator_errors(searched) == []


def test_the_group_level_finds_the_latent_sphere_in_the_rsa_maps(searched, three_subject_dataset, tmp_path):
    out = group_level(three_subject_dataset, searched, tmp_path, "--group-test", "parametric")
    prefix = out / "group" / f"task-faces_space-{SPACE}_desc-latentRsa_stat-"
    mean, t, p, q = (nib.load(f"{prefix}{stat}_statmap.nii.gz").get_fdata() for stat in ("rsa", "t", "p", "pFDR"))
    truth = load_truth(three_subject_dataset, "01", "faces")  # the same spheres in every subject
    computed = nib.load(statmap(searched, "01", "faces", "latentRsa", "rsa")).get_fdata() != 0
    latent, rest = truth["latent"] & computed, computed & ~np.any(list(truth.values()), axis=0)
    print(f"group: mean rho {np.median(mean[latent]):.3f} in the latent sphere, median t {np.median(t[latent]):.2f} "
          f"(95th percentile outside {np.percentile(t[rest], 95):.2f}); p < 0.05 in {np.mean(p[latent] < 0.05):.2f} of "
          f"the sphere, {np.mean(p[rest] < 0.05):.3f} outside; q < 0.05 in {int(np.sum(q[latent] < 0.05))} voxels of "
          "the sphere (three subjects: df 2)")
    assert np.median(mean[latent]) > 0 and np.median(t[latent]) > np.percentile(t[rest], 95)
    assert np.mean(p[latent] < 0.05) > 0.5
    assert "mean searchlight RSA score" in (out / "group.html").read_text()
    assert validator_errors(out) == []
