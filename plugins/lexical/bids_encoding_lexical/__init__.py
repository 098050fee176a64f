"""Lexical baseline features: word rate, word length and word frequency."""

from __future__ import annotations

import numpy as np

from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option, Words, hookimpl


def strip_punctuation(word: str) -> str:
    """The word without surrounding punctuation ("forest." -> "forest")."""
    return word.strip(".,;:!?\"'()[]{}«»“”‘’—–-…")


class WordRate(FeatureExtractor):
    name = "wordrate"
    modality = "text"
    description = "1 per word: on the TR grid, the number of words heard or read"

    def extract(self, stimuli: Words) -> FeatureSet:
        return FeatureSet.single(stimuli, np.ones((len(stimuli), 1)), ["wordrate"])


class WordLength(FeatureExtractor):
    name = "wordlength"
    modality = "text"
    description = "Length of each word"
    options = {
        "unit": Option("letters", "letters (alphabetic only) or characters (after stripping punctuation)",
                       choices=("letters", "characters")),
        "center": Option(True, "subtract the run's mean length, so the feature tracks how long words are rather "
                               "than how many there are (raw lengths are nearly collinear with word rate)"),
    }

    def extract(self, stimuli: Words) -> FeatureSet:
        if self.unit == "letters":
            lengths = np.array([sum(ch.isalpha() for ch in word) for word in stimuli.text], float)
        else:
            lengths = np.array([len(strip_punctuation(word)) for word in stimuli.text], float)
        if self.center:
            lengths -= lengths.mean()
        return FeatureSet.single(stimuli, lengths[:, None], [f"n_{self.unit}"])


class Frequency(FeatureExtractor):
    name = "frequency"
    modality = "text"
    description = "Zipf word frequency (wordfreq), with an out-of-vocabulary indicator"
    options = {"lang": Option("en", "language code understood by wordfreq")}

    def extract(self, stimuli: Words) -> FeatureSet:
        from wordfreq import zipf_frequency

        zipf = np.array([zipf_frequency(strip_punctuation(w).lower(), self.lang) for w in stimuli.text])
        oov = (zipf == 0).astype(float)
        return FeatureSet.single(stimuli, np.column_stack([zipf, oov]), ["zipf", "oov"], n_oov=int(oov.sum()))


@hookimpl
def register_feature_extractors(register):
    for extractor in (WordRate, WordLength, Frequency):
        register(extractor)
