"""Which locations are analysed: brain masks, region images and atlas labels, all in the BOLD's space.

The result is a :class:`~bids_encoding.locations.Locations` (voxels, or the vertices of both
hemispheres, or CIFTI grayordinates). Every image given by the user (a mask, a region, an atlas)
is read here: volumes are resampled to the BOLD's grid (nearest neighbour); surface images must
lie on the BOLD's vertices. So every analysis selects the same locations in the same way.

The brain mask is, in this order: the ``--mask`` image; the intersection of the
derivatives' ``desc-brain`` masks; or an EPI mask computed from the runs (nilearn's
``compute_multi_epi_mask``), kept to the voxels whose time series are finite and not
constant. On surfaces it is the vertices (grayordinates) whose time series are finite and
not constant in every run, which leaves out a medial wall written as zeros. A computed mask
that comes out empty or implausibly small (under
:data:`MIN_FRACTION` of those voxels, or fewer than :data:`MIN_VOXELS`), as it does on
data already masked, resampled to a coarse grid or cut to a few voxels, is replaced by
every voxel whose time series is finite and not constant, and the log and the sidecars
say so.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking

from ..derivatives import parse_entities
from ..errors import UserError
from ..locations import Layout, Locations, VolumeLayout, label_names, series_layout

log = logging.getLogger("bids_encoding")
MIN_FRACTION = 0.05  # a computed EPI mask smaller than this share of the usable voxels is implausible
MIN_VOXELS = 10


def usable_locations(bold_files: list[Path], layout: Layout) -> np.ndarray:
    """Locations whose time series is finite and not constant in every run (one run in memory at a time), as a
    3D array on a volume's grid, else over the layout's locations."""
    usable = None
    for bold in bold_files:
        if isinstance(layout, VolumeLayout):
            data, axis = np.asanyarray(nib.load(str(bold)).dataobj), 3
        else:
            data, axis = layout.read_series(bold, np.ones(layout.size, bool)), 0
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN voxels: not usable, as the comparison says
            ok = np.isfinite(data).all(axis=axis) & (np.nanmax(data, axis=axis) > np.nanmin(data, axis=axis))
        usable = ok if usable is None else usable & ok
        del data
    return usable


def task_layout(bold_files: list[Path]) -> Layout:
    """The layout of a task's runs (the first run's: the runs were checked to share it)."""
    layout, _ = series_layout(bold_files[0], parse_entities(bold_files[0]))
    return layout


def _on_grid(img: nib.Nifti1Image, reference: str | Path) -> nib.Nifti1Image:
    """A mask image resampled to a BOLD run's grid (nearest neighbour), as uint8 0/1."""
    from nilearn.image import resample_to_img

    target = nib.load(str(reference))
    if img.shape[:3] != target.shape[:3] or not np.allclose(img.affine, target.affine):
        img = resample_to_img(img, target.slicer[..., 0] if target.ndim == 4 else target, interpolation="nearest",
                              force_resample=True, copy_header=True)
    data = np.asarray(img.dataobj)
    return nib.Nifti1Image(((data != 0) & np.isfinite(data)).astype(np.uint8), img.affine)


def _given_mask(path: str | Path, layout: Layout) -> Locations:
    fix = ("Give a 3D mask image (non-zero inside) that covers the BOLD data, in the data's space"
           if isinstance(layout, VolumeLayout) else f"Give a mask in the BOLD's space (non-zero inside): "
           f"{'a dense CIFTI-2 .dscalar.nii' if layout.kind == 'cifti' else 'hemi-L and hemi-R GIFTI files'}")
    values = Locations(layout, np.ones(layout.size, bool)).values_of(path, "mask", fix)
    mask = Locations(layout, (values != 0) & np.isfinite(values), "given with --mask", [str(path)])
    if not mask.size:
        raise UserError(f"the mask holds none of the BOLD data's {layout.unit}", path=path, fix=fix)
    return mask


def _computed_mask(bold_files: list[Path], layout: Layout) -> Locations:
    usable = usable_locations(bold_files, layout)
    sources = [str(b) for b in bold_files]
    if not usable.any():
        raise UserError(f"no {layout.one} of the BOLD data has a finite, non-constant time series",
                        path=bold_files[0],
                        fix="Check the BOLD files (every voxel is constant or NaN), or give the brain with --mask")
    if not isinstance(layout, VolumeLayout):
        return Locations(layout, usable.ravel(), f"every {layout.one} with a finite, non-constant time series",
                         sources)
    try:
        computed = np.asarray(masking.compute_multi_epi_mask(sources).dataobj) > 0
    except (ValueError, IndexError):  # nilearn's morphology fails on images a few voxels thick
        computed = np.zeros_like(usable)
    kept = computed & usable
    if kept.sum() >= max(MIN_VOXELS, MIN_FRACTION * usable.sum()):
        return Locations(layout, kept.ravel(), "EPI mask computed from the runs (nilearn compute_multi_epi_mask), "
                         "voxels with a finite, non-constant time series", sources)
    log.warning("the EPI mask computed from the BOLD holds %d of the %d voxels with a finite, non-constant time "
                "series (the data may be masked or resampled already): using all %d of them instead (give --mask "
                "to choose)", kept.sum(), usable.sum(), usable.sum())
    return Locations(layout, usable.ravel(), f"every voxel with a finite, non-constant time series (the EPI mask "
                     f"computed from the runs held {int(kept.sum())} of them, implausibly few)", sources)


def brain_mask(bold_files: list[Path], mask_files: list[Path | None], given: str | Path | None = None) -> Locations:
    """The locations of a task's runs: ``given`` (``--mask``), the derivatives' masks' intersection (volumes), or
    computed."""
    layout = task_layout(bold_files)
    if given:
        return _given_mask(given, layout)
    found = [str(m) for m in mask_files if m]
    if found and isinstance(layout, VolumeLayout):
        img = masking.intersect_masks(found, threshold=1.0, connected=False) if len(found) > 1 else nib.load(found[0])
        img = _on_grid(img, bold_files[0])
        return Locations(layout, np.asarray(img.dataobj).ravel() > 0,
                         "the derivatives' desc-brain masks" + (" (intersection)" if len(found) > 1 else ""), found)
    return _computed_mask(bold_files, layout)


def atlas_labels(atlas: str, brain: Locations) -> tuple[np.ndarray, dict[int, str]]:
    """Atlas labels at the brain's locations (volumes: nearest-neighbour resampled), and names from the file's own
    label table (GIFTI, CIFTI) or a TSV beside it."""
    path = Path(atlas)
    labels = brain.values_of(path, "atlas", "Give a label image in the data's space (volumes: a 3D image; surfaces: "
                                            "hemi-L/hemi-R .label.gii, or a CIFTI .dlabel.nii)").astype(int)
    names: dict[int, str] = {k: v for k, v in label_names(path).items() if k}
    table = path.with_name(path.name.split(".")[0] + ".tsv")
    if table.exists():
        frame = pd.read_csv(table, sep="\t")
        if {"index", "name"} <= set(frame.columns):
            names = dict(zip(frame["index"].astype(int), frame["name"].astype(str)))
    return labels, names


def roi_mask(roi: str | Path, brain: Locations) -> np.ndarray:
    """The brain mask's locations inside a region image (volumes: resampled to the mask's grid, nearest
    neighbour)."""
    data = brain.values_of(roi, "region mask", "Give a mask image in the data's space (volumes: a 3D image; "
                                               "surfaces: hemi-L/hemi-R GIFTI files, or a CIFTI .dscalar.nii)")
    selected = (data != 0) & np.isfinite(data)
    if not selected.any():
        raise UserError(f"the region mask holds none of the {brain.unit} of {brain}", path=roi,
                        fix="Give a region in the same space as the BOLD data, or a larger brain mask with --mask")
    return selected

