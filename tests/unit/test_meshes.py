"""Meshes: known geometry (great circles on a sphere), a full Dijkstra as the reference of the searchlights,
the template meshes' known sizes and sides, and the four-view surface figure."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy.sparse.csgraph import dijkstra

from bids_encoding import meshes
from bids_encoding.errors import UserError
from bids_encoding.meshes import (EPSILON, Mesh, adjacency, edge_graph, icosphere, mesh_description, read_mesh,
                                  template_medial_wall, template_mesh, within_radius)

needs_brainspace = pytest.mark.skipif(meshes._brainspace_surfaces() is None,
                                      reason="brainspace's files (fsLR 32k meshes) are not installed")


def _great_circle(mesh: Mesh, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    radius = np.linalg.norm(mesh.coordinates, axis=1).mean()
    unit = mesh.coordinates / np.linalg.norm(mesh.coordinates, axis=1, keepdims=True)
    arc = radius * np.arccos(np.clip(unit[seeds] @ unit.T, -1, 1))
    chord = np.linalg.norm(mesh.coordinates[seeds][:, None] - mesh.coordinates[None], axis=2)
    return arc, chord


@pytest.mark.parametrize("source", ["icosphere", "fsaverage5 sphere"])
def test_mesh_distance_approximates_great_circle(source):
    mesh = icosphere(4, radius=100.0) if source == "icosphere" else template_mesh("fsaverage5", "L", "sphere")
    graph = edge_graph(mesh)
    seeds = np.arange(0, mesh.n_vertices, 97)
    paths = dijkstra(graph, directed=False, indices=seeds)
    arc, chord = _great_circle(mesh, seeds)
    assert np.all(paths >= chord - 1e-9)  # each edge is a chord: a path never undercuts the straight line
    far = arc > 3 * np.median(graph.data)
    ratio = paths[far] / arc[far]
    # edges zig-zag on a triangle lattice: the path is ~7 % longer than the great circle on average, and up to
    # ~23 % in the worst directions at a few edges' distance (2/sqrt(3) - 1 = 15.5 % far away)
    assert 1.0 <= ratio.mean() <= 1.10
    assert ratio.max() <= 1.25


def test_icosphere_edges_are_its_chords():
    mesh = icosphere(3, radius=100.0)
    assert mesh.n_vertices == 10 * 4 ** 3 + 2
    assert np.allclose(np.linalg.norm(mesh.coordinates, axis=1), 100.0)
    graph = edge_graph(mesh)
    assert (graph != graph.T).nnz == 0
    assert graph.nnz == 2 * (3 * len(mesh.faces) // 2)  # a closed triangle mesh: E = 3F / 2
    rows, columns = graph.nonzero()
    chords = np.linalg.norm(mesh.coordinates[rows] - mesh.coordinates[columns], axis=1)
    assert np.allclose(np.asarray(graph[rows, columns]).ravel(), chords)
    degree = np.diff(adjacency(mesh).indptr)
    assert sorted(np.unique(degree)) == [5, 6] and np.sum(degree == 5) == 12  # the icosahedron's corners


@pytest.mark.parametrize("subset, about", [(False, 20), (True, 20), (True, 70)])
def test_within_radius_keeps_exactly_the_paths_within_radius(monkeypatch, subset, about):
    """Radii below and above 8 edges: grid cells 8 edges wide, and cells as wide as the radius."""
    monkeypatch.setattr(meshes, "CHUNK_ENTRIES", 20_000)  # several Dijkstra chunks per grid cell
    mesh = icosphere(4, radius=100.0)  # 2562 vertices, edges ~7.5 mm
    full = dijkstra(edge_graph(mesh), directed=False)
    vertices = np.random.default_rng(0).permutation(mesh.n_vertices)[:900] if subset else np.arange(mesh.n_vertices)
    reference = full[np.ix_(vertices, vertices)]
    radius = float(reference[0][reference[0] > about][0])  # exactly one path's length: "<=" is kept
    found = within_radius(mesh, radius, None if not subset else vertices)
    assert found.shape == (len(vertices), len(vertices))
    expected = reference <= radius
    assert np.array_equal(found.toarray() > 0, expected)
    assert np.allclose(found.toarray()[expected], np.maximum(reference[expected], EPSILON), rtol=1e-12)
    assert np.allclose(found.diagonal(), EPSILON)  # every vertex is in its own searchlight
    assert found[0, np.flatnonzero(reference[0] == radius)].nnz >= 1
    identity = within_radius(mesh, 0.0, None if not subset else vertices)
    assert np.array_equal(identity.toarray() > 0, np.eye(len(vertices), dtype=bool))


@needs_brainspace
def test_within_radius_on_a_folded_cortex_matches_dijkstra():
    """On conte69's folded midthickness surface (sulci bring far vertices close in space) and its cortex."""
    mesh = template_mesh("fsLR", "L", den="91k")
    cortex = np.flatnonzero(~template_medial_wall("fsLR", "L", den="91k"))
    found = within_radius(mesh, 10.0, cortex)
    rows = np.arange(0, len(cortex), 2927)
    full = dijkstra(edge_graph(mesh), directed=True, indices=cortex[rows])[:, cortex]
    for row, reference in zip(rows, full):
        kept = found[row]
        assert np.array_equal(np.sort(kept.indices), np.flatnonzero(reference <= 10.0))
        assert np.allclose(kept.data, np.maximum(reference[kept.indices], EPSILON))


def test_adjacency_restricted_to_vertices():
    mesh = icosphere(2)
    chosen = np.flatnonzero(mesh.coordinates[:, 2] > 0)
    linked = adjacency(mesh, chosen)
    assert linked.dtype == bool and linked.shape == (len(chosen), len(chosen))
    assert (linked != linked.T).nnz == 0 and linked.diagonal().sum() == 0
    graph = edge_graph(mesh)
    assert np.array_equal(linked.toarray(), graph[chosen][:, chosen].toarray() > 0)
    assert (adjacency(mesh, mesh.coordinates[:, 2] > 0) != linked).nnz == 0  # a boolean mask works alike


def test_fsaverage5_meshes():
    for hemi, side in (("L", -1), ("R", 1)):
        pial, white, middle = (template_mesh("fsaverage5", hemi, kind) for kind in ("pial", "white", "midthickness"))
        for mesh in (pial, white, middle, template_mesh("fsaverage5", hemi, "inflated")):
            assert mesh.n_vertices == 10_242 and len(mesh.faces) == 20_480
        assert np.allclose(middle.coordinates, (pial.coordinates + white.coordinates) / 2)
        assert all(np.sign(np.median(m.coordinates[:, 0])) == side for m in (pial, white, middle))
        # fMRIPrep's other name for fsaverage5
        assert template_mesh("fsaverage", hemi, den="10k") is middle
    assert template_medial_wall("fsaverage5", "L") is None  # nilearn ships no medial-wall label offline
    assert "10,242" in mesh_description("fsaverage5", None, "midthickness")
    with pytest.raises(ValueError):
        template_mesh("fsaverage5", "L").coordinates[0, 0] = 1.0  # cached meshes are read-only


@needs_brainspace
def test_conte69_meshes_and_medial_wall():
    wall = {hemi: template_medial_wall("fsLR", hemi, den="32k") for hemi in "LR"}
    assert wall["L"].sum() == 32_492 - 29_271
    for hemi, side in (("L", -1), ("R", 1)):
        mesh = template_mesh("fsLR", hemi, den="32k")
        assert mesh.n_vertices == 32_492 == len(wall[hemi])
        assert np.sign(np.median(mesh.coordinates[:, 0])) == side
        assert template_mesh("fsLR", hemi, den="91k") is mesh
        sphere = template_mesh("fsLR", hemi, "sphere", den="32k")
        assert np.allclose(np.linalg.norm(sphere.coordinates, axis=1), 100.0, atol=0.1)
        # no inflated fsLR surface ships: the midthickness stands in, and the description says so
        assert template_mesh("fsLR", hemi, "inflated", den="32k") is mesh
    assert "stands in" in mesh_description("fsLR", "91k", "inflated")
    assert "stands in" not in mesh_description("fsLR", "91k", "midthickness")


@pytest.mark.parametrize("space, den", [("fsaverage", None), ("fsaverage6", None), ("fsnative", None),
                                        ("fsLR", "164k"), ("fsaverage", "41k")])
def test_nothing_shipped_gives_none(space, den):
    assert template_mesh(space, "L", den=den) is None
    assert template_medial_wall(space, "L", den=den) is None
    assert mesh_description(space, den, "midthickness").startswith("No midthickness mesh")


def test_unknown_kind_or_hemisphere():
    with pytest.raises(UserError, match="kind"):
        template_mesh("fsaverage5", "L", "smoothwm")
    with pytest.raises(UserError, match="hemisphere"):
        template_mesh("fsaverage5", "left")


def test_read_mesh_round_trip_and_bad_files(tmp_path):
    mesh = icosphere(2)
    good = tmp_path / "sub-01_hemi-L_midthickness.surf.gii"
    nib.save(nib.GiftiImage(darrays=[
        nib.gifti.GiftiDataArray(mesh.coordinates.astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
        nib.gifti.GiftiDataArray(mesh.faces.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE")]), good)
    read = read_mesh(good)
    assert np.allclose(read.coordinates, mesh.coordinates, atol=1e-4) and np.array_equal(read.faces, mesh.faces)

    data = tmp_path / "sub-01_hemi-L_bold.func.gii"
    nib.save(nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(np.zeros(42, np.float32))]), data)
    text = tmp_path / "notes.surf.gii"
    text.write_text("not a surface")
    broken = tmp_path / "broken.surf.gii"
    nib.save(nib.GiftiImage(darrays=[
        nib.gifti.GiftiDataArray(mesh.coordinates.astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
        nib.gifti.GiftiDataArray(mesh.faces.astype(np.int32) + 1000, intent="NIFTI_INTENT_TRIANGLE")]), broken)
    for bad in (data, text, broken, tmp_path / "missing.surf.gii"):
        with pytest.raises(UserError) as error:
            read_mesh(bad)
        assert str(bad) in str(error.value) and ".surf.gii" in str(error.value)


def _coloured(pixels: np.ndarray) -> int:
    """Pixels of a colour map's hues (the mesh is grey and the page white: their channels are equal)."""
    rgb = pixels[..., :3]
    return int(np.sum(rgb.max(axis=-1) - rgb.min(axis=-1) > 0.3))


def test_surface_map_shows_a_planted_left_temporal_value(tmp_path):
    from bids_encoding.report.figures import SURFACE_VIEWS, surface_map

    geometry = {hemi: template_mesh("fsaverage5", hemi) for hemi in "LR"}
    display = {hemi: template_mesh("fsaverage5", hemi, "inflated") for hemi in "LR"}
    x, y, z = geometry["L"].coordinates.T
    temporal = (x < -55) & (y > -40) & (y < -5) & (z < -5)  # lateral temporal cortex
    assert temporal.sum() > 30
    values = {"L": np.where(temporal, 2.0, np.nan), "R": np.zeros(geometry["R"].n_vertices)}
    figure = surface_map(values, display, tmp_path / "map.png", "planted", threshold=1.0, vmax=3.0)
    pixels = mpimg.imread(figure)
    height, width = pixels.shape[:2]
    band = pixels[int(0.12 * height):int(0.84 * height)]  # the panels, without the title and the colour bar
    panels = [band[:, i * width // 4:(i + 1) * width // 4] for i in range(4)]
    for panel in panels:
        assert np.mean(panel[..., :3].min(axis=-1) < 0.9) > 0.05  # a mesh is drawn: not blank
    coloured = dict(zip(SURFACE_VIEWS, map(_coloured, panels)))
    assert coloured[("L", "lateral")] > 100
    assert coloured[("R", "lateral")] == coloured[("R", "medial")] == 0
