"""Contrasts of the events: ``--decode COLUMN=VALUE1,VALUE2`` parsed, labelled, and matched to each run's events.

Shared by fMRI decoding, the evaluation of embeddings and EEG/MEG decoding: one
reading of which events are the trials to tell apart. RSA's conditions (every value
of a column) and the model RDMs given over them are read and checked here too, so
that the plan checks them before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .derivatives import bids_label
from .errors import UserError
from .options import parse_contrast
from .stimuli import read_events

__all__ = ["contrast_events", "contrast_label", "parse_contrast", "read_model_rdm", "task_conditions"]

MIN_CONDITIONS = 3  # an RDM of two conditions holds one dissimilarity: nothing to correlate


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


def task_conditions(events_files: Sequence[Path], column: str) -> list[str]:
    """The task's conditions (sorted), checked: at least :data:`MIN_CONDITIONS`, each in two runs or more
    (a crossvalidated distance pairs a condition's pattern in one run with its pattern in another)."""
    if len(events_files) < 2:
        raise UserError(f"RSA's RDMs are crossvalidated across runs, and this task has {len(events_files)} run",
                        path=events_files[0] if events_files else None,
                        fix="Give two or more runs of the task")
    runs_of: dict[str, int] = {}
    for events_file in events_files:
        events = contrast_events(events_file, column, None)
        for label in set(events.loc[events["label"] != "", "label"]):
            runs_of[label] = runs_of.get(label, 0) + 1
    if len(runs_of) < MIN_CONDITIONS:
        raise UserError(f"the {column} column has {len(runs_of)} distinct values ({', '.join(sorted(runs_of))}), and "
                        f"an RDM needs at least {MIN_CONDITIONS} conditions", path=events_files[0],
                        fix="Choose a column with more values with --conditions (e.g. stim_file: one per stimulus)")
    once = sorted(label for label, n in runs_of.items() if n < 2)
    if once:
        raise UserError(f"{len(once)} conditions of {column} occur in only one run ({', '.join(once[:5])}"
                        f"{', ...' if len(once) > 5 else ''}), so no crossvalidated distance reaches them",
                        path=events_files[0], fix="Choose a --conditions column whose values recur across runs")
    return sorted(runs_of)


def read_model_rdm(name: str, path: str | Path, conditions: list[str]) -> np.ndarray:
    """An external model RDM (a square TSV, its header the condition labels), in the order of ``conditions``."""
    fix = ("Write a square, symmetric TSV whose header names each condition once (the values of the --conditions "
           "column) and whose rows follow the header's order")
    try:
        table = pd.read_csv(path, sep="\t", dtype=float, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"the model RDM '{name}' is not a table of numbers ({str(exc).splitlines()[0]})", path=path,
                        fix=fix) from None
    labels = [str(c) for c in table.columns]
    if table.shape != (len(labels), len(labels)):
        raise UserError(f"the model RDM '{name}' has {table.shape[0]} rows for {len(labels)} columns", path=path, fix=fix)
    missing, extra = sorted(set(conditions) - set(labels)), sorted(set(labels) - set(conditions))
    if missing or extra or len(set(labels)) < len(labels):
        raise UserError(f"the labels of the model RDM '{name}' do not match the task's conditions"
                        + (f"; missing: {', '.join(missing[:5])}" if missing else "")
                        + (f"; unknown: {', '.join(extra[:5])}" if extra else "")
                        + ("; some label is repeated" if len(set(labels)) < len(labels) else ""), path=path, fix=fix)
    values = table.to_numpy(float)
    if not np.all(np.isfinite(values)) or not np.allclose(values, values.T, atol=1e-8):
        raise UserError(f"the model RDM '{name}' is not symmetric or holds values that are not numbers", path=path,
                        fix=fix)
    order = [labels.index(c) for c in conditions]
    return values[np.ix_(order, order)]
