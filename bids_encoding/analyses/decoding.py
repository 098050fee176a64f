"""fMRI decoding of one task: which of two kinds of trial was it, read from the brain (or from model features).

The contrast comes from the events (``--decode trial_type=face,scrambled``: a column
and two of its values; :mod:`..contrasts`). Each trial's response is estimated per
run inside the brain mask (:mod:`..fmri.trials`: LSS betas or HRF-peak samples).

A linear classifier is then cross-validated leave-one-run-out (:mod:`..models.classifiers`),
with a within-run permutation test, on the whole brain (or a region), on each feature
space given, and in a searchlight (:mod:`..models.searchlight`). On the brain's voxels the
classifier first keeps the voxels with the largest ANOVA F in the training runs
(``screening``: 1 % of them, at least 100; univariate screening as nilearn's ``Decoder``
does): a few informative voxels among tens of thousands are otherwise lost in the noise
of the rest. Screening is fitted within each fold and each permutation, so it does not
leak. Feature spaces are used whole. Plain functions; the workflow wraps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import features as feature_store
from ..contrasts import contrast_events, contrast_label, parse_contrast
from ..derivatives import Output, bids_label, column_descriptions, write_tsv
from ..errors import UserError
from ..fmri.masks import brain_mask, roi_mask
from ..fmri.trials import RESPONSES, trial_responses
from ..models.classifiers import (CLASSIFIERS, CV_DESCRIPTION, PERMUTATION_DESCRIPTION, SCORE_COLUMNS,
                                  DecodingScores, cross_validate_decoder, screening_size)
from ..models.searchlight import searchlight
from ..options import DecodingOptions, FMRIOptions, StatsOptions




SCORE_DESCRIPTION = ("searchlight: held-out balanced accuracy of the classifier on the voxels of a sphere centred on "
                     "each voxel, averaged over leave-one-run-out folds (0 where not computed)")


def _drifts(fmri: FMRIOptions) -> str:
    return f", cosine drifts below {fmri.high_pass:g} Hz regressed out" if fmri.high_pass else ""


def describe(options: DecodingOptions, fmri: FMRIOptions, stats: StatsOptions) -> dict[str, Any]:
    """How trial responses were estimated and classifiers scored, for every sidecar."""
    column, values = parse_contrast(options.decode) if options.decode else ("", ("", ""))
    return {"Contrast": {"Column": column, "Values": list(values)} if options.decode else None,
            "TrialResponses": RESPONSES[options.responses]
            + (f" ({fmri.hrf_model} HRF, high-pass {fmri.high_pass} Hz)" if options.responses == "lss" else ""),
            "BOLDPreprocessing": "masked, linearly detrended" + _drifts(fmri) + ", z-scored within each run (float32)",
            "TrialStandardization": "each voxel's trial responses z-scored across the trials of their run "
                                    "(labels unused)",
            "Classifier": CLASSIFIERS[options.classifier],
            "Screening": (f"voxels with the largest ANOVA F in the training folds: {options.screening:g} % of them, "
                          "at least 100 (brain only; feature spaces are used whole)") if options.screening < 100
            else None,
            "CrossValidation": CV_DESCRIPTION,
            "Permutations": {"N": int(stats.n_permutations), "Scheme": PERMUTATION_DESCRIPTION},
            "Searchlight": {"Radius": options.searchlight_radius, "Units": "mm"} if options.searchlight else None,
            "Confounds": list(fmri.confounds) or None, "RegionOfInterest": fmri.roi, "Seed": stats.seed}


def decode_features(feature_files: list[Path], events_files: list[Path],
                    options: DecodingOptions, stats: StatsOptions = StatsOptions()) -> dict[str, DecodingScores]:
    """The same classifier and cross-validation on each feature space of one extractor (one file per run).

    Keys are the feature spaces' names (extractor name and space label, as in encoding).
    """
    column, values = parse_contrast(options.decode)
    if len(feature_files) != len(events_files):
        raise UserError(f"{len(feature_files)} feature files for {len(events_files)} runs",
                        fix="Give one feature file per run, in the order of the runs")
    _, provenance = feature_store.load(feature_files[0])
    extractor = (provenance.get("Plugin") or {}).get("Name") or "features"
    per_run = [feature_store.trial_features(f, e, column, values) for f, e in zip(feature_files, events_files)]
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
            n_permutations=stats.n_permutations, seed=stats.seed, n_jobs=options.n_jobs)
    return scores


def fit_decoding(bold_files: list[Path], events_files: list[Path], trs: list[float], out_dir: Path,
                 mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                 feature_files: Sequence[Path] | Sequence[Sequence[Path]] | None = None,
                 options: DecodingOptions = DecodingOptions(), fmri: FMRIOptions = FMRIOptions(),
                 stats: StatsOptions = StatsOptions()) -> list[Output]:
    """Decode the contrast from the brain (and from features); returns the written table and map.

    ``feature_files`` is one list of per-run feature files (``bids_encoding.features.save``), or
    several such lists (one per extractor). Outputs, in ``out_dir``: ``desc-<label>_decoding.tsv``
    (one row per source) and, when ``options.searchlight``, ``desc-<label>_stat-score.nii.gz``.
    """
    if not options.decode:
        raise UserError("decoding needs a contrast to decode",
                        fix="Give one as --decode COLUMN=A,B, e.g. trial_type=face,scrambled")
    column, values = parse_contrast(options.decode)
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
    for group in feature_store.groups(feature_files):  # cheap, and checks the feature files before the BOLD is read
        feature_rows += [scores.row(name) for name, scores in decode_features(group, events_files, options, stats).items()]
        feature_sources += [str(f) for f in group]
    none = [None] * len(bold_files)
    locations = brain_mask(bold_files, mask_files or none, fmri.mask)
    region = roi_mask(fmri.roi, locations) if fmri.roi else None
    spheres = locations.spheres(options.searchlight_radius) if options.searchlight else None  # before the BOLD: a
    # surface without a mesh fails here, in a second
    responses = trial_responses(bold_files, events_files, trs, column, values, locations, options.responses,
                                confound_files or none, fmri.confounds, fmri.hrf_model, fmri.high_pass)
    X = responses.X if region is None else responses.X[:, region]
    brain = cross_validate_decoder(X, responses.labels, responses.runs, classifier=options.classifier,
                                   n_permutations=stats.n_permutations, seed=stats.seed, n_jobs=options.n_jobs,
                                   screening=screening_size(X.shape[1], options.screening))
    description = describe(options, fmri, stats)
    rows = [brain.row("brain")] + feature_rows
    table = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    path = out_dir / f"desc-{label}_decoding.tsv"
    write_tsv(table, path)
    sources = [str(b) for b in bold_files] + [str(e) for e in events_files]
    metadata = {**column_descriptions(SCORE_COLUMNS), **description,
                "Chance": brain.chance, "NFolds": brain.n_folds, "ScreenedVoxels": brain.screening,
                "PositiveClass": sorted(values)[1], "BrainMask": locations.describe()}
    outputs = [Output(in_file=str(path), entities={"desc": label}, suffix="decoding",
                      metadata={**metadata, "Sources": sources + feature_sources})]
    if options.searchlight:
        scores = searchlight(responses.X, spheres, responses.labels, responses.runs, radius=options.searchlight_radius,
                             classifier=options.classifier, process_mask=region, n_jobs=options.n_jobs)
        outputs += locations.map_outputs(scores, out_dir / f"desc-{label}_stat-score", {"desc": label, "stat": "score"},
                                         {"Description": SCORE_DESCRIPTION, **description, "Chance": brain.chance,
                                          "Sources": sources})
    return outputs

