"""Which locations are analysed: brain masks, region images and atlas labels, all on the BOLD's grid.

Every image given by the user (a mask, a region, an atlas) is read here and resampled
to the brain mask's grid (nearest neighbour), so that every analysis selects the same
voxels from the same file in the same way.

The brain mask is, in this order: the ``--mask`` image; the intersection of the
derivatives' ``desc-brain`` masks; or an EPI mask computed from the runs (nilearn's
``compute_multi_epi_mask``), kept to the voxels whose time series are finite and not
constant. A computed mask that comes out empty or implausibly small (under
:data:`MIN_FRACTION` of those voxels, or fewer than :data:`MIN_VOXELS`), as it does on
data already masked, resampled to a coarse grid or cut to a few voxels, is replaced by
every voxel whose time series is finite and not constant, and the log and the sidecars
say so.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking

from ..errors import UserError

log = logging.getLogger("bids_encoding")
MIN_FRACTION = 0.05  # a computed EPI mask smaller than this share of the usable voxels is implausible
MIN_VOXELS = 10


@dataclass(frozen=True)
class BrainMask:
    """The locations analysed (a 3D mask image on the BOLD's grid) and how they were chosen."""

    img: nib.Nifti1Image
    method: str
    sources: list[str] = field(default_factory=list)

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(np.asarray(self.img.dataobj)))

    def describe(self) -> dict:
        """For sidecars: how the mask was made and its size."""
        return {"Method": self.method, "NVoxels": self.n_voxels, "Sources": self.sources}

    def __str__(self) -> str:
        return f"the brain mask ({self.method}; {self.n_voxels} voxels)"


def usable_voxels(bold_files: list[Path]) -> np.ndarray:
    """Voxels whose time series is finite and not constant in every run (one run in memory at a time)."""
    usable = None
    for bold in bold_files:
        data = np.asanyarray(nib.load(str(bold)).dataobj)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN voxels: not usable, as the comparison says
            ok = np.isfinite(data).all(axis=3) & (np.nanmax(data, axis=3) > np.nanmin(data, axis=3))
        usable = ok if usable is None else usable & ok
        del data
    return usable


def _on_grid(img: nib.Nifti1Image, reference: str | Path) -> nib.Nifti1Image:
    """A mask image resampled to a BOLD run's grid (nearest neighbour), as uint8 0/1."""
    from nilearn.image import resample_to_img

    target = nib.load(str(reference))
    if img.shape[:3] != target.shape[:3] or not np.allclose(img.affine, target.affine):
        img = resample_to_img(img, target.slicer[..., 0] if target.ndim == 4 else target, interpolation="nearest",
                              force_resample=True, copy_header=True)
    data = np.asarray(img.dataobj)
    return nib.Nifti1Image(((data != 0) & np.isfinite(data)).astype(np.uint8), img.affine)


def read_3d(path: str | Path, what: str, fix: str) -> nib.Nifti1Image:
    """A user's 3D image (mask, region, atlas), or one clear error naming it."""
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise UserError(f"the {what} cannot be read as NIfTI ({exc})", path=path, fix=fix) from None
    if len(img.shape) != 3:
        raise UserError(f"the {what} has shape {img.shape}, not 3D", path=path, fix=fix)
    return img


def _given_mask(path: str | Path, bold_files: list[Path]) -> BrainMask:
    fix = "Give a 3D mask image (non-zero inside) that covers the BOLD data, in the data's space"
    img = read_3d(path, "mask", fix)
    mask = BrainMask(_on_grid(img, bold_files[0]), "given with --mask", [str(path)])
    if not mask.n_voxels:
        raise UserError("the mask holds no voxel of the BOLD data's grid", path=path, fix=fix)
    return mask


def _computed_mask(bold_files: list[Path]) -> BrainMask:
    usable = usable_voxels(bold_files)
    reference = nib.load(str(bold_files[0]))
    sources = [str(b) for b in bold_files]
    if not usable.any():
        raise UserError("no voxel of the BOLD data has a finite, non-constant time series", path=bold_files[0],
                        fix="Check the BOLD files (every voxel is constant or NaN), or give the brain with --mask")
    try:
        computed = np.asarray(masking.compute_multi_epi_mask(sources).dataobj) > 0
    except (ValueError, IndexError):  # nilearn's morphology fails on images a few voxels thick
        computed = np.zeros_like(usable)
    kept = computed & usable
    if kept.sum() >= max(MIN_VOXELS, MIN_FRACTION * usable.sum()):
        return BrainMask(nib.Nifti1Image(kept.astype(np.uint8), reference.affine),
                         "EPI mask computed from the runs (nilearn compute_multi_epi_mask), voxels with a finite, "
                         "non-constant time series", sources)
    log.warning("the EPI mask computed from the BOLD holds %d of the %d voxels with a finite, non-constant time "
                "series (the data may be masked or resampled already): using all %d of them instead (give --mask "
                "to choose)", kept.sum(), usable.sum(), usable.sum())
    return BrainMask(nib.Nifti1Image(usable.astype(np.uint8), reference.affine),
                     f"every voxel with a finite, non-constant time series (the EPI mask computed from the runs held "
                     f"{int(kept.sum())} of them, implausibly few)", sources)

def brain_mask(bold_files: list[Path], mask_files: list[Path | None], given: str | Path | None = None) -> BrainMask:
    """The brain mask of a task's runs: ``given`` (``--mask``), the derivatives' masks' intersection, or computed."""
    if given:
        return _given_mask(given, bold_files)
    found = [str(m) for m in mask_files if m]
    if found:
        img = masking.intersect_masks(found, threshold=1.0, connected=False) if len(found) > 1 else nib.load(found[0])
        return BrainMask(img, "the derivatives' desc-brain masks" + (" (intersection)" if len(found) > 1 else ""), found)
    return _computed_mask(bold_files)


def image_in_mask(path: str | Path, mask: nib.Nifti1Image, what: str, fix: str) -> np.ndarray:
    """A 3D image's values at the mask's voxels, resampled to the mask's grid (nearest neighbour)."""
    from nilearn.image import resample_to_img

    img = read_3d(path, what, fix)
    data = np.asarray(resample_to_img(img, mask, interpolation="nearest", force_resample=True,
                                      copy_header=True).dataobj)
    return data[np.asarray(mask.dataobj) > 0]


def atlas_labels(atlas: str, mask: nib.Nifti1Image) -> tuple[np.ndarray, dict[int, str]]:
    """Atlas labels of the mask's voxels (nearest-neighbour resampled), and names from a TSV beside it."""
    path = Path(atlas)
    labels = image_in_mask(path, mask, "atlas", "Give a 3D label image").astype(int)
    names: dict[int, str] = {}
    table = path.with_name(path.name.split(".")[0] + ".tsv")
    if table.exists():
        frame = pd.read_csv(table, sep="\t")
        if {"index", "name"} <= set(frame.columns):
            names = dict(zip(frame["index"].astype(int), frame["name"].astype(str)))
    return labels, names


def roi_mask(roi: str | Path, brain: BrainMask) -> np.ndarray:
    """The brain mask's voxels inside a region image (resampled to the mask's grid, nearest neighbour)."""
    data = image_in_mask(roi, brain.img, "region mask", "Give a 3D mask image in the data's space")
    selected = (data != 0) & np.isfinite(data)
    if not selected.any():
        raise UserError(f"the region mask holds no voxel of {brain}", path=roi,
                        fix="Give a region in the same space as the BOLD data, or a larger brain mask with --mask")
    return selected

