"""Tiny randomly initialised vision models saved locally (loaded like hub models), and real image files."""

import os

import numpy as np
import pytest

from bids_encoding.plugin_api import example_images

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
def faces(tmp_path_factory):
    """A run of 40 trials, as a BIDS events file and its stimuli folder: 20 drawn greyscale faces and their
    block-scrambled versions (64 x 64 PNGs), each shown once for 1 s in random order (trial_type face or
    scrambled, stim_file relative to the stimuli folder). Returns (events file, stimuli folder)."""
    root = tmp_path_factory.mktemp("faces")
    stimuli_dir = root / "stimuli"
    (stimuli_dir / "faces").mkdir(parents=True)
    trials = []
    for i, (kind, img) in enumerate(example_images(20, seed=0)):
        name = f"faces/{kind}{i // 2 + 1:02d}.png"
        img.save(stimuli_dir / name)
        trials.append((kind, name))
    order = np.random.default_rng(0).permutation(len(trials))
    lines = ["onset\tduration\ttrial_type\tstim_file"]
    lines += [f"{4 + 3 * n:.1f}\t1.0\t{trials[i][0]}\t{trials[i][1]}" for n, i in enumerate(order)]
    events = root / "sub-01_task-faces_run-1_events.tsv"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return events, stimuli_dir
