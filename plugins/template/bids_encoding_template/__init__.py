"""A template bids-encoding plugin: vowel and consonant counts per word.

A plugin is a module with ``@hookimpl`` functions named after the hooks in
``bids_encoding.plugins.hookspecs``. Everything it needs comes from ``bids_encoding.plugin_api``.
"""

from __future__ import annotations

import numpy as np

from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option, Words, hookimpl


class VowelCount(FeatureExtractor):
    # The name users type after --features (lowercase letters and digits).
    name = "vowelcount"
    # Which stimuli it reads: "text" gives Words, "image" gives Images, "trials" gives Trials.
    modality = "text"
    description = "Vowels and consonants per word"
    # Options users set as --features vowelcount:vowels=aeiouy. Each becomes an attribute.
    options = {"vowels": Option("aeiou", "the letters counted as vowels")}

    def extract(self, stimuli: Words) -> FeatureSet:
        """One row per word: [vowels, consonants]."""
        vowels = set(self.vowels.lower())
        rows = []
        for word in stimuli.text:
            letters = [ch for ch in word.lower() if ch.isalpha()]
            n_vowels = sum(ch in vowels for ch in letters)
            rows.append([n_vowels, len(letters) - n_vowels])
        return FeatureSet.single(stimuli, np.array(rows, float).reshape(len(stimuli), 2), ["vowels", "consonants"])


@hookimpl
def register_feature_extractors(register):
    """Called once by bids-encoding; register every extractor class this plugin provides."""
    register(VowelCount)
