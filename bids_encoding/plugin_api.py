"""Everything a plugin needs from bids-encoding, in one import.

Plugins import only this module; its names are the stable plugin API::

    from bids_encoding.plugin_api import hookimpl, FeatureExtractor, FeatureSet, Option, Words

    class WordCount(FeatureExtractor):
        name = "wordcount"
        modality = "text"
        description = "One per word"
        options = {"scale": Option(1.0, "multiply every value by this")}

        def extract(self, stimuli: Words) -> FeatureSet:
            return FeatureSet.single(stimuli, np.full((len(stimuli), 1), self.scale), ["count"])

    @hookimpl
    def register_feature_extractors(register):
        register(WordCount)

A plugin raises :class:`UserError` (``problem``, ``path``, ``fix``) for input a user
can correct (a missing model folder, an empty transcript); any other exception is
reported as the plugin failing. Long loops (batches of a model, training epochs) show
their progress with :func:`track` or :class:`Step` (a bar on a terminal, a few log lines
elsewhere, and a summary line with the wall time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .features import frame_features, run_extractor
from .plugins.hookspecs import hookimpl
from .plugins.registry import installed_plugins, instantiate
from .plugins.types import (BrainEmbedder, FeatureExtractor, FeatureSet, Option, int_list, layer_indices,
                            str_list)
from .progress import Step, track
from .stimuli import (Audio, Images, Stimuli, Trials, Video, Words, sentences_from_punctuation, stimuli_for,
                      stimuli_from_events)

__all__ = [
    "hookimpl",
    "FeatureExtractor",
    "BrainEmbedder",
    "FeatureSet",
    "Option",
    "int_list",
    "str_list",
    "layer_indices",
    "extract_features",
    "feature_extractor",
    "load_plugin",
    "words_from_text",
    "stimuli_from_events",
    "EXAMPLE_TEXT",
    "example_images",
    "UserError",
    "track",
    "Step",
    "Stimuli",
    "Words",
    "Images",
    "Audio",
    "Video",
    "Trials",
]

EXAMPLE_TEXT = Path(__file__).parent / "data" / "story.txt"
"""An original short story shipped with bids-encoding (the example dataset's ``lpp`` task): a small default corpus."""


def example_images(n: int = 20, seed: int = 0) -> list[tuple[str, Any]]:
    """``n`` drawn greyscale faces, each followed by its block-scrambled version, as the example dataset's faces
    task shows them: ``[("face", image), ("scrambled", image), ...]`` (PIL images, 64 x 64). A small default image
    set for testing an image extractor offline, as :data:`EXAMPLE_TEXT` is for text."""
    from .example import draw_face, scramble

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        face = draw_face(rng)
        images += [("face", face), ("scrambled", scramble(face, rng))]
    return images


def words_from_text(text: str, rate: float = 3.0) -> Words:
    """The words of a text (split on white space, punctuation kept), one every ``1 / rate`` s, sentences from
    punctuation: stimuli for running a text extractor on a corpus rather than on a run's events."""
    tokens = tuple(text.split())
    return Words(onset=np.arange(len(tokens)) / rate, duration=np.zeros(len(tokens)), text=tokens,
                 sentence=sentences_from_punctuation(tokens), source="corpus")


def load_plugin(spec: str, kind: str = "feature extractor") -> tuple[Any, dict[str, str]]:
    """An installed plugin's object configured from a spec (``gpt2:layers=6``), found exactly as the app finds it
    (entry points, the same option parsing and errors), and its provenance (name, distribution, version).

    For plugin tests: ``extractor, about = load_plugin("vowelcount")`` checks that the plugin is installed,
    registered under its name and accepts its options. ``kind`` is ``"feature extractor"`` or ``"brain embedder"``.
    """
    plugin, entry = instantiate(spec, installed_plugins(), kind)
    return plugin, entry.provenance()


def feature_extractor(spec: str) -> tuple[FeatureExtractor, dict[str, str]]:
    """Another installed feature extractor, configured from a spec such as ``gpt2:layers=6`` (not run), and
    its provenance (name, distribution, version) for sidecars.

    For extractors built on others' features, which need the source's modality (or a clear
    error for a bad source) before anything runs. An unknown name or option is a :class:`UserError`.
    """
    return load_plugin(spec)


def extract_features(spec: str, stimuli: Stimuli) -> FeatureSet:
    """Run an installed feature extractor, named by a spec such as ``gpt2:layers=6``, on ``stimuli``, with the
    host's checks of its output (rows, finite values, labels).

    An image extractor given :class:`Video` runs on its frames at the spec's ``fps`` and returns continuous
    features, as in the app. Errors in the spec or in the extractor are :class:`UserError`.
    """
    extractor, entry = instantiate(spec, installed_plugins())
    source = stimuli_for(extractor.modality, (stimuli.modality,))
    if source is None:
        raise UserError(f"feature extractor '{entry.name}' reads {extractor.modality} stimuli, not {stimuli.modality}",
                        fix="Name a source extractor of the same modality as the stimuli")
    if source != extractor.modality:
        return frame_features(extractor, entry, stimuli, extractor.fps)
    return run_extractor(extractor, entry, stimuli)
