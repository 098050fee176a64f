"""Representational similarity analysis (RSA) of one task: which models share each region's geometry.

The conditions are the values of an events column (``--conditions``; by default
``stim_file``, one condition per stimulus). Each trial's response is a
least-squares-separate beta in the brain mask (:mod:`..fmri.trials`, as decoding
and embedding estimate them); each region (every label of ``--atlas``, or the
``--roi`` image) then gets a representational dissimilarity matrix (RDM) of the
conditions' mean patterns, crossvalidated across runs (:mod:`..models.rsa`).

Model RDMs come from every ``--features`` space (each condition's features averaged
over its trials, correlation distance) and from ``--rdm NAME=FILE.tsv`` files. Each
region's RDM is compared with each model's (``--comparison``), with a p-value from
permuting the conditions. Outputs: one ``desc-<region>_rdm.tsv`` per region and a
``desc-rsa_scores.tsv`` table (region x model); the group level tests the scores
across subjects and gives the noise ceiling across subjects' RDMs.

With ``--rsa-searchlight`` the same RDM and comparison are computed in a sphere
around every voxel of the brain mask (of ``--roi`` when given), giving one
``desc-<model>Rsa_stat-rsa_statmap.nii.gz`` per model and, for the comparisons whose
permutations are matrix products (spearman, whitened), its ``stat-rsaP`` map of
permutation p-values; the group level tests the ``stat-rsa`` maps as it tests the other
participant maps. Plain functions; the workflow wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import features as feature_store
from ..contrasts import contrast_events, read_model_rdm, task_conditions
from ..derivatives import Output, bids_label, column_descriptions, write_tsv
from ..errors import UserError
from ..fmri.masks import atlas_labels, brain_mask, roi_mask
from ..locations import Locations
from ..fmri.trials import RESPONSES, TrialResponses, trial_responses
from ..models.rsa import (COMPARISONS, DISTANCES, LINEAR_COMPARISONS, PERMUTATION_DESCRIPTION,
                          SEARCHLIGHT_DESCRIPTION, brain_rdm, condition_patterns, correlation_rdm, permutation_test,
                          searchlight_rsa)
from ..options import FMRIOptions, RSAOptions, StatsOptions, check_rsa_region

MIN_VOXELS = 2
SCORE_COLUMNS = {
    "region": "the region: an atlas label's name (as in its desc-<region>_rdm.tsv), or 'roi' for the --roi image",
    "model": "the model RDM: a feature space (extractor and space label) or an --rdm NAME",
    "score": "similarity of the region's RDM and the model's (see Comparison)",
    "p_value": "one-sided p-value of the score from permuting the conditions (n/a without permutations)",
    "n_conditions": "conditions in the RDMs",
    "n_voxels": "voxels of the region in the brain mask",
}


def describe(options: RSAOptions, fmri: FMRIOptions, stats: StatsOptions) -> dict[str, Any]:
    """How the RDMs were made and compared, for every sidecar."""
    return {"Method": "representational similarity analysis", "ConditionColumn": options.conditions,
            "TrialResponses": f"{RESPONSES['lss']} ({fmri.hrf_model} HRF, high-pass {fmri.high_pass} Hz), each voxel "
                              "z-scored across the trials of its run; a condition's pattern is the mean of its trials "
                              "in a run",
            "Distance": {"Name": options.distance, "Description": DISTANCES[options.distance]},
            "ModelDistance": "correlation distance (1 - Pearson r) of the conditions' features, each condition's "
                             "features averaged over its trials",
            "Comparison": {"Name": options.comparison, "Description": COMPARISONS[options.comparison]},
            "Permutations": {"N": int(stats.n_permutations), "Scheme": PERMUTATION_DESCRIPTION},
            "Confounds": list(fmri.confounds) or None, "Atlas": fmri.atlas, "RegionOfInterest": fmri.roi,
            "Searchlight": {"Radius": options.rsa_searchlight_radius, "Units": "mm",
                            "Centres": "the voxels of --roi" if fmri.roi else "every voxel of the brain mask"}
            if options.rsa_searchlight else None,
            "Seed": stats.seed, "Chance": 0.0}


# --------------------------------------------------------------------------- conditions and model RDMs


def feature_rdms(feature_files: list[Path], events_files: list[Path], column: str,
                 conditions: list[str]) -> dict[str, np.ndarray]:
    """One correlation-distance RDM per feature space of one extractor (one features file per run): each
    condition's features averaged over its trials. Keys: the spaces' names, as in encoding."""
    _, provenance = feature_store.load(feature_files[0])
    extractor = (provenance.get("Plugin") or {}).get("Name") or "features"
    labels = np.concatenate([contrast_events(e, column, None).query("label != ''")["label"].to_numpy(str)
                             for e in events_files])
    per_run = [feature_store.trial_features(f, e, column, None) for f, e in zip(feature_files, events_files)]
    rdms = {}
    for space in per_run[0]:
        X = np.concatenate([spaces[space] for spaces in per_run])
        means = np.stack([X[labels == c].mean(axis=0) for c in conditions])
        name = bids_label(extractor, space)
        if np.any(means.std(axis=1) == 0):
            raise UserError(f"feature space {name} gives some condition constant features, so its correlation "
                            "distance is undefined", path=feature_files[0],
                            fix="Leave this feature space out, or choose a layer with varying features")
        rdms[name] = correlation_rdm(means)
    return rdms


# --------------------------------------------------------------------------- regions


@dataclass
class Region:
    """One region of the brain mask: its label in file names, its name, and which mask voxels it holds."""

    label: str
    name: str
    voxels: np.ndarray


def regions(brain: Locations, fmri: FMRIOptions) -> list[Region]:
    """Every atlas label holding at least :data:`MIN_VOXELS` voxels of the brain mask, or the --roi image (none
    without either: a searchlight alone)."""
    if not fmri.atlas and not fmri.roi:
        return []
    if fmri.roi:
        return [Region("roi", f"mask image {Path(fmri.roi).name}", roi_mask(fmri.roi, brain))]
    labels, names = atlas_labels(fmri.atlas, brain)
    found = []
    for index in sorted(set(np.unique(labels)) - {0}):
        name = names.get(int(index), f"label{index}")
        if (labels == index).sum() >= MIN_VOXELS:
            found.append(Region(bids_label(name) or f"label{index}", name, labels == index))
    if not found:
        raise UserError(f"no label of the atlas holds {MIN_VOXELS} voxels of {brain}", path=fmri.atlas,
                        fix="Give an atlas in the data's space")
    return found


# --------------------------------------------------------------------------- the analysis


def rdm_output(rdm: np.ndarray, conditions: list[str], region: Region, out_dir: Path,
               metadata: dict[str, Any]) -> Output:
    """A region's RDM as a square TSV whose header (and row order) is the conditions."""
    path = out_dir / f"desc-{region.label}_rdm.tsv"
    write_tsv(pd.DataFrame(rdm, columns=conditions), path)
    columns = column_descriptions({c: f"dissimilarity of each row's condition (rows in the header's order) to "
                                      f"condition {c}" for c in conditions})
    return Output(in_file=str(path), entities={"desc": region.label}, suffix="rdm",
                  metadata={**columns, "Region": {"Name": region.name, "NVoxels": int(region.voxels.sum())},
                            "Conditions": conditions, **metadata})


def fit_rsa(bold_files: list[Path], events_files: list[Path], trs: list[float], out_dir: Path,
            mask_files: list[Path | None] | None = None, confound_files: list[Path | None] | None = None,
            feature_files: Sequence[Path] | Sequence[Sequence[Path]] | None = None,
            options: RSAOptions = RSAOptions(), fmri: FMRIOptions = FMRIOptions(),
            stats: StatsOptions = StatsOptions()) -> list[Output]:
    """Every region's RDM and its comparison with every model, and with ``options.rsa_searchlight`` every model's
    searchlight map; returns the written RDMs, score table and maps.

    ``feature_files``: one list of per-run feature files, or several such lists (one per extractor).
    """
    bold_files, events_files = [Path(b) for b in bold_files], [Path(e) for e in events_files]
    if not len(bold_files) == len(events_files) == len(trs):
        raise ValueError("give one events file and one TR per BOLD file")
    check_rsa_region(fmri, options)
    conditions = task_conditions(events_files, options.conditions)
    models = {name: read_model_rdm(name, path, conditions) for name, path in options.models.items()}
    for group in feature_store.groups(feature_files):  # cheap, and checks the features before the BOLD is read
        models.update(feature_rdms(group, events_files, options.conditions, conditions))
    if not models:
        raise UserError("RSA compares the brain's RDMs with models, and none was given",
                        fix="Give feature extractors with --features, or model RDMs with --rdm NAME=FILE.tsv")
    none = [None] * len(bold_files)
    brain = brain_mask(bold_files, mask_files or none, fmri.mask)
    found = regions(brain, fmri)
    spheres = brain.spheres(options.rsa_searchlight_radius) if options.rsa_searchlight else None
    responses = trial_responses(bold_files, events_files, trs, options.conditions, None, brain, "lss",
                                confound_files or none, fmri.confounds, fmri.hrf_model, fmri.high_pass)
    out_dir = Path(out_dir)
    sources = [str(b) for b in bold_files] + [str(e) for e in events_files]
    description = describe(options, fmri, stats)
    outputs, rows = [], []
    for region in found:
        rdm, labels = brain_rdm(responses.X[:, region.voxels], responses.labels, responses.runs, options.distance)
        assert labels == conditions, "the trial responses' conditions are the events'"
        outputs.append(rdm_output(rdm, conditions, region, out_dir, {**description, "Sources": sources}))
        for name, model in models.items():
            score, p = permutation_test(rdm, model, options.comparison, stats.n_permutations, stats.seed)
            rows.append({"region": region.label, "model": name, "score": score, "p_value": p,
                         "n_conditions": len(conditions), "n_voxels": int(region.voxels.sum())})
    model_sources = {name: options.models.get(name, "feature space") for name in models}
    if found:
        path = out_dir / "desc-rsa_scores.tsv"
        write_tsv(pd.DataFrame(rows, columns=list(SCORE_COLUMNS)), path)
        outputs.append(Output(in_file=str(path), entities={"desc": "rsa"}, suffix="scores", metadata={
            **column_descriptions(SCORE_COLUMNS), **description,
            "Regions": {r.label: {"Name": r.name, "NVoxels": int(r.voxels.sum())} for r in found},
            "Models": model_sources, "BrainMask": brain.describe(),
            "Sources": sources + [str(f) for group in feature_store.groups(feature_files) for f in group]
            + list(options.models.values())}))
    if options.rsa_searchlight:
        outputs += searchlight_maps(responses, brain, spheres, models, conditions, out_dir, options, fmri, stats,
                                    {**description, "BrainMask": brain.describe(), "Sources": sources})
    return outputs


def map_label(model: str) -> str:
    """``desc`` of a model's searchlight maps: ``<model>Rsa``, so that an RSA map of a feature space and that space's
    encoding maps never share a name (their group tests would write the same ``stat-t`` files)."""
    return bids_label(model, "Rsa")


def searchlight_maps(responses: TrialResponses, brain: Locations, spheres: Any, models: dict[str, np.ndarray],
                     conditions: list[str],
                     out_dir: Path, options: RSAOptions, fmri: FMRIOptions, stats: StatsOptions,
                     metadata: dict[str, Any]) -> list[Output]:
    """Each model's searchlight map (``stat-rsa``) and, when its permutations are cheap, its p map (``stat-rsaP``)."""
    patterns, labels = condition_patterns(responses.X, responses.labels, responses.runs)
    assert labels == conditions, "the trial responses' conditions are the events'"
    centres = roi_mask(fmri.roi, brain) if fmri.roi else None
    scores, p_values = searchlight_rsa(patterns, spheres, models, distance=options.distance,
                                       method=options.comparison, radius=options.rsa_searchlight_radius,
                                       process_mask=centres, n_permutations=stats.n_permutations, seed=stats.seed)
    outputs = []
    p_note = (None if p_values is not None else
              "no permutations asked (--n-permutations 0)" if not stats.n_permutations else
              f"none: the {options.comparison} comparison is not a matrix product, so permuting every sphere would "
              f"cost {stats.n_permutations} full searchlights (use {' or '.join(LINEAR_COMPARISONS)} for a p map)")
    for name in models:
        model = {"Name": name, "Source": options.models.get(name, "feature space"), "Conditions": conditions}
        desc = map_label(name)
        outputs += brain.map_outputs(scores[name], out_dir / f"desc-{desc}_stat-rsa", {"desc": desc, "stat": "rsa"}, {
            "Description": SEARCHLIGHT_DESCRIPTION, **metadata, "ModelRDM": model,
            "PermutationPValues": p_note or f"desc-{desc}_stat-rsaP"})
        if p_values is not None:  # 1 outside the brain, as where not computed
            outputs += brain.map_outputs(p_values[name], out_dir / f"desc-{desc}_stat-rsaP",
                                         {"desc": desc, "stat": "rsaP"}, fill=1.0, metadata={
                "Description": "one-sided permutation p-value of each sphere's score (stat-rsa) against the model's "
                               f"conditions permuted, the same permutations for every sphere: {PERMUTATION_DESCRIPTION}"
                               " (permuting the model's conditions instead of the brain's gives the same null); "
                               "uncorrected; 1 where not computed and outside the brain mask",
                **metadata, "ModelRDM": model})
    return outputs
