"""The HTML reports, opened from disk in headless Chromium (Debian's chromium, driven by Playwright): every image
loads, the console stays quiet, nothing is fetched from outside the output folder; and the methods text tells
what ran, and only that.

Without chromium or playwright these tests skip, except under CI=true, where the project's set-up installs both.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_encoding.derivatives import derivative_path, save_nifti, write_json
from bids_encoding.errors import UserError
from bids_encoding.report import write_group_report, write_subject_report

from ..conftest import run_cli, snapshot

CHROMIUM = Path("/usr/bin/chromium")
# Without these, Chromium's background services try the (closed) network and log errors.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPACE = "MNI152NLin2009cAsym"


def _require_browser() -> None:
    """Skip (fail under CI=true) when Chromium or Playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
        missing = "" if CHROMIUM.exists() else f"Debian's chromium is not installed ({CHROMIUM} missing)"
    except ImportError:
        missing = "playwright is not installed (it is in the test extra)"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)


def open_in_chromium(report: Path, screenshot: Path) -> dict:
    """Load ``report`` from disk with a fresh profile; the images' states, console messages, page errors, requests
    the text of each section and the cells of each table, and a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"console": [], "errors": [], "requests": []}
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), args=FLAGS,
                                                                headless=True)
        try:
            page = context.new_page()
            page.on("console", lambda message: seen["console"].append((message.type, message.text)))
            page.on("pageerror", lambda error: seen["errors"].append(str(error)))
            page.on("request", lambda request: seen["requests"].append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            seen["images"] = page.evaluate("Array.from(document.images).map(i => "
                                           "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))")
            seen["sections"] = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('section'))"
                                             ".map(s => [s.id, s.innerText]))")
            seen["tables"] = page.evaluate("Array.from(document.querySelectorAll('table')).map(t => "
                                           "Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText)))")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    return seen


def assert_opens_cleanly(report: Path, screenshot: Path) -> dict:
    """Every image loads, no console error or page error, no request leaves file://, the screenshot is a real PNG."""
    seen = open_in_chromium(report, screenshot)
    assert seen["images"], "the report shows no figure"
    broken = [i["src"] for i in seen["images"] if not i["complete"] or i["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    assert all(not src.startswith(("/", "http", "file:")) for src in (i["src"] for i in seen["images"])), \
        "figures must be linked by relative paths"
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == []
    assert seen["errors"] == []
    assert [url for url in seen["requests"] if not url.startswith("file://")] == []
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    from PIL import Image

    with Image.open(screenshot) as image:
        width, height = image.size
    assert width >= 800 and height > 1000, (width, height)
    return seen


def methods_text(report: Path) -> str:
    """The methods section of a report as plain text."""
    found = re.search(r'<section id="methods">(.*?)</section>', report.read_text(encoding="utf-8"), re.S)
    assert found, f"{report.name} has no methods section"
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(1)))


# --------------------------------------------------------------------------- the real CLI


@pytest.mark.slow
def test_reports_of_a_real_run_open_in_chromium_and_describe_what_ran(three_subject_dataset, tmp_path):
    _require_browser()
    example_dataset = three_subject_dataset  # the group level needs three subjects
    out, work = tmp_path / "out", tmp_path / "work"
    common = [example_dataset, out]
    options = ["-d", example_dataset / "derivatives/fmriprep", "-w", work, "--skip-bids-validation", "--seed", "3"]
    before = snapshot(example_dataset)

    encoding = run_cli(*common, "participant", *options, "--features", "wordrate", "trialtype")
    assert encoding.returncode == 0, encoding.stderr
    text = methods_text(out / "sub-01.html")
    for ran in ("wordrate", "trialtype", "bids-encoding-lexical", "leave-one-run-out", "task lpp", "task faces",
                "seed was 3"):
        assert ran in text, f"the methods do not mention {ran!r}: {text}"
    for absent in ("wordlength", "decod", "searchlight", "embedder", "EEG", "permutation", "joint", "group"):
        assert absent not in text, f"the methods mention {absent!r}, which did not run: {text}"

    decoding = run_cli(*common, "participant", *options, "--analysis", "decoding", "--decode",
                       "trial_type=face,scrambled", "--task", "faces", "--n-permutations", "10")
    assert decoding.returncode == 0, decoding.stderr
    report = out / "sub-01.html"
    text = methods_text(report)
    for ran in ("wordrate", "trialtype", "trial_type face vs scrambled was decoded", "10 permutations",
                "searchlight of radius 8 mm"):
        assert ran in text, f"the methods do not mention {ran!r}: {text}"
    assert "embedder" not in text and "EEG" not in text
    seen = assert_opens_cleanly(report, tmp_path / "sub-01.png")
    assert {"encoding", "decoding", "methods", "provenance"} <= set(seen["sections"]), \
        "the decoding run must keep the encoding section of the first run"
    sources = {i["src"] for i in seen["images"]}
    assert any("desc-wordrate_stat-rSquare" in s for s in sources) and any("stat-score" in s for s in sources)
    assert any(s.endswith("_design.png") for s in sources) and any(s.endswith("_histogram.png") for s in sources)
    provenance = seen["sections"]["provenance"]
    assert "--analysis decoding" in provenance and "--features wordrate trialtype" in provenance
    assert example_dataset.resolve().as_uri() in provenance

    group = run_cli(*common, "group", *options)
    assert group.returncode == 0, group.stderr
    seen = assert_opens_cleanly(out / "group.html", tmp_path / "group.png")
    sidecar = json.loads(next((out / "group").glob("*_stat-t_statmap.json")).read_text())
    text = seen["sections"]["methods"]
    assert "3 subjects" in text and all(f"sub-0{i}" in text for i in (1, 2, 3))
    for recorded in (sidecar["Test"], sidecar["Correction"]):
        assert recorded in text, f"the group methods do not name {recorded!r}: {text}"
    assert snapshot(example_dataset) == before, "the input dataset was written to"


# --------------------------------------------------------------------------- reports of planted derivatives


AFFINE = np.diag([8.0, 8.0, 8.0, 1.0]) @ np.array([[1, 0, 0, -9], [0, 1, 0, -12], [0, 0, 1, -9], [0, 0, 0, 1]])
SHAPE = (20, 24, 20)


def _brain() -> np.ndarray:
    """An ellipsoid that roughly fills the MNI brain at 8 mm."""
    grid = np.indices(SHAPE).astype(float)
    centre, radii = np.array([9.5, 13.0, 10.0]), np.array([8.5, 10.5, 8.0])
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(axis=0) <= 1


def _write(root: Path, entities: dict, suffix: str, extension: str, sidecar: dict, values=None, table=None,
           datatype: str = "func") -> str:
    """One derivative under its BIDS name (a NIfTI of ``values`` or a TSV of ``table``) with its sidecar."""
    relative = derivative_path(entities, suffix, extension, datatype)
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if values is not None:
        save_nifti(nib.Nifti1Image(values.astype(np.float32), AFFINE), path)
    else:
        table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    write_json(root / str(relative).replace(extension, ".json"), sidecar)
    return str(relative)


GROUP = {"Subjects": ["01", "02", "03", "04"], "NSubjects": 4, "Test": "parametric", "Correction": "FDR",
         "Alpha": 0.05, "TestDescription": "one-sample t-test across subjects, Benjamini-Hochberg FDR"}


@pytest.mark.slow
def test_group_report_shows_the_significant_voxels_and_only_the_kinds_present(tmp_path):
    _require_browser()
    rng = np.random.default_rng(0)
    brain = _brain()
    significant = np.zeros(SHAPE, bool)
    significant[5:8, 10:13, 8:11] = True  # 27 voxels, planted
    t = np.where(brain, rng.normal(0, 1, SHAPE), 0) + 6 * significant
    p_fdr = np.where(significant, 0.001, np.where(brain, 0.6, 1.0))
    entities = {"task": "lpp", "space": SPACE, "desc": "wordrate"}
    written = [
        _write(tmp_path, {**entities, "stat": "rSquare"}, "statmap", ".nii.gz", GROUP,
               values=significant * rng.uniform(0.05, 0.1, SHAPE)),
        _write(tmp_path, {**entities, "stat": "t"}, "statmap", ".nii.gz", GROUP, values=t),
        _write(tmp_path, {**entities, "stat": "pFDR"}, "statmap", ".nii.gz", GROUP, values=p_fdr),
    ]
    time = np.round(np.arange(-0.2, 0.61, 0.01), 2)
    bump = 0.5 + 0.3 * np.exp(-((time - 0.17) / 0.04) ** 2)
    curve = pd.DataFrame({"time": time, "roc_auc": bump, "ci_low": bump - 0.05, "ci_high": bump + 0.05, "t": 0.0,
                          "cluster": np.where((time >= 0.12) & (time <= 0.22), 0, np.nan),
                          "p_value": np.where((time >= 0.12) & (time <= 0.22), 0.004, np.nan)})
    written.append(_write(tmp_path, {"task": "faces", "desc": "faceVsScrambled"}, "decoding", ".tsv",
                          {**GROUP, "ChanceLevel": 0.5, "ConfidenceLevel": 0.95, "Clusters": [
                              {"Start": 0.12, "Stop": 0.22, "p": 0.004}], "Peak": {"Time": 0.17, "RocAuc": 0.8}},
                          table=curve))

    report = write_group_report(tmp_path, written, 4)

    seen = assert_opens_cleanly(report, tmp_path / "group.png")
    assert set(seen["sections"]) == {"maps", "time", "methods", "provenance"}, "no tables were written"
    header, row = next(t for t in seen["tables"] if "voxels significant" in t[0])
    assert int(row[header.index("voxels significant")]) == significant.sum()
    assert "FDR-corrected p < 0.05" in seen["sections"]["maps"]
    assert "0.12-0.22 s (p=0.004)" in seen["sections"]["time"]
    methods = seen["sections"]["methods"]
    assert "parametric test" in methods and "FDR-corrected at alpha 0.05" in methods and "4 subjects" in methods


def test_group_report_under_tfce_shows_the_tfce_map_where_its_pfwe_passes_or_says_none_does(tmp_path):
    """Two models tested with --group-test tfce: one with a planted cluster (the TFCE map shown where its pFWE is
    below alpha, those voxels counted), one where nothing passes (a line says so)."""
    from bids_encoding.analyses.group_stats import TFCE

    brain = _brain()
    significant = np.zeros(SHAPE, bool)
    significant[5:8, 10:13, 8:11] = True  # 27 voxels, planted
    tfce_sidecar = {**GROUP, "Test": "tfce", "Correction": "FWE", "Permutations": 100, "TFCE": TFCE,
                    "TestDescription": "threshold-free cluster enhancement, FWE by the maximum TFCE"}
    written = []
    for desc, planted in (("wordrate", significant), ("wordlength", np.zeros(SHAPE, bool))):
        entities = {"task": "lpp", "space": SPACE, "desc": desc}
        for stat, values in (("rSquare", np.where(brain, 0.02, 0) + 0.06 * planted),
                             ("t", np.where(brain, 1.0, 0) + 5 * planted), ("tfce", np.where(brain, 10.0, 0) + 500 * planted),
                             ("pFWE", np.where(planted, 0.01, np.where(brain, 0.7, 1.0)))):
            written.append(_write(tmp_path, {**entities, "stat": stat}, "statmap", ".nii.gz", tfce_sidecar, values=values))
    text = write_group_report(tmp_path, written, 4).read_text(encoding="utf-8")
    assert "desc-wordrate_stat-tfce_statmap.nii.gz</code>: TFCE where the FWE-corrected p &lt; 0.05" in text
    assert "desc-wordlength_stat-tfce_statmap.nii.gz</code>: no voxel where the FWE-corrected p &lt; 0.05" in text
    assert f"<td>{significant.sum()}</td>" in text
    assert "TFCE test" in text and "E = 0.5, H = 2" in text and "100 permutations" in text


def test_group_report_of_tables_only_has_no_figure_sections(tmp_path):
    scores = pd.DataFrame({"source": ["brain"], "measure": ["roc_auc"], "chance": [0.5], "n_subjects": [4],
                           "mean": [0.8], "sem": [0.02], "t": [15.0], "p_value": [0.0003], "p_fwe": [0.06]})
    written = [_write(tmp_path, {"task": "faces", "space": SPACE, "desc": "faceVsScrambled"}, "decoding", ".tsv",
                      GROUP, table=scores)]
    report = write_group_report(tmp_path, written, 4)
    text = report.read_text(encoding="utf-8")
    assert '<section id="tables">' in text and "<img" not in text
    assert '<section id="maps">' not in text and '<section id="time">' not in text
    assert "0.0003" in text


@pytest.mark.slow
def test_subject_report_names_the_layer_that_predicts_best(tmp_path):
    """Three layers of one extractor, the middle one planted with the highest R²: the layer figure names it."""
    rng = np.random.default_rng(1)
    brain = _brain()
    region = np.zeros(SHAPE, bool)
    region[8:12, 10:14, 8:12] = True
    mask = _write(tmp_path, {"subject": "01", "task": "lpp", "space": SPACE, "desc": "brain"}, "mask", ".nii.gz",
                  {}, values=brain.astype(np.float32))
    written = [mask]
    for layer, strength in ((0, 0.05), (3, 0.3), (6, 0.12)):
        r2 = np.where(brain, rng.normal(0, 0.01, SHAPE) + strength * region, 0)
        sidecar = {"Model": {"CrossValidation": "leave-one-run-out", "NFolds": 3},
                   "FeatureSpace": f"tinylmL{layer}",
                   "Features": {"Plugin": {"Name": "tinylm", "Distribution": "tiny", "Version": "1"}, "Spec": "tinylm"}}
        written.append(_write(tmp_path, {"subject": "01", "task": "lpp", "space": SPACE, "desc": f"tinylmL{layer}",
                                         "stat": "rSquare"}, "statmap", ".nii.gz", sidecar, values=r2))
    report = write_subject_report(tmp_path, "01", written)
    text = html.unescape(report.read_text(encoding="utf-8"))
    assert "layer 3 predicts best" in text
    assert (tmp_path / "sub-01/figures/sub-01_task-lpp_space-MNI152NLin2009cAsym_desc-tinylm_layers.png").read_bytes() \
        .startswith(PNG_SIGNATURE)


def test_an_unreadable_derivative_in_the_output_folder_is_named_with_a_fix(tmp_path):
    """A committed sidecar damaged by hand stops the report with a message naming it, not a traceback."""
    stage = tmp_path / "out" / ".bids-encoding" / "staging-test"
    stage.mkdir(parents=True)
    relative = _write(tmp_path / "out", {"subject": "01", "task": "lpp", "space": SPACE, "desc": "wordrate",
                                         "stat": "rSquare"}, "statmap", ".nii.gz", {}, values=_brain() * 0.1)
    damaged = tmp_path / "out" / relative.replace(".nii.gz", ".json")
    damaged.write_text("{not json")
    with pytest.raises(UserError) as raised:
        write_subject_report(stage, "01", [])
    assert str(damaged) in raised.value.message and "re-running" in raised.value.message
