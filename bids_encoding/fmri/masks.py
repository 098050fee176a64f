"""Which locations are analysed: brain masks, region images and atlas labels, all on the BOLD's grid.

Every image given by the user (a mask, a region, an atlas) is read here and resampled
to the brain mask's grid (nearest neighbour), so that every analysis selects the same
voxels from the same file in the same way.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking

from ..errors import UserError


def brain_mask(bold_files: list[Path], mask_files: list[Path | None]) -> nib.Nifti1Image:
    """The given masks' intersection, or an EPI mask computed from the runs when none is given."""
    given = [str(m) for m in mask_files if m]
    if given:
        return masking.intersect_masks(given, threshold=1.0, connected=False) if len(given) > 1 else nib.load(given[0])
    return masking.compute_multi_epi_mask([str(b) for b in bold_files])


def image_in_mask(path: str | Path, mask: nib.Nifti1Image, what: str, fix: str) -> np.ndarray:
    """A 3D image's values at the mask's voxels, resampled to the mask's grid (nearest neighbour)."""
    from nilearn.image import resample_to_img

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise UserError(f"the {what} cannot be read as NIfTI ({exc})", path=path, fix=fix) from None
    if len(img.shape) != 3:
        raise UserError(f"the {what} has shape {img.shape}, not 3D", path=path, fix=fix)
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



def roi_mask(roi: str | Path, mask: nib.Nifti1Image) -> np.ndarray:
    """The mask's voxels inside a region image (resampled to the mask's grid, nearest neighbour)."""
    data = image_in_mask(roi, mask, "region mask", "Give a 3D mask image in the data's space")
    selected = (data != 0) & np.isfinite(data)
    if not selected.any():
        raise UserError("the region mask holds no voxel of the brain mask", path=roi,
                        fix="Give a region in the same space as the BOLD data")
    return selected

