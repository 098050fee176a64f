import numpy as np

from bids_encoding.plugin_api import Trials, load_plugin
from bids_encoding_trialtype import TrialType

TRIALS = Trials(onset=np.arange(4.0), duration=np.ones(4), trial_type=("face", "scrambled", "face", "house"))


def test_one_column_per_level_sorted():
    features = TrialType().extract(TRIALS)
    assert features.columns[""] == ["face", "house", "scrambled"]
    assert features.spaces[""].tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_levels_option_fixes_order_and_subset():
    extractor, about = load_plugin("trialtype:levels=scrambled,face")
    assert isinstance(extractor, TrialType) and about["Distribution"] == "bids-encoding-trialtype"
    features = extractor.extract(TRIALS)
    assert features.columns[""] == ["scrambled", "face"]
    assert features.spaces[""][3].tolist() == [0, 0]
