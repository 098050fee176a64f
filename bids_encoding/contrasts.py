"""Contrasts of the events: ``--decode COLUMN=VALUE1,VALUE2`` parsed, labelled, and matched to each run's events.

Shared by fMRI decoding, the evaluation of embeddings and EEG/MEG decoding: one
reading of which events are the trials to tell apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .derivatives import bids_label
from .errors import UserError
from .options import parse_contrast
from .stimuli import read_events

__all__ = ["contrast_events", "contrast_label", "parse_contrast"]


def contrast_label(values: Sequence[str]) -> str:
    """A BIDS-safe label of the contrast: ``("face", "scrambled")`` -> ``faceVsScrambled``."""
    first, second = bids_label(values[0]), bids_label(values[1])
    if not first or not second:
        raise UserError(f"the contrast values {values[0]!r} and {values[1]!r} leave no letters or digits "
                        "for a file label",
                        fix="Decode values that hold letters or digits")
    return first + "Vs" + second[0].upper() + second[1:]


def _labels(column: pd.Series) -> pd.Series:
    """A column's values as text for matching ('' for n/a; numbers as 1, 2.5, not 1.0)."""
    if pd.api.types.is_numeric_dtype(column):
        return column.map(lambda v: "" if pd.isna(v) else f"{v:g}")
    return column.map(lambda v: "" if pd.isna(v) else str(v).strip())


def _value_label(value: str) -> str:
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


def contrast_events(events_file: Path, column: str, values: Sequence[str] | None) -> pd.DataFrame:
    """A run's events in onset order, with ``condition`` (the column's value, 'n/a' when empty) and
    ``label`` (the contrast value of the trials to decode, '' for the other events).

    ``values=None`` makes every event with a value in the column a trial, labelled by that value.
    """
    events = read_events(events_file)
    if column not in events.columns:
        raise UserError(f"the events file has no column '{column}' (it has: {', '.join(map(str, events.columns))})",
                        path=events_file, fix="Name a column of the events files in --decode COLUMN=A,B")
    text = _labels(events[column])
    if values is None:
        if not (text != "").any():
            raise UserError(f"no event of this run has a value in its {column} column", path=events_file,
                            fix=f"Fill the {column} column, or name another column with --decode COLUMN=A,B")
        return events.assign(condition=text.replace("", "n/a"), label=text)
    label = pd.Series("", index=events.index)
    for value in values:
        matches = (text == value) | (text == _value_label(value))
        if not matches.any():
            present = ", ".join(sorted(set(text) - {""})[:12]) or "none"
            raise UserError(f"no event of this run has '{value}' in its {column} column (values: {present})",
                            path=events_file,
                            fix="Decode values that occur in every run (--decode COLUMN=A,B), or leave this run out")
        label[matches] = value
    return events.assign(condition=text.replace("", "n/a"), label=label)

