"""The built-in example dataset: simulated fMRI with a planted signal.

``write_example_dataset(DIR)`` writes, in a few seconds, a small but complete
BIDS dataset (raw data, an fMRIPrep-like derivative, stimuli and the ground
truth) so that every part of bids-encoding can be tried and tested without
downloading anything. The BOLD data is simulated directly on nilearn's 6 mm
MNI152 brain-mask grid, so the raw and the "preprocessed" BOLD hold the same
values.

Three tasks (see :data:`TASKS`):

* ``lpp`` - listening to an original short story (``bids_encoding/data/story.txt``),
  one word per event, split into three consecutive runs;
* ``faces`` - procedurally drawn faces and their block-scrambled versions;
* ``blocks`` - one short run (84 volumes, no ``run-`` entity) of 16 s sound blocks
  alternating with 16 s of silence, with the strong slow drift of a real scanner: the
  case where drift removal and significance on short test folds matter most.

Planted signals (see :data:`PLANTED`; every planted regressor is built by
:func:`planted_regressor`):

* ``wordrate``   - left superior temporal sphere; an impulse of height 1 at the
  onset of every word;
* ``wordlength`` - left ventral occipito-temporal sphere; an impulse at every
  word onset whose height is the word's number of letters (``[A-Za-z]`` only,
  punctuation stripped) minus the run's mean number of letters per word, so
  that the region follows how long words are, not how many there are;
* ``semantic``   - left angular gyrus sphere; an impulse at every word onset
  whose height is the word's GloVe 6B 50d vector projected on a fixed random
  axis (``bids_encoding/data/story_semantic.tsv``, written by
  ``plugins/glove/tools/story_semantic_axis.py``) minus the run's mean, so that
  only a model of word meaning (GloVe features) explains it;
* ``ratelength`` - right angular gyrus sphere driven by word rate and word length alike:
  the sum of the ``wordrate`` and ``wordlength`` regressors, each scaled to unit variance
  after the removal of drifts below 0.01 Hz (the app's default high-pass, which takes more
  of the slower word rate), z-scored. Each feature space alone then explains the same
  share of the sphere's signal whatever the two regressors' correlation (about -0.15):
  the region where ``--compare wordrate:wordlength`` must find a tie;
* ``shallow`` and ``deep`` - a layer gradient: a left anterior temporal sphere that follows
  a shallow layer (``L0``, the embeddings) and a left inferior frontal sphere that follows a
  deep layer (``L5``) of the ``minilm`` extractor (all-MiniLM-L6-v2). An impulse at every word
  onset whose height is that layer's features of the word, as the app extracts them (default
  options, one run's words at a time, so in context), projected on a fixed random unit axis
  per layer, minus the run's mean (``bids_encoding/data/story_layers.tsv``, one row per word
  of each run, written by ``plugins/hflm/tools/story_layer_axes.py``). Amplitude 1.5: a random
  direction of a 384-d layer is harder to learn than one feature. Each sphere's own layer
  predicts it best (the other layers' R² fall off with distance in depth), so a layer sweep
  of ``minilm`` finds the shallow sphere's best layer below the deep sphere's;
* ``edges``      - right lateral occipital sphere; a 1 s boxcar at every trial
  whose height is the image's edge energy (:func:`edge_energy`: the mean
  absolute difference between neighbouring pixels, across rows plus across
  columns, of the greyscale image in [0, 1]) minus the mean of the images of
  its trial type in the run. Scrambled images have more edges than faces, so
  the category mean is taken out: a trial-type model cannot explain this
  sphere, a model of image features (the ``cnn`` plugin's layers) can;
* ``face``       - right fusiform sphere; a 1 s boxcar at every trial of height 1
  for ``face`` and 0.2 for ``scrambled`` trials;
* ``sound``      - right superior temporal sphere; a 16 s boxcar at every sound block
  (task ``blocks``), strong (4 noise sd, as auditory cortex in a real block design:
  held-out R² about 0.8 at its center);
* ``latent``     - left medial fusiform sphere whose voxel *patterns* come from four latent
  factors (:func:`latent_code`): each trial drives exactly one factor, chosen by
  its image (faces drive factor 0 or 1, scrambled faces factor 2 or 3) with a
  height between 0.5 and 1.5, and each factor has its own random spatial pattern
  (standard normal per voxel times the sphere's falloff, drawn per subject). The
  region's mean does not tell the conditions apart; its patterns do, through a
  sparse, low-dimensional code that an unsupervised embedder can find.

Each regressor is ``nilearn.glm.first_level.compute_regressor`` of the
``(onset, duration, height)`` triplets read back from the run's events.tsv
(word durations are set to 0, trials keep their 1 s), with
``hrf_model="glover"``, ``frame_times = arange(n_volumes) * TR`` (volume ``k``
acquired at ``k * TR`` seconds, slice-time reference 0) and ``oversampling=50``,
then z-scored within the run. A voxel at distance ``d`` from a sphere's center
(and at most ``radius_mm`` away) receives ``amplitude * noise_sd * falloff(d) *
regressor`` with ``falloff(d) = 2 ** -(d / radius_mm) ** 2`` (1 at the center,
0.5 at the edge). So a model of HRF-convolved, per-run z-scored word-rate,
word-length or trial-type features recovers the planted voxels. Raw letter
counts would be almost collinear with the word rate (every word has letters,
and the long silences dominate both: r ~ 0.97-0.99 per run); centring them
leaves the two planted regressors nearly uncorrelated (``regressor_correlation``
in each ``*_truth.json``), so a joint (banded) model of word rate and word
length can attribute each sphere to its own feature space.

Noise (see :data:`NOISE`), different for every subject and run: per-voxel AR(1)
noise, slow cosine drifts, a global signal, and a small artefact of the head
motion written to the confounds file, on a smooth baseline around 1000 (0
outside the brain), stored as int16. The drifts are weak in ``lpp`` and ``faces``
(``NOISE["drift_sd"]``) and of a real scanner's size in ``blocks``
(``Task.drift_sd``: 3 % of the baseline on each of the three slowest cosines,
all below 0.01 Hz), where a model fitted without removing them predicts
held-out blocks worse than their mean does.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import signal
from nilearn.datasets import load_mni152_brain_mask
from nilearn.glm.first_level.hemodynamic_models import compute_regressor
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.signal import lfilter

from .. import __version__
from ..errors import UserError
from .surfaces import SURFACE_SPACES, load_surface_truth  # noqa: F401 - public here, beside load_truth
from .surfaces import check_surfaces, extend_bidsignore, write_run_surfaces, write_surface_truth

TR = 2.0
SPACE = "MNI152NLin2009cAsym"
RESOLUTION = 6
GENERATOR = "bids-encoding example"
N_IMAGES = 20  # faces and as many scrambled faces
IMAGE_SIZE = 64
BLOCK = 8  # side of the blocks shuffled to scramble a face
MAX_SUBJECTS = 99  # two-digit labels
TIE_HIGH_PASS = 0.01  # Hz: the drift removal the ratelength sphere's two parts are balanced after (the app's default)
AUDIO_RATE = 16000  # Hz: the story's sound track (what speech models take)
ENVELOPE_RATE = 100.0  # Hz: the planted envelope, RMS in 10 ms frames
BACKGROUND, SWELL_HZ, WORD_LOUDNESS = 0.2, 0.05, (0.004, 0.012)  # the sound track's mix (story_audio)
MOVIE_FPS = 10
MOVIE_SIZE = (96, 64)  # width, height of the movie's frames (pixels)


@dataclass(frozen=True)
class Task:
    """One task of the example dataset."""

    name: str
    n_runs: int
    n_volumes: int
    description: str
    drift_sd: float | None = None  # sd of each voxel's coefficient on each drift cosine (None: NOISE["drift_sd"])

    @property
    def duration(self) -> float:
        """Length of a run in seconds; no event ends after it."""
        return self.n_volumes * TR

    @property
    def drift(self) -> float:
        return NOISE["drift_sd"] if self.drift_sd is None else self.drift_sd


@dataclass(frozen=True)
class Planted:
    """One planted feature: a sphere whose voxels follow the feature's HRF-convolved regressor.

    ``amplitude`` is the standard deviation of the planted signal at the sphere's
    center in units of the AR(1) noise's standard deviation (each subject's
    value is this times a factor drawn in ``NOISE["amplitude_jitter"]``).
    """

    name: str
    task: str
    center_mm: tuple[float, float, float]
    radius_mm: float
    amplitude: float
    regressor: str


TASKS: dict[str, Task] = {
    "lpp": Task("lpp", n_runs=3, n_volumes=200,
                description="Listening to a short story, presented one word at a time; one part per run."),
    "faces": Task("faces", n_runs=2, n_volumes=120,
                  description="Viewing drawn faces and block-scrambled faces, 1 s each, in random order."),
    "blocks": Task("blocks", n_runs=1, n_volumes=84, drift_sd=30.0,
                   description="Listening to 16 s bursts of sound alternating with 16 s of silence; one short run."),
    "movie": Task("movie", n_runs=2, n_volumes=90,
                  description="Watching a silent movie of a drifting texture whose speed and direction change every "
                              "few seconds; one part per run."),
}
"""The tasks, their number of runs and of volumes per run (TR 2 s)."""

PLANTED: dict[str, tuple[Planted, ...]] = {
    "lpp": (
        Planted("wordrate", "lpp", (-57.0, -22.0, 6.0), 10.0, 0.7,
                "impulse of height 1 at each word onset, glover HRF, z-scored per run"),
        Planted("wordlength", "lpp", (-45.0, -58.0, -12.0), 10.0, 0.7,
                "impulse of height letters(word) - mean letters per word in the run, at each word onset, "
                "glover HRF, z-scored per run"),
        Planted("semantic", "lpp", (-45.0, -66.0, 30.0), 10.0, 0.7,
                "impulse of height semantic(word) - its mean in the run, at each word onset, where semantic(word) is "
                "the word's GloVe 6B 50d vector projected on a fixed random unit axis (story_semantic.tsv), "
                "glover HRF, z-scored per run"),
        Planted("ratelength", "lpp", (45.0, -66.0, 30.0), 10.0, 0.8,
                "the wordrate and wordlength regressors, each scaled to unit variance after a 0.01 Hz cosine high-pass, "
                "added, z-scored per run: a tie between the two feature spaces"),
        Planted("shallow", "lpp", (-54.0, 6.0, -24.0), 10.0, 1.5,
                "impulse of height minilm_L0(word) - its mean in the run, at each word onset, where minilm_L0 is the "
                "word's layer-0 (embedding) features of the minilm extractor in its run's context projected on a fixed "
                "random unit axis (story_layers.tsv), glover HRF, z-scored per run"),
        Planted("deep", "lpp", (-48.0, 24.0, 12.0), 10.0, 1.5,
                "impulse of height minilm_L5(word) - its mean in the run, at each word onset, where minilm_L5 is the "
                "word's layer-5 features of the minilm extractor in its run's context projected on a fixed random unit "
                "axis (story_layers.tsv), glover HRF, z-scored per run"),
        Planted("envelope", "lpp", (57.0, -6.0, -6.0), 10.0, 0.8,
                "the broadband envelope of the run's sound track (RMS in 10 ms frames, story_audio: the words over a "
                "background whose loudness swells and flickers), glover HRF, z-scored per run"),
    ),
    "faces": (
        Planted("face", "faces", (42.0, -52.0, -18.0), 10.0, 0.7,
                "1 s boxcar of height 1 (face) or 0.2 (scrambled) per trial, glover HRF, z-scored per run"),
        Planted("edges", "faces", (45.0, -80.0, 6.0), 10.0, 1.0,
                "1 s boxcar of height edge_energy(image) - its mean over the run's trials of the same trial_type, where "
                "edge_energy is the mean "
                "absolute difference between neighbouring pixels (rows plus columns) of the greyscale image in [0, 1], "
                "glover HRF, z-scored per run"),
        Planted("latent", "faces", (-30.0, -40.0, -20.0), 12.0, 1.0,
                "four 1 s boxcar regressors, one per latent factor (latent_code: faces drive factor 0 or 1, scrambled "
                "faces factor 2 or 3, by image number; height 0.5 to 1.5), glover HRF, each z-scored per run; each "
                "factor has its own spatial pattern (standard normal x falloff, per subject)"),
    ),
    "blocks": (
        Planted("sound", "blocks", (60.0, -24.0, 6.0), 12.0, 4.0,
                "16 s boxcar of height 1 per sound block, glover HRF, z-scored per run"),
    ),
    "movie": (
        Planted("motion", "movie", (-46.0, -74.0, 4.0), 10.0, 1.5,
                "the movie's frame-to-frame change (mean absolute difference of consecutive decoded frames' luminance "
                "in [0, 1], at 10 frames per second), which follows the texture's speed, glover HRF, z-scored per run"),
    ),
}
"""The planted features of each task: name, sphere (MNI mm), amplitude and regressor.

Locations are the same for every subject (so a group analysis finds them);
amplitudes vary a little between subjects.
"""

NOISE: dict[str, float] = {
    "noise_sd": 10.0,  # standard deviation of the AR(1) noise (BOLD units)
    "ar1_rho": 0.4,  # its lag-1 autocorrelation
    "baseline": 1000.0,  # mean signal in the brain
    "baseline_variation": 0.05,  # sd of the smooth spatial variation of the baseline (fraction of it)
    "drift_sd": 3.0,  # sd of each voxel's coefficient on each of the drift cosines
    "drift_order": 3,  # cosines of periods 2 n_volumes TR / k, k = 1..drift_order
    "global_sd": 3.0,  # sd of the global signal (an AR(1) series with rho 0.9), loading ~ 1 +- 0.2
    "motion_step_mm": 0.02,  # sd of the random-walk steps of the translations
    "motion_step_rad": 0.0003,  # sd of the random-walk steps of the rotations
    "motion_artifact_sd": 5.0,  # sd of each voxel's loading on each motion parameter (per mm)
    "amplitude_jitter": 0.15,  # subject amplitudes are amplitude * uniform(1 - jitter, 1 + jitter)
}
"""Parameters of the simulated noise; also written to each ``*_truth.json``."""

# Independent random streams, so that changing one part never changes another.
_STREAM = {"images": 1, "story": 2, "trials": 3, "subject": 4, "run": 5, "amplitude": 6, "pattern": 7, "eeg": 8,
           "audio": 9, "movie": 10}


def _rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A generator for one part of the dataset, fixed by the seed and the part's keys."""
    return np.random.default_rng([seed, _STREAM[stream], *keys])


# --------------------------------------------------------------------------- story and word timing

def read_story() -> str:
    """The story's text, shipped as package data."""
    return resources.files("bids_encoding").joinpath("data", "story.txt").read_text(encoding="utf-8")


def split_sentences(text: str) -> list[list[str]]:
    """Sentences as lists of words (punctuation kept); a paragraph's end also ends a sentence."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        current: list[str] = []
        for word in paragraph.split():
            current.append(word)
            if re.search(r"[.!?][\"')]*$", word):
                sentences.append(current)
                current = []
        if current:
            sentences.append(current)
    return sentences


def split_parts(sentences: list[list[str]], n_parts: int) -> list[list[list[str]]]:
    """Consecutive parts of about the same number of words, cut between sentences."""
    counts = np.cumsum([len(s) for s in sentences])
    cuts = [int(np.argmin(np.abs(counts - counts[-1] * k / n_parts))) + 1 for k in range(1, n_parts)]
    bounds = [0, *cuts, len(sentences)]
    return [sentences[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@lru_cache(maxsize=1)
def semantic_values() -> dict[str, float]:
    """Each story word's GloVe vector projected on the planted semantic axis (package data)."""
    table = resources.files("bids_encoding").joinpath("data", "story_semantic.tsv").read_text(encoding="utf-8")
    rows = (line.rsplit("\t", 1) for line in table.splitlines()[1:] if line)
    return {word: float(value) for word, value in rows}


LAYER_OF = {"shallow": "L0", "deep": "L5"}
"""The ``minilm`` layer each sphere of the planted layer gradient follows (a column of story_layers.tsv)."""


@lru_cache(maxsize=1)
def layer_values() -> pd.DataFrame:
    """Each word of each lpp run (``run``, ``position``, ``word``) projected from two minilm layers (package data)."""
    with resources.files("bids_encoding").joinpath("data", "story_layers.tsv").open("r", encoding="utf-8") as table:
        return pd.read_csv(table, sep="\t", keep_default_na=False, dtype={"word": str})


def run_layer_values(words: pd.Series, layer: str) -> np.ndarray:
    """One run's per-word values of a layer, found by the run's exact word sequence (the table holds every run)."""
    table = layer_values()
    for _, run in table.groupby("run"):
        if len(run) == len(words) and (run["word"].to_numpy() == words.astype(str).to_numpy()).all():
            return run[layer].to_numpy(float)
    raise ValueError("these words are not one run of the example story (story_layers.tsv)")


def n_letters(word: str) -> int:
    """Letters of a word as written, punctuation and digits stripped ("forest." -> 6)."""
    return len(re.sub(r"[^A-Za-z]", "", word))


def _silences(total: float, rng: np.random.Generator, low: float = 6.0, high: float = 20.0) -> np.ndarray:
    """Split ``total`` seconds into a few silences, each between ``low`` and ``high`` seconds."""
    if total < low:
        return np.array([total]) if total > 0 else np.zeros(0)
    n_min, n_max = int(np.ceil(total / high)), int(total // low)
    n = int(np.clip(round(total / 15.0), n_min, n_max))  # about 15 s each
    spare = total - n * low  # shared out at random, none above high - low
    for _ in range(100):
        extra = spare * rng.dirichlet(np.full(n, 4.0))
        if extra.max() <= high - low:
            return low + extra
    return np.full(n, total / n)


def word_events(part: list[list[str]], run_duration: float, rng: np.random.Generator,
                lead_in: float = 4.0, tail: float = 10.0) -> pd.DataFrame:
    """One event per word, at a rate that varies between sentences, so that timing is not just word length.

    A word lasts ``(0.25 + 0.04 * letters) * speed`` seconds, ``speed`` drawn per
    sentence in [0.7, 1.6]; sentences are separated by 0.3-2.5 s pauses, and the
    time left over is spent in a few long silences (6-20 s) between sentences,
    so that the words span the run from ``lead_in`` to ``run_duration - tail``.
    """
    speeds = rng.uniform(0.7, 1.6, len(part))
    durations = [np.array([0.25 + 0.04 * n_letters(w) for w in sentence]) * s for sentence, s in zip(part, speeds)]
    gaps = rng.uniform(0.3, 2.5, len(part) - 1)
    spoken = sum(d.sum() for d in durations) + gaps.sum()
    left = run_duration - lead_in - tail - spoken
    if left < 0:
        raise ValueError(f"a part of {sum(map(len, part))} words is too long for a {run_duration} s run")
    silences = _silences(left, rng)
    gaps[rng.choice(len(gaps), size=len(silences), replace=False)] += silences
    onsets, time = [], lead_in
    for i, d in enumerate(durations):
        starts = time + np.concatenate([[0.0], np.cumsum(d)[:-1]])
        onsets.append(starts)
        time = starts[-1] + d[-1] + (gaps[i] if i < len(gaps) else 0.0)
    onset = np.concatenate(onsets)
    offset = np.round(onset + np.concatenate(durations), 3)  # rounding both ends keeps words from overlapping
    return pd.DataFrame({
        "onset": np.round(onset, 3),
        "duration": np.round(offset - np.round(onset, 3), 3),
        "word": [w for sentence in part for w in sentence],
    })


# --------------------------------------------------------------------------- images and trials

def draw_face(rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """A simple frontal face with random proportions, drawn at 4x and reduced for smooth edges."""
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


def scramble(img: Image.Image, rng: np.random.Generator, block: int = BLOCK) -> Image.Image:
    """The same pixels with their ``block`` x ``block`` tiles shuffled: same luminance, no face."""
    a = np.asarray(img)
    n = a.shape[0] // block
    tiles = a.reshape(n, block, n, block).swapaxes(1, 2).reshape(n * n, block, block)
    tiles = tiles[rng.permutation(n * n)]
    return Image.fromarray(tiles.reshape(n, n, block, block).swapaxes(1, 2).reshape(a.shape))


def write_stimuli(root: Path, seed: int) -> list[str]:
    """Write the face and scrambled-face PNGs; return their paths relative to ``stimuli/``."""
    rng = _rng(seed, "images")
    folder = root / "stimuli" / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(1, N_IMAGES + 1):
        face = draw_face(rng)
        for kind, img in (("face", face), ("scrambled", scramble(face, rng))):
            img.save(folder / f"{kind}{i:02d}.png", optimize=False)
            names.append(f"faces/{kind}{i:02d}.png")
    return names


def trial_events(stim_files: list[str], run_duration: float, rng: np.random.Generator,
                 lead_in: float = 4.0, tail: float = 10.0, duration: float = 1.0) -> pd.DataFrame:
    """Every image once, in random order, 1 s each, with jittered gaps filling the run."""
    order = rng.permutation(len(stim_files))
    n = len(order)
    spare = run_duration - lead_in - tail - n * duration
    isi = spare * (w := rng.uniform(0.4, 1.6, n - 1)) / w.sum()
    onsets = lead_in + np.concatenate([[0.0], np.cumsum(duration + isi)])
    files = [stim_files[i] for i in order]
    return pd.DataFrame({
        "onset": np.round(onsets, 3),
        "duration": duration,
        "trial_type": [Path(f).stem.rstrip("0123456789") for f in files],
        "stim_file": files,
    })


# --------------------------------------------------------------------------- the story's sound track and the movie

def _smooth_noise(rng: np.random.Generator, n: int, rate: float, low: float, high: float) -> np.ndarray:
    """Gaussian noise band-passed between ``low`` and ``high`` Hz (zero-phase Butterworth), unit sd."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(2, [low, high] if low > 0 else high, btype="band" if low > 0 else "low", fs=rate, output="sos")
    x = sosfiltfilt(sos, rng.standard_normal(n))
    return x / x.std()


def story_audio(words: pd.DataFrame, duration: float, rng: np.random.Generator) -> np.ndarray:
    """A run's sound track at :data:`AUDIO_RATE` (float32 in [-1, 1]): the story's words over a background.

    No speech synthesis is available offline, so each word is a harmonic complex (a random fundamental of 100-250
    Hz and its first three harmonics at 1/k) lasting the word, 10 ms ramps, at a random amplitude of
    :data:`WORD_LOUDNESS`. Behind it, band-limited noise (200-4000 Hz, unit sd) whose amplitude swells slowly (below
    :data:`SWELL_HZ`, between silence and :data:`BACKGROUND`) and flickers at syllable rates (2-8 Hz): the
    envelope moves on every time scale, mostly apart from the words (its planted regressor correlates about 0.1
    with word rate's, ``regressor_correlation``), so an envelope model, not word rate, explains the ``envelope``
    sphere.
    """
    n = int(round(duration * AUDIO_RATE))
    frames = int(round(duration * ENVELOPE_RATE))
    slow = _smooth_noise(rng, frames, ENVELOPE_RATE, 0.0, SWELL_HZ)
    slow = np.clip((slow - slow.min()) / (slow.max() - slow.min()), 0, 1) ** 2
    flicker = 0.5 + 0.5 * np.tanh(_smooth_noise(rng, frames, ENVELOPE_RATE, 2.0, 8.0))
    loudness = np.interp(np.arange(n) / AUDIO_RATE, np.arange(frames) / ENVELOPE_RATE, BACKGROUND * slow * flicker)
    audio = _smooth_noise(rng, n, AUDIO_RATE, 200.0, 4000.0) * loudness
    for onset, length in zip(words["onset"], words["duration"]):
        start, m = int(round(onset * AUDIO_RATE)), max(int(round(length * AUDIO_RATE)), 1)
        t = np.arange(min(m, n - start)) / AUDIO_RATE
        f0, gain = rng.uniform(100, 250), rng.uniform(*WORD_LOUDNESS)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
        ramp = np.clip(np.minimum(t, t[::-1]) / 0.01, 0, 1)
        audio[start:start + len(t)] += gain * tone * ramp
    return np.clip(audio, -1, 1).astype(np.float32)


def rms_envelope(samples: np.ndarray, rate: float, envelope_rate: float = ENVELOPE_RATE) -> np.ndarray:
    """The root mean square of ``samples`` in consecutive frames of ``1 / envelope_rate`` s (the planted envelope)."""
    step = int(round(rate / envelope_rate))
    n = len(samples) // step
    return np.sqrt((np.asarray(samples[:n * step], np.float64).reshape(n, step) ** 2).mean(axis=1))


def story_envelope(wav: Path) -> np.ndarray:
    """The planted envelope of a sound track file, at :data:`ENVELOPE_RATE`."""
    return _of_file(_story_envelope, wav)


def _of_file(function, path: Path) -> np.ndarray:
    """``function(path)``, computed once per file content (every subject's regressors read the same stimuli, and
    every example dataset of a seed has the same ones)."""
    return function(str(path), hashlib.sha1(Path(path).read_bytes()).hexdigest()).copy()


_WRITTEN: dict[tuple[str, int, int], bytes] = {}
"""The bytes of each generated media file by (kind, seed, run): a second dataset of a seed copies them."""


def _write_media(path: Path, key: tuple[str, int, int], write) -> None:
    """``write(path)`` once per key in this process, then the same bytes (generating media takes seconds)."""
    if key in _WRITTEN:
        path.write_bytes(_WRITTEN[key])
        return
    write(path)
    _WRITTEN[key] = path.read_bytes()


@lru_cache(maxsize=8)
def _story_envelope(path: str, digest: str) -> np.ndarray:
    import soundfile

    samples, rate = soundfile.read(path, dtype="float32")
    return rms_envelope(samples, rate)


def write_story_audio(root: Path, word_runs: list[pd.DataFrame], seed: int) -> list[str]:
    """Each story run's sound track as a 16-bit WAV under ``stimuli/story/``; their paths relative to ``stimuli/``."""
    import soundfile

    folder = root / "stimuli" / "story"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for run, words in enumerate(word_runs, start=1):
        def write(path: Path, words=words, run=run) -> None:
            audio = story_audio(words, TASKS["lpp"].duration, _rng(seed, "audio", run))
            soundfile.write(str(path), audio, AUDIO_RATE, subtype="PCM_16")

        _write_media(folder / f"lpp_run-{run}.wav", ("story", seed, run), write)
        names.append(f"story/lpp_run-{run}.wav")
    return names


def with_sound_track(words: pd.DataFrame, stim_file: str, duration: float) -> pd.DataFrame:
    """A story run's events: its sound track from 0 s for the whole run, then one row per word."""
    track = pd.DataFrame({"onset": [0.0], "duration": [duration], "word": [None], "stim_file": [stim_file]})
    return pd.concat([track, words.assign(stim_file=None)], ignore_index=True)


def word_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The events that are words (a story run's rows but its sound track)."""
    return events[events["word"].notna()].reset_index(drop=True) if "word" in events else events


def movie_frames(duration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A silent movie at :data:`MOVIE_FPS`: a smooth random texture drifting behind a fixed window, its speed (0,
    1 or 3 pixels per frame) and direction (one of 8) changing every 3-9 s. Frames (n x height x width, uint8
    grey) and each frame's speed."""
    width, height = MOVIE_SIZE
    n = int(round(duration * MOVIE_FPS))
    texture = ndimage.gaussian_filter(rng.standard_normal((4 * height, 4 * width)), 2.0, mode="wrap")
    texture = np.clip(128 + 50 * texture / texture.std(), 0, 255)
    speed, velocity = np.zeros(n), np.zeros((n, 2))
    start = 0
    while start < n:
        stop = min(n, start + int(rng.uniform(3, 9) * MOVIE_FPS))
        angle = rng.integers(8) * np.pi / 4
        speed[start:stop] = rng.choice([0.0, 1.0, 3.0])
        velocity[start:stop] = speed[start:stop, None] * [np.cos(angle), np.sin(angle)]
        start = stop
    position = np.rint(np.cumsum(velocity, axis=0)).astype(int)  # whole pixels: diagonal steps alternate 0.7 px
    frames = np.empty((n, height, width), np.uint8)
    for k, (dx, dy) in enumerate(position):
        rows, cols = (np.arange(height) - dy) % texture.shape[0], (np.arange(width) - dx) % texture.shape[1]
        frames[k] = np.rint(texture[np.ix_(rows, cols)])
    return frames, speed


def write_movies(root: Path, seed: int) -> list[str]:
    """Each movie run's part as an H.264 MP4 (PyAV) under ``stimuli/movie/``; their paths relative to ``stimuli/``."""
    import av

    folder = root / "stimuli" / "movie"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for run in range(1, TASKS["movie"].n_runs + 1):
        def write(path: Path, run=run) -> None:
            frames, _ = movie_frames(TASKS["movie"].duration, _rng(seed, "movie", run))
            with av.open(str(path), "w") as container:
                stream = container.add_stream("libx264", rate=MOVIE_FPS, options={"crf": "18", "threads": "1"})
                stream.width, stream.height, stream.pix_fmt = MOVIE_SIZE[0], MOVIE_SIZE[1], "yuv420p"
                for frame in frames:
                    picture = av.VideoFrame.from_ndarray(np.repeat(frame[:, :, None], 3, axis=2), format="rgb24")
                    container.mux(stream.encode(picture))
                container.mux(stream.encode(None))

        _write_media(folder / f"movie_run-{run}.mp4", ("movie", seed, run), write)
        names.append(f"movie/movie_run-{run}.mp4")
    return names


def frame_change(movie: Path) -> np.ndarray:
    """Mean absolute difference between consecutive decoded frames (luminance in [0, 1]); 0 for the first."""
    return _of_file(_frame_change, movie)


@lru_cache(maxsize=8)
def _frame_change(movie: str, digest: str) -> np.ndarray:
    import av

    grey, change = None, [0.0]
    with av.open(movie) as container:
        for frame in container.decode(video=0):
            current = frame.to_ndarray(format="gray").astype(np.float64) / 255.0
            if grey is not None:
                change.append(float(np.abs(current - grey).mean()))
            grey = current
    return np.array(change)


def movie_events(stim_file: str, duration: float) -> pd.DataFrame:
    """A movie run's events: its part of the movie, from 0 s for the whole run."""
    return pd.DataFrame({"onset": [0.0], "duration": [duration], "stim_file": [stim_file]})


# --------------------------------------------------------------------------- planted regressors

def edge_energy(image_file: Path) -> float:
    """How much an image changes between neighbouring pixels (greyscale in [0, 1]): what early visual filters see."""
    pixels = np.asarray(Image.open(image_file).convert("L"), dtype=np.float64) / 255.0
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


N_LATENT_FACTORS = 4


def latent_code(stim_file: str) -> tuple[int, float]:
    """The latent factor a trial's image drives and its height: faces drive factor 0 (even image numbers) or 1
    (odd), scrambled faces factor 2 or 3; the height, 0.5 to 1.5, also follows the image number."""
    stem = Path(stim_file).stem
    number = int(stem.lstrip("abcdefghijklmnopqrstuvwxyz"))
    return 2 * stem.startswith("scrambled") + number % 2, 0.5 + (number % 5) / 4


def _hrf_regressor(onsets: np.ndarray, durations: np.ndarray, heights: np.ndarray, n_volumes: int) -> np.ndarray:
    condition = np.vstack([onsets, durations, heights])
    x = compute_regressor(condition, "glover", np.arange(n_volumes) * TR, oversampling=50)[0][:, 0]
    return (x - x.mean()) / x.std()


def _sampled_regressor(values: np.ndarray, rate: float, n_volumes: int) -> np.ndarray:
    """A signal sampled at ``rate`` from 0 s, each sample a boxcar of ``1 / rate`` s, through :func:`_hrf_regressor`."""
    onsets = np.arange(len(values)) / rate
    return _hrf_regressor(onsets, np.full(len(values), 1.0 / rate), np.asarray(values, float), n_volumes)


def planted_regressor(name: str, events: pd.DataFrame, n_volumes: int, stimuli_dir: Path | None = None) -> np.ndarray:
    """The z-scored, HRF-convolved time course of a planted feature in one run (see the module doc);
    ``latent`` gives one column per latent factor."""
    if name == "latent":
        codes = [latent_code(f) for f in events["stim_file"]]
        factor, height = np.array([c[0] for c in codes]), np.array([c[1] for c in codes])
        onsets, durations = events["onset"].to_numpy(float), events["duration"].to_numpy(float)
        return np.column_stack([_hrf_regressor(onsets[factor == k], durations[factor == k], height[factor == k], n_volumes)
                                for k in range(N_LATENT_FACTORS)])
    if name == "envelope":
        track = Path(stimuli_dir, events["stim_file"].dropna().iloc[0])
        return _sampled_regressor(story_envelope(track), ENVELOPE_RATE, n_volumes)
    if name == "motion":
        movie = Path(stimuli_dir, events["stim_file"].dropna().iloc[0])
        return _sampled_regressor(frame_change(movie), MOVIE_FPS, n_volumes)
    events = word_rows(events)
    if name == "ratelength":  # each part scaled to unit variance as the models see it, after the default high-pass
        parts = np.column_stack([planted_regressor(part, events, n_volumes) for part in ("wordrate", "wordlength")])
        seen = signal.clean(parts, detrend=True, standardize=None, filter="cosine", high_pass=TIE_HIGH_PASS, t_r=TR)
        both = (parts / seen.std(axis=0)).sum(axis=1)
        return (both - both.mean()) / both.std()
    if name == "wordrate":
        heights, durations = np.ones(len(events)), np.zeros(len(events))
    elif name == "wordlength":
        letters = events["word"].map(n_letters).to_numpy(float)
        heights, durations = letters - letters.mean(), np.zeros(len(events))
    elif name == "semantic":
        values = events["word"].map(semantic_values()).to_numpy(float)
        heights, durations = values - values.mean(), np.zeros(len(events))
    elif name in LAYER_OF:
        values = run_layer_values(events["word"], LAYER_OF[name])
        heights, durations = values - values.mean(), np.zeros(len(events))
    elif name == "edges":
        energy = pd.Series([edge_energy(Path(stimuli_dir, f)) for f in events["stim_file"]], index=events.index)
        heights = (energy - energy.groupby(events["trial_type"]).transform("mean")).to_numpy()
        durations = events["duration"].to_numpy(float)
    elif name == "face":
        heights = np.where(events["trial_type"] == "face", 1.0, 0.2)
        durations = events["duration"].to_numpy(float)
    elif name == "sound":
        heights, durations = np.ones(len(events)), events["duration"].to_numpy(float)
    else:
        raise ValueError(f"unknown planted feature {name!r}")
    return _hrf_regressor(events["onset"].to_numpy(float), durations, heights, n_volumes)


def sphere_weights(center_mm: tuple[float, float, float], radius_mm: float, mask: np.ndarray,
                   affine: np.ndarray) -> np.ndarray:
    """Per-voxel weight 2**-(d/r)**2 inside the sphere and the brain, 0 elsewhere (mask grid)."""
    ijk = np.indices(mask.shape).reshape(3, -1).T
    d = np.linalg.norm(nib.affines.apply_affine(affine, ijk) - np.asarray(center_mm), axis=1).reshape(mask.shape)
    return np.where((d <= radius_mm) & mask, 2.0 ** -((d / radius_mm) ** 2), 0.0)


# --------------------------------------------------------------------------- noise and BOLD

def smooth_baseline(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean signal per brain voxel: ~1000, varying smoothly in space, as coil sensitivity does."""
    field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 3.0)
    field /= field[mask].std()
    return NOISE["baseline"] * (1 + NOISE["baseline_variation"] * field[mask])


def ar1(rng: np.random.Generator, n_time: int, n_series: int, rho: float) -> np.ndarray:
    """Stationary AR(1) series of unit variance, ``n_time x n_series``."""
    e = rng.standard_normal((n_time, n_series)) * np.sqrt(1 - rho**2)
    e[0] /= np.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], e, axis=0)


def motion(rng: np.random.Generator, n_volumes: int) -> pd.DataFrame:
    """Small random-walk head motion, starting at 0, in mm and radians (fMRIPrep column names)."""
    steps = rng.standard_normal((n_volumes, 6)) * np.repeat([NOISE["motion_step_mm"], NOISE["motion_step_rad"]], 3)
    steps[0] = 0.0
    return pd.DataFrame(np.cumsum(steps, axis=0), columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])


def simulate_noise(rng: np.random.Generator, n_volumes: int, n_voxels: int, moves: pd.DataFrame,
                   drift_sd: float = NOISE["drift_sd"]) -> np.ndarray:
    """AR(1) noise + cosine drifts + a global signal + a motion artefact, ``n_volumes x n_voxels``."""
    t = (np.arange(n_volumes) + 0.5) / n_volumes
    cosines = np.cos(np.pi * np.outer(t, np.arange(1, int(NOISE["drift_order"]) + 1)))
    global_signal = ar1(rng, n_volumes, 1, 0.9) * NOISE["global_sd"]
    moves_mm = moves.to_numpy() * np.repeat([1.0, 50.0], 3)  # rotations as mm at a 50 mm radius
    return (
        ar1(rng, n_volumes, n_voxels, NOISE["ar1_rho"]) * NOISE["noise_sd"]
        + cosines @ rng.normal(0, drift_sd, (cosines.shape[1], n_voxels))
        + global_signal * rng.normal(1.0, 0.2, n_voxels)
        + (moves_mm - moves_mm.mean(axis=0)) @ rng.normal(0, NOISE["motion_artifact_sd"], (6, n_voxels))
    )


def tissue_signals(data: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """Mean signals standing in for fMRIPrep's ``csf`` (brain edge) and ``white_matter`` (deep core)."""
    core = ndimage.binary_erosion(mask, iterations=3)
    edge = mask & ~ndimage.binary_erosion(mask)
    in_mask = lambda region: region[mask]  # noqa: E731 - region as a selector of brain voxels
    return pd.DataFrame({"csf": data[:, in_mask(edge)].mean(axis=1),
                         "white_matter": data[:, in_mask(core)].mean(axis=1)})


def _mni_image(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI image in MNI space with units in its header."""
    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=4)  # 4 = MNI152
    img.header.set_sform(affine, code=4)
    return img


def _mask_image(mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A binary uint8 mask image."""
    return _mni_image(mask.astype(np.uint8), affine)


def to_image(data: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """``n_volumes x n_brain_voxels`` values as an int16 4D image (0 outside the brain), TR in pixdim[4]."""
    volume = np.zeros(mask.shape + (data.shape[0],), dtype=np.int16)
    volume[mask] = np.clip(np.rint(data.T), 0, np.iinfo(np.int16).max).astype(np.int16)
    img = _mni_image(volume, affine)
    img.header.set_zooms((RESOLUTION,) * 3 + (TR,))
    return img


# --------------------------------------------------------------------------- files

def _gz_bytes(img: nib.Nifti1Image) -> bytes:
    """The image as .nii.gz bytes with a fixed gzip header, so that a seed gives identical files."""
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _write_tsv(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")


def _write_bytes(paths: list[Path], content: bytes) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless asked to, and then only over an example dataset."""
    if path.exists() and not path.is_dir():
        raise UserError("the path exists and is not a folder", path=path, fix="Choose a new folder for the example dataset")
    if not path.exists() or not any(path.iterdir()):
        return
    if not overwrite:
        raise UserError("the folder is not empty", path=path,
                        fix="Choose a new or empty folder, or pass overwrite=True to replace an earlier example dataset")
    try:
        generated = json.loads((path / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        generated = None
    if generated != GENERATOR:
        raise UserError("the folder is not empty and does not hold an example dataset, so it is not replaced", path=path,
                        fix="Choose a new or empty folder")
    shutil.rmtree(path)


def _top_level_files(root: Path, n_subjects: int, seed: int) -> None:
    """dataset_description, README, participants, task sidecars and the derivative's description."""
    generated_by = [{"Name": GENERATOR, "Version": __version__,
                     "Description": f"bids_encoding.example.write_example_dataset(n_subjects={n_subjects}, seed={seed})"}]
    _write_json(root / "dataset_description.json", {
        "Name": "bids-encoding example: simulated story listening and face viewing",
        "BIDSVersion": "1.10.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["bids-encoding developers"], "GeneratedBy": generated_by,
    })
    _write_json(root / "derivatives" / "fmriprep" / "dataset_description.json", {
        "Name": "Simulated preprocessed BOLD (the data is simulated in MNI space; nothing was preprocessed)",
        "BIDSVersion": "1.10.0", "DatasetType": "derivative", "License": "CC0", "GeneratedBy": generated_by,
    })
    (root / "README").write_text(_readme(), encoding="utf-8")
    (root / "derivatives" / "fmriprep" / "README").write_text(
        "Simulated in MNI space by bids_encoding.example, laid out like fMRIPrep's output.\n", encoding="utf-8")
    # fMRIPrep's confounds file name is not (yet) in the BIDS schema
    (root / "derivatives" / "fmriprep" / ".bidsignore").write_text("*_desc-confounds_timeseries.*\n", encoding="utf-8")
    rng = _rng(seed, "subject", 0)
    _write_tsv(root / "participants.tsv", pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(1, n_subjects + 1)],
        "age": rng.integers(19, 40, n_subjects),
        "sex": rng.choice(["F", "M"], n_subjects),
    }))
    _write_json(root / "participants.json", {
        "age": {"Description": "age of the participant", "Units": "year"},
        "sex": {"Description": "sex of the participant", "Levels": {"F": "female", "M": "male"}},
    })
    for task in TASKS.values():
        _write_json(root / f"task-{task.name}_bold.json", {
            "TaskName": task.name, "TaskDescription": task.description, "RepetitionTime": TR,
            "SliceTimingCorrected": False, "MagneticFieldStrength": 3.0, "Manufacturer": "simulated",
        })
    _write_json(root / "task-lpp_events.json", {
        "word": {"Description": "the word heard, as written in the story, punctuation attached"},
        "stim_file": {"Description": "the run's sound track (16 kHz WAV, relative to stimuli/), played from 0 s for "
                                     "the whole run: the words over a background of noise"},
    })
    _write_json(root / "task-movie_events.json", {
        "stim_file": {"Description": "the run's part of the silent movie (H.264 MP4, 10 frames per second, relative to "
                                     "stimuli/), shown from 0 s for the whole run"},
    })
    _write_json(root / "task-blocks_events.json", {
        "trial_type": {"Description": "block type", "Levels": {"sound": "16 s of sound (silence between blocks)"}},
    })
    _write_json(root / "task-faces_events.json", {
        "trial_type": {"Description": "image category", "Levels": {"face": "a drawn face",
                                                                   "scrambled": "the same face, 8x8 blocks shuffled"}},
        "stim_file": {"Description": "the image shown, relative to stimuli/"},
    })


def _readme() -> str:
    lines = [
        "# bids-encoding example dataset", "",
        "Simulated fMRI written by `bids_encoding.example.write_example_dataset`. Nothing here was",
        "measured: the BOLD time series are noise plus signals planted in small spheres, so that",
        "encoding models can be checked against a known truth (sourcedata/groundtruth/).", "",
        "Tasks:",
        *[f"- {t.name}: {t.description} {t.n_runs} run(s) of {t.n_volumes} volumes, TR {TR} s." for t in TASKS.values()],
        "", "Planted features:",
        *[f"- {p.name} (task {p.task}): sphere of {p.radius_mm} mm at MNI {p.center_mm}; {p.regressor}."
          for planted in PLANTED.values() for p in planted],
        "", "The story in task lpp was written for this project and is released under CC0.", "",
    ]
    return "\n".join(lines)


def _run_files(root: Path, sub: str, task: Task, run: int) -> dict[str, Path]:
    """The paths of one run's raw and derivative files (no ``run-`` entity in a task of one run, as BIDS allows)."""
    stem = f"sub-{sub}_task-{task.name}" + (f"_run-{run}" if task.n_runs > 1 else "")
    raw, deriv = root / f"sub-{sub}" / "func", root / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
    space = f"space-{SPACE}_res-{RESOLUTION}"
    return {
        "bold": raw / f"{stem}_bold.nii.gz",
        "events": raw / f"{stem}_events.tsv",
        "preproc": deriv / f"{stem}_{space}_desc-preproc_bold.nii.gz",
        "preproc_json": deriv / f"{stem}_{space}_desc-preproc_bold.json",
        "mask": deriv / f"{stem}_{space}_desc-brain_mask.nii.gz",
        "mask_json": deriv / f"{stem}_{space}_desc-brain_mask.json",
        "confounds": deriv / f"{stem}_desc-confounds_timeseries.tsv",
        "confounds_json": deriv / f"{stem}_desc-confounds_timeseries.json",
    }


DERIVATIVE_SIDECAR = {"Resolution": f"{RESOLUTION} mm isotropic (nilearn's MNI152 brain-mask grid)",
                      "SpatialReference": SPACE}
CONFOUNDS_SIDECAR = {
    **{f"trans_{a}": {"Description": f"translation along {a} (random walk)", "Units": "mm"} for a in "xyz"},
    **{f"rot_{a}": {"Description": f"rotation around {a} (random walk)", "Units": "rad"} for a in "xyz"},
    "csf": {"Description": "mean signal at the edge of the brain mask (stands in for CSF)"},
    "white_matter": {"Description": "mean signal deep inside the brain mask (stands in for white matter)"},
}


def _write_run(files: dict[str, Path], data: np.ndarray, moves: pd.DataFrame, events: pd.DataFrame,
               mask: np.ndarray, mask_bytes: bytes, affine: np.ndarray) -> None:
    """Write one run: raw and preprocessed BOLD (same values), events, mask and confounds."""
    _write_bytes([files["bold"], files["preproc"]], _gz_bytes(to_image(data, mask, affine)))
    _write_bytes([files["mask"]], mask_bytes)
    _write_tsv(files["events"], events)
    _write_json(files["preproc_json"], {"RepetitionTime": TR, "SkullStripped": True, **DERIVATIVE_SIDECAR})
    _write_json(files["mask_json"], {"Type": "Brain", **DERIVATIVE_SIDECAR})
    _write_tsv(files["confounds"], pd.concat([moves, tissue_signals(data, mask)], axis=1))
    _write_json(files["confounds_json"], CONFOUNDS_SIDECAR)


def _truth(task: Task, amplitudes: dict[str, float], weights: dict[str, np.ndarray], seed: int,
           regressors: list[dict[str, np.ndarray]]) -> dict:
    """The ground truth of one subject and task, as written to ``*_truth.json``.

    ``regressor_correlation`` gives, per run, the correlation of each pair of
    planted regressors, so that users know how far two features can be told apart.
    """
    names = [p.name for p in PLANTED[task.name] if regressors[0][p.name].ndim == 1]
    return {
        "task": task.name,
        "seed": seed,
        "space": SPACE,
        "features": {p.name: {**{k: v for k, v in asdict(p).items() if k not in ("name", "task", "amplitude")},
                              "amplitude": amplitudes[p.name],
                              "amplitude_units": "sd of the planted signal at the center / noise_sd",
                              "peak_sd_bold_units": round(amplitudes[p.name] * NOISE["noise_sd"], 4),
                              "falloff": "2 ** -(distance / radius_mm) ** 2",
                              "n_voxels": int((weights[p.name] > 0).sum())}
                     for p in PLANTED[task.name]},
        "regressors": "nilearn compute_regressor((onset, duration, height), 'glover', arange(n_volumes) * TR, "
                      "oversampling=50), z-scored per run; word events have duration 0",
        "regressor_correlation": {f"{a}~{b}": [round(float(np.corrcoef(r[a], r[b])[0, 1]), 3) for r in regressors]
                                  for i, a in enumerate(names) for b in names[i + 1:]},
        "noise": {**NOISE, "drift_sd": task.drift},
    }


def block_events(task: Task, block: float = 16.0) -> pd.DataFrame:
    """Sound blocks of ``block`` seconds, each after as long a silence, to the end of the run."""
    onsets = np.arange(block, task.duration - block + 1e-9, 2 * block)
    return pd.DataFrame({"onset": onsets, "duration": block, "trial_type": "sound"})


def _events(task: Task, run: int, index: int, seed: int, stim_files: list[str],
            shared: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """The events of one run: the story's or the movie's part (the same for everyone), the blocks, or this subject's
    trial order."""
    if task.name in shared:
        return shared[task.name][run - 1]
    if task.name == "blocks":
        return block_events(task)
    return trial_events(stim_files, task.duration, _rng(seed, "trials", index, run))


def _simulate_run(rng: np.random.Generator, baseline: np.ndarray, regressors: dict[str, np.ndarray],
                  gains: dict[str, np.ndarray], task: Task) -> tuple[np.ndarray, pd.DataFrame]:
    """BOLD of one run, ``n_volumes x n_brain_voxels``, and its head motion."""
    n_volumes = task.n_volumes
    moves = motion(rng, n_volumes)
    data = baseline + simulate_noise(rng, n_volumes, len(baseline), moves, task.drift)
    for name, x in regressors.items():  # x: volumes (x factors); gains: (factors x) voxels
        data += x.reshape(n_volumes, -1) @ gains[name].reshape(-1, data.shape[1])
    return data, moves


def _spatial_pattern(planted: Planted, rng: np.random.Generator, n_voxels: int) -> np.ndarray:
    """1 for a planted feature with one regressor; one standard normal pattern per factor for ``latent``."""
    return rng.standard_normal((N_LATENT_FACTORS, n_voxels)) if planted.name == "latent" else np.ones(n_voxels)


def _write_subject(root: Path, index: int, seed: int, stim_files: list[str], mask: np.ndarray,
                   affine: np.ndarray, mask_bytes: bytes, shared: dict[str, list[pd.DataFrame]],
                   surfaces: tuple[str, ...] = ()) -> None:
    """Simulate and write every run of one subject, and its ground truth (on ``surfaces`` too)."""
    sub = f"{index:02d}"
    rng = _rng(seed, "subject", index)
    baseline = smooth_baseline(mask, rng)
    truth_dir = root / "sourcedata" / "groundtruth"
    jitter = NOISE["amplitude_jitter"]
    for t, task in enumerate(TASKS.values()):
        planted = PLANTED[task.name]
        weights = {p.name: sphere_weights(p.center_mm, p.radius_mm, mask, affine) for p in planted}
        # one stream per planted feature, so adding a feature never changes the others' amplitudes
        amplitudes = {p.name: round(p.amplitude * _rng(seed, "amplitude", index, t, k).uniform(1 - jitter, 1 + jitter), 4)
                      for k, p in enumerate(planted)}
        gains = {p.name: amplitudes[p.name] * NOISE["noise_sd"] * weights[p.name][mask]
                 * _spatial_pattern(p, _rng(seed, "pattern", index, t, k), int(mask.sum()))
                 for k, p in enumerate(planted)}
        all_regressors = []
        for run in range(1, task.n_runs + 1):
            events = _events(task, run, index, seed, stim_files, shared)
            regressors = {p.name: planted_regressor(p.name, events, task.n_volumes, root / "stimuli") for p in planted}
            data, moves = _simulate_run(_rng(seed, "run", index, t, run), baseline, regressors, gains, task)
            files = _run_files(root, sub, task, run)
            _write_run(files, data, moves, events, mask, mask_bytes, affine)
            if surfaces:
                write_run_surfaces(to_image(data, mask, affine), mask, files["preproc"].parent,
                                   files["preproc"].name.split("_space-")[0], task.name, TR, surfaces)
            all_regressors.append(regressors)
        _write_json(truth_dir / f"sub-{sub}_task-{task.name}_truth.json",
                    _truth(task, amplitudes, weights, seed, all_regressors))
        for name, w in weights.items():
            _write_bytes([truth_dir / f"sub-{sub}_task-{task.name}_desc-{name}_mask.nii.gz"],
                         _gz_bytes(_mask_image(w > 0, affine)))
        if surfaces:
            write_surface_truth(truth_dir, sub, task.name, weights, mask, affine, surfaces)


def _write_subject_eeg(root: Path, index: int, seed: int, stim_files: list[str], story_runs: list[pd.DataFrame],
                       eeg_format: str) -> None:
    """The subject's EEG runs (:mod:`bids_encoding.example.meeg`): faces with an N170, the story with planted TRFs
    to word onsets and to the sound track's envelope."""
    from . import meeg as eeg

    sub = f"{index:02d}"
    for run in (1, 2):
        events = eeg.eeg_trial_events(stim_files, _rng(seed, "eeg", index, 0, run))
        data = eeg.simulate_faces_run(events, _rng(seed, "eeg", index, 1, run))
        eeg.write_eeg_run(root, sub, "faces", run, data, events, eeg_format)
    for run, events in enumerate(story_runs, start=1):
        envelope = story_envelope(root / "stimuli" / events["stim_file"].iloc[0])
        data = eeg.simulate_words_run(word_rows(events), TASKS["lpp"].duration, _rng(seed, "eeg", index, 2, run),
                                      envelope)
        eeg.write_eeg_run(root, sub, "lpp", run, data, events, eeg_format)


def write_example_dataset(path: str | Path, *, n_subjects: int = 2, seed: int = 0, overwrite: bool = False,
                          eeg: bool = True, eeg_format: str = "BrainVision", surfaces: tuple[str, ...] = ()) -> Path:
    """Write the example dataset into ``path`` and return it (absolute).

    The same ``seed`` always gives the same files. ``path`` must be absent or
    empty unless ``overwrite`` is true, in which case it must hold an earlier
    example dataset, which is deleted first. With ``eeg``, every subject also has
    simulated EEG of both tasks (:mod:`bids_encoding.example.meeg`) in ``eeg_format``
    (BrainVision, EDF or FIF). ``surfaces`` (among :data:`SURFACE_SPACES`: ``"fsaverage5"``, ``"fsLR"``) adds
    each run's BOLD sampled onto those surfaces as fMRIPrep names it, and the planted truth per vertex
    (:mod:`bids_encoding.example.surfaces`, read back by :func:`load_surface_truth`).
    """
    root = Path(path).expanduser().absolute()
    if not 1 <= n_subjects <= MAX_SUBJECTS:
        raise UserError(f"n_subjects must be between 1 and {MAX_SUBJECTS}, not {n_subjects}",
                        fix="Choose fewer subjects")
    if seed < 0:
        raise UserError(f"the seed must be a non-negative integer, not {seed}", fix="Choose a seed of 0 or more")
    surfaces = check_surfaces(surfaces)
    _check_target(root, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    mask_img = load_mni152_brain_mask(resolution=RESOLUTION)
    mask, affine = np.asarray(mask_img.dataobj) > 0, mask_img.affine
    mask_bytes = _gz_bytes(_mask_image(mask, affine))
    _top_level_files(root, n_subjects, seed)
    if surfaces:
        extend_bidsignore(root / "derivatives" / "fmriprep" / ".bidsignore")
    write_atlas(root, mask, affine)
    stim_files = write_stimuli(root, seed)
    parts = split_parts(split_sentences(read_story()), TASKS["lpp"].n_runs)
    # everyone hears the same recording of the story and sees the same movie: their timing depends on the seed only
    duration = TASKS["lpp"].duration
    word_runs = [word_events(part, duration, _rng(seed, "story", run)) for run, part in enumerate(parts, 1)]
    shared = {"lpp": [with_sound_track(words, track, duration)
                      for words, track in zip(word_runs, write_story_audio(root, word_runs, seed))],
              "movie": [movie_events(movie, TASKS["movie"].duration) for movie in write_movies(root, seed)]}
    for index in range(1, n_subjects + 1):
        _write_subject(root, index, seed, stim_files, mask, affine, mask_bytes, shared, surfaces)
        if eeg:
            _write_subject_eeg(root, index, seed, stim_files, shared["lpp"], eeg_format)
    return root


def atlas_path(dataset: str | Path) -> Path:
    """The example's atlas of the planted spheres (a label image in the data's space, its ``_dseg.tsv`` beside it)."""
    return Path(dataset) / "derivatives" / "atlas" / f"tpl-{SPACE}" / f"tpl-{SPACE}_res-{RESOLUTION}_atlas-planted_dseg.nii.gz"


def write_atlas(root: Path, mask: np.ndarray, affine: np.ndarray) -> Path:
    """One label per planted sphere (a voxel in two spheres goes to the first), for ``--atlas``: the group level's
    region tables then show each feature space's R² in its own sphere and in the others."""
    planted = [p for of_task in PLANTED.values() for p in of_task]
    labels = np.zeros(mask.shape, dtype=np.int16)
    for index, p in enumerate(planted, start=1):
        labels[(sphere_weights(p.center_mm, p.radius_mm, mask, affine) > 0) & (labels == 0)] = index
    path = atlas_path(root)
    _write_bytes([path], _gz_bytes(_mni_image(labels, affine)))
    _write_tsv(path.with_name(path.name.replace(".nii.gz", ".tsv")),
               pd.DataFrame({"index": range(1, len(planted) + 1), "name": [f"{p.name}Sphere" for p in planted]}))
    _write_json(root / "derivatives" / "atlas" / "dataset_description.json", {
        "Name": "The example's planted spheres as an atlas", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "License": "CC0", "GeneratedBy": [{"Name": GENERATOR, "Version": __version__}],
    })
    return path


def load_truth(dataset: str | Path, subject: str, task: str) -> dict[str, np.ndarray]:
    """Boolean masks (brain-mask grid) of the voxels planted for each feature of ``task`` in ``subject``.

    For ``lpp``: ``wordrate``, ``wordlength``, ``semantic`` and the layer gradient's ``shallow``
    (minilm ``L0``) and ``deep`` (minilm ``L5``) spheres (:data:`LAYER_OF`).
    """
    subject = str(subject).removeprefix("sub-")
    folder = Path(dataset) / "sourcedata" / "groundtruth"
    truth_file = folder / f"sub-{subject}_task-{task}_truth.json"
    if not truth_file.exists():
        raise UserError(f"no ground truth for sub-{subject} and task {task}", path=truth_file,
                        fix="Give a dataset written by write_example_dataset, and one of its subjects and tasks")
    names = json.loads(truth_file.read_text(encoding="utf-8"))["features"]
    return {name: np.asarray(nib.load(folder / f"sub-{subject}_task-{task}_desc-{name}_mask.nii.gz").dataobj) > 0
            for name in names}
