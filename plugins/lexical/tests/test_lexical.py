import numpy as np

from bids_encoding.plugin_api import Words, load_plugin
from bids_encoding_lexical import Frequency, WordLength, WordRate

WORDS = Words(onset=np.arange(5.0), duration=np.full(5, 0.3), text=("The", "fox,", "jumped!", "zqxjv", "it's"))


def test_wordrate_is_one_per_word():
    features = WordRate().extract(WORDS)
    features.check(5)
    assert features.spaces[""].ravel().tolist() == [1] * 5


def test_wordlength_counts_letters_or_characters():
    assert WordLength(center=False).extract(WORDS).spaces[""].ravel().tolist() == [3, 3, 6, 5, 3]
    assert WordLength(unit="characters", center=False).extract(WORDS).spaces[""].ravel().tolist() == [3, 3, 6, 5, 4]


def test_wordlength_is_centred_by_default():
    assert WordLength().extract(WORDS).spaces[""].ravel().tolist() == [-1, -1, 2, 1, -1]


def test_frequency_knows_common_words_and_flags_unknown_ones():
    features = Frequency().extract(WORDS)
    zipf, oov = features.spaces[""].T
    assert zipf[0] > 7 and zipf[0] > zipf[2] > 0  # "the" is the most frequent English word
    assert oov.tolist() == [0, 0, 0, 1, 0] and features.info["n_oov"] == 1


def test_found_through_the_entry_point_with_options():
    for name, cls in [("wordrate", WordRate), ("wordlength", WordLength), ("frequency", Frequency)]:
        extractor, about = load_plugin(name)
        assert isinstance(extractor, cls) and about["Name"] == name
        assert about["Distribution"] == "bids-encoding-lexical"
    extractor, _ = load_plugin("wordlength:unit=characters")
    assert extractor.unit == "characters"
