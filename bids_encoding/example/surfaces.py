"""Surface derivatives of the example dataset, sampled from its volume the way fMRIPrep samples BOLD.

``write_example_dataset(DIR, surfaces=("fsaverage5", "fsLR"))`` adds, beside each run's volume
derivatives, what fMRIPrep writes for ``--output-spaces fsaverage5`` and ``--cifti-output 91k``:

* ``*_hemi-{L,R}_space-fsaverage5_bold.func.gii``: the run's preprocessed volume sampled onto
  nilearn's fsaverage5 meshes between the white and the pial surface, averaged over the depths
  0, 0.2, ..., 1 (fMRIPrep's trilinear ``mri_vol2surf --projfrac-avg 0 1 0.2``; no medial-wall
  mask), here with ``nilearn.surface.vol_to_surf(img, pial, inner_mesh=white, depth=DEPTHS)``. One
  float32 data array per volume (intent ``NIFTI_INTENT_TIME_SERIES``, the TR in seconds as its
  ``TimeStep``; :data:`GIFTI_ENCODING`), the hemisphere in the file's ``AnatomicalStructurePrimary``,
  as fMRIPrep sets it;
* ``*_space-fsLR_den-91k_bold.dtseries.nii``: a CIFTI-2 dense time series whose cortex is the
  fsLR 32k (conte69) vertices that brainspace's medial-wall masks mark as cortex, sampled with
  ``vol_to_surf`` from conte69's midthickness surface (the only one shipped: a +-3 mm line along
  the normal, which spans a typical cortex), plus two small subcortical parts (a left and a right
  thalamus sphere, the 6 mm voxels as they are), so that grayordinates of both kinds are exercised.
  It is far smaller than fMRIPrep's 91282 grayordinates; ``den-91k`` names the layout, not the count.

Each carries a JSON sidecar with ``RepetitionTime`` and ``TaskName``, as fMRIPrep writes them.

The planted truth per location goes to ``sourcedata/groundtruth/``, sampled like the data
(:func:`planted_vertices`): ``..._hemi-{L,R}_space-fsaverage5_desc-NAME_mask.shape.gii`` and
``..._space-fsLR_den-91k_desc-NAME_mask.dscalar.nii``; :func:`load_surface_truth` reads it back in
the app's order of locations (left hemisphere, then right; or the CIFTI's grayordinates).

``vol_to_surf`` interpolates linearly and averages sample points, so it is a linear map of the
volume: this module computes that map once per mesh as a sparse matrix from nilearn's own sample
locations (:func:`sampling_matrix`) and applies it to every run, about 40 times faster than
calling ``vol_to_surf`` on each run. The tests check that the two agree.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import cifti2
from scipy import sparse

from ..errors import UserError
from ..meshes import template_medial_wall, template_mesh

SURFACE_SPACES = ("fsaverage5", "fsLR")
"""The surface spaces the example can write."""

HEMISPHERES = ("L", "R")
DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # fractions of the way from the pial (0) to the white (1) surface
LINE_HALF_WIDTH_MM = 3.0  # vol_to_surf's default radius: the line sampled across a single (midthickness) mesh
N_FSLR_VERTICES = 32492  # per hemisphere of the fsLR 32k mesh
CIFTI_DENSITY = "91k"
GIFTI_ENCODING = "GIFTI_ENCODING_B64BIN"
"""Base64 without gzip (fMRIPrep's files are gzipped): on these float time series gzip saves a fifth of the size and
takes two thirds of the time the surfaces add to the example."""
PLANTED_FRACTION = 0.25
"""A location is planted where its sampled sphere weight reaches this (the weight is 1 at a sphere's center).

The volume truth marks every voxel within the radius, where the weight ``2 ** -(d / r) ** 2`` is at
least 0.5. Sampling interpolates between voxels and averages across the cortex's depth, mixing
the edge's 0.5 with the 0 just outside: a vertex on the sphere's edge gets about half of 0.5.
So 0.25 keeps the vertices that the volume truth covers, not the ones a voxel's interpolation
merely brushes.
"""
SUBCORTICAL = {"CIFTI_STRUCTURE_THALAMUS_LEFT": (-12.0, -18.0, 8.0),
               "CIFTI_STRUCTURE_THALAMUS_RIGHT": (12.0, -18.0, 8.0)}
"""The CIFTI's volume parts: the brain-mask voxels within :data:`SUBCORTICAL_RADIUS_MM` of these MNI points."""
SUBCORTICAL_RADIUS_MM = 10.0
BIDSIGNORE = ("*_bold.func.gii", "*_space-fsaverage5_bold.json",
              "*_bold.dtseries.nii", "*_space-fsLR_den-91k_bold.json")
"""What the derivative's .bidsignore gains: the BIDS schema's functional derivatives (1.10) are volumes only, so the
validator rejects fMRIPrep's surface names (``hemi-``, ``.func.gii``, ``.dtseries.nii``) and their sidecars. (One
``*`` per pattern: bids-validator-deno 2 skips nothing with a pattern of two.)"""
_STRUCTURE = {"L": "CIFTI_STRUCTURE_CORTEX_LEFT", "R": "CIFTI_STRUCTURE_CORTEX_RIGHT"}
_GIFTI_STRUCTURE = {"L": "CortexLeft", "R": "CortexRight"}


def check_surfaces(surfaces: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The surface spaces asked for, checked (fsLR's meshes too) before anything is written, without repeats."""
    unknown = [surfaces] if isinstance(surfaces, str) else [s for s in surfaces if s not in SURFACE_SPACES]
    if unknown:
        raise UserError(f"unknown surface space(s) {unknown} for the example dataset",
                        fix=f"Choose among {', '.join(SURFACE_SPACES)}, given as a tuple such as ('fsaverage5',)")
    if "fsLR" in surfaces:
        check_fslr_meshes()
    return tuple(dict.fromkeys(surfaces))


# --------------------------------------------------------------------------- meshes

def check_fslr_meshes() -> None:
    """fsLR needs the 32k meshes of brainspace's wheel (read as files: :func:`..meshes.template_mesh`)."""
    if template_mesh("fsLR", "L", den="32k") is None:
        raise UserError("the fsLR 32k meshes (brainspace's conte69 files) are not installed",
                        fix="Install them with 'pip install --no-deps brainspace', or leave fsLR out of the surfaces")


def _meshes(space: str, hemi: str) -> tuple[tuple, tuple | None]:
    """The outer mesh (pial, or conte69's midthickness) and the inner (white; None for fsLR) as (coords, faces)."""
    if space == "fsaverage5":
        pial, white = template_mesh(space, hemi, "pial"), template_mesh(space, hemi, "white")
        return (pial.coordinates, pial.faces), (white.coordinates, white.faces)
    mesh = template_mesh(space, hemi, "midthickness", den="32k")
    return (mesh.coordinates, mesh.faces), None


def fslr_cortex(hemi: str) -> np.ndarray:
    """The fsLR 32k vertices that brainspace's mask marks as cortex (the medial wall left out)."""
    return np.flatnonzero(~template_medial_wall("fsLR", hemi, "32k"))


@lru_cache(maxsize=8)
def _sampler(space: str, hemi: str, shape: tuple[int, int, int], affine_key: bytes) -> sparse.csr_matrix:
    from nilearn.surface.surface import _masked_indices, _sample_locations

    affine = np.frombuffer(affine_key).reshape(4, 4)
    outer, inner = _meshes(space, hemi)
    if inner is None:
        locations = _sample_locations(outer, affine, LINE_HALF_WIDTH_MM, kind="line")
    else:
        locations = _sample_locations(outer, affine, None, kind="depth", inner_mesh=inner, depth=DEPTHS)
    n_vertices, n_points, _ = locations.shape
    points = locations.reshape(-1, 3)
    kept = ~_masked_indices(points, shape)
    # trilinear interpolation: each point takes its cell's 8 corners (nilearn extrapolates within a voxel of the
    # grid's far edge, where this drops the corners past it: no mesh comes near the edge of the MNI grids)
    low = np.floor(points).astype(int)
    frac = points - low
    rows, cols, values = [], [], []
    for corner in np.ndindex(2, 2, 2):
        offset = np.asarray(corner)
        ijk = low + offset
        weight = np.prod(np.where(offset, frac, 1 - frac), axis=1)
        ok = kept & (ijk < shape).all(axis=1) & (weight > 0)
        rows.append(np.flatnonzero(ok) // n_points)
        cols.append(np.ravel_multi_index(ijk[ok].T, shape))
        values.append(weight[ok])
    # the mean over a vertex's points inside the grid (vol_to_surf's nanmean)
    n_kept = kept.reshape(n_vertices, n_points).sum(axis=1)
    rows, values = np.concatenate(rows), np.concatenate(values)
    values = values / n_kept[rows]
    matrix = sparse.csr_matrix((values, (rows, np.concatenate(cols))), shape=(n_vertices, int(np.prod(shape))))
    return matrix[fslr_cortex(hemi)] if space == "fsLR" else matrix


def sampling_matrix(space: str, hemi: str, shape: tuple[int, ...], affine: np.ndarray) -> sparse.csr_matrix:
    """The sparse map (locations x grid voxels in C order) from a volume grid (``shape``, ``affine``) to one
    hemisphere's locations of ``space``: all fsaverage5 vertices, or fsLR's cortex vertices.

    Built from nilearn's own sample locations (``depth`` between white and pial for fsaverage5, a
    ``line`` of +-3 mm across conte69's midthickness for fsLR) with trilinear weights averaged per
    vertex, so that ``matrix @ volume.ravel()`` equals ``vol_to_surf`` with the same options.
    """
    return _sampler(space, hemi, tuple(int(n) for n in shape[:3]), np.asarray(affine, float).tobytes())


def _grid_values(img: nib.Nifti1Image) -> np.ndarray:
    """The image's values as grid voxels (C order) x volumes."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    return data.reshape(int(np.prod(data.shape[:3])), -1)


def subcortical_voxels(mask: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Per CIFTI volume structure, a boolean grid of the brain-mask voxels within the radius of its point."""
    ijk = np.indices(mask.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    return {name: mask & (np.linalg.norm(xyz - np.asarray(point), axis=1) <= SUBCORTICAL_RADIUS_MM).reshape(mask.shape)
            for name, point in SUBCORTICAL.items()}


def brain_models(mask: np.ndarray, affine: np.ndarray) -> cifti2.BrainModelAxis:
    """The fsLR CIFTI's grayordinates: left cortex, right cortex, then the subcortical parts."""
    return _grayordinates(mask, affine)[0]


def _grayordinates(mask: np.ndarray, affine: np.ndarray) -> tuple[cifti2.BrainModelAxis, cifti2.Cifti2MatrixIndicesMap]:
    return _brain_models(mask.tobytes(), mask.shape, np.asarray(affine, float).tobytes())


@lru_cache(maxsize=2)
def _brain_models(mask_key: bytes, shape: tuple[int, ...], affine_key: bytes
                  ) -> tuple[cifti2.BrainModelAxis, cifti2.Cifti2MatrixIndicesMap]:
    """The axis and its header mapping, built once: nibabel takes about a second per 60k grayordinates."""
    mask = np.frombuffer(mask_key, dtype=bool).reshape(shape)
    affine = np.frombuffer(affine_key).reshape(4, 4)
    axis = None
    for hemi in HEMISPHERES:
        part = cifti2.BrainModelAxis.from_surface(fslr_cortex(hemi), N_FSLR_VERTICES, name=_STRUCTURE[hemi])
        axis = part if axis is None else axis + part
    for name, voxels in subcortical_voxels(mask, affine).items():
        axis = axis + cifti2.BrainModelAxis.from_mask(voxels, name=name, affine=affine)
    return axis, axis.to_mapping(1)


def _cifti_values(values: np.ndarray, img_shape: tuple[int, ...], affine: np.ndarray,
                  brain_mask: np.ndarray) -> np.ndarray:
    """Grid values (voxels x maps) at the fsLR CIFTI's grayordinates: sampled cortex, then subcortical voxels."""
    cortex = [sampling_matrix("fsLR", hemi, img_shape, affine) @ values for hemi in HEMISPHERES]
    volume = [values[np.flatnonzero(voxels.ravel())] for voxels in subcortical_voxels(brain_mask, affine).values()]
    return np.concatenate(cortex + volume, axis=0)


# --------------------------------------------------------------------------- files

def extend_bidsignore(path: Path) -> None:
    """Add :data:`BIDSIGNORE` to a derivative's ``.bidsignore`` (created if absent)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(old + "".join(f"{line}\n" for line in BIDSIGNORE if line not in old.splitlines()), encoding="utf-8")


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


class _Matrix(cifti2.Cifti2Matrix):
    """A CIFTI-2 matrix that knows its data shape: nibabel otherwise rebuilds every axis from the XML to check it,
    twice per file (about half a second at 58k grayordinates). The file written is the same."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self._shape = tuple(shape)

    def get_data_shape(self) -> tuple[int, ...]:
        return self._shape


def _save_cifti(path: Path, data: np.ndarray, row_axis: cifti2.Axis, brain_mask: np.ndarray, affine: np.ndarray,
                intent: str) -> None:
    """Save rows x grayordinates as float32 CIFTI-2 (the grayordinates' header mapping is reused, not rebuilt)."""
    header = cifti2.Cifti2Header(_Matrix(data.shape))
    header.matrix.append(row_axis.to_mapping(0))
    header.matrix.append(_grayordinates(brain_mask, affine)[1])
    img = cifti2.Cifti2Image(data.astype(np.float32), header=header)
    img.nifti_header.set_intent(intent)
    nib.save(img, path)


def surface_bold_paths(folder: Path, stem: str, space: str) -> list[Path]:
    """The files fMRIPrep names for one run in one surface space (GIFTI per hemisphere, or one CIFTI)."""
    if space == "fsaverage5":
        return [folder / f"{stem}_hemi-{hemi}_space-fsaverage5_bold.func.gii" for hemi in HEMISPHERES]
    return [folder / f"{stem}_space-fsLR_den-{CIFTI_DENSITY}_bold.dtseries.nii"]


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name.split(".")[0] + ".json")


def write_run_surfaces(img: nib.Nifti1Image, brain_mask: np.ndarray, folder: Path, stem: str, task: str,
                       tr: float, surfaces: tuple[str, ...]) -> list[Path]:
    """Write one run's surface BOLD (``img``: the run's preprocessed 4D volume, as written) in each space of
    ``surfaces`` into ``folder``, named from ``stem`` (``sub-XX_task-T[_run-k]``); return the data files."""
    folder.mkdir(parents=True, exist_ok=True)
    values = _grid_values(img)
    n_volumes = values.shape[1]
    sidecar = {"RepetitionTime": tr, "SliceTimingCorrected": False, "TaskName": task}
    written = []
    for space in surfaces:
        paths = surface_bold_paths(folder, stem, space)
        if space == "fsaverage5":
            for hemi, path in zip(HEMISPHERES, paths):
                series = (sampling_matrix(space, hemi, img.shape, img.affine) @ values).astype(np.float32)
                darrays = [nib.gifti.GiftiDataArray(series[:, k], intent="NIFTI_INTENT_TIME_SERIES",
                                                    datatype="NIFTI_TYPE_FLOAT32", meta={"TimeStep": f"{tr:g}"},
                                                    encoding=GIFTI_ENCODING)
                           for k in range(n_volumes)]
                meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": _GIFTI_STRUCTURE[hemi]})
                nib.save(nib.gifti.GiftiImage(meta=meta, darrays=darrays), path)
                _write_json(_sidecar_path(path), sidecar)
        else:
            series = cifti2.SeriesAxis(start=0.0, step=tr, size=n_volumes, unit="SECOND")
            data = _cifti_values(values, img.shape, img.affine, brain_mask).T
            _save_cifti(paths[0], data, series, brain_mask, img.affine, "ConnDenseSeries")
            _write_json(_sidecar_path(paths[0]), {
                **sidecar,
                "Density": f"{data.shape[1]} grayordinates: the fsLR 32k (conte69) cortex vertices of both "
                           f"hemispheres, sampled from the {_voxel_size(img.affine)} mm volume, and that volume's "
                           "voxels in two thalamus spheres (a stand-in for fMRIPrep's 91k grayordinates)",
                "SpatialReference": {"CIFTI_STRUCTURE_CORTEX_LEFT": "fsLR 32k, conte69 midthickness (brainspace)",
                                     "CIFTI_STRUCTURE_CORTEX_RIGHT": "fsLR 32k, conte69 midthickness (brainspace)",
                                     "VolumeReference": "MNI152NLin2009cAsym, the volume derivatives' grid"},
            })
        written += paths
    return written


def _voxel_size(affine: np.ndarray) -> str:
    return f"{float(np.linalg.norm(affine[:3, 0])):g}"


# --------------------------------------------------------------------------- planted truth

def planted_vertices(weights: np.ndarray, space: str, hemi: str, affine: np.ndarray) -> np.ndarray:
    """Boolean per location of one hemisphere: the sphere's weights (a grid, 1 at the center) sampled like the
    BOLD reach :data:`PLANTED_FRACTION`."""
    sampled = sampling_matrix(space, hemi, weights.shape, affine) @ weights.ravel()
    return sampled >= PLANTED_FRACTION


def truth_paths(folder: Path, subject: str, task: str, name: str, space: str) -> list[Path]:
    """The surface truth files of one planted feature (one per hemisphere for fsaverage5, one CIFTI for fsLR)."""
    stem = f"sub-{subject}_task-{task}"
    if space == "fsaverage5":
        return [folder / f"{stem}_hemi-{hemi}_space-fsaverage5_desc-{name}_mask.shape.gii" for hemi in HEMISPHERES]
    return [folder / f"{stem}_space-fsLR_den-{CIFTI_DENSITY}_desc-{name}_mask.dscalar.nii"]


def write_surface_truth(folder: Path, subject: str, task: str, weights: dict[str, np.ndarray],
                        brain_mask: np.ndarray, affine: np.ndarray, surfaces: tuple[str, ...]) -> None:
    """Write the planted locations of each feature (``weights``: sphere weights on the volume grid) per space."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, w in weights.items():
        for space in surfaces:
            paths = truth_paths(folder, subject, task, name, space)
            if space == "fsaverage5":
                for hemi, path in zip(HEMISPHERES, paths):
                    planted = planted_vertices(w, space, hemi, affine).astype(np.uint8)
                    meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": _GIFTI_STRUCTURE[hemi]})
                    darray = nib.gifti.GiftiDataArray(planted, intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_UINT8",
                                                      meta={"Name": f"{name} planted"})
                    nib.save(nib.gifti.GiftiImage(meta=meta, darrays=[darray]), path)
            else:
                cortex = [planted_vertices(w, space, hemi, affine) for hemi in HEMISPHERES]
                volume = [w[voxels] > 0 for voxels in subcortical_voxels(brain_mask, affine).values()]
                data = np.concatenate(cortex + volume)[None].astype(np.float32)
                _save_cifti(paths[0], data, cifti2.ScalarAxis([name]), brain_mask, affine, "ConnDenseScalar")


def load_surface_truth(dataset: str | Path, subject: str, task: str,
                       space: str = "fsaverage5") -> dict[str, np.ndarray]:
    """Boolean per location of the vertices planted for each feature of ``task`` in ``subject``.

    Locations in the app's order: fsaverage5's left hemisphere's 10242 vertices, then the right's;
    for fsLR the CIFTI's grayordinates in file order (left cortex, right cortex, subcortical voxels).
    """
    subject = str(subject).removeprefix("sub-")
    folder = Path(dataset) / "sourcedata" / "groundtruth"
    truth_file = folder / f"sub-{subject}_task-{task}_truth.json"
    if space not in SURFACE_SPACES:
        raise UserError(f"no surface truth in space {space!r}", fix=f"Choose among {', '.join(SURFACE_SPACES)}")
    if not truth_file.exists():
        raise UserError(f"no ground truth for sub-{subject} and task {task}", path=truth_file,
                        fix="Give a dataset written by write_example_dataset, and one of its subjects and tasks")
    truth = {}
    for name in json.loads(truth_file.read_text(encoding="utf-8"))["features"]:
        paths = truth_paths(folder, subject, task, name, space)
        if not all(p.exists() for p in paths):
            raise UserError(f"no {space} truth for feature {name} of sub-{subject} and task {task}", path=paths[0],
                            fix=f"Write the example dataset with surfaces=({space!r},)")
        truth[name] = np.concatenate([_values(p) for p in paths]) > 0
    return truth


def _values(path: Path) -> np.ndarray:
    """A GIFTI's or a one-map CIFTI's values, flat."""
    img = nib.load(path)
    return np.ravel(img.agg_data() if isinstance(img, nib.gifti.GiftiImage) else img.get_fdata())
