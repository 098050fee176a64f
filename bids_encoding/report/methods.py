"""A methods text and a provenance record, written from the sidecars of what actually ran.

Each stage's sentences come from the keys its sidecars hold (``Model``, ``CrossValidation``,
``Classifier``, ``Permutations``, ``Test``...), so the text names only the stages, feature spaces and
options that produced the files in the output folder, in words a user can paste into a paper.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..derivatives import dataset_links, parse_entities
from .files import ReportFiles
from .html import escape, file_link

LIBRARIES = ("numpy", "scipy", "scikit-learn", "nilearn", "nibabel", "pybids")


def _join(items) -> str:
    """``a``, ``a and b``, ``a, b and c`` (duplicates dropped, order kept)."""
    items = list(dict.fromkeys(str(i) for i in items if i not in (None, "")))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".") if text else ""


def _per_task(pairs: list[tuple[str, object]], unit: str = "") -> str:
    """One value when every task shares it, else each task's value: ``3 folds (lpp), 2 folds (faces)``."""
    values = {task: value for task, value in pairs}
    if len(set(map(str, values.values()))) == 1:
        return f"{next(iter(values.values()))}{unit}"
    return _join(f"{value}{unit} (task {task})" for task, value in values.items())


def _provenances(sidecars: list[dict]) -> list[dict]:
    return [s["bids-encoding"] for s in sidecars if isinstance(s.get("bids-encoding"), dict)]


def _software(sidecars: list[dict]) -> str:
    versions: dict[str, list[str]] = defaultdict(list)
    for provenance in _provenances(sidecars):
        for name, version in provenance.get("SoftwareVersions", {}).items():
            versions[name].append(version)
    if not versions:
        return ""
    libraries = _join(f"{name} {_join(versions[name])}" for name in LIBRARIES if name in versions)
    python = f"Python {_join(versions['python'])}" if "python" in versions else ""
    nipype = f", each stage run as a Nipype {_join(versions['nipype'])} workflow" if "nipype" in versions else ""
    return (f"Analyses were run with bids-encoding {_join(versions.get('bids-encoding', ['(unknown version)']))}"
            f" ({'; '.join(p for p in (python, libraries) if p)}){nipype}.")


def _comparisons(items: list[tuple[dict, dict]]) -> str:
    """Paired model comparisons (--compare), from their p maps' sidecars."""
    if not items:
        return ""
    pairs = _join(f"{s['ComparedModels']['A']} with {s['ComparedModels']['B']} (task {e.get('task', '')})"
                  for e, s in items)
    return _sentence(f"Feature spaces were compared in pairs ({pairs}): the difference of their held-out R² on the "
                     f"same outer folds, tested per voxel ({items[0][1]['Model'].get('Significance', '')})")


def _plugin(features: dict) -> str:
    plugin = features.get("Plugin", {})
    return f"{features.get('Spec', plugin.get('Name', ''))} ({plugin.get('Distribution', '')} {plugin.get('Version', '')})"


def _encoding(items: list[tuple[dict, dict]]) -> str:
    """Voxelwise encoding models, from the R² maps' sidecars."""
    if not items:
        return ""
    spaces: dict[str, list[str]] = defaultdict(list)
    joint: dict[str, list[str]] = {}
    plugins, model_of = [], {}
    for ents, sidecar in items:
        task, model = ents.get("task", ""), sidecar["Model"]
        name = sidecar.get("FeatureSpace", ents.get("desc"))
        if name == "joint":
            joint[task] = list(model.get("FeatureSpaces", {}))
        else:
            spaces[task].append(name)
        features = sidecar.get("Features", [])
        plugins += [_plugin(f) for f in (features if isinstance(features, list) else [features]) if f]
        model_of[task] = model
    models = list(model_of.items())
    alphas = [a for _, m in models for a in m.get("Alphas", [])]
    text = [f"Encoding models were fitted per task and feature space: "
            f"{_join(f'task {task} ({_spaces(spaces.get(task, []), joint.get(task))})' for task in model_of)}",
            f"features came from the extractor plugins {_join(plugins)}",
            f"the design: {_per_task([(t, m.get('Design')) for t, m in models])}",
            f"the BOLD signal was {_per_task([(t, m.get('BOLDPreprocessing')) for t, m in models])}"]
    confounds = [c for _, m in models for c in (m.get("Confounds") or [])]
    if confounds:
        text.append(f"confounds: {_join(confounds)}")
    if any(m.get("FeaturePCA") for _, m in models):
        text.append(f"features were reduced by PCA ({_per_task([(t, m.get('FeaturePCA')) for t, m in models])})")
    penalty = (f", its penalty chosen among {len(set(alphas))} values from {min(alphas):g} to {max(alphas):g}"
               if alphas else "")
    text.append(f"each voxel was modelled by {_per_task([(t, m.get('Estimator')) for t, m in models])}{penalty}"
                f" by {_per_task([(t, m.get('PenaltySelection')) for t, m in models])} "
                f"({_per_task([(t, m.get('InnerCrossValidation')) for t, m in models])})")
    text.append(f"prediction accuracy is the held-out R² under "
                f"{_per_task([(t, m.get('CrossValidation')) for t, m in models])} cross-validation "
                f"({_per_task([(t, m.get('NFolds')) for t, m in models], ' folds')}, "
                f"{_per_task([(t, m.get('NSamples')) for t, m in models], ' volumes')})")
    significance = [(t, m.get("Significance")) for t, m in models if m.get("Significance")]
    if significance:
        text.append(f"significance: {_per_task(significance)}")
    return " ".join(_sentence(t) for t in text)


def _spaces(alone: list[str], joint: list[str] | None) -> str:
    """``a and b, each alone and together in a joint banded model``."""
    if not joint:
        return _join(alone)
    if set(joint) <= set(alone):
        return f"{_join(alone)}, each alone and together in a joint banded model"
    return _join(alone + [f"a joint banded model of {_join(joint)}"])


def _contrast(sidecar: dict) -> str:
    contrast = sidecar.get("Contrast") or {}
    return f"{contrast.get('Column', '')} {' vs '.join(contrast.get('Values', []))}".strip()


def _permutations(permutations) -> str:
    if isinstance(permutations, dict):
        n, scheme = permutations.get("N", 0), permutations.get("Scheme", "")
    else:
        n, scheme = permutations or 0, ""
    return f"{n} permutations ({scheme})" if n and scheme else f"{n} permutations" if n else "no permutation test"


def _decoding(items: list[tuple[dict, dict]], searchlights: list[tuple[dict, dict]]) -> str:
    """Whole-pattern (and searchlight) decoding of fMRI trial responses."""
    if not items and not searchlights:
        return ""
    sidecar = (items or searchlights)[0][1]
    tasks = _join(f"task {ents.get('task')}" for ents, _ in items or searchlights)
    text = [f"the contrast {_join(_contrast(s) for _, s in items or searchlights)} was decoded ({tasks}) from trial "
            f"responses estimated as {sidecar.get('TrialResponses', '')}",
            sidecar.get("TrialStandardization", ""),
            f"classifier: {sidecar.get('Classifier', '')}"]
    if sidecar.get("Screening"):
        text.append(f"feature screening: {sidecar['Screening']}")
    text += [f"cross-validation: {sidecar.get('CrossValidation', '')}",
             f"the whole-pattern accuracy was tested with {_permutations(sidecar.get('Permutations'))}"]
    if searchlights:
        light = searchlights[0][1].get("Searchlight") or {}
        text.append(f"a searchlight of radius {light.get('Radius', 0):g} {light.get('Units', 'mm')} mapped the "
                    f"decoding accuracy ({searchlights[0][1].get('Description', 'cross-validated score')})")
    return " ".join(_sentence(t) for t in text if t)


def _embedding(items: list[tuple[dict, dict]], decoded: bool) -> str:
    """Brain embedders, from their latents' sidecars (one per task and embedder)."""
    if not items:
        return ""
    text = []
    for ents, s in items:
        embedder, region = s.get("Embedder", {}), s.get("Region", {})
        text.append(f"the brain embedder {embedder.get('Spec', '')} ({embedder.get('Distribution', '')} "
                    f"{embedder.get('Version', '')}) mapped the {region.get('NVoxels', '')} voxels of region "
                    f"{region.get('Name', '')} (task {ents.get('task')}) to {s.get('LatentSize', '')} latents, "
                    f"fitted on {s.get('Samples', '')}")
    first = items[0][1]
    text.append(f"validation: {first.get('Validation', '')}; the held-out reconstruction R² was compared with a "
                "PCA of the same size, and the latents were shown by t-SNE (scikit-learn)")
    if decoded:
        text.append(f"the contrast was decoded from the latents and from the region's voxels: "
                    f"{first.get('Classifier', '')}, {first.get('CrossValidation', '')}, "
                    f"{_permutations(first.get('Permutations'))}")
    return " ".join(_sentence(t) for t in text)


def _rsa(items: list[tuple[dict, dict]], maps: list[tuple[dict, dict]] = ()) -> str:
    """Representational similarity analysis, from the score tables' sidecars and the searchlight maps'."""
    if not items and not maps:
        return ""
    first = (items or maps)[0][1]
    tasks = _join(dict.fromkeys(f"task {ents.get('task')}" for ents, _ in (items or maps)))
    models = _join(dict.fromkeys([name for _, s in items for name in s.get("Models", {})]
                                 + [s.get("ModelRDM", {}).get("Name", ents.get("desc")) for ents, s in maps]))
    regions = _join(name for _, s in items for name in s.get("Regions", {}))
    where = f"in each region ({regions})" if items else "in searchlight spheres"
    text = [f"representational dissimilarity matrices (RDMs) of the {first.get('ConditionColumn', '')} conditions "
            f"({tasks}) were computed {where} from trial responses estimated as "
            f"{first.get('TrialResponses', '')}",
            f"brain RDMs: {first.get('Distance', {}).get('Description', '')}",
            f"model RDMs ({models}): the given files, and for feature spaces the {first.get('ModelDistance', '')}",
            f"brain and model RDMs were compared by {first.get('Comparison', {}).get('Description', '')}, tested "
            f"with {_permutations(first.get('Permutations'))}"]
    if maps:
        light, sidecar = maps[0][1].get("Searchlight") or {}, maps[0][1]
        p_values = sidecar.get("PermutationPValues", "")
        text.append(f"a searchlight mapped each model's comparison: the RDM of the voxels within "
                    f"{light.get('Radius', 0):g} {light.get('Units', 'mm')} of each centre ({light.get('Centres', '')}),"
                    f" with the same distance and comparison, computed for many spheres at once; "
                    + ("each sphere's permutation p-value used the same permutations of the model's conditions "
                       "(uncorrected)" if p_values.startswith("desc-") else f"permutation p-values: {p_values}"))
    return " ".join(_sentence(t) for t in text if t)


def _preprocessing(sidecar: dict, datatype: str) -> str:
    pre = sidecar.get("Preprocessing") or {}
    band = pre.get("BandPass") or {}
    parts = [f"{datatype.upper()} recordings: {pre.get('BadChannels', '')}",
             f"reference: {pre['Reference']}" if pre.get("Reference") else "",
             f"band-pass {band.get('Low')}-{band.get('High')} {band.get('Units', 'Hz')} ({band.get('Filter', '')})"
             if band else "",
             f"resampled to {pre['ResamplingFrequency']:g} Hz" if pre.get("ResamplingFrequency") else ""]
    return "; ".join(p for p in parts if p)


def _meeg(decodings: list[tuple[dict, dict]], trfs: list[tuple[dict, dict]]) -> str:
    """Time-resolved decoding and temporal response functions of EEG/MEG."""
    if not decodings and not trfs:
        return ""
    ents, first = (decodings or trfs)[0]
    text = [_preprocessing(first, ents.get("datatype", "eeg"))]
    for ents, s in decodings:
        epochs = s.get("Epochs") or {}
        baseline = epochs.get("Baseline")
        start = "the epoch's start" if baseline and baseline[0] is None else f"{baseline[0]:g} s" if baseline else ""
        end = "the epoch's end" if baseline and baseline[1] is None else f"{baseline[1]:g} s" if baseline else ""
        text.append(f"the contrast {_contrast(s)} (task {ents.get('task')}) was decoded at each time of epochs "
                    f"from {epochs.get('TMin')} to {epochs.get('TMax')} s"
                    + (f" (baseline from {start} to {end})" if baseline else "")
                    + f": {s.get('Classifier', '')}, scored by {s.get('Metric', 'ROC AUC')} under "
                      f"{s.get('CrossValidation', '')}; time clusters were tested with "
                      f"{_permutations(s.get('Permutations'))}")
    for ents, s in trfs:
        lags = s.get("Lags") or {}
        penalty = s.get("RidgePenalty") or {}
        text.append(f"temporal response functions of {(s.get('Features') or {}).get('Extractor', ents.get('desc'))} "
                    f"(task {ents.get('task')}): {s.get('Model', '')}, lags {lags.get('TMin')} to {lags.get('TMax')} s, "
                    f"{s.get('CrossValidation', '')}, penalty chosen by {penalty.get('Selection', '')}; "
                    "accuracy is the held-out correlation per channel")
    return " ".join(_sentence(t) for t in text if t)


def _layer_sweeps(items: list[tuple[dict, dict]], group: list[tuple[str, dict, dict]]) -> str:
    """Layer sweeps: best layer per voxel and region x layer tables (subject), the layer test (group)."""
    text = []
    if items:
        swept = _join(f"{e.get('desc')} (task {e.get('task', '')}, layers {_join(s.get('Layers', []))})"
                      for e, s in items)
        text.append(f"For feature extractors with layers ({swept}), one model was fitted per layer and the layer with "
                    "the highest held-out R² was mapped per voxel; with regions, each region's R² by layer was "
                    "tabulated with a 95 % t confidence interval across outer folds (approximate: the folds share "
                    "training data)")
    tests = [s for relative, e, s in group if e["suffix"] == "layertest"]
    if tests:
        text.append("Across subjects, each region's R² by layer was averaged with a 95 % t confidence interval, and "
                    f"whether the preferred layer ({tests[0].get('PreferredLayer', '')}) differs between regions "
                    f"was tested with a {tests[0].get('LayerTest', '')}")
    return " ".join(_sentence(t) for t in text)


def _kind(ents: dict, sidecar: dict) -> str:
    """What a group output holds, in words."""
    if ents["suffix"] == "statmap":
        return "maps"
    if ents["suffix"] == "scores":
        return "RSA scores"
    return "decoding over time" if "Clusters" in sidecar else f"{ents['suffix']} scores"


def _group(items: list[tuple[str, dict, dict]]) -> str:
    """Group tests, from the group derivatives' sidecars."""
    if not items:
        return ""
    subjects = sorted({s for _, _, sidecar in items for s in sidecar.get("Subjects", [])})
    text = [f"group statistics over {len(subjects)} subjects ({_join('sub-' + s for s in subjects)})"
            if subjects else "group statistics across subjects"]
    tested = [f"{ents.get('desc')} {_kind(ents, sidecar)} (task {ents.get('task')}"
              + (f", against {sidecar['ChanceLevel']:g})" if "ChanceLevel" in sidecar else ")")
              for relative, ents, sidecar in items
              if ents.get("stat") == "t" or (relative.endswith(".tsv")
                                             and ents["suffix"] not in ("regions", "layers", "layertest"))]
    if tested:
        text.append(f"the participant outputs tested were {_join(tested)}")
    tests = {}
    for relative, ents, sidecar in items:
        if sidecar.get("Test") or sidecar.get("TestDescription"):
            tests[(sidecar.get("Test"), sidecar.get("Correction"), sidecar.get("Alpha"))] = sidecar
    for (test, correction, alpha), sidecar in tests.items():
        described = sidecar.get("TestDescription") or test
        permutations = sidecar.get("Permutations")
        tfce = next((s["TFCE"] for _, _, s in items if s.get("Test") == test and "TFCE" in s), None)
        if tfce:  # the map sidecars carry its parameters
            described += (f"; TFCE with E = {tfce['E']:g}, H = {tfce['H']:g}, extent in {tfce['Extent']}, "
                          f"connectivity {tfce['Connectivity']}")
        text.append(f"effects were tested with a {'TFCE' if test == 'tfce' else test} test ({described}"
                    + (f"; {permutations} permutations" if permutations else "") + ")"
                    + (f", {correction}-corrected" if correction else "") + (f" at alpha {alpha:g}" if alpha else ""))
    if not tests:  # group maps without a named test: their own descriptions
        text += [sidecar["Description"] for _, ents, sidecar in items
                 if ents.get("stat") in ("t", "p") and sidecar.get("Description")][:2]
    clusters = {sidecar["ClusterTest"] for _, _, sidecar in items if sidecar.get("ClusterTest")}
    if clusters:
        text.append(f"decoding over time: {_join(clusters)}")
    return " ".join(_sentence(t) for t in text)


def methods(files: ReportFiles) -> str:
    """The methods paragraphs of a report's derivatives (HTML), or ''."""
    encoding, decoding, searchlights, embeddings, time_decoding, trfs, group = [], [], [], [], [], [], []
    rsa, rsa_maps, comparisons, layer_sweeps = [], [], [], []
    embedding_decoded = False
    for relative in files.files:
        if not relative.endswith((".nii.gz", ".dscalar.nii", ".tsv", ".tsv.gz")) and not (
                relative.endswith(".shape.gii") and parse_entities(relative).get("hemi") == "L"):
            continue
        ents, sidecar = parse_entities(relative), files.sidecar(relative)
        ents["datatype"] = Path(relative).parent.name
        if relative.startswith("group/"):
            group.append((relative, ents, sidecar))
        elif ents["suffix"] == "statmap" and ents.get("stat") == "rSquare" and "Model" in sidecar:
            encoding.append((ents, sidecar))
        elif ents["suffix"] == "statmap" and ents.get("stat") == "p" and "ComparedModels" in sidecar:
            comparisons.append((ents, sidecar))
        elif ents["suffix"] == "statmap" and ents.get("stat") == "bestLayer":
            layer_sweeps.append((ents, sidecar))
        elif ents["suffix"] == "statmap" and ents.get("stat") == "rsa":
            rsa_maps.append((ents, sidecar))
        elif ents["suffix"] == "statmap" and ents.get("stat") == "score":
            searchlights.append((ents, sidecar))
        elif ents["suffix"] == "decoding" and "Embedder" in sidecar:
            embedding_decoded = True
        elif ents["suffix"] == "decoding" and "Clusters" in sidecar:
            time_decoding.append((ents, sidecar))
        elif ents["suffix"] == "decoding" and "Classifier" in sidecar and relative.endswith(".tsv"):
            decoding.append((ents, sidecar))
        elif ents["suffix"] == "timeseries" and "Embedder" in sidecar:
            if not any(e.get("task") == ents.get("task") and e.get("desc") == ents.get("desc") for e, _ in embeddings):
                embeddings.append((ents, sidecar))
        elif ents["suffix"] == "trf":
            trfs.append((ents, sidecar))
        elif ents["suffix"] == "scores" and "Comparison" in sidecar:
            rsa.append((ents, sidecar))
    paragraphs = [_software(list(files.sidecars().values())), _encoding(encoding), _comparisons(comparisons),
                  _layer_sweeps(layer_sweeps, group),
                  _decoding(decoding, searchlights),
                  _embedding(embeddings, embedding_decoded), _rsa(rsa, rsa_maps), _meeg(time_decoding, trfs), _group(group)]
    seeds = sorted({p.get("Seed") for p in _provenances(list(files.sidecars().values())) if p.get("Seed") is not None})
    if seeds:
        paragraphs.append(f"The random seed was {seeds[0]}." if len(seeds) == 1 else
                          f"The random seeds were {_join(seeds)} (runs with different --seed).")
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        return ""
    return '<div class="methods">' + "".join(f"<p>{escape(p)}</p>" for p in paragraphs) + "</div>"


def provenance(files: ReportFiles) -> str:
    """Commands, versions, seeds, options, input datasets and the derivative files (linked), as HTML."""
    runs: dict[str, dict] = {}
    sources: set[str] = set()
    for sidecar in files.sidecars().values():
        record = sidecar.get("bids-encoding")
        if isinstance(record, dict) and record.get("Command"):
            runs.setdefault(record["Command"], record)
        sources.update(s for s in sidecar.get("Sources", []) if isinstance(s, str))
    blocks = []
    if runs:
        items = []
        for command, record in runs.items():
            config = record.get("Config") or {}
            options = "".join(f"<tr><td>{escape(k)}</td><td><code>{escape(v)}</code></td></tr>"
                              for k, v in sorted(config.items()))
            items.append(f"<li><code>{escape(command)}</code> (bids-encoding {escape(record.get('Version', ''))}, "
                         f"seed {escape(record.get('Seed', ''))})<details><summary>options</summary>"
                         f"<table>{options}</table></details></li>")
        blocks.append("<h3>Commands</h3><ul>" + "".join(items) + "</ul>")
    links: dict[str, str] = {}
    for record in runs.values():
        config = record.get("Config") or {}
        if config.get("bids_dir"):
            links.update(dataset_links(Path(config["bids_dir"]), tuple(Path(d) for d in config.get("derivatives") or ())))
    if links:
        blocks.append("<h3>Input datasets</h3><ul>" + "".join(
            f"<li><code>{escape(name)}</code>: <code>{escape(uri)}</code></li>" for name, uri in links.items()) + "</ul>")
    if sources:
        blocks.append(f"<details><summary>Files read ({len(sources)}, as BIDS URIs)</summary><ul class='files'>"
                      + "".join(f"<li><code>{escape(s)}</code></li>" for s in sorted(sources)) + "</ul></details>")
    blocks.append(f"<h3>Derivatives ({len(files.files)} files)</h3><ul class='files'>"
                  + "".join(f"<li>{file_link(r)}</li>" for r in files.files) + "</ul>")
    return "".join(blocks)
