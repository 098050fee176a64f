"""Simulated EEG for the built-in example dataset, written as BIDS by mne-bids.

Two EEG tasks, recorded with 32 channels of an EASYCAP M1 cap at 100 Hz (see :data:`EEG`):

* ``faces`` - the face and scrambled-face images, each shown twice per run in random
  order (0.5 s on, 1.0-1.5 s apart), two runs. Every image evokes a P1 (+3 µV, 100 ms,
  occipital, the same for both conditions), and an N170: a negative deflection at
  170 ms over occipito-temporal channels, -8 µV for faces and -2 µV for scrambled
  faces (see :data:`ERP`). Before 130 ms nothing tells the conditions apart;
* ``lpp`` - the story of the fMRI task, with the same word timing; every word onset
  evokes the planted temporal response function :data:`TRF` (a +2 µV Gaussian peak at
  200 ms over central channels), so a TRF of word rate recovers its latency.

Each deflection is ``amplitude * exp(-(t - latency)^2 / (2 width^2))`` in time, times a
spatial weight ``exp(-d^2 / (2 * 40 mm^2))`` of the channel's distance ``d`` to the
deflection's centres (the closest one). Noise: per-channel AR(1) (rho 0.9, sd 6 µV), a
common signal on every channel (removed by the average reference) and slow drifts; the
channel ``BAD_CHANNEL`` of every subject is broken (sd 200 µV) and marked ``bad`` in
``channels.tsv``. Files are BrainVision by default, or EDF, or FIF (then as MEG magnetometers, see
:data:`EEG_FORMATS`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

EEG_SFREQ = 100.0
EEG_CHANNELS = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3", "Cz", "C4", "T8",
                "CP5", "CP1", "CP2", "CP6", "P7", "P3", "Pz", "P4", "P8", "PO7", "PO3", "PO4", "PO8", "O1", "O2",
                "FCz")
MONTAGE = "easycap-M1"
BAD_CHANNEL = "T7"
EEG_FORMATS = {"BrainVision": "eeg", "EDF": "eeg", "FIF": "meg"}
"""File formats and the datatype written in each: FIF is MEG's format (BIDS EEG has none), so a FIF run is the
same simulated signal recorded by magnetometers (``MEG_SCALE`` tesla per volt), without positions."""
MEG_SCALE = 1e-7  # 10 µV -> 1 pT
MEAS_DATE = datetime(2020, 1, 1, tzinfo=timezone.utc)  # fixed, so that a seed gives identical files
NOISE_EEG = {"ar1_sd": 6e-6, "ar1_rho": 0.9, "common_sd": 10e-6, "drift_sd": 5e-6, "bad_sd": 200e-6}


@dataclass(frozen=True)
class Deflection:
    """One planted evoked deflection: Gaussian in time, centred on some channels in space."""

    latency: float  # s after the event
    width: float  # s (sd of the Gaussian)
    centres: tuple[str, ...]


ERP = {
    "P1": (Deflection(0.10, 0.015, ("O1", "O2")), {"face": 3e-6, "scrambled": 3e-6}),
    "N170": (Deflection(0.17, 0.02, ("P8", "PO8", "P7", "PO7")), {"face": -8e-6, "scrambled": -2e-6}),
}
"""The faces task's deflections and their amplitude (V) per trial type."""

TRF = (Deflection(0.20, 0.03, ("Cz", "FCz")), 2e-6)
"""The lpp task's response to every word onset, and its amplitude (V)."""

ENVELOPE_TRF = (Deflection(0.10, 0.02, ("T8", "FC6", "CP6", "FC5", "CP5")), 2e-6)
"""The lpp task's response to the sound track's envelope over temporal channels (the left temporal ``T7`` is the
broken channel), and its amplitude (V per sd of the envelope): the envelope, z-scored, convolved with the
deflection's Gaussian normalised to a peak of 1."""


def montage():
    import mne

    return mne.channels.make_standard_montage(MONTAGE)


def spatial_weights(centres: tuple[str, ...], scale_m: float = 0.04) -> np.ndarray:
    """Per channel, exp(-d^2 / 2 scale^2) of its distance to the closest centre electrode."""
    positions = montage().get_positions()["ch_pos"]
    xyz = np.array([positions[c] for c in EEG_CHANNELS])
    centre = np.array([positions[c] for c in centres])
    d = np.linalg.norm(xyz[:, None, :] - centre[None, :, :], axis=2).min(axis=1)
    return np.exp(-(d ** 2) / (2 * scale_m ** 2))


def evoked_signal(onsets: np.ndarray, amplitudes: np.ndarray, deflection: Deflection, n_times: int) -> np.ndarray:
    """Channels x times: the deflection after every onset, scaled by its amplitude."""
    times = np.arange(n_times) / EEG_SFREQ
    course = np.zeros(n_times)
    half = int(np.ceil((deflection.latency + 4 * deflection.width) * EEG_SFREQ))
    for onset, amplitude in zip(onsets, amplitudes):
        start = int(round(onset * EEG_SFREQ))
        stop = min(n_times, start + half)
        t = times[start:stop] - onset
        course[start:stop] += amplitude * np.exp(-((t - deflection.latency) ** 2) / (2 * deflection.width ** 2))
    return np.outer(spatial_weights(deflection.centres), course)


def eeg_noise(rng: np.random.Generator, n_times: int) -> np.ndarray:
    from scipy.signal import lfilter

    n = len(EEG_CHANNELS)
    rho = NOISE_EEG["ar1_rho"]
    ar = lfilter([1.0], [1.0, -rho], rng.standard_normal((n, n_times)) * np.sqrt(1 - rho ** 2), axis=1)
    common = rng.standard_normal(n_times) * NOISE_EEG["common_sd"]
    t = np.arange(n_times) / n_times
    drift = np.outer(rng.normal(0, NOISE_EEG["drift_sd"], n), np.cos(np.pi * t))
    noise = ar * NOISE_EEG["ar1_sd"] + common + drift
    noise[EEG_CHANNELS.index(BAD_CHANNEL)] = rng.standard_normal(n_times) * NOISE_EEG["bad_sd"]
    return noise


def eeg_trial_events(stim_files: list[str], rng: np.random.Generator, repeats: int = 2,
                     lead_in: float = 2.0) -> pd.DataFrame:
    """Every image ``repeats`` times in random order, 0.5 s on, onsets 1.0-1.5 s apart."""
    files = [stim_files[i] for i in rng.permutation(np.repeat(np.arange(len(stim_files)), repeats))]
    onsets = lead_in + np.concatenate([[0.0], np.cumsum(rng.uniform(1.0, 1.5, len(files) - 1))])
    return pd.DataFrame({"onset": np.round(onsets, 2), "duration": 0.5,
                         "trial_type": [Path(f).stem.rstrip("0123456789") for f in files], "stim_file": files})


def simulate_faces_run(events: pd.DataFrame, rng: np.random.Generator, tail: float = 2.0) -> np.ndarray:
    n_times = int((events["onset"].max() + tail) * EEG_SFREQ)
    data = eeg_noise(rng, n_times)
    for deflection, amplitudes in ERP.values():
        data += evoked_signal(events["onset"].to_numpy(), events["trial_type"].map(amplitudes).to_numpy(), deflection,
                              n_times)
    return data


def simulate_words_run(events: pd.DataFrame, duration: float, rng: np.random.Generator,
                       envelope: np.ndarray | None = None) -> np.ndarray:
    """The story's EEG: noise, the word-onset TRF, and, given the sound track's envelope at ``EEG_SFREQ``, the
    envelope TRF (:data:`ENVELOPE_TRF`)."""
    n_times = int(duration * EEG_SFREQ)
    deflection, amplitude = TRF
    data = eeg_noise(rng, n_times) + evoked_signal(events["onset"].to_numpy(), np.full(len(events), amplitude),
                                                   deflection, n_times)
    if envelope is not None:
        data += envelope_response(envelope, n_times)
    return data


def envelope_response(envelope: np.ndarray, n_times: int) -> np.ndarray:
    """Channels x times: the z-scored envelope convolved with :data:`ENVELOPE_TRF`'s Gaussian (peak 1), on its
    channels."""
    deflection, amplitude = ENVELOPE_TRF
    lags = np.arange(int(np.ceil((deflection.latency + 4 * deflection.width) * EEG_SFREQ))) / EEG_SFREQ
    kernel = np.exp(-((lags - deflection.latency) ** 2) / (2 * deflection.width ** 2))
    course = np.zeros(n_times)
    course[:min(n_times, len(envelope))] = ((envelope - envelope.mean()) / envelope.std())[:n_times]
    response = np.convolve(course, kernel / kernel.sum())[:n_times]
    return amplitude * np.outer(spatial_weights(deflection.centres), response / response.std())


def write_eeg_run(root: Path, subject: str, task: str, run: int, data: np.ndarray, events: pd.DataFrame,
                  eeg_format: str = "BrainVision", sfreq: float = EEG_SFREQ,
                  channels: tuple[str, ...] = EEG_CHANNELS) -> None:
    """One run as BIDS EEG via mne-bids (in a scratch dataset, so that mne-bids never edits the example's own
    top-level files), then the run's files copied in, with the full events table."""
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    if eeg_format not in EEG_FORMATS:
        raise ValueError(f"eeg_format must be one of {', '.join(EEG_FORMATS)}")
    datatype = EEG_FORMATS[eeg_format]
    info = mne.create_info(list(channels), sfreq, "eeg" if datatype == "eeg" else "mag")
    raw = mne.io.RawArray(data if datatype == "eeg" else data * MEG_SCALE, info, verbose=False)
    if datatype == "eeg":
        raw.set_montage(montage(), verbose=False)
    raw.set_meas_date(MEAS_DATE)
    raw.info["line_freq"] = 50.0
    raw.info["bads"] = [BAD_CHANNEL] if BAD_CHANNEL in channels else []
    labels = events["trial_type"] if "trial_type" in events else pd.Series("word", index=events.index)
    annotations = mne.Annotations(events["onset"].to_numpy(float), events["duration"].to_numpy(float),
                                  labels.astype(str).to_list())
    raw.set_annotations(annotations)
    with tempfile.TemporaryDirectory() as scratch:
        path = BIDSPath(subject=subject, task=task, run=run, datatype=datatype, root=Path(scratch) / "bids")
        write_raw_bids(raw, path, format=eeg_format, allow_preload=True, overwrite=True, verbose=False)
        folder = Path(scratch) / "bids" / f"sub-{subject}" / datatype
        target = root / f"sub-{subject}" / datatype
        target.mkdir(parents=True, exist_ok=True)
        for file in folder.iterdir():
            if not (file.name.endswith(("_electrodes.tsv", "_coordsystem.json")) and (target / file.name).exists()):
                shutil.copy(file, target / file.name)
    events_file = target / f"sub-{subject}_task-{task}_run-{run}_events.tsv"
    events.to_csv(events_file, sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")
