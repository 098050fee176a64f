"""Embedding through the real CLI on the example dataset: the sparse autoencoder plugin (found through its
entry point) learns the planted latent region's code without labels, its latents separate the conditions,
it reconstructs held-out patterns as well as PCA of the same size, a rerun gives identical files, and
bad input is a clear error."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ..conftest import run_cli, snapshot, validator_errors
from .test_end_to_end import SPACE

pytestmark = pytest.mark.slow
# a sparse code (one active latent of 8), a code as large as the planted structure, and its PCA baseline
EMBEDDERS = ["--embedder", "sae:latents=8,k=1", "sae:latents=4,k=4", "pca:latents=4"]


def embed(dataset, out, *options):
    roi = dataset / "sourcedata" / "groundtruth" / "sub-01_task-faces_desc-latent_mask.nii.gz"
    return run_cli(dataset, out, "participant", "--participant-label", "01", "--task", "faces", "-d",
                   dataset / "derivatives" / "fmriprep", "--analysis", "embedding", "--roi", roi,
                   "--n-permutations", "100", "--skip-bids-validation", *options)


@pytest.fixture(scope="module")
def embedded(example_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedding") / "out"
    before = snapshot(example_dataset)
    result = embed(example_dataset, out, *EMBEDDERS)
    assert result.returncode == 0, result.stderr
    assert snapshot(example_dataset) == before
    return out


def sidecar(out, desc, run=1):
    return json.loads((out / f"sub-01/func/sub-01_task-faces_run-{run}_space-{SPACE}_desc-{desc}_timeseries.json")
                      .read_text())


def test_the_sparse_code_separates_the_conditions_it_never_saw(embedded):
    table = pd.read_csv(embedded / f"sub-01/func/sub-01_task-faces_space-{SPACE}_desc-sae8FaceVsScrambled_decoding.tsv",
                        sep="\t").set_index("source")
    assert table.loc["latents", "balanced_accuracy"] > 0.8 and table.loc["latents", "p_value"] < 0.05
    facts = sidecar(embedded, "sae8")
    assert facts["Embedder"]["Distribution"] == "bids-encoding-sae"
    assert 0.08 < facts["Sparsity"] <= 1 / 8  # at most one of 8 latents active per sample
    assert facts["DeadLatentFraction"] < 0.5
    assert sidecar(embedded, "sae4")["Silhouette"]["Latents"] > facts["Silhouette"]["Voxels"]


def test_a_code_of_the_planted_size_reconstructs_held_out_patterns_as_well_as_pca(embedded):
    sae, pca = sidecar(embedded, "sae4"), sidecar(embedded, "pca4")
    assert sae["PCAHeldOutR2"] == pytest.approx(pca["HeldOutR2"])
    assert sae["HeldOutR2"] >= pca["HeldOutR2"] - 0.02, (sae["HeldOutR2"], pca["HeldOutR2"])
    # the sparse code gives up some reconstruction for its sparsity, but still explains most of it
    assert sidecar(embedded, "sae8")["HeldOutR2"] > 0.6 * pca["HeldOutR2"]


def test_outputs_report_and_validator(embedded):
    func = embedded / "sub-01" / "func"
    for desc in ("sae8", "sae4", "pca4"):
        assert (func / f"sub-01_task-faces_space-{SPACE}_desc-{desc}_weights.safetensors").exists()
        assert (embedded / "sub-01" / "figures" / f"sub-01_task-faces_desc-{desc}_tsne.png").exists()
    report = (embedded / "sub-01.html").read_text()
    assert "Latent embeddings" in report and "sub-01_task-faces_desc-sae8_tsne.png" in report
    errors = validator_errors(embedded)
    assert not errors, errors[:5]


def test_a_rerun_with_the_same_seed_gives_identical_files(embedded, example_dataset, tmp_path):
    result = embed(example_dataset, tmp_path / "again", *EMBEDDERS)
    assert result.returncode == 0, result.stderr
    for first in sorted((embedded / "sub-01" / "func").glob("*sae4*")):
        second = tmp_path / "again" / first.relative_to(embedded)
        if first.suffix == ".json":  # the command line (output folder) differs; everything else is equal
            a, b = (json.loads(p.read_text()) for p in (first, second))
            a.pop("bids-encoding"), b.pop("bids-encoding")
            assert a == b, first.name
        else:
            assert first.read_bytes() == second.read_bytes(), first.name


@pytest.mark.parametrize("options,message", [
    (["--embedder", "umap"], "no brain embedder called 'umap'"),
    (["--embedder", "sae:latents=4,k=9"], "asks for k=9 active latents out of latents=4"),
    (["--embedder", "pca:latents=4", "pca:latents=4"], "both be named pca4"),
    (["--embedder", "pca:latents=64"], "asks for 64 latents but has only 40 training samples"),
    (["--region", "leftFusiform"], "no --atlas"),
])
def test_bad_embedding_requests_are_clear_errors(example_dataset, tmp_path, options, message):
    result = embed(example_dataset, tmp_path / "out", *options)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out" / "sub-01").exists()
