"""Embedding of one task: a latent code of a region's brain samples, learned without labels.

Samples are the region's voxel patterns at every volume (``trs``: masked, detrended,
confounds regressed out, z-scored within each run, as encoding reads BOLD) or one per
trial (``trials``: least-squares-separate betas, z-scored within each run, as decoding
estimates them). The region is a mask image (``--roi``), an atlas label (``--atlas``
with ``--region``) or the whole brain mask.

Each embedder (a plugin behind the brain-embedder hook: ``pca`` built in, ``sae`` and
any third party's) is fitted on the samples of every run but the last and stopped
early on the last run (a single run: on its last fifth), never seeing a label. Then:

* the latents of every sample, one ``_timeseries.tsv.gz`` per run;
* the held-out reconstruction R² on the validation run, beside that of PCA with the
  same number of latents fitted on the same samples (the baseline a learned code
  must beat), the mean fraction of active latents and the fraction of dead ones;
* whether the code separates the conditions: the silhouette of the samples'
  conditions in the latents and in the voxels, and leave-one-run-out decoding of two
  conditions from the latents and from the voxels (the same classifier and folds as
  ``--analysis decoding``; labels are only used here, after the embedder is fitted);
* the embedder's weights as safetensors, restorable with its ``set_weights``.

Plain functions; the workflow wraps them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..contrasts import contrast_label, parse_contrast
from ..derivatives import Output, bids_label, column_descriptions, save_tsv_gz, write_tsv
from ..errors import UserError
from ..fmri.bold import load_bold, read_confounds, run_entities
from ..fmri.masks import atlas_labels, brain_mask, roi_mask
from ..locations import Locations
from ..fmri.trials import trial_responses
from ..models.classifiers import CLASSIFIERS, CV_DESCRIPTION, SCORE_COLUMNS, cross_validate_decoder, screening_size
from ..options import DecodingOptions, EmbeddingOptions, FMRIOptions, StatsOptions, check_region
from ..stimuli import read_events

SAMPLES = {
    "trials": "one sample per trial: least-squares-separate betas (one OLS GLM per trial, nilearn "
              "make_first_level_design_matrix), each voxel z-scored across the trials of its run",
    "trs": "one sample per volume: BOLD masked, linearly detrended, confounds regressed out, each voxel z-scored "
           "within its run",
}
MIN_VOXELS = 10
HRF_PEAK = 5.0  # s after an event's onset: a volume is labelled with the condition whose response peaks in it
VALIDATION_FRACTION = 0.2  # of a single run's samples, held out at its end
ACTIVE = 1e-6  # a latent whose magnitude exceeds this is active
EVALUATION_COLUMNS = {**SCORE_COLUMNS,
                      "source": "what was decoded: the embedder's latents, or the region's voxels they were learned from",
                      "silhouette": "silhouette of the two conditions' samples (sklearn silhouette_score, euclidean)"}


def describe(options: EmbeddingOptions, decoding: DecodingOptions, fmri: FMRIOptions,
             stats: StatsOptions) -> dict[str, Any]:
    """Which samples and how the code is evaluated, for every sidecar."""
    return {"Samples": SAMPLES[options.samples]
            + (f" ({fmri.hrf_model} HRF, high-pass {fmri.high_pass} Hz)" if options.samples == "trials"
               else f"; cosine drifts below {fmri.high_pass:g} Hz regressed out" if fmri.high_pass else ""),
            "ConditionColumn": decoding.column, "Confounds": list(fmri.confounds) or None,
            "Validation": "the last run held out for early stopping and the held-out R² (a single run: its last "
                          f"{VALIDATION_FRACTION:.0%})",
            "Classifier": CLASSIFIERS[decoding.classifier], "CrossValidation": CV_DESCRIPTION,
            "Permutations": int(stats.n_permutations), "Seed": stats.seed}


@dataclass
class Samples:
    """The region's samples: ``X`` samples x voxels (float32) with each sample's run, onset and condition."""

    X: np.ndarray
    runs: np.ndarray
    onsets: np.ndarray
    conditions: np.ndarray  # the condition column's value, 'n/a' where none
    region: np.ndarray  # which of the brain's locations are in the region
    region_name: str
    brain: Locations


def region_voxels(brain: Locations, options: EmbeddingOptions, fmri: FMRIOptions) -> tuple[np.ndarray, str]:
    """Which voxels of the brain mask form the region, and a name for it; too few voxels is an error."""
    if fmri.roi:
        selected, name, path = roi_mask(fmri.roi, brain), f"mask image {Path(fmri.roi).name}", fmri.roi
    elif options.region:
        labels, names = atlas_labels(fmri.atlas, brain)
        index = _atlas_index(str(options.region), names, fmri.atlas)
        selected, name, path = labels == index, f"label {names.get(index, index)} of {Path(fmri.atlas).name}", fmri.atlas
    else:
        selected, name, path = np.ones(brain.size, bool), str(brain), None
    if selected.sum() < MIN_VOXELS:
        raise UserError(f"the region ({name}) holds {int(selected.sum())} voxels of the brain mask, too few to learn a "
                        f"latent code (at least {MIN_VOXELS} are needed)", path=path,
                        fix="Choose a larger region, or one in the data's space")
    return selected, name


def _atlas_index(region: str, names: dict[int, str], atlas: str) -> int:
    by_name = {name.lower(): index for index, name in names.items()}
    if region.lower() in by_name:
        return by_name[region.lower()]
    try:
        return int(region)
    except ValueError:
        raise UserError(f"the atlas has no label called '{region}'", path=atlas,
                        fix=f"Give a label index, or a name from the TSV beside the atlas "
                            f"({', '.join(sorted(names.values())[:12]) or 'no TSV found'})") from None


def volume_conditions(events_file: Path, column: str, n_volumes: int, tr: float) -> np.ndarray:
    """Each volume's condition: that of the latest event whose response peaks in it (``HRF_PEAK`` s after its
    onset, for as long as the event lasts and at least one TR), else 'n/a'."""
    events = read_events(events_file)
    out = np.full(n_volumes, "n/a", dtype=object)
    if column not in events.columns:
        return out
    times = np.arange(n_volumes) * tr - HRF_PEAK
    for onset, duration, value in zip(events["onset"], events["duration"].fillna(0), events[column]):
        if pd.isna(value) or not str(value).strip():
            continue
        out[(times >= onset) & (times < onset + max(float(duration), tr))] = str(value).strip()
    return out


def load_samples(bold_files: list[Path], events_files: list[Path], trs: list[float], mask_files: list[Path | None],
                 confound_files: list[Path | None], options: EmbeddingOptions, decoding: DecodingOptions,
                 fmri: FMRIOptions) -> Samples:
    """The region's samples from every run (see the module doc)."""
    brain = brain_mask(bold_files, mask_files, fmri.mask)
    region, region_name = region_voxels(brain, options, fmri)
    column = decoding.column
    if options.samples == "trials":
        found = trial_responses(bold_files, events_files, trs, column, None, brain, "lss", confound_files,
                                fmri.confounds, fmri.hrf_model, fmri.high_pass)
        return Samples(found.X[:, region], found.runs, found.onsets, found.labels.astype(object), region,
                       region_name, brain)
    parts, runs, onsets, conditions = [], [], [], []
    for index, (bold, events_file, tr, confound_file) in enumerate(zip(bold_files, events_files, trs, confound_files)):
        Y = load_bold(bold, brain, tr, read_confounds(confound_file, fmri.confounds, bold), fmri.high_pass)[:, region]
        parts.append(Y)
        runs.append(np.full(len(Y), index))
        onsets.append(np.arange(len(Y)) * tr)
        conditions.append(volume_conditions(events_file, column, len(Y), tr))
    return Samples(np.concatenate(parts), np.concatenate(runs), np.concatenate(onsets), np.concatenate(conditions),
                   region, region_name, brain)


def validation_split(runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: the last run is held out, or the last fifth of a single run."""
    order = np.unique(runs)
    if len(order) > 1:
        return runs != order[-1], runs == order[-1]
    n_val = max(1, int(round(len(runs) * VALIDATION_FRACTION)))
    validation = np.zeros(len(runs), bool)
    validation[-n_val:] = True
    return ~validation, validation


def fit_embedder(spec: str, X_train: np.ndarray, X_val: np.ndarray, seed: int, registry=None):
    """The embedder named by ``spec``, fitted; a plugin's failure or an impossible size is a :class:`UserError`."""
    from ..plugins.registry import installed_plugins, instantiate

    embedder, entry = instantiate(spec, registry if registry is not None else installed_plugins(), "brain embedder")
    latents = getattr(embedder, "latents", None)
    if latents is not None and int(latents) > len(X_train):
        raise UserError(f"embedder '{entry.name}' asks for {latents} latents but has only {len(X_train)} training "
                        "samples: a code larger than the samples it is learned from is meaningless",
                        fix=f"Ask for fewer latents (e.g. --embedder {entry.name}:latents={max(1, len(X_train) // 4)}), "
                            "or use more samples (--samples trs, more runs)")
    try:
        embedder.fit(X_train, X_val, seed=seed)
        check_latents(embedder.transform(X_val), len(X_val))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"brain embedder '{entry.name}' (from {entry.distribution} {entry.version}) failed on "
                        f"{X_train.shape[0]} samples x {X_train.shape[1]} voxels: {type(exc).__name__}: {exc}",
                        fix="Check its options (bids-encoding plugins lists them); if they are right, report it to "
                            "the plugin's authors") from None
    return embedder, entry


def check_latents(Z: np.ndarray, n_samples: int) -> np.ndarray:
    Z = np.asarray(Z)
    if Z.ndim != 2 or len(Z) != n_samples or not np.all(np.isfinite(Z)):
        raise ValueError(f"transform returned shape {Z.shape} (expected ({n_samples}, n_latents)) or non-finite values")
    return Z


def reconstruction_r2(embedder, X: np.ndarray, mean: np.ndarray) -> float:
    """1 - residual / total sum of squares of ``X`` about ``mean`` (the training mean), over every voxel."""
    residual = X - np.asarray(embedder.inverse_transform(embedder.transform(X)))
    return float(1.0 - np.sum(residual ** 2) / np.sum((X - mean) ** 2))


def latent_usage(Z_train: np.ndarray) -> tuple[float, float]:
    """Mean fraction of latents active per sample, and fraction of latents never active, on the training samples."""
    active = np.abs(Z_train) > ACTIVE
    return float(active.mean()), float(1.0 - active.any(axis=0).mean())


def silhouette(X: np.ndarray, conditions: np.ndarray) -> float | None:
    """Silhouette of the labelled samples' conditions (None unless two or more conditions with two samples each)."""
    from sklearn.metrics import silhouette_score

    keep = conditions != "n/a"
    values, counts = np.unique(conditions[keep], return_counts=True)
    if len(values) < 2 or counts.min() < 2 or len(values) >= keep.sum():
        return None
    return float(silhouette_score(X[keep], conditions[keep]))


def evaluation_contrast(samples: Samples, options: DecodingOptions) -> tuple[str, str] | None:
    """The two conditions decoded from the latents: the contrast given, else the column's two values if it has two."""
    if options.decode:
        return parse_contrast(options.decode)[1]
    values = sorted(set(samples.conditions) - {"n/a"})
    return (values[0], values[1]) if len(values) == 2 else None


def decode_code(Z: np.ndarray, samples: Samples, values: tuple[str, str], options: DecodingOptions,
                stats: StatsOptions) -> list[dict]:
    """Decoding rows (latents, then voxels) of the two conditions, leave-one-run-out, with their silhouettes."""
    keep = np.isin(samples.conditions, values)
    rows = []
    for source, X in (("latents", Z), ("voxels", samples.X)):
        scores = cross_validate_decoder(X[keep], samples.conditions[keep].astype(str), samples.runs[keep],
                                        classifier=options.classifier, n_permutations=stats.n_permutations,
                                        seed=stats.seed, screening=screening_size(X.shape[1], 1.0)
                                        if source == "voxels" else None)
        rows.append({**scores.row(source), "silhouette": silhouette(X[keep], samples.conditions[keep])})
    return rows


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _levels(conditions: np.ndarray) -> dict[str, str]:
    return {str(code): value for code, value in enumerate(sorted(set(conditions) - {"n/a"}))}


def timeseries_outputs(Z: np.ndarray, samples: Samples, bold_files: list[Path], label: str, out_dir: Path,
                       metadata: dict[str, Any]) -> list[Output]:
    """One headerless ``_timeseries.tsv.gz`` per run: onset, condition code (-1 for none), latents."""
    levels = _levels(samples.conditions)
    code_of = {value: int(code) for code, value in levels.items()}
    codes = np.array([code_of.get(c, -1) for c in samples.conditions], float)
    columns = ["onset", "condition"] + [f"latent{i:03d}" for i in range(Z.shape[1])]
    outputs = []
    for run, bold in enumerate(bold_files):
        rows = samples.runs == run
        target = out_dir / f"run{run}_desc-{label}_timeseries.tsv.gz"
        save_tsv_gz(np.column_stack([samples.onsets[rows], codes[rows], Z[rows]]), target)
        outputs.append(Output(in_file=str(target), suffix="timeseries",
                              entities={**run_entities(bold), "desc": label},
                              metadata={"Columns": columns,
                                        "onset": {"Description": "the sample's time: the volume's acquisition, or the "
                                                                 "trial's onset", "Units": "s"},
                                        "condition": {"Description": f"the sample's {metadata['ConditionColumn']} "
                                                                     "(-1: none)", "Levels": {**levels, "-1": "n/a"}},
                                        **metadata, "Sources": [str(bold)]}))
    return outputs


def weights_output(embedder, entry, label: str, out_dir: Path, metadata: dict[str, Any]) -> Output:
    """The fitted embedder's weights as safetensors, with what restores it in the file's own metadata."""
    from safetensors.numpy import save_file

    target = out_dir / f"desc-{label}_weights.safetensors"
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in embedder.get_weights().items()}
    # one metadata key: safetensors writes several in no fixed order, and the same fit must give the same bytes
    about = {"embedder": entry.name, "distribution": entry.distribution, "version": entry.version,
             "options": embedder.get_options()}
    save_file(weights, str(target), metadata={"bids-encoding": json.dumps(about, sort_keys=True, default=str)})
    return Output(in_file=str(target), suffix="weights", entities={"desc": label},
                  metadata={"Description": f"weights of the fitted {entry.name} embedder (safetensors); restore with "
                                           f"{entry.cls.__name__}(**options).set_weights(safetensors.numpy.load_file(path))",
                            "Tensors": {k: list(v.shape) for k, v in weights.items()}, **metadata})


def fit_embedding(bold_files: list[Path], events_files: list[Path], trs: list[float], out_dir: Path,
                  mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
                  options: EmbeddingOptions = EmbeddingOptions(), decoding: DecodingOptions = DecodingOptions(),
                  fmri: FMRIOptions = FMRIOptions(), stats: StatsOptions = StatsOptions(),
                  registry=None) -> list[Output]:
    """Fit every embedder on the task's samples; returns the written latents, weights and decoding tables."""
    bold_files, events_files = [Path(b) for b in bold_files], [Path(e) for e in events_files]
    if not len(bold_files) == len(events_files) == len(trs):
        raise ValueError("give one events file and one TR per BOLD file")
    check_region(options, fmri)
    none = [None] * len(bold_files)
    samples = load_samples(bold_files, events_files, trs, mask_files or none, confound_files or none, options,
                           decoding, fmri)
    train, validation = validation_split(samples.runs)
    X_train, X_val = samples.X[train], samples.X[validation]
    mean = X_train.mean(axis=0)
    contrast = evaluation_contrast(samples, decoding)
    out_dir = Path(out_dir)
    sources = [str(b) for b in bold_files] + [str(e) for e in events_files]
    outputs, labels = [], {}
    for spec in options.embedder:
        embedder, entry = fit_embedder(spec, X_train, X_val, stats.seed, registry)
        Z = check_latents(embedder.transform(samples.X), len(samples.X))
        label = bids_label(entry.name, str(Z.shape[1]))
        if label in labels:
            raise UserError(f"the embedders '{labels[label]}' and '{spec}' would both be named {label} in the outputs "
                            "(name and number of latents)", fix="Give them different numbers of latents, or run them "
                                                                 "into separate output folders")
        labels[label] = spec
        sparsity, dead = latent_usage(Z[train])
        baseline, _ = fit_embedder(f"pca:latents={min(Z.shape[1], *X_train.shape)}", X_train, X_val, stats.seed)
        metadata = {
            "Embedder": {**entry.provenance(), "Spec": spec, "Options": embedder.get_options(),
                         "Training": getattr(embedder, "info_", {})},
            "Region": {"Name": samples.region_name, "NVoxels": int(samples.region.sum())},
            "LatentSize": int(Z.shape[1]), "NSamples": int(len(Z)),
            "NTrainingSamples": int(train.sum()), "NValidationSamples": int(validation.sum()),
            "Sparsity": sparsity, "DeadLatentFraction": dead,
            "HeldOutR2": reconstruction_r2(embedder, X_val, mean),
            "PCAHeldOutR2": reconstruction_r2(baseline, X_val, mean),
            "Silhouette": {"Latents": silhouette(Z, samples.conditions),
                           "Voxels": silhouette(samples.X, samples.conditions)},
            **describe(options, decoding, fmri, stats),
        }
        outputs += timeseries_outputs(Z, samples, bold_files, label, out_dir, metadata)
        outputs.append(weights_output(embedder, entry, label, out_dir, {**metadata, "Sources": sources}))
        if contrast and len(np.unique(samples.runs)) > 1:
            rows = decode_code(Z, samples, contrast, decoding, stats)
            path = out_dir / f"desc-{label}_decoding.tsv"
            write_tsv(pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS)), path)
            outputs.append(Output(in_file=str(path), suffix="decoding",
                                  entities={"desc": label + _capitalised(contrast_label(contrast))},
                                  metadata={**column_descriptions(EVALUATION_COLUMNS),
                                            "Contrast": {"Column": decoding.column, "Values": list(contrast)},
                                            "Chance": 0.5, **metadata, "Sources": sources}))
    return outputs

