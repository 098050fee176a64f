"""Tiny randomly initialised vision models saved locally (loaded like hub models), and real image files."""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> str:
    """A 4-stage ResNet (8-32 channels) with a processor that resizes to 32 x 32: 5 hidden states."""
    from bids_encoding_cnn.tiny import build_resnet

    return str(build_resnet(tmp_path_factory.mktemp("tiny_resnet")))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """A 2-block ViT on 32 x 32 images, 8 x 8 patches: a CLS token and a 4 x 4 grid of patch tokens."""
    from bids_encoding_cnn.tiny import build_vit

    return str(build_vit(tmp_path_factory.mktemp("tiny_vit")))


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Six random-noise RGB images of assorted sizes, as PNG and JPEG files."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate([(40, 60), (64, 64), (33, 20), (80, 50), (64, 64), (48, 48)]):
        path = folder / f"photo{index}.{'jpg' if index % 3 == 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return tuple(paths)


@pytest.fixture(scope="session")
def example_bids(tmp_path_factory):
    """The built-in example dataset with one subject (its faces task has 40 drawn greyscale PNGs)."""
    from bids_encoding.example import write_example_dataset

    root = tmp_path_factory.mktemp("example") / "bids"
    write_example_dataset(root, n_subjects=1)
    return root
