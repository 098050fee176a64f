"""RSA on real data with a published result: the 92 object images of Kriegeskorte et al. (2008).

EfficientNet-Lite0's real ImageNet weights (the ``cnn`` plugin, loaded as the app loads it) give each image
the global average pool of its last stage; their correlation-distance RDM, made and compared by
``bids_encoding.models.rsa``, correlates with the human inferior-temporal RDM (Spearman rho ~ 0.2 over the
upper triangle, tests/data/kriegeskorte2008-92objects/README.md), beyond the images' permutations, and keeps
animate images closer to each other than to inanimate ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_encoding.models import rsa
from bids_encoding.plugin_api import Images, extract_features

pytestmark = pytest.mark.slow  # ~25 s: the network runs on 92 images
DATA = Path(__file__).parents[1] / "data" / "kriegeskorte2008-92objects"


@pytest.fixture(scope="module")
def images() -> pd.DataFrame:
    return pd.read_csv(DATA / "stimuli.tsv", sep="\t")


@pytest.fixture(scope="module")
def model_rdm(images) -> np.ndarray:
    paths = tuple(DATA / f for f in images["stim_file"])
    features = extract_features("cnn:layers=7", Images(onset=np.arange(len(paths)) * 2.0,
                                                       duration=np.ones(len(paths)), path=paths))
    assert features.spaces["L7"].shape == (92, 320)  # stage 7 of EfficientNet-Lite0, pooled over space
    return rsa.correlation_rdm(features.spaces["L7"])


def mean_dissimilarity(rdm: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> float:
    block = rdm[np.ix_(rows, columns)]
    return float(block[np.triu_indices(len(block), 1)].mean() if rows is columns else block.mean())


def test_the_networks_rdm_matches_human_it_beyond_permutations_of_the_images(model_rdm):
    human_it = np.load(DATA / "rdm_hITvisStim_316vx.npy")
    rho, p = rsa.permutation_test(human_it, model_rdm, "spearman", n_permutations=1000, seed=0)
    print(f"Spearman rho of EfficientNet-Lite0 L7 and human IT: {rho:.3f}, permutation p = {p:.4f}")
    assert 0.1 < rho < 0.35  # the published figure is ~0.2
    assert p < 0.05


def test_animate_images_are_closer_to_each_other_than_to_inanimate_ones(model_rdm, images):
    animate = (images["animal"] == 1).to_numpy()
    within = mean_dissimilarity(model_rdm, animate, animate)
    between = mean_dissimilarity(model_rdm, animate, ~animate)
    print(f"model RDM: animate-animate {within:.3f}, animate-inanimate {between:.3f}")
    assert within < between
    human_it = np.load(DATA / "rdm_hITvisStim_316vx.npy")  # as in the brain (the dataset's known result)
    assert mean_dissimilarity(human_it, animate, animate) < mean_dissimilarity(human_it, animate, ~animate)
