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
    body = "<h2>Encoding models</h2>" + _table(HEADER, rows) + "".join(blocks)
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
