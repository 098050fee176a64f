"""Locations: voxels, vertices and grayordinates as the columns of samples x locations arrays.

Every fMRI analysis sees its data as ``samples x locations`` and writes its maps back through
one object, whatever the data's format. A *layout* is what a file's values lie on:

* :class:`VolumeLayout` - a voxel grid (NIfTI; maps ``.nii.gz``), read with nilearn's masking;
* :class:`HemispheresLayout` - the vertices of both hemispheres of a surface space, left then right (fMRIPrep's
  ``*_hemi-L_space-fsaverage5_bold.func.gii`` and its ``hemi-R`` partner; maps ``.shape.gii``, one per hemisphere);
* :class:`GrayordinatesLayout` - the brain models of a CIFTI-2 file (``*_space-fsLR_den-91k_bold.dtseries.nii``:
  cortical vertices and subcortical voxels; maps ``.dscalar.nii``), read with nibabel's CIFTI-2 axes.

:class:`Locations` is a layout and which of its locations are analysed (the brain mask), with how they were
chosen. It reads a run (``read``), writes a map (``map_outputs``), reads a region or atlas given in the same space
(``values_of``), and gives searchlight neighbourhoods (``spheres``: a radius in mm, along the cortical mesh on
surfaces) and neighbours for cluster statistics (``adjacency``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import cifti2
from scipy import sparse

from . import meshes
from .derivatives import Output, save_nifti
from .errors import UserError
from .spheres import GraphSpheres, VoxelSpheres
from .surface_io import (CIFTI_HEMISPHERES, HEMISPHERES, check_series, file_kind, hemisphere_files, read_cifti,
                         read_gifti)

# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class VolumeLayout:
    """A voxel grid: ``shape`` and ``affine``; locations in C order (nilearn's ``apply_mask`` order)."""

    shape: tuple[int, int, int]
    affine: np.ndarray = field(compare=False)
    kind = "volume"
    unit, one = "voxels", "voxel"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def image(self, values: np.ndarray) -> nib.Nifti1Image:
        return nib.Nifti1Image(np.asarray(values).reshape(self.shape), self.affine)

    def read_series(self, path: Path, selected: np.ndarray) -> np.ndarray:
        from nilearn import masking

        return masking.apply_mask(str(path), self.image(selected.astype(np.uint8)), dtype=np.float32,
                                  ensure_finite=False)

    def write(self, values: np.ndarray, stem: Path) -> list[tuple[Path, dict]]:
        return [(save_nifti(self.image(values.astype(np.float32)), Path(f"{stem}.nii.gz")), {})]

    def same_as(self, other: Any) -> bool:
        return (isinstance(other, VolumeLayout) and other.shape == self.shape
                and np.allclose(other.affine, self.affine, atol=1e-3))

    def describe(self) -> dict[str, Any]:
        return {"Type": "volume", "Shape": list(self.shape), "Affine": np.asarray(self.affine, float).tolist()}


@dataclass(frozen=True)
class HemispheresLayout:
    """Both hemispheres' vertices of a surface space, left then right (GIFTI, one file per hemisphere)."""

    space: str
    den: str | None
    vertices: tuple[int, int]  # per hemisphere, left and right
    kind = "gifti"
    unit, one = "vertices", "vertex"

    @property
    def size(self) -> int:
        return sum(self.vertices)

    def parts(self) -> list[tuple[str, slice, np.ndarray]]:
        """Each hemisphere's name, its columns, and its mesh vertex of each column."""
        n_left, n_right = self.vertices
        return [("L", slice(0, n_left), np.arange(n_left)), ("R", slice(n_left, n_left + n_right), np.arange(n_right))]

    def read_series(self, path: Path, selected: np.ndarray) -> np.ndarray:
        files = hemisphere_files(path)
        data = np.concatenate([read_gifti(files[h], "BOLD series") for h in HEMISPHERES], axis=1, dtype=np.float32)
        return data if selected.all() else data[:, selected]

    def write(self, values: np.ndarray, stem: Path) -> list[tuple[Path, dict]]:
        written = []
        for hemi, columns, _ in self.parts():
            structure = "CortexLeft" if hemi == "L" else "CortexRight"
            img = nib.GiftiImage(meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure}))
            img.add_gifti_data_array(nib.gifti.GiftiDataArray(values[columns].astype(np.float32),
                                                              intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_FLOAT32"))
            path = Path(stem).with_name(f"hemi-{hemi}_{Path(stem).name}.shape.gii")
            nib.save(img, str(path))
            written.append((path, {"hemi": hemi}))
        return written

    def same_as(self, other: Any) -> bool:
        return isinstance(other, HemispheresLayout) and (other.space, other.den, other.vertices) == (
            self.space, self.den, self.vertices)

    def mesh(self, hemi: str, kind: str = "midthickness") -> meshes.Mesh | None:
        return meshes.template_mesh(self.space, hemi, kind, self.den)

    def describe(self) -> dict[str, Any]:
        return {"Type": "surface", "Space": self.space, **({"Density": self.den} if self.den else {}),
                "VerticesPerHemisphere": dict(zip(HEMISPHERES, self.vertices))}


@dataclass(frozen=True)
class GrayordinatesLayout:
    """The brain models of a CIFTI-2 file: cortical vertices (of a 32k mesh for 91k) and subcortical voxels."""

    axis: cifti2.BrainModelAxis = field(compare=False)
    space: str = "fsLR"
    den: str | None = None
    kind = "cifti"
    unit, one = "grayordinates", "grayordinate"

    @property
    def size(self) -> int:
        return len(self.axis)

    def parts(self) -> list[tuple[str, slice, np.ndarray]]:
        """Each cortical structure's hemisphere, its columns and their mesh vertices (subcortical voxels: none)."""
        return [(CIFTI_HEMISPHERES[name], slice(columns.start, columns.start + len(sub)), sub.vertex)
                for name, columns, sub in self.axis.iter_structures() if name in CIFTI_HEMISPHERES]

    def read_series(self, path: Path, selected: np.ndarray) -> np.ndarray:
        img, _ = read_cifti(path, "BOLD series")
        return np.asarray(img.dataobj, dtype=np.float32)[:, selected]

    def write(self, values: np.ndarray, stem: Path) -> list[tuple[Path, dict]]:
        path = Path(f"{stem}.dscalar.nii")
        header = cifti2.Cifti2Header.from_axes((cifti2.ScalarAxis([Path(stem).name]), self.axis))
        nib.save(cifti2.Cifti2Image(values[None].astype(np.float32), header), str(path))
        return [(path, {})]

    def same_as(self, other: Any) -> bool:
        return isinstance(other, GrayordinatesLayout) and other.axis == self.axis

    def mesh(self, hemi: str, kind: str = "midthickness") -> meshes.Mesh | None:
        return meshes.template_mesh(self.space, hemi, kind, self.den or "32k")

    def voxel_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """The columns of the subcortical voxels and their positions in mm."""
        columns = np.flatnonzero(self.axis.volume_mask)
        ijk = self.axis.voxel[columns]
        return columns, nib.affines.apply_affine(self.axis.affine, ijk) if len(columns) else np.zeros((0, 3))

    def describe(self) -> dict[str, Any]:
        structures = {name.removeprefix("CIFTI_STRUCTURE_"): len(sub) for name, _, sub in self.axis.iter_structures()}
        return {"Type": "CIFTI-2 grayordinates", "Space": self.space, **({"Density": self.den} if self.den else {}),
                "Structures": structures}


Layout = VolumeLayout | HemispheresLayout | GrayordinatesLayout


def series_layout(path: str | Path, entities: dict[str, Any] | None = None) -> tuple[Layout, int]:
    """The layout of a BOLD series file and its number of volumes, after :func:`..surface_io.check_series`'s checks
    of a surface series."""
    path = Path(path)
    if file_kind(path) == "volume":
        img = nib.load(str(path))
        return VolumeLayout(tuple(img.shape[:3]), img.affine), int(img.shape[3]) if img.ndim == 4 else 1
    series = check_series(path, entities or {})
    if series.axis is not None:
        return GrayordinatesLayout(series.axis, series.space or "fsLR", series.den), series.n_volumes
    return HemispheresLayout(series.space, series.den, series.vertices), series.n_volumes


def read_map(path: str | Path, what: str = "map") -> tuple[Layout, np.ndarray]:
    """A map this app wrote (or any 3D image, per-hemisphere GIFTI or dense CIFTI) as its layout and its values
    over all the layout's locations (float64)."""
    from .derivatives import parse_entities

    path = Path(path)
    kind = file_kind(path)
    if kind == "cifti":
        img, axes = read_cifti(path, what)
        ents = parse_entities(path)
        return GrayordinatesLayout(axes[-1], ents.get("space", "fsLR"), ents.get("den")), \
            np.asarray(img.dataobj, dtype=np.float64)[0]
    if kind == "gifti":
        files = hemisphere_files(path)
        values = [read_gifti(files[h], what)[0] for h in HEMISPHERES]
        ents = parse_entities(path)
        return (HemispheresLayout(ents.get("space", ""), ents.get("den"), tuple(len(v) for v in values)),
                np.concatenate(values).astype(np.float64))
    img = nib.load(str(path))
    return VolumeLayout(tuple(img.shape[:3]), img.affine), np.asarray(img.dataobj, dtype=np.float64).ravel()


def layout_values(layout: Layout, path: str | Path, what: str, fix: str) -> np.ndarray:
    """A user's image of one value per location (a mask, region or atlas) in ``layout``'s space, over all its
    locations: volumes are resampled to the grid (nearest neighbour); surfaces must match location for location."""
    path = Path(path)
    if isinstance(layout, VolumeLayout):
        from nilearn.image import resample_to_img

        try:
            img = nib.load(str(path))
        except Exception as exc:
            raise UserError(f"the {what} cannot be read as NIfTI ({exc})", path=path, fix=fix) from None
        if len(img.shape) != 3:
            raise UserError(f"the {what} has shape {img.shape}, not 3D", path=path, fix=fix)
        reference = layout.image(np.zeros(layout.size, np.uint8))
        if img.shape != layout.shape or not np.allclose(img.affine, layout.affine):
            img = resample_to_img(img, reference, interpolation="nearest", force_resample=True, copy_header=True)
        return np.asarray(img.dataobj).ravel()
    kind = file_kind(path)
    wanted = "a dense CIFTI-2 file (.dscalar.nii or .dlabel.nii)" if layout.kind == "cifti" else \
        "per-hemisphere GIFTI files (hemi-L and hemi-R .label.gii, .shape.gii or .func.gii)"
    if kind != layout.kind:
        raise UserError(f"the {what} is not in the data's format: the BOLD is {layout.kind.upper()} and needs "
                        f"{wanted}", path=path, fix=fix)
    found, values = read_map(path, what)
    if isinstance(layout, GrayordinatesLayout) and found.axis != layout.axis:
        raise UserError(f"the {what}'s grayordinates are not the BOLD's ({found.size} against {layout.size})",
                        path=path, fix=fix)
    if isinstance(layout, HemispheresLayout) and found.vertices != layout.vertices:
        raise UserError(f"the {what} has {found.vertices[0]} + {found.vertices[1]} vertices, but the BOLD "
                        f"{layout.vertices[0]} + {layout.vertices[1]} ({layout.space})", path=path, fix=fix)
    return values


def label_names(path: str | Path) -> dict[int, str]:
    """Label names kept inside a GIFTI label table or a CIFTI label axis (empty for other files)."""
    path = Path(path)
    try:
        if file_kind(path) == "gifti":
            return {int(k): str(v) for k, v in nib.load(str(hemisphere_files(path)["L"])).labeltable
                    .get_labels_as_dict().items()}
        if file_kind(path) == "cifti":
            axis = nib.load(str(path)).header.get_axis(0)
            if isinstance(axis, cifti2.LabelAxis):
                return {int(k): str(v[0]) for k, v in axis.label[0].items()}
    except (OSError, ValueError, AttributeError):
        pass
    return {}


# --------------------------------------------------------------------------- the analysed locations


@dataclass(frozen=True)
class Locations:
    """The locations analysed: a layout, which of its locations are in the brain mask, and how they were chosen."""

    layout: Layout
    selected: np.ndarray = field(compare=False)  # bool over the layout's locations
    method: str = ""
    sources: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(np.count_nonzero(self.selected))

    @property
    def unit(self) -> str:
        return self.layout.unit

    @property
    def img(self) -> nib.Nifti1Image:
        """The brain mask as a 3D image (volumes only)."""
        if not isinstance(self.layout, VolumeLayout):
            raise TypeError("a surface's locations have no mask image")
        return self.layout.image(self.selected.astype(np.uint8))

    def describe(self) -> dict[str, Any]:
        """For sidecars: how the locations were chosen, how many, in which space."""
        return {"Method": self.method, f"N{self.unit.capitalize()}": self.size, "Sources": self.sources,
                **({} if isinstance(self.layout, VolumeLayout) else {"Layout": self.layout.describe()})}

    def __str__(self) -> str:
        return f"the brain mask ({self.method}; {self.size} {self.unit})"

    def read(self, bold_file: Path) -> np.ndarray:
        """One run's series at these locations (time x locations, float32; not cleaned)."""
        return self.layout.read_series(Path(bold_file), self.selected)

    def full(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Values at these locations placed over all the layout's locations (``fill`` elsewhere)."""
        out = np.full(self.layout.size, fill, dtype=np.float32)
        out[self.selected] = values
        return out

    def write(self, values: np.ndarray, stem: Path, fill: float = 0.0) -> list[tuple[Path, dict]]:
        """Write a map of one value per location beside ``stem`` (no extension); the files and their extra
        entities (``hemi`` for GIFTI)."""
        return self.layout.write(self.full(values, fill), Path(stem))

    def map_outputs(self, values: np.ndarray, stem: Path, entities: dict[str, Any], metadata: dict[str, Any],
                    fill: float = 0.0) -> list[Output]:
        """:meth:`write` a map and describe each file written as an :class:`Output` (a statmap)."""
        return [Output(in_file=str(path), entities={**entities, **extra}, metadata=metadata)
                for path, extra in self.write(values, stem, fill)]

    def mask_files(self, stem: Path) -> list[tuple[Path, dict]]:
        """Write the brain mask itself beside ``stem`` (volumes: a uint8 image; surfaces: 1 inside, 0 outside)."""
        if isinstance(self.layout, VolumeLayout):
            return [(save_nifti(self.img, Path(f"{stem}.nii.gz")), {})]
        return self.layout.write(self.selected.astype(np.float32), Path(stem))

    def values_of(self, path: str | Path, what: str, fix: str) -> np.ndarray:
        """A user's image (mask, region, atlas) at these locations."""
        return layout_values(self.layout, path, what, fix)[self.selected]

    def spheres(self, radius: float):
        """Searchlight neighbourhoods: voxels within ``radius`` mm; on surfaces, vertices within ``radius`` mm
        along the cortical mesh (and subcortical grayordinates within ``radius`` mm of each other)."""
        if isinstance(self.layout, VolumeLayout):
            return VoxelSpheres(self.img, radius)
        return GraphSpheres(self._graph(lambda mesh, vertices: meshes.within_radius(mesh, radius, vertices),
                                        lambda points: _points_within(points, radius), "searchlight"))

    def adjacency(self) -> sparse.csr_matrix:
        """Which locations neighbour which, for cluster statistics on surfaces: mesh edges, and face-sharing
        subcortical CIFTI voxels (volumes use nilearn's voxel-grid TFCE, or ``graph_stats.grid_adjacency``)."""
        if isinstance(self.layout, VolumeLayout):
            raise TypeError("a volume's neighbours are its grid's: graph_stats.grid_adjacency")
        graph = self._graph(lambda mesh, vertices: meshes.adjacency(mesh, vertices),
                            lambda points: _points_within(points, 1.01 * _spacing(points)), "cluster statistics")
        return (graph != 0).astype(bool).tocsr()

    def _graph(self, on_mesh, on_points, what: str) -> sparse.csr_matrix:
        """One sparse matrix over the selected locations, built per hemisphere on its mesh (and over the CIFTI's
        subcortical voxels by distance): block diagonal, no edges between structures."""
        position = np.full(self.layout.size, -1)
        position[self.selected] = np.arange(self.size)
        blocks = []
        for hemi, columns, vertices in self.layout.parts():
            inside = self.selected[columns]
            if not inside.any():
                continue
            mesh = self.layout.mesh(hemi)
            if mesh is None:
                raise UserError(f"{what} on the surface needs the cortical mesh of space {self.layout.space}"
                                + (f" (den-{self.layout.den})" if self.layout.den else "") + ", and none is available "
                                "offline (nilearn ships fsaverage5; brainspace ships fsLR 32k)",
                                fix="Run the analysis on fsaverage5 or fsLR data (fMRIPrep --output-spaces "
                                    "fsaverage:den-10k, or --cifti-output 91k), or on volume data")
            graph = on_mesh(mesh, vertices[inside])
            blocks.append((np.arange(columns.start, columns.stop)[inside], graph))
        if isinstance(self.layout, GrayordinatesLayout):
            columns, points = self.layout.voxel_coordinates()
            inside = self.selected[columns]
            if inside.any():
                blocks.append((columns[inside], on_points(points[inside])))
        rows, cols, data = [], [], []
        for where, graph in blocks:
            graph = graph.tocoo()
            rows.append(position[where][graph.row])
            cols.append(position[where][graph.col])
            data.append(graph.data)
        if not rows:
            return sparse.csr_matrix((self.size, self.size))
        return sparse.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                                 shape=(self.size, self.size))


def _spacing(points: np.ndarray) -> float:
    """The grid step of a set of voxel centres (the smallest distance between two of them)."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return 1.0
    distance, _ = cKDTree(points).query(points, k=2)
    return float(distance[:, 1].min())


def _points_within(points: np.ndarray, radius: float) -> sparse.csr_matrix:
    """Distances between distinct points within ``radius`` mm of each other."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    pairs = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix")
    off = pairs.row != pairs.col
    return sparse.csr_matrix((pairs.data[off], (pairs.row[off], pairs.col[off])), shape=(len(points),) * 2)
