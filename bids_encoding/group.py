"""Group level: one-sample statistics across subjects of the participant-level maps.

Reads the participant derivatives (never recomputes them). For every task and
feature space it writes the mean held-out R² and a one-sample t map (R² > 0
across subjects) without the ``sub-`` entity.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import stats

from .derivatives import parse_entities, save_nifti
from .errors import UserError


def find_subject_maps(output_dir: Path, subjects: tuple[str, ...] = (), tasks: tuple[str, ...] = ()) -> dict[tuple, dict[str, Path]]:
    """Participant R² maps grouped by (task, space, desc), each a {subject: path} mapping."""
    grouped: dict[tuple, dict[str, Path]] = defaultdict(dict)
    for path in sorted(Path(output_dir).glob("sub-*/func/*_stat-rSquare_statmap.nii.gz")):
        ents = parse_entities(path)
        if (subjects and ents["subject"] not in subjects) or (tasks and ents.get("task") not in tasks):
            continue
        grouped[(ents.get("task"), ents.get("space"), ents.get("desc"))][ents["subject"]] = path
    return dict(grouped)


def group_statistics(maps: dict[str, Path], out_dir: Path, name: str) -> list[dict[str, Any]]:
    """Mean R² and one-sample t (and its p-value) across subjects' maps of one feature space."""
    subjects = sorted(maps)
    if len(subjects) < 2:
        raise UserError(f"the group level needs at least two subjects with '{name}' maps, found {len(subjects)}",
                        path=maps[subjects[0]] if subjects else out_dir,
                        fix="Run the participant level for more subjects first")
    images = [nib.load(str(maps[s])) for s in subjects]
    reference = images[0]
    for subject, img in zip(subjects, images):
        if img.shape != reference.shape or not np.allclose(img.affine, reference.affine, atol=1e-3):
            raise UserError(
                f"sub-{subject}'s map is on a different grid than sub-{subjects[0]}'s, so they cannot be compared voxel by voxel",
                path=maps[subject], fix="Run every subject's participant level in the same --space",
            )
    data = np.stack([np.asarray(img.dataobj, dtype=np.float64) for img in images])
    inside = np.all(data != 0, axis=0)
    t = np.zeros(reference.shape)
    p = np.ones(reference.shape)
    if inside.any():
        result = stats.ttest_1samp(data[:, inside], 0.0, axis=0, alternative="greater")
        t[inside] = np.nan_to_num(result.statistic)
        p[inside] = np.nan_to_num(result.pvalue, nan=1.0)
    outputs = []
    for stat, values, description in (
        ("rSquare", np.where(inside, data.mean(axis=0), 0), "mean held-out R² across subjects"),
        ("t", t, "one-sample t statistic of held-out R² > 0 across subjects (parametric, uncorrected)"),
        ("p", p, "one-sided p-value of that t test (uncorrected)"),
    ):
        path = Path(out_dir) / f"{name}_stat-{stat}.nii.gz"
        save_nifti(nib.Nifti1Image(values.astype(np.float32), reference.affine), path)
        outputs.append({"in_file": str(path), "entities": {"stat": stat},
                        "metadata": {"Description": description, "Subjects": subjects, "NSubjects": len(subjects),
                                     "Sources": [str(maps[s]) for s in subjects]}})
    return outputs
