"""BOLD as samples x locations: masked, cleaned within each run, held once in memory.

``load_bold`` reads one run (detrended, confounds regressed out, z-scored);
``load_task`` reads every run of a task into one float32 array, run after run.
Confounds come from fMRIPrep's ``desc-confounds_timeseries.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking, signal

from ..derivatives import parse_entities
from ..errors import UserError
from ..models.standardize import zscore
from .masks import brain_mask


def read_confounds(path: Path | None, columns: tuple[str, ...], bold_file: Path) -> np.ndarray | None:
    """The named columns of an fMRIPrep confounds TSV (n/a in the first rows, as fMRIPrep writes, become 0)."""
    if not columns:
        return None
    if path is None:
        raise UserError("--confounds was given but this run has no desc-confounds_timeseries.tsv", path=bold_file,
                        fix="Give preprocessed data with confounds (--derivatives), or drop --confounds")
    table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"the confounds file has no column {', '.join(missing)} (it has e.g. {', '.join(table.columns[:8])})",
                        path=path, fix="Name columns that exist in the confounds file")
    return table[list(columns)].fillna(0.0).to_numpy(dtype=np.float64)


def load_bold(bold_file: Path, mask: nib.Nifti1Image, tr: float, confounds: np.ndarray | None = None) -> np.ndarray:
    """Masked BOLD (time x voxels), detrended, confounds regressed out, z-scored within the run; NaNs are an error."""
    data = masking.apply_mask(str(bold_file), mask, dtype=np.float32, ensure_finite=False)
    if not np.all(np.isfinite(data)):
        n_bad = int((~np.isfinite(data)).any(axis=0).sum())
        raise UserError(
            f"the BOLD data holds NaN or infinite values in {n_bad} voxel(s) inside the brain mask",
            path=bold_file,
            fix="Re-run preprocessing, or give a brain mask (--derivatives with a desc-brain_mask) that excludes those voxels",
        )
    if confounds is not None and len(confounds) != len(data):
        raise UserError(f"the confounds have {len(confounds)} rows but the BOLD has {len(data)} volumes", path=bold_file,
                        fix="Use the confounds file that belongs to this run")
    return signal.clean(data, detrend=True, standardize="zscore_sample", filter=False, t_r=tr,
                        confounds=confounds).astype(np.float32)


@dataclass
class TaskData:
    """Everything one task's models share: mask, cleaned BOLD per run, TRs, confound designs."""

    mask: nib.Nifti1Image
    Y_runs: list[np.ndarray]
    trs: list[float]
    confound_runs: list[np.ndarray] | None
    bold_files: list[Path]
    mask_sources: list[str]
    Y: np.ndarray  # every run's BOLD, one after another (Y_runs are views of it: the data is held once)


def load_task(bold_files: list[Path], trs: list[float], mask_files: list[Path | None],
              confound_files: list[Path | None], confounds: tuple[str, ...] = (), regress: bool = True) -> TaskData:
    """Every run of a task in the brain mask; confounds regressed out of each run, or (``regress=False``)
    kept z-scored as ``confound_runs`` for a model to fit as their own band."""
    mask = brain_mask(bold_files, mask_files)
    columns = tuple(confounds)
    confounds = [read_confounds(c, columns, b) for c, b in zip(confound_files, bold_files)]
    lengths = [nib.load(str(b)).shape[3] for b in bold_files]  # 4D, as bids_io checked
    Y = np.empty((sum(lengths), int(np.count_nonzero(np.asarray(mask.dataobj)))), dtype=np.float32)
    Y_runs = np.split(Y, np.cumsum(lengths)[:-1])
    for y, b, tr, c in zip(Y_runs, bold_files, trs, confounds):  # run by run into one array: no second copy
        y[:] = load_bold(b, mask, tr, c if regress else None)
    confound_runs = None
    if columns and not regress:
        confound_runs = [zscore(c).astype(np.float32) for c in confounds]
    return TaskData(mask, Y_runs, list(trs), confound_runs, list(bold_files),
                    [str(m) for m in mask_files if m] or [str(b) for b in bold_files], Y)


def run_entities(bold_file: Path) -> dict[str, str]:
    """The session, acquisition and run entities of a BOLD file name (raw or fMRIPrep)."""
    found = parse_entities(bold_file)
    return {name: found.get(name, "") for name in ("session", "acquisition", "run")}

