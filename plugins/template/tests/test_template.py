import numpy as np

from bids_encoding.plugin_api import Words
from bids_encoding_template import VowelCount

WORDS = Words(onset=np.arange(3.0), duration=np.ones(3), text=("Sky", "forest.", "aye"))


def test_counts_vowels_and_consonants():
    features = VowelCount().extract(WORDS)
    features.check(3)
    assert features.spaces[""].tolist() == [[0, 3], [2, 4], [2, 1]]


def test_vowels_option():
    assert VowelCount(vowels="aeiouy").extract(WORDS).spaces[""][0].tolist() == [1, 2]
