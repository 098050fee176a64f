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


def draw_face(rng: np.random.Generator, size: int = 64):
    """A simple frontal greyscale face with random proportions (hair, eyes, brows, nose, mouth), drawn at 4x and
    reduced for smooth edges: the kind of face the example dataset's faces task shows."""
    from PIL import Image, ImageDraw

    s = 4 * size
    img = Image.new("L", (s, s), 128)
    draw = ImageDraw.Draw(img)
    u = lambda v: v * s  # noqa: E731 - fractions of the image to pixels
    cx = 0.5 + rng.uniform(-0.03, 0.03)
    half_w, half_h = rng.uniform(0.27, 0.34), rng.uniform(0.36, 0.43)
    draw.ellipse([u(cx - half_w - 0.02), u(0.5 - half_h - 0.04), u(cx + half_w + 0.02), u(0.5 + 0.05)],
                 fill=int(rng.integers(20, 90)))  # hair
    draw.ellipse([u(cx - half_w), u(0.5 - half_h), u(cx + half_w), u(0.5 + half_h)], fill=int(rng.integers(170, 225)))
    eye_y, eye_dx = 0.45 + rng.uniform(-0.03, 0.03), rng.uniform(0.11, 0.15)
    eye_r, brow_lift = rng.uniform(0.03, 0.045), rng.uniform(0.05, 0.08)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse([u(ex - 1.6 * eye_r), u(eye_y - eye_r), u(ex + 1.6 * eye_r), u(eye_y + eye_r)], fill=245)
        draw.ellipse([u(ex - 0.8 * eye_r), u(eye_y - 0.8 * eye_r), u(ex + 0.8 * eye_r), u(eye_y + 0.8 * eye_r)], fill=30)
        tilt = side * rng.uniform(-0.02, 0.02)
        draw.line([u(ex - 0.07), u(eye_y - brow_lift + tilt), u(ex + 0.07), u(eye_y - brow_lift - tilt)],
                  fill=40, width=int(u(0.02)))
    nose_y = eye_y + rng.uniform(0.12, 0.17)
    draw.polygon([(u(cx), u(eye_y + 0.03)), (u(cx - 0.04), u(nose_y)), (u(cx + 0.04), u(nose_y))],
                 fill=int(rng.integers(140, 170)))
    mouth_y, mouth_w, smile = nose_y + rng.uniform(0.08, 0.11), rng.uniform(0.08, 0.13), rng.uniform(-0.04, 0.06)
    box = [u(cx - mouth_w), u(mouth_y - abs(smile) - 0.01), u(cx + mouth_w), u(mouth_y + abs(smile) + 0.01)]
    draw.arc(box, *((20, 160) if smile >= 0 else (200, 340)), fill=60, width=int(u(0.02)))
    return img.resize((size, size), Image.LANCZOS)


def scramble(img, rng: np.random.Generator, block: int = 8):
    """The same pixels with their ``block`` x ``block`` tiles shuffled: same luminance, no face."""
    from PIL import Image

    a = np.asarray(img)
    n = a.shape[0] // block
    tiles = a.reshape(n, block, n, block).swapaxes(1, 2).reshape(n * n, block, block)[rng.permutation(n * n)]
    return Image.fromarray(tiles.reshape(n, n, block, block).swapaxes(1, 2).reshape(a.shape))


@pytest.fixture(scope="session")
def faces(tmp_path_factory):
    """A run of 40 trials, as a BIDS events file and its stimuli folder: 20 drawn greyscale faces and their
    block-scrambled versions (64 x 64 PNGs), each shown once for 1 s in random order (trial_type face or
    scrambled, stim_file relative to the stimuli folder). Returns (events file, stimuli folder)."""
    root = tmp_path_factory.mktemp("faces")
    stimuli_dir = root / "stimuli"
    (stimuli_dir / "faces").mkdir(parents=True)
    rng = np.random.default_rng(0)
    trials = []
    for i in range(1, 21):
        face = draw_face(rng)
        for kind, img in (("face", face), ("scrambled", scramble(face, rng))):
            img.save(stimuli_dir / "faces" / f"{kind}{i:02d}.png")
            trials.append((kind, f"faces/{kind}{i:02d}.png"))
    order = rng.permutation(len(trials))
    lines = ["onset\tduration\ttrial_type\tstim_file"]
    lines += [f"{4 + 3 * n:.1f}\t1.0\t{trials[i][0]}\t{trials[i][1]}" for n, i in enumerate(order)]
    events = root / "sub-01_task-faces_run-1_events.tsv"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return events, stimuli_dir
