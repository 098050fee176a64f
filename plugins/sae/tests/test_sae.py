"""The sparse autoencoder: planted dictionaries recovered, determinism, early stopping, options, and both plugins.

Every problem here is small (hundreds of samples, tens of dimensions) so each test takes about
a second on a busy 2-core machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_encoding.plugin_api import UserError, Words, load_plugin
from bids_encoding_sae import SAEEmbedder, SAEFeatures
from bids_encoding_sae.features import dictionaries
from bids_encoding_sae.model import ACTIVE

FAST = dict(lr=1e-2, batch_size=64, epochs=300, patience=10)  # converges in ~50-150 epochs on the planted data


def planted(n=400, d=40, atoms=8, seed=0, noise=0.05):
    """Samples made of 1-2 of ``atoms`` unit-norm directions with positive weights (1 to 3), plus noise."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((atoms, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = np.zeros((n, atoms))
    for row in A:
        chosen = rng.choice(atoms, size=rng.integers(1, 3), replace=False)
        row[chosen] = rng.uniform(1, 3, len(chosen))
    return (A @ D + noise * rng.standard_normal((n, d))).astype(np.float32), D


@pytest.fixture(scope="module")
def data():
    X, D = planted()
    return {"train": X[:300], "val": X[300:350], "test": X[350:], "atoms": D}


def r2(embedder, X, mean):
    residual = X - embedder.inverse_transform(embedder.transform(X))
    return 1 - float((residual ** 2).sum() / ((X - mean) ** 2).sum())


def active(Z):
    return (np.asarray(Z) > ACTIVE).sum(1)


@pytest.fixture(scope="module")
def topk(data):
    return SAEEmbedder(latents=16, k=2, **FAST).fit(data["train"], data["val"], seed=0)


# --------------------------------------------------------------------------- the embedder on planted truth


def test_topk_recovers_the_planted_atoms_and_reconstructs_held_out_samples(topk, data):
    W = topk.get_weights()["W_dec"]
    assert W.shape == (40, 16) and W.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1, atol=1e-5)  # unit-norm decoder columns
    best = np.abs(data["atoms"] @ W).max(axis=1)  # each true atom's best-matching decoder column
    assert best.min() > 0.9, best
    assert r2(topk, data["test"], data["train"].mean(0)) > 0.9
    info = topk.info_
    assert info["ValidationR2"] > 0.9 and info["HeldOut"] == "given" and info["TrainingSamples"] == 300
    assert {"Epochs", "BestEpoch", "StoppedEarly", "TrainLoss", "ValidationMSE", "DeadLatents"} <= set(info)


def test_topk_codes_have_at_most_k_active_latents_and_mostly_exactly_k(topk, data):
    counts = active(topk.transform(data["test"]))
    assert counts.max() <= 2
    assert (counts == 2).mean() > 0.9  # fewer only when one of the k largest pre-activations is negative


def test_l1_reconstructs_well_with_sparse_codes(data):
    l1 = SAEEmbedder(latents=16, sparsity="l1", **FAST).fit(data["train"], data["val"], seed=0)
    assert r2(l1, data["test"], data["train"].mean(0)) > 0.9
    counts = active(l1.transform(data["test"]))
    assert counts.mean() < 4  # of 16 latents; the truth has 1.5 on average
    assert np.abs(data["atoms"] @ l1.get_weights()["W_dec"]).max(axis=1).min() > 0.9
    assert l1.info_["Sparsity"] == "l1" and l1.info_["L1"] == 0.1


# --------------------------------------------------------------------------- determinism and weights


def test_same_seed_gives_identical_weights_and_another_seed_different_ones(data):
    def weights(seed):
        return SAEEmbedder(latents=8, k=2, **{**FAST, "epochs": 15}).fit(data["train"], data["val"], seed=seed).get_weights()

    first, again, other = weights(3), weights(3), weights(4)
    assert set(first) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    for name in first:
        assert first[name].dtype == np.float32
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["W_dec"], other["W_dec"])


@pytest.mark.slow
def test_a_problem_large_enough_for_threads_is_deterministic_too():
    from bids_encoding_sae.model import SMALL_PRODUCT

    X = np.random.default_rng(0).standard_normal((330, 2000)).astype(np.float32)
    assert 256 * 2000 * 64 >= SMALL_PRODUCT  # trained with torch's own thread count, not one thread
    first, again = (SAEEmbedder(latents=64, k=8, epochs=2).fit(X[:300], X[300:], seed=1).get_weights() for _ in range(2))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])


def test_training_leaves_torchs_global_state_alone(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    SAEEmbedder(latents=8, k=2, **{**FAST, "epochs": 3}).fit(data["train"], seed=0)  # a small problem: one thread
    assert torch.equal(torch.rand(3), expected)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.get_num_threads() == threads and torch.utils.deterministic.fill_uninitialized_memory == fill


def test_set_weights_on_a_fresh_instance_restores_the_same_transform(topk, data):
    fresh = SAEEmbedder(latents=16, k=2, **FAST).set_weights(topk.get_weights())
    np.testing.assert_array_equal(fresh.transform(data["test"]), topk.transform(data["test"]))
    Z = topk.transform(data["test"])
    np.testing.assert_array_equal(fresh.inverse_transform(Z), topk.inverse_transform(Z))
    with pytest.raises(UserError, match="latents"):
        SAEEmbedder(latents=8, k=2).set_weights(topk.get_weights())


def test_fitted_as_the_host_configures_it_from_its_spec(data):
    embedder, about = load_plugin("sae:latents=16,k=2,lr=0.01,batch_size=64,patience=10", "brain embedder")
    assert isinstance(embedder, SAEEmbedder) and about["Distribution"] == "bids-encoding-sae"
    assert embedder.fit(data["train"], data["val"], seed=0) is embedder
    Z = np.asarray(embedder.transform(data["val"]))
    assert Z.shape == (len(data["val"]), 16) and np.all(np.isfinite(Z))  # what the host checks of every code
    assert r2(embedder, data["test"], data["train"].mean(0)) > 0.9


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_stops_before_epochs_and_restores_the_best_validation_loss():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 12)).astype(np.float32)  # noise: the validation loss soon stops improving
    embedder = SAEEmbedder(latents=8, k=2, lr=1e-2, batch_size=16, epochs=2000, patience=5).fit(X[:60], X[60:], seed=0)
    info, history = embedder.info_, embedder.history_["validation"]
    assert info["StoppedEarly"] and info["Epochs"] < 2000 and len(history) == info["Epochs"]
    assert info["BestEpoch"] == int(np.argmin(history)) + 1 < info["Epochs"]
    assert info["ValidationMSE"] == pytest.approx(min(history), rel=1e-6)
    restored = float(((X[60:] - embedder.inverse_transform(embedder.transform(X[60:]))) ** 2).mean())
    assert restored == pytest.approx(min(history), rel=1e-5)
    assert restored < history[-1]  # the last epoch's weights were worse, and were not kept


def test_without_validation_samples_the_last_tenth_is_held_out(data):
    embedder = SAEEmbedder(latents=8, k=2, **{**FAST, "epochs": 5}).fit(data["train"], seed=0)
    assert embedder.info_["TrainingSamples"] == 270 and embedder.info_["ValidationSamples"] == 30
    assert embedder.info_["HeldOut"] == "the last 30 training samples"


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("spec, match", [
    ("sae:latents=4,k=5", "k=5"),
    ("sae:sparsity=lasso", "sparsity"),
    ("sae:latents=0", "latents"),
    ("sae:lr=-1", "lr"),
])
def test_bad_options_are_user_errors_when_the_spec_is_read(spec, match):
    with pytest.raises(UserError, match=match):
        load_plugin(spec, "brain embedder")


def test_bad_options_given_directly_are_user_errors(data):
    with pytest.raises(UserError, match="k=9"):
        SAEEmbedder(latents=8, k=9)
    with pytest.raises(UserError, match="sparsity"):
        SAEEmbedder(sparsity="lasso")
    with pytest.raises(UserError, match="50 latents but has only 20 training samples"):
        SAEEmbedder(latents=50, k=2).fit(data["train"][:20], data["val"])
    with pytest.raises(UserError, match="NaN"):
        SAEEmbedder(latents=4, k=2).fit(np.full((20, 3), np.nan, np.float32))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: device=cuda is valid here")
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="no CUDA GPU"):
        SAEEmbedder(device="cuda")
    with pytest.raises(UserError, match="not a device"):
        SAEEmbedder(device="tpu")


# --------------------------------------------------------------------------- the plugin, as installed


def test_both_classes_are_found_through_the_installed_entry_point():
    embedder, embedder_about = load_plugin("sae", "brain embedder")
    extractor, extractor_about = load_plugin("sae:source=glove")  # a feature extractor needs its source
    assert type(embedder) is SAEEmbedder and type(extractor) is SAEFeatures
    assert embedder_about["Distribution"] == extractor_about["Distribution"] == "bids-encoding-sae"
    assert embedder_about["Name"] == extractor_about["Name"] == "sae"
    assert embedder_about["Version"] == extractor_about["Version"]
    assert SAEEmbedder.options["sparsity"] is SAEFeatures.options["sparsity"]
    assert (SAEEmbedder.options["k"].default, SAEFeatures.options["k"].default) == (8, 16)


# --------------------------------------------------------------------------- the feature extractor


VOCABULARY = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """A GloVe-format file of random 20-d vectors for the vocabulary, and a 400-word corpus drawn from it."""
    folder = tmp_path_factory.mktemp("sae_glove")
    rng = np.random.default_rng(0)
    glove = folder / "tiny.glove.txt"
    glove.write_text("".join(w + " " + " ".join(f"{v:.5f}" for v in rng.standard_normal(20)) + "\n" for w in VOCABULARY))
    corpus = folder / "corpus.txt"
    corpus.write_text(" ".join(rng.choice(VOCABULARY, 400)) + "\n", encoding="utf-8")
    return glove, corpus


def words(*text):
    return Words(onset=np.arange(len(text), dtype=float), duration=np.zeros(len(text)), text=tuple(text))


def sae_spec(vectors, **extra):
    glove, corpus = vectors
    options = {"corpus": corpus, "latents": 32, "k": 4, "lr": 0.01, "batch_size": 64, "epochs": 100, "patience": 5, **extra}
    return f"sae:source=glove:path={glove}+lowercase=true," + ",".join(f"{k}={v}" for k, v in options.items())


def test_features_code_every_run_with_one_dictionary_learned_on_the_corpus(vectors):
    dictionaries.cache_clear()
    extractor, about = load_plugin(sae_spec(vectors))
    assert about["Distribution"] == "bids-encoding-sae" and extractor.modality == "text"
    run1 = words("w1", "w2", "w3", "w1", "w39", "w7")
    run2 = words("w5", "w1", "w20", "w3", "w3")
    first = extractor.extract(run1)
    first.check(len(run1))
    assert list(first.spaces) == [""] and first.spaces[""].shape == (6, 32)
    assert first.columns[""] == [f"latent{i:03d}" for i in range(32)]
    np.testing.assert_array_equal(first.onset, run1.onset)

    again = extractor.extract(run1)
    np.testing.assert_array_equal(again.spaces[""], first.spaces[""])
    # another run, coded by another instance: the same dictionary (trained once), so the same word, the same code
    second = load_plugin(sae_spec(vectors))[0].extract(run2)
    assert dictionaries.cache_info().misses == 1
    np.testing.assert_array_equal(second.spaces[""][1], first.spaces[""][0])  # w1
    np.testing.assert_array_equal(second.spaces[""][3], first.spaces[""][2])  # w3
    assert not np.array_equal(first.spaces[""][0], first.spaces[""][1])
    counts = active(np.vstack([first.spaces[""], second.spaces[""]]))
    assert counts.max() <= 4 and (counts == 4).mean() > 0.8

    space = first.info["spaces"][""]
    assert space["CorpusRows"] == 400 and space["TrainingSamples"] == 360 and space["ValidationSamples"] == 40
    assert space["ValidationR2"] > 0.3 and 0 <= space["DeadLatents"] < 32
    assert first.info["source"].startswith("glove:path=") and first.info["source_info"]["n_oov"] == 0


def test_another_seed_or_corpus_trains_another_dictionary(vectors, tmp_path):
    dictionaries.cache_clear()
    run = words("w1", "w2")
    base = load_plugin(sae_spec(vectors))[0].extract(run).spaces[""]
    reseeded = load_plugin(sae_spec(vectors, seed=1))[0].extract(run).spaces[""]
    other = tmp_path / "other.txt"
    other.write_text(" ".join(VOCABULARY * 8), encoding="utf-8")
    recorpus = load_plugin(sae_spec(vectors, corpus=other))[0].extract(run).spaces[""]
    assert dictionaries.cache_info().misses == 3
    assert not np.array_equal(base, reseeded) and not np.array_equal(base, recorpus)


def test_feature_extractor_errors(vectors, tmp_path):
    glove, corpus = vectors
    with pytest.raises(UserError, match="does not exist"):
        SAEFeatures(source=f"glove:path={glove}", corpus=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="no feature extractor called 'nosuch'"):
        SAEFeatures(source="nosuch", corpus=str(corpus))
    with pytest.raises(UserError, match="needs source="):
        SAEFeatures()
    with pytest.raises(UserError, match="corpus=FOLDER"):
        SAEFeatures(source="cnn")  # an image source has no default corpus
    with pytest.raises(UserError, match="text or image"):
        SAEFeatures(source="trialtype")
    with pytest.raises(UserError, match="k=40"):
        SAEFeatures(source=f"glove:path={glove}", corpus=str(corpus), latents=32, k=40)
    with pytest.raises(UserError, match="500 latents .* only 360 training samples"):
        SAEFeatures(source=f"glove:path={glove}", corpus=str(corpus), latents=500).extract(words("w1"))
    empty = tmp_path / "empty_images"
    empty.mkdir()
    with pytest.raises(UserError, match="no .png"):
        SAEFeatures(source="cnn", corpus=str(empty))
    assert SAEFeatures(source=f"glove:path={glove}").corpus == ""  # text: the story shipped with the core


def test_an_image_source_takes_the_image_modality_and_a_folder_corpus(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    extractor = SAEFeatures(source="cnn", corpus=str(tmp_path))
    assert extractor.modality == "image" and SAEFeatures.modality == "text"
    from bids_encoding_sae.features import corpus_files

    assert [p.name for p in corpus_files("image", str(tmp_path))[1]] == ["img0.png", "img1.png", "img2.png"]
