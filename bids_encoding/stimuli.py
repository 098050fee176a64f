"""Stimulus sequences read from a run's events.tsv.

A run's events become up to three typed sequences, one per modality that a
feature extractor can consume:

* :class:`Words`  (modality ``text``)   - events with a ``word`` or ``text`` value;
* :class:`Images` (modality ``image``)  - events whose ``stim_file`` is an image under ``stimuli/``;
* :class:`Trials` (modality ``trials``) - events with a ``trial_type`` value.

Onsets and durations are in seconds from the start of the run, as in BIDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
WORD_COLUMNS = ("word", "text")


@dataclass(frozen=True)
class _Events:
    onset: np.ndarray
    duration: np.ndarray
    source: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.onset)


@dataclass(frozen=True)
class Words(_Events):
    """Words heard or read, one event each."""

    text: tuple[str, ...] = ()
    modality = "text"


@dataclass(frozen=True)
class Images(_Events):
    """Images shown, one event each; ``path`` is absolute."""

    path: tuple[Path, ...] = ()
    modality = "image"


@dataclass(frozen=True)
class Trials(_Events):
    """Trials labelled by their ``trial_type``."""

    trial_type: tuple[str, ...] = ()
    modality = "trials"


Stimuli = Words | Images | Trials
MODALITIES = {cls.modality: cls for cls in (Words, Images, Trials)}


def read_events(events_file: str | Path) -> pd.DataFrame:
    """Read and check a BIDS events.tsv: ``onset`` and ``duration`` must be finite numbers."""
    events_file = Path(events_file)
    if not events_file.exists():
        raise UserError(
            "the events file does not exist",
            path=events_file,
            fix="Add the run's _events.tsv next to its data, as the BIDS specification requires",
        )
    try:
        events = pd.read_csv(events_file, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(
            f"the events file cannot be read as a tab-separated table ({exc})",
            path=events_file,
            fix="Save it as UTF-8 text with tab-separated columns and a header row",
        ) from None
    missing = [c for c in ("onset", "duration") if c not in events.columns]
    if missing:
        raise UserError(
            f"the events file has no {' or '.join(missing)} column (it has: {', '.join(map(str, events.columns)) or 'none'})",
            path=events_file,
            fix="BIDS events files need 'onset' and 'duration' columns in seconds; add them",
        )
    for column in ("onset", "duration"):
        values = pd.to_numeric(events[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 2  # header is line 1
            raise UserError(
                f"column '{column}' holds a value that is not a finite number on line {row} "
                f"({events[column].iloc[row - 2]!r})",
                path=events_file,
                fix=f"Give every event a numeric {column} in seconds",
            )
        events[column] = values.astype(float)
    if (events["onset"] < 0).any() or (events["duration"] < 0).any():
        raise UserError(
            "some events have a negative onset or duration",
            path=events_file,
            fix="Onsets and durations are seconds from the start of the run and cannot be negative",
        )
    return events.sort_values("onset", kind="stable").reset_index(drop=True)


def _present(column: pd.Series) -> np.ndarray:
    return column.notna().to_numpy() & (column.astype(str).str.strip() != "").to_numpy()


def stimuli_from_events(events_file: str | Path, stimuli_dir: str | Path | None) -> dict[str, Stimuli]:
    """Split a run's events into the stimulus sequences they hold, keyed by modality."""
    events_file = Path(events_file)
    events = read_events(events_file)
    source = str(events_file)
    found: dict[str, Stimuli] = {}

    def times(rows: np.ndarray) -> dict:
        return dict(onset=events["onset"].to_numpy()[rows], duration=events["duration"].to_numpy()[rows], source=source)

    word_column = next((c for c in WORD_COLUMNS if c in events.columns), None)
    if word_column is not None:
        rows = _present(events[word_column])
        if rows.any():
            found["text"] = Words(**times(rows), text=tuple(events[word_column][rows].astype(str).str.strip()))

    if "stim_file" in events.columns:
        rows = _present(events["stim_file"])
        names = events["stim_file"][rows].astype(str)
        is_image = names.str.lower().str.endswith(IMAGE_SUFFIXES).to_numpy()
        image_rows = np.flatnonzero(rows)[is_image]
        if len(image_rows):
            paths = tuple(resolve_stim_file(name, stimuli_dir, events_file) for name in events["stim_file"][image_rows])
            mask = np.zeros(len(events), bool)
            mask[image_rows] = True
            found["image"] = Images(**times(mask), path=paths)

    if "trial_type" in events.columns:
        rows = _present(events["trial_type"])
        if rows.any():
            found["trials"] = Trials(**times(rows), trial_type=tuple(events["trial_type"][rows].astype(str)))
    return found


def resolve_stim_file(name: str, stimuli_dir: str | Path | None, events_file: Path) -> Path:
    """Find a ``stim_file`` value under the dataset's ``stimuli/`` folder."""
    if stimuli_dir is None or not Path(stimuli_dir, name).is_file():
        where = Path(stimuli_dir, name) if stimuli_dir else Path("stimuli", name)
        raise UserError(
            f"stim_file '{name}' is listed but {where} does not exist",
            path=events_file,
            fix="Put the stimulus file under the dataset's stimuli/ folder, or correct the stim_file column",
        )
    return Path(stimuli_dir, name).resolve()
