from importlib import metadata

import numpy as np
import pytest

from bids_encoding.plugin_api import Words, load_plugin
from bids_encoding_template import VowelCount

WORDS = Words(onset=np.arange(3.0), duration=np.ones(3), text=("Sky", "forest.", "aye"))


def installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_counts_vowels_and_consonants():
    features = VowelCount().extract(WORDS)
    features.check(3)
    assert features.spaces[""].tolist() == [[0, 3], [2, 4], [2, 1]]


def test_vowels_option():
    assert VowelCount(vowels="aeiouy").extract(WORDS).spaces[""][0].tolist() == [1, 2]


@pytest.mark.skipif(not installed("bids-encoding-template"), reason="not installed: pip install -e plugins/template")
def test_found_through_its_entry_point():
    extractor, about = load_plugin("vowelcount:vowels=aeiouy")  # as --features vowelcount:vowels=aeiouy finds it
    assert isinstance(extractor, VowelCount) and extractor.vowels == "aeiouy"
    assert about == {"Name": "vowelcount", "Distribution": "bids-encoding-template",
                     "Version": metadata.version("bids-encoding-template")}
