"""BOLD as samples x locations: masked, cleaned within each run, held once in memory.

``load_bold`` reads one run: linearly detrended, slow drifts removed (a cosine basis up
to ``high_pass`` Hz, as nilearn's first-level models do; the same basis is removed from
the designs, :func:`..fmri.design.remove_drifts`), confounds regressed out, z-scored.
``load_task`` reads every run of a task into one float32 array, run after run.
Confounds come from fMRIPrep's ``desc-confounds_timeseries.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nilearn import signal

from ..derivatives import parse_entities
from ..errors import UserError
from ..models.standardize import zscore
from .design import remove_drifts
from ..locations import Locations
from ..surface_io import series_length
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


def load_bold(bold_file: Path, brain: Locations, tr: float, confounds: np.ndarray | None = None,
              high_pass: float = 0.0) -> np.ndarray:
    """BOLD at the brain's locations (time x locations), detrended, drifts below ``high_pass`` Hz and confounds
    regressed out, z-scored within the run; NaNs inside the mask are an error."""
    data = brain.read(bold_file)
    if not np.all(np.isfinite(data)):
        n_bad = int((~np.isfinite(data)).any(axis=0).sum())
        raise UserError(
            f"the BOLD data holds NaN or infinite values in {n_bad} of the {brain.unit} inside the brain mask",
            path=bold_file,
            fix="Re-run preprocessing, or give a brain mask that excludes those voxels (--mask FILE)",
        )
    if confounds is not None and len(confounds) != len(data):
        raise UserError(f"the confounds have {len(confounds)} rows but the BOLD has {len(data)} volumes", path=bold_file,
                        fix="Use the confounds file that belongs to this run")
    return signal.clean(data, detrend=True, standardize="zscore_sample", filter="cosine" if high_pass else False,
                        high_pass=high_pass or None, t_r=tr, confounds=confounds).astype(np.float32)


@dataclass
class TaskData:
    """Everything one task's models share: mask, cleaned BOLD per run, TRs, confound designs."""

    brain: Locations
    Y_runs: list[np.ndarray]
    trs: list[float]
    confound_runs: list[np.ndarray] | None
    bold_files: list[Path]
    Y: np.ndarray  # every run's BOLD, one after another (Y_runs are views of it: the data is held once)
    high_pass: float = 0.0


def load_task(bold_files: list[Path], trs: list[float], mask_files: list[Path | None],
              confound_files: list[Path | None], confounds: tuple[str, ...] = (), regress: bool = True,
              high_pass: float = 0.0, mask: str | Path | None = None) -> TaskData:
    """Every run of a task in the brain mask (``mask``: ``--mask``, else the derivatives' or a computed one), drifts
    below ``high_pass`` Hz removed; confounds regressed out of each run, or (``regress=False``) kept, drift-free and
    z-scored, as ``confound_runs`` for a model to fit as their own band."""
    brain = brain_mask(bold_files, mask_files, mask)
    columns = tuple(confounds)
    confounds = [read_confounds(c, columns, b) for c, b in zip(confound_files, bold_files)]
    lengths = [series_length(b) for b in bold_files]
    Y = np.empty((sum(lengths), brain.size), dtype=np.float32)
    Y_runs = np.split(Y, np.cumsum(lengths)[:-1])
    for y, b, tr, c in zip(Y_runs, bold_files, trs, confounds):  # run by run into one array: no second copy
        y[:] = load_bold(b, brain, tr, c if regress else None, high_pass)
    confound_runs = None
    if columns and not regress:
        confound_runs = [zscore(remove_drifts(c, tr, high_pass)).astype(np.float32) for c, tr in zip(confounds, trs)]
    return TaskData(brain, Y_runs, list(trs), confound_runs, list(bold_files), Y, high_pass)


def run_entities(bold_file: Path) -> dict[str, str]:
    """The session, acquisition and run entities of a BOLD file name (raw or fMRIPrep)."""
    found = parse_entities(bold_file)
    return {name: found.get(name, "") for name in ("session", "acquisition", "run")}

