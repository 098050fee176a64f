"""The encoding stage of one task: BOLD and event features in, held-out score maps out.

Loads each run's BOLD inside a brain mask (optionally regressing out confounds
within the run), builds each run's design from the stored features (HRF
convolution, or Lanczos downsampling with FIR delays), z-scores per run, trims
run edges, and fits cross-validated ridge. ``fit_encoding`` fits one model per
feature space; ``fit_joint_encoding`` fits one banded model over several spaces
and splits its R² between them. Plain functions; the workflow wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking, signal

from . import features as feature_store
from .derivatives import parse_entities, save_nifti, save_tsv_gz
from .design import add_delays, downsample_events, hrf_design, zscore
from .errors import UserError
from .models.encoding import EncodingScores, encode_runs
from .models.noise_ceiling import explainable_variance
from .models.ridge import DEFAULT_ALPHAS

STATS = {
    "rSquare": "held-out coefficient of determination (R²), averaged over outer folds",
    "r": "held-out Pearson correlation between predicted and measured BOLD, averaged over outer folds",
    "alpha": "ridge penalty chosen by inner cross-validation (geometric mean over outer folds)",
    "p": "one-sided p-value of the held-out correlation (effective-df t test, see Model.Significance), uncorrected; "
         "NaN where none can be computed",
    "q": "Benjamini-Hochberg FDR-adjusted p-value (q) over the voxels of the mask that have a p-value (NaN where p is)",
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


@dataclass(frozen=True)
class EncodingOptions:
    """How designs are built and models fitted (one place, recorded in every sidecar)."""

    design: str = "hrf"  # "hrf" or "fir"
    hrf_model: str = "glover"
    delays: tuple[int, ...] = (1, 2, 3, 4)
    trim: tuple[int, int] = (0, 0)
    confounds: tuple[str, ...] = ()
    confounds_mode: str = "regress"  # "regress" out of the BOLD, or fitted as their own "band"
    backend: str = "numpy"
    alphas: tuple[float, ...] = tuple(float(a) for a in DEFAULT_ALPHAS)
    atlas: str | None = None  # label image in the data's space: a per-region summary TSV per model
    n_candidates: int = 12
    chunk_size: int = 10000
    mem_gb: float | None = None  # cap (GiB) on the fit's resident memory: voxel chunks sized from it (None: chunk_size)
    pca: int = 0  # principal components per feature space, fitted within each outer fold (0: none)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EncodingOptions":
        values = dict(values)
        for key in ("delays", "trim", "confounds", "alphas"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        if self.design == "hrf":
            design = f"{self.hrf_model} HRF convolution of event features (oversampling 16)"
        else:
            design = f"Lanczos downsampling of event features to the TR grid, FIR delays {list(self.delays)} TRs"
        return {"Design": design + "; z-scored within each run",
                "Trim": {"Start": self.trim[0], "End": self.trim[1]},
                "Confounds": {"Columns": list(self.confounds), "Mode": self.confounds_mode} if self.confounds else None,
                "Alphas": list(self.alphas), "Backend": self.backend, "Seed": self.seed}


def brain_mask(bold_files: list[Path], mask_files: list[Path | None]) -> nib.Nifti1Image:
    """The given masks' intersection, or an EPI mask computed from the runs when none is given."""
    given = [str(m) for m in mask_files if m]
    if given:
        return masking.intersect_masks(given, threshold=1.0, connected=False) if len(given) > 1 else nib.load(given[0])
    return masking.compute_multi_epi_mask([str(b) for b in bold_files])


def read_confounds(path: Path | None, columns: tuple[str, ...], bold_file: Path) -> np.ndarray | None:
    """The named columns of an fMRIPrep confounds TSV (n/a in the first rows, as fMRIPrep writes, become 0)."""
    if not columns:
        return None
    if path is None:
        raise UserError("--confounds was given but this run has no desc-confounds_timeseries.tsv", path=bold_file,
                        fix="Give preprocessed data with confounds (--derivatives), or drop --confounds")
    table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"the confounds file has no column {', '.join(missing)} (it has e.g. {', '.join(table.columns[:8])})",
                        path=path, fix="Name columns that exist in the confounds file")
    return table[list(columns)].fillna(0.0).to_numpy(dtype=np.float64)


def load_bold(bold_file: Path, mask: nib.Nifti1Image, tr: float, confounds: np.ndarray | None = None) -> np.ndarray:
    """Masked BOLD (time x voxels), detrended, confounds regressed out, z-scored within the run; NaNs are an error."""
    data = masking.apply_mask(str(bold_file), mask, dtype=np.float32, ensure_finite=False)
    if not np.all(np.isfinite(data)):
        n_bad = int((~np.isfinite(data)).any(axis=0).sum())
        raise UserError(
            f"the BOLD data holds NaN or infinite values in {n_bad} voxel(s) inside the brain mask",
            path=bold_file,
            fix="Re-run preprocessing, or give a brain mask (--derivatives with a desc-brain_mask) that excludes those voxels",
        )
    if confounds is not None and len(confounds) != len(data):
        raise UserError(f"the confounds have {len(confounds)} rows but the BOLD has {len(data)} volumes", path=bold_file,
                        fix="Use the confounds file that belongs to this run")
    return signal.clean(data, detrend=True, standardize="zscore_sample", filter=False, t_r=tr,
                        confounds=confounds).astype(np.float32)


def _trim(x: np.ndarray, trim: tuple[int, int]) -> np.ndarray:
    return x[trim[0]:len(x) - trim[1] if trim[1] else None]


def tr_features(features: feature_store.FeatureSet, label: str, n_scans: int, tr: float,
                options: EncodingOptions) -> np.ndarray:
    """One feature space of a run on the TR grid, before delays: HRF-convolved, or Lanczos-downsampled for FIR."""
    values = features.spaces[label]
    if options.design == "fir":
        return downsample_events(features.onset, features.duration, values, n_scans, tr)
    return hrf_design(features.onset, features.duration, values, n_scans, tr, hrf_model=options.hrf_model)


def run_design(features: feature_store.FeatureSet, label: str, n_scans: int, tr: float, options: EncodingOptions) -> np.ndarray:
    """One run's design for one feature space (FIR delays added when asked), z-scored within the run."""
    design = tr_features(features, label, n_scans, tr, options)
    if options.design == "fir":
        design = add_delays(design, options.delays)
    return zscore(design).astype(np.float32)


@dataclass
class TaskData:
    """Everything one task's models share: mask, cleaned BOLD per run, TRs, confound designs."""

    mask: nib.Nifti1Image
    Y_runs: list[np.ndarray]
    trs: list[float]
    confound_runs: list[np.ndarray] | None
    bold_files: list[Path]
    mask_sources: list[str]
    Y: np.ndarray  # every run's BOLD, one after another (Y_runs are views of it: the data is held once)


def load_task(bold_files: list[Path], trs: list[float], mask_files: list[Path | None],
              confound_files: list[Path | None], options: EncodingOptions) -> TaskData:
    mask = brain_mask(bold_files, mask_files)
    confounds = [read_confounds(c, options.confounds, b) for c, b in zip(confound_files, bold_files)]
    regress = options.confounds_mode == "regress"
    lengths = [nib.load(str(b)).shape[3] for b in bold_files]  # 4D, as bids_io checked
    Y = np.empty((sum(lengths), int(np.count_nonzero(np.asarray(mask.dataobj)))), dtype=np.float32)
    Y_runs = np.split(Y, np.cumsum(lengths)[:-1])
    for y, b, tr, c in zip(Y_runs, bold_files, trs, confounds):  # run by run into one array: no second copy
        y[:] = load_bold(b, mask, tr, c if regress else None)
    confound_runs = None
    if options.confounds and not regress:
        confound_runs = [zscore(c).astype(np.float32) for c in confounds]
    return TaskData(mask, Y_runs, list(trs), confound_runs, list(bold_files),
                    [str(m) for m in mask_files if m] or [str(b) for b in bold_files], Y)


def fit_spaces(task: TaskData, spaces: list[tuple[str, list[np.ndarray]]], options: EncodingOptions) -> EncodingScores:
    """Cross-validated (banded) ridge over the given feature spaces (+ confounds as a band if asked)."""
    bands = [(name, X_runs) for name, X_runs in spaces]
    if task.confound_runs is not None:
        bands.append(("confounds", task.confound_runs))
    X_runs = [_trim(np.hstack([X[i] for _, X in bands]), options.trim) for i in range(len(task.Y_runs))]
    # untrimmed, the BOLD goes in as loaded (no copy); trimming copies the kept volumes once
    Y = task.Y if not any(options.trim) else np.concatenate([_trim(y, options.trim) for y in task.Y_runs])
    blocks = [len(options.delays) if options.design == "fir" else 1] * len(spaces)
    blocks += [0] * (len(bands) - len(spaces))  # confounds are never reduced
    return encode_runs(
        np.concatenate(X_runs), Y, [len(x) for x in X_runs], bands=[X[0].shape[1] for _, X in bands],
        alphas=np.asarray(options.alphas), backend=options.backend, chunk_size=options.chunk_size,
        n_candidates=options.n_candidates, seed=options.seed, pca=options.pca, band_blocks=blocks,
        mem_gb=options.mem_gb, label=f"encoding model {' + '.join(name for name, _ in spaces)}",
    )


def image_in_mask(path: str | Path, mask: nib.Nifti1Image, what: str, fix: str) -> np.ndarray:
    """A 3D image's values at the mask's voxels, resampled to the mask's grid (nearest neighbour)."""
    from nilearn.image import resample_to_img

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise UserError(f"the {what} cannot be read as NIfTI ({exc})", path=path, fix=fix) from None
    if len(img.shape) != 3:
        raise UserError(f"the {what} has shape {img.shape}, not 3D", path=path, fix=fix)
    data = np.asarray(resample_to_img(img, mask, interpolation="nearest", force_resample=True,
                                      copy_header=True).dataobj)
    return data[np.asarray(mask.dataobj) > 0]


def atlas_labels(atlas: str, mask: nib.Nifti1Image) -> tuple[np.ndarray, dict[int, str]]:
    """Atlas labels of the mask's voxels (nearest-neighbour resampled), and names from a TSV beside it."""
    path = Path(atlas)
    labels = image_in_mask(path, mask, "atlas", "Give a 3D label image").astype(int)
    names: dict[int, str] = {}
    table = path.with_name(path.name.split(".")[0] + ".tsv")
    if table.exists():
        frame = pd.read_csv(table, sep="\t")
        if {"index", "name"} <= set(frame.columns):
            names = dict(zip(frame["index"].astype(int), frame["name"].astype(str)))
    return labels, names


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
                options: EncodingOptions) -> list[dict[str, Any]]:
    outputs = []
    if options.atlas:
        labels, names = atlas_labels(options.atlas, task.mask)
        path = out_dir / f"desc-{desc}_regions.tsv"
        region_summary(scores, labels, names).to_csv(path, sep="\t", index=False, float_format="%.6g")
        outputs.append({"in_file": str(path), "entities": {"desc": desc}, "suffix": "regions",
                        "metadata": {**{k: {"Description": v} for k, v in REGION_COLUMNS.items()},
                                     "Atlas": str(options.atlas), "Model": metadata.get("Model")}})
    for stat, values in (("rSquare", scores.r2), ("r", scores.r), ("alpha", scores.alpha), ("p", scores.p), ("q", scores.q)):
        path = out_dir / f"desc-{desc}_stat-{stat}.nii.gz"
        save_nifti(masking.unmask(values.astype(np.float32), task.mask), path)
        outputs.append({"in_file": str(path), "entities": {"desc": desc, "stat": stat},
                        "metadata": {"Description": STATS[stat], **metadata, "Sources": [str(b) for b in task.bold_files]}})
    return outputs


def _model_metadata(scores: EncodingScores, spaces: list[tuple[str, list[np.ndarray]]], task: TaskData,
                    options: EncodingOptions) -> dict[str, Any]:
    return {
        "Estimator": "banded ridge (bids_encoding.models.ridge.BandedRidgeCV)" if len(spaces) > 1 or task.confound_runs
        else "ridge with one alpha per voxel (bids_encoding.models.ridge.RidgeCV)",
        "CrossValidation": scores.cv, "NFolds": scores.n_folds, **scores.methods, **options.describe(),
        "FeatureSpaces": {name: int(X[0].shape[1]) for name, X in spaces},
        "NSamples": int(sum(len(_trim(y, options.trim)) for y in task.Y_runs)),
        "BOLDPreprocessing": "masked, linearly detrended, confounds regressed out if asked, z-scored within each run",
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


def task_outputs(task: TaskData, feature_files: list[Path], out_dir: Path) -> list[dict[str, Any]]:
    """What belongs to the task, not to one model: the brain mask, and the noise ceiling when stimuli repeat."""
    mask_path = out_dir / "desc-brain_mask.nii.gz"
    save_nifti(nib.Nifti1Image(np.asarray(task.mask.dataobj).astype(np.uint8), task.mask.affine), mask_path)
    outputs = [{"in_file": str(mask_path), "entities": {"desc": "brain"}, "suffix": "mask",
                "metadata": {"Description": "voxels the models were fitted in", "Type": "Brain", "Sources": task.mask_sources}}]
    groups = repeated_runs(feature_files, task)
    if groups:
        ev = np.mean([explainable_variance(np.stack([task.Y_runs[i] for i in g])) for g in groups], axis=0)
        path = out_dir / "desc-repeats_stat-explainableVariance.nii.gz"
        save_nifti(masking.unmask(ev.astype(np.float32), task.mask), path)
        outputs.append({"in_file": str(path), "entities": {"desc": "repeats", "stat": "explainableVariance"},
                        "metadata": {"Description": STATS["explainableVariance"], "RepeatedRuns": groups,
                                     "Sources": [str(b) for b in task.bold_files]}})
    return outputs


def _spaces(feature_files: list[Path], task: TaskData, options: EncodingOptions) -> tuple[list, dict]:
    """Designs per feature space of one extractor's feature files (one file per run), with provenance."""
    loaded = [feature_store.load(f) for f in feature_files]
    provenance = loaded[0][1]
    extractor = provenance["Plugin"]["Name"]
    spaces = []
    for label in loaded[0][0].spaces:
        X_runs = [run_design(fs, label, len(y), tr, options) for (fs, _), y, tr in zip(loaded, task.Y_runs, task.trs)]
        spaces.append((extractor + label, X_runs))
    return spaces, provenance


def run_entities(bold_file: Path) -> dict[str, str]:
    """The session, acquisition and run entities of a BOLD file name (raw or fMRIPrep)."""
    found = parse_entities(bold_file)
    return {name: found.get(name, "") for name in ("session", "acquisition", "run")}


def stim_outputs(feature_files: list[Path], task: TaskData, out_dir: Path, options: EncodingOptions) -> list[dict[str, Any]]:
    """Each run's features on the TR grid (before delays and z-scoring) as BIDS ``_stim.tsv.gz`` files."""
    outputs = []
    how = ("Lanczos-downsampled to the volumes' acquisition times" if options.design == "fir"
           else f"convolved with the {options.hrf_model} HRF and sampled at the volumes' acquisition times")
    for index, (path, y, tr, bold) in enumerate(zip(feature_files, task.Y_runs, task.trs, task.bold_files)):
        features, provenance = feature_store.load(path)
        extractor = provenance["Plugin"]["Name"]
        for label, columns in features.columns.items():
            values = tr_features(features, label, len(y), tr, options)
            name = extractor + label
            target = out_dir / f"run{index}_recording-{name}_stim.tsv.gz"
            save_tsv_gz(values, target)
            outputs.append({"in_file": str(target), "suffix": "stim",
                            "entities": {**run_entities(bold), "recording": name, "space": ""},
                            "metadata": {"SamplingFrequency": 1.0 / tr, "StartTime": 0.0, "Columns": list(columns),
                                         "Description": f"features of {name}, {how}",
                                         "Features": provenance, "Sources": [provenance.get("Events", str(bold))]}})
    return outputs


def fit_encoding(bold_files: list[Path], feature_files: list[Path], trs: list[float], out_dir: Path,
                 mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                 options: EncodingOptions = EncodingOptions()) -> list[dict[str, Any]]:
    """One model per feature space of one extractor; returns the written maps with their metadata."""
    out_dir = Path(out_dir)
    none = [None] * len(bold_files)
    task = load_task(bold_files, trs, mask_files or none, confound_files or none, options)
    spaces, provenance = _spaces(feature_files, task, options)
    outputs = []
    for name, X_runs in spaces:
        scores = fit_spaces(task, [(name, X_runs)], options)
        metadata = {"FeatureSpace": name, "Model": _model_metadata(scores, [(name, X_runs)], task, options),
                    "Features": provenance}
        outputs += _write_maps(scores, name, task, out_dir, metadata, options)
    return outputs + task_outputs(task, feature_files, out_dir) + stim_outputs(feature_files, task, out_dir, options)


def fit_joint_encoding(bold_files: list[Path], feature_files: list[list[Path]], trs: list[float], out_dir: Path,
                       mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                       options: EncodingOptions = EncodingOptions()) -> list[dict[str, Any]]:
    """One banded model over every feature space of several extractors, with split R² per space."""
    out_dir = Path(out_dir)
    none = [None] * len(bold_files)
    task = load_task(bold_files, trs, mask_files or none, confound_files or none, options)
    spaces, provenances = [], []
    for files in feature_files:
        found, provenance = _spaces(files, task, options)
        spaces += found
        provenances.append(provenance)
    scores = fit_spaces(task, spaces, options)
    metadata = {"FeatureSpace": "joint", "Model": _model_metadata(scores, spaces, task, options), "Features": provenances}
    outputs = _write_maps(scores, "joint", task, out_dir, metadata, options)
    for b, (name, _) in enumerate(spaces):
        path = out_dir / f"desc-{name}_stat-splitRSquare.nii.gz"
        save_nifti(masking.unmask(scores.split_r2[b].astype(np.float32), task.mask), path)
        outputs.append({"in_file": str(path), "entities": {"desc": name, "stat": "splitRSquare"},
                        "metadata": {"Description": STATS["splitRSquare"], **metadata, "FeatureSpace": name,
                                     "JointModel": [n for n, _ in spaces], "Sources": [str(b) for b in task.bold_files]}})
    return outputs
