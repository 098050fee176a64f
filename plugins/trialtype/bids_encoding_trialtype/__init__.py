"""One-hot features of the events' trial_type."""

from __future__ import annotations

import numpy as np

from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option, Trials, hookimpl, str_list


class TrialType(FeatureExtractor):
    name = "trialtype"
    modality = "trials"
    description = "One-hot of trial_type: one column per level"
    options = {"levels": Option(None, "levels to use, in order (default: all present, sorted)", type=str_list)}

    def extract(self, stimuli: Trials) -> FeatureSet:
        levels = list(self.levels) if self.levels else sorted(set(stimuli.trial_type))
        values = np.array([[float(t == level) for level in levels] for t in stimuli.trial_type]).reshape(len(stimuli), len(levels))
        return FeatureSet.single(stimuli, values, levels)


@hookimpl
def register_feature_extractors(register):
    register(TrialType)
