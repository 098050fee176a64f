"""Cortical meshes: the template surfaces shipped offline, and distances along them.

Surface data (fMRIPrep's ``hemi-L_space-fsaverage5`` GIFTI, ``space-fsLR_den-91k`` CIFTI) carry values per
vertex but no geometry. Searchlights, cluster statistics and figures need the mesh those vertices sit on. No
template can be downloaded at run time, so this module serves only what ships inside installed wheels:

- fsaverage5 (10,242 vertices per hemisphere) from nilearn: pial, white, inflated and sphere surfaces; the
  midthickness surface is the mean of pial and white (same faces), as FreeSurfer/HCP define it.
- fsLR 32k (32,492 vertices per hemisphere, also the surface part of 91k grayordinates) from brainspace's
  files: the Conte69 midthickness surface, its sphere and its cortex mask. brainspace is never imported (it
  needs vtk); its files are read with nibabel.

Everything else (fsaverage, fsaverage6, fsnative, fsLR 164k) gives None, and :func:`mesh_description` says so
in one sentence for reports and sidecars. A subject's own surfaces can be read with :func:`read_mesh`.

Distances along a mesh are shortest paths along its edges (scipy's Dijkstra): they never undercut the
straight line, and they overestimate the geodesic distance, as edges zig-zag: by about 7 % on average on
regular meshes (icosphere, fsaverage5 and fsLR spheres), by up to ~23 % in the worst directions a few edges
away. A searchlight of radius r along edges thus reaches about r / 1.07 along the surface.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

from .errors import UserError
from .progress import track

KINDS = ("midthickness", "pial", "white", "inflated", "sphere")
HEMIS = ("L", "R")
EPSILON = 1e-12  # mm: the distance stored for a vertex to itself (and for degenerate zero-length edges)
CHUNK_ENTRIES = 10_000_000  # Dijkstra's dense output per chunk of seeds (80 MB of float64)

FSAVERAGE5 = "fsaverage5"
FSLR32K = "fsLR 32k"
_VERTICES = {FSAVERAGE5: 10_242, FSLR32K: 32_492}
_NILEARN_KINDS = {"pial": "pial", "white": "white_matter", "inflated": "inflated", "sphere": "sphere"}
_HEMISPHERES = {"L": ("left", "lh"), "R": ("right", "rh")}


@dataclass(frozen=True, eq=False, repr=False)
class Mesh:
    """A triangle mesh: vertex coordinates (n x 3, mm) and faces (m x 3 vertex indices).

    The arrays are copied and made read-only, so that a cached template can be shared safely. Meshes compare
    by identity (comparing arrays elementwise has no single truth value).
    """

    coordinates: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        coordinates = np.array(self.coordinates, dtype=float)
        faces = np.array(self.faces, dtype=np.int64)
        if coordinates.ndim != 2 or coordinates.shape[1] != 3:
            raise ValueError(f"mesh coordinates must be n x 3, not {coordinates.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"mesh faces must be m x 3, not {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= len(coordinates)):
            raise ValueError(f"mesh faces refer to vertices outside 0..{len(coordinates) - 1}")
        for name, array in (("coordinates", coordinates), ("faces", faces)):
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def n_vertices(self) -> int:
        return len(self.coordinates)

    def __repr__(self) -> str:
        return f"Mesh(n_vertices={self.n_vertices}, n_faces={len(self.faces)})"


def read_mesh(path: str | Path) -> Mesh:
    """A GIFTI surface (``.surf.gii``: one NIFTI_INTENT_POINTSET and one NIFTI_INTENT_TRIANGLE array)."""
    path = Path(path)
    fix = "Give a GIFTI surface (.surf.gii, e.g. fMRIPrep's *_hemi-L_midthickness.surf.gii)"
    if not path.is_file():
        raise UserError("the surface file does not exist", path=path, fix=fix)
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises many types for files it cannot parse
        raise UserError(f"the surface file could not be read as GIFTI ({error})", path=path, fix=fix) from error
    if not isinstance(image, nib.gifti.GiftiImage):
        raise UserError(f"the file is not GIFTI but {type(image).__name__}", path=path, fix=fix)
    points = image.get_arrays_from_intent("NIFTI_INTENT_POINTSET")
    triangles = image.get_arrays_from_intent("NIFTI_INTENT_TRIANGLE")
    if len(points) != 1 or len(triangles) != 1:
        raise UserError(f"a surface needs exactly one POINTSET and one TRIANGLE array; this file holds "
                        f"{len(points)} and {len(triangles)} (a .func.gii or .shape.gii holds values on a mesh, "
                        "not the mesh)", path=path, fix=fix)
    try:
        return Mesh(points[0].data, triangles[0].data)
    except ValueError as error:
        raise UserError(f"the surface is malformed: {error}", path=path, fix=fix) from error


# --- template meshes shipped offline ---------------------------------------------------------------------

def _template(space: str, den: str | None) -> str | None:
    """Which shipped template a BIDS space/density pair names (fMRIPrep writes fsaverage5 also as
    ``space-fsaverage_den-10k``; 91k grayordinates sit on the 32k meshes)."""
    if space == "fsaverage5" or (space == "fsaverage" and den == "10k"):
        return FSAVERAGE5
    if space == "fsLR" and den in ("32k", "91k"):
        return FSLR32K
    return None


def _check(hemi: str | None = None, kind: str | None = None) -> None:
    if hemi is not None and hemi not in HEMIS:
        raise UserError(f"unknown hemisphere {hemi!r}", fix=f"Use one of {', '.join(HEMIS)}")
    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown surface kind {kind!r}", fix=f"Use one of {', '.join(KINDS)}")


def _brainspace_surfaces() -> Path | None:
    """brainspace's folder of surfaces, found without importing brainspace (whose import needs vtk)."""
    spec = importlib.util.find_spec("brainspace")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "surfaces"
    return folder if (folder / "conte69_32k_lh.gii").is_file() else None


def _conte69_file(kind: str) -> str:
    """brainspace ships only the midthickness surface and the sphere: every other kind gets the former."""
    return "_sphere.gii" if kind == "sphere" else ".gii"


@lru_cache(maxsize=1)
def _fsaverage5() -> dict:
    from nilearn import datasets

    return datasets.load_fsaverage("fsaverage5")


@lru_cache(maxsize=None)
def _conte69(name: str) -> Mesh:
    return read_mesh(_brainspace_surfaces() / name)


def template_mesh(space: str, hemi: str, kind: str = "midthickness", den: str | None = None) -> Mesh | None:
    """The template mesh of one hemisphere (``hemi`` "L" or "R") that ships offline, or None.

    ``kind``: midthickness, pial, white, inflated or sphere. fsLR has only its midthickness surface and
    sphere offline: other kinds fall back to the midthickness surface (:func:`mesh_description` says so).
    Loads are cached: every name of the same mesh gives the same (read-only) object.
    """
    _check(hemi, kind)
    template = _template(space, den)
    if template == FSAVERAGE5:
        return _fsaverage5_mesh(hemi, kind)
    if template == FSLR32K and _brainspace_surfaces() is not None:
        return _conte69(f"conte69_32k_{_HEMISPHERES[hemi][1]}{_conte69_file(kind)}")
    return None


@lru_cache(maxsize=None)
def _fsaverage5_mesh(hemi: str, kind: str) -> Mesh:
    side = _HEMISPHERES[hemi][0]
    if kind == "midthickness":
        pial, white = (_fsaverage5()[_NILEARN_KINDS[name]].parts[side] for name in ("pial", "white"))
        return Mesh((np.asarray(pial.coordinates, float) + np.asarray(white.coordinates, float)) / 2, pial.faces)
    part = _fsaverage5()[_NILEARN_KINDS[kind]].parts[side]
    return Mesh(part.coordinates, part.faces)


def mesh_description(space: str, den: str | None, kind: str) -> str:
    """One sentence for reports and sidecars: which mesh was used, or that none is available offline."""
    _check(kind=kind)
    template = _template(space, den)
    name = f"space-{space}" + (f" den-{den}" if den else "")
    if template == FSAVERAGE5:
        how = " (the mean of the pial and white surfaces)" if kind == "midthickness" else ""
        return (f"Surface geometry for {name}: nilearn's bundled fsaverage5 {kind} mesh{how}, "
                f"{_VERTICES[FSAVERAGE5]:,} vertices per hemisphere.")
    if template == FSLR32K and _brainspace_surfaces() is not None:
        what = "sphere" if kind == "sphere" else "midthickness mesh"
        instead = "" if kind in ("sphere", "midthickness") else (
            f"; no fsLR {kind} surface ships offline, so the midthickness mesh stands in for it")
        return (f"Surface geometry for {name}: the fsLR 32k Conte69 {what} from brainspace's files, "
                f"{_VERTICES[FSLR32K]:,} vertices per hemisphere{instead}.")
    missing = " (brainspace, which ships the fsLR 32k meshes, is not installed)" if template == FSLR32K else ""
    return (f"No {kind} mesh for {name} is available offline{missing}: only fsaverage5 (nilearn) and fsLR 32k "
            "(brainspace) ship with the software, so nothing here was computed along the surface.")


def template_sulcal_depth(space: str, hemi: str, den: str | None = None) -> np.ndarray | None:
    """Sulcal depth per vertex, to shade a figure's bare mesh: fsaverage5's (nilearn ships it); None elsewhere."""
    if _template(space, den) != FSAVERAGE5:
        return None
    return _fsaverage5_sulcal(hemi)


@lru_cache(maxsize=None)
def _fsaverage5_sulcal(hemi: str) -> np.ndarray:
    from nilearn.datasets import load_fsaverage_data

    _check(hemi)
    data = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    return np.asarray(data.data.parts["left" if hemi == "L" else "right"], dtype=float)


def template_medial_wall(space: str, hemi: str, den: str | None = None) -> np.ndarray | None:
    """True at the medial-wall vertices of a template hemisphere, where a shipped file says which they are.

    fsLR 32k: brainspace's cortex masks (``conte69_32k_{lh,rh}_mask.csv``, 0 = medial wall). fsaverage5:
    None, as nilearn ships no medial-wall (or Destrieux) label offline; and so do all other spaces.
    """
    _check(hemi)
    if _template(space, den) != FSLR32K or _brainspace_surfaces() is None:
        return None
    return _conte69_wall(_HEMISPHERES[hemi][1])


@lru_cache(maxsize=None)
def _conte69_wall(side: str) -> np.ndarray:
    wall = np.loadtxt(_brainspace_surfaces() / f"conte69_32k_{side}_mask.csv") == 0
    wall.setflags(write=False)
    return wall


def icosphere(subdivisions: int = 3, radius: float = 100.0) -> Mesh:
    """A geodesic sphere (an icosahedron subdivided ``subdivisions`` times: 10 * 4**k + 2 vertices).

    Distances on it are known (great circles), so it checks the numerics and serves simulations.
    """
    golden = (1 + 5 ** 0.5) / 2
    coordinates = np.array([(-1, golden, 0), (1, golden, 0), (-1, -golden, 0), (1, -golden, 0),
                            (0, -1, golden), (0, 1, golden), (0, -1, -golden), (0, 1, -golden),
                            (golden, 0, -1), (golden, 0, 1), (-golden, 0, -1), (-golden, 0, 1)], dtype=float)
    faces = np.array([(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
                      (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
                      (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)])
    coordinates /= np.linalg.norm(coordinates, axis=1, keepdims=True)
    for _ in range(subdivisions):
        unique, inverse = np.unique(np.sort(_face_edges(faces), axis=1), axis=0, return_inverse=True)
        middles = coordinates[unique].mean(axis=1)
        middles /= np.linalg.norm(middles, axis=1, keepdims=True)
        ab, bc, ca = inverse.reshape(3, -1) + len(coordinates)
        a, b, c = faces.T
        faces = np.concatenate([np.stack(corners, axis=1) for corners in
                                ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
        coordinates = np.vstack([coordinates, middles])
    return Mesh(coordinates * radius, faces)


# --- graphs along a mesh ------------------------------------------------------------------------------------

def _face_edges(faces: np.ndarray) -> np.ndarray:
    """The three edges of every face (3m x 2): all of a face's first edges, then its second, then its third."""
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def _vertex_subset(mesh: Mesh, vertices: np.ndarray | None) -> np.ndarray:
    if vertices is None:
        return np.arange(mesh.n_vertices)
    vertices = np.asarray(vertices)
    if vertices.dtype == bool:
        vertices = np.flatnonzero(vertices)
    vertices = vertices.astype(np.int64, copy=False).ravel()
    if vertices.size and (vertices.min() < 0 or vertices.max() >= mesh.n_vertices):
        raise ValueError(f"vertices must lie in 0..{mesh.n_vertices - 1}")
    if len(np.unique(vertices)) != len(vertices):
        raise ValueError("vertices must not repeat")
    return vertices


def edge_graph(mesh: Mesh) -> sparse.csr_matrix:
    """The mesh's edges as a symmetric n x n sparse matrix of their lengths in mm.

    Zero-length edges (coincident vertices) are stored as ``EPSILON`` so that no sparse operation drops them.
    """
    edges = np.unique(np.sort(_face_edges(mesh.faces), axis=1), axis=0)
    lengths = np.linalg.norm(mesh.coordinates[edges[:, 0]] - mesh.coordinates[edges[:, 1]], axis=1)
    lengths = np.maximum(lengths, EPSILON)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    columns = np.concatenate([edges[:, 1], edges[:, 0]])
    n = mesh.n_vertices
    return sparse.csr_matrix((np.concatenate([lengths, lengths]), (rows, columns)), shape=(n, n))


def within_radius(mesh: Mesh, radius: float, vertices: np.ndarray | None = None) -> sparse.csr_matrix:
    """Surface searchlights: the vertices within ``radius`` mm along the mesh of each of ``vertices``.

    Returns a k x k CSR matrix, k = len(vertices) (default: all vertices); row i is the searchlight of
    ``vertices[i]``, columns are positions in ``vertices`` too (so rows and columns both index a
    ``samples x vertices`` array). Every stored entry is a member, its value the path length in mm; a vertex
    is the member of its own searchlight at distance 0, stored as ``EPSILON`` so that it is never dropped as an
    explicit zero. Paths run along the whole mesh, also through vertices outside ``vertices`` (a cortex mask
    does not change the geometry).

    Speed: seeds are grouped by the cells of a 3D grid at least ``radius`` wide, and Dijkstra runs for each
    group on the part of the mesh in its cell and the 26 cells around it. That is exact, not an approximation:
    a path no longer than ``radius`` never leaves the ball of that radius around its seed (no edge is shorter
    than the straight line between its ends), and that ball lies within those 27 cells. Dijkstra's dense
    output thus spans a neighbourhood, not the whole mesh. ``vertices``: indices (unique) or a boolean mask.
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"the radius must be a finite distance >= 0 mm, not {radius}")
    vertices = _vertex_subset(mesh, vertices)
    graph = edge_graph(mesh)
    position = np.full(mesh.n_vertices, -1)
    position[vertices] = np.arange(len(vertices))
    rows, columns, distances = [], [], []
    for seeds, local in track(_cells(mesh, graph, vertices, radius), "surface searchlights", unit="cell"):
        subgraph = graph[local][:, local]
        members = position[local] >= 0
        seeds_local = np.searchsorted(local, seeds)
        for chunk in np.array_split(seeds_local, -(-len(seeds_local) * len(local) // CHUNK_ENTRIES)):
            # the graph is symmetric: directed=True spares scipy symmetrizing it for every call
            dist = dijkstra(subgraph, directed=True, indices=chunk, limit=radius)
            found, near = np.nonzero(np.isfinite(dist) & members)
            rows.append(position[local[chunk[found]]])
            columns.append(position[local[near]])
            distances.append(dist[found, near])
    k = len(vertices)
    data = np.maximum(np.concatenate(distances), EPSILON) if distances else np.zeros(0)
    ij = (np.concatenate(rows), np.concatenate(columns)) if rows else (np.zeros(0, int), np.zeros(0, int))
    found = sparse.coo_matrix((data, ij), shape=(k, k)).tocsr()
    found.sort_indices()
    return found


def _cells(mesh: Mesh, graph: sparse.csr_matrix, vertices: np.ndarray,
           radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The seeds grouped by grid cell, each group with the (sorted) mesh vertices of its 3 x 3 x 3 cells.

    Cells are a little wider than ``radius`` (so that rounding never lets a ball reach two cells away) and at
    least 8 median edges wide (so that small radii do not make thousands of tiny Dijkstra runs).
    """
    if len(vertices) == 0:
        return []
    edge = float(np.median(graph.data)) if graph.nnz else 1.0
    size = max(radius * 1.001, 8 * edge)
    keys = np.floor((mesh.coordinates - mesh.coordinates.min(axis=0)) / size).astype(np.int64) + 1
    shape = tuple(keys.max(axis=0) + 2)  # a margin of empty cells on every side: neighbours never wrap
    code = np.ravel_multi_index(keys.T, shape)
    order = np.argsort(code, kind="stable")
    codes, starts = np.unique(code[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    cell_vertices = {int(c): order[start:end] for c, start, end in zip(codes, starts, ends)}
    # the flat index is linear in the cell's position: a cell's 27 neighbours are fixed offsets from it
    neighbours = np.ravel_multi_index(tuple(np.indices((3, 3, 3)).reshape(3, -1)), shape) \
        - np.ravel_multi_index((1, 1, 1), shape)
    seed_codes = code[vertices]
    seed_order = np.argsort(seed_codes, kind="stable")
    groups = np.split(vertices[seed_order], np.flatnonzero(np.diff(seed_codes[seed_order])) + 1)
    return [(seeds, np.sort(np.concatenate([cell_vertices[c] for c in (code[seeds[0]] + neighbours).tolist()
                                             if c in cell_vertices])))
            for seeds in groups]


def adjacency(mesh: Mesh, vertices: np.ndarray | None = None) -> sparse.csr_matrix:
    """Which vertices share an edge (bool, symmetric, no diagonal), as cluster statistics need.

    Restricted to ``vertices`` (indices or a boolean mask; rows and columns are positions in it), so clusters
    never cross a mask.
    """
    graph = edge_graph(mesh).astype(bool)
    if vertices is not None:
        chosen = _vertex_subset(mesh, vertices)
        graph = graph[chosen][:, chosen]
    return sparse.csr_matrix(graph)
