"""The group report: the group derivatives under ``group/``, each kind in its section when present.

- maps (``stat-rSquare``, ``stat-score`` or ``stat-rsa`` means, ``stat-t``, ``stat-p`` and a corrected ``stat-pFWE`` or
  ``stat-pFDR``, and ``stat-tfce`` under ``--group-test tfce``): the mean effect, and the t map (the TFCE map
  when there is one, since its pFWE is the TFCE's) where the corrected p is below the sidecar's ``Alpha``;
- EEG/MEG decoding over time (a ``time`` column): the mean with its confidence band, clusters shaded;
- the other tables (subjects' decoding scores, regions, channels): shown as tables.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..derivatives import parse_entities
from ..locations import Layout
from . import figures
from .files import ReportFiles
from .html import escape, figure, frame_table, table, write_page
from .methods import methods, provenance
from .subject import MEEG_HEADER, R2_THRESHOLD, figure_name, in_mni, time_decoding_block

EFFECTS = {"rSquare": "mean held-out R²", "score": "mean searchlight score", "rsa": "mean searchlight RSA score"}
CORRECTED = ("pFWE", "pFDR")
SHOWN = {"t": "one-sample t", "tfce": "TFCE"}
MAPS_HEADER = ["task", "model", "effect", "subjects", "test", "correction", "voxels significant", "peak t"]


def _map_groups(files: ReportFiles) -> dict[tuple, dict[str, str]]:
    """The group maps by (task, space, desc): {stat: relative path}."""
    groups: dict[tuple, dict[str, str]] = defaultdict(dict)
    for relative in files.maps():
        ents = parse_entities(relative)
        groups[(ents.get("task", ""), ents.get("space", ""), ents.get("desc", ""))][ents.get("stat", "")] = relative
    return dict(sorted(groups.items()))


def _significant(files: ReportFiles, stats: dict[str, str], alpha: float,
                 shown: str = "t") -> tuple[Layout, np.ndarray, str, str]:
    """The ``shown`` map (t or TFCE) kept where the corrected p (else the uncorrected p) is below ``alpha``, what
    p was used, and the p map's path."""
    corrected = next((stats[c] for c in CORRECTED if c in stats), None)
    p_file = corrected or stats.get("p")
    layout, values = files.values(stats[shown])
    if p_file is None:
        return layout, values, "no p map: unthresholded", ""
    _, p = files.values(p_file)
    kept = np.where(p < alpha, values, 0).astype(np.float32)
    label = parse_entities(p_file)["stat"]
    how = f"{label[1:]}-corrected p &lt; {alpha:g}" if corrected else f"uncorrected p &lt; {alpha:g} (no corrected map)"
    return layout, kept, how, p_file


def maps_section(files: ReportFiles) -> str:
    """Per (task, model): the mean effect map and the significant t map, with a summary row."""
    rows, blocks = [], []
    for (task, space, desc), stats in _map_groups(files).items():
        effect = next((s for s in EFFECTS if s in stats), None)
        ents = {"task": task, "space": space, "desc": desc}
        if effect:
            relative = stats[effect]
            sidecar = files.sidecar(relative)
            chance = float(sidecar.get("ChanceLevel", sidecar.get("Chance", 0.5)))
            threshold = R2_THRESHOLD if effect == "rSquare" else chance
            src = files.figure(figure_name(relative, "map"), [relative], lambda path: figures.map_figure(
                *files.values(relative), path, f"{task} · {desc} · {EFFECTS[effect]}", threshold, vmin=threshold,
                background=in_mni(ents)))
            blocks.append(figure(src, EFFECTS[effect], f"<code>{escape(relative)}</code>: {EFFECTS[effect]} across "
                                 f"subjects (values below {threshold:g} hidden)"))
        if "t" not in stats:
            continue
        sidecar = files.sidecar(stats["t"])
        alpha = float(sidecar.get("Alpha", 0.05))
        shown = "tfce" if "tfce" in stats else "t"
        layout, kept, how, p_file = _significant(files, stats, alpha, shown)
        n_significant = int(np.count_nonzero(kept))
        if n_significant:
            sources = [stats[shown]] + ([p_file] if p_file else [])
            src = files.figure(figure_name(stats[shown], "significant"), sources, lambda path: figures.map_figure(
                layout, kept, path, f"{task} · {desc} · {SHOWN[shown]} ({how.replace('&lt;', '<')})", 1e-6,
                cmap="cold_hot" if shown == "t" else "hot", symmetric=shown == "t", background=in_mni(ents)))
            blocks.append(figure(src, f"{SHOWN[shown]} map",
                                 f"<code>{escape(stats[shown])}</code>: {SHOWN[shown]} where the {how}"))
        else:
            blocks.append(f"<p><code>{escape(stats[shown])}</code>: no voxel where the {how}.</p>")
        _, t_values = files.values(stats["t"])
        rows.append([task, desc, EFFECTS.get(effect, ""), sidecar.get("NSubjects", ""),
                     sidecar.get("Test", sidecar.get("Description", "")), sidecar.get("Correction", "none"),
                     n_significant, float(t_values.max()) if t_values.size else float("nan")])
    return (table(MAPS_HEADER, rows) if rows else "") + "".join(blocks)


def time_section(files: ReportFiles) -> str:
    """EEG/MEG decoding over time across subjects: mean, confidence band, significant clusters."""
    rows, blocks = [], []
    for relative in files.select("decoding", ".tsv"):
        columns = pd.read_csv(files.path(relative), sep="\t", nrows=0).columns
        if {"time", "roc_auc", "ci_low", "ci_high"} <= set(columns):
            row, block = time_decoding_block(files, relative, "ci")
            rows.append(row)
            blocks.append(block)
    return table(MEEG_HEADER, rows) + "".join(blocks) if rows else ""


def tables_section(files: ReportFiles) -> str:
    """Every other group table (subjects' decoding scores, regions, channels), with its group test."""
    body = ""
    for relative in files.files:
        if not relative.endswith(".tsv"):
            continue
        frame = pd.read_csv(files.path(relative), sep="\t")
        if "time" in frame.columns:
            continue
        sidecar = files.sidecar(relative)
        test = sidecar.get("GroupTest")
        detail = (" ".join(f"{escape(k)}: {escape(v)}" for k, v in test.items()) if isinstance(test, dict)
                  else escape(test or ""))
        body += frame_table(frame, f"<code>{escape(relative)}</code>" + (f" ({detail})" if detail else ""))
    return body


def layers_section(files: ReportFiles) -> str:
    """Layer sweeps across subjects: R² by layer per region (CIs across subjects) and the test of whether the
    preferred layer differs between regions."""
    blocks = []
    for relative in files.select("layers", ".tsv"):
        frame = pd.read_csv(files.path(relative), sep="\t")
        ents = parse_entities(relative)
        src = files.figure(figure_name(relative, "regions"), [relative], lambda path, frame=frame, ents=ents: (
            figures.region_layers(frame, path, f"{ents.get('task', '')}: {ents.get('desc', '')} by layer and region",
                                  "subjects")))
        blocks.append(figure(src, "R² by layer and region", f"<code>{escape(relative)}</code>: mean across subjects "
                             "of each region's held-out R² by layer, bars the 95 % CI across subjects"))
        test_file = relative.replace("_layers.tsv", "_layertest.tsv")
        if test_file in files.files:
            sidecar = files.sidecar(test_file)
            blocks.append(frame_table(pd.read_csv(files.path(test_file), sep="\t"),
                                      f"<code>{escape(test_file)}</code>: does the preferred layer ("
                                      f"{escape(sidecar.get('PreferredLayer', ''))}) differ between regions? "
                                      f"{escape(sidecar.get('Test', ''))}"))
    return "".join(blocks)


def write_group_report(base: Path, out_files: list[str], n_subjects: int) -> Path:
    """``group.html`` in ``base`` (the staging folder), figures under ``group/figures/``.

    Shows this run's group derivatives and those already in the output folder.
    """
    files = ReportFiles.gather(Path(base), "group", out_files)
    intro = f"<p>{n_subjects} subjects.</p>"
    sections = [("maps", "Group maps", maps_section(files)),
                ("time", "Decoding over time", time_section(files)),
                ("layers", "Layer sweeps", layers_section(files)),
                ("tables", "Group tables", tables_section(files)),
                ("methods", "Methods", methods(files)),
                ("provenance", "Provenance", provenance(files))]
    return write_page(Path(base) / "group.html", "bids-encoding report: group", sections, intro)
