"""fMRI runs of one subject: BOLD (raw or preprocessed), events, stimuli, mask, TR.

Every check that needs only headers and small text files happens here, before
any workflow starts, so that a bad dataset fails in a second with a clear message.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from bids import BIDSLayout

from ..errors import UserError
from ..surface_io import check_series, file_kind
from ..stimuli import stimuli_from_events
from .runs import Run

log = logging.getLogger("bids_encoding")
NIFTI = [".nii", ".nii.gz"]
SURFACE_SERIES = [".func.gii", ".dtseries.nii"]  # fMRIPrep's surface BOLD: per-hemisphere GIFTI, CIFTI-2 grayordinates
TR_TOLERANCE = 1e-3
MIN_VOLUMES = 3


@dataclass(frozen=True, kw_only=True)
class BoldRun(Run):
    """One BOLD run and everything the models need to know about it."""

    bold: Path
    tr: float
    n_volumes: int
    acquisition: str | None = None
    space: str | None = None  # of the preprocessed BOLD (None: the raw BOLD's own, or none named)
    res: str | None = None
    den: str | None = None
    mask: Path | None = None
    confounds: Path | None = None
    raw_bold: Path | None = None
    grid: tuple = field(default=(), compare=False)  # the image's voxel shape and affine (rounded): runs modelled
    # together must share it


def check_same_grid(runs: list[BoldRun]) -> None:
    """Runs modelled together (one task, acquisition and preprocessed version) hold their voxels on one grid, or
    one brain mask cannot serve them all: the error names a run off the grid most of them share."""
    grids = [run.grid for run in runs]
    usual = max(grids, key=grids.count)  # ties: the first run's
    reference = runs[grids.index(usual)]
    for run in runs:
        if run.grid != usual:
            shape, usual_shape = (" x ".join(map(str, grid[0])) + f" {grid[2]}" for grid in (run.grid, usual))
            how = (f"{shape}, where {reference.bold.name} has {usual_shape}" if shape != usual_shape
                   else f"the same {shape} as {reference.bold.name} but another position (affine) or space")
            raise UserError(f"the runs of task {run.task} are not on one grid: this one has {how}",
                            path=run.bold, fix="Resample the runs to one grid (fMRIPrep's outputs in one output space "
                                               "are), or leave this run out with --run or a --bids-filter-file")


def _one(files: list, what: str, near: Path) -> Path | None:
    if not files:
        return None
    if len(files) > 1:
        names = ", ".join(Path(f.path).name for f in files[:4])
        raise UserError(f"found {len(files)} {what} files for one run ({names})", path=near.parent,
                        fix="Narrow the choice with --space or a --bids-filter-file")
    return Path(files[0].path)


VARIANTS = ("space", "res", "den")  # the entities that tell one preprocessed version of a run from another
RUN_ENTITIES = ("session", "task", "acquisition", "run", "direction", "echo")


def _matching(files: list, ents: dict) -> list:
    """Derivative files that belong to the run: each run entity a file carries equals the run's (a file without,
    e.g. a mask without task- or run-, applies to every run), and its space, res and den are the run's."""
    keep = []
    for f in files:
        found = f.get_entities()
        if all(str(found.get(k)) == str(ents.get(k)) for k in VARIANTS if found.get(k) is not None or k in ents) \
                and all(found.get(k) is None or str(found[k]) == str(v) for k, v in ents.items() if k in RUN_ENTITIES):
            keep.append(f)
    return keep


def _variant(f) -> dict:
    return {k: str(f.get_entities()[k]) for k in VARIANTS if f.get_entities().get(k) is not None}


def _label(variant: dict) -> str:
    return "_".join(f"{k}-{v}" for k, v in variant.items()) or "no space entity"


def _of_run(files: list, ents: dict) -> list:
    return [f for f in files if all(str(f.get_entities().get(k)) == str(v) for k, v in ents.items() if k in RUN_ENTITIES)]


def _stands_for_hemispheres(path: Path) -> bool:
    """A surface series file that names its run: a CIFTI file, a hemi-L GIFTI, or a hemi-R one whose hemi-L partner
    is missing (so that the error names what is missing)."""
    if "_hemi-" not in path.name:
        return True
    return "_hemi-L_" in path.name or not path.with_name(path.name.replace("_hemi-R_", "_hemi-L_")).exists()


def _preprocessed_bold(layout: BIDSLayout, ents: dict, space: str | None, raw_path: Path,
                       variant: dict | None = None) -> tuple[Path, dict]:
    """The run's preprocessed BOLD in the derivatives and its space/res/den: the one in ``space``, or the only one
    when no space is asked for; the raw BOLD (in its own space) when the derivatives hold none for the run.

    Volumes are fMRIPrep's ``desc-preproc`` NIfTI files; surfaces its ``.func.gii`` (the ``hemi-L`` file stands
    for both hemispheres) and ``.dtseries.nii`` files, which have no ``desc``."""
    volumes = _of_run(layout.get(scope="derivatives", subject=ents["subject"], suffix="bold", desc="preproc",
                                 extension=NIFTI), ents)
    surfaces = [f for f in _of_run(layout.get(scope="derivatives", subject=ents["subject"], suffix="bold",
                                              extension=SURFACE_SERIES), ents)
                if f.get_entities().get("desc") in (None, "preproc") and _stands_for_hemispheres(Path(f.path))]
    candidates = volumes + surfaces
    if not candidates:
        log.info("no desc-preproc BOLD for %s in the derivatives: the raw BOLD is used, with the derivatives' masks "
                 "and confounds of that run where they exist", raw_path.name)
        return raw_path, {}
    found = sorted({_label(_variant(f)) for f in candidates})
    variant = {**(variant or {}), **({"space": space} if space is not None else {})}
    candidates = [f for f in candidates if all(_variant(f).get(k) == v for k, v in variant.items() if k != "space")]
    if space is not None:
        candidates = [f for f in candidates if _variant(f).get("space") == space]
        if not candidates:
            raise UserError(f"no desc-preproc BOLD in space '{space}' for this run in the derivatives (they hold: "
                            f"{'; '.join(found)})", path=raw_path,
                            fix="Give one of those with --space (or leave --space out when there is one), or run "
                                "fMRIPrep with --output-spaces for that space")
    if len({_label(_variant(f)) for f in candidates}) > 1:
        raise UserError(f"the derivatives hold this run's preprocessed BOLD in several versions ({'; '.join(found)})",
                        path=raw_path, fix="Choose one with --space, or with a --bids-filter-file such as "
                                           '{"bold": {"res": "2"}}')
    chosen = _one(candidates, "preprocessed BOLD", raw_path)
    return chosen, _variant(candidates[0])


def _tr(layout: BIDSLayout, bold: Path, raw_bold: Path) -> float:
    """RepetitionTime from the (preprocessed, else raw) BOLD's sidecars: a positive number of seconds."""
    metadata = layout.get_metadata(str(bold)) or {}
    if "RepetitionTime" not in metadata:
        metadata = layout.get_metadata(str(raw_bold)) or {}
    tr = metadata.get("RepetitionTime")
    if tr is None:
        raise UserError("the sidecar JSON gives no RepetitionTime", path=bold,
                        fix="Add RepetitionTime (seconds) to the run's _bold.json or a task-level _bold.json")
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not math.isfinite(tr) or tr <= 0:
        raise UserError(f"the sidecar JSON gives RepetitionTime {tr!r}, not a positive number of seconds", path=bold,
                        fix="Write RepetitionTime as a number in seconds, e.g. \"RepetitionTime\": 2.0, in the run's _bold.json")
    return float(tr)


def _check_surface_header(bold: Path, tr: float, entities: dict) -> tuple[int, tuple]:
    """A surface run's number of volumes and its locations, after checking that both hemispheres (or the CIFTI's
    brain models) hold one series with the sidecar's TR."""
    series = check_series(bold, entities)
    n_volumes = series.n_volumes
    if n_volumes < MIN_VOLUMES:
        raise UserError(f"the BOLD run has {n_volumes} volume(s); a model of a time series needs at least "
                        f"{MIN_VOLUMES}", path=bold, fix="Leave this run out (--run, or a --bids-filter-file), or give "
                                                         "the complete run")
    if series.kind == "cifti":
        time = series.time_axis
        step = time.step / 1000.0 if time.unit == "MSEC" else time.step
        if time.unit in ("SECOND", "MSEC") and step > 0 and abs(step - tr) > TR_TOLERANCE:
            raise UserError(f"the sidecar's RepetitionTime ({tr} s) does not match the CIFTI series axis' step "
                            f"({step} s)", path=bold,
                            fix="Correct RepetitionTime in the JSON sidecar or the CIFTI file, whichever is wrong")
    key = (series.kind, series.space, series.den, series.vertices)
    return n_volumes, ((series.size,), key, "vertices" if series.kind == "gifti" else "grayordinates")


def _check_header(bold: Path, tr: float, entities: dict | None = None) -> tuple[int, tuple]:
    """The run's number of volumes and its grid, after checking that it is a 4D series (or a surface series) with
    the sidecar's TR."""
    if file_kind(bold) != "volume":
        return _check_surface_header(bold, tr, entities or {})
    try:
        img = nib.load(str(bold))
    except Exception as exc:
        raise UserError(f"the file cannot be read as NIfTI ({exc})", path=bold, fix="Replace the file with a valid NIfTI image") from None
    if img.ndim != 4:
        raise UserError(f"the BOLD image has {img.ndim} dimensions, not 4", path=bold,
                        fix="Give a 4D time series (x, y, z, time)")
    if img.shape[3] < MIN_VOLUMES:
        raise UserError(f"the BOLD run has {img.shape[3]} volume(s); a model of a time series needs at least "
                        f"{MIN_VOLUMES}", path=bold, fix="Leave this run out (--run, or a --bids-filter-file), or give "
                                                         "the complete run")
    zooms = img.header.get_zooms()
    header_tr = float(zooms[3])
    units = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    if units == "msec":
        header_tr /= 1000.0
    if header_tr > 0 and abs(header_tr - tr) > TR_TOLERANCE:
        raise UserError(
            f"the sidecar's RepetitionTime ({tr} s) does not match the NIfTI header's time step ({header_tr} s)",
            path=bold,
            fix="Correct RepetitionTime in the JSON sidecar or the header's pixdim[4], whichever is wrong",
        )
    return int(img.shape[3]), (tuple(img.shape[:3]), tuple(np.round(img.affine, 4).ravel()), "voxels")


def _stimuli_dir(layout: BIDSLayout) -> Path | None:
    path = Path(layout.root) / "stimuli"
    return path if path.is_dir() else None


def collect_bold_runs(layout: BIDSLayout, subject: str, *, tasks=(), sessions=(), runs=(), space: str | None = None,
                      den: str | None = None, use_derivatives: bool = False,
                      filters: dict | None = None) -> list[BoldRun]:
    """Find and check every BOLD run of ``subject`` that matches the selection."""
    if subject not in layout.get_subjects():
        raise UserError(f"subject '{subject}' is not in the dataset (subjects: {', '.join(layout.get_subjects()) or 'none'})",
                        path=layout.root, fix="Check --participant-label")
    query: dict[str, Any] = dict(subject=subject, datatype="func", suffix="bold", extension=NIFTI)
    for key, values in (("task", tasks), ("session", sessions), ("run", runs)):
        if values:
            query[key] = list(values)
    wanted = dict((filters or {}).get("bold", {}))
    variant = {k: str(wanted.pop(k)) for k in VARIANTS if k in wanted}  # chooses among preprocessed versions
    if den:
        variant["den"] = den
    query.update(wanted)
    raw_files = layout.get(scope="raw", **query)
    if not raw_files:
        wanted = ", ".join(f"{k}={v}" for k, v in query.items() if k in ("task", "session", "run"))
        raise UserError(
            f"no BOLD runs of sub-{subject} match the selection ({wanted or 'all tasks'}; tasks in the dataset: "
            f"{', '.join(layout.get_tasks()) or 'none'})",
            path=layout.root,
            fix="Check --task, --session and --run",
        )
    stimuli_dir = _stimuli_dir(layout)
    found = []
    for raw in raw_files:
        raw_path = Path(raw.path)
        ents = {k: v for k, v in raw.get_entities().items() if k in ("subject", "session", "task", "acquisition", "run", "direction", "echo")}
        bold, mask, confounds, derived = raw_path, None, None, {}
        if use_derivatives:
            bold, derived = _preprocessed_bold(layout, ents, space, raw_path, variant)
            mask = _one(_matching(layout.get(scope="derivatives", subject=subject, suffix="mask", desc="brain",
                                             extension=NIFTI), {**ents, **derived}), "brain mask", raw_path)
            confounds = _one(_matching(layout.get(scope="derivatives", subject=subject, suffix="timeseries",
                                                  desc="confounds", extension=".tsv"), ents), "confounds", raw_path)
        events = _one([f for f in layout.get(scope="raw", suffix="events", extension=".tsv", **ents)
                       if f.entities.get("datatype") in (None, "func")], "events", raw_path)  # not an EEG run's
        if events is None:
            raise UserError("this run has no events.tsv", path=raw_path,
                            fix=f"Add {raw_path.name.split('_bold')[0]}_events.tsv (or a task-level events file) with onset, duration and stimulus columns")
        modalities = tuple(stimuli_from_events(events, stimuli_dir))
        tr = _tr(layout, bold, raw_path)
        n_volumes, grid = _check_header(bold, tr, derived)
        found.append(BoldRun(
            subject=subject, task=ents["task"], session=ents.get("session"), run=str(ents["run"]) if "run" in ents else None,
            bold=bold, events=events, tr=tr, n_volumes=n_volumes, space=derived.get("space"), res=derived.get("res"),
            den=derived.get("den"), acquisition=ents.get("acquisition"), mask=mask, confounds=confounds,
            raw_bold=raw_path, modalities=modalities, entities=ents, grid=grid,
        ))
    return found
