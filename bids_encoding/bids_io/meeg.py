"""EEG and MEG runs: found with pybids, read with mne-bids (BrainVision, EDF, BDF, EEGLAB, FIF).

mne-bids' ``read_raw_bids`` applies the run's sidecars: channel types and ``bad``
status from ``channels.tsv``, the sampling rate, the line frequency. Events are read
from ``events.tsv`` by :func:`bids_encoding.stimuli.read_events` like fMRI events, so
every column (``trial_type``, ``word``, ``stim_file``, ...) is available, in seconds
from the recording's first sample.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bids import BIDSLayout

from ..errors import UserError
from ..stimuli import stimuli_from_events
from .runs import Run

MEEG_EXTENSIONS = [".vhdr", ".edf", ".bdf", ".set", ".fif"]
DATATYPES = ("eeg", "meg")


@dataclass(frozen=True, kw_only=True)
class MEEGRun(Run):
    """One EEG or MEG recording and its events."""

    recording: Path
    datatype: str
    sfreq: float


def datatypes_present(layout: BIDSLayout, subject: str) -> list[str]:
    """Which of func, eeg and meg the subject has recordings of, in that order."""
    found = set(layout.get_datatypes(subject=subject, scope="raw"))
    return [d for d in ("func", *DATATYPES) if d in found]


def collect_meeg_runs(layout: BIDSLayout, subject: str, datatype: str, *, tasks=(), sessions=(), runs=(),
                      filters: dict | None = None) -> list[MEEGRun]:
    """Every EEG (or MEG) recording of ``subject`` matching the selection, with its events; sampling rates
    must agree between the runs of a task."""
    query: dict[str, Any] = dict(subject=subject, datatype=datatype, suffix=datatype, extension=MEEG_EXTENSIONS)
    for key, values in (("task", tasks), ("session", sessions), ("run", runs)):
        if values:
            query[key] = list(values)
    query.update((filters or {}).get(datatype, {}))
    files = [f for f in layout.get(scope="raw", **query) if not f.path.endswith(".fif") or "split-" not in f.path
             or "split-01" in f.path]
    if not files:
        raise UserError(f"no {datatype.upper()} recordings of sub-{subject} match the selection (tasks in the dataset: "
                        f"{', '.join(layout.get_tasks()) or 'none'})", path=layout.root,
                        fix="Check --datatype, --task, --session and --run")
    stimuli_dir = Path(layout.root) / "stimuli"
    found = []
    for file in files:
        path = Path(file.path)
        ents = {k: v for k, v in file.get_entities().items() if k in ("subject", "session", "task", "acquisition", "run")}
        events = layout.get(scope="raw", suffix="events", extension=".tsv", datatype=datatype, **ents)
        if not events:
            raise UserError("this recording has no events.tsv", path=path,
                            fix=f"Add {path.name.rsplit('_', 1)[0]}_events.tsv with onset, duration and trial_type or word")
        sfreq = (layout.get_metadata(str(path)) or {}).get("SamplingFrequency")
        if not sfreq:
            raise UserError("the sidecar JSON gives no SamplingFrequency", path=path,
                            fix=f"Add SamplingFrequency (Hz) to the run's _{datatype}.json")
        events_file = Path(events[0].path)
        found.append(MEEGRun(subject=subject, task=ents["task"], recording=path, events=events_file, datatype=datatype,
                             sfreq=float(sfreq), session=ents.get("session"),
                             run=str(ents["run"]) if "run" in ents else None,
                             modalities=tuple(stimuli_from_events(events_file, stimuli_dir if stimuli_dir.is_dir() else None)),
                             entities=ents))
    check_sampling_rates(found)
    return found


def check_sampling_rates(runs: list[MEEGRun]) -> None:
    """The runs of one task must share a sampling rate: their samples are pooled for one model."""
    for task in {r.task for r in runs}:
        rates = {r.sfreq: r for r in runs if r.task == task}
        if len(rates) > 1:
            first, *others = sorted(rates)
            raise UserError(f"the runs of task '{task}' are sampled at different rates ({', '.join(f'{r:g}' for r in sorted(rates))} Hz): "
                            f"this run at {others[0]:g} Hz, {rates[first].recording.name} at {first:g} Hz",
                            path=rates[others[0]].recording,
                            fix="Resample the recordings to one rate (e.g. mne's raw.resample) or analyse the runs separately with --run")


@contextlib.contextmanager
def _without_lock_files():
    """mne-bids locks each sidecar it opens by creating ``<sidecar>.lock`` beside it, even to read it: a
    write into the input dataset, which fails on a read-only one. Reading needs no lock, so none is taken."""
    from mne_bids import _fileio

    original = _fileio._get_lock_context

    @contextlib.contextmanager
    def no_lock(path, *, timeout=None, lock=True):
        yield contextlib.nullcontext()

    _fileio._get_lock_context = no_lock
    try:
        yield
    finally:
        _fileio._get_lock_context = original


def read_recording(run: MEEGRun):
    """The run as an ``mne.io.Raw`` with its sidecars applied (bad channels from channels.tsv), data loaded."""
    from mne_bids import get_bids_path_from_fname, read_raw_bids

    try:
        with warnings.catch_warnings(), _without_lock_files():  # e.g. "participants.tsv file not found": nothing we read from it
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = read_raw_bids(get_bids_path_from_fname(run.recording), verbose=False)
        raw.load_data(verbose=False)
    except Exception as exc:
        raise UserError(f"the recording cannot be read by mne-bids ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                        path=run.recording,
                        fix="Check that the file and its sidecars (channels.tsv, the _eeg/_meg.json) are complete and valid") from None
    return raw
