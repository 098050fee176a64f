"""Searchlight neighbourhoods: which locations form the sphere around each one.

A searchlight (:mod:`.models.searchlight`, the RSA searchlight of :mod:`.models.rsa`) asks for the
columns of each seed's sphere, seed first, one block of seeds at a time. On a voxel grid the
spheres come from a fixed list of voxel offsets and an index volume (:class:`VoxelSpheres`);
anywhere else (vertices within a radius along a cortical mesh, CIFTI grayordinates) from a sparse
matrix of distances between locations (:class:`GraphSpheres`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UserError


def sphere_offsets(affine: np.ndarray, radius: float) -> np.ndarray:
    """Voxel offsets (i, j, k) whose centres lie within ``radius`` mm of a voxel's, nearest first."""
    linear = np.asarray(affine, float)[:3, :3]
    extent = np.floor(radius / np.sqrt((linear ** 2).sum(0)).min()).astype(int) + 1
    axis = np.arange(-extent, extent + 1)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(grid @ linear.T, axis=1)
    keep = distance <= radius
    order = np.argsort(distance[keep], kind="stable")
    return grid[keep][order]


def mask_index(mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mask image (or boolean array) as its boolean data, a volume of each mask voxel's column in the masked data
    (-1 outside) and the voxels' (i, j, k) in that column order (``nilearn.masking.apply_mask``'s, C order)."""
    mask_data = np.asarray(mask.dataobj if hasattr(mask, "dataobj") else mask) > 0
    index = np.full(mask_data.shape, -1, dtype=np.int64)
    index[mask_data] = np.arange(mask_data.sum())
    return mask_data, index, np.argwhere(mask_data)


def neighbours(seeds: np.ndarray, offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Column indices (into the masked data) of each seed's sphere, -1 padded at the end, as seeds x size: the seed
    first, then its neighbours nearest first (the order of ``offsets``). Seeds are (i, j, k) voxels of ``index``
    (:func:`mask_index`)."""
    coords = seeds[:, None, :] + offsets[None]
    inside = np.all((coords >= 0) & (coords < np.asarray(index.shape)), axis=2)
    coords = np.where(inside[:, :, None], coords, 0)
    found = np.where(inside, index[coords[..., 0], coords[..., 1], coords[..., 2]], -1)
    found = np.take_along_axis(found, np.argsort(found < 0, axis=1, kind="stable"), axis=1)
    return found[:, : max(1, int((found >= 0).sum(1).max()))]


class VoxelSpheres:
    """The voxels of a 3D mask within ``radius`` mm of each mask voxel, looked up from a fixed list of offsets."""

    def __init__(self, mask: Any, radius: float):
        if not radius > 0:
            raise UserError(f"the searchlight radius must be positive, not {radius}", fix="Give a radius in mm, e.g. 8")
        _, self.index, self.voxels = mask_index(mask)
        self.offsets = sphere_offsets(np.asarray(mask.affine), radius)
        self.n_locations, self.max_size = len(self.voxels), len(self.offsets)

    def columns(self, seeds: np.ndarray) -> np.ndarray:
        """Each seed's sphere as columns of the masked data, the seed first, -1 padded."""
        return neighbours(self.voxels[seeds], self.offsets, self.index)


class GraphSpheres:
    """Neighbourhoods given as a sparse matrix of distances between locations (a row's stored entries are its
    neighbours; e.g. vertices within a radius along a cortical mesh). The seed is always in its own sphere."""

    def __init__(self, distances: Any):
        from scipy import sparse

        self.distances = sparse.csr_matrix(distances)
        self.distances.setdiag(0)
        self.distances.eliminate_zeros()
        self.n_locations = self.distances.shape[0]
        self.max_size = 1 + int(np.diff(self.distances.indptr).max(initial=0))

    def columns(self, seeds: np.ndarray) -> np.ndarray:
        """Each seed's sphere, the seed first and then its neighbours nearest first, -1 padded."""
        rows = self.distances[np.asarray(seeds)]
        sizes = np.diff(rows.indptr)
        out = np.full((len(seeds), 1 + int(sizes.max(initial=0))), -1, dtype=np.int64)
        out[:, 0] = seeds
        for i, (start, stop) in enumerate(zip(rows.indptr[:-1], rows.indptr[1:])):
            order = np.argsort(rows.data[start:stop], kind="stable")
            out[i, 1:1 + stop - start] = rows.indices[start:stop][order]
        return out


def as_spheres(mask_or_spheres: Any, radius: float) -> "VoxelSpheres | GraphSpheres":
    """Spheres as given (anything with ``columns``), or the voxel spheres of a 3D mask image."""
    return mask_or_spheres if hasattr(mask_or_spheres, "columns") else VoxelSpheres(mask_or_spheres, radius)
