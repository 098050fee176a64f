"""Language features through the real CLI: GloVe recovers the planted semantic sphere, a locally built GPT-2
runs end to end, features are written as BIDS _stim files, and a second run takes every feature from the cache."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_encoding.example import load_truth, read_story

from ..conftest import run_cli, snapshot
from .test_end_to_end import SPACE, statmap

pytestmark = pytest.mark.slow


def sidecar_of(path):
    return json.loads(path.with_name(path.name.split(".")[0] + ".json").read_text())


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> str:
    from bids_encoding_hflm.tiny import build_gpt2

    return str(build_gpt2(tmp_path_factory.mktemp("gpt2"), read_story(), vocab_size=400,
                          n_positions=64, n_embd=32, n_layer=2, n_head=2))


@pytest.fixture(scope="module")
def language_run(example_dataset, tmp_path_factory, tiny_gpt2):
    root = tmp_path_factory.mktemp("language")
    cache = root / "cache"
    features = ["glove", f"gpt2:model={tiny_gpt2};layers=2"]
    common = ["participant", "--participant-label", "01", "--task", "lpp", "-d", example_dataset / "derivatives/fmriprep",
              "--features", *features, "--feature-cache", cache]
    first = run_cli(example_dataset, root / "out1", *common, "-w", root / "work1")
    assert first.returncode == 0, first.stderr
    cached = snapshot(cache)
    second = run_cli(example_dataset, root / "out2", *common, "-w", root / "work2", "-v")
    assert second.returncode == 0, second.stderr
    return root, first, second, cached, snapshot(cache)


def test_glove_features_recover_the_planted_semantic_sphere(language_run, example_dataset):
    from scipy.stats import mannwhitneyu

    root = language_run[0]
    out = root / "out1"
    r2 = nib.load(statmap(out, "01", "lpp", "glove")).get_fdata()
    mask = nib.load(out / f"sub-01/func/sub-01_task-lpp_space-{SPACE}_desc-brain_mask.nii.gz").get_fdata() > 0
    truth = load_truth(example_dataset, "01", "lpp")
    target = truth["semantic"] & mask
    rest = mask & ~np.any(list(truth.values()), axis=0)
    assert target.sum() > 5
    assert np.median(r2[target]) > np.percentile(r2[rest], 99) and np.median(r2[target]) > 0.05
    assert mannwhitneyu(r2[target], r2[rest]).statistic / (target.sum() * rest.sum()) > 0.97
    details = sidecar_of(statmap(out, "01", "lpp", "glove"))["Features"]["Details"]
    assert details["n_words"] > 100 and details["n_oov"] == 0 and "GloVe 6B 50d" in details["vectors"]


def test_the_language_model_runs_end_to_end_with_layers_and_surprisal(language_run):
    out = language_run[0] / "out1"
    for desc in ("gpt2L2", "gpt2surprisal", "joint"):
        assert statmap(out, "01", "lpp", desc).exists(), desc
    sidecar = sidecar_of(statmap(out, "01", "lpp", "gpt2surprisal", "splitRSquare"))
    assert sidecar["JointModel"] == ["glove", "gpt2L2", "gpt2surprisal"]
    model = sidecar["Features"][1]["Details"]["LanguageModel"]
    assert model["Causal"] and model["Layers"] == [2] and model["Windows"] > 1


def test_features_are_written_as_bids_stim_files(language_run):
    out = language_run[0] / "out1"
    stim = out / "sub-01/func/sub-01_task-lpp_run-2_recording-glove_stim.tsv.gz"
    sidecar = sidecar_of(stim)
    values = np.loadtxt(stim, delimiter="\t")
    assert values.shape == (200, 51) and len(sidecar["Columns"]) == 51 and sidecar["Columns"][-1] == "oov"
    assert sidecar["SamplingFrequency"] == 0.5 and sidecar["StartTime"] == 0
    assert sidecar["Sources"] == ["bids:raw:sub-01/func/sub-01_task-lpp_run-2_events.tsv"]
    assert (out / "sub-01/func/sub-01_task-lpp_run-1_recording-gpt2surprisal_stim.tsv.gz").exists()
    assert stim.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header time 0: the same numbers give the same bytes


def test_a_second_run_takes_every_feature_from_the_cache(language_run):
    root, first, second, cached, cached_after = language_run
    assert cached_after == cached  # nothing added or rewritten
    assert sum(name.endswith(".npz") for name in cached) == 6  # 3 runs x 2 extractors
    hits = [line for line in second.stderr.splitlines() if "from the cache" in line]
    assert len(hits) == 6
    for desc in ("glove", "gpt2L2"):
        a = nib.load(statmap(root / "out1", "01", "lpp", desc)).get_fdata()
        b = nib.load(statmap(root / "out2", "01", "lpp", desc)).get_fdata()
        np.testing.assert_array_equal(a, b)
