"""The subject's report: every derivative of the subject in the output folder, section by section.

Sections are built from the files (never the models' memory) and appear only when their files
exist: encoding maps, R² histograms, layer profiles and design matrices; decoding tables and
searchlight maps; embeddings; RSA scores, RDMs and searchlight maps; EEG/MEG decoding over time and TRFs; then
methods and provenance.
"""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..derivatives import parse_entities
from . import figures
from .files import ReportFiles, sidecar_name
from .html import escape, figure, file_link, frame_table, table, write_page
from .methods import methods, provenance

R2_THRESHOLD = 0.01  # figures hide voxels whose held-out R² is below this
LAYER = re.compile(r"L(\d+)$")


def figure_name(relative: str, kind: str) -> str:
    """``sub-01_task-x_desc-y_stat-r_statmap.nii.gz`` -> ``sub-01_task-x_desc-y_stat-r_statmap_<kind>.png``."""
    return f"{Path(relative).name.split('.')[0]}_{kind}.png"


def prefix(ents: dict, space: bool = True) -> str:
    """The subject, session, task (and space) part of a file name, for figures drawn from several files."""
    keys = (("subject", "sub"), ("session", "ses"), ("task", "task")) + ((("space", "space"),) if space else ())
    return "_".join(f"{key}-{ents[name]}" for name, key in keys if ents.get(name))


def in_mni(ents: dict) -> bool:
    """Whether slices can be drawn over nilearn's bundled MNI152 template."""
    return ents.get("space", "").startswith("MNI152")


def brain_values(files: ReportFiles, relative: str) -> np.ndarray:
    """A map's values inside the task's brain mask (the map's non-zero voxels when there is no mask)."""
    ents = parse_entities(relative)
    _, data = files.values(relative)
    same = {k: ents[k] for k in ("task", "space", "session") if k in ents}
    masks = [m for m in files.maps("mask", desc="brain", **same)
             if all(parse_entities(m).get(k) == ents.get(k) for k in ("space", "session"))]
    inside = files.values(masks[0])[1] > 0 if masks else data != 0
    return data[inside] if inside.shape == data.shape else data[data != 0]


# --------------------------------------------------------------------------- encoding


ENCODING_HEADER = ["task", "feature space", "median R²", "99th percentile R²", "max R²", "voxels with R² > 0.05",
                   "cross-validation"]


def _layer_of(sidecar: dict, desc: str) -> tuple[str, int] | None:
    """(extractor, layer) of a feature space named like ``gpt2L6`` by its plugin, else None."""
    features = sidecar.get("Features")
    name = (features.get("Plugin") or {}).get("Name", "") if isinstance(features, dict) else ""
    found = LAYER.fullmatch(desc[len(name):]) if name and desc.startswith(name) else None
    return (name, int(found.group(1))) if found else None


def encoding_section(files: ReportFiles) -> str:
    """A table of the R² maps, each map's glass brain and slices, R² histograms per task, layer profiles."""
    maps = [r for r in files.maps(stat="rSquare") if "Model" in files.sidecar(r)]
    if not maps:
        return ""
    rows, blocks = [], []
    by_task: dict[str, dict[str, tuple[str, np.ndarray]]] = defaultdict(dict)
    layers: dict[tuple[str, str], dict[int, np.ndarray]] = defaultdict(dict)
    for relative in maps:
        ents, sidecar = parse_entities(relative), files.sidecar(relative)
        task, desc = ents.get("task", ""), ents.get("desc", "")
        values = brain_values(files, relative)
        by_task[prefix(ents)][desc] = (relative, values)
        if found := _layer_of(sidecar, desc):
            extractor, layer = found
            layers[(prefix(ents), extractor)][layer] = values
        rows.append([task, desc, float(np.median(values)), float(np.percentile(values, 99)), float(values.max()),
                     f"{np.mean(values > 0.05) * 100:.1f}%", sidecar["Model"].get("CrossValidation", "")])
        src = files.figure(figure_name(relative, "map"), [relative], lambda path: figures.map_figure(
            *files.values(relative), path, f"{task} · {desc} · held-out R²", R2_THRESHOLD, vmin=0,
            background=in_mni(ents)))
        blocks.append(figure(src, f"held-out R² of {desc}", f"<code>{escape(relative)}</code>: glass brain and axial "
                             f"slices (voxels with R² &lt; {R2_THRESHOLD} hidden)"))
    body = table(ENCODING_HEADER, rows) + "".join(blocks)
    for name, spaces in by_task.items():
        sources = [r for r, _ in spaces.values()]
        src = files.figure(f"{name}_desc-r2_histogram.png", sources, lambda path: figures.r2_histograms(
            {desc: values for desc, (_, values) in spaces.items()}, path, f"{name}: held-out R² per voxel"))
        body += figure(src, "R² histograms", "held-out R² of the voxels in the brain mask, one histogram per feature "
                       "space", width=600)
    for (name, extractor), by_layer in sorted(layers.items()):
        if len(by_layer) > 1:
            body += _layer_block(files, name, extractor, dict(sorted(by_layer.items())), by_task[name])
    return (body + layer_sweep_section(files) + comparison_section(files) + weights_section(files)
            + design_section(files))


def layer_sweep_section(files: ReportFiles) -> str:
    """Each layer sweep: its best-layer map (where the best layer's R² reaches the threshold) and, with regions,
    R² by layer per region with CIs across outer folds."""
    blocks = []
    for relative in files.maps(stat="bestLayer"):
        ents = parse_entities(relative)
        extractor = ents.get("desc", "")
        r2_file = relative.replace("_stat-bestLayer_", "_stat-bestLayerRSquare_")
        if r2_file not in files.files:
            continue

        def draw(path, relative=relative, r2_file=r2_file, ents=ents):
            layout, layer = files.values(relative)
            _, r2 = files.values(r2_file)
            shown = np.where(np.nan_to_num(r2) >= R2_THRESHOLD, np.nan_to_num(layer) + 1, 0).astype(np.float32)
            figures.map_figure(layout, shown, path,
                              f"{ents.get('task', '')} · {extractor} · best layer + 1", 0.5, vmin=0.5,
                              cmap="viridis", background=in_mni(ents))
        src = files.figure(figure_name(relative, "map"), [relative, r2_file], draw)
        blocks.append(figure(src, f"best layer of {extractor}", f"<code>{escape(relative)}</code>: the layer whose "
                             f"model predicts each voxel best, shown as layer + 1 (so that layer 0 shows), where that "
                             f"layer's held-out R² is at least {R2_THRESHOLD}"))
        table_file = next((t for t in files.select("layers", ".tsv", desc=extractor)
                           if all(parse_entities(t).get(k) == ents.get(k) for k in ("task", "space", "session"))), None)
        if table_file:
            frame = pd.read_csv(files.path(table_file), sep="\t")
            src = files.figure(figure_name(table_file, "regions"), [table_file], lambda path, frame=frame: (
                figures.region_layers(frame, path, f"{ents.get('task', '')}: {extractor} by layer and region",
                                      "outer folds")))
            best = frame[frame["best"] == 1][["name", "layer", "mean_r2", "ci_low", "ci_high"]]
            blocks.append(figure(src, f"R² of {extractor} by layer and region", f"<code>{escape(table_file)}</code>: "
                                 "each region's held-out R² by layer, bars the 95 % CI across outer folds")
                          + frame_table(best, "each region's best layer"))
    return "".join(blocks)


def weights_section(files: ReportFiles) -> str:
    """The saved encoding models (--save-weights), each a link to the sidecar that ``bids-encoding predict`` reads."""
    items = []
    for relative in files.select("weights", ".safetensors"):
        sidecar = files.sidecar(relative)
        if "Design" not in sidecar or "FeatureSpace" not in sidecar:  # an embedder's weights
            continue
        shape = (sidecar.get("Tensors", {}).get("weights", {}).get("Shape") or ["?", "?"])
        size = files.path(relative).stat().st_size / 2 ** 20
        items.append(f"<li>{file_link(sidecar_name(relative))} ({escape(sidecar['FeatureSpace'])}: {shape[0]} design "
                     f"columns x {shape[1]} voxels, {size:.1f} MiB of weights)</li>")
    if not items:
        return ""
    return ("<h3>Saved models</h3><p>Refitted on all runs with each voxel's penalty; apply one to new stimuli with "
            "<code>bids-encoding predict WEIGHTS.json EVENTS.tsv OUT</code>:</p><ul class='files'>" + "".join(items)
            + "</ul>")


def comparison_section(files: ReportFiles) -> str:
    """Each paired comparison's delta R² map (--compare), A better than B in warm colours, worse in cold."""
    blocks = []
    for relative in files.maps(stat="deltaRSquare"):
        ents, compared = parse_entities(relative), files.sidecar(relative).get("ComparedModels", {})
        a, b = compared.get("A", "A"), compared.get("B", "B")
        src = files.figure(figure_name(relative, "map"), [relative], lambda path: figures.map_figure(
            *files.values(relative), path, f"{ents.get('task', '')} · {a} vs {b} · held-out ΔR²", R2_THRESHOLD,
            cmap="cold_hot", symmetric=True, background=in_mni(ents)))
        blocks.append(figure(src, f"held-out R² of {a} minus {b}", f"<code>{escape(relative)}</code>: same outer "
                             f"folds for both models (|ΔR²| &lt; {R2_THRESHOLD} hidden); p and q beside it"))
    return "".join(blocks)


def _layer_block(files: ReportFiles, name: str, extractor: str, by_layer: dict[int, np.ndarray],
                 spaces: dict[str, tuple[str, np.ndarray]]) -> str:
    """Which layer of one extractor predicts best: median and 99th percentile R² in the mask per layer."""
    summaries = {"median": [float(np.median(v)) for v in by_layer.values()],
                 "99th percentile": [float(np.percentile(v, 99)) for v in by_layer.values()]}
    sources = [spaces[f"{extractor}L{layer}"][0] for layer in by_layer]
    src = files.figure(f"{name}_desc-{extractor}_layers.png", sources, lambda path:
                       figures.layer_profile(list(by_layer), summaries, path, f"{name}: {extractor} by layer"))
    best = list(by_layer)[int(np.argmax(summaries["99th percentile"]))]
    return figure(src, f"R² of {extractor} by layer", f"{escape(extractor)}: held-out R² in the brain mask by layer; "
                  f"layer {best} predicts best (99th percentile {max(summaries['99th percentile']):.3f})", width=600)


def read_design(files: ReportFiles, relatives: list[str]) -> tuple[pd.DataFrame, int]:
    """One run's features on the TR grid (every recording side by side), at most ``MAX_DESIGN_COLUMNS`` columns,
    and the number of columns there are."""
    share = max(1, figures.MAX_DESIGN_COLUMNS // len(relatives))
    columns, total = {}, 0
    for relative in relatives:
        recording = parse_entities(relative)["recording"]
        names = files.sidecar(relative).get("Columns") or []
        with gzip.open(files.path(relative), "rt") as handle:
            values = np.loadtxt(handle, delimiter="\t", ndmin=2)
        total += values.shape[1]
        for index in range(min(share, values.shape[1])):
            name = names[index] if index < len(names) else str(index)
            columns[name if name == recording else f"{recording}:{name}"] = values[:, index]
    return pd.DataFrame(columns), total


def design_section(files: ReportFiles) -> str:
    """Each task's design matrix, shown for its first run."""
    runs: dict[str, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
    for relative in files.select("stim", ".tsv.gz"):
        ents = parse_entities(relative)
        runs[ents.get("task", "")][(ents.get("session", ""), ents.get("run", ""))].append(relative)
    body = ""
    for task, by_run in sorted(runs.items()):
        first = sorted(by_run)[0]
        relatives = sorted(by_run[first])
        frame, total = read_design(files, relatives)
        ents = parse_entities(relatives[0])
        name = prefix(ents) + (f"_run-{first[1]}" if first[1] else "") + "_design.png"
        src = files.figure(name, relatives, lambda path: figures.design_matrix(frame, path, f"task {task}"))
        shown = f" (the first {frame.shape[1]} of {total} columns shown)" if frame.shape[1] < total else ""
        body += figure(src, f"design matrix of task {task}", f"task {escape(task)}, run {escape(first[1] or 1)}: the "
                       f"features on the volumes' grid before delays and z-scoring{shown}, each column scaled to its "
                       "largest value", width=min(900, 200 + 18 * frame.shape[1]))
    return "<h3>Design matrices</h3>" + body if body else ""


# --------------------------------------------------------------------------- decoding


def _decoding_tables(files: ReportFiles, embedder: bool) -> list[str]:
    """fMRI decoding tables (no time column): whole-pattern decoding, or decoding from an embedding's latents."""
    found = []
    for relative in files.select("decoding", ".tsv"):
        if "/func/" in f"/{relative}" and ("Embedder" in files.sidecar(relative)) == embedder:
            found.append(relative)
    return found


def decoding_section(files: ReportFiles) -> str:
    """The whole-pattern decoding tables and the searchlight maps."""
    body = ""
    for relative in _decoding_tables(files, embedder=False):
        sidecar = files.sidecar(relative)
        contrast = sidecar.get("Contrast") or {}
        caption = (f"<code>{escape(relative)}</code>: {escape(contrast.get('Column', ''))} "
                   f"{escape(' vs '.join(contrast.get('Values', [])))}, chance {sidecar.get('Chance', 0.5)}")
        body += frame_table(pd.read_csv(files.path(relative), sep="\t"), caption)
    for relative in files.maps(stat="score"):
        ents, sidecar = parse_entities(relative), files.sidecar(relative)
        chance = float(sidecar.get("Chance", sidecar.get("ChanceLevel", 0.5)))
        src = files.figure(figure_name(relative, "map"), [relative], lambda path: figures.map_figure(
            *files.values(relative), path, f"{ents.get('task')} · {ents.get('desc')} · searchlight", chance,
            vmin=chance, background=in_mni(ents)))
        body += figure(src, "searchlight map", f"<code>{escape(relative)}</code>: searchlight score, voxels at or "
                       f"below chance ({chance:g}) hidden")
    return body


# --------------------------------------------------------------------------- embedding

EMBEDDING_HEADER = ["task", "embedding", "region", "latents", "held-out R² (PCA, same size)", "active fraction",
                    "dead latents", "silhouette latents / voxels"]


def read_latents(files: ReportFiles, relatives: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Latents and condition names of every run of one embedding (its ``_timeseries.tsv.gz`` files), and a sidecar."""
    latents, conditions, sidecar = [], [], {}
    for relative in sorted(relatives):
        sidecar = files.sidecar(relative)
        values = pd.read_csv(files.path(relative), sep="\t", header=None).to_numpy(float)
        levels = sidecar["condition"]["Levels"]
        conditions += [levels.get(f"{code:g}", "n/a") for code in values[:, 1]]
        latents.append(values[:, 2:])
    return np.concatenate(latents), np.asarray(conditions), sidecar


def embedding_section(files: ReportFiles) -> str:
    """A t-SNE figure and a summary row for every embedding (all runs of one task and embedder together)."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for relative in files.select("timeseries", ".tsv.gz"):
        if "Embedder" in files.sidecar(relative):
            ents = parse_entities(relative)
            groups[(prefix(ents, space=False), ents.get("desc", ""))].append(relative)
    rows, blocks = [], []
    for (name, desc), relatives in sorted(groups.items()):
        sidecar = files.sidecar(relatives[0])
        task = parse_entities(relatives[0]).get("task", "")

        def draw(path):
            latents, conditions, first = read_latents(files, relatives)
            figures.tsne(latents, conditions, path, f"{task} · {desc} · t-SNE of the latents", int(first.get("Seed", 0)))

        src = files.figure(f"{name}_desc-{desc}_tsne.png", relatives, draw)
        silhouette = sidecar.get("Silhouette", {})
        rows.append([task, desc, sidecar["Region"]["Name"], sidecar["LatentSize"],
                     f"{sidecar['HeldOutR2']:.3f} (PCA {sidecar['PCAHeldOutR2']:.3f})",
                     f"{sidecar['Sparsity']:.2f}", f"{sidecar['DeadLatentFraction']:.2f}",
                     " / ".join("n/a" if silhouette.get(k) is None else f"{silhouette[k]:.2f}"
                                for k in ("Latents", "Voxels"))])
        blocks.append(figure(src, f"t-SNE of {desc}", f"{sidecar.get('NSamples', '')} samples "
                             f"({escape(sidecar.get('Samples', '').split(':')[0])}), coloured by their condition, which "
                             "the embedder never saw", width=450))
    if not rows:
        return ""
    tables = "".join(frame_table(pd.read_csv(files.path(r), sep="\t"), f"<code>{escape(r)}</code>: decoding from the "
                                 "latents and from the region's voxels") for r in _decoding_tables(files, embedder=True))
    return table(EMBEDDING_HEADER, rows) + tables + "".join(blocks)


# --------------------------------------------------------------------------- representational similarity


def rsa_section(files: ReportFiles) -> str:
    """Each task's RSA score table (region x model), then each region's RDM as an image, then each model's
    searchlight map."""
    body = ""
    for relative in files.select("scores", ".tsv"):
        sidecar = files.sidecar(relative)
        if "Comparison" not in sidecar:
            continue
        caption = (f"<code>{escape(relative)}</code>: {escape(sidecar['Comparison']['Name'])} of each region's RDM "
                   f"({escape(sidecar['Distance']['Name'])}) with each model's; p from "
                   f"{sidecar['Permutations']['N']} permutations of the conditions")
        body += frame_table(pd.read_csv(files.path(relative), sep="\t", na_values="n/a"), caption)
    for relative in files.select("rdm", ".tsv"):
        ents, sidecar = parse_entities(relative), files.sidecar(relative)

        def draw(path, relative=relative, ents=ents):
            frame = pd.read_csv(files.path(relative), sep="\t")
            figures.rdm(frame.to_numpy(float), list(frame.columns), path,
                        f"{ents.get('task')} · {ents.get('desc')} · {sidecar.get('Distance', {}).get('Name', '')}")

        src = files.figure(figure_name(relative, "matrix"), [relative], draw)
        region = sidecar.get("Region", {})
        body += figure(src, f"RDM of {ents.get('desc')}", f"<code>{escape(relative)}</code>: region "
                       f"{escape(region.get('Name', ents.get('desc')))} ({region.get('NVoxels', '')} voxels), "
                       f"{len(sidecar.get('Conditions', []))} conditions of {escape(sidecar.get('ConditionColumn', ''))}",
                       width=450)
    for relative in files.maps(stat="rsa"):
        ents, sidecar = parse_entities(relative), files.sidecar(relative)
        light = sidecar.get("Searchlight") or {}
        src = files.figure(figure_name(relative, "map"), [relative], lambda path, relative=relative, ents=ents:
                           figures.map_figure(*files.values(relative), path, f"{ents.get('task')} · {ents.get('desc')} · "
                                             "searchlight RSA", 0.0, vmin=0.0, background=in_mni(ents)))
        body += figure(src, f"searchlight RSA of {ents.get('desc')}", f"<code>{escape(relative)}</code>: "
                       f"{escape(sidecar.get('Comparison', {}).get('Name', ''))} of the model {escape(ents.get('desc'))}"
                       f" with the {escape(sidecar.get('Distance', {}).get('Name', ''))} RDM of a sphere of "
                       f"{light.get('Radius', 0):g} mm around each voxel; scores at or below 0 hidden; p-values "
                       f"beside it ({escape(sidecar.get('PermutationPValues', ''))})")
    return body


# --------------------------------------------------------------------------- EEG and MEG

MEEG_HEADER = ["task", "model", "result", "detail"]


def _significant(clusters: list[dict]) -> str:
    found = [f"{c['Start']:.2f}-{c['Stop']:.2f} s (p={c['p']:.3f})" for c in clusters if c["p"] < 0.05]
    return ", ".join(found) or "no cluster with p < 0.05"


def time_decoding_block(files: ReportFiles, relative: str, band: str) -> tuple[list, str]:
    """A decoding-over-time table's row and figure: ``band`` "sd" (participant: ± sd over folds) or "ci"
    (group: confidence interval across subjects)."""
    ents, sidecar = parse_entities(relative), files.sidecar(relative)
    frame = pd.read_csv(files.path(relative), sep="\t", na_values="n/a")
    low, high = ((frame["roc_auc"] - frame["sd"], frame["roc_auc"] + frame["sd"]) if band == "sd"
                 else (frame["ci_low"], frame["ci_high"]))
    chance = float(sidecar.get("ChanceLevel", 0.5))
    src = files.figure(figure_name(relative, "timecourse"), [relative], lambda path: figures.time_course(
        frame["time"], frame["roc_auc"], low, high, chance, sidecar.get("Clusters", []), path,
        f"{ents.get('task')} · {ents.get('desc')}"))
    peak = sidecar.get("Peak") or {}
    row = [ents.get("task", ""), f"decoding {ents.get('desc')}",
           f"peak AUC {peak.get('RocAuc', float('nan')):.2f} at {peak.get('Time', float('nan')):.3f} s",
           _significant(sidecar.get("Clusters", []))]
    spread = ("mean ± sd over folds" if band == "sd" else
              f"mean across {sidecar.get('NSubjects', '')} subjects with its "
              f"{float(sidecar.get('ConfidenceLevel', 0.95)) * 100:g}% confidence interval")
    return row, figure(src, "decoding over time", f"<code>{escape(relative)}</code>: {spread}; dashed: chance; "
                       "orange: time clusters with permutation p &lt; 0.05", width=600)


def meeg_section(files: ReportFiles) -> str:
    """Decoding over time (and its temporal generalization) and temporal response functions of EEG/MEG tasks."""
    rows, blocks = [], []
    for relative in files.files:
        ents = parse_entities(relative)
        if Path(relative).parent.name not in ("eeg", "meg"):
            continue
        if ents["suffix"] == "decoding" and relative.endswith(".tsv"):
            row, block = time_decoding_block(files, relative, "sd")
            rows.append(row)
            blocks.append(block)
        elif ents["suffix"] == "decoding" and relative.endswith(".tsv.gz"):
            sidecar = files.sidecar(relative)

            def draw(path):
                scores = pd.read_csv(files.path(relative), sep="\t", header=None).to_numpy(float)
                figures.generalization_matrix(scores, sidecar["Times"], float(sidecar.get("ChanceLevel", 0.5)), path,
                                              f"{ents.get('task')} · {ents.get('desc')}")

            src = files.figure(figure_name(relative, "matrix"), [relative], draw)
            blocks.append(figure(src, "temporal generalization", f"<code>{escape(relative)}</code>: ROC AUC of the "
                                 "classifier trained at one time and tested at another", width=450))
        elif ents["suffix"] == "trf" and relative.endswith(".tsv.gz"):
            sidecar = files.sidecar(relative)
            scores_file = relative.replace("_trf.tsv.gz", "_encoding.tsv")
            if scores_file not in files.files:
                continue
            scores = pd.read_csv(files.path(scores_file), sep="\t")
            best = scores.loc[scores["r"].idxmax()]

            def draw(path):
                weights = pd.read_csv(files.path(relative), sep="\t", header=None, names=sidecar["Columns"])
                figures.trf_kernel(weights, best["channel"], path,
                                   f"{ents.get('task')} · {ents.get('desc')} · TRF at {best['channel']}")

            src = files.figure(figure_name(relative, "kernel"), [relative, scores_file], draw)
            rows.append([ents.get("task", ""), f"TRF {ents.get('desc')}",
                         f"best channel {best['channel']}: held-out r {best['r']:.3f}",
                         f"median r over channels {scores['r'].median():.3f}"])
            blocks.append(figure(src, "temporal response function", f"<code>{escape(relative)}</code>: weights at "
                                 "the best-predicted channel, one line per feature", width=600))
    return table(MEEG_HEADER, rows) + "".join(blocks) if rows or blocks else ""


# --------------------------------------------------------------------------- the page


def write_subject_report(base: Path, subject: str, out_files: list[str]) -> Path:
    """``sub-XX.html`` in ``base`` (this run's staging folder), figures under ``sub-XX/figures/``.

    ``out_files``: the derivatives this run wrote (relative to ``base``); the report also shows those
    already in the output folder.
    """
    files = ReportFiles.gather(Path(base), f"sub-{subject}", out_files)
    sections = [("encoding", "Encoding models", encoding_section(files)),
                ("decoding", "Decoding", decoding_section(files)),
                ("embedding", "Latent embeddings", embedding_section(files)),
                ("rsa", "Representational similarity", rsa_section(files)),
                ("meeg", "EEG and MEG", meeg_section(files)),
                ("methods", "Methods", methods(files)),
                ("provenance", "Provenance", provenance(files))]
    return write_page(Path(base) / f"sub-{subject}.html", f"bids-encoding report: sub-{subject}", sections)
