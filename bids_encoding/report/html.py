"""Render reports from the derivatives just written: glass-brain figures plus the sidecars' facts.

Reports read the derivatives (never the models' memory), so what a report shows is
exactly what was saved.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from nilearn import plotting  # noqa: E402

from .. import __version__  # noqa: E402
from ..derivatives import atomic_write, parse_entities  # noqa: E402

R2_THRESHOLD = 0.01  # figures hide voxels whose held-out R² is below this
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{border-bottom:2px solid #345}table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
figure{margin:1em 0}figcaption{color:#555;font-size:90%}code{background:#f4f4f4;padding:1px 4px}"""


def _glass_brain(statmap: Path, figure: Path, title: str, threshold: float = R2_THRESHOLD) -> None:
    img = nib.load(str(statmap))
    data = np.asarray(img.dataobj)
    vmax = float(np.nanmax(data)) if np.any(data > 0) else 1.0
    display = plotting.plot_glass_brain(img, colorbar=True, plot_abs=False, vmax=max(vmax, 2 * threshold), vmin=0,
                                        cmap="hot", title=title, threshold=threshold)
    figure.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(figure, lambda tmp: display.frame_axes.figure.savefig(tmp, format="png", dpi=80))
    display.close()
    plt.close("all")


def _maps_section(base: Path, statmaps: list[str], figures_dir: str) -> tuple[list[str], list[list[str]]]:
    """Figures and a summary row for every R² map."""
    blocks, rows = [], []
    for relative in sorted(statmaps):
        ents = parse_entities(relative)
        if ents.get("stat") != "rSquare":
            continue
        path = base / relative
        data = np.asarray(nib.load(str(path)).dataobj)
        inside = data[data != 0]
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        model = sidecar.get("Model", {})
        figure_rel = f"{figures_dir}/{Path(relative).name.replace('.nii.gz', '_glassbrain.png')}"
        _glass_brain(path, base / figure_rel, f"{ents.get('task')} · {ents.get('desc')} · held-out R²")
        rows.append([ents.get("task", ""), ents.get("desc", ""), f"{inside.max() if inside.size else 0:.3f}",
                     f"{np.mean(inside > 0.05) * 100 if inside.size else 0:.1f}%", model.get("CrossValidation", "")])
        blocks.append(f'<figure><img src="{html.escape(figure_rel)}" alt="{html.escape(relative)}" width="800">'
                      f"<figcaption><code>{html.escape(relative)}</code> (voxels with R² &lt; {R2_THRESHOLD} hidden)"
                      "</figcaption></figure>")
    return blocks, rows


def _save_figure(fig, figure: Path) -> None:
    figure.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(figure, lambda tmp: fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight"))
    plt.close(fig)


def read_latents(base: Path, relatives: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Latents and condition names of every run of one embedding (its ``_timeseries.tsv.gz`` files), and a sidecar."""
    import pandas as pd

    latents, conditions, sidecar = [], [], {}
    for relative in sorted(relatives):
        path = base / relative
        sidecar = json.loads(path.with_name(path.name.replace(".tsv.gz", ".json")).read_text())
        values = pd.read_csv(path, sep="\t", header=None).to_numpy(float)
        levels = sidecar["condition"]["Levels"]
        conditions += [levels.get(f"{code:g}", "n/a") for code in values[:, 1]]
        latents.append(values[:, 2:])
    return np.concatenate(latents), np.asarray(conditions), sidecar


def _tsne_figure(latents: np.ndarray, conditions: np.ndarray, figure: Path, title: str, seed: int) -> None:
    """The samples' latents in 2D (scikit-learn t-SNE), coloured by condition."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(latents) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(latents)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for condition in sorted(set(conditions)):
        chosen = conditions == condition
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=12, alpha=0.4 if condition == "n/a" else 0.85,
                   c="#bbbbbb" if condition == "n/a" else None, label=condition)
    ax.set(title=title, xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    ax.legend(fontsize=8, frameon=False)
    _save_figure(fig, figure)


def _embedding_section(base: Path, out_files: list[str], figures_dir: str) -> tuple[list[str], list[list[str]]]:
    """A t-SNE figure and a summary row for every embedding (all runs of one task and embedder together)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for relative in out_files:
        ents = parse_entities(relative)
        if ents["suffix"] == "timeseries" and relative.endswith(".tsv.gz"):
            groups.setdefault((ents.get("task", ""), ents.get("desc", "")), []).append(relative)
    blocks, rows = [], []
    for (task, desc), relatives in sorted(groups.items()):
        latents, conditions, sidecar = read_latents(base, relatives)
        ents = parse_entities(relatives[0])
        name = "_".join(f"{key}-{ents[entity]}" for entity, key in (("subject", "sub"), ("session", "ses"))
                        if ents.get(entity))
        figure_rel = f"{figures_dir}/{name + '_' if name else ''}task-{task}_desc-{desc}_tsne.png"
        _tsne_figure(latents, conditions, base / figure_rel, f"{task} · {desc} · t-SNE of the latents",
                     int(sidecar.get("Seed", 0)))
        silhouette = sidecar.get("Silhouette", {})
        rows.append([task, desc, sidecar["Region"]["Name"], sidecar["LatentSize"],
                     f"{sidecar['HeldOutR2']:.3f} (PCA {sidecar['PCAHeldOutR2']:.3f})",
                     f"{sidecar['Sparsity']:.2f}", f"{sidecar['DeadLatentFraction']:.2f}",
                     " / ".join("n/a" if silhouette.get(k) is None else f"{silhouette[k]:.2f}" for k in ("Latents", "Voxels"))])
        blocks.append(f'<figure><img src="{html.escape(figure_rel)}" alt="t-SNE of {html.escape(desc)}" width="450">'
                      f"<figcaption>{len(latents)} samples ({html.escape(sidecar['Samples'].split(':')[0])}), "
                      "coloured by their condition, which the embedder never saw</figcaption></figure>")
    return blocks, rows


def _figure_name(relative: str, figures_dir: str, kind: str) -> str:
    return f"{figures_dir}/{Path(relative).name.split('.')[0]}_{kind}.png"


def _time_decoding_figure(table, sidecar: dict, figure: Path, title: str) -> None:
    """ROC AUC over time, ± 1 sd across folds, chance line, significant clusters shaded."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.fill_between(table["time"], table["roc_auc"] - table["sd"], table["roc_auc"] + table["sd"], alpha=0.25)
    ax.plot(table["time"], table["roc_auc"], lw=1.5)
    ax.axhline(sidecar.get("ChanceLevel", 0.5), color="k", lw=0.8, ls="--")
    ax.axvline(0.0, color="k", lw=0.8)
    for cluster in sidecar.get("Clusters", []):
        if cluster["p"] < 0.05:
            ax.axvspan(cluster["Start"], cluster["Stop"], color="orange", alpha=0.3)
    ax.set(xlabel="time (s)", ylabel="ROC AUC", title=title)
    _save_figure(fig, figure)


def _trf_figure(weights, channel: str, figure: Path, title: str) -> None:
    """The TRF of the best-predicted channel, one line per feature (at most 10)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for feature, rows in list(weights.groupby("feature"))[:10]:
        ax.plot(rows["lag"], rows[channel], lw=1.2)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set(xlabel="lag (s)", ylabel="weight", title=title)
    _save_figure(fig, figure)


def _meeg_section(base: Path, out_files: list[str], figures_dir: str) -> tuple[list[str], list[list[str]]]:
    """Decoding over time and temporal response functions of EEG/MEG tasks: a figure and a row each."""
    import pandas as pd

    blocks, rows = [], []
    for relative in sorted(out_files):
        ents, path = parse_entities(relative), base / relative
        sidecar_path = path.with_name(path.name.split(".")[0] + ".json")
        if ents["suffix"] == "decoding" and relative.endswith(".tsv") and "/func/" not in relative:
            table = pd.read_csv(path, sep="\t")
            if "time" not in table:
                continue
            sidecar = json.loads(sidecar_path.read_text())
            figure_rel = _figure_name(relative, figures_dir, "timecourse")
            _time_decoding_figure(table, sidecar, base / figure_rel, f"{ents.get('task')} · {ents.get('desc')}")
            significant = [f"{c['Start']:.2f}-{c['Stop']:.2f} s (p={c['p']:.3f})" for c in sidecar.get("Clusters", [])
                           if c["p"] < 0.05]
            rows.append([ents.get("task", ""), f"decoding {ents.get('desc')}",
                         f"peak AUC {sidecar['Peak']['RocAuc']:.2f} at {sidecar['Peak']['Time']:.3f} s",
                         ", ".join(significant) or "no cluster with p < 0.05"])
            blocks.append(f'<figure><img src="{html.escape(figure_rel)}" alt="decoding over time" width="600">'
                          f"<figcaption><code>{html.escape(relative)}</code>: mean ± sd over folds; orange: "
                          "time clusters with permutation p &lt; 0.05</figcaption></figure>")
        elif ents["suffix"] == "trf" and relative.endswith(".tsv.gz"):
            sidecar = json.loads(sidecar_path.read_text())
            weights = pd.read_csv(path, sep="\t", header=None, names=sidecar["Columns"])
            scores = pd.read_csv(base / relative.replace("_trf.tsv.gz", "_encoding.tsv"), sep="\t")
            best = scores.loc[scores["r"].idxmax()]
            figure_rel = _figure_name(relative, figures_dir, "kernel")
            _trf_figure(weights, best["channel"], base / figure_rel,
                        f"{ents.get('task')} · {ents.get('desc')} · TRF at {best['channel']}")
            rows.append([ents.get("task", ""), f"TRF {ents.get('desc')}",
                         f"best channel {best['channel']}: held-out r {best['r']:.3f}",
                         f"median r over channels {scores['r'].median():.3f}"])
            blocks.append(f'<figure><img src="{html.escape(figure_rel)}" alt="temporal response function" width="600">'
                          f"<figcaption><code>{html.escape(relative)}</code></figcaption></figure>")
    return blocks, rows


MEEG_HEADER = ["task", "model", "result", "detail"]
EMBEDDING_HEADER = ["task", "embedding", "region", "latents", "held-out R² (PCA, same size)", "active fraction",
                    "dead latents", "silhouette latents / voxels"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            f"<p><small>bids-encoding {__version__}</small></p></body></html>\n")


HEADER = ["task", "feature space", "max R²", "voxels with R² > 0.05", "cross-validation"]


def write_subject_report(base: Path, subject: str, out_files: list[str]) -> Path:
    """``sub-XX.html`` at the top of the output folder, figures under ``sub-XX/figures/``."""
    blocks, rows = _maps_section(base, out_files, f"sub-{subject}/figures")
    body = ("<h2>Encoding models</h2>" + _table(HEADER, rows) + "".join(blocks)) if rows else ""
    blocks, rows = _embedding_section(base, out_files, f"sub-{subject}/figures")
    if rows:
        body += "<h2>Latent embeddings</h2>" + _table(EMBEDDING_HEADER, rows) + "".join(blocks)
    blocks, rows = _meeg_section(base, out_files, f"sub-{subject}/figures")
    if rows:
        body += "<h2>EEG and MEG</h2>" + _table(MEEG_HEADER, rows) + "".join(blocks)
    report = base / f"sub-{subject}.html"
    atomic_write(report, lambda tmp: tmp.write_text(_page(f"bids-encoding report: sub-{subject}", body), encoding="utf-8"))
    return report


def write_group_report(base: Path, out_files: list[str], n_subjects: int) -> Path:
    """``group.html`` at the top of the output folder, figures under ``group/figures/``."""
    blocks, rows = _maps_section(base, out_files, "group/figures")
    body = f"<p>{n_subjects} subjects.</p><h2>Mean held-out R²</h2>" + _table(HEADER, rows) + "".join(blocks)
    report = base / "group.html"
    atomic_write(report, lambda tmp: tmp.write_text(_page("bids-encoding report: group", body), encoding="utf-8"))
    return report
