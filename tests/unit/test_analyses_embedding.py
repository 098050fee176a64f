"""The embedding stage on the example dataset's planted latent region: the built-in pca embedder, the
evaluation against the planted conditions, weights that restore the embedder, and clear errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from bids_encoding.plugins.builtin import PCAEmbedder
from bids_encoding.analyses.embedding import fit_embedding, validation_split, volume_conditions
from bids_encoding.options import DecodingOptions, EmbeddingOptions, FMRIOptions, StatsOptions, check_region
from bids_encoding.errors import UserError
from bids_encoding.example import TR, load_truth

from ..conftest import SPACE


def faces_runs(dataset, subject="01"):
    func = dataset / "derivatives" / "fmriprep" / f"sub-{subject}" / "func"
    bolds = sorted(func.glob(f"*task-faces*_space-{SPACE}*_desc-preproc_bold.nii.gz"))
    masks = sorted(func.glob(f"*task-faces*_space-{SPACE}*_desc-brain_mask.nii.gz"))
    events = sorted((dataset / f"sub-{subject}" / "func").glob("*task-faces*_events.tsv"))
    return {"bold_files": bolds, "events_files": events, "trs": [TR] * len(bolds), "mask_files": masks}


def latent_roi(dataset, subject="01"):
    return str(dataset / "sourcedata" / "groundtruth" / f"sub-{subject}_task-faces_desc-latent_mask.nii.gz")


@pytest.fixture(scope="module")
def pca_outputs(example_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedding")
    return fit_embedding(out_dir=out, options=EmbeddingOptions(embedder=("pca:latents=4",)),
                         fmri=FMRIOptions(roi=latent_roi(example_dataset)), stats=StatsOptions(n_permutations=50),
                         **faces_runs(example_dataset))


def by_suffix(outputs, suffix):
    return [o for o in outputs if o.suffix == suffix]


def test_pca_latents_of_the_planted_region_separate_the_conditions(pca_outputs):
    table = pd.read_csv(by_suffix(pca_outputs, "decoding")[0].in_file, sep="\t").set_index("source")
    latents = table.loc["latents"]
    assert latents["balanced_accuracy"] > 0.85 and latents["p_value"] < 0.05 and latents["n_features"] == 4
    assert latents["n_trials"] == 80 and latents["n_folds"] == 2
    assert table.loc["voxels", "n_features"] == 38  # the planted sphere
    metadata = by_suffix(pca_outputs, "timeseries")[0].metadata
    assert metadata["Silhouette"]["Latents"] > metadata["Silhouette"]["Voxels"] > 0
    assert metadata["HeldOutR2"] == pytest.approx(metadata["PCAHeldOutR2"]) and metadata["HeldOutR2"] > 0.3
    assert metadata["Sparsity"] == 1.0 and metadata["DeadLatentFraction"] == 0.0
    assert metadata["NTrainingSamples"] == metadata["NValidationSamples"] == 40  # run 1 trains, run 2 validates


def test_latents_are_written_per_run_with_their_conditions(pca_outputs, example_dataset):
    series = by_suffix(pca_outputs, "timeseries")
    assert [o.entities["run"] for o in series] == ["1", "2"]
    for output, events_file in zip(series, faces_runs(example_dataset)["events_files"]):
        values = pd.read_csv(output.in_file, sep="\t", header=None).to_numpy()
        metadata = output.metadata
        assert values.shape == (40, 2 + 4) and metadata["Columns"][:3] == ["onset", "condition", "latent000"]
        events = pd.read_csv(events_file, sep="\t").sort_values("onset")
        np.testing.assert_allclose(values[:, 0], events["onset"])
        levels = metadata["condition"]["Levels"]
        assert [levels[f"{c:g}"] for c in values[:, 1]] == events["trial_type"].tolist()


def test_the_saved_weights_restore_the_embedder(pca_outputs, example_dataset):
    weights_file = by_suffix(pca_outputs, "weights")[0].in_file
    restored = PCAEmbedder(latents=4).set_weights(load_file(weights_file))
    series = by_suffix(pca_outputs, "timeseries")[0]
    latents = pd.read_csv(series.in_file, sep="\t", header=None).to_numpy()[:, 2:]
    # the restored embedder gives back the written latents of run 1's trials from their LSS responses
    from bids_encoding.analyses.embedding import load_samples

    runs = faces_runs(example_dataset)
    samples = load_samples(runs["bold_files"], runs["events_files"], runs["trs"], runs["mask_files"], [None, None],
                           EmbeddingOptions(), DecodingOptions(), FMRIOptions(roi=latent_roi(example_dataset)))
    np.testing.assert_allclose(restored.transform(samples.X[samples.runs == 0]), latents, atol=1e-4)


def test_the_same_inputs_give_identical_outputs(example_dataset, tmp_path):
    options = EmbeddingOptions(embedder=("pca:latents=3",), samples="trs")
    outputs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        outputs.append(fit_embedding(out_dir=tmp_path / name, options=options,
                                     fmri=FMRIOptions(roi=latent_roi(example_dataset)),
                                     stats=StatsOptions(n_permutations=20), **faces_runs(example_dataset)))
    first, second = outputs
    for a, b in zip(first, second):
        with open(a.in_file, "rb") as fa, open(b.in_file, "rb") as fb:
            assert fa.read() == fb.read(), a.in_file
        assert json.dumps(a.metadata, default=str) == json.dumps(b.metadata, default=str)


def test_volume_samples_are_labelled_by_the_condition_peaking_in_them(tmp_path):
    events = tmp_path / "events.tsv"
    pd.DataFrame({"onset": [0.0, 10.0], "duration": [1.0, 4.0], "trial_type": ["a", "b"]}).to_csv(events, sep="\t",
                                                                                                  index=False)
    conditions = volume_conditions(events, "trial_type", 12, 2.0)
    # a at 0 s peaks at 5 s (volume 3 at 6 s is past 5 + max(1, TR)); b at 10 s covers 15-19 s (volumes 8 and 9)
    assert conditions.tolist() == ["n/a"] * 3 + ["a"] + ["n/a"] * 4 + ["b", "b"] + ["n/a"] * 2
    assert volume_conditions(events, "missing", 3, 2.0).tolist() == ["n/a"] * 3


def test_a_single_run_validates_on_its_last_fifth():
    train, validation = validation_split(np.zeros(10, int))
    assert validation.tolist() == [False] * 8 + [True] * 2 and (train == ~validation).all()
    train, validation = validation_split(np.repeat([0, 1, 2], 4))
    assert validation.tolist() == [False] * 8 + [True] * 4


def test_an_atlas_label_chooses_the_region_by_name(example_dataset, tmp_path):
    truth = load_truth(example_dataset, "01", "faces")
    reference = nib.load(latent_roi(example_dataset))
    labels = truth["face"].astype(np.int16) + 2 * truth["latent"].astype(np.int16)
    atlas = tmp_path / "atlas_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels, reference.affine), atlas)
    pd.DataFrame({"index": [1, 2], "name": ["rightFusiform", "leftFusiform"]}).to_csv(
        tmp_path / "atlas_dseg.tsv", sep="\t", index=False)
    (tmp_path / "out").mkdir()
    outputs = fit_embedding(out_dir=tmp_path / "out", **faces_runs(example_dataset),
                            options=EmbeddingOptions(embedder=("pca:latents=2",), region="leftfusiform"),
                            fmri=FMRIOptions(atlas=str(atlas)), stats=StatsOptions(n_permutations=0))
    region = outputs[0].metadata["Region"]
    assert region == {"Name": "label leftFusiform of atlas_dseg.nii.gz", "NVoxels": 38}
    with pytest.raises(UserError, match="no label called 'insula'"):
        fit_embedding(out_dir=tmp_path / "out", **faces_runs(example_dataset),
                      options=EmbeddingOptions(region="insula"), fmri=FMRIOptions(atlas=str(atlas)))


def test_too_few_voxels_or_too_many_latents_are_clear_errors(example_dataset, tmp_path):
    reference = nib.load(latent_roi(example_dataset))
    tiny = np.zeros(reference.shape, np.uint8)
    for i, j, k in np.argwhere(np.asarray(reference.dataobj))[:3]:
        tiny[i, j, k] = 1
    roi = tmp_path / "tiny_mask.nii.gz"
    nib.save(nib.Nifti1Image(tiny, reference.affine), roi)
    with pytest.raises(UserError, match="too few to learn") as err:
        fit_embedding(out_dir=tmp_path, **faces_runs(example_dataset), fmri=FMRIOptions(roi=str(roi)))
    assert "tiny_mask.nii.gz" in str(err.value)
    with pytest.raises(UserError, match="asks for 64 latents but has only 40 training samples"):
        fit_embedding(out_dir=tmp_path, **faces_runs(example_dataset),
                      options=EmbeddingOptions(embedder=("pca:latents=64",)), fmri=FMRIOptions(roi=latent_roi(example_dataset)))
    with pytest.raises(UserError, match="no brain embedder called 'umap'.*pca"):
        fit_embedding(out_dir=tmp_path, **faces_runs(example_dataset),
                      options=EmbeddingOptions(embedder=("umap",)), fmri=FMRIOptions(roi=latent_roi(example_dataset)))
    with pytest.raises(UserError, match="no --atlas"):
        check_region(EmbeddingOptions(region="leftFusiform"), FMRIOptions())
