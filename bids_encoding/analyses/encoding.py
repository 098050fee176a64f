"""Encoding of one task: BOLD and event features in, held-out score maps out.

Reads each run's BOLD inside a brain mask (:mod:`..fmri.bold`; confounds regressed out
within the run, or fitted as their own band), builds each run's design from the stored
features (HRF convolution, or Lanczos downsampling with FIR delays; :mod:`..fmri.design`),
z-scores per run, trims run edges, and fits cross-validated ridge
(:mod:`..models.voxelwise`). ``fit_encoding`` fits one model per feature space;
``fit_joint_encoding`` fits one banded model over several spaces and splits its R²
between them. Plain functions; the workflow wraps them.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking

from .. import __version__
from .. import features as feature_store
from ..derivatives import (Output, atomic_write, bids_label, column_descriptions, derivative_path, parse_entities,
                           save_nifti, save_tsv_gz, software_versions, write_json, write_tsv)
from ..fmri.bold import TaskData, load_task, run_entities
from ..fmri.design import add_delays, downsample_events, hrf_design, remove_drifts
from ..fmri.masks import atlas_labels
from ..models.noise_ceiling import explainable_variance
from ..models.ridge import DEFAULT_ALPHAS
from ..models.standardize import zscore
from ..errors import UserError
from ..models import significance
from ..models.voxelwise import EncodingScores, compare_models, encode_runs, refit_weights
from ..options import DESIGNS, HRF_MODELS, EncodingOptions, FMRIOptions, StatsOptions, check_save_weights, parse_comparison
from ..progress import Step
from ..stimuli import read_events

log = logging.getLogger("bids_encoding")


STATS = {
    "rSquare": "held-out coefficient of determination (R²), averaged over outer folds",
    "r": "held-out Pearson correlation between predicted and measured BOLD, averaged over outer folds",
    "alpha": "ridge penalty chosen by inner cross-validation (geometric mean over outer folds)",
    "p": "one-sided p-value of the held-out correlation (effective-df t test, see Model.Significance), uncorrected; "
         "NaN where none can be computed",
    "q": "Benjamini-Hochberg FDR-adjusted p-value (q) over the voxels of the mask that have a p-value (NaN where p is)",
    "deltaRSquare": "held-out R² of model A minus that of model B (ComparedModels), both from the same outer folds, "
                    "averaged over folds",
    "splitRSquare": "this feature space's share of the joint banded model's held-out R² (split R²; shares sum to the total)",
    "explainableVariance": "share of each voxel's variance repeated across runs with identical stimuli (noise ceiling "
                           "of R²; bias-corrected, Schoppe et al. 2016)",
}
REGION_COLUMNS = {
    "index": "label value in the atlas image", "name": "label name (from the atlas's TSV, when given)",
    "n_voxels": "voxels of the region inside the brain mask", "mean_r2": "mean held-out R²",
    "max_r2": "largest held-out R²", "mean_r": "mean held-out correlation",
    "fraction_significant": "fraction of the region's voxels with q < 0.05 (FDR)",
}


def alphas(options: EncodingOptions) -> np.ndarray:
    """The ridge penalties searched: the options', else the solver's default grid."""
    return np.asarray(options.alphas if options.alphas else DEFAULT_ALPHAS, dtype=float)


def describe(options: EncodingOptions, fmri: FMRIOptions, stats: StatsOptions) -> dict[str, Any]:
    """How the designs were built and the models fitted, for every sidecar."""
    if options.design == "hrf":
        design = f"{fmri.hrf_model} HRF convolution of event features (oversampling 16)"
    else:
        design = f"Lanczos downsampling of event features to the TR grid, FIR delays {list(options.delays)} TRs"
    drifts = (f"; cosine drifts below {fmri.high_pass:g} Hz and the linear trend regressed out of each run (as from "
              "the BOLD)" if fmri.high_pass else "")
    return {"Design": design + drifts + "; z-scored within each run",
            "HighPass": {"Frequency": fmri.high_pass, "Units": "Hz",
                         "Model": "cosine basis regressed out within each run, from BOLD and design alike "
                                  "(nilearn signal.clean, filter='cosine')" if fmri.high_pass else "none"},
            "Trim": {"Start": options.trim[0], "End": options.trim[1]},
            "Confounds": {"Columns": list(fmri.confounds), "Mode": options.confounds_mode} if fmri.confounds else None,
            "Alphas": [float(a) for a in alphas(options)], "Backend": options.backend, "Seed": stats.seed}


def _trim(x: np.ndarray, trim: tuple[int, int]) -> np.ndarray:
    return x[trim[0]:len(x) - trim[1] if trim[1] else None]


def tr_features(features: feature_store.FeatureSet, label: str, n_scans: int, tr: float,
                options: EncodingOptions, hrf_model: str) -> np.ndarray:
    """One feature space of a run on the TR grid, before delays: HRF-convolved, or Lanczos-downsampled for FIR."""
    values = features.spaces[label]
    if options.design == "fir":
        return downsample_events(features.onset, features.duration, values, n_scans, tr)
    return hrf_design(features.onset, features.duration, values, n_scans, tr, hrf_model=hrf_model)


def run_design(features: feature_store.FeatureSet, label: str, n_scans: int, tr: float, options: EncodingOptions,
               hrf_model: str, high_pass: float = 0.0) -> np.ndarray:
    """One run's design for one feature space (FIR delays added when asked), z-scored within the run."""
    design = tr_features(features, label, n_scans, tr, options, hrf_model)
    if options.design == "fir":
        design = add_delays(design, options.delays)
    return zscore(remove_drifts(design, tr, high_pass)).astype(np.float32)


def _trimmed_bold(task: TaskData, options: EncodingOptions) -> np.ndarray:
    """Every run's BOLD, run edges trimmed: untrimmed, the BOLD as loaded (no copy); trimming copies the kept volumes
    once."""
    return task.Y if not any(options.trim) else np.concatenate([_trim(y, options.trim) for y in task.Y_runs])


def fit_spaces(task: TaskData, spaces: list[tuple[str, list[np.ndarray]]], options: EncodingOptions,
               seed: int = 0, keep_predictions: bool = False) -> EncodingScores:
    """Cross-validated (banded) ridge over the given feature spaces (+ confounds as a band if asked)."""
    bands = [(name, X_runs) for name, X_runs in spaces]
    if task.confound_runs is not None:
        bands.append(("confounds", task.confound_runs))
    X_runs = [_trim(np.hstack([X[i] for _, X in bands]), options.trim) for i in range(len(task.Y_runs))]
    Y = _trimmed_bold(task, options)
    blocks = [len(options.delays) if options.design == "fir" else 1] * len(spaces)
    blocks += [0] * (len(bands) - len(spaces))  # confounds are never reduced
    return encode_runs(
        np.concatenate(X_runs), Y, [len(x) for x in X_runs], bands=[X[0].shape[1] for _, X in bands],
        alphas=alphas(options), backend=options.backend, chunk_size=options.chunk_size,
        n_candidates=options.n_candidates, seed=seed, pca=options.feature_pca, band_blocks=blocks,
        mem_gb=options.mem_gb, label=f"encoding model {' + '.join(name for name, _ in spaces)}",
        keep_predictions=keep_predictions,
    )


def region_summary(scores: EncodingScores, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    """One row per atlas region: size, mean and max R², mean r, fraction significant."""
    rows = []
    for index in sorted(set(np.unique(labels)) - {0}):
        inside = labels == index
        rows.append({"index": int(index), "name": names.get(int(index), f"label{index}"), "n_voxels": int(inside.sum()),
                     "mean_r2": float(scores.r2[inside].mean()), "max_r2": float(scores.r2[inside].max()),
                     "mean_r": float(scores.r[inside].mean()), "fraction_significant": float((scores.q[inside] < 0.05).mean())})
    return pd.DataFrame(rows, columns=list(REGION_COLUMNS))


def _write_maps(scores: EncodingScores, desc: str, task: TaskData, out_dir: Path, metadata: dict,
                atlas: str | None) -> list[Output]:
    outputs = []
    if atlas:
        labels, names = atlas_labels(atlas, task.mask)
        path = out_dir / f"desc-{desc}_regions.tsv"
        write_tsv(region_summary(scores, labels, names), path)
        outputs.append(Output(in_file=str(path), entities={"desc": desc}, suffix="regions",
                              metadata={**column_descriptions(REGION_COLUMNS),
                                        "Atlas": str(atlas), "Model": metadata.get("Model")}))
    for stat, values in (("rSquare", scores.r2), ("r", scores.r), ("alpha", scores.alpha), ("p", scores.p), ("q", scores.q)):
        path = out_dir / f"desc-{desc}_stat-{stat}.nii.gz"
        save_nifti(masking.unmask(values.astype(np.float32), task.mask), path)
        outputs.append(Output(in_file=str(path), entities={"desc": desc, "stat": stat},
                              metadata={"Description": STATS[stat], **metadata, "Sources": [str(b) for b in task.bold_files]}))
    return outputs


def _model_metadata(scores: EncodingScores, spaces: list[tuple[str, list[np.ndarray]]], task: TaskData,
                    options: EncodingOptions, description: dict[str, Any]) -> dict[str, Any]:
    return {
        "Estimator": "banded ridge (bids_encoding.models.ridge.BandedRidgeCV)" if len(spaces) > 1 or task.confound_runs
        else "ridge with one alpha per voxel (bids_encoding.models.ridge.RidgeCV)",
        "CrossValidation": scores.cv, "NFolds": scores.n_folds, **scores.methods, **description,
        "FeatureSpaces": {name: int(X[0].shape[1]) for name, X in spaces},
        "NSamples": int(sum(len(_trim(y, options.trim)) for y in task.Y_runs)),
        "BOLDPreprocessing": "masked, linearly detrended"
                             + (f", cosine drifts below {task.high_pass:g} Hz removed" if task.high_pass else "")
                             + ", confounds regressed out if asked, z-scored within each run",
        "BrainMask": task.brain.describe(),
    }


def repeated_runs(feature_files: list[Path], task: TaskData) -> list[list[int]]:
    """Groups of runs that presented identical stimuli (same events and features, same length)."""
    loaded = [feature_store.load(f)[0] for f in feature_files]

    def key(i: int):
        fs = loaded[i]
        arrays = [fs.onset, fs.duration] + [fs.spaces[k] for k in sorted(fs.spaces)]
        return (len(task.Y_runs[i]),) + tuple(np.round(a, 6).tobytes() for a in arrays)

    groups: dict[tuple, list[int]] = {}
    for i in range(len(loaded)):
        groups.setdefault(key(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def task_outputs(task: TaskData, feature_files: list[Path], out_dir: Path) -> list[Output]:
    """What belongs to the task, not to one model: the brain mask, and the noise ceiling when stimuli repeat."""
    mask_path = out_dir / "desc-brain_mask.nii.gz"
    save_nifti(nib.Nifti1Image(np.asarray(task.mask.dataobj).astype(np.uint8), task.mask.affine), mask_path)
    outputs = [Output(in_file=str(mask_path), entities={"desc": "brain"}, suffix="mask",
                      metadata={"Description": "voxels the models were fitted in", "Type": "Brain",
                                "Method": task.brain.method, "Sources": task.brain.sources})]
    groups = repeated_runs(feature_files, task)
    if groups:
        ev = np.mean([explainable_variance(np.stack([task.Y_runs[i] for i in g])) for g in groups], axis=0)
        path = out_dir / "desc-repeats_stat-explainableVariance.nii.gz"
        save_nifti(masking.unmask(ev.astype(np.float32), task.mask), path)
        outputs.append(Output(in_file=str(path), entities={"desc": "repeats", "stat": "explainableVariance"},
                              metadata={"Description": STATS["explainableVariance"], "RepeatedRuns": groups,
                                        "Sources": [str(b) for b in task.bold_files]}))
    return outputs


def _spaces(feature_files: list[Path], task: TaskData, options: EncodingOptions, hrf_model: str) -> tuple[list, dict]:
    """Designs per feature space of one extractor's feature files (one file per run), with provenance."""
    loaded = [feature_store.load(f) for f in feature_files]
    provenance = loaded[0][1]
    extractor = provenance["Plugin"]["Name"]
    spaces = []
    for label in loaded[0][0].spaces:
        X_runs = [run_design(fs, label, len(y), tr, options, hrf_model, task.high_pass) for (fs, _), y, tr in zip(loaded, task.Y_runs, task.trs)]
        spaces.append((extractor + label, X_runs))
    return spaces, provenance


def stim_outputs(feature_files: list[Path], task: TaskData, out_dir: Path, options: EncodingOptions,
                 hrf_model: str) -> list[Output]:
    """Each run's features on the TR grid (before delays and z-scoring) as BIDS ``_stim.tsv.gz`` files."""
    outputs = []
    how = ("Lanczos-downsampled to the volumes' acquisition times" if options.design == "fir"
           else f"convolved with the {hrf_model} HRF and sampled at the volumes' acquisition times")
    for index, (path, y, tr, bold) in enumerate(zip(feature_files, task.Y_runs, task.trs, task.bold_files)):
        features, provenance = feature_store.load(path)
        extractor = provenance["Plugin"]["Name"]
        for label, columns in features.columns.items():
            values = tr_features(features, label, len(y), tr, options, hrf_model)
            name = extractor + label
            target = out_dir / f"run{index}_recording-{name}_stim.tsv.gz"
            save_tsv_gz(values, target)
            outputs.append(Output(in_file=str(target), suffix="stim",
                                  entities={**run_entities(bold), "recording": name, "space": ""},
                                  metadata={"SamplingFrequency": 1.0 / tr, "StartTime": 0.0, "Columns": list(columns),
                                            "Description": f"features of {name}, {how}",
                                            "Features": provenance, "Sources": [provenance.get("Events", str(bold))]}))
    return outputs


def _load(bold_files, trs, mask_files, confound_files, options: EncodingOptions, fmri: FMRIOptions) -> TaskData:
    none = [None] * len(bold_files)
    return load_task(bold_files, trs, mask_files or none, confound_files or none, fmri.confounds,
                     regress=options.confounds_mode == "regress", high_pass=fmri.high_pass, mask=fmri.mask)


def fit_encoding(bold_files: list[Path], feature_files: list[Path], trs: list[float], out_dir: Path,
                 mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                 options: EncodingOptions = EncodingOptions(), fmri: FMRIOptions = FMRIOptions(),
                 stats: StatsOptions = StatsOptions()) -> list[Output]:
    """One model per feature space of one extractor; returns the written maps with their metadata."""
    out_dir = Path(out_dir)
    check_save_weights(options, fmri)
    task = _load(bold_files, trs, mask_files, confound_files, options, fmri)
    spaces, provenance = _spaces(feature_files, task, options, fmri.hrf_model)
    description = describe(options, fmri, stats)
    outputs = []
    for name, X_runs in spaces:
        scores = fit_spaces(task, [(name, X_runs)], options, stats.seed)
        metadata = {"FeatureSpace": name, "Model": _model_metadata(scores, [(name, X_runs)], task, options, description),
                    "Features": provenance}
        outputs += _write_maps(scores, name, task, out_dir, metadata, fmri.atlas)
        if options.save_weights:
            outputs.append(weights_output(task, name, X_runs, scores, feature_files, out_dir, options, fmri, metadata))
    return (outputs + task_outputs(task, feature_files, out_dir)
            + stim_outputs(feature_files, task, out_dir, options, fmri.hrf_model))


def fit_joint_encoding(bold_files: list[Path], feature_files: list[list[Path]], trs: list[float], out_dir: Path,
                       mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                       options: EncodingOptions = EncodingOptions(), fmri: FMRIOptions = FMRIOptions(),
                       stats: StatsOptions = StatsOptions()) -> list[Output]:
    """One banded model over every feature space of several extractors, with split R² per space."""
    out_dir = Path(out_dir)
    task = _load(bold_files, trs, mask_files, confound_files, options, fmri)
    spaces, provenances = [], []
    for files in feature_files:
        found, provenance = _spaces(files, task, options, fmri.hrf_model)
        spaces += found
        provenances.append(provenance)
    scores = fit_spaces(task, spaces, options, stats.seed)
    if options.save_weights:
        log.info("--save-weights saves each feature space's own model; the joint banded model is not saved (its "
                 "per-voxel band weights, averaged over folds, need a solve per voxel)")
    model = _model_metadata(scores, spaces, task, options, describe(options, fmri, stats))
    metadata = {"FeatureSpace": "joint", "Model": model, "Features": provenances}
    outputs = _write_maps(scores, "joint", task, out_dir, metadata, fmri.atlas)
    for b, (name, _) in enumerate(spaces):
        path = out_dir / f"desc-{name}_stat-splitRSquare.nii.gz"
        save_nifti(masking.unmask(scores.split_r2[b].astype(np.float32), task.mask), path)
        outputs.append(Output(in_file=str(path), entities={"desc": name, "stat": "splitRSquare"},
                              metadata={"Description": STATS["splitRSquare"], **metadata, "FeatureSpace": name,
                                        "JointModel": [n for n, _ in spaces], "Sources": [str(b) for b in task.bold_files]}))
    return outputs



def comparison_label(a: str, b: str) -> str:
    """``desc`` of the comparison of A with B: ``gloveVsGpt2L6`` (camelCase, BIDS labels are alphanumeric)."""
    return f"{a}Vs{b[:1].upper()}{b[1:]}"


def compare_encoding(bold_files: list[Path], feature_files: list[list[Path]], trs: list[float], out_dir: Path,
                     mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                     options: EncodingOptions = EncodingOptions(), fmri: FMRIOptions = FMRIOptions(),
                     stats: StatsOptions = StatsOptions()) -> list[Output]:
    """Each --compare A:B of two feature spaces: delta R² on the same folds, with a paired p and q per voxel.

    The two models are refitted here with their held-out predictions kept (the per-space fits
    do not keep them, to spare memory when nothing is compared).
    """
    out_dir = Path(out_dir)
    pairs = [parse_comparison(spec) for spec in options.compare]
    task = _load(bold_files, trs, mask_files, confound_files, options, fmri)
    spaces, provenances = {}, []
    for files in feature_files:
        found, provenance = _spaces(files, task, options, fmri.hrf_model)
        spaces.update(found)
        provenances.append(provenance)
    unknown = sorted({label for pair in pairs for label in pair} - set(spaces))
    if unknown:
        raise UserError(f"--compare names feature spaces that were not modelled: {', '.join(unknown)} (feature spaces "
                        f"of this task: {', '.join(spaces)})",
                        fix="Compare two of those labels, or add the missing extractor to --features")
    description = describe(options, fmri, stats)
    fitted: dict[str, EncodingScores] = {}
    for label in dict.fromkeys(label for pair in pairs for label in pair):
        fitted[label] = fit_spaces(task, [(label, spaces[label])], options, stats.seed, keep_predictions=True)
    outputs = []
    for a, b in pairs:
        X = np.concatenate([_trim(np.hstack([spaces[a][i], spaces[b][i]]), options.trim) for i in range(len(task.Y_runs))])
        Y = _trimmed_bold(task, options)
        delta, p = compare_models(Y, fitted[a], fitted[b], X, [len(_trim(y, options.trim)) for y in task.Y_runs],
                                  options.alternative)
        model = _model_metadata(fitted[a], [(a, spaces[a]), (b, spaces[b])], task, options, description)
        model.update(Estimator="ridge with one alpha per voxel (bids_encoding.models.ridge.RidgeCV), one model per "
                               "feature space", Significance=significance.describe_comparison(options.alternative),
                     SignificanceNull=significance.COMPARISON_NAME, Alternative=options.alternative)
        metadata = {"ComparedModels": {"A": a, "B": b}, "Model": model, "Features": provenances,
                    "Sources": [str(f) for f in task.bold_files]}
        desc = comparison_label(a, b)
        for stat, values in (("deltaRSquare", delta), ("p", p), ("q", significance.fdr(p))):
            path = out_dir / f"desc-{desc}_stat-{stat}.nii.gz"
            save_nifti(masking.unmask(values.astype(np.float32), task.mask), path)
            text = STATS[stat] if stat == "deltaRSquare" else (
                f"p-value of the paired comparison ({options.alternative}; see Model.Significance), uncorrected; NaN "
                "where none can be computed" if stat == "p" else STATS["q"])
            outputs.append(Output(in_file=str(path), entities={"desc": desc, "stat": stat},
                                  metadata={"Description": text, **metadata}))
    return outputs


# --------------------------------------------------------------------------- saved models and predictions

WEIGHTS_FORMAT = 1  # of the weights files: bump when what they hold changes
OVERSAMPLING = 16  # of hrf_design, as the fits use it
PREDICT_COMMAND = "bids-encoding predict WEIGHTS.json EVENTS.tsv OUT"


def design_columns(columns: list[str], options: EncodingOptions) -> list[str]:
    """The names of a design's columns: the features' own, or each delay's copy of them (``name_delay2``) for FIR."""
    if options.design != "fir":
        return list(columns)
    return [f"{column}_delay{delay}" for delay in options.delays for column in columns]


def weights_output(task: TaskData, name: str, X_runs: list[np.ndarray], scores: EncodingScores,
                   feature_files: list[Path], out_dir: Path, options: EncodingOptions, fmri: FMRIOptions,
                   metadata: dict[str, Any]) -> Output:
    """One feature space's fitted model, to be applied to new stimuli (:func:`predict_response`).

    The weights are refitted on all runs (edges trimmed as in the fit) with each voxel's penalty from the
    cross-validation: the geometric mean over outer folds of the inner folds' choices, as the ``alpha`` map reports.
    The safetensors file holds ``weights`` (design columns x voxels), ``intercept`` (0 unless --feature-pca),
    ``alpha`` and ``voxels`` (each column's (i, j, k) on the brain mask's grid); the sidecar says how to rebuild a
    run's design from its events.
    """
    from safetensors.numpy import save_file

    provenance = metadata["Features"]
    extractor = provenance["Plugin"]["Name"]
    label = name[len(extractor):]
    features, _ = feature_store.load(feature_files[0])
    X = np.concatenate([_trim(x, options.trim) for x in X_runs])
    blocks = len(options.delays) if options.design == "fir" else 1
    with Step(f"weights of {name}: refit on all {len(X)} volumes ({X.shape[1]} features x {task.brain.n_voxels} voxels)"):
        weights, intercept = refit_weights(X, _trimmed_bold(task, options), scores.alpha, pca=options.feature_pca,
                                           blocks=blocks, backend=options.backend, chunk_size=options.chunk_size)
    mask = np.asarray(task.mask.dataobj) != 0
    voxels = np.argwhere(mask).astype(np.int32)  # C order: the order of the masker's columns (and of every map)
    tensors = {"weights": weights, "intercept": intercept, "alpha": scores.alpha.astype(np.float32), "voxels": voxels}
    target = out_dir / f"desc-{name}_weights.safetensors"
    # one metadata key: safetensors writes several in no fixed order, and the same fit must give the same bytes
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(target),
              metadata={"bids-encoding": json.dumps({"Format": WEIGHTS_FORMAT, "FeatureSpace": name}, sort_keys=True)})
    columns = design_columns(features.columns.get(label) or [f"f{i}" for i in range(features.spaces[label].shape[1])],
                             options)
    hrf = options.design == "hrf"
    events = [feature_store.load(f)[1].get("Events") for f in feature_files]
    sources = [str(b) for b in task.bold_files] + [str(e) for e in events if e]
    sidecar = {
        **metadata,
        "Description": f"the fitted encoding model of {name}: ridge weights refitted on all runs with each voxel's "
                       f"penalty. Apply it to the stimuli of any events file with `{PREDICT_COMMAND}`; by hand, the "
                       "predicted response of a run is design @ weights + intercept (tensors of the .safetensors "
                       "file), the design built from the run's events as 'Design' says",
        "Format": WEIGHTS_FORMAT,
        "Extractor": {"Spec": provenance.get("Spec", extractor), **provenance["Plugin"],
                      "Options": provenance.get("Options", {}), "Space": label},
        "Design": {"Type": options.design, "HRFModel": fmri.hrf_model if hrf else None,
                   "Oversampling": OVERSAMPLING if hrf else None, "Delays": None if hrf else list(options.delays),
                   "HighPass": fmri.high_pass, "Trim": list(options.trim), "RepetitionTime": float(task.trs[0]),
                   "Description": describe(options, fmri, StatsOptions())["Design"],
                   "Function": "bids_encoding.analyses.encoding.run_design"},
        "Columns": columns,
        "Standardization": {
            "Features": "each design column, its drifts removed as from the BOLD, z-scored within each run over the "
                        "run's volumes (population sd): a prediction depends on the length of the run it is made for",
            "BOLD": metadata["Model"]["BOLDPreprocessing"],
            "Prediction": "design @ weights + intercept: the BOLD response in z units of a run (the fitted BOLD was "
                          "z-scored within each run); confounds and drifts are not part of it"},
        "RepetitionTime": float(task.trs[0]),
        "Refit": {"NSamples": int(len(X)), "Trim": list(options.trim),
                  "Alpha": "each voxel's penalty (tensor 'alpha'): the geometric mean over outer folds of the "
                           f"penalties chosen by inner cross-validation (the desc-{name}_stat-alpha map)",
                  "FeaturePCA": (f"{options.feature_pca} components per delay, fitted on all runs' features; the "
                                 "weights are mapped back to the original features and the centring is the "
                                 "intercept") if options.feature_pca else None},
        "Tensors": {
            "weights": {"Shape": list(weights.shape), "DType": "float32",
                        "Description": "design columns ('Columns') x voxels ('voxels')"},
            "intercept": {"Shape": list(intercept.shape), "DType": "float32",
                          "Description": "added to each voxel's prediction (0 unless FeaturePCA)"},
            "alpha": {"Shape": list(scores.alpha.shape), "DType": "float32", "Description": "each voxel's penalty"},
            "voxels": {"Shape": list(voxels.shape), "DType": "int32",
                       "Description": "(i, j, k) of each voxel on the grid ('Grid'); the brain mask written beside "
                                      "(desc-brain_mask.nii.gz) holds the same voxels"}},
        "Grid": {"Shape": [int(n) for n in mask.shape], "Affine": np.asarray(task.mask.affine, float).tolist(),
                 "NVoxels": int(mask.sum())},
        "Sources": sources,
    }
    return Output(in_file=str(target), entities={"desc": name}, suffix="weights", metadata=sidecar)


@dataclass(frozen=True)
class SavedModel:
    """An encoding model read back from its weights' sidecar and safetensors file (:func:`load_model`)."""

    sidecar_file: Path
    sidecar: dict[str, Any]
    weights: np.ndarray  # design columns x voxels
    intercept: np.ndarray  # voxels
    voxels: np.ndarray  # voxels x 3: (i, j, k) on the grid
    shape: tuple[int, int, int]
    affine: np.ndarray
    tr: float
    options: EncodingOptions  # the design and its delays
    hrf_model: str
    high_pass: float

    @property
    def name(self) -> str:
        return str(self.sidecar["FeatureSpace"])

    @property
    def spec(self) -> str:
        return str(self.sidecar["Extractor"]["Spec"])

    @property
    def label(self) -> str:
        """The feature space's label within its extractor's feature set (``""``, ``"L6"``)."""
        return str(self.sidecar["Extractor"].get("Space", ""))


def _not_a_model(path: Path, why: str) -> UserError:
    return UserError(f"this is not the sidecar of a saved encoding model: {why}", path=path,
                     fix="Give the .json sidecar of a desc-<space>_weights.safetensors file that 'bids-encoding ... "
                         "participant --save-weights' wrote (with the .safetensors file beside it)")


def load_model(sidecar_file: Path) -> SavedModel:
    """Read a saved encoding model (the sidecar of its ``_weights.safetensors``), every field checked."""
    sidecar_file = Path(sidecar_file)
    if not sidecar_file.is_file():
        raise UserError("the weights sidecar does not exist", path=sidecar_file,
                        fix="Give the .json sidecar of a desc-<space>_weights.safetensors file written with "
                            "--save-weights")
    try:
        sidecar = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_a_model(sidecar_file, f"it cannot be read as JSON ({exc})") from None
    needed = ("FeatureSpace", "Extractor", "Design", "RepetitionTime", "Grid")
    missing = [key for key in needed if not isinstance(sidecar, dict) or key not in sidecar]
    if missing:
        raise _not_a_model(sidecar_file, f"it has no {', '.join(missing)}"
                                         + (" (a sidecar of an embedder's weights?)" if "Embedder" in sidecar else ""))
    tensors_file = sidecar_file.with_name(sidecar_file.name.removesuffix(".json") + ".safetensors")
    if not tensors_file.is_file():
        raise UserError("the weights file beside this sidecar does not exist", path=tensors_file,
                        fix="Keep the .safetensors file beside its .json sidecar, with the same name")
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(tensors_file))
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError or ValueError
        raise UserError(f"the weights file cannot be read as safetensors ({type(exc).__name__}: {exc})",
                        path=tensors_file, fix="Restore it, or re-run the participant level with --save-weights") from None
    try:
        design, grid = sidecar["Design"], sidecar["Grid"]
        shape = tuple(int(n) for n in grid["Shape"])
        affine = np.asarray(grid["Affine"], dtype=float)
        tr = float(sidecar["RepetitionTime"])
        if design["Type"] not in DESIGNS or (design["Type"] == "hrf" and design.get("HRFModel") not in HRF_MODELS):
            raise ValueError(f"unknown design {design['Type']!r} / HRF {design.get('HRFModel')!r}")
        delays = tuple(int(d) for d in design.get("Delays") or EncodingOptions().delays)
        options = EncodingOptions(design=design["Type"], delays=delays)
        high_pass = float(design.get("HighPass") or 0.0)
        spec = str(sidecar["Extractor"]["Spec"])
        if len(shape) != 3 or affine.shape != (4, 4) or not tr > 0 or not math.isfinite(tr) or not spec:
            raise ValueError("the grid needs a 3D shape and a 4x4 affine, the TR a positive number, the extractor a "
                             "spec")
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
        raise _not_a_model(sidecar_file, f"its model description is incomplete or invalid ({exc})") from None
    absent = [key for key in ("weights", "intercept", "voxels") if key not in tensors]
    if absent:
        raise UserError(f"the weights file has no tensor {', '.join(absent)}", path=tensors_file,
                        fix="Give an encoding model's weights written with --save-weights (not an embedder's)")
    weights, intercept, voxels = tensors["weights"], tensors["intercept"], tensors["voxels"]
    n_voxels = weights.shape[1] if weights.ndim == 2 else -1
    if (weights.ndim != 2 or intercept.shape != (n_voxels,) or voxels.shape != (n_voxels, 3)
            or (len(voxels) and (voxels.min() < 0 or np.any(voxels.max(axis=0) >= np.asarray(shape))))):
        raise UserError(f"the weights file's tensors do not fit together (weights {list(weights.shape)}, intercept "
                        f"{list(intercept.shape)}, voxels {list(voxels.shape)}, grid {list(shape)})",
                        path=tensors_file, fix="Restore the file and its sidecar from the same run")
    return SavedModel(sidecar_file, sidecar, weights.astype(np.float32, copy=False),
                      intercept.astype(np.float32, copy=False), voxels.astype(np.int64), shape, affine, tr, options,
                      str(design.get("HRFModel") or FMRIOptions().hrf_model), high_pass)


def model_design(model: SavedModel, features: feature_store.FeatureSet, n_volumes: int) -> np.ndarray:
    """A run's design for a saved model: :func:`run_design`, with the design the model was fitted with."""
    return run_design(features, model.label, n_volumes, model.tr, model.options, model.hrf_model, model.high_pass)


def volumes_to_cover(events_file: Path, tr: float) -> int:
    """The volumes from 0 to the end of the last event, rounded up to whole TRs."""
    events = read_events(events_file)
    end = float((events["onset"] + events["duration"]).max()) if len(events) else 0.0
    return int(math.ceil(end / tr - 1e-9))


def predict(model: SavedModel, events_file: Path, stimuli_dir: Path | None = None, n_volumes: int | None = None,
            cache_dir: Path | None = None, registry=None) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's predicted response (volumes x voxels, z units) to the stimuli of ``events_file``, and the
    features' provenance. The features come from the same extractor, options and cache as the app's."""
    events_file = Path(events_file)
    if n_volumes is not None and n_volumes < 2:
        raise UserError(f"--n-volumes {n_volumes}: a prediction is z-scored over its volumes, as a run, and needs at "
                        "least 2", fix="Give the number of volumes of the run to predict, e.g. --n-volumes 200")
    if n_volumes is None:
        n_volumes = volumes_to_cover(events_file, model.tr)
        if n_volumes < 2:
            raise UserError(f"the events end {'before any volume' if n_volumes == 0 else 'within the first TR'} "
                            f"({model.tr:g} s), too early for a prediction z-scored over a run", path=events_file,
                            fix="Give the run's length with --n-volumes N")
    features, provenance = feature_store.extract(model.spec, events_file, stimuli_dir, registry, cache_dir)
    fitted = model.sidecar["Extractor"]
    now = provenance.get("Plugin", {})
    if (now.get("Distribution"), now.get("Version")) != (fitted.get("Distribution"), fitted.get("Version")) or \
            json.dumps(provenance.get("Options"), sort_keys=True, default=str) != \
            json.dumps(fitted.get("Options"), sort_keys=True, default=str):
        log.warning("the model of %s was fitted on features of %s %s with options %s; these come from %s %s with options "
                    "%s: the prediction is only as good as the features agree", model.name,
                    fitted.get("Distribution"), fitted.get("Version"), fitted.get("Options"), now.get("Distribution"),
                    now.get("Version"), provenance.get("Options"))
    if model.label not in features.spaces:
        raise UserError(f"the extractor '{model.spec}' gave the feature spaces {sorted(features.spaces)} for these "
                        f"events, not '{model.label}', which the model of {model.name} was fitted on",
                        path=events_file, fix="Install the plugin version the model was fitted with (see its sidecar's "
                                              "'Extractor')")
    design = model_design(model, features, n_volumes)
    if design.shape[1] != model.weights.shape[0]:
        raise UserError(f"the design of these events has {design.shape[1]} columns, and the model of {model.name} "
                        f"{model.weights.shape[0]} weights per voxel", path=events_file,
                        fix="Install the plugin version the model was fitted with (see its sidecar's 'Extractor')")
    return design @ model.weights + model.intercept, provenance


def prediction_entities(model: SavedModel, events_file: Path) -> dict[str, str]:
    """The name of a prediction: the brain's entities (subject, acquisition, space) from the model's file name, the
    stimuli's (session, task, run) from the events' (a task named after the events file when its name has none)."""
    fitted, stimuli = parse_entities(model.sidecar_file), parse_entities(events_file)
    task = stimuli.get("task") or bids_label(Path(events_file).name.split(".")[0].removesuffix("_events")) or "events"
    return {"subject": fitted.get("subject", ""), "session": stimuli.get("session", ""), "task": task,
            "acquisition": fitted.get("acquisition", ""), "run": stimuli.get("run", ""),
            "space": fitted.get("space", ""), "desc": bids_label(model.name, "Predicted")}


def write_prediction(model: SavedModel, prediction: np.ndarray, events_file: Path, out_dir: Path,
                     provenance: dict[str, Any], command: str | None = None) -> Path:
    """The predicted response as a 4D NIfTI on the model's grid (0 outside its voxels, TR in the header) and its
    JSON sidecar, each written atomically into ``out_dir`` under a BIDS-style name."""
    data = np.zeros(model.shape + (len(prediction),), dtype=np.float32)
    data[tuple(model.voxels.T)] = prediction.T
    img = nib.Nifti1Image(data, model.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms(img.header.get_zooms()[:3] + (model.tr,))
    name = derivative_path(prediction_entities(model, events_file), "bold", ".nii.gz").name
    target = Path(out_dir) / name
    atomic_write(target, lambda tmp: tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)))
    tensors = model.sidecar_file.with_name(model.sidecar_file.name.removesuffix(".json") + ".safetensors")
    write_json(target.with_name(name.replace(".nii.gz", ".json")), {
        "Description": f"BOLD response predicted by the encoding model of {model.name} for the stimuli of "
                       f"{Path(events_file).name}: design @ weights + intercept, in z units of a run (the model was "
                       "fitted to BOLD z-scored within each run); 0 outside the model's voxels",
        "Units": "z", "RepetitionTime": model.tr, "NumberOfVolumes": int(len(prediction)), "StartTime": 0.0,
        "FeatureSpace": model.name,
        "EncodingModel": {"Weights": str(model.sidecar_file), "Extractor": model.sidecar["Extractor"],
                          "Design": model.sidecar["Design"], "Model": model.sidecar.get("Model")},
        "Features": provenance,
        "Sources": [str(Path(events_file).resolve()), str(model.sidecar_file.resolve()), str(tensors.resolve())],
        "bids-encoding": {"Version": __version__, "Command": command, "SoftwareVersions": software_versions()},
    })
    return target


def predict_response(weights_file: Path, events_file: Path, out_dir: Path, stimuli_dir: Path | None = None,
                     n_volumes: int | None = None, cache_dir: Path | None = None, registry=None,
                     command: str | None = None) -> Path:
    """``bids-encoding predict``: a saved model's predicted response to an events file's stimuli, written into
    ``out_dir``; returns the image's path."""
    model = load_model(weights_file)
    prediction, provenance = predict(model, events_file, stimuli_dir, n_volumes, cache_dir, registry)
    return write_prediction(model, prediction, events_file, out_dir, provenance, command)
