"""Write bids_encoding/data/story_semantic.tsv: each story word's GloVe vector projected on a fixed axis.

The example dataset plants a "semantic" sphere whose response follows this value,
so that an encoding model of GloVe features has a known truth to recover. The axis
is a seeded random unit vector in the 50-d GloVe 6B space; words are looked up
exactly as the `glove` extractor looks them up (out-of-vocabulary words get 0).
The glove plugin's tests recompute the table and compare it with the shipped file.

    .venv/bin/python plugins/glove/tools/story_semantic_axis.py > bids_encoding/data/story_semantic.tsv
"""

import sys

import numpy as np
import pandas as pd

from bids_encoding.plugin_api import EXAMPLE_TEXT, Words
from bids_encoding_glove import GloVe

AXIS_SEED = 2024


def semantic_axis_table() -> pd.DataFrame:
    words = sorted(set(EXAMPLE_TEXT.read_text(encoding="utf-8").split()))  # the story's words, as written
    stimuli = Words(onset=np.arange(len(words), dtype=float), duration=np.zeros(len(words)), text=tuple(words))
    vectors = GloVe().extract(stimuli).spaces[""][:, :-1]  # the last column is the OOV indicator
    axis = np.random.default_rng(AXIS_SEED).standard_normal(vectors.shape[1])
    axis /= np.linalg.norm(axis)
    return pd.DataFrame({"word": words, "value": np.round(vectors @ axis, 4)})


if __name__ == "__main__":
    semantic_axis_table().to_csv(sys.stdout, sep="\t", index=False)
