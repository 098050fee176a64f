"""The decoding stage of one task: which of two kinds of trial was it, read from the brain (or from model features).

The contrast comes from the events (``--decode trial_type=face,scrambled``: a column
and two of its values). Each trial's response is estimated per run, inside the
brain mask, as

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

A linear classifier is then cross-validated leave-one-run-out (:mod:`.models.decoding`),
with a within-run permutation test, on the whole brain (or a region), on each feature
space given, and in a searchlight. On the brain's voxels the classifier first keeps the
voxels with the largest ANOVA F in the training runs (``screening``: 1 % of them, at
least 100; univariate screening as nilearn's ``Decoder`` does): a few informative voxels
among tens of thousands are otherwise lost in the noise of the rest. Screening is fitted
within each fold and each permutation, so it does not leak. Feature spaces are used
whole. Plain functions; the workflow wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking

from . import features as feature_store
from .derivatives import bids_label, save_nifti
from .encoding import brain_mask, image_in_mask, load_bold, read_confounds
from .errors import UserError
from .models.decoding import (CLASSIFIERS, CV_DESCRIPTION, PERMUTATION_DESCRIPTION, DecodingScores,
                              cross_validate_decoder, screening_size, searchlight)
from .stimuli import read_events

RESPONSES = {
    "lss": "least-squares-separate betas: one OLS GLM per trial (the trial, the run's other events as one regressor "
           "per condition, cosine drifts, constant, confounds), nilearn make_first_level_design_matrix",
    "peak": "mean of the volumes acquired 4-6 s after each onset (linear interpolation at 5 s when none), "
            "confounds regressed out",
}
PEAK_WINDOW = (4.0, 6.0)
TABLE_COLUMNS = {
    "source": "what was decoded: 'brain' (trial responses in the brain mask, or the region given) or a feature space",
    "classifier": "the classifier (see Classifier)",
    "balanced_accuracy": "held-out balanced accuracy (mean recall of the two classes), averaged over folds",
    "roc_auc": "held-out area under the ROC curve of the decision function, averaged over folds",
    "p_value": "one-sided permutation p-value of the balanced accuracy (n/a when no permutations were run)",
    "chance": "chance level of balanced accuracy and ROC AUC",
    "n_trials": "trials decoded (both classes, all runs)",
    "n_folds": "cross-validation folds (runs)",
    "n_features": "features per trial (voxels, or the feature space's dimensions)",
}
SCORE_DESCRIPTION = ("searchlight: held-out balanced accuracy of the classifier on the voxels of a sphere centred on "
                     "each voxel, averaged over leave-one-run-out folds (0 where not computed)")


def parse_contrast(spec: str) -> tuple[str, tuple[str, str]]:
    """``"trial_type=face,scrambled"`` -> ``("trial_type", ("face", "scrambled"))``."""
    fix = "Write the contrast as COLUMN=VALUE1,VALUE2, e.g. --decode trial_type=face,scrambled"
    column, sep, rest = str(spec).partition("=")
    column = column.strip()
    if not sep or not column:
        raise UserError(f"--decode '{spec}' names no events column", fix=fix)
    values = tuple(v.strip() for v in rest.split(","))
    if any(not v for v in values):
        raise UserError(f"--decode '{spec}' has an empty value", fix=fix)
    if len(values) < 2:
        raise UserError(f"--decode '{spec}' gives only one class ({values[0]}); decoding tells two apart", fix=fix)
    if len(values) > 2:
        raise UserError(f"--decode '{spec}' gives {len(values)} values; decoding compares exactly two", fix=fix)
    if values[0] == values[1]:
        raise UserError(f"--decode '{spec}' gives the same value twice", fix=fix)
    return column, values


def contrast_label(values: Sequence[str]) -> str:
    """A BIDS-safe label of the contrast: ``("face", "scrambled")`` -> ``faceVsScrambled``."""
    first, second = bids_label(values[0]), bids_label(values[1])
    if not first or not second:
        raise UserError(f"the contrast values {values[0]!r} and {values[1]!r} leave no letters or digits "
                        "for a file label",
                        fix="Decode values that hold letters or digits")
    return first + "Vs" + second[0].upper() + second[1:]


@dataclass(frozen=True)
class DecodingOptions:
    """How trial responses are estimated and classifiers scored (one place, recorded in every sidecar)."""

    contrast: str = ""  # COLUMN=VALUE1,VALUE2
    responses: str = "lss"  # "lss" or "peak"
    classifier: str = "logistic"  # "logistic" or "svm"
    n_permutations: int = 1000
    searchlight: bool = True
    radius: float = 8.0  # mm; on 6 mm voxels a sphere is a voxel and its 6 face neighbours
    seed: int = 0
    confounds: tuple[str, ...] = ()
    roi: str | None = None  # a mask image: whole-pattern decoding (and searchlight centres) within it
    screening: float = 1.0  # percent of the voxels kept by ANOVA screening (at least 100); 100 keeps all
    n_jobs: int = 1  # worker processes for the permutations and the searchlight
    hrf_model: str = "glover"
    high_pass: float = 0.01  # Hz, cosine drifts of the LSS designs
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.contrast:
            parse_contrast(self.contrast)
        if self.responses not in RESPONSES:
            raise UserError(f"unknown trial responses '{self.responses}'", fix=f"Use one of: {', '.join(RESPONSES)}")
        if self.classifier not in CLASSIFIERS:
            raise UserError(f"unknown classifier '{self.classifier}'", fix=f"Use one of: {', '.join(CLASSIFIERS)}")
        if int(self.n_permutations) != self.n_permutations or self.n_permutations < 0:
            raise UserError(f"the number of permutations must be a whole number >= 0, not {self.n_permutations}",
                            fix="Give e.g. 1000 permutations, or 0 to skip the permutation test")
        if not 0 < self.screening <= 100:
            raise UserError(f"the screening percentage must be in (0, 100], not {self.screening}",
                            fix="Give e.g. 1 (percent of the voxels kept), or 100 to keep every voxel")
        if not self.radius > 0:
            raise UserError(f"the searchlight radius must be positive, not {self.radius} mm",
                            fix="Give a radius in mm, e.g. 8")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DecodingOptions":
        values = dict(values)
        if "confounds" in values:
            values["confounds"] = tuple(values["confounds"] or ())
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        column, values = parse_contrast(self.contrast) if self.contrast else ("", ("", ""))
        return {"Contrast": {"Column": column, "Values": list(values)} if self.contrast else None,
                "TrialResponses": RESPONSES[self.responses]
                + (f" ({self.hrf_model} HRF, high-pass {self.high_pass} Hz)" if self.responses == "lss" else ""),
                "BOLDPreprocessing": "masked, linearly detrended, z-scored within each run (float32)",
                "TrialStandardization": "each voxel's trial responses z-scored across the trials of their run "
                                        "(labels unused)",
                "Classifier": CLASSIFIERS[self.classifier],
                "Screening": (f"voxels with the largest ANOVA F in the training folds: {self.screening:g} % of them, "
                              "at least 100 (brain only; feature spaces are used whole)") if self.screening < 100
                else None,
                "CrossValidation": CV_DESCRIPTION,
                "Permutations": {"N": int(self.n_permutations), "Scheme": PERMUTATION_DESCRIPTION},
                "Searchlight": {"Radius": self.radius, "Units": "mm"} if self.searchlight else None,
                "Confounds": list(self.confounds) or None, "RegionOfInterest": self.roi, "Seed": self.seed}


# --------------------------------------------------------------------------- trials


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
        design = make_first_level_design_matrix(frame_times, design_events, hrf_model=hrf_model, drift_model="cosine",
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


def standardize(responses: np.ndarray) -> np.ndarray:
    """Each column z-scored across the rows (one run's trials); constant columns become 0."""
    centred = responses - responses.mean(axis=0)
    scale = centred.std(axis=0)
    return (centred / np.where(scale > 0, scale, 1.0)).astype(np.float32)


@dataclass
class TrialResponses:
    """One response per trial: trials x voxels of ``mask`` (float32), with labels, runs and onsets."""

    X: np.ndarray
    labels: np.ndarray
    runs: np.ndarray
    onsets: np.ndarray
    mask: nib.Nifti1Image


def trial_responses(bold_files: list[Path], events_files: list[Path], trs: list[float], column: str,
                    values: Sequence[str] | None, mask: nib.Nifti1Image, responses: str = "lss",
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
        n_scans = nib.load(str(bold)).shape[3]
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
        Y = load_bold(bold, mask, tr, None if responses == "lss" else regressors)  # LSS fits confounds in its GLMs
        parts.append(standardize(weights @ Y))
        del Y
        labels += trials["label"].tolist()
        runs += [run] * len(trials)
        onsets += trials["onset"].tolist()
    return TrialResponses(np.concatenate(parts), np.asarray(labels), np.asarray(runs), np.asarray(onsets, float), mask)


def roi_mask(roi: str | Path, mask: nib.Nifti1Image) -> np.ndarray:
    """The mask's voxels inside a region image (resampled to the mask's grid, nearest neighbour)."""
    data = image_in_mask(roi, mask, "region mask", "Give a 3D mask image in the data's space")
    selected = (data != 0) & np.isfinite(data)
    if not selected.any():
        raise UserError("the region mask holds no voxel of the brain mask", path=roi,
                        fix="Give a region in the same space as the BOLD data")
    return selected


# --------------------------------------------------------------------------- features


def feature_trials(feature_file: Path, events_file: Path, column: str, values: Sequence[str]) -> dict[str, np.ndarray]:
    """Each feature space's rows for the contrast's trials of one run (matched by onset), trials x features."""
    features, _ = feature_store.load(feature_file)
    events = contrast_events(events_file, column, values)
    onsets = events.loc[events["label"] != "", "onset"].to_numpy(float)
    rows = []
    for onset in onsets:
        distance = np.abs(np.asarray(features.onset, float) - onset)
        nearest = int(np.argmin(distance)) if len(distance) else -1
        if nearest < 0 or distance[nearest] > 1e-3:
            raise UserError(f"no feature row has the onset of the trial at {onset:g} s of {Path(events_file).name}",
                            path=feature_file, fix="Give the features extracted from this run's events")
        rows.append(nearest)
    return {label: np.asarray(values_, float)[rows] for label, values_ in features.spaces.items()}


def decode_features(feature_files: list[Path], events_files: list[Path],
                    options: DecodingOptions) -> dict[str, DecodingScores]:
    """The same classifier and cross-validation on each feature space of one extractor (one file per run).

    Keys are the feature spaces' names (extractor name and space label, as in encoding).
    """
    column, values = parse_contrast(options.contrast)
    if len(feature_files) != len(events_files):
        raise UserError(f"{len(feature_files)} feature files for {len(events_files)} runs",
                        fix="Give one feature file per run, in the order of the runs")
    _, provenance = feature_store.load(feature_files[0])
    extractor = (provenance.get("Plugin") or {}).get("Name") or "features"
    per_run = [feature_trials(f, e, column, values) for f, e in zip(feature_files, events_files)]
    labels, runs = [], []
    for run, events_file in enumerate(events_files):
        events = contrast_events(events_file, column, values)
        trials = events.loc[events["label"] != "", "label"].tolist()
        labels += trials
        runs += [run] * len(trials)
    scores = {}
    for space in per_run[0]:
        X = np.concatenate([spaces[space] for spaces in per_run])
        scores[bids_label(extractor, space)] = cross_validate_decoder(
            X, np.asarray(labels), np.asarray(runs), classifier=options.classifier,
            n_permutations=options.n_permutations, seed=options.seed, n_jobs=options.n_jobs)
    return scores


# --------------------------------------------------------------------------- the stage


def _feature_groups(feature_files) -> list[list[Path]]:
    if not feature_files:
        return []
    if isinstance(feature_files[0], (str, Path)):
        return [list(feature_files)]
    return [list(group) for group in feature_files]


def fit_decoding(bold_files: list[Path], events_files: list[Path], trs: list[float], out_dir: Path,
                 mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                 feature_files: Sequence[Path] | Sequence[Sequence[Path]] | None = None,
                 options: DecodingOptions = DecodingOptions()) -> list[dict[str, Any]]:
    """Decode the contrast from the brain (and from features); returns the written table and map.

    ``feature_files`` is one list of per-run feature files (``bids_encoding.features.save``), or
    several such lists (one per extractor). Outputs, in ``out_dir``: ``desc-<label>_decoding.tsv``
    (one row per source) and, when ``options.searchlight``, ``desc-<label>_stat-score.nii.gz``.
    """
    if not options.contrast:
        raise UserError("decoding needs a contrast to decode",
                        fix="Give one as --decode COLUMN=A,B, e.g. trial_type=face,scrambled")
    column, values = parse_contrast(options.contrast)
    label = contrast_label(values)
    bold_files, events_files = [Path(b) for b in bold_files], [Path(e) for e in events_files]
    if not len(bold_files) == len(events_files) == len(trs):
        raise ValueError("give one events file and one TR per BOLD file")
    if len(bold_files) < 2:
        raise UserError(f"leave-one-run-out decoding needs at least 2 runs, and this task has {len(bold_files)}",
                        path=bold_files[0] if bold_files else None,
                        fix="Give two or more runs of the task, or run encoding instead of --decode")
    out_dir = Path(out_dir)
    feature_rows, feature_sources = [], []
    for group in _feature_groups(feature_files):  # cheap, and checks the feature files before the BOLD is read
        feature_rows += [scores.row(name) for name, scores in decode_features(group, events_files, options).items()]
        feature_sources += [str(f) for f in group]
    none = [None] * len(bold_files)
    mask = brain_mask(bold_files, mask_files or none)
    region = roi_mask(options.roi, mask) if options.roi else None
    responses = trial_responses(bold_files, events_files, trs, column, values, mask, options.responses,
                                confound_files or none, options.confounds, options.hrf_model, options.high_pass)
    X = responses.X if region is None else responses.X[:, region]
    brain = cross_validate_decoder(X, responses.labels, responses.runs, classifier=options.classifier,
                                   n_permutations=options.n_permutations, seed=options.seed, n_jobs=options.n_jobs,
                                   screening=screening_size(X.shape[1], options.screening))
    rows = [brain.row("brain")] + feature_rows
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    path = out_dir / f"desc-{label}_decoding.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")
    sources = [str(b) for b in bold_files] + [str(e) for e in events_files]
    metadata = {**{k: {"Description": v} for k, v in TABLE_COLUMNS.items()}, **options.describe(),
                "Chance": brain.chance, "NFolds": brain.n_folds, "ScreenedVoxels": brain.screening,
                "PositiveClass": sorted(values)[1]}
    outputs = [{"in_file": str(path), "entities": {"desc": label}, "suffix": "decoding",
                "metadata": {**metadata, "Sources": sources + feature_sources}}]
    if options.searchlight:
        scores = searchlight(responses.X, mask, responses.labels, responses.runs, radius=options.radius,
                             classifier=options.classifier, process_mask=region, n_jobs=options.n_jobs)
        map_path = out_dir / f"desc-{label}_stat-score.nii.gz"
        save_nifti(masking.unmask(scores, mask), map_path)
        outputs.append({"in_file": str(map_path), "entities": {"desc": label, "stat": "score"},
                        "metadata": {"Description": SCORE_DESCRIPTION, **options.describe(), "Chance": brain.chance,
                                     "Sources": sources}})
    return outputs
