"""Group statistics: one-sample tests across subjects of what the participant level wrote.

Reads the participant derivatives (never recomputes them) and writes group
derivatives without the ``sub-`` entity. Each kind of participant output has
its test, each from the library made for it:

* maps (encoding R², searchlight accuracy): nilearn's ``non_parametric_inference``
  (sign flips, FWE by the maximum t, or with ``tfce`` by the maximum threshold-free cluster
  enhancement of the t map) or a parametric one-sample t-test with Benjamini-Hochberg FDR;
* EEG/MEG decoding over time: the mean AUC with a t confidence band and mne's
  cluster permutation test over time;
* layer sweeps (a region x layer R² table per subject): the mean R² by layer per region with
  a t confidence interval across subjects, and a test of whether the layer that predicts best
  differs between regions (paired t-test of each subject's R²-weighted mean layer for two
  regions; Friedman's test, then paired t-tests of every pair with Holm's correction, for more);
* tables (whole-pattern decoding, region summaries, TRF scores per channel, RSA scores):
  one row per decoder, region, channel or region and model, tested with mne's max-t
  permutation test (FWE over rows; also under ``tfce``, since rows have no neighbours to
  enhance) or t-tests with FDR. RSA's rows also get each region's noise ceiling across
  the subjects' RDMs.

Every test is of the effect above chance (0 for R² and correlations, the
sidecar's chance level for accuracies and AUCs), one-sided; a paired comparison's
``deltaRSquare`` maps and region tables are tested in the direction its participant level was asked
(``--alternative``, recorded in their sidecars: A better than B, worse, or either).

A location (voxel, time point, row) whose value is the same in every subject, up to
:data:`CONSTANT_RTOL` of its size, has no variance to test against: dividing by it would
give a t of millions. Such locations are left out of every test and written with t = 0
and p = 1, and their number is in the sidecar (``NConstant``).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..bids_io.outputs import MAP_STATS, TABLE_KINDS, GroupInput
from ..derivatives import Output, column_descriptions, write_tsv
from ..errors import UserError
from ..locations import Layout, Locations, VolumeLayout, read_map
from ..models import layers as layer_sweep
from ..models.graph_stats import sign_flip_test
from ..models.rsa import NOISE_CEILING_DESCRIPTION, noise_ceiling
from ..options import GroupOptions, StatsOptions

GROUP_TESTS = {
    "permutation": "sign-flipping permutation test of the one-sample t statistic, family-wise error corrected by "
                   "the permutation distribution of the maximum t (nilearn non_parametric_inference for maps, "
                   "mne.stats.permutation_t_test for tables)",
    "parametric": "one-sample t-test (scipy.stats.ttest_1samp), false discovery rate corrected with "
                  "Benjamini-Hochberg (scipy.stats.false_discovery_control)",
    "tfce": "threshold-free cluster enhancement (TFCE, Smith and Nichols 2009) of the one-sample t map, family-wise "
            "error corrected by the sign-flipping permutation distribution of the maximum TFCE (nilearn "
            "non_parametric_inference with tfce=True) for maps; tables, whose rows have no neighbours to enhance, "
            "get the max-t sign-flipping test (mne.stats.permutation_t_test), and decoding over time keeps its "
            "cluster test (ClusterTest)",
}
CORRECTION = {"permutation": "FWE", "parametric": "FDR", "tfce": "FWE"}
TFCE = {"E": 0.5, "H": 2, "Connectivity": "6: voxels sharing a face (scipy.ndimage.generate_binary_structure(3, 1))",
        "Extent": "voxels", "HeightSteps": "100, from 0 to the map's maximum t", "TwoSided": False,
        "Implementation": "nilearn.mass_univariate.permuted_ols (fslmaths' convention: no dh factor)"}
"""What nilearn's TFCE uses (its defaults, which ``non_parametric_inference`` does not expose), for the sidecars:
a voxel's TFCE sums extent^E x height^H over the heights below its t, the extent in voxels of its cluster at
that height. A unit test checks these against nilearn's."""

SURFACE_TFCE = {**TFCE, "Connectivity": "vertices sharing a mesh edge (and, in CIFTI files, subcortical voxels "
                                         "sharing a face)", "Extent": "locations",
                "Implementation": "bids_encoding.models.graph_stats (nilearn's TFCE conventions on a graph)"}
"""TFCE on surfaces: the same sums over the clusters of neighbours along the cortical mesh."""

CONSTANT_RTOL = 1e-5
"""A location is constant across subjects when the standard deviation of its values is at most this times the
largest of them in absolute value (about a hundred float32 roundings; two subjects whose values agree to 1e-7
gave a t of 2e7): then t = 0 and p = 1, never mean / ~0."""

log = logging.getLogger("bids_encoding")

def describe(options: GroupOptions, inference: StatsOptions) -> dict[str, Any]:
    """The group test, for every group sidecar."""
    return {"Test": options.group_test, "TestDescription": GROUP_TESTS[options.group_test],
            "Correction": CORRECTION[options.group_test], "Alpha": options.alpha,
            "Permutations": inference.n_permutations if options.sign_flips else 0, "Seed": inference.seed}


def _sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_name(path.name.split(".")[0] + ".json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else {}


def _chance(sidecar: dict[str, Any]) -> float:
    return float(sidecar.get("Chance", sidecar.get("ChanceLevel", 0.0)))


def _load_maps(group: GroupInput) -> tuple[np.ndarray, Layout]:
    """Subjects x locations data of one map name (voxels, both hemispheres' vertices, grayordinates), after checking
    that every map lies on the same locations."""
    subjects = sorted(group.files)
    maps = [read_map(group.files[s]) for s in subjects]
    reference = maps[0][0]
    for subject, (layout, _) in zip(subjects, maps):
        if not layout.same_as(reference):
            raise UserError(
                f"sub-{subject}'s map is on other {layout.unit} than sub-{subjects[0]}'s, so they cannot be compared "
                f"location by location", path=group.files[subject],
                fix="Run every subject's participant level on data resampled to the same template (--space, --den)",
            )
    return np.stack([values for _, values in maps]), reference


def fdr_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q) of a vector of p-values."""
    return stats.false_discovery_control(np.clip(p, 0, 1), method="bh") if p.size else p


def constant_columns(values: np.ndarray) -> np.ndarray:
    """Columns of subjects x locations values that are the same in every subject, up to :data:`CONSTANT_RTOL`."""
    if values.shape[0] < 2:
        return np.ones(values.shape[1:], bool)
    with np.errstate(invalid="ignore"):
        sd = values.std(axis=0, ddof=1)
        return ~(sd > CONSTANT_RTOL * np.abs(values).max(axis=0))  # NaN counts as constant too


def _one_sample(effects: np.ndarray, constant: np.ndarray,
                alternative: str = "greater") -> tuple[np.ndarray, np.ndarray]:
    """One-sample t and p (one-sided above 0 unless told) of each column of subjects x tests effects; t = 0 and
    p = 1 in the ``constant`` columns (:func:`constant_columns` of the values) and wherever else t is undefined."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "nearly identical" warning: those columns are set
        result = stats.ttest_1samp(effects, 0.0, axis=0, alternative=alternative)
    t = np.where(constant, 0.0, np.nan_to_num(result.statistic, nan=0.0, posinf=0.0, neginf=0.0))
    return t, np.where(constant, 1.0, np.nan_to_num(result.pvalue, nan=1.0))


def _flag_constant(n_constant: int, n_locations: int, what: str, group: GroupInput) -> dict[str, Any]:
    """The sidecar entries that count the constant locations, and a warning in the log when there are any."""
    if n_constant:
        log.warning("%s: %d of %d %s have the same value in every subject, so they are not tested (t = 0, p = 1)",
                    group.name, n_constant, n_locations, what)
    return {"NConstant": n_constant,
            "ConstantDescription": f"{what} with the same value in every subject (standard deviation at most "
                                   f"{CONSTANT_RTOL:g} x the largest absolute value): not tested, t = 0 and p = 1"}


def map_test(group: GroupInput, out_dir: Path, options: GroupOptions,
             inference: StatsOptions = StatsOptions()) -> list[Output]:
    """Mean effect, t, uncorrected p and corrected p maps of one participant map name, with sidecars; with
    ``tfce``, the TFCE map too, and the corrected p is the TFCE's."""
    data, reference = _load_maps(group)
    stat = group.entities["stat"]
    sidecars = [_sidecar(group.files[s]) for s in sorted(group.files)]
    chance = _chance(sidecars[0])
    alternative = tested_alternative(group, sidecars)
    sided = SIDED[alternative]
    computed = np.all((data != 0) & np.isfinite(data), axis=0)  # every map is 0 where it was not computed
    constant = np.zeros(computed.shape, bool)
    constant[computed] = constant_columns(data[:, computed])
    inside = computed & ~constant  # the locations tested
    unit = reference.unit
    on_grid = isinstance(reference, VolumeLayout)
    effects = data[:, inside] - chance
    t, p = _one_sample(effects, np.zeros(effects.shape[1], bool), alternative)
    tfce = options.group_test == "tfce"
    enhanced = np.zeros_like(t)
    if not inside.any():
        corrected = p
    elif options.sign_flips:
        if tfce:  # minutes to hours: say so before it starts
            log.info("%s: TFCE of %d sign flips, each labelling clusters at 100 heights of %d %s (about 0.3 s a "
                     "flip at 34x40x33 voxels, 7 s at 97x115x97)", group.name, max(inference.n_permutations, 1),
                     int(inside.sum()), unit)
        # "less" is "greater" of the opposite effects; the maps keep the sign of A - B
        flipped = -effects if alternative == "less" else effects
        if on_grid:
            corrected, enhanced = _sign_flip_fwe(flipped, inside, reference, inference, tfce,
                                                 alternative == "two-sided")
        else:  # vertices: neighbours along the mesh, which nilearn's TFCE (a voxel grid's) cannot use
            corrected, enhanced = sign_flip_test(flipped, Locations(reference, inside).adjacency() if tfce else None,
                                                 max(inference.n_permutations, 1), inference.seed, tfce,
                                                 alternative == "two-sided")
    else:
        corrected = fdr_adjust(p)
    correction = CORRECTION[options.group_test]
    described = {
        stat: (data.mean(axis=0), MAP_STATS[stat]),
        "t": (_unmask(t, inside), f"one-sample t statistic of the subjects' {stat} against chance ({chance:g})"),
        "p": (_unmask(p, inside, fill=1.0), f"{sided} p-value of that t statistic (parametric, uncorrected)"),
    }
    if tfce:
        described["tfce"] = (_unmask(enhanced, inside), f"threshold-free cluster enhancement of the t map "
                             f"(E={TFCE['E']:g}, H={TFCE['H']:g}, "
                             + ("face connectivity, extent in voxels; " if on_grid else
                                f"neighbours along the mesh, extent in {unit}; ")
                             + ("of |t|, signed as t)" if alternative == "two-sided" else
                                "0 where t >= 0)" if alternative == "less" else "0 where t <= 0)"))
    described[f"p{correction}"] = (_unmask(corrected, inside, fill=1.0),
                                   f"{sided} p-value, {correction}-corrected over the {unit}"
                                   + (" from the TFCE map, not the t map" if tfce else "")
                                   + f": {GROUP_TESTS[options.group_test]}")
    method = {"TFCE": {**(TFCE if on_grid else SURFACE_TFCE), "TwoSided": alternative == "two-sided"}} if tfce else {}
    method["Alternative"] = alternative
    model = _participant_model(sidecars[0])
    flagged = _flag_constant(int(constant.sum()), int(computed.sum()), unit, group)
    outputs = []
    for key, (values, description) in described.items():
        stem = Path(out_dir) / group.name.replace(f"stat-{stat}", f"stat-{key}")
        values = np.where(computed, values, 0) if key == stat else values
        outputs += [Output(in_file=str(path), entities={**group.entities, "stat": key, **extra},
                           metadata={"Description": description, "ChanceLevel": chance,
                                     f"N{unit.capitalize()}": int(inside.sum()), **flagged, **_subjects(group),
                                     **describe(options, inference), **method, **model})
                    for path, extra in reference.write(values, stem)]
    return outputs


SIDED = {"greater": "one-sided (above chance)", "less": "one-sided (below chance)", "two-sided": "two-sided"}


TAILS = {"greater": 1, "less": -1, "two-sided": 0}  # mne's permutation_t_test


def tested_alternative(group: GroupInput, sidecars: list[dict[str, Any]]) -> str:
    """The direction an output is tested in: above chance, except a paired comparison's (``deltaRSquare`` maps,
    region tables), tested as its participant level asked (``--alternative`` there, recorded as
    ``Model.Alternative`` beside ``ComparedModels``), the same in every subject."""
    if not any("ComparedModels" in sidecar for sidecar in sidecars):
        return "greater"
    asked = {s.get("Model", {}).get("Alternative", "greater") for s in sidecars}
    if len(asked) > 1:
        raise UserError(f"the subjects' maps of {group.name} were compared with different --alternative hypotheses "
                        f"({', '.join(sorted(asked))}), so they cannot be tested together",
                        path=next(iter(group.files.values())),
                        fix="Rerun the participant level of every subject with the same --alternative")
    return asked.pop()


def _unmask(values: np.ndarray, inside: np.ndarray, fill: float = 0.0) -> np.ndarray:
    volume = np.full(inside.shape, fill, dtype=np.float64)
    volume[inside] = values
    return volume


def _sign_flip_fwe(effects: np.ndarray, inside: np.ndarray, reference: VolumeLayout, inference: StatsOptions,
                   tfce: bool = False, two_sided: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """FWE-corrected p of each voxel from nilearn's sign-flip (intercept-only) second-level inference, and the
    TFCE map: without ``tfce``, p from the maximum t over sign flips (and no TFCE: zeros); with it, from the
    maximum TFCE, which rewards spatially extended effects that a voxel's own t is too weak to show. One-sided
    (effects above 0) unless ``two_sided`` (the maximum |t| or |TFCE|)."""
    from nilearn.glm.second_level import non_parametric_inference

    images = [reference.image(_unmask(e, inside).astype(np.float32)) for e in effects]
    mask = reference.image(inside.astype(np.uint8))
    design = pd.DataFrame({"intercept": np.ones(len(effects))})
    # at least one sign flip, as the table and time tests: nilearn has no corrected p without one (a KeyError)
    result = non_parametric_inference(images, design_matrix=design, mask=mask, n_perm=max(inference.n_permutations, 1),
                                      two_sided_test=two_sided, random_state=inference.seed, n_jobs=1, verbose=0,
                                      tfce=tfce)
    if not tfce:  # nilearn then returns the max-t map alone
        return 10.0 ** -np.asarray(result.dataobj, dtype=np.float64).ravel()[inside], np.zeros(int(inside.sum()))
    values = {key: np.asarray(img.dataobj, dtype=np.float64).ravel()[inside] for key, img in result.items()}
    return 10.0 ** -values["logp_max_tfce"], values["tfce"]


def _subjects(group: GroupInput) -> dict[str, Any]:
    subjects = sorted(group.files)
    return {"Subjects": subjects, "NSubjects": len(subjects), "Sources": [str(group.files[s]) for s in subjects]}


def _participant_model(sidecar: dict[str, Any]) -> dict[str, Any]:
    """What the participant level fitted (its model description and CV scheme), carried into the group sidecar."""
    keys = ("Model", "CrossValidation", "Classifier", "Contrast", "Metric", "Searchlight", "RegionOfInterest",
            "ConditionColumn", "Distance", "Comparison")
    return {"ParticipantLevel": {k: sidecar[k] for k in keys if k in sidecar}}


TIME_COLUMNS = {
    "time": "time from the trials' onset (s)",
    "roc_auc": "mean across subjects of the held-out ROC AUC",
    "ci_low": "lower bound of the confidence interval of that mean (t distribution across subjects, within [0, 1])",
    "ci_high": "upper bound of that confidence interval",
    "t": "one-sample t statistic of the subjects' AUC above chance",
    "cluster": "index of the time cluster (t above the cluster-forming threshold) the time belongs to (n/a: none)",
    "p_value": "permutation p-value of that cluster, corrected over time (mne permutation_cluster_1samp_test)",
}
CONFIDENCE = 0.95


def time_test(group: GroupInput, out_dir: Path, options: GroupOptions,
              inference: StatsOptions = StatsOptions()) -> list[Output]:
    """Group decoding over time: mean AUC, confidence band and time clusters of AUC above chance."""
    from mne.stats import permutation_cluster_1samp_test

    subjects = sorted(group.files)
    tables = {s: pd.read_csv(group.files[s], sep="\t") for s in subjects}
    times = tables[subjects[0]]["time"].to_numpy(float)
    for subject, table in tables.items():
        if len(table) != len(times) or not np.allclose(table["time"].to_numpy(float), times, atol=1e-6):
            raise UserError(f"sub-{subject}'s decoding is on other times than sub-{subjects[0]}'s", path=group.files[subject],
                            fix="Run every subject's participant level with the same --epochs and --resample")
    sidecar = _sidecar(group.files[subjects[0]])
    chance = _chance(sidecar) or 0.5
    auc = np.stack([tables[s]["roc_auc"].to_numpy(float) for s in subjects])
    mean = auc.mean(axis=0)
    sem = stats.sem(auc, axis=0) if len(subjects) > 1 else np.zeros_like(mean)
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, len(subjects) - 1) * sem
    constant = constant_columns(auc)
    t, _ = _one_sample(auc - chance, constant)
    cluster_index = np.full(len(times), np.nan)
    cluster_p = np.full(len(times), np.nan)
    clusters = []
    threshold = float(stats.t.ppf(1 - options.alpha, len(subjects) - 1))
    if not constant.all():  # the same t (0 at the constant times) for the data and each of its sign flips
        _, found, p_values, _ = permutation_cluster_1samp_test(
            auc - chance, threshold=threshold, n_permutations=max(inference.n_permutations, 1), tail=1,
            stat_fun=lambda x: _one_sample(x, constant)[0], buffer_size=None, seed=inference.seed,
            out_type="mask", verbose=False)
        for index, (mask, p) in enumerate(zip(found, p_values)):
            cluster_index[mask], cluster_p[mask] = index, p
            clusters.append({"Start": float(times[mask][0]), "Stop": float(times[mask][-1]), "p": float(p)})
    path = Path(out_dir) / f"{group.name}_decoding.tsv"
    write_tsv(pd.DataFrame({"time": times, "roc_auc": mean, "ci_low": np.clip(mean - half_width, 0, 1),
                            "ci_high": np.clip(mean + half_width, 0, 1), "t": t,
                            "cluster": cluster_index, "p_value": cluster_p}), path)
    peak = int(np.argmax(mean))
    metadata = {**column_descriptions(TIME_COLUMNS), "ChanceLevel": chance,
                "ConfidenceLevel": CONFIDENCE, "Clusters": clusters, "ClusterFormingThreshold": threshold,
                "ClusterTest": f"mne.stats.permutation_cluster_1samp_test of AUC - chance, one-sided, "
                               f"{inference.n_permutations} sign flips (all of them when fewer exist)",
                "Peak": {"Time": float(times[peak]), "RocAuc": float(mean[peak])},
                **_flag_constant(int(constant.sum()), len(times), "time points", group), **_subjects(group),
                **describe(options, inference), **_participant_model(sidecar)}
    return [Output(in_file=str(path), suffix="decoding", entities=group.entities, metadata=metadata)]


def table_test(group: GroupInput, out_dir: Path, options: GroupOptions,
               inference: StatsOptions = StatsOptions()) -> list[Output]:
    """One row per decoder, region or channel and measure: the subjects' values, their mean, t and p."""
    from mne.stats import permutation_t_test

    table_kind = TABLE_KINDS[(group.datatype, group.suffix)]
    subjects = sorted(group.files)
    sidecars = [_sidecar(group.files[s]) for s in subjects]
    alternative = tested_alternative(group, sidecars)
    long = []
    for subject in subjects:
        table = pd.read_csv(group.files[subject], sep="\t", na_values="n/a", keep_default_na=False)
        measures = [c for c in table_kind.measures if c in table]
        lacking = [c for c in table_kind.keys if c not in table] + ([] if measures else [" or ".join(table_kind.measures)])
        if lacking:
            raise UserError(f"this table lacks the columns {', '.join(lacking)}", path=group.files[subject],
                            fix="Rerun the participant level for this subject with this version of bids-encoding")
        chance = table[table_kind.chance_column] if table_kind.chance_column else 0.0
        for measure in measures:
            long.append(table[list(table_kind.keys)].assign(measure=measure, subject=f"sub-{subject}",
                                                            value=table[measure], chance=chance))
    rows = pd.concat(long).pivot_table(index=[*table_kind.keys, "measure", "chance"], columns="subject",
                                       values="value", aggfunc="first", sort=True)
    rows = rows[[f"sub-{s}" for s in subjects]].dropna()
    effects = (rows.to_numpy(float) - rows.index.get_level_values("chance").to_numpy(float)[:, None]).T
    constant = constant_columns(rows.to_numpy(float).T)
    t, p = _one_sample(effects, constant, alternative)
    corrected = np.ones(len(rows))
    if options.sign_flips and not constant.all():  # max-t over the rows tested
        _, corrected[~constant], _ = permutation_t_test(effects[:, ~constant], tail=TAILS[alternative],
                                                        seed=inference.seed,
                                                        n_permutations=max(inference.n_permutations, 1), verbose=False)
    elif not constant.all():
        corrected[~constant] = fdr_adjust(p[~constant])
    column = f"p_{CORRECTION[options.group_test].lower()}"
    summary = rows.reset_index().assign(n_subjects=len(subjects), mean=rows.mean(axis=1).to_numpy(),
                                        sem=stats.sem(rows.to_numpy(float), axis=1), t=t, p_value=p,
                                        **{column: corrected})
    ceiling = list(RSA_CEILING) if group.suffix == "scores" else []
    if ceiling:
        summary = summary.merge(rsa_noise_ceiling(group, sorted(set(summary["region"]))), on="region", how="left")
    ordered = [*table_kind.keys, "measure", "chance", "n_subjects", "mean", "sem", "t", "p_value", column, *ceiling,
               *[f"sub-{s}" for s in subjects]]
    path = Path(out_dir) / f"{group.name}_{group.suffix}.tsv"
    write_tsv(summary[ordered], path)
    columns = {"measure": "the participant table's column tested", "chance": "the chance level it is tested against",
               "n_subjects": "subjects in the test", "mean": "mean across subjects", "sem": "standard error of that mean",
               "t": "one-sample t statistic against chance", "p_value": f"{SIDED[alternative]} p-value of that t "
                                                                          "(uncorrected)",
               column: f"{SIDED[alternative]} p-value, {CORRECTION[options.group_test]}-corrected over the rows",
               **{name: RSA_CEILING[name] for name in ceiling}, "sub-<label>": "each subject's value"}
    metadata = {**column_descriptions(columns), **_flag_constant(int(constant.sum()), len(rows), "rows", group),
                **_subjects(group), **describe(options, inference), "Alternative": alternative,
                **_participant_model(sidecars[0])}
    return [Output(in_file=str(path), suffix=group.suffix, entities=group.entities, metadata=metadata)]


RSA_CEILING = {"noise_ceiling_lower": f"lower bound of the region's noise ceiling, {NOISE_CEILING_DESCRIPTION}",
               "noise_ceiling_upper": "upper bound of the region's noise ceiling (see noise_ceiling_lower)"}


def rsa_noise_ceiling(group: GroupInput, regions: list[str]) -> pd.DataFrame:
    """Each region's noise ceiling from every subject's ``desc-<region>_rdm.tsv``, written beside its RSA scores,
    by the comparison the scores used."""
    comparison = _sidecar(next(iter(group.files.values()))).get("Comparison", {}).get("Name", "spearman")
    rows = []
    for region in regions:
        rdms, labels = [], None
        for subject, scores in sorted(group.files.items()):
            path = scores.with_name(scores.name.replace(f"desc-{group.entities['desc']}_scores", f"desc-{region}_rdm"))
            if not path.exists():
                raise UserError(f"sub-{subject}'s RSA scores have no RDM of region {region} beside them", path=path,
                                fix="Rerun the participant level for this subject")
            table = pd.read_csv(path, sep="\t")
            if labels is not None and list(table.columns) != labels:
                raise UserError(f"sub-{subject}'s RDM of region {region} has other conditions than the first "
                                "subject's, so the subjects' RDMs cannot be compared", path=path,
                                fix="Run every subject with the same --conditions on the same stimuli")
            labels = list(table.columns)
            rdms.append(table.to_numpy(float))
        lower, upper = noise_ceiling(np.stack(rdms), comparison)
        rows.append({"region": region, "noise_ceiling_lower": lower, "noise_ceiling_upper": upper})
    return pd.DataFrame(rows)


GROUP_LAYER_COLUMNS = {
    "index": "label value in the atlas image", "name": "region name", "layer": "the extractor's layer (0 = embeddings)",
    "n_subjects": "subjects", "mean_r2": "mean across subjects of the region's held-out R² for this layer",
    "ci_low": "lower bound of the 95 % confidence interval of mean_r2 across subjects (t distribution)",
    "ci_high": "upper bound of that confidence interval",
    "best": "1 for the layer with the highest mean_r2 in the region, else 0",
    "sub-<label>": "each subject's region R² for this layer (averaged over its outer folds)",
}
LAYER_TEST_COLUMNS = {
    "test": "Friedman (do the regions' preferred layers differ, more than two regions) or paired t (two regions)",
    "regions": "the regions compared (names, ' vs ' between them)",
    "statistic": "Friedman's chi-square, or the paired t of the second region's preferred layer minus the first's",
    "df": "degrees of freedom", "p_value": "two-sided p-value",
    "p_holm": "p_value Holm-adjusted over the pairwise tests (the Friedman row: its own p)",
    "mean_difference": "mean across subjects of the second region's preferred layer minus the first's",
    "n_subjects": "subjects in the test",
}
LAYER_TESTS = {
    0: "none: fewer than two regions qualified (see RegionSelection)",
    1: "none: fewer than two regions qualified (see RegionSelection)",
    2: "paired t-test across subjects (scipy.stats.ttest_rel, two-sided) of the two regions' preferred layers",
    3: "Friedman's test over the regions (scipy.stats.friedmanchisquare, chi-square approximation: rough with few "
       "subjects), then a paired t-test across subjects (scipy.stats.ttest_rel, two-sided) of every pair of regions' "
       "preferred layers, Holm-adjusted",
}
PREFERRED_LAYER = ("each subject's R²-weighted mean layer of the region (weights max(R², 0) of the layers' region "
                   "R²): a continuous summary of the depth that predicts the region best")


def layer_test(group: GroupInput, out_dir: Path, options: GroupOptions,
               inference: StatsOptions = StatsOptions()) -> list[Output]:
    """A layer sweep across subjects: R² by layer per region with CIs across subjects, and whether the preferred
    layer differs between regions (see :mod:`..models.layers`).

    Regions enter the test when every subject has a preferred layer there (some layer with R² > 0) and the mean
    across subjects of their best layer's R² is above 0: a region that no layer predicts has no preferred layer
    to compare. The selection uses R², not the layers' order, so it does not favour a difference.
    """
    subjects = sorted(group.files)
    tables = {s: pd.read_csv(group.files[s], sep="\t", na_values="n/a", keep_default_na=False) for s in subjects}
    for subject, table in tables.items():
        lacking = [c for c in ("index", "name", "layer", "mean_r2") if c not in table]
        if lacking:
            raise UserError(f"this layer table lacks the columns {', '.join(lacking)}", path=group.files[subject],
                            fix="Rerun the participant level for this subject with this version of bids-encoding")
    wide = pd.concat([t.assign(subject=f"sub-{s}") for s, t in tables.items()]).pivot_table(
        index=["index", "name", "layer"], columns="subject", values="mean_r2", aggfunc="first", sort=True)
    wide = wide[[f"sub-{s}" for s in subjects]].dropna()
    mean, low, high = layer_sweep.mean_ci(wide.to_numpy(float), axis=1)
    summary = wide.reset_index().assign(n_subjects=len(subjects), mean_r2=mean, ci_low=low, ci_high=high)
    summary["best"] = summary.index.isin(summary.groupby("index")["mean_r2"].idxmax()).astype(int)  # ties: shallowest
    ordered = ["index", "name", "layer", "n_subjects", "mean_r2", "ci_low", "ci_high", "best",
               *[f"sub-{s}" for s in subjects]]
    path = Path(out_dir) / f"{group.name}_layers.tsv"
    write_tsv(summary[ordered], path)
    participant = _participant_model(_sidecar(group.files[subjects[0]]))
    outputs = [Output(in_file=str(path), suffix="layers", entities=group.entities,
                      metadata={**column_descriptions(GROUP_LAYER_COLUMNS), "ConfidenceLevel": layer_sweep.CONFIDENCE,
                                **_subjects(group), **participant})]
    regions, preferred = [], []
    for (index, name), rows in wide.groupby(level=["index", "name"], sort=True):
        layers = rows.index.get_level_values("layer").to_numpy(int)
        values = rows.to_numpy(float).T  # subjects x layers
        weighted = layer_sweep.preferred_layer(values, list(layers))
        if np.isfinite(weighted).all() and values.max(axis=1).mean() > 0:
            regions.append(str(name))
            preferred.append(weighted)
    results = layer_sweep.layer_difference_test(np.array(preferred).T) if len(regions) >= 2 else []
    rows = [{"test": r["test"], "regions": " vs ".join(regions[i] for i in r["regions"]), "statistic": r["statistic"],
             "df": r["df"], "p_value": r["p_value"], "p_holm": r["p_holm"], "mean_difference": r["mean_difference"],
             "n_subjects": len(subjects)} for r in results]
    path = Path(out_dir) / f"{group.name}_layertest.tsv"
    write_tsv(pd.DataFrame(rows, columns=list(LAYER_TEST_COLUMNS)), path)
    metadata = {**column_descriptions(LAYER_TEST_COLUMNS),
                "LayerTest": LAYER_TESTS[min(len(regions), 3)],
                "PreferredLayer": PREFERRED_LAYER,
                "PreferredLayers": {region: dict(zip([f"sub-{s}" for s in subjects], np.round(values, 4).tolist()))
                                    for region, values in zip(regions, preferred)},
                "RegionsTested": regions,
                "RegionSelection": "regions where every subject has some layer with R² > 0 and the subjects' best-layer "
                                   "R² is above 0 on average (selected on R², not on the layers' order)",
                **_subjects(group), **participant}
    outputs.append(Output(in_file=str(path), suffix="layertest", entities=group.entities, metadata=metadata))
    return outputs


TESTS = {"map": map_test, "time": time_test, "table": table_test, "layers": layer_test}


KEPT_UNDER_TFCE = {"time": "keeps its cluster permutation test over time (mne)",
                   "table": "is tested with the max-t sign-flip test, as under --group-test permutation: its rows "
                            "have no neighbours to enhance"}


def group_test(group: GroupInput, out_dir: Path, options: GroupOptions,
               inference: StatsOptions = StatsOptions()) -> list[Output]:
    """The group test of one participant output name (see the module docstring)."""
    if options.group_test == "tfce" and group.kind in KEPT_UNDER_TFCE:
        log.info("%s: TFCE enhances clusters of neighbouring voxels; this %s %s", group.name,
                 "time course" if group.kind == "time" else "table", KEPT_UNDER_TFCE[group.kind])
    return TESTS[group.kind](group, Path(out_dir), options, inference)

