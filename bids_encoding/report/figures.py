"""The reports' figures: each function draws one PNG from arrays or images already read from the derivatives.

Figures are small (80 dpi) so that the report node, which runs in every participant run, stays quick.
Brain maps are drawn with nilearn's plotting, design matrices with nilearn's ``plot_design_matrix``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from ..derivatives import atomic_write  # noqa: E402
from ..locations import Layout, VolumeLayout  # noqa: E402
from ..meshes import Mesh, mesh_description, template_sulcal_depth  # noqa: E402


DPI = 80
MAX_DESIGN_COLUMNS = 60  # wider designs (a language model's 768 units) are shown by their first columns


def save_figure(fig, figure: Path, tight: bool = True) -> None:
    """Write ``fig`` as a PNG (atomically, so a half-written figure never shows) and free it.

    ``tight``: crop to the drawn parts (costs a second drawing; nilearn lays out its own figures).
    """
    atomic_write(figure, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight" if tight else None))
    plt.close(fig)


def brain_map(img, figure: Path, title: str, threshold: float, vmin: float | None = None, vmax: float | None = None,
              cmap: str = "hot", symmetric: bool = False, background: bool = True) -> None:
    """A glass brain (top) and axial slices (bottom) of one map, values below ``threshold`` hidden.

    ``background``: draw the slices over nilearn's bundled MNI152 template (only right for MNI spaces).
    """
    from nilearn import plotting

    data = np.asarray(img.dataobj, dtype=float)
    if vmax is None:
        peak = float(np.nanmax(np.abs(data))) if np.any(data) else 1.0
        vmax = max(peak, 2 * abs(threshold), 1e-6)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), gridspec_kw={"height_ratios": [1.1, 1]})
    common = {"threshold": threshold, "colorbar": True, "cmap": cmap, "vmax": vmax,
              **({"symmetric_cbar": True} if symmetric else {"vmin": vmin})}
    plotting.plot_glass_brain(img, axes=top, plot_abs=False, title=title, **common)
    # plot_stat_map's default background is nilearn's bundled MNI152 template
    plotting.plot_stat_map(img, axes=bottom, display_mode="z", cut_coords=6, **common,
                           **({} if background else {"bg_img": None}))
    save_figure(fig, figure, tight=False)


def map_figure(layout: Layout, values: np.ndarray, figure: Path, title: str, threshold: float,
               vmin: float | None = None, vmax: float | None = None, cmap: str = "hot", symmetric: bool = False,
               background: bool = True) -> None:
    """One map, whatever its layout: a volume as :func:`brain_map` draws it; vertices (GIFTI, or the cortex of a
    CIFTI file) on both hemispheres' template mesh, inflated where one is shipped (:func:`surface_map`), with the
    mesh named under the title (CIFTI's subcortical grayordinates are not drawn)."""
    if isinstance(layout, VolumeLayout):
        brain_map(layout.image(values), figure, title, threshold, vmin=vmin, vmax=vmax, cmap=cmap,
                  symmetric=symmetric, background=background)
        return
    kind = "inflated" if layout.space != "fsLR" else "midthickness"
    template = {hemi: layout.mesh(hemi, kind) for hemi, _, _ in layout.parts()}
    note = mesh_description(layout.space, layout.den, kind)
    if any(mesh is None for mesh in template.values()):
        fig, ax = plt.subplots(figsize=(9, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}\n{note}: no surface figure", ha="center", va="center", wrap=True)
        save_figure(fig, figure, tight=False)
        return
    per_hemi = {}
    for hemi, columns, vertices in layout.parts():
        shown = np.full(template[hemi].n_vertices, np.nan)
        shown[vertices] = values[columns]
        if not symmetric:  # as on volumes: only what reaches the threshold is coloured
            shown[~(shown >= threshold)] = np.nan
        per_hemi[hemi] = shown
    depth = {hemi: template_sulcal_depth(layout.space, hemi, layout.den) for hemi in template}
    surface_map(per_hemi, template, figure, f"{title}\n{note}", threshold, cmap=cmap, symmetric=symmetric, vmax=vmax,
                background=None if any(d is None for d in depth.values()) else depth)


def r2_histograms(values: dict[str, np.ndarray], figure: Path, title: str) -> None:
    """One histogram of the voxels' held-out R² per feature space, on shared bins (log counts)."""
    everything = np.concatenate(list(values.values()))
    bins = np.linspace(min(everything.min(), 0.0), max(everything.max(), 0.05), 50)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, r2 in values.items():
        ax.hist(r2, bins=bins, histtype="step", lw=1.5, label=name)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set(yscale="log", xlabel="held-out R²", ylabel="voxels", title=title)
    ax.legend(fontsize=8, frameon=False)
    save_figure(fig, figure)


def layer_profile(layers: list[int], summaries: dict[str, list[float]], figure: Path, title: str) -> None:
    """Summaries of the R² maps (e.g. median and 99th percentile in the mask) against the model's layer."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, values in summaries.items():
        ax.plot(layers, values, marker="o", lw=1.5, label=name)
    ax.set(xlabel="layer", ylabel="held-out R²", title=title, xticks=layers)
    ax.legend(fontsize=8, frameon=False)
    save_figure(fig, figure)


def region_layers(frame, figure: Path, title: str, spread: str, max_regions: int = 8) -> None:
    """R² by layer per region, with each point's confidence interval (columns name, layer, mean_r2, ci_low,
    ci_high); only the ``max_regions`` regions best predicted by some layer, so the lines stay readable."""
    peaks = frame.groupby("name")["mean_r2"].max().sort_values(ascending=False)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name in peaks.index[:max_regions]:
        rows = frame[frame["name"] == name].sort_values("layer")
        mean = rows["mean_r2"].to_numpy(float)
        errors = np.abs(np.vstack([mean - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - mean]))
        ax.errorbar(rows["layer"], mean, yerr=np.nan_to_num(errors), marker="o", lw=1.5, capsize=3, label=name)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="layer", ylabel="held-out R²", title=title, xticks=sorted(frame["layer"].unique()))
    ax.text(1.0, -0.2, f"bars: 95 % CI across {spread}", transform=ax.transAxes, ha="right", fontsize=8)
    ax.legend(fontsize=8, frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, figure)


def design_matrix(frame, figure: Path, title: str) -> None:
    """A run's design (volumes x features) with its column names, each column scaled to its largest value."""
    from nilearn.plotting import plot_design_matrix

    width = min(12, 2.5 + 0.22 * frame.shape[1])
    fig, ax = plt.subplots(figsize=(width, 5))
    plot_design_matrix(frame, rescale=True, axes=ax)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("volume")
    save_figure(fig, figure)


def time_course(time, score, low, high, chance: float, clusters: list[dict], figure: Path, title: str,
                ylabel: str = "ROC AUC") -> None:
    """A score over time with a band (``low`` to ``high``), a chance line, and clusters with p < 0.05 shaded."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.fill_between(time, low, high, alpha=0.25)
    ax.plot(time, score, lw=1.5)
    ax.axhline(chance, color="k", lw=0.8, ls="--")
    ax.axvline(0.0, color="k", lw=0.8)
    for cluster in clusters:
        if cluster["p"] < 0.05:
            ax.axvspan(cluster["Start"], cluster["Stop"], color="orange", alpha=0.3)
    ax.set(xlabel="time (s)", ylabel=ylabel, title=title)
    save_figure(fig, figure)


def generalization_matrix(scores: np.ndarray, times: list[float], chance: float, figure: Path, title: str) -> None:
    """Temporal generalization: the score of a classifier trained at one time (rows) and tested at another."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    spread = max(float(np.abs(scores - chance).max()), 1e-3)
    image = ax.imshow(scores, origin="lower", cmap="RdBu_r", vmin=chance - spread, vmax=chance + spread,
                      extent=[times[0], times[-1], times[0], times[-1]])
    ax.axhline(0.0, color="k", lw=0.5)
    ax.axvline(0.0, color="k", lw=0.5)
    ax.set(xlabel="testing time (s)", ylabel="training time (s)", title=title)
    fig.colorbar(image, ax=ax, label="ROC AUC")
    save_figure(fig, figure)


def trf_kernel(weights, channel: str, figure: Path, title: str) -> None:
    """The TRF of one channel, one line per feature (at most 10)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for feature, rows in list(weights.groupby("feature"))[:10]:
        ax.plot(rows["lag"], rows[channel], lw=1.2)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set(xlabel="lag (s)", ylabel="weight", title=title)
    save_figure(fig, figure)


def tsne(latents: np.ndarray, conditions: np.ndarray, figure: Path, title: str, seed: int) -> None:
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
    save_figure(fig, figure)


def rdm(values: np.ndarray, labels: list[str], figure: Path, title: str, max_labels: int = 40) -> None:
    """A representational dissimilarity matrix as an image, its conditions labelled when there are few."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    image = ax.imshow(values, cmap="viridis", interpolation="nearest")
    ticks = range(len(labels)) if len(labels) <= max_labels else []
    ax.set_xticks(list(ticks), [labels[i] for i in ticks], rotation=90, fontsize=5)
    ax.set_yticks(list(ticks), [labels[i] for i in ticks], fontsize=5)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="dissimilarity")
    save_figure(fig, figure)


SURFACE_VIEWS = (("L", "lateral"), ("L", "medial"), ("R", "lateral"), ("R", "medial"))
_HEMISPHERE_NAMES = {"L": "left", "R": "right"}


def surface_map(values: dict[str, np.ndarray], meshes: dict[str, Mesh], path: Path, title: str, threshold: float | None,
                cmap: str = "cold_hot", symmetric: bool = True,
                background: dict[str, np.ndarray] | None = None, vmax: float | None = None) -> Path:
    """A per-vertex map on both hemispheres, in four views side by side in equal columns (left lateral, left
    medial, right lateral, right medial) above one shared colour bar, drawn with nilearn's matplotlib engine.

    ``values`` and ``meshes`` ("L", "R": per-vertex values and :class:`bids_encoding.meshes.Mesh`): NaN, zero
    and ``|value| < threshold`` are not shown; a hemisphere without values is drawn bare. ``meshes`` should be
    the display surfaces (inflated where shipped). ``background``: per-vertex values shading the bare mesh
    (e.g. sulcal depth); without it the mesh is a uniform grey. ``symmetric``: a colour range centred on zero;
    ``vmax``: its top (default: the largest absolute value shown).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from nilearn import plotting

    shown = {}
    for hemi, mesh in meshes.items():
        data = values.get(hemi)
        data = np.zeros(mesh.n_vertices) if data is None else np.asarray(data, dtype=float).ravel()
        if len(data) != mesh.n_vertices:
            raise ValueError(f"{len(data)} values for the {mesh.n_vertices} vertices of hemisphere {hemi}")
        shown[hemi] = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)  # all-NaN would make nilearn warn
    everything = np.concatenate([data[data != 0] for data in shown.values()] + [[0.0]])
    peak = vmax if vmax is not None else max(float(np.abs(everything).max()), 2 * abs(threshold or 0.0), 1e-6)
    vmin, vmax = (-peak, peak) if symmetric else (min(float(everything.min()), 0.0), peak)
    # nilearn hides faces whose mean is below the threshold: a tiny one hides the zeros of "nothing here"
    cut = threshold if threshold else peak * 1e-9
    fig = plt.figure(figsize=(12, 3.6))
    for column, (hemi, view) in enumerate(SURFACE_VIEWS):
        if hemi not in meshes:
            continue
        axes = fig.add_axes((column * 0.25, 0.16, 0.25, 0.72), projection="3d")
        mesh = meshes[hemi]
        plotting.plot_surf_stat_map(  # nilearn centres the coordinates in place: it gets copies
            (np.array(mesh.coordinates), np.array(mesh.faces)), shown[hemi], hemi=_HEMISPHERE_NAMES[hemi],
            view=view, engine="matplotlib", cmap=cmap, colorbar=False, threshold=cut, vmin=vmin, vmax=vmax,
            symmetric_cbar=False, bg_map=None if background is None else background.get(hemi),
            axes=axes, figure=fig)
        axes.set_title(f"{_HEMISPHERE_NAMES[hemi]} {view}", fontsize=9, y=0.95)
    bar_axes = fig.add_axes((0.35, 0.08, 0.3, 0.04))
    bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap=plt.get_cmap(cmap)), cax=bar_axes,
                       orientation="horizontal")
    if threshold:
        for edge in (-threshold, threshold) if symmetric else (threshold,):
            bar.ax.axvline(edge, color="k", lw=1)
    bar.ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path, tight=False)
    return Path(path)
