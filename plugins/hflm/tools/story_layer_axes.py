"""Write bids_encoding/data/story_layers.tsv: each word of the example story's runs, projected from two
``minilm`` layers on a fixed random axis.

The example dataset plants a layer gradient in task ``lpp``: a ``shallow`` sphere follows
layer SHALLOW and a ``deep`` sphere layer DEEP of all-MiniLM-L6-v2, so that a layer sweep has a
known truth (each sphere's best layer). A contextual model gives the same word different
features in different places, so the table has one row per word of each run (not per word
type), extracted exactly as the app extracts a run's words (the ``minilm`` extractor with its
default options, one run's words at a time). Each layer has its own seeded random unit axis.
The hflm plugin's tests recompute the table and compare it with the shipped file.

    .venv/bin/python plugins/hflm/tools/story_layer_axes.py > bids_encoding/data/story_layers.tsv
"""

import sys

import numpy as np
import pandas as pd

from bids_encoding.example import TASKS, read_story, split_parts, split_sentences
from bids_encoding.plugin_api import Words, extract_features

AXIS_SEED = 2025
SHALLOW, DEEP = 0, 5  # layers as the extractor numbers them (0: embeddings); each wins its own sphere


def run_words() -> list[tuple[str, ...]]:
    """The words of each run of task lpp, as the example writes them to its events files."""
    parts = split_parts(split_sentences(read_story()), TASKS["lpp"].n_runs)
    return [tuple(word for sentence in part for word in sentence) for part in parts]


def layer_axes_table(layers: tuple[int, ...] = (SHALLOW, DEEP)) -> pd.DataFrame:
    rows = []
    for run, words in enumerate(run_words(), start=1):
        stimuli = Words(onset=np.arange(len(words), dtype=float), duration=np.zeros(len(words)), text=words)
        spaces = extract_features("minilm", stimuli).spaces
        table = pd.DataFrame({"run": run, "position": np.arange(len(words)), "word": words})
        for layer in layers:
            values = spaces[f"L{layer}"].astype(np.float64)
            axis = np.random.default_rng([AXIS_SEED, layer]).standard_normal(values.shape[1])
            table[f"L{layer}"] = np.round(values @ (axis / np.linalg.norm(axis)), 4)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


if __name__ == "__main__":
    layer_axes_table().to_csv(sys.stdout, sep="\t", index=False)
