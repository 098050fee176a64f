"""The feature extractor ``sae``: sparse codes of another extractor's activations, from a dictionary fixed per corpus.

An extractor sees one run's stimuli at a time, so a dictionary learned on a run would code
every run differently. Here the dictionary is learned once on a corpus (a text file, or a
folder of images) and every run is coded with it:

1. run the source extractor on the corpus; for each of its feature spaces (layers), standardise
   the activations with their corpus mean and standard deviation and train one sparse
   autoencoder, holding out the last 10 % of the corpus rows for early stopping;
2. run the source on the run's stimuli, standardise with the corpus statistics, encode.

The trained dictionaries are memoised in the process, keyed by the source spec, the corpus
(path, and the size and modification time of its files), the training options and the seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bids_encoding.plugin_api import (EXAMPLE_TEXT, FeatureExtractor, FeatureSet, Images, Option, UserError,
                                      extract_features, feature_extractor, words_from_text)

from .options import TrainingConfig, training_config, with_defaults

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_SD = 1e-8  # a feature whose corpus standard deviation is below this is only centred
SOURCE_HELP = ("the extractor whose activations are coded, with its own options after ':' joined by '+' "
               "(e.g. glove, gpt2:layers=6+context=64; a list: layers=6+9)")


@dataclass(frozen=True)
class Dictionary:
    """One feature space's trained code: the corpus standardisation and the sparse autoencoder."""

    mean: np.ndarray
    sd: np.ndarray
    model: Any  # model.SparseAutoencoder
    info: dict[str, Any]

    def encode(self, values: np.ndarray) -> np.ndarray:
        return self.model.encode_array(((np.asarray(values, float) - self.mean) / self.sd).astype(np.float32))


def source_spec(source: str) -> str:
    """``gpt2:layers=6+context=64`` -> ``gpt2:layers=6;context=64`` (the host splits sae's own options on , and ;)."""
    return str(source).strip().replace("+", ";")


def _source_extractor(spec: str):
    """The configured source extractor, so that a bad source fails when the spec is read."""
    if spec.partition(":")[0].strip().lower() == "sae":
        raise UserError("feature extractor 'sae' cannot take another sae as its source",
                        fix="Name the extractor whose activations are coded, e.g. source=glove")
    return feature_extractor(spec)


def corpus_files(modality: str, corpus: str) -> tuple[Path, tuple[Path, ...]]:
    """The corpus as a path and the files it is made of (the text file; the sorted images of a folder)."""
    if not corpus:
        if modality == "text":
            return Path(EXAMPLE_TEXT), (Path(EXAMPLE_TEXT),)
        raise UserError("feature extractor 'sae' with an image source needs corpus=FOLDER: the images its dictionary "
                        "is learned from (the same for every run)",
                        fix="Give a folder of .png/.jpg images, e.g. sae:source=cnn,corpus=/data/stimuli/images")
    path = Path(corpus).expanduser()
    if not path.exists():
        raise UserError("the corpus given to feature extractor 'sae' does not exist", path=path,
                        fix="Check the path (inside a container, give the path as the container sees it)")
    if modality == "text":
        if not path.is_file():
            raise UserError("a text source's corpus must be a UTF-8 text file, not a folder", path=path,
                            fix="Give corpus=FILE.txt, the text the dictionary is learned from")
        return path, (path,)
    if not path.is_dir():
        raise UserError("an image source's corpus must be a folder of images", path=path,
                        fix="Give corpus=FOLDER holding .png/.jpg/.jpeg images")
    images = tuple(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    if not images:
        raise UserError("the corpus folder holds no .png, .jpg or .jpeg image", path=path,
                        fix="Put the images the dictionary is learned from in it (e.g. the dataset's stimuli)")
    return path, images


def corpus_stimuli(modality: str, path: Path, files: tuple[Path, ...]):
    if modality == "image":
        n = len(files)
        return Images(onset=np.arange(n, dtype=float), duration=np.ones(n), path=files, source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"the corpus is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path,
                        fix="Save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"the corpus cannot be read ({exc.strerror})", path=path, fix="Check its permissions") from None
    words = words_from_text(text)
    if not len(words):
        raise UserError("the corpus holds no words", path=path, fix="Give the text the dictionary is learned from")
    return words


def _stamp(files: tuple[Path, ...]) -> tuple:
    """What identifies the corpus's content cheaply: each file's path, size and modification time."""
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return tuple(stats)


@functools.lru_cache(maxsize=16)
def dictionaries(spec: str, modality: str, corpus: Path, files: tuple[Path, ...], stamp: tuple,
                 config: TrainingConfig, seed: int) -> dict[str, Dictionary]:
    """One trained dictionary per feature space of the source (memoised: a process trains each once)."""
    from .model import train_sae

    features = extract_features(spec, corpus_stimuli(modality, corpus, files))
    found = {}
    for label, values in features.spaces.items():
        values = np.asarray(values, float)
        mean, sd = values.mean(0), values.std(0)
        sd = np.where(sd > MIN_SD, sd, 1.0)
        where = f" space '{label}'" if label else ""
        model, info, _ = train_sae(((values - mean) / sd).astype(np.float32), None, config, seed,
                                   fewer_latents_fix=f"Ask for fewer latents (the corpus gives {len(values)} rows of "
                                                     f"{spec}{where}), or give a longer corpus")
        found[label] = Dictionary(mean, sd, model, {**info, "CorpusRows": len(values)})
    return found


class SAEFeatures(FeatureExtractor):
    """Sparse codes of another extractor's features, from one dictionary per feature space learned on a corpus.

    ``source`` names the extractor (its options after ``:`` joined by ``+``); ``corpus`` is a
    UTF-8 text file for a text source (default: the story shipped with bids-encoding) or a
    folder of images for an image source (required). The modality is the source's. Spaces
    keep the source's labels; columns are ``latent000`` ...
    """

    name = "sae"
    modality = "text"  # for registration; each instance takes its source's modality
    description = "Sparse codes (sparse autoencoder) of another extractor's features, from a dictionary learned on a corpus"
    options = {
        "source": Option("", SOURCE_HELP),
        "corpus": Option("", "what the dictionary is learned from, the same for every run: a UTF-8 text file for a text "
                             "source (default: the story shipped with bids-encoding), a folder of .png/.jpg images for "
                             "an image source"),
        "latents": Option(256, "dictionary size: number of latents"),
        **with_defaults(k=16),
        "seed": Option(0, "seed of the dictionaries' initialisation and batch order"),
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        if not str(self.source).strip():
            raise UserError("feature extractor 'sae' needs source=: the extractor whose features it codes",
                            fix="Name one, e.g. --features sae:source=glove,latents=256,k=16")
        self.config_ = training_config(self)
        extractor, self.source_plugin_ = _source_extractor(source_spec(self.source))
        if extractor.modality not in ("text", "image"):
            raise UserError(f"feature extractor 'sae' codes text or image features, but '{extractor.name}' reads "
                            f"{extractor.modality} stimuli", fix="Name a text or image extractor as source")
        self.modality = extractor.modality
        corpus_files(self.modality, str(self.corpus))  # a missing corpus fails now, not at the first run

    def extract(self, stimuli) -> FeatureSet:
        spec = source_spec(self.source)
        corpus, files = corpus_files(self.modality, str(self.corpus))
        trained = dictionaries(spec, self.modality, corpus, files, _stamp(files), self.config_, int(self.seed))
        features = extract_features(spec, stimuli)
        spaces, columns = {}, {}
        for label, values in features.spaces.items():
            if label not in trained:
                raise UserError(f"the source '{spec}' gave the feature space '{label}' for these stimuli but not for "
                                "the corpus", fix="Report it to the source extractor's authors")
            spaces[label] = trained[label].encode(values).astype(float)
            columns[label] = [f"latent{i:03d}" for i in range(spaces[label].shape[1])]
        return FeatureSet(
            onset=np.asarray(stimuli.onset, float), duration=np.asarray(stimuli.duration, float),
            spaces=spaces, columns=columns,
            info={"source": spec, "source_distribution": f"{self.source_plugin_['Distribution']} {self.source_plugin_['Version']}",
                  "source_info": features.info, "corpus": str(corpus.resolve()), "corpus_files": len(files),
                  "spaces": {label: trained[label].info for label in spaces}},
        )
