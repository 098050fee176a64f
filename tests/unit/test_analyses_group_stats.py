"""--group-test tfce on simulated subject maps with a known truth: a planted blob is found and the rest left
alone, a weak but spatially extended blob is found where the voxel-wise max-t test misses most of it (the reason
TFCE exists), and on null data the family-wise error rate stays near its nominal 5%."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_encoding.analyses.group_stats import TFCE, group_test
from bids_encoding.bids_io.outputs import GroupInput
from bids_encoding.derivatives import save_nifti
from bids_encoding.errors import UserError
from bids_encoding.options import GroupOptions, StatsOptions

SHAPE = (12, 12, 12)  # 4 mm voxels
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
GRID = np.indices(SHAPE).astype(float)
CENTER = (np.array(SHAPE) - 1) / 2
MASK = ((GRID - CENTER[:, None, None, None]) ** 2).sum(axis=0) <= 5.8 ** 2  # a ball of ~800 voxels
NOISE_FWHM_VOXELS = 2.35  # Gaussian smoothing of sigma 1 voxel, as smooth as a mildly smoothed fMRI map


def blob(sigma: float) -> np.ndarray:
    """A Gaussian bump of height 1 at the centre of the volume, ``sigma`` in voxels."""
    return np.exp(-((GRID - CENTER[:, None, None, None]) ** 2).sum(axis=0) / (2 * sigma ** 2))


def smooth_noise(rng: np.random.Generator, n_subjects: int) -> np.ndarray:
    """Subjects x volume of spatially smooth Gaussian noise with unit standard deviation in the mask."""
    maps = ndimage.gaussian_filter(rng.standard_normal((n_subjects, *SHAPE)), sigma=(0, 1, 1, 1))
    return maps / maps[:, MASK].std()


def group_maps(maps: np.ndarray, folder: Path, test: str, n_permutations: int, seed: int = 0,
               alternatives: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each subject's map written as a participant R² map (0 outside the mask, as the app writes them), the group
    test run on them; its output maps by stat, and the sidecar of the corrected p under ``"sidecar"``. With
    ``alternatives`` (one per subject), the maps are paired comparisons' deltaRSquare maps whose sidecars record
    the participant level's ``--alternative``, as ``--compare`` writes them."""
    stat = "deltaRSquare" if alternatives else "rSquare"
    inputs, out = folder / "participants", folder / f"group-{test}"
    inputs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True)
    files = {}
    for index, values in enumerate(maps):
        files[f"{index + 1:02d}"] = path = inputs / f"sub-{index + 1:02d}_task-sim_desc-sim_stat-{stat}_statmap.nii.gz"
        save_nifti(nib.Nifti1Image(np.where(MASK, values, 0).astype(np.float32), AFFINE), path)
        if alternatives:
            path.with_name(path.name.replace(".nii.gz", ".json")).write_text(
                json.dumps({"ComparedModels": {"A": "a", "B": "b"}, "Model": {"Alternative": alternatives[index]}}))
    group = GroupInput("map", "func", "statmap", {"task": "sim", "desc": "sim", "stat": stat}, files)
    outputs = group_test(group, out, GroupOptions(group_test=test), StatsOptions(n_permutations=n_permutations, seed=seed))
    maps_out: dict = {o.entities["stat"]: nib.load(o.in_file).get_fdata() for o in outputs}
    maps_out["sidecar"] = next(o.metadata for o in outputs if o.entities["stat"] in ("pFWE", "pFDR"))
    return maps_out


def test_tfce_finds_a_planted_blob_and_little_outside_it(tmp_path):
    """12 subjects, a blob 3 noise SDs high at its centre (1.5 at the edge of what counts as the blob)."""
    rng = np.random.default_rng(0)
    profile = blob(sigma=1.5)
    inside, outside = (profile > 0.5) & MASK, (profile < 0.05) & MASK
    result = group_maps(3.0 * profile + smooth_noise(rng, 12), tmp_path, "tfce", n_permutations=500)
    assert set(result) == {"rSquare", "t", "p", "tfce", "pFWE", "sidecar"}
    found = result["pFWE"] < 0.05
    print(f"planted blob: TFCE pFWE < 0.05 in {found[inside].mean():.2f} of the blob ({inside.sum()} voxels), "
          f"{found[outside].mean():.3f} of the voxels away from it ({outside.sum()})")
    assert found[inside].mean() > 0.7 and found[outside].mean() < 0.01
    assert np.all(result["tfce"][~MASK] == 0) and np.all(result["pFWE"][~MASK] == 1)
    assert result["tfce"][inside].mean() > 10 * result["tfce"][outside].mean()  # the statistic map, not only its p
    sidecar = result["sidecar"]
    assert sidecar["Test"] == "tfce" and sidecar["Correction"] == "FWE" and sidecar["Permutations"] == 500
    assert sidecar["TFCE"]["E"] == 0.5 and sidecar["TFCE"]["H"] == 2 and "TFCE" in sidecar["Description"]
    assert "Connectivity" in sidecar["TFCE"] and sidecar["Seed"] == 0


@pytest.mark.slow
def test_tfce_finds_more_of_a_weak_extended_blob_than_max_t(tmp_path):
    """16 subjects, a wide blob one noise SD high at its centre, five simulated data sets pooled: each voxel is too
    weak for the max-t threshold, but its neighbours share the effect, which TFCE adds up."""
    profile = blob(sigma=2.5)
    inside = (profile > 0.5) & MASK
    found = {"tfce": [], "permutation": []}
    for seed in range(5):
        maps = 1.0 * profile + smooth_noise(np.random.default_rng(seed), 16)
        for test in found:
            found[test].append(group_maps(maps, tmp_path / f"{seed}", test, n_permutations=100, seed=seed)["pFWE"][inside] < 0.05)
    tfce, max_t = (float(np.mean(found[test])) for test in ("tfce", "permutation"))
    print(f"weak extended blob ({inside.sum()} voxels, 5 data sets): pFWE < 0.05 in {tfce:.2f} of it with TFCE, "
          f"{max_t:.2f} with max-t")
    assert tfce > 0.25 and tfce > 2 * max_t + 0.05


@pytest.mark.slow
def test_tfce_keeps_the_family_wise_error_rate_on_null_data(tmp_path):
    """60 null data sets (smooth noise, 12 subjects): the share with any voxel at pFWE < 0.05 estimates the FWE
    rate. At the nominal 5%, 8 or more of 60 happen with probability 0.003 (binomial)."""
    rng = np.random.default_rng(1)
    repetitions, false_positives = 60, 0
    for repetition in range(repetitions):
        result = group_maps(smooth_noise(rng, 12), tmp_path / f"{repetition}", "tfce", n_permutations=100, seed=repetition)
        false_positives += bool(np.any(result["pFWE"][MASK] < 0.05))
    rate = false_positives / repetitions
    print(f"null data: {false_positives} of {repetitions} data sets ({rate:.3f}) with a voxel at TFCE pFWE < 0.05")
    assert rate <= 7 / repetitions


def test_tfce_parameters_recorded_are_nilearns():
    """The sidecars state E, H and the connectivity that nilearn uses (it does not let us choose them)."""
    from nilearn.mass_univariate import _utils

    defaults = inspect.signature(_utils.calculate_tfce).parameters
    assert (defaults["E"].default, defaults["H"].default, defaults["dh"].default) == (TFCE["E"], TFCE["H"], "auto")
    source = inspect.getsource(__import__("nilearn.mass_univariate.permuted_least_squares", fromlist=["x"]))
    assert "generate_binary_structure(3, 1)" in source and "generate_binary_structure(3, 2)" not in source


def test_an_unknown_group_test_names_tfce_among_the_choices():
    with pytest.raises(UserError) as err:
        GroupOptions(group_test="tfc")
    assert "tfc" in err.value.message and "tfce" in err.value.fix


@pytest.mark.parametrize("test", ["permutation", "tfce", "parametric"])
def test_delta_r2_maps_are_tested_in_the_direction_the_comparison_asked(tmp_path, test):
    """B better than A in a blob (delta R² = A - B below 0 there), A better than B in a second blob: "less" finds
    only the first, "greater" only the second, "two-sided" both; the maps keep the sign of A - B."""
    rng = np.random.default_rng(3)
    shift = np.zeros(3)
    shift[0] = 3.0
    first = np.exp(-((GRID - (CENTER - shift)[:, None, None, None]) ** 2).sum(axis=0) / (2 * 1.2 ** 2))
    second = np.exp(-((GRID - (CENTER + shift)[:, None, None, None]) ** 2).sum(axis=0) / (2 * 1.2 ** 2))
    maps = 4.0 * (second - first) + smooth_noise(rng, 12)
    in_first, in_second = (first > 0.5) & MASK, (second > 0.5) & MASK
    found = {}
    for alternative in ("less", "greater", "two-sided"):
        result = group_maps(maps, tmp_path / alternative, test, n_permutations=200, alternatives=[alternative] * 12)
        corrected = result["pFWE" if test != "parametric" else "pFDR"]
        found[alternative] = ((corrected[in_first] < 0.05).mean(), (corrected[in_second] < 0.05).mean())
        assert result["sidecar"]["Alternative"] == alternative
        assert np.median(result["t"][in_first]) < 0 < np.median(result["t"][in_second])
        assert np.median(result["deltaRSquare"][in_first]) < 0
    print(test, found)
    assert found["less"][0] > 0.7 and found["less"][1] == 0
    assert found["greater"][0] == 0 and found["greater"][1] > 0.7
    assert min(found["two-sided"]) > 0.5


def test_subjects_compared_in_different_directions_are_not_tested_together(tmp_path):
    maps = smooth_noise(np.random.default_rng(0), 3)
    with pytest.raises(UserError, match="different --alternative"):
        group_maps(maps, tmp_path, "parametric", n_permutations=0, alternatives=["greater", "greater", "two-sided"])


def test_comparison_region_tables_are_tested_in_the_direction_asked(tmp_path):
    """Six subjects' --compare region tables: B beats A in region 1, A beats B in region 2, a tie in region 3."""
    import pandas as pd

    rng = np.random.default_rng(1)
    files = {}
    for subject in range(1, 7):
        files[f"{subject:02d}"] = path = tmp_path / f"sub-{subject:02d}_task-sim_desc-aVsB_regions.tsv"
        pd.DataFrame({"index": [1, 2, 3], "name": ["one", "two", "three"], "n_voxels": 20,
                      "mean_delta_r2": [-0.05, 0.05, 0.0] + 0.01 * rng.standard_normal(3),
                      "fraction_significant": 0.0}).to_csv(path, sep="\t", index=False)
        path.with_suffix(".json").write_text(json.dumps({"ComparedModels": {"A": "a", "B": "b"},
                                                         "Model": {"Alternative": "less"}}))
    group = GroupInput("table", "func", "regions", {"task": "sim", "desc": "aVsB"}, files)
    for test, column in (("parametric", "p_fdr"), ("permutation", "p_fwe")):
        out = tmp_path / test
        out.mkdir()
        output, = group_test(group, out, GroupOptions(group_test=test), StatsOptions(n_permutations=1000))
        table = pd.read_csv(output.in_file, sep="\t").set_index("name")
        assert set(table["measure"]) == {"mean_delta_r2"} and output.metadata["Alternative"] == "less"
        assert table.loc["one", column] < 0.05 and table.loc["two", "p_value"] > 0.99, table
        assert table.loc["one", "t"] < 0 < table.loc["two", "t"]


def test_the_layer_test_reads_the_subjects_layer_tables_and_tests_the_regions_that_qualify(tmp_path):
    """Four subjects: region a peaks at layer 0, region b at layer 6, region c has no R² > 0 (left out of the test)."""
    import json

    import pandas as pd

    rng = np.random.default_rng(0)
    layers = [0, 2, 4, 6]
    files = {}
    for subject in ("01", "02", "03", "04"):
        rows = []
        for index, (name, peak) in enumerate((("a", 0), ("b", 6), ("c", None)), start=1):
            for layer in layers:
                r2 = -0.01 if peak is None else 0.2 * np.exp(-0.5 * ((layer - peak) / 2) ** 2) + rng.normal(0, 0.01)
                rows.append({"index": index, "name": name, "layer": layer, "mean_r2": r2})
        files[subject] = tmp_path / f"sub-{subject}_task-sim_desc-lm_layers.tsv"
        pd.DataFrame(rows).to_csv(files[subject], sep="\t", index=False)
    group = GroupInput("layers", "func", "layers", {"task": "sim", "desc": "lm"}, files)
    out = tmp_path / "out"
    out.mkdir()
    table, tests = group_test(group, out, GroupOptions())
    summary = pd.read_csv(table.in_file, sep="\t")
    assert summary[summary["best"] == 1].set_index("name")["layer"].to_dict() == {"a": 0, "b": 6, "c": 0}
    assert ((summary["ci_low"] <= summary["mean_r2"]) & (summary["mean_r2"] <= summary["ci_high"])).all()
    (row,) = pd.read_csv(tests.in_file, sep="\t").to_dict("records")
    assert row["regions"] == "a vs b" and row["test"] == "paired t" and row["mean_difference"] > 2
    assert row["p_value"] < 0.01 and tests.metadata["RegionsTested"] == ["a", "b"]
    assert tests.metadata["LayerTest"].startswith("paired t-test")
    json.dumps(tests.metadata)  # the sidecar is plain JSON
