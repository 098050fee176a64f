"""One response per trial of a contrast, per run: least-squares-separate betas or HRF-peak samples.

Each trial's response is estimated per run, inside the brain mask, as

* ``lss``: a least-squares-separate beta (Mumford et al. 2012): one GLM per trial,
  with that trial as its own regressor and the run's other events as one regressor
  per condition (their value in the contrast column), plus cosine drifts, a
  constant and the chosen confounds. Designs are nilearn's
  ``make_first_level_design_matrix`` (what ``FirstLevelModel`` builds; glover HRF),
  fitted by ordinary least squares as ``FirstLevelModel(noise_model="ols")`` does.
  Since only the trial's own beta is kept, each GLM reduces to one row of its
  design's pseudo-inverse, and all of a run's trials to one matrix product with the
  masked BOLD: the run is read once, not once per trial;
* ``peak``: the mean of the volumes acquired 4 to 6 s after the trial's onset
  (linear interpolation at 5 s when no volume falls in that window), after
  confounds are regressed out.

BOLD is masked, linearly detrended and z-scored within each run (float32; one run in
memory at a time), and each voxel's trial responses are then z-scored across the
run's trials (labels unused), so that a run's overall level, which differs between
runs, does not shift the held-out run's decision values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..contrasts import contrast_events
from ..errors import UserError
from ..locations import Locations
from ..surface_io import series_length
from ..models.standardize import zscore
from .bold import load_bold, read_confounds


RESPONSES = {
    "lss": "least-squares-separate betas: one OLS GLM per trial (the trial, the run's other events as one regressor "
           "per condition, cosine drifts, constant, confounds), nilearn make_first_level_design_matrix",
    "peak": "mean of the volumes acquired 4-6 s after each onset (linear interpolation at 5 s when none), "
            "confounds regressed out",
}
PEAK_WINDOW = (4.0, 6.0)


def _check_onsets(events: pd.DataFrame, n_scans: int, tr: float, events_file: Path) -> None:
    late = events.loc[(events["label"] != "") & (events["onset"] >= n_scans * tr), "onset"]
    if len(late):
        raise UserError(f"a trial starts at {late.iloc[0]:g} s, after the run's {n_scans} volumes ({n_scans * tr:g} s)",
                        path=events_file, fix="Check that the events belong to this run and use seconds")


def lss_weights(events: pd.DataFrame, n_scans: int, tr: float, confounds: np.ndarray | None = None,
                hrf_model: str = "glover", high_pass: float = 0.01) -> np.ndarray:
    """Least-squares-separate betas as weights on the volumes: trials x volumes, ``weights @ bold`` = betas.

    Row ``t`` is the row of the pseudo-inverse of trial ``t``'s design that gives the trial's
    own regressor's OLS beta. ``events`` needs onset, duration, condition and label (see
    :func:`contrast_events`); the trials are the rows with a label.
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    frame_times = np.arange(n_scans) * tr
    names = {c: f"condition{i}" for i, c in enumerate(pd.unique(events["condition"]))}
    base = pd.DataFrame({"onset": events["onset"].to_numpy(float), "duration": events["duration"].to_numpy(float),
                         "trial_type": events["condition"].map(names).to_numpy(object)})
    regs = None if confounds is None else np.asarray(confounds, float)
    reg_names = None if regs is None else [f"confound{i}" for i in range(regs.shape[1])]
    rows = []
    for trial in np.flatnonzero(events["label"].to_numpy() != ""):
        design_events = base.copy()
        design_events.loc[trial, "trial_type"] = "trial"
        design = make_first_level_design_matrix(frame_times, design_events, hrf_model=hrf_model, drift_model="cosine" if high_pass else None,
                                                high_pass=high_pass, add_regs=regs, add_reg_names=reg_names)
        rows.append(np.linalg.pinv(design.to_numpy())[design.columns.get_loc("trial")])
    return np.asarray(rows)


def peak_weights(onsets: np.ndarray, n_scans: int, tr: float, events_file: Path | None = None,
                 window: tuple[float, float] = PEAK_WINDOW) -> np.ndarray:
    """Weights on the volumes averaging each trial's volumes ``window`` s after its onset: trials x volumes."""
    times = np.arange(n_scans) * tr
    weights = np.zeros((len(onsets), n_scans))
    for row, onset in enumerate(np.asarray(onsets, float)):
        low, high = onset + window[0], onset + window[1]
        if high > times[-1] + 1e-6:
            raise UserError(f"the trial at {onset:g} s is too close to the end of the run for a peak response: its "
                            f"window ({low:g}-{high:g} s) ends after the last volume ({times[-1]:g} s)",
                            path=events_file, fix="Use LSS responses (responses='lss'), which model the whole run, or drop that trial")
        inside = (times >= low - 1e-6) & (times <= high + 1e-6)
        if inside.any():
            weights[row, inside] = 1.0 / inside.sum()
        else:  # the window falls between two volumes (TR > 2 s): interpolate at its middle
            middle = (low + high) / 2 / tr
            k = int(np.floor(middle))
            weights[row, k], weights[row, k + 1] = k + 1 - middle, middle - k
    return weights


@dataclass
class TrialResponses:
    """One response per trial: trials x locations of ``brain`` (float32), with labels, runs and onsets."""

    X: np.ndarray
    labels: np.ndarray
    runs: np.ndarray
    onsets: np.ndarray
    brain: Locations


def trial_responses(bold_files: list[Path], events_files: list[Path], trs: list[float], column: str,
                    values: Sequence[str] | None, brain: Locations, responses: str = "lss",
                    confound_files: list[Path | None] | None = None, confounds: tuple[str, ...] = (),
                    hrf_model: str = "glover", high_pass: float = 0.01) -> TrialResponses:
    """Each contrast trial's response in the mask, z-scored within its run (see the module doc).

    Every run's events (and confounds) are checked before any BOLD is read; then one run's
    BOLD is in memory at a time.
    """
    if responses not in RESPONSES:
        raise UserError(f"unknown trial responses '{responses}'", fix=f"Use one of: {', '.join(RESPONSES)}")
    if not len(bold_files) == len(events_files) == len(trs):
        raise ValueError("give one events file and one TR per BOLD file")
    confound_files = confound_files or [None] * len(bold_files)
    plans = []
    for bold, events_file, tr, confound_file in zip(bold_files, events_files, trs, confound_files):
        events = contrast_events(events_file, column, values)
        n_scans = series_length(bold)
        _check_onsets(events, n_scans, tr, events_file)
        regressors = read_confounds(confound_file, tuple(confounds), bold)
        if regressors is not None and len(regressors) != n_scans:
            raise UserError(f"the confounds have {len(regressors)} rows but the BOLD has {n_scans} volumes",
                            path=confound_file, fix="Use the confounds file that belongs to this run")
        trials = events[events["label"] != ""]
        if responses == "lss":
            weights = lss_weights(events, n_scans, tr, regressors, hrf_model, high_pass)
        else:
            weights = peak_weights(trials["onset"].to_numpy(float), n_scans, tr, events_file)
        plans.append((bold, tr, regressors, trials, weights.astype(np.float32)))
    parts, labels, runs, onsets = [], [], [], []
    for run, (bold, tr, regressors, trials, weights) in enumerate(plans):
        # LSS fits the confounds in its GLMs; both kinds of response see BOLD without its slow drifts
        Y = load_bold(bold, brain, tr, None if responses == "lss" else regressors, high_pass)
        parts.append(zscore(weights @ Y).astype(np.float32))  # across the run's trials
        del Y
        labels += trials["label"].tolist()
        runs += [run] * len(trials)
        onsets += trials["onset"].tolist()
    return TrialResponses(np.concatenate(parts), np.asarray(labels), np.asarray(runs), np.asarray(onsets, float), brain)

