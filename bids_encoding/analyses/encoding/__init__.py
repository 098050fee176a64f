"""Encoding of one task: BOLD and event features in, held-out score maps out.

Reads each run's BOLD inside a brain mask (:mod:`..fmri.bold`; confounds regressed out
within the run, or fitted as their own band), builds each run's design from the stored
features (HRF convolution, or Lanczos downsampling with FIR delays; :mod:`..fmri.design`),
z-scores per run, trims run edges, and fits cross-validated ridge
(:mod:`..models.voxelwise`). ``fit_encoding`` fits one model per feature space;
``fit_joint_encoding`` fits one banded model over several spaces and splits its R²
between them. With ``--save-weights`` each per-space model is also refitted on all runs and
saved (:func:`weights_output`) for :mod:`.predict` to apply to new stimuli. Plain
functions; the workflow wraps them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import features as feature_store
from ...derivatives import Output, column_descriptions, save_tsv_gz, write_tsv
from ...fmri.bold import TaskData, load_task, run_entities
from ...fmri.design import add_delays, remove_drifts, tr_features
from ...fmri.masks import atlas_labels, roi_mask
from ...models.noise_ceiling import explainable_variance
from ...models.ridge import DEFAULT_ALPHAS
from ...models.standardize import zscore
from ...errors import UserError
from ...models import layers as layer_sweep
from ...models import significance
from ...models.voxelwise import EncodingScores, compare_models, encode_runs, refit_weights
from ...surface_io import file_kind
from ...options import EncodingOptions, FMRIOptions, StatsOptions, check_save_weights, parse_comparison
from ...progress import Step

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
    "bestLayer": "the extractor's layer (its index, 0 = embeddings) whose model has the highest held-out R² (averaged "
                 "over outer folds) at this location; NaN outside the brain mask",
    "bestLayerRSquare": "held-out R² (averaged over outer folds) of the layer in stat-bestLayer",
    "explainableVariance": "share of each voxel's variance repeated across runs with identical stimuli (noise ceiling "
                           "of R²; bias-corrected, Schoppe et al. 2016)",
}
REGION_COLUMNS = {
    "index": "label value in the atlas image", "name": "label name (from the atlas's TSV, when given)",
    "n_voxels": "voxels of the region inside the brain mask", "mean_r2": "mean held-out R²",
    "max_r2": "largest held-out R²", "mean_r": "mean held-out correlation",
    "fraction_significant": "fraction of the region's voxels with q < 0.05 (FDR)",
}
COMPARISON_REGION_COLUMNS = {
    **{key: REGION_COLUMNS[key] for key in ("index", "name", "n_voxels")},
    "mean_delta_r2": "mean over the region's voxels of held-out R² of model A minus that of model B",
    "fraction_significant": "fraction of the region's voxels with q < 0.05 (FDR) in the paired comparison",
}

LAYER_COLUMNS = {
    "index": "label value in the atlas image (1 for the --roi region)",
    "name": "label name (from the atlas's TSV when given; 'roi' for the --roi region)",
    "layer": "the extractor's layer (0 = embeddings)", "n_voxels": "voxels of the region inside the brain mask",
    "mean_r2": "held-out R² of this layer's model, averaged over the region's voxels and the outer folds",
    "ci_low": "lower bound of the 95 % confidence interval of mean_r2 across outer folds (t distribution over the "
              "folds' region means; folds share training data, so the interval is approximate)",
    "ci_high": "upper bound of that confidence interval", "n_folds": "outer folds",
    "best": "1 for the layer with the highest mean_r2 in the region, else 0",
}
LAYER_LABEL = re.compile(r"^L(\d+)$")


def layer_of(label: str) -> int | None:
    """The layer index of a feature space label of an extractor with layers (``L6`` -> 6), else None."""
    match = LAYER_LABEL.match(label)
    return int(match.group(1)) if match else None


def alphas(options: EncodingOptions) -> np.ndarray:
    """The ridge penalties searched: the options', else the solver's default grid."""
    return np.asarray(options.alphas if options.alphas else DEFAULT_ALPHAS, dtype=float)


def describe(options: EncodingOptions, fmri: FMRIOptions, stats: StatsOptions) -> dict[str, Any]:
    """How the designs were built and the models fitted, for every sidecar."""
    if options.design == "hrf":
        design = (f"{fmri.hrf_model} HRF convolution of event features, or of continuous features resampled to the fine "
                  "grid (polyphase anti-aliasing filter), oversampling 16")
    else:
        design = ("Lanczos downsampling of event features, or of continuous features, to the TR grid, FIR delays "
                  f"{list(options.delays)} TRs")
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


def run_design(features: feature_store.FeatureSet, label: str, n_scans: int, tr: float, options: EncodingOptions,
               hrf_model: str, high_pass: float = 0.0) -> np.ndarray:
    """One run's design for one feature space (FIR delays added when asked), z-scored within the run."""
    design = tr_features(features, label, n_scans, tr, options.design, hrf_model)
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


def region_table(labels: np.ndarray, names: dict[int, str], measures: dict[str, Any]) -> pd.DataFrame:
    """One row per atlas region (label value, name, size) with each measure of its voxels: ``measures`` maps a
    column to a function of the region's boolean voxel mask."""
    rows = []
    for index in sorted(set(np.unique(labels)) - {0}):
        inside = labels == index
        rows.append({"index": int(index), "name": names.get(int(index), f"label{index}"), "n_voxels": int(inside.sum()),
                     **{column: float(measure(inside)) for column, measure in measures.items()}})
    return pd.DataFrame(rows, columns=["index", "name", "n_voxels", *measures])


def region_summary(scores: EncodingScores, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    """One row per atlas region: size, mean and max R², mean r, fraction significant."""
    return region_table(labels, names, {"mean_r2": lambda v: scores.r2[v].mean(), "max_r2": lambda v: scores.r2[v].max(),
                                        "mean_r": lambda v: scores.r[v].mean(),
                                        "fraction_significant": lambda v: (scores.q[v] < 0.05).mean()})


def _write_regions(table: pd.DataFrame, columns: dict[str, str], desc: str, out_dir: Path, atlas: str,
                   metadata: dict) -> Output:
    path = out_dir / f"desc-{desc}_regions.tsv"
    write_tsv(table, path)
    return Output(in_file=str(path), entities={"desc": desc}, suffix="regions",
                  metadata={**column_descriptions(columns), "Atlas": str(atlas), **metadata})


def _write_maps(scores: EncodingScores, desc: str, task: TaskData, out_dir: Path, metadata: dict,
                atlas: str | None) -> list[Output]:
    outputs = []
    if atlas:
        labels, names = atlas_labels(atlas, task.brain)
        outputs.append(_write_regions(region_summary(scores, labels, names), REGION_COLUMNS, desc, out_dir, atlas,
                                      {"Model": metadata.get("Model")}))
    for stat, values in (("rSquare", scores.r2), ("r", scores.r), ("alpha", scores.alpha), ("p", scores.p), ("q", scores.q)):
        outputs += task.brain.map_outputs(values, out_dir / f"desc-{desc}_stat-{stat}", {"desc": desc, "stat": stat},
                                          {"Description": STATS[stat], **metadata,
                                           "Sources": [str(b) for b in task.bold_files]})
    return outputs


def layer_outputs(by_layer: dict[int, np.ndarray], extractor: str, task: TaskData, out_dir: Path, metadata: dict,
                  fmri: FMRIOptions) -> list[Output]:
    """A layer sweep of one extractor: the best layer per voxel and its R², and with --atlas or --roi the R² by
    layer per region with confidence intervals across outer folds (``desc-<extractor>_layers.tsv``)."""
    layers = list(by_layer)
    fold_r2 = np.stack([by_layer[k] for k in layers])  # layers x folds x voxels
    best, best_r2 = layer_sweep.best_layer(fold_r2.mean(axis=1), layers)
    sources = {"Sources": [str(b) for b in task.bold_files], "Layers": layers}
    outputs = []
    for stat, values in (("bestLayer", best), ("bestLayerRSquare", best_r2)):
        outputs += task.brain.map_outputs(values, out_dir / f"desc-{extractor}_stat-{stat}",
                                          {"desc": extractor, "stat": stat},
                                          {"Description": STATS[stat], **metadata, **sources}, fill=np.nan)
    if fmri.atlas:
        labels, names = atlas_labels(fmri.atlas, task.brain)
    elif fmri.roi:
        labels, names = roi_mask(fmri.roi, task.brain).astype(int), {1: "roi"}
    else:
        return outputs
    rows = []
    for index, region in layer_sweep.region_layer_r2(fold_r2, labels).items():
        top = int(np.argmax(region["mean"]))
        rows += [{"index": index, "name": names.get(index, f"label{index}"), "layer": layer,
                  "n_voxels": region["n_locations"], "mean_r2": region["mean"][k], "ci_low": region["ci_low"][k],
                  "ci_high": region["ci_high"][k], "n_folds": fold_r2.shape[1], "best": int(k == top)}
                 for k, layer in enumerate(layers)]
    path = out_dir / f"desc-{extractor}_layers.tsv"
    write_tsv(pd.DataFrame(rows, columns=list(LAYER_COLUMNS)), path)
    outputs.append(Output(in_file=str(path), entities={"desc": extractor}, suffix="layers",
                          metadata={**column_descriptions(LAYER_COLUMNS), **metadata, **sources,
                                    "Regions": str(fmri.atlas or fmri.roi), "ConfidenceLevel": layer_sweep.CONFIDENCE}))
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
    outputs = [Output(in_file=str(path), entities={"desc": "brain", **extra}, suffix="mask",
                      metadata={"Description": f"{task.brain.unit} the models were fitted in", "Type": "Brain",
                                "Method": task.brain.method, "Sources": task.brain.sources})
               for path, extra in task.brain.mask_files(out_dir / "desc-brain")]
    groups = repeated_runs(feature_files, task)
    if groups:
        ev = np.mean([explainable_variance(np.stack([task.Y_runs[i] for i in g])) for g in groups], axis=0)
        outputs += task.brain.map_outputs(ev, out_dir / "desc-repeats_stat-explainableVariance",
                                          {"desc": "repeats", "stat": "explainableVariance"},
                                          {"Description": STATS["explainableVariance"], "RepeatedRuns": groups,
                                           "Sources": [str(b) for b in task.bold_files]})
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


def _kind_of(features: feature_store.FeatureSet) -> str:
    return "one row per event" if features.rate is None else f"continuous, sampled at {features.rate:g} Hz"


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
            values = tr_features(features, label, len(y), tr, options.design, hrf_model)
            name = extractor + label
            target = out_dir / f"run{index}_recording-{name}_stim.tsv.gz"
            save_tsv_gz(values, target)
            outputs.append(Output(in_file=str(target), suffix="stim",
                                  entities={**run_entities(bold), "recording": name, "space": ""},
                                  metadata={"SamplingFrequency": 1.0 / tr, "StartTime": 0.0, "Columns": list(columns),
                                            "Description": f"features of {name} ({_kind_of(features)}), {how}",
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
    check_save_weights(options, fmri, surface=file_kind(bold_files[0]) != "volume")
    task = _load(bold_files, trs, mask_files, confound_files, options, fmri)
    spaces, provenance = _spaces(feature_files, task, options, fmri.hrf_model)
    description = describe(options, fmri, stats)
    outputs = []
    extractor = provenance["Plugin"]["Name"]
    by_layer: dict[int, np.ndarray] = {}  # layer -> folds x voxels held-out R²
    for name, X_runs in spaces:
        scores = fit_spaces(task, [(name, X_runs)], options, stats.seed)
        metadata = {"FeatureSpace": name, "Model": _model_metadata(scores, [(name, X_runs)], task, options, description),
                    "Features": provenance}
        outputs += _write_maps(scores, name, task, out_dir, metadata, fmri.atlas)
        if options.save_weights:
            outputs.append(weights_output(task, name, X_runs, scores, feature_files, out_dir, options, fmri, metadata))
        layer = layer_of(name[len(extractor):])
        if layer is not None:
            by_layer[layer] = scores.fold_r2
            model = metadata["Model"]
    if len(by_layer) >= 2:
        metadata = {"FeatureSpaces": [f"{extractor}L{k}" for k in sorted(by_layer)], "Model": model,
                    "Features": provenance}
        outputs += layer_outputs(dict(sorted(by_layer.items())), extractor, task, out_dir, metadata, fmri)
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
        outputs += task.brain.map_outputs(scores.split_r2[b], out_dir / f"desc-{name}_stat-splitRSquare",
                                          {"desc": name, "stat": "splitRSquare"},
                                          {"Description": STATS["splitRSquare"], **metadata, "FeatureSpace": name,
                                           "JointModel": [n for n, _ in spaces],
                                           "Sources": [str(b) for b in task.bold_files]})
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
        q = significance.fdr(p)
        if fmri.atlas:
            labels, names = atlas_labels(fmri.atlas, task.brain)
            table = region_table(labels, names, {"mean_delta_r2": lambda v: delta[v].mean(),
                                                 "fraction_significant": lambda v: (q[v] < 0.05).mean()})
            outputs.append(_write_regions(table, COMPARISON_REGION_COLUMNS, desc, out_dir, fmri.atlas,
                                          {"ComparedModels": metadata["ComparedModels"], "Model": model}))
        for stat, values in (("deltaRSquare", delta), ("p", p), ("q", q)):
            text = STATS[stat] if stat == "deltaRSquare" else (
                f"p-value of the paired comparison ({options.alternative}; see Model.Significance), uncorrected; NaN "
                "where none can be computed" if stat == "p" else STATS["q"])
            outputs += task.brain.map_outputs(values, out_dir / f"desc-{desc}_stat-{stat}", {"desc": desc, "stat": stat},
                                              {"Description": text, **metadata})
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
    with Step(f"weights of {name}: refit on all {len(X)} volumes ({X.shape[1]} features x {task.brain.size} voxels)"):
        weights, intercept = refit_weights(X, _trimmed_bold(task, options), scores.alpha, pca=options.feature_pca,
                                           blocks=blocks, backend=options.backend, chunk_size=options.chunk_size)
    mask = task.brain.img.get_fdata() != 0
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
        "Grid": {"Shape": [int(n) for n in mask.shape], "Affine": np.asarray(task.brain.img.affine, float).tolist(),
                 "NVoxels": int(mask.sum())},
        "Sources": sources,
    }
    return Output(in_file=str(target), entities={"desc": name}, suffix="weights", metadata=sidecar)
