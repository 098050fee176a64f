"""The types a plugin builds on: options, feature sets, extractors and embedders.

This module imports nothing of the host (the registry, the cache, the analyses), as
simonw/llm's ``models.py`` never imports ``plugins.py``: a plugin's classes can be read,
built and tested without the host running. Plugins reach these names through
:mod:`bids_encoding.plugin_api`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import UserError
from ..stimuli import MODALITIES, Stimuli

KNOWN_MODALITIES = tuple(MODALITIES)
LABEL = re.compile(r"^[A-Za-z0-9]*$")


def int_list(raw: str) -> list[int]:
    """Parse ``"6,9"`` or ``"6 9"`` into ``[6, 9]``."""
    return [int(v) for v in re.split(r"[,\s]+", str(raw).strip()) if v]


def str_list(raw: str) -> list[str]:
    """Parse ``"a,b"`` or ``"a b"`` into ``["a", "b"]``."""
    return [v for v in re.split(r"[,\s]+", str(raw).strip()) if v]


def layer_indices(raw: str, n_layers: int) -> list[int]:
    """``"all"`` or indices such as ``"6,9"`` / ``"-1"`` (negative from the end) as sorted layer numbers.

    For model plugins' ``layers=`` option; anything out of range is a :class:`UserError`.
    """
    if str(raw).strip().lower() == "all":
        return list(range(n_layers))
    try:
        chosen = [layer % n_layers if -n_layers <= layer < n_layers else None for layer in int_list(raw)]
    except ValueError:
        chosen = [None]
    if None in chosen or not chosen:
        raise UserError(f"layers={raw} does not name layers of this model (0 to {n_layers - 1}, or negative from the end)",
                        fix=f"Pick layers between 0 and {n_layers - 1}, or layers=all")
    return sorted(set(chosen))


def _parse_bool(raw: str) -> bool:
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true or false)")


@dataclass(frozen=True)
class Option:
    """One option of a plugin: its default, a help line, and how to parse it from text.

    ``type`` defaults to the type of ``default`` (``str`` when the default is None).
    """

    default: Any
    help: str = ""
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None

    def parse(self, raw: Any) -> Any:
        """Turn a value given on the command line or in a config file into this option's type."""
        if not isinstance(raw, str):
            value = raw
        else:
            kind = self.type or (type(self.default) if self.default is not None else str)
            value = _parse_bool(raw) if kind is bool else kind(raw)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, self.choices))}")
        return value


@dataclass(frozen=True)
class FeatureSet:
    """Features of a stimulus sequence: one or more named spaces, one row per event or per time sample.

    ``spaces`` maps a short alphanumeric label (``""`` for a single space, or e.g.
    ``"L6"`` for a layer) to an ``n_rows x n_features`` float array. The full
    label of a space in derivative names is the extractor's name followed by this
    label (``gpt2L6``). ``info`` holds facts for the sidecar (e.g. out-of-vocabulary
    counts).

    Event features (``rate`` None) have one row per event, at its ``onset`` for its
    ``duration``. Continuous features (a ``rate`` in Hz, from audio or video) have one
    row per sample: ``onset`` holds each sample's time in the run and ``duration`` is
    ``1 / rate``; :meth:`continuous` builds them from each clip's samples. The host
    brings either kind to the data's own time grid (fMRI volumes, M/EEG samples).
    """

    onset: np.ndarray
    duration: np.ndarray
    spaces: dict[str, np.ndarray]
    columns: dict[str, list[str]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    rate: float | None = None

    @classmethod
    def single(cls, stimuli: Stimuli, values: np.ndarray, columns: list[str] | None = None, **info) -> "FeatureSet":
        """A feature set with one space, aligned to ``stimuli``'s events."""
        values = np.asarray(values, dtype=float)
        return cls(
            onset=np.asarray(stimuli.onset, float),
            duration=np.asarray(stimuli.duration, float),
            spaces={"": values},
            columns={"": list(columns) if columns else [f"f{i}" for i in range(values.shape[1])]},
            info=dict(info),
        )

    @classmethod
    def continuous(cls, stimuli: Stimuli, clips: dict[str, list[np.ndarray]] | list[np.ndarray], rate: float,
                   columns: dict[str, list[str]] | list[str] | None = None, **info) -> "FeatureSet":
        """Continuous features at ``rate`` Hz: ``clips`` holds, per space (or for a single space), one
        ``n_samples x n_features`` array per event of ``stimuli``, its first sample at the event's onset."""
        if not isinstance(clips, dict):
            clips = {"": clips}
            columns = {"": columns} if columns is not None else None
        if len(stimuli) == 0 or not all(len(parts) == len(stimuli) for parts in clips.values()):
            raise ValueError(f"continuous features need one array per event ({len(stimuli)} events)")
        first = next(iter(clips.values()))
        lengths = [len(part) for part in first]
        onset = np.concatenate([start + np.arange(n) / float(rate) for start, n in zip(stimuli.onset, lengths)])
        # float32: continuous features are long (an hour of a speech model's layer at 50 Hz is 180,000 x 768)
        spaces = {label: np.concatenate([np.asarray(p, np.float32).reshape(len(p), -1) for p in parts])
                  for label, parts in clips.items()}
        columns = columns or {}
        return cls(onset=onset, duration=np.full(len(onset), 1.0 / rate), spaces=spaces,
                   columns={label: list(columns.get(label) or [f"f{i}" for i in range(values.shape[1])])
                            for label, values in spaces.items()},
                   info=dict(info), rate=float(rate))

    def check(self, n_events: int) -> None:
        """Raise ValueError unless every space is a finite array with a row per event (per sample when continuous)."""
        if not self.spaces:
            raise ValueError("the feature set has no feature space")
        if self.rate is not None:
            if not (np.isfinite(self.rate) and self.rate > 0):
                raise ValueError(f"the sampling rate {self.rate!r} is not a positive number")
            n_events = len(self.onset)
        for label, values in self.spaces.items():
            if not LABEL.match(label):
                raise ValueError(f"space label {label!r} is not alphanumeric")
            if values.ndim != 2 or values.shape[0] != n_events:
                expected = "n_samples" if self.rate is not None else "n_events"
                raise ValueError(f"space {label!r} has shape {values.shape}, expected ({n_events}, n_features) "
                                 f"({expected} rows)")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"space {label!r} holds NaN or infinite values")


class _Configurable:
    """Shared by extractors and embedders: name, options, and option storage."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}")
        for key, option in self.options.items():
            setattr(self, key, options.get(key, option.default))

    def get_options(self) -> dict[str, Any]:
        """The options this instance runs with, defaults filled in (for sidecars and cache keys)."""
        return {key: getattr(self, key) for key in self.options}


class FeatureExtractor(_Configurable):
    """Base class of a stimulus feature extractor.

    Subclasses set ``name`` (lowercase alphanumeric), ``modality`` (``text``,
    ``image``, ``audio``, ``video`` or ``trials``), ``description``, ``options``, and
    implement :meth:`extract`. An image extractor also reads movies: the host samples
    their frames at the ``fps`` option it adds, hands them over as images in batches,
    and returns the rows as continuous features.
    """

    kind: ClassVar[str] = "feature extractor"
    modality: ClassVar[str] = ""

    def extract(self, stimuli: Stimuli) -> FeatureSet:  # pragma: no cover - interface
        raise NotImplementedError


class BrainEmbedder(_Configurable):
    """Base class of a brain embedder: learns a latent code of brain samples, without labels.

    Follows scikit-learn's conventions. Subclasses set ``name``, ``description`` and
    ``options`` (the latent size is the option ``latents``) and implement:

    * ``fit(X, X_val=None, *, seed=0)``: learn from ``X`` (training samples x voxels,
      float32, each voxel z-scored within its run); ``X_val`` holds held-out samples of
      other runs, for early stopping; everything random is seeded by ``seed``, so that
      the same inputs give the same weights on CPU. Returns self.
    * ``transform(X)``: ``n_samples x n_latents``.
    * ``inverse_transform(Z)``: the samples the latents reconstruct (for the held-out R²).
    * ``get_weights()`` / ``set_weights(weights)``: the learned parameters as named
      arrays; the host saves them as safetensors, and ``set_weights`` on a fresh
      instance with the same options restores a fitted embedder.

    After ``fit``, ``info_`` may hold facts for the sidecar (epochs, losses).
    """

    kind: ClassVar[str] = "brain embedder"
    modality: ClassVar[str] = "brain"

    def fit(self, X: np.ndarray, X_val: np.ndarray | None = None, *, seed: int = 0) -> "BrainEmbedder":  # pragma: no cover
        raise NotImplementedError

    def transform(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def get_weights(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def set_weights(self, weights: dict[str, np.ndarray]) -> "BrainEmbedder":  # pragma: no cover - interface
        raise NotImplementedError

