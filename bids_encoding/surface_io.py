"""fMRIPrep's surface files read and checked: per-hemisphere GIFTI pairs and CIFTI-2 grayordinates.

The file-level half of :mod:`.locations`, kept apart so that BIDS reading (:mod:`.bids_io`) checks a run's surface
series at planning without the analyses' machinery: which kind a file is, its other hemisphere, its data arrays,
its brain-model axis, its number of volumes, and every error a surface series can hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import cifti2

from .errors import UserError

SERIES_EXTENSIONS = (".nii", ".nii.gz", ".func.gii", ".dtseries.nii")
HEMISPHERES = ("L", "R")
# vertices per hemisphere of the template surface spaces (fMRIPrep's --output-spaces, fsLR by its den- label)
TEMPLATE_VERTICES = {"fsaverage": 163842, "fsaverage6": 40962, "fsaverage5": 10242, "fsaverage4": 2562,
                     "fsaverage3": 642}
FSLR_VERTICES = {"32k": 32492, "91k": 32492, "59k": 59412, "164k": 163842, "170k": 163842}
FSAVERAGE_DENSITIES = {"10k": 10242, "41k": 40962, "164k": 163842}  # space-fsaverage_den-10k is fsaverage5
CIFTI_HEMISPHERES = {"CIFTI_STRUCTURE_CORTEX_LEFT": "L", "CIFTI_STRUCTURE_CORTEX_RIGHT": "R"}


def file_kind(path: str | Path) -> str:
    """``volume``, ``gifti`` or ``cifti``, from a file's name (CIFTI-2 files end in ``.d*.nii``)."""
    name = Path(path).name
    if re.search(r"\.d[a-z]+\.nii$", name):
        return "cifti"
    if name.endswith(".gii"):
        return "gifti"
    return "volume"


def hemisphere_files(path: str | Path) -> dict[str, Path]:
    """The left and right files of a per-hemisphere GIFTI name (``hemi-L`` or ``hemi-R``); both must exist."""
    path = Path(path)
    found = re.search(r"(^|_)hemi-([LR])(_|\.)", path.name)
    if not found:
        raise UserError("a GIFTI file's name has no hemi-L or hemi-R entity, so its other hemisphere cannot be found",
                        path=path, fix="Name the files as fMRIPrep does: ..._hemi-L_space-fsaverage5_bold.func.gii "
                                       "and ..._hemi-R_...")
    start, end = found.span(2)
    files = {h: path.with_name(path.name[:start] + h + path.name[end:]) for h in HEMISPHERES}
    for hemi, file in files.items():
        if not file.exists():
            raise UserError(f"the {'left' if hemi == 'L' else 'right'} hemisphere's file is missing: surface data is "
                            f"analysed as both hemispheres together", path=file,
                            fix=f"Add {file.name} (fMRIPrep writes both), or give volume data with --space")
    return files


def read_gifti(path: Path, what: str) -> np.ndarray:
    """A GIFTI file's data arrays as rows (``darrays x vertices``), or one clear error."""
    try:
        img = nib.load(str(path))
        arrays = [np.asarray(d.data) for d in img.darrays]
    except Exception as exc:
        raise UserError(f"the {what} cannot be read as GIFTI ({exc})", path=path,
                        fix="Replace the file with a valid GIFTI file (as fMRIPrep writes)") from None
    if not arrays or any(a.ndim != 1 or len(a) != len(arrays[0]) for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise UserError(f"the {what} holds {len(arrays)} data arrays of shapes {shapes}, not one value per vertex in "
                        "each", path=path, fix="Give a GIFTI file of per-vertex values (.func.gii, .shape.gii or "
                                               ".label.gii)")
    return np.stack(arrays)


def read_cifti(path: Path, what: str) -> tuple[cifti2.Cifti2Image, tuple]:
    """A CIFTI-2 file and its axes; its last axis must be a brain-model axis."""
    try:
        img = nib.load(str(path))
        axes = tuple(img.header.get_axis(i) for i in range(img.ndim))
    except Exception as exc:
        raise UserError(f"the {what} cannot be read as CIFTI-2 ({exc})", path=path,
                        fix="Replace the file with a valid CIFTI-2 file (as fMRIPrep's --cifti-output writes)") from None
    if not isinstance(axes[-1], cifti2.BrainModelAxis):
        raise UserError(f"the {what} has no brain-model axis (its locations are a {type(axes[-1]).__name__}), so its "
                        "values cannot be placed on vertices and voxels", path=path,
                        fix="Give a dense CIFTI-2 file (.dtseries.nii, .dscalar.nii or .dlabel.nii over "
                            "grayordinates), not a parcellated one")
    return img, axes


def series_length(path: str | Path) -> int:
    """The number of volumes of a series file without decoding its data: a NIfTI's or CIFTI's header; a GIFTI's
    count of data arrays (one per volume, as fMRIPrep writes them), counted in its XML (decoding both hemispheres'
    base64 arrays just to count them took seconds a run)."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "gifti":
        return Path(path).read_bytes().count(b"<DataArray")
    img = nib.load(str(path))
    return int(img.shape[0] if kind == "cifti" else img.shape[3])


def surface_space(entities: dict[str, Any]) -> tuple[str, str | None]:
    return str(entities.get("space") or ""), (str(entities["den"]) if entities.get("den") else None)


def expected_vertices(space: str, den: str | None) -> int | None:
    """Vertices per hemisphere of a template surface space (None: fsnative, or a space we do not know)."""
    if space == "fsLR":
        return FSLR_VERTICES.get(den or "")
    if space == "fsaverage" and den:
        return FSAVERAGE_DENSITIES.get(den)
    return TEMPLATE_VERTICES.get(space)


@dataclass(frozen=True)
class SurfaceSeries:
    """What a surface BOLD series holds: its kind, volumes, space, and its vertices per hemisphere (GIFTI) or its
    brain-model axis (CIFTI)."""

    kind: str
    n_volumes: int
    space: str
    den: str | None
    vertices: tuple[int, int] | None = None
    axis: cifti2.BrainModelAxis | None = None
    time_axis: cifti2.SeriesAxis | None = None  # a CIFTI's: its step is the TR

    @property
    def size(self) -> int:
        return len(self.axis) if self.axis is not None else sum(self.vertices)


def check_series(path: str | Path, entities: dict[str, Any]) -> SurfaceSeries:
    """A surface BOLD series, after checking it: a missing hemisphere, hemispheres of different lengths, a GIFTI of
    the wrong length for its space, a CIFTI without a brain-model or series axis are errors naming the file."""
    path = Path(path)
    space, den = surface_space(entities)
    if file_kind(path) == "cifti":
        img, axes = read_cifti(path, "BOLD series")
        if not isinstance(axes[0], cifti2.SeriesAxis):
            raise UserError(f"the CIFTI-2 BOLD has no series axis (its rows are a {type(axes[0]).__name__})", path=path,
                            fix="Give a .dtseries.nii time series")
        return SurfaceSeries("cifti", int(img.shape[0]), space, den, axis=axes[1], time_axis=axes[0])
    files = hemisphere_files(path)
    shapes = {h: read_gifti(files[h], "BOLD series").shape for h in HEMISPHERES}
    (t_left, n_left), (t_right, n_right) = shapes["L"], shapes["R"]
    if t_left != t_right:
        raise UserError(f"the hemispheres hold different numbers of volumes (left {t_left}, right {t_right})",
                        path=files["R"], fix="Give both hemispheres of the same run")
    expected = expected_vertices(space, den)
    for hemi, n in (("L", n_left), ("R", n_right)):
        if expected is not None and n != expected:
            raise UserError(f"the file holds {n} vertices per volume, but space {space}"
                            + (f" (den-{den})" if den else "") + f" has {expected} per hemisphere", path=files[hemi],
                            fix="Check that the file's space- and den- entities name the mesh it was sampled on")
    if expected is None and space != "fsnative" and n_left != n_right:
        raise UserError(f"the hemispheres have different numbers of vertices (left {n_left}, right {n_right}) in "
                        f"space {space or '(none named)'}", path=files["R"],
                        fix="Give both hemispheres resampled to the same template density")
    return SurfaceSeries("gifti", t_left, space, den, vertices=(n_left, n_right))
